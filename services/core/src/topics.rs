//! Names of the event-log topics that connect the stages (see DESIGN.md).

/// Messages users sent, keyed by conversation: the persister's input.
pub const INBOUND: &str = "inbound";
/// One record per recipient, keyed by user: the router's input.
pub const DELIVER: &str = "deliver";

/// Work for one gateway or ingest node: deliveries and send receipts.
pub fn push_topic(node_id: &str) -> String {
    format!("push.{node_id}")
}

/// Consumes the push topic of `node_id` as group `group` until `shutdown`,
/// handing each decodable record to `on_record` and committing each batch
/// once handed over. Pushes from before the subscription are skipped
/// ([`StartFrom::Latest`]): they address connections or calls of an earlier
/// run of the node, and what they carried is in the inboxes.
pub async fn consume_push_topic(
    log: &dyn crate::log::EventLog,
    node_id: &str,
    group: &str,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
    mut on_record: impl FnMut(crate::proto::records::push_record::Kind) + Send,
) -> Result<(), crate::log::LogError> {
    use prost::Message as _;
    let topic = push_topic(node_id);
    let mut sub = log
        .subscribe(&topic, group, crate::log::StartFrom::Latest)
        .await?;
    loop {
        let batch = tokio::select! {
            b = sub.poll(1024) => b?,
            _ = crate::stage::stopped(&mut shutdown) => return Ok(()),
        };
        for d in &batch {
            match crate::proto::records::PushRecord::decode(d.value.clone()) {
                Ok(crate::proto::records::PushRecord { kind: Some(k) }) => on_record(k),
                _ => {
                    tracing::error!(%topic, offset = d.position.offset, "skipping undecodable push record")
                }
            }
        }
        sub.commit(&batch).await?;
    }
}
