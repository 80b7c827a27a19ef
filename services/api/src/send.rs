//! Sends from the back end: `SendAsSystem` goes through the pipeline like
//! a user's send (appended to `inbound`, answered when the persister's
//! receipt comes back on this node's push topic, so a success always means
//! "stored"), and `PostToRoom` appends to the rooms topic.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use prost::Message as _;
use tern_chat::Refusal;
use tern_chat::access::Actor;
use tern_chat::send::{SendRequest, Target, check_content, check_send};
use tern_core::ids::{MessageId, check_room, check_user};
use tern_core::log::{LogError, Record};
use tern_core::proto::api::{
    PostToRoomRequest, PostToRoomResponse, SendAsSystemRequest, SendAsSystemResponse,
};
use tern_core::proto::client::ErrorCode;
use tern_core::proto::records::{InboundRecord, Origin, Receipt, RoomRecord, push_record};
use tern_core::sync;
use tern_core::{now_ms, topics};
use tokio::sync::{oneshot, watch};
use tracing::Instrument as _;

use crate::authz::backend_only;
use crate::{Api, ApiError};

impl Api {
    pub(crate) async fn send_as_system(
        &self,
        actor: &Actor,
        req: SendAsSystemRequest,
    ) -> Result<SendAsSystemResponse, ApiError> {
        backend_only(actor, "send as another user")?;
        check_user(&req.from_user)?;
        let cmid = if req.client_msg_id.is_empty() {
            uuid::Uuid::now_v7().to_string()
        } else {
            req.client_msg_id
        };
        let target = if req.conversation.is_empty() {
            Target::User(&req.to_user)
        } else {
            Target::Conversation(&req.conversation)
        };
        let conversation = check_send(
            &SendRequest {
                sender: &req.from_user,
                client_msg_id: &cmid,
                target: Some(target),
                content_type: &req.content_type,
                body_len: req.body.len(),
            },
            self.config.max_body_bytes,
        )?;
        // Wait before appending, so the receipt cannot come first; the guard
        // withdraws the wait however this call ends.
        let (_guard, rx) = self.waiters.wait((req.from_user.clone(), cmid.clone()));
        let record = InboundRecord {
            message_id: MessageId::new().to_vec(),
            conversation: conversation.to_string(),
            sender_user: req.from_user,
            sender_device: "api".into(),
            client_msg_id: cmid,
            content_type: if req.content_type.is_empty() {
                "text/plain".into()
            } else {
                req.content_type
            },
            body: req.body,
            sent_at_ms: now_ms(),
            origin: Some(Origin {
                node_id: self.config.node_id.clone(),
                connection_id: 0,
            }),
        };
        // The trace of this message starts here (when tracing is on).
        let span = tern_core::message_span!("api.send", &Vec::new(), conversation = %conversation);
        let inbound = Record::new(conversation.to_string(), record.encode_to_vec())
            .with_headers(tern_core::trace::headers_of(&span));
        self.deps
            .log
            .append(topics::INBOUND, vec![inbound])
            .instrument(span)
            .await?;
        let receipt = match tokio::time::timeout(self.config.receipt_timeout, rx).await {
            Ok(Ok(r)) => r,
            _ => return Err(ApiError::NotConfirmed(self.config.receipt_timeout)),
        };
        if !receipt.rejected.is_empty() {
            let code = match ErrorCode::try_from(receipt.reject_code) {
                Ok(ErrorCode::Unspecified) | Err(_) => ErrorCode::InvalidArgument,
                Ok(code) => code,
            };
            return Err(Refusal::new(code, receipt.rejected).into());
        }
        Ok(SendAsSystemResponse {
            message_id: receipt.message_id,
            conversation: receipt.conversation,
            seq: receipt.seq,
            sent_at_ms: receipt.sent_at_ms,
        })
    }

    pub(crate) async fn post_to_room(
        &self,
        actor: &Actor,
        req: PostToRoomRequest,
    ) -> Result<PostToRoomResponse, ApiError> {
        backend_only(actor, "post to a room as another user")?;
        check_room(&req.room)?;
        check_user(&req.from_user)?;
        check_content(
            &req.content_type,
            req.body.len(),
            self.config.max_body_bytes,
        )?;
        let message_id = MessageId::new().to_vec();
        let record = RoomRecord {
            room: req.room.clone(),
            message_id: message_id.clone(),
            sender_user: req.from_user,
            sender_device: "api".into(),
            content_type: if req.content_type.is_empty() {
                "text/plain".into()
            } else {
                req.content_type
            },
            body: req.body,
            sent_at_ms: now_ms(),
        };
        self.deps
            .log
            .append(
                topics::ROOMS,
                vec![Record::new(req.room, record.encode_to_vec())],
            )
            .await?;
        Ok(PostToRoomResponse { message_id })
    }
}

/// Hands receipts from this node's push topic to the calls waiting for them.
pub(crate) async fn receive_receipts(
    api: Api,
    sub: Box<dyn tern_core::log::Subscription>,
    shutdown: watch::Receiver<bool>,
) -> Result<(), LogError> {
    let node = api.config.node_id.clone();
    let waiters = api.waiters.clone();
    topics::consume_push_topic(
        sub,
        &node,
        shutdown,
        move |record| {
            if let push_record::Kind::Receipt(r) = record {
                waiters.resolve(&r);
            }
        },
        // A missed receipt only makes its call time out; the caller retries.
        || {},
        topics::push_resubscriber(api.deps.log.clone(), &node, &format!("ingest.{node}")),
    )
    .await
}

/// Calls waiting for a receipt, by (sender, client_msg_id). Several calls
/// may wait for the same send (a retry while the first is in flight); each
/// removes itself when it ends, however it ends.
#[derive(Default)]
pub(crate) struct Waiters {
    next_id: std::sync::atomic::AtomicU64,
    calls: Mutex<HashMap<SendKey, Vec<Waiting>>>,
}

/// One waiting call: its id and where its receipt goes.
type Waiting = (u64, oneshot::Sender<Receipt>);

/// (sender, client_msg_id): what a receipt answers.
type SendKey = (String, String);

impl Waiters {
    fn wait(self: &Arc<Self>, key: SendKey) -> (WaitGuard, oneshot::Receiver<Receipt>) {
        let id = self
            .next_id
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        sync::lock(&self.calls)
            .entry(key.clone())
            .or_default()
            .push((id, tx));
        (
            WaitGuard {
                waiters: self.clone(),
                key,
                id,
            },
            rx,
        )
    }

    fn resolve(&self, r: &Receipt) {
        let waiting =
            sync::lock(&self.calls).remove(&(r.sender_user.clone(), r.client_msg_id.clone()));
        for (_, w) in waiting.into_iter().flatten() {
            let _ = w.send(r.clone());
        }
    }
}

struct WaitGuard {
    waiters: Arc<Waiters>,
    key: SendKey,
    id: u64,
}

impl Drop for WaitGuard {
    fn drop(&mut self) {
        let mut calls = sync::lock(&self.waiters.calls);
        if let Some(list) = calls.get_mut(&self.key) {
            list.retain(|(id, _)| *id != self.id);
            if list.is_empty() {
                calls.remove(&self.key);
            }
        }
    }
}
