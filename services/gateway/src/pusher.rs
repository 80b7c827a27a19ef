//! The gateway's consumer of its push topic: hands inbox entries to the
//! sessions of their users and receipts to the sessions that sent.
//!
//! It commits as soon as the records are handed over, not after the client
//! ACKs: the inbox is the source of truth, and a session that dies before
//! pushing leaves the entries for the device's next login (its cursor has
//! not moved). The push topic only makes delivery fast.

use std::sync::Arc;

use prost::Message as _;
use tern_core::log::StartFrom;
use tern_core::proto::records::{PushRecord, push_record};
use tern_core::stage::stopped;
use tern_core::topics;
use tokio::sync::watch;

use crate::Shared;
use crate::hub::SessionEvent;

pub(crate) async fn run(
    shared: Arc<Shared>,
    mut shutdown: watch::Receiver<bool>,
) -> Result<(), tern_core::log::LogError> {
    let node = &shared.config.node_id;
    let topic = topics::push_topic(node);
    // Pushes from before this gateway started address connections that no
    // longer exist; their devices catch up from the inbox at login.
    let mut sub = shared
        .deps
        .log
        .subscribe(&topic, &format!("gateway.{node}"), StartFrom::Latest)
        .await?;
    loop {
        let batch = tokio::select! {
            b = sub.poll(1024) => b?,
            _ = stopped(&mut shutdown) => return Ok(()),
        };
        for d in &batch {
            let record = match PushRecord::decode(d.value.clone()) {
                Ok(PushRecord { kind: Some(k) }) => k,
                Ok(_) | Err(_) => {
                    tracing::error!(
                        offset = d.position.offset,
                        "skipping undecodable push record"
                    );
                    continue;
                }
            };
            match record {
                push_record::Kind::Deliveries(deliveries) => {
                    let conns = shared.hub.user_conns(&deliveries.user);
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
                        .and_then(|id| shared.hub.get(id));
                    match conn {
                        Some(c) => c.offer(SessionEvent::Receipt(receipt)),
                        None => {
                            tracing::debug!(client_msg_id = %receipt.client_msg_id, "receipt for a connection that is gone")
                        }
                    }
                }
            }
        }
        if let Err(e) = sub.commit(&batch).await {
            tracing::warn!(error = %e, "push topic commit failed");
        }
    }
}
