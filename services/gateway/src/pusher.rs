//! The gateway's consumer of its push topic: hands inbox entries to the
//! sessions of their users and receipts to the sessions that sent.
//!
//! It commits as soon as the records are handed over, not after the client
//! ACKs: the inbox is the source of truth, and a session that dies before
//! pushing leaves the entries for the device's next login (its cursor has
//! not moved). The push topic only makes delivery fast.

use std::sync::Arc;

use tern_core::log::{LogError, Subscription};
use tern_core::proto::records::push_record;
use tern_core::topics;
use tokio::sync::watch;

use crate::Shared;
use crate::hub::SessionEvent;

/// Subscribes before the gateway accepts connections (see
/// [`topics::subscribe_push_topic`]).
pub(crate) async fn subscribe(shared: &Shared) -> Result<Box<dyn Subscription>, LogError> {
    let node = &shared.config.node_id;
    topics::subscribe_push_topic(shared.deps.log.as_ref(), node, &format!("gateway.{node}")).await
}

pub(crate) async fn run(
    shared: Arc<Shared>,
    sub: Box<dyn Subscription>,
    shutdown: watch::Receiver<bool>,
) -> Result<(), LogError> {
    let node = shared.config.node_id.clone();
    let hub = &shared.hub;
    let on_record = |record| match record {
        push_record::Kind::Deliveries(deliveries) => {
            let conns = hub.user_conns(&deliveries.user);
            if let Some((last, rest)) = conns.split_last() {
                for c in rest {
                    c.offer(SessionEvent::Deliveries(deliveries.refs.clone()));
                }
                last.offer(SessionEvent::Deliveries(deliveries.refs));
            }
        }
        push_record::Kind::Receipt(receipt) => {
            let conn = receipt
                .origin
                .as_ref()
                .map(|o| o.connection_id)
                .and_then(|id| hub.get(id));
            match conn {
                Some(c) => c.offer(SessionEvent::Receipt(receipt)),
                None => {
                    tracing::debug!(client_msg_id = %receipt.client_msg_id, "receipt for a connection that is gone")
                }
            }
        }
    };
    let on_reassigned = || hub.offer_all(|| SessionEvent::CatchUp);
    let resubscribe =
        topics::push_resubscriber(shared.deps.log.clone(), &node, &format!("gateway.{node}"));
    topics::consume_push_topic(sub, &node, shutdown, on_record, on_reassigned, resubscribe).await
}
