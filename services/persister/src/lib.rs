//! tern-persister: the first pipeline stage.
//!
//! Reads `inbound` (keyed by conversation, so one conversation is handled in
//! order by one consumer), stores each message once per (sender,
//! client_msg_id) with the conversation's next sequence number, then emits
//! one `deliver` record per recipient user (the sender included, for their
//! other devices) and a receipt to the node that accepted the send.
//!
//! Replays are harmless: a message stored before a crash is found by its
//! idempotency key and its deliver records and receipt are emitted again;
//! the router and the clients drop what they already have.

use std::collections::HashMap;
use std::sync::Arc;

use async_trait::async_trait;
use prost::Message as _;
use tern_core::ids::Conversation;
use tern_core::log::{Delivery, EventLog, Record};
use tern_core::proto::records::{DeliverRecord, InboundRecord, PushRecord, Receipt, push_record};
use tern_core::stage::{BatchHandler, run_topic_stage};
use tern_core::store::{MessageStore, StoredMessage};
use tern_core::topics;
use tokio::sync::watch;

/// Consumer group of every persister instance.
pub const GROUP: &str = "persister";

pub struct Persister {
    log: Arc<dyn EventLog>,
    store: Arc<dyn MessageStore>,
}

impl Persister {
    pub fn new(log: Arc<dyn EventLog>, store: Arc<dyn MessageStore>) -> Self {
        Persister { log, store }
    }

    /// Consumes `inbound` until `shutdown` turns true.
    pub async fn run(
        self,
        shutdown: watch::Receiver<bool>,
    ) -> Result<(), tern_core::log::LogError> {
        let log = self.log.clone();
        run_topic_stage("persister", log, topics::INBOUND, GROUP, self, shutdown).await
    }
}

/// Why the persister refuses a record the gateway let through (it checks
/// again: the log may hold records from older or foreign producers).
fn check(record: &InboundRecord) -> Result<Conversation, String> {
    let conversation = Conversation::parse(&record.conversation).map_err(|e| e.to_string())?;
    if !conversation.has_member(&record.sender_user) {
        return Err(format!(
            "{} is not a member of conversation {}",
            record.sender_user, record.conversation
        ));
    }
    if record.message_id.len() != 16 {
        return Err("message id is not 16 bytes".into());
    }
    Ok(conversation)
}

#[async_trait]
impl BatchHandler for Persister {
    async fn handle(&mut self, batch: &[Delivery]) -> Result<(), String> {
        let mut accepted: Vec<(InboundRecord, Conversation)> = Vec::with_capacity(batch.len());
        let mut receipts: Vec<Receipt> = Vec::new();
        for d in batch {
            let record = match InboundRecord::decode(d.value.clone()) {
                Ok(r) => r,
                Err(e) => {
                    tracing::error!(partition = d.position.partition, offset = d.position.offset, error = %e, "skipping undecodable inbound record");
                    continue;
                }
            };
            match check(&record) {
                Ok(c) => accepted.push((record, c)),
                Err(reason) => {
                    tracing::warn!(conversation = %record.conversation, sender = %record.sender_user, %reason, "inbound record rejected");
                    receipts.push(Receipt {
                        origin: record.origin.clone(),
                        sender_user: record.sender_user.clone(),
                        client_msg_id: record.client_msg_id.clone(),
                        rejected: reason,
                        ..Default::default()
                    });
                }
            }
        }

        let to_store: Vec<StoredMessage> = accepted
            .iter()
            .map(|(r, _)| StoredMessage {
                message_id: r.message_id.clone(),
                conversation: r.conversation.clone(),
                seq: 0,
                sender_user: r.sender_user.clone(),
                sender_device: r.sender_device.clone(),
                client_msg_id: r.client_msg_id.clone(),
                content_type: r.content_type.clone(),
                body: r.body.clone(),
                sent_at_ms: r.sent_at_ms,
            })
            .collect();
        let outcomes = self
            .store
            .put_messages(to_store)
            .await
            .map_err(|e| e.to_string())?;

        let mut deliveries = Vec::new();
        for ((record, conversation), outcome) in accepted.iter().zip(&outcomes) {
            let m = &outcome.message;
            if outcome.duplicate && m.conversation != record.conversation {
                // client_msg_id is unique per sender: reusing one for another
                // conversation must not deliver the old message there, nor
                // tell the sender the new one was stored.
                tracing::warn!(sender = %record.sender_user, client_msg_id = %record.client_msg_id, "client_msg_id reused for another conversation");
                receipts.push(Receipt {
                    origin: record.origin.clone(),
                    sender_user: record.sender_user.clone(),
                    client_msg_id: record.client_msg_id.clone(),
                    rejected: format!(
                        "client_msg_id {:?} was already used for a message in conversation {}; use a new id for each message",
                        record.client_msg_id, m.conversation
                    ),
                    ..Default::default()
                });
                continue;
            }
            tracing::debug!(message_id = ?tern_core::ids::MessageId::from_slice(&m.message_id), conversation = %m.conversation, seq = m.seq, duplicate = outcome.duplicate, "message persisted");
            for user in conversation.members() {
                let rec = DeliverRecord {
                    user: user.to_owned(),
                    message_id: m.message_id.clone(),
                    conversation: m.conversation.clone(),
                    seq: m.seq,
                };
                deliveries.push(Record::new(user.as_bytes().to_vec(), rec.encode_to_vec()));
            }
            receipts.push(Receipt {
                origin: record.origin.clone(),
                sender_user: m.sender_user.clone(),
                client_msg_id: m.client_msg_id.clone(),
                message_id: m.message_id.clone(),
                conversation: m.conversation.clone(),
                seq: m.seq,
                sent_at_ms: m.sent_at_ms,
                rejected: String::new(),
            });
        }
        // Receipts go to the node that accepted each send, keyed by sender
        // so one sender's receipts stay in order.
        let mut by_node: HashMap<String, Vec<Record>> = HashMap::new();
        for r in receipts {
            let Some(node) = r
                .origin
                .as_ref()
                .map(|o| o.node_id.clone())
                .filter(|n| !n.is_empty())
            else {
                continue;
            };
            let key = r.sender_user.as_bytes().to_vec();
            let value = PushRecord {
                kind: Some(push_record::Kind::Receipt(r)),
            }
            .encode_to_vec();
            by_node
                .entry(node)
                .or_default()
                .push(Record::new(key, value));
        }
        // Deliver records and receipts become durable together: a receipt
        // (a "stored" answer to the sender) never precedes its delivery.
        let mut out = vec![(topics::DELIVER.to_owned(), deliveries)];
        out.extend(
            by_node
                .into_iter()
                .map(|(node, records)| (topics::push_topic(&node), records)),
        );
        self.log.append_many(out).await.map_err(|e| e.to_string())?;
        Ok(())
    }
}
