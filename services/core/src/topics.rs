//! Names of the event-log topics that connect the stages (see DESIGN.md).

/// Messages users sent, keyed by conversation: the persister's input.
pub const INBOUND: &str = "inbound";
/// One record per recipient, keyed by user: the router's input.
pub const DELIVER: &str = "deliver";

/// Work for one gateway or ingest node: deliveries and send receipts.
pub fn push_topic(node_id: &str) -> String {
    format!("push.{node_id}")
}
