//! One client connection: a single task owns all of its state (login,
//! cursors, un-ACKed pushes, sends awaiting receipts), so none of it needs a
//! lock. A second task writes the socket from a bounded queue.
//!
//! Push protocol: the inbox is the only queue. The session remembers the
//! last inbox cursor it pushed and whether the inbox may hold more
//! (`behind`). Login sets `behind`; so does a live delivery from the push
//! topic, which also opens a `push_window` so that everything arriving within
//! it leaves as one frame. Pushing reads the inbox after `last_pushed` and
//! packs the messages into frames of at most `push_max_bytes`. Because the
//! router appends to the inbox before it pushes, and the route is registered
//! before the first read, nothing falls between the reads. Each frame stays
//! un-ACKed until the client ACKs its last cursor, and is re-sent every
//! `ack_timeout` until then. With `max_unacked_pushes` frames un-ACKed, or
//! the outbound queue nearly full (the client reads slowly), pushing pauses
//! until an ACK or a short retry timer makes room.
//!
//! Memory per connection stays bounded whatever the client does: at most
//! `max_unacked_pushes` frames of at most the frame limit, an outbound queue
//! of `outbound_queue` frames, a mailbox of `mailbox` events, at most
//! `max_sends_in_flight` sends waiting for their receipt and as many
//! replies waiting for the queue ([`flow`]: past those, the socket is not
//! read). A client whose socket accepts nothing for `write_timeout` is
//! disconnected with SLOW_CONSUMER.
//!
//! What a client may do is `tern-chat`'s rule: its login token is checked
//! with revocations ([`tern_chat::identity`]), its sends with the same
//! rules as the API's, its reads with the conversation access rules.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt;
use futures_util::future::BoxFuture;
use futures_util::stream::FuturesUnordered;
use tern_chat::Refusal;
use tern_core::now_ms;
use tern_core::proto::client::{
    Codec, Error as ErrorFrame, ErrorCode, HeartbeatAck, client_frame, server_frame,
};
use tern_core::stage::stopped;

use crate::metrics;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

mod connection;
mod cursor;
mod delivery;
mod flow;
mod history;
mod login;
mod pushes;
mod receipts;
mod rooms;
mod safety;
mod sends;

pub(crate) use connection::serve;
use connection::{cursor_written, kicked, next_event};

use crate::Shared;
use crate::hub::{Kick, SessionEvent};
use crate::transport::{Budget, FrameReader, TransportError};

/// Room left in every frame for what surrounds the messages.
const FRAME_OVERHEAD: usize = 1024;
/// When pushing stopped for lack of queue room and no ACK is due to restart
/// it, pushing is tried again this soon.
const ROOM_RETRY: Duration = Duration::from_millis(10);
/// How long a blocked socket is kept open to deliver the reason it is
/// being closed, for a client that resumes reading.
const LAST_WORDS_GRACE: Duration = Duration::from_secs(5);
/// Longest a closing connection waits for its cursor write.
const CURSOR_FLUSH: Duration = Duration::from_secs(5);
/// After a failed inbox read, pushing is tried again this much later.
const STORE_RETRY: Duration = Duration::from_secs(1);
/// Message bodies fetched from the store in one call.
const BODY_BATCH: usize = 100;
/// Frames kept free in the socket queue when writing live-only frames.
const LIVE_RESERVE: usize = 4;
/// Frames of room the outbound queue must have for the socket to be read:
/// a frame read may need a reply (one that finds no room waits in
/// `replies`, and reading stops until it has gone out).
const READ_RESERVE: usize = 1;

/// Connection ids: a random base per process, so a receipt addressed to a
/// connection of a previous run never reaches a new one.
fn next_conn_id() -> u64 {
    static BASE: OnceLock<u64> = OnceLock::new();
    static NEXT: AtomicU64 = AtomicU64::new(1);
    let base = *BASE.get_or_init(|| u64::from(rand::random::<u32>()) << 32);
    base | NEXT.fetch_add(1, Ordering::Relaxed)
}

/// Why a session ends.
#[derive(Debug)]
enum Close {
    /// Tell the client why (an error frame with `fatal`), then close.
    Fatal(ErrorCode, String),
    /// The client left, logged out, or the socket broke: just close.
    Quiet,
}

fn fatal(code: ErrorCode, message: impl Into<String>) -> Close {
    Close::Fatal(code, message.into())
}

struct LoggedIn {
    user: String,
    device: String,
    codec: Codec,
    send_only: bool,
    /// Room prefixes the login token allows (the room policy reads them).
    rooms: Option<Vec<String>>,
}

type AppendResult = (String, Result<(), tern_core::log::LogError>);

struct Session {
    shared: Arc<Shared>,
    id: u64,
    out: mpsc::Sender<Bytes>,
    opened: Instant,
    last_frame: Instant,
    /// Set at login. Shared, so that the dispatch ([`Session::on_frame`])
    /// hands it to the request handlers while they hold `&mut self`.
    login: Option<Arc<LoggedIn>>,
    mailbox: Option<mpsc::Receiver<SessionEvent>>,
    kick: Option<watch::Receiver<Option<Kick>>>,
    /// What was pushed, what awaits an ACK, when to push next.
    pushes: pushes::Pushes,
    /// Counted among the gateway's online members of the user's groups.
    in_group_members: bool,
    /// Sends being appended to the log.
    appends: FuturesUnordered<BoxFuture<'static, AppendResult>>,
    /// Sends waiting for their receipt.
    receipts: receipts::Receipts,
    /// The live room this connection is in.
    room: Option<String>,
    /// Grows on every join and leave; batches tagged with an older one are
    /// of a room the connection has left.
    room_epoch: u64,
    /// Room batches for this connection (made on the first join).
    room_feed: Option<mpsc::Receiver<crate::rooms::RoomFrame>>,
    room_tx: Option<mpsc::Sender<crate::rooms::RoomFrame>>,
    /// Room posts being appended to the log.
    room_posts: FuturesUnordered<BoxFuture<'static, rooms::PostResult>>,
    /// The write of the device's cursor in flight, if any ([`cursor`]).
    cursor_write: Option<BoxFuture<'static, ()>>,
    cursor: cursor::CursorWrites,
    /// Bytes the connection may still send before logging in.
    budget: Budget,
    /// Replies waiting for room in the outbound queue.
    replies: flow::Replies,
    /// The connection's frames-per-second budget.
    read_gate: flow::ReadGate,
    /// The user's place among their connections on this gateway.
    _user_place: Option<tern_chat::limits::CountGuard<String>>,
    /// When the login token expires: the connection closes then.
    token_expires: Option<Instant>,
}

impl Session {
    async fn run(&mut self, mut reader: FrameReader, mut shutdown: watch::Receiver<bool>) -> Close {
        loop {
            let reading = self.may_read();
            if !reading {
                // A client the gateway is not reading cannot be idle.
                self.last_frame = Instant::now();
            }
            let wake = self.next_wake();
            let step = tokio::select! {
                frame = reader.next(), if reading => match frame {
                    None => Err(Close::Quiet),
                    Some(Ok(bytes)) => {
                        let now = Instant::now();
                        self.last_frame = now;
                        if self.read_gate.on_frame(now.into_std()) {
                            metrics::GATEWAY_LIMITED.inc("frames");
                        }
                        self.on_frame(bytes).await
                    }
                    Some(Err(TransportError::FrameTooLarge { len, max })) => Err(fatal(
                        ErrorCode::FrameTooLarge,
                        format!("frame of {len} bytes is over the limit of {max} bytes"),
                    )),
                    Some(Err(TransportError::PreLoginTooLarge)) => Err(fatal(
                        ErrorCode::FrameTooLarge,
                        format!("over the limit of {} bytes before login: log in first", crate::transport::PRE_LOGIN_BYTES),
                    )),
                    Some(Err(TransportError::Protocol(m))) => Err(fatal(ErrorCode::MalformedFrame, m)),
                    Some(Err(TransportError::Io(e))) => {
                        tracing::debug!(error = %e, "read failed");
                        Err(Close::Quiet)
                    }
                },
                event = next_event(&mut self.mailbox) => match event {
                    Some(e) => self.on_event(e).await,
                    None => Ok(()),
                },
                kick = kicked(&mut self.kick) => Err(match kick {
                    Kick::SlowConsumer => fatal(ErrorCode::SlowConsumer, "too many pushes waiting: the client is not reading fast enough"),
                    Kick::Replaced => fatal(ErrorCode::SessionReplaced, "this device logged in on another connection"),
                    Kick::GoingAway => fatal(ErrorCode::GoingAway, "gateway shutting down: reconnect"),
                    Kick::Revoked => fatal(ErrorCode::TokenRevoked, "the login token was revoked (logged out): log in again with a new one"),
                }),
                done = self.appends.next(), if !self.appends.is_empty() => match done {
                    Some(done) => self.on_appended(done),
                    None => Ok(()),
                },
                frame = rooms::next_room_frame(&mut self.room_feed) => match frame {
                    Some(frame) => self.on_room_frame(frame),
                    None => Ok(()),
                },
                _ = cursor_written(&mut self.cursor_write) => {
                    self.cursor_write = None;
                    self.cursor.done();
                    self.write_cursor();
                    Ok(())
                }
                done = self.room_posts.next(), if !self.room_posts.is_empty() => match done {
                    Some(done) => self.on_room_posted(done),
                    None => Ok(()),
                },
                // Room in the queue: for replies waiting for it, or for
                // reading again (a queue full of receipts stopped it).
                permit = self.out.clone().reserve_owned(), if !self.replies.is_empty() || self.out.capacity() < READ_RESERVE => {
                    drop(permit);
                    self.replies.drain(&self.out);
                    Ok(())
                }
                _ = tokio::time::sleep_until(wake) => self.on_timer().await,
                // The writer gave up on a blocked socket (and said why, if it could).
                _ = self.out.closed() => Err(Close::Quiet),
                _ = stopped(&mut shutdown) => Err(fatal(ErrorCode::GoingAway, "gateway shutting down: reconnect")),
            };
            if let Err(close) = step {
                return close;
            }
        }
    }

    /// Whether the socket is read now (see [`flow`]): no reply waiting for
    /// room, room for the next one, a send slot free, frame budget left.
    fn may_read(&mut self) -> bool {
        self.replies.is_empty()
            && self.out.capacity() >= READ_RESERVE
            && self.receipts.len() < self.shared.config.max_sends_in_flight
            && !self.read_gate.paused(Instant::now().into_std())
    }

    /// Room for another push frame: under the un-ACKed window, and leaving
    /// the outbound queue space for replies. Without room, pushes wait in
    /// the inbox (durable) rather than in memory.
    fn push_room(&self) -> bool {
        self.pushes.has_room(self.shared.config.max_unacked_pushes) && self.out.capacity() >= 2
    }

    /// Queues a frame for the socket; a full queue means the client does
    /// not read: it is dropped rather than allowed to grow our memory.
    fn emit_bytes(&mut self, frame: Bytes) -> Result<(), Close> {
        match self.out.try_send(frame) {
            Ok(()) => Ok(()),
            Err(mpsc::error::TrySendError::Full(_)) => Err(fatal(
                ErrorCode::SlowConsumer,
                format!(
                    "{} frames waiting to be written: the client is not reading fast enough",
                    self.shared.config.outbound_queue
                ),
            )),
            Err(mpsc::error::TrySendError::Closed(_)) => Err(Close::Quiet),
        }
    }

    /// Queues a reply to the client's own request: one that finds the
    /// queue full waits, and the socket is not read meanwhile ([`flow`]).
    fn emit(&mut self, kind: server_frame::Kind) -> Result<(), Close> {
        self.replies
            .send(&self.out, tern_wire::encode_server(kind))
            .map_err(|_| Close::Quiet)
    }

    /// Answers a request with a refusal of `tern-chat`'s.
    fn refuse(&mut self, r: Refusal, client_msg_id: &str, request_id: u64) -> Result<(), Close> {
        self.emit(server_frame::Kind::Error(ErrorFrame {
            code: r.code as i32,
            message: r.message,
            client_msg_id: client_msg_id.to_owned(),
            request_id,
            fatal: false,
            retry_after_ms: r.retry_after.map_or(0, |d| d.as_millis() as u64),
        }))
    }

    /// Answers a request with a non-fatal error.
    fn reject(
        &mut self,
        code: ErrorCode,
        message: impl Into<String>,
        client_msg_id: &str,
        request_id: u64,
    ) -> Result<(), Close> {
        self.emit(server_frame::Kind::Error(ErrorFrame {
            code: code as i32,
            message: message.into(),
            client_msg_id: client_msg_id.to_owned(),
            request_id,
            ..Default::default()
        }))
    }

    fn next_wake(&self) -> Instant {
        let c = &self.shared.config;
        let mut wake = self.last_frame + c.idle_timeout;
        if self.login.is_none() {
            wake = wake.min(self.opened + c.login_timeout);
        }
        if let Some(at) = self.pushes.next_wake(c.ack_timeout) {
            wake = wake.min(at);
        }
        if let Some(at) = self.receipts.next_deadline() {
            wake = wake.min(at);
        }
        if let Some(at) = self.read_gate.resumes_at() {
            wake = wake.min(Instant::from_std(at));
        }
        if let Some(at) = self.token_expires {
            wake = wake.min(at);
        }
        wake
    }

    async fn on_frame(&mut self, bytes: Bytes) -> Result<(), Close> {
        let kind = tern_wire::decode_client(&bytes)
            .map_err(|e| fatal(ErrorCode::MalformedFrame, e.to_string()))?;
        match kind {
            client_frame::Kind::Login(login) => self.on_login(login).await,
            client_frame::Kind::Heartbeat(_) => {
                self.renew_route().await;
                self.emit(server_frame::Kind::HeartbeatAck(HeartbeatAck {
                    server_time_ms: now_ms(),
                }))
            }
            client_frame::Kind::Logout(_) => Err(Close::Quiet),
            request => match self.login.clone() {
                Some(login) => self.on_request(&login, request).await,
                None => self.not_logged_in(&request),
            },
        }
    }

    /// Refuses a request made before login, naming it as the client did.
    fn not_logged_in(&mut self, request: &client_frame::Kind) -> Result<(), Close> {
        let (cmid, rid) = match request {
            client_frame::Kind::Send(s) => (s.client_msg_id.clone(), 0),
            client_frame::Kind::Sync(s) => (String::new(), s.request_id),
            client_frame::Kind::RoomJoin(j) => (String::new(), j.request_id),
            client_frame::Kind::RoomLeave(l) => (String::new(), l.request_id),
            client_frame::Kind::RoomSend(s) => (String::new(), s.request_id),
            client_frame::Kind::History(h) => (String::new(), h.request_id),
            client_frame::Kind::Conversations(c) => (String::new(), c.request_id),
            client_frame::Kind::MarkRead(m) => (String::new(), m.request_id),
            client_frame::Kind::SetBlocked(b) => (String::new(), b.request_id),
            client_frame::Kind::BlockedList(b) => (String::new(), b.request_id),
            _ => (String::new(), 0),
        };
        self.reject(ErrorCode::NotLoggedIn, "log in first", &cmid, rid)
    }

    /// A request of a logged-in client, with its login.
    async fn on_request(
        &mut self,
        login: &LoggedIn,
        request: client_frame::Kind,
    ) -> Result<(), Close> {
        match request {
            client_frame::Kind::Send(send) => self.on_send(login, send),
            client_frame::Kind::PushAck(ack) => self.on_ack(login, ack.cursor).await,
            client_frame::Kind::Sync(req) => self.on_sync(login, req).await,
            client_frame::Kind::RoomJoin(join) => self.on_room_join(login, join),
            client_frame::Kind::RoomLeave(leave) => self.on_room_leave(leave),
            client_frame::Kind::RoomSend(send) => self.on_room_send(login, send),
            client_frame::Kind::History(req) => self.on_history(login, req).await,
            client_frame::Kind::Conversations(req) => self.on_conversations(login, req).await,
            client_frame::Kind::MarkRead(req) => self.on_mark_read(login, req).await,
            client_frame::Kind::SetBlocked(req) => self.on_set_blocked(login, req).await,
            client_frame::Kind::BlockedList(req) => self.on_blocked_list(login, req).await,
            // Answered by `on_frame` whether logged in or not.
            client_frame::Kind::Login(_)
            | client_frame::Kind::Heartbeat(_)
            | client_frame::Kind::Logout(_) => Ok(()),
        }
    }
    async fn on_timer(&mut self) -> Result<(), Close> {
        let now = Instant::now();
        let c = self.shared.config.clone();
        if self.login.is_none() && now >= self.opened + c.login_timeout {
            return Err(fatal(
                ErrorCode::Unauthenticated,
                format!("no login within {} s", c.login_timeout.as_secs()),
            ));
        }
        if self.token_expires.is_some_and(|at| now >= at) {
            return Err(fatal(
                ErrorCode::Unauthenticated,
                "the login token expired: log in again with a new one",
            ));
        }
        if now >= self.last_frame + c.idle_timeout {
            return Err(fatal(
                ErrorCode::IdleTimeout,
                format!("no frame for {} s", c.idle_timeout.as_secs()),
            ));
        }
        // Pushing starts at login: before it, none is ever due.
        if self.pushes.due(now)
            && let Some(login) = self.login.clone()
        {
            self.catch_up(&login).await?;
        }
        // Re-send only once everything queued is written: a push waiting in
        // our queue or the socket's buffer is not lost, only slow.
        let drained = self.out.capacity() == self.out.max_capacity();
        for frame in self.pushes.resends(now, c.ack_timeout, drained) {
            tracing::debug!("re-sending un-ACKed push");
            metrics::PUSHES.inc();
            self.emit_bytes(frame)?;
        }
        for (cmid, asked) in self.receipts.expired(now) {
            let msg = "send not confirmed in time; retry with the same client_msg_id (it will be stored once)";
            for _ in 0..asked {
                self.reject(ErrorCode::Unavailable, msg, &cmid, 0)?;
            }
        }
        Ok(())
    }
}

/// Bytes of messages one frame may carry: what fits the frame limit.
fn frame_budget(c: &crate::GatewayConfig) -> usize {
    c.push_max_bytes
        .min(c.max_frame_bytes.saturating_sub(FRAME_OVERHEAD))
        .max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connection_ids_are_unique() {
        assert_ne!(next_conn_id(), next_conn_id());
    }
}
