//! A session's sends: checked by `tern-chat`'s rules, limited by the
//! user's rate, appended to `inbound`, and answered when the persister's
//! receipt comes back (or `UNAVAILABLE` after `receipt_timeout`). A retry
//! of a send still in flight is not appended again: the one receipt
//! answers every request for it.

use futures_util::FutureExt;
use prost::Message as _;
use tern_chat::Refusal;
use tern_chat::send::{SendRequest, Target, check_send};
use tern_core::ids::{MessageId, clip};
use tern_core::log::Record;
use tern_core::proto::client::{ErrorCode, Send, SendResult, send, server_frame};
use tern_core::proto::records::{InboundRecord, Origin, Receipt};
use tern_core::{now_ms, topics};

use crate::metrics;
use tokio::time::Instant;
use tracing::Instrument;

use super::receipts::Retry;
use super::{AppendResult, Close, LoggedIn, Session};

impl Session {
    pub(super) fn on_send(&mut self, login: &LoggedIn, send: Send) -> Result<(), Close> {
        let received = Instant::now();
        let cmid = send.client_msg_id.clone();
        let target = match &send.target {
            Some(send::Target::ToUser(to)) => Some(Target::User(to)),
            Some(send::Target::Conversation(id)) => Some(Target::Conversation(id)),
            None => None,
        };
        let checked = check_send(
            &SendRequest {
                sender: &login.user,
                client_msg_id: &cmid,
                target,
                content_type: &send.content_type,
                body_len: send.body.len(),
            },
            self.shared.config.max_body_bytes,
        );
        let conversation = match checked {
            Ok(c) => c,
            // An id over the limit is not echoed back either.
            Err(r) => return self.refuse(r, &clip(&cmid), 0),
        };
        // A retry while the first attempt is in flight is not appended
        // again: the receipt answers every request, up to a few (more
        // would let one send fill the queue with answers).
        match self.receipts.retry(&cmid) {
            Retry::New => {}
            Retry::Counted => return Ok(()),
            Retry::TooMany => {
                return self.reject(
                    ErrorCode::Unavailable,
                    "this send is already in flight; its answer is on the way",
                    &cmid,
                    0,
                );
            }
        }
        let user = login.user.clone();
        if let Err(after) = self.shared.limits.take_send(&user, received.into_std()) {
            let r = Refusal::rate_limited(
                format!(
                    "{user} sends more than {} messages per second; nothing was stored",
                    self.shared.config.limits.sends.per_second
                ),
                after,
            );
            return self.refuse(r, &cmid, 0);
        }
        let conversation_id = conversation.to_string();
        let message_id = MessageId::new();
        let record = InboundRecord {
            message_id: message_id.to_vec(),
            conversation: conversation_id.clone(),
            sender_user: login.user.clone(),
            sender_device: login.device.clone(),
            client_msg_id: cmid.clone(),
            content_type: send.content_type,
            body: send.body,
            sent_at_ms: now_ms(),
            origin: Some(Origin {
                node_id: self.shared.config.node_id.clone(),
                connection_id: self.id,
            }),
        };
        tracing::debug!(%message_id, conversation = %conversation_id, client_msg_id = %cmid, "message accepted");
        self.receipts
            .start(cmid.clone(), received, self.shared.config.receipt_timeout);
        metrics::SENDS.inc();
        let log = self.shared.deps.log.clone();
        // The trace of this message starts here (when tracing is on).
        let span = tern_core::message_span!("gateway.send", &Vec::new(), %message_id, conversation = %conversation_id, client_msg_id = %cmid);
        let record = Record::new(conversation_id, record.encode_to_vec())
            .with_headers(tern_core::trace::headers_of(&span));
        self.appends.push(
            async move {
                let r = log.append(topics::INBOUND, vec![record]).await;
                (cmid, r.map(|_| ()))
            }
            .instrument(span)
            .boxed(),
        );
        Ok(())
    }

    pub(super) fn on_appended(&mut self, (cmid, result): AppendResult) -> Result<(), Close> {
        match result {
            Ok(()) => Ok(()),
            Err(e) => {
                let Some((asked, _)) = self.receipts.answer(&cmid) else {
                    return Ok(());
                };
                tracing::warn!(client_msg_id = %cmid, error = %e, "send not written to the log");
                let msg = "message not stored: the event log is unavailable; retry with the same client_msg_id";
                for _ in 0..asked {
                    self.reject(ErrorCode::Unavailable, msg, &cmid, 0)?;
                }
                Ok(())
            }
        }
    }

    pub(super) fn on_receipt(&mut self, r: Receipt) -> Result<(), Close> {
        // None: already answered (timed out), or a replayed receipt.
        let Some((asked, received)) = self.receipts.answer(&r.client_msg_id) else {
            return Ok(());
        };
        if r.rejected.is_empty() {
            // Once per send, however many frames asked for it.
            metrics::SEND_RECEIPT.observe_duration(received.elapsed());
        }
        for _ in 0..asked {
            if !r.rejected.is_empty() {
                let code = match ErrorCode::try_from(r.reject_code) {
                    Ok(ErrorCode::Unspecified) | Err(_) => ErrorCode::InvalidArgument,
                    Ok(code) => code,
                };
                self.reject(code, r.rejected.clone(), &r.client_msg_id, 0)?;
            } else {
                self.emit(server_frame::Kind::SendResult(SendResult {
                    client_msg_id: r.client_msg_id.clone(),
                    message_id: r.message_id.clone(),
                    conversation: r.conversation.clone(),
                    seq: r.seq,
                    sent_at_ms: r.sent_at_ms,
                }))?;
            }
        }
        Ok(())
    }
}
