//! tern-persister: the first pipeline stage.
//!
//! Reads `inbound` (keyed by conversation, so one conversation is handled in
//! order by one consumer), stores each message once per (sender,
//! client_msg_id) with the conversation's next sequence number, then emits
//! one `deliver` record per recipient user (the sender included, for their
//! other devices) and a receipt to the node that accepted the send.
//!
//! A group message is expanded here, in the pipeline, to the group's members
//! as the store has them when the message is stored (read once per batch, a
//! page at a time); only members may post. Gateways never see membership.
//! A 1:1 message whose recipient blocks its sender is refused (`BLOCKED`)
//! before it is stored: one store read per distinct pair in a batch, all
//! at once.
//!
//! Replays are harmless: a message stored before a crash is found by its
//! idempotency key and its deliver records and receipt are emitted again;
//! the router and the clients drop what they already have.

use std::collections::{HashMap, HashSet};

use futures_util::future::try_join_all;
use std::sync::Arc;
use tern_chat::send::block_list_owner;

use async_trait::async_trait;
use prost::Message as _;
use tern_core::ids::Conversation;
use tern_core::log::{Delivery, EventLog, Headers, Position, Record};
use tern_core::proto::client::ErrorCode;
use tern_core::proto::records::{
    ArchiveRecord, DeliverRecord, GroupFeedRecord, InboundRecord, PushRecord, Receipt,
    group_feed_record, push_record,
};
use tern_core::stage::{BatchHandler, run_topic_stage};
use tern_core::store::{MessageStore, StoreError, StoredMessage};
use tern_core::topics;
use tokio::sync::watch;

/// Consumer group of every persister instance.
pub const GROUP: &str = "persister";

pub struct Persister {
    log: Arc<dyn EventLog>,
    store: Arc<dyn MessageStore>,
    large_group_members: u64,
    /// Whether to emit an `archive` record per stored message.
    archive: bool,
}

impl Persister {
    /// Groups with more than `large_group_members` members are large: their
    /// messages go to the group feed, not into each member's inbox.
    pub fn new(
        log: Arc<dyn EventLog>,
        store: Arc<dyn MessageStore>,
        large_group_members: u64,
    ) -> Self {
        Persister {
            log,
            store,
            large_group_members,
            archive: false,
        }
    }

    /// Also emits every stored message to the `archive` topic, for the
    /// compliance archiver.
    pub fn with_archive(mut self, archive: bool) -> Self {
        self.archive = archive;
        self
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

/// Deliver records appended at once: a message to a big group is written
/// in several appends rather than one unbounded one.
const MAX_APPEND: usize = 5000;

/// Why a record is refused, with the error code its sender gets.
struct Refusal {
    code: ErrorCode,
    reason: String,
}

fn refuse(code: ErrorCode, reason: impl Into<String>) -> Refusal {
    Refusal {
        code,
        reason: reason.into(),
    }
}

/// Checks a record's shape and, for a 1:1 conversation, its sender (the
/// gateway checked too, but the log may hold records from older or foreign
/// producers): the same rule as the gateway's, from `tern-chat`. Group
/// membership and blocks are checked against the store later.
fn check(record: &InboundRecord) -> Result<Conversation, Refusal> {
    let conversation = tern_chat::send::check_sender(&record.sender_user, &record.conversation)
        .map_err(|r| refuse(r.code, r.message))?;
    if record.message_id.len() != 16 {
        return Err(refuse(
            ErrorCode::InvalidArgument,
            "message id is not 16 bytes",
        ));
    }
    Ok(conversation)
}

/// Which (recipient, sender) pairs of a batch's 1:1 messages are blocked:
/// one store read per distinct pair, all at once.
async fn blocked_pairs(
    store: &dyn MessageStore,
    checked: &[(&Delivery, InboundRecord, Result<Conversation, Refusal>)],
) -> Result<HashSet<(String, String)>, StoreError> {
    let pairs: HashSet<(&str, &str)> = checked
        .iter()
        .filter_map(|(_, record, conversation)| {
            let recipient = block_list_owner(&record.sender_user, conversation.as_ref().ok()?)?;
            Some((recipient, record.sender_user.as_str()))
        })
        .collect();
    let reads = pairs.into_iter().map(|(recipient, sender)| async move {
        let blocked = store.is_blocked(recipient, sender).await?;
        Ok::<_, StoreError>(blocked.then(|| (recipient.to_owned(), sender.to_owned())))
    });
    Ok(try_join_all(reads).await?.into_iter().flatten().collect())
}

fn rejection(record: &InboundRecord, refusal: Refusal) -> Receipt {
    Receipt {
        origin: record.origin.clone(),
        sender_user: record.sender_user.clone(),
        client_msg_id: record.client_msg_id.clone(),
        rejected: refusal.reason,
        reject_code: refusal.code as i32,
        ..Default::default()
    }
}

/// What one batch knows of the groups it posts to, read once per batch.
enum GroupShape {
    Unknown,
    /// Members, sorted: each gets the message in their inbox.
    Small(Vec<String>),
    /// Over the threshold: the message goes to the group feed.
    Large,
}

struct MemberCache<'a> {
    store: &'a dyn MessageStore,
    large_group_members: u64,
    groups: HashMap<String, GroupShape>,
}

impl MemberCache<'_> {
    async fn shape(&mut self, group: &str) -> Result<&GroupShape, StoreError> {
        if !self.groups.contains_key(group) {
            let shape = if self.store.member_count(group).await? > self.large_group_members {
                GroupShape::Large
            } else {
                match read_members(self.store, group).await? {
                    Some(members) => GroupShape::Small(members),
                    None => GroupShape::Unknown,
                }
            };
            self.groups.insert(group.to_owned(), shape);
        }
        Ok(&self.groups[group])
    }
}

/// Who gets an accepted message.
enum Recipients {
    /// Each of these users, through their inbox.
    Users(Vec<String>),
    /// The members of a large group, through the group feed.
    LargeGroup(String),
}

/// All members of a group, a page at a time; None if there is no such group.
async fn read_members(
    store: &dyn MessageStore,
    group: &str,
) -> Result<Option<Vec<String>>, StoreError> {
    let all = tern_core::groups::all_members(store, group).await?;
    if all.is_empty() && store.group(group).await?.is_none() {
        return Ok(None);
    }
    Ok(Some(all))
}

/// The archive topic's record of a stored message, keyed by its inbound
/// partition so the archiver sees each inbound partition's messages in order.
fn archive_record(m: &StoredMessage, recipients: &Recipients, inbound: Position) -> Record {
    let (recipients, large_group) = match recipients {
        Recipients::Users(users) => (users.clone(), String::new()),
        Recipients::LargeGroup(group) => (Vec::new(), group.clone()),
    };
    let record = ArchiveRecord {
        message: Some(m.clone()),
        recipients,
        large_group,
        inbound_partition: inbound.partition,
        inbound_offset: inbound.offset,
    };
    Record::new(
        inbound.partition.to_string().into_bytes(),
        record.encode_to_vec(),
    )
}

/// Where a group message goes, or why the sender may not post.
async fn group_recipients(
    groups: &mut MemberCache<'_>,
    conversation: &Conversation,
    sender: &str,
) -> Result<Result<Recipients, Refusal>, StoreError> {
    let Conversation::Group(id) = conversation else {
        unreachable!("1:1 conversations are expanded without the store");
    };
    let store = groups.store;
    let not_member = || {
        refuse(
            ErrorCode::Forbidden,
            format!("{sender} is not a member of group {id}"),
        )
    };
    Ok(match groups.shape(id).await? {
        GroupShape::Unknown => Err(refuse(
            ErrorCode::UnknownConversation,
            format!("unknown group {id}"),
        )),
        GroupShape::Small(members) => {
            if members.binary_search_by(|m| m.as_str().cmp(sender)).is_ok() {
                Ok(Recipients::Users(members.clone()))
            } else {
                Err(not_member())
            }
        }
        GroupShape::Large => {
            if store.is_member(id, sender).await? {
                Ok(Recipients::LargeGroup(id.clone()))
            } else {
                Err(not_member())
            }
        }
    })
}

#[async_trait]
impl BatchHandler for Persister {
    async fn handle(&mut self, batch: &[Delivery]) -> Result<(), String> {
        // Each message's span lasts the batch; the records written for the
        // message carry its context on (see tern_core::trace).
        let mut accepted: Vec<(InboundRecord, Recipients, Position, tracing::Span)> =
            Vec::with_capacity(batch.len());
        let mut receipts: Vec<(Receipt, Headers)> = Vec::new();
        let mut groups = MemberCache {
            store: self.store.as_ref(),
            large_group_members: self.large_group_members,
            groups: HashMap::new(),
        };
        let mut checked = Vec::with_capacity(batch.len());
        for d in batch {
            match InboundRecord::decode(d.value.clone()) {
                Ok(record) => {
                    let conversation = check(&record);
                    checked.push((d, record, conversation));
                }
                Err(e) => {
                    tracing::error!(partition = d.position.partition, offset = d.position.offset, error = %e, "skipping undecodable inbound record");
                }
            }
        }
        let blocked = blocked_pairs(self.store.as_ref(), &checked)
            .await
            .map_err(|e| e.to_string())?;
        for (d, record, conversation) in checked {
            let span = tern_core::message_span!("persister.store", &d.headers, conversation = %record.conversation);
            let recipients = match conversation {
                Ok(c) => match c.direct_members() {
                    Some(users) => match block_list_owner(&record.sender_user, &c) {
                        Some(r)
                            if blocked.contains(&(r.to_owned(), record.sender_user.clone())) =>
                        {
                            let refusal = tern_chat::send::blocked(r, &record.sender_user);
                            Err(refuse(refusal.code, refusal.message))
                        }
                        _ => Ok(Recipients::Users(
                            users.into_iter().map(str::to_owned).collect(),
                        )),
                    },
                    None => group_recipients(&mut groups, &c, &record.sender_user)
                        .await
                        .map_err(|e| e.to_string())?,
                },
                Err(refusal) => Err(refusal),
            };
            match recipients {
                Ok(users) => accepted.push((record, users, d.position, span)),
                Err(refusal) => {
                    tracing::warn!(parent: &span, conversation = %record.conversation, sender = %record.sender_user, reason = %refusal.reason, "inbound record rejected");
                    receipts.push((
                        rejection(&record, refusal),
                        tern_core::trace::headers_of(&span),
                    ));
                }
            }
        }

        let to_store: Vec<StoredMessage> = accepted
            .iter()
            .map(|(r, _, _, _)| StoredMessage {
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
        let mut feed = Vec::new();
        let mut archive = Vec::new();
        for ((record, recipients, inbound, span), outcome) in accepted.iter().zip(&outcomes) {
            let m = &outcome.message;
            let headers = tern_core::trace::headers_of(span);
            if outcome.duplicate && m.conversation != record.conversation {
                // client_msg_id is unique per sender: reusing one for another
                // conversation must not deliver the old message there, nor
                // tell the sender the new one was stored.
                tracing::warn!(sender = %record.sender_user, client_msg_id = %record.client_msg_id, "client_msg_id reused for another conversation");
                let reason = format!(
                    "client_msg_id {:?} was already used for a message in conversation {}; use a new id for each message",
                    record.client_msg_id, m.conversation
                );
                receipts.push((
                    rejection(record, refuse(ErrorCode::InvalidArgument, reason)),
                    headers,
                ));
                continue;
            }
            tracing::debug!(message_id = ?tern_core::ids::MessageId::from_slice(&m.message_id), conversation = %m.conversation, seq = m.seq, duplicate = outcome.duplicate, "message persisted");
            // The first write of this send, or its replay after a crash (same
            // inbound record, so same id); a client's retry (a new id) is not
            // a new message for the archive.
            if self.archive && m.message_id == record.message_id {
                archive.push(archive_record(m, recipients, *inbound).with_headers(headers.clone()));
            }
            let users = match recipients {
                Recipients::Users(users) => users.as_slice(),
                Recipients::LargeGroup(group) => {
                    let post = GroupFeedRecord {
                        kind: Some(group_feed_record::Kind::Post(m.clone())),
                    };
                    feed.push(
                        Record::new(group.as_bytes().to_vec(), post.encode_to_vec())
                            .with_headers(headers.clone()),
                    );
                    &[]
                }
            };
            for user in users {
                let rec = DeliverRecord {
                    user: user.clone(),
                    message_id: m.message_id.clone(),
                    conversation: m.conversation.clone(),
                    seq: m.seq,
                    sender_user: m.sender_user.clone(),
                };
                deliveries.push(
                    Record::new(user.as_bytes().to_vec(), rec.encode_to_vec())
                        .with_headers(headers.clone()),
                );
                if deliveries.len() >= MAX_APPEND {
                    // Receipts wait for the last part: none precedes its
                    // message's deliveries.
                    let part = std::mem::take(&mut deliveries);
                    self.log
                        .append(topics::DELIVER, part)
                        .await
                        .map_err(|e| e.to_string())?;
                }
            }
            let receipt = Receipt {
                origin: record.origin.clone(),
                sender_user: m.sender_user.clone(),
                client_msg_id: m.client_msg_id.clone(),
                message_id: m.message_id.clone(),
                conversation: m.conversation.clone(),
                seq: m.seq,
                sent_at_ms: m.sent_at_ms,
                rejected: String::new(),
                reject_code: 0,
            };
            receipts.push((receipt, headers));
        }
        // Receipts go to the node that accepted each send, keyed by sender
        // so one sender's receipts stay in order.
        let mut by_node: HashMap<String, Vec<Record>> = HashMap::new();
        for (r, headers) in receipts {
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
                .push(Record::new(key, value).with_headers(headers));
        }
        // Deliver records and receipts become durable together: a receipt
        // (a "stored" answer to the sender) never precedes its delivery.
        let mut out = vec![(topics::DELIVER.to_owned(), deliveries)];
        if !feed.is_empty() {
            out.push((topics::GROUP_FEED.to_owned(), feed));
        }
        if !archive.is_empty() {
            out.push((topics::ARCHIVE.to_owned(), archive));
        }
        out.extend(
            by_node
                .into_iter()
                .map(|(node, records)| (topics::push_topic(&node), records)),
        );
        self.log.append_many(out).await.map_err(|e| e.to_string())?;
        Ok(())
    }
}
