//! The background tasks that own the socket: the writer writes queued
//! frames in order and heartbeats on a timer; the reader decodes frames,
//! hands answers to their waiters, and turns pushes (deduplicated by
//! cursor) and unsolicited errors into [`Event`]s.

use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tern_proto::client::{Heartbeat, client_frame, server_frame};
use tern_wire::{decode_server, encode_client, unpack_batch};
use tokio::sync::mpsc;
use tokio::time::{Instant, Interval, MissedTickBehavior};
use tracing::{debug, warn};

use super::shared::{Answer, Shared};
use super::{Event, MAX_PAYLOAD, Outbound};
use crate::ClientError;
use crate::dedup::CursorDedup;
use crate::error::describe;
use crate::transport::{FrameSink, FrameStream};

/// Writes queued frames in order and a heartbeat every period.
pub(super) async fn write_loop(
    mut sink: FrameSink,
    mut outbound: mpsc::Receiver<Outbound>,
    heartbeat: Option<Duration>,
    shared: Arc<Shared>,
) {
    let mut ticker = heartbeat.map(|period| {
        let mut ticker = tokio::time::interval_at(Instant::now() + period, period);
        ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
        ticker
    });
    let heartbeat_frame = encode_client(client_frame::Kind::Heartbeat(Heartbeat {}));
    loop {
        let written = tokio::select! {
            // Queued frames first, so frames queued before a drop or logout are written.
            biased;
            command = outbound.recv() => match command {
                Some(Outbound::Frame(frame)) => sink.send(frame).await,
                Some(Outbound::Finish) => {
                    let _ = sink.close().await;
                    return;
                }
                None => {
                    // The client was dropped: nobody reads anymore.
                    let _ = sink.close().await;
                    shared.stop.cancel();
                    return;
                }
            },
            () = tick(&mut ticker) => sink.send(heartbeat_frame.clone()).await,
            () = shared.done.cancelled() => return,
        };
        if let Err(e) = written {
            shared.closing(format!("could not write to the gateway: {e}"));
            shared.stop.cancel();
            return;
        }
    }
}

async fn tick(ticker: &mut Option<Interval>) {
    match ticker {
        Some(ticker) => {
            ticker.tick().await;
        }
        None => std::future::pending().await,
    }
}

/// Reads frames until the connection ends, answering waiters and reporting the rest as events.
pub(super) async fn read_loop(
    mut stream: FrameStream,
    shared: Arc<Shared>,
    events: mpsc::UnboundedSender<Event>,
    mut dedup: CursorDedup,
) {
    let observed = loop {
        let item = tokio::select! {
            () = shared.stop.cancelled() => break "the client closed the connection".to_string(),
            item = stream.next() => item,
        };
        let bytes = match item {
            None => break "the gateway closed the connection".to_string(),
            Some(Err(e)) => break format!("the connection failed: {e}"),
            Some(Ok(bytes)) => bytes,
        };
        let kind = match decode_server(&bytes) {
            Ok(kind) => kind,
            Err(e) => break format!("the gateway sent a frame the client cannot decode: {e}"),
        };
        if let Err(reason) = dispatch(kind, &shared, &events, &mut dedup) {
            break reason;
        }
    };
    // Closing our side now: after a fatal error the gateway closes anyway.
    drop(stream);
    let reason = shared.finish(observed);
    debug!(%reason, "connection closed");
    let _ = events.send(Event::Closed { reason });
}

/// Handles one frame; `Err(reason)` ends the connection.
fn dispatch(
    kind: server_frame::Kind,
    shared: &Shared,
    events: &mpsc::UnboundedSender<Event>,
    dedup: &mut CursorDedup,
) -> Result<(), String> {
    match kind {
        server_frame::Kind::LoginResult(_) => warn!("gateway sent a second LoginResult; ignored"),
        server_frame::Kind::HeartbeatAck(_) => {}
        server_frame::Kind::SendResult(result) => {
            let id = result.client_msg_id.clone();
            if !shared.resolve_send(&id, Ok(result)) {
                debug!(client_msg_id = %id, "SendResult for no waiting send (timed out?); dropped");
            }
        }
        server_frame::Kind::SyncPage(page) => {
            let request_id = page.request_id;
            if !shared.resolve_request(request_id, Ok(Answer::Sync(page))) {
                debug!(
                    request_id,
                    "SyncPage for no waiting sync (timed out?); dropped"
                );
            }
        }
        server_frame::Kind::RoomResult(result) => {
            let request_id = result.request_id;
            if !shared.resolve_request(request_id, Ok(Answer::Room(result))) {
                debug!(request_id, "RoomResult for no waiting request; dropped");
            }
        }
        server_frame::Kind::HistoryPage(page) => {
            let request_id = page.request_id;
            if !shared.resolve_request(request_id, Ok(Answer::History(page))) {
                debug!(request_id, "HistoryPage for no waiting request; dropped");
            }
        }
        server_frame::Kind::ConversationList(list) => {
            let request_id = list.request_id;
            if !shared.resolve_request(request_id, Ok(Answer::Conversations(list))) {
                debug!(
                    request_id,
                    "ConversationList for no waiting request; dropped"
                );
            }
        }
        server_frame::Kind::MarkReadResult(result) => {
            let request_id = result.request_id;
            if !shared.resolve_request(request_id, Ok(Answer::MarkRead(result))) {
                debug!(request_id, "MarkReadResult for no waiting request; dropped");
            }
        }
        server_frame::Kind::SetBlockedResult(result) => {
            let request_id = result.request_id;
            if !shared.resolve_request(request_id, Ok(Answer::Blocked(result))) {
                debug!(
                    request_id,
                    "SetBlockedResult for no waiting request; dropped"
                );
            }
        }
        server_frame::Kind::BlockedList(list) => {
            let request_id = list.request_id;
            if !shared.resolve_request(request_id, Ok(Answer::BlockedList(list))) {
                debug!(request_id, "BlockedList for no waiting request; dropped");
            }
        }
        server_frame::Kind::GroupMessages(batch) => {
            let messages = unpack_batch(batch.codec, &batch.payload, MAX_PAYLOAD).map_err(|e| {
                format!("a large-group push from the gateway could not be decoded: {e}")
            })?;
            let _ = events.send(Event::GroupMessages {
                conversation: batch.conversation,
                messages,
            });
        }
        server_frame::Kind::RoomBatch(batch) => {
            let messages = unpack_batch(batch.codec, &batch.payload, MAX_PAYLOAD)
                .map_err(|e| format!("a room batch from the gateway could not be decoded: {e}"))?;
            let _ = events.send(Event::RoomMessages {
                room: batch.room,
                messages,
            });
        }
        server_frame::Kind::Push(push) => {
            let messages = unpack_batch(push.codec, &push.payload, MAX_PAYLOAD)
                .map_err(|e| format!("a push from the gateway could not be decoded: {e}"))?;
            match dedup.admit(push.last_cursor, messages) {
                Some(messages) => {
                    let _ = events.send(Event::Messages {
                        messages,
                        last_cursor: push.last_cursor,
                        more_pending: push.more_pending,
                        older_not_pushed: push.older_not_pushed,
                        gap: push.gap,
                    });
                }
                None => debug!(
                    first_cursor = push.first_cursor,
                    last_cursor = push.last_cursor,
                    delivered = dedup.delivered(),
                    "push already delivered (re-sent by the gateway); dropped"
                ),
            }
        }
        server_frame::Kind::Error(err) => {
            let answered = if !err.client_msg_id.is_empty() {
                shared.resolve_send(&err.client_msg_id, Err(ClientError::from_frame(&err)))
            } else if err.request_id != 0 {
                shared.resolve_request(err.request_id, Err(ClientError::from_frame(&err)))
            } else {
                false
            };
            let fatal = err.fatal.then(|| {
                format!(
                    "the gateway closed the connection after an error: {}",
                    describe(&err)
                )
            });
            if !answered {
                let _ = events.send(Event::ServerError(err));
            }
            if let Some(reason) = fatal {
                shared.closing(reason.clone());
                return Err(reason);
            }
        }
    }
    Ok(())
}
