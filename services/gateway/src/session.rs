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

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use bytes::Bytes;
use futures_util::future::BoxFuture;
use futures_util::stream::FuturesUnordered;
use futures_util::{FutureExt, SinkExt, StreamExt};
use prost::Message as _;
use tern_chat::Refusal;
use tern_core::ids::check_device;
use tern_core::proto::client::{
    Codec, Error as ErrorFrame, ErrorCode, HeartbeatAck, Limits, Login, LoginResult, Message, Push,
    SyncPage, SyncRequest, client_frame, server_frame,
};
use tern_core::routes::Route;
use tern_core::stage::stopped;
use tern_core::{metrics, now_ms};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::Instant;
use tracing::Instrument;

mod flow;
mod history;
mod rooms;
mod safety;
mod sends;

use crate::Shared;
use crate::hub::{ConnHandle, Kick, SessionEvent};
use crate::transport::{Budget, FrameReader, FrameWriter, TransportError};
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

/// A login a backend could not serve: the client retries; the cause is
/// logged, not sent (it names internal hosts).
fn cannot_log_in(e: impl std::fmt::Display) -> Close {
    tracing::warn!(error = %e, "login failed on a backend");
    fatal(
        ErrorCode::Unavailable,
        "cannot log in now: a backend is unavailable; try again",
    )
}

struct LoggedIn {
    user: String,
    device: String,
    codec: Codec,
    send_only: bool,
    /// Room prefixes the login token allows (the room policy reads them).
    rooms: Option<Vec<String>>,
}

/// A push frame the client has not ACKed yet.
struct Unacked {
    last_cursor: u64,
    frame: Bytes,
    /// Last (re-)send: the next re-send is due `ack_timeout` after it.
    sent_at: Instant,
    /// First send, for the ACK latency metric (re-sends included in it).
    first_sent: Instant,
}

type AppendResult = (String, Result<(), tern_core::log::LogError>);

struct Session {
    shared: Arc<Shared>,
    id: u64,
    out: mpsc::Sender<Bytes>,
    opened: Instant,
    last_frame: Instant,
    login: Option<LoggedIn>,
    mailbox: Option<mpsc::Receiver<SessionEvent>>,
    kick: Option<watch::Receiver<Option<Kick>>>,
    /// Last inbox cursor put in a push frame.
    last_pushed: u64,
    /// The inbox may hold entries after `last_pushed`.
    behind: bool,
    /// When to push what live deliveries announced (the merge window).
    flush_at: Option<Instant>,
    unacked: VecDeque<Unacked>,
    /// The next push tells the device that retention trimmed entries it
    /// had not received.
    gap_pending: bool,
    /// Counted among the gateway's online members of the user's groups.
    in_group_members: bool,
    /// Sends being appended to the log.
    appends: FuturesUnordered<BoxFuture<'static, AppendResult>>,
    /// Sends waiting for their receipt: client_msg_id → (deadline, how many
    /// Send frames asked for it: a retry while in flight is answered too,
    /// when the first arrived: for the receipt latency metric).
    awaiting: HashMap<String, (Instant, u32, Instant)>,
    /// The same, in deadline order (entries already answered are skipped).
    deadlines: VecDeque<(Instant, String)>,
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
    /// The write of the device's cursor in flight, if any: ACKs do not wait
    /// for it, and those arriving meanwhile are written together after it.
    cursor_write: Option<BoxFuture<'static, ()>>,
    /// Highest cursor the device ACKed.
    cursor_acked: u64,
    /// Highest cursor whose write was started.
    cursor_writing: u64,
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

/// Serves one connection until it ends.
pub(crate) async fn serve(
    shared: Arc<Shared>,
    reader: FrameReader,
    writer: FrameWriter,
    budget: Budget,
    peer: SocketAddr,
    shutdown: watch::Receiver<bool>,
) {
    let id = next_conn_id();
    let span = tracing::info_span!("conn", id, %peer);
    async move {
        let (out, queue) = mpsc::channel(shared.config.outbound_queue);
        let (last_words_tx, last_words) = oneshot::channel();
        let write_timeout = shared.config.write_timeout;
        let writer_task =
            tokio::spawn(write_loop(writer, queue, last_words, write_timeout).in_current_span());
        let now = Instant::now();
        let frames = shared.config.limits.frames;
        let mut session = Session {
            shared,
            id,
            out,
            opened: now,
            last_frame: now,
            login: None,
            mailbox: None,
            kick: None,
            last_pushed: 0,
            behind: false,
            flush_at: None,
            unacked: VecDeque::new(),
            gap_pending: false,
            in_group_members: false,
            appends: FuturesUnordered::new(),
            awaiting: HashMap::new(),
            deadlines: VecDeque::new(),
            room: None,
            room_epoch: 0,
            room_feed: None,
            room_tx: None,
            room_posts: FuturesUnordered::new(),
            cursor_write: None,
            cursor_acked: 0,
            cursor_writing: 0,
            budget,
            replies: flow::Replies::default(),
            read_gate: flow::ReadGate::new(frames, now.into_std()),
            _user_place: None,
            token_expires: None,
        };
        metrics::CONNECTIONS.inc();
        let close = session.run(reader, shutdown).await;
        // Before the client can hear why it is closed and log in again:
        // what it ACKed here must be what its next login starts from.
        session.flush_cursor().await;
        metrics::CONNECTIONS.dec();
        if let Close::Fatal(code, _) = &close {
            metrics::DISCONNECTS.inc(code.as_str_name());
        }
        tracing::debug!(?close, "connection closing");
        if let Close::Fatal(code, message) = close {
            let frame = tern_wire::encode_server(server_frame::Kind::Error(ErrorFrame {
                code: code as i32,
                message,
                fatal: true,
                ..Default::default()
            }));
            let _ = last_words_tx.send(frame);
        }
        session.cleanup().await;
        drop(session);
        let _ = writer_task.await;
    }
    .instrument(span)
    .await
}

/// Writes queued frames, batching writes when several are waiting. A
/// session's last words (a fatal error) jump the queue: a client that is
/// too slow would otherwise never see why it was dropped.
async fn write_loop(
    mut writer: FrameWriter,
    mut queue: mpsc::Receiver<Bytes>,
    mut last_words: oneshot::Receiver<Bytes>,
    write_timeout: Duration,
) {
    let mut no_last_words = false;
    loop {
        tokio::select! {
            biased;
            words = &mut last_words, if !no_last_words => match words {
                Ok(frame) => {
                    // The socket may be full (the session gave up on a slow
                    // client): wait as long as for the writer's own reason.
                    let _ = tokio::time::timeout(LAST_WORDS_GRACE, writer.send(frame)).await;
                    break;
                }
                Err(_) => no_last_words = true,
            },
            frame = queue.recv() => {
                let Some(frame) = frame else { break };
                let write = async {
                    writer.feed(frame).await?;
                    while let Ok(more) = queue.try_recv() {
                        writer.feed(more).await?;
                    }
                    writer.flush().await
                };
                match tokio::time::timeout(write_timeout, write).await {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => {
                        tracing::info!(error = %e, "write failed; closing the connection");
                        return;
                    }
                    Err(_) => {
                        tracing::info!(timeout_ms = write_timeout.as_millis() as u64, "socket write blocked; dropping slow client");
                        // Queued after what is already buffered: a client that
                        // reads again soon still learns why it was dropped.
                        let why = tern_wire::encode_server(server_frame::Kind::Error(ErrorFrame {
                            code: ErrorCode::SlowConsumer as i32,
                            message: format!("socket write blocked for {} ms: the client is not reading", write_timeout.as_millis()),
                            fatal: true,
                            ..Default::default()
                        }));
                        let _ = tokio::time::timeout(LAST_WORDS_GRACE, writer.send(why)).await;
                        return;
                    }
                }
            }
        }
    }
    let _ = tokio::time::timeout(Duration::from_secs(1), writer.close()).await;
}

/// Resolves with the next mailbox event, or never if there is no mailbox.
async fn next_event(mailbox: &mut Option<mpsc::Receiver<SessionEvent>>) -> Option<SessionEvent> {
    // A closed mailbox means the hub dropped this session (it was replaced):
    // the kick that comes with it says why, so wait for that instead.
    match mailbox {
        Some(m) => match m.recv().await {
            Some(e) => Some(e),
            None => std::future::pending().await,
        },
        None => std::future::pending().await,
    }
}

/// Resolves when the cursor write in flight is done, or never if none is.
async fn cursor_written(write: &mut Option<BoxFuture<'static, ()>>) {
    match write {
        Some(w) => w.await,
        None => std::future::pending().await,
    }
}

/// Resolves when the session is kicked, or never if it cannot be.
async fn kicked(kick: &mut Option<watch::Receiver<Option<Kick>>>) -> Kick {
    match kick {
        Some(k) => {
            let kick = k.wait_for(|k| k.is_some()).await.map(|k| *k);
            match kick {
                Ok(Some(k)) => k,
                _ => std::future::pending().await,
            }
        }
        None => std::future::pending().await,
    }
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
            && self.awaiting.len() < self.shared.config.max_sends_in_flight
            && !self.read_gate.paused(Instant::now().into_std())
    }

    /// Room for another push frame: under the un-ACKed window, and leaving
    /// the outbound queue space for replies. Without room, pushes wait in
    /// the inbox (durable) rather than in memory.
    fn push_room(&self) -> bool {
        self.unacked.len() < self.shared.config.max_unacked_pushes && self.out.capacity() >= 2
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
        if let Some(at) = self.flush_at {
            wake = wake.min(at);
        }
        if let Some(u) = self.unacked.iter().map(|u| u.sent_at).min() {
            wake = wake.min(u + c.ack_timeout);
        }
        if let Some((at, _)) = self.deadlines.front() {
            wake = wake.min(*at);
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
            other if self.login.is_none() => {
                let (cmid, rid) = match &other {
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
            client_frame::Kind::Send(send) => self.on_send(send),
            client_frame::Kind::PushAck(ack) => self.on_ack(ack.cursor).await,
            client_frame::Kind::Sync(req) => self.on_sync(req).await,
            client_frame::Kind::RoomJoin(join) => self.on_room_join(join),
            client_frame::Kind::RoomLeave(leave) => self.on_room_leave(leave),
            client_frame::Kind::RoomSend(send) => self.on_room_send(send),
            client_frame::Kind::History(req) => self.on_history(req).await,
            client_frame::Kind::Conversations(req) => self.on_conversations(req).await,
            client_frame::Kind::MarkRead(req) => self.on_mark_read(req).await,
            client_frame::Kind::SetBlocked(req) => self.on_set_blocked(req).await,
            client_frame::Kind::BlockedList(req) => self.on_blocked_list(req).await,
        }
    }

    async fn on_login(&mut self, login: Login) -> Result<(), Close> {
        if self.login.is_some() {
            return self.reject(
                ErrorCode::InvalidArgument,
                "already logged in on this connection",
                "",
                0,
            );
        }
        let deps = &self.shared.deps;
        check_device(&login.device_id)
            .map_err(|e| fatal(ErrorCode::InvalidArgument, e.to_string()))?;
        let now = now_ms();
        let refused = |r: Refusal| Close::Fatal(r.code, r.message);
        let claims =
            tern_chat::identity::verify(&deps.auth, &login.token, Some(&login.device_id), now)
                .map_err(refused)?;
        // Before the old connection of this device is replaced: a revoked
        // token must not kick anyone out.
        tern_chat::identity::check_not_revoked(
            deps.store.as_ref(),
            &claims,
            Some(&login.device_id),
        )
        .await
        .map_err(refused)?;
        let token_issued_at_ms = claims.issued_at_ms();
        // The connection ends when its token does (a revocation it missed
        // cannot outlive the token).
        self.token_expires =
            Some(Instant::now() + Duration::from_millis((claims.exp * 1000).saturating_sub(now)));
        let user = claims.sub;
        let device = login.device_id;
        let codec = tern_wire::negotiate(&login.accept_codecs);
        let limits = &self.shared.limits;
        // A device logging in again replaces its old connection: it does
        // not need a place of its own.
        let replacing = !login.send_only && self.shared.hub.has_device(&user, &device);
        let max = match limits.config.connections_per_user {
            _ if replacing => 0,
            max => max,
        };
        self._user_place = Some(limits.per_user.try_acquire(&user, max).ok_or_else(|| {
            metrics::GATEWAY_LIMITED.inc("connections_per_user");
            fatal(
                ErrorCode::TooManyConnections,
                format!(
                    "{user} has {max} connections on this gateway, the most allowed: close one"
                ),
            )
        })?);
        self.budget.lift();

        let (mailbox_tx, mailbox) = mpsc::channel(self.shared.config.mailbox);
        let (kick_tx, kick) = watch::channel(None);
        let handle = ConnHandle {
            user: user.clone(),
            device: device.clone(),
            codec,
            token_issued_at_ms,
            mailbox: mailbox_tx,
            kick: kick_tx,
        };
        if let Some(old) = self.shared.hub.insert(self.id, handle, !login.send_only) {
            old.kick.send_replace(Some(Kick::Replaced));
        }
        self.mailbox = Some(mailbox);
        self.kick = Some(kick);
        self.login = Some(LoggedIn {
            user: user.clone(),
            device: device.clone(),
            codec,
            send_only: login.send_only,
            rooms: claims.rooms,
        });
        tracing::info!(%user, %device, send_only = login.send_only, "logged in");
        metrics::LOGINS.inc();

        // The route first, then the cursor and inbox: whatever is appended
        // after our read is pushed to us live (see the module docs).
        if !login.send_only {
            let route = Route {
                user: user.clone(),
                device: device.clone(),
                gateway: self.shared.config.node_id.clone(),
            };
            deps.routes
                .register(&route, self.shared.config.route_ttl)
                .await
                .map_err(cannot_log_in)?;
        }
        if !login.send_only {
            // Large groups are pushed to the members online here (see
            // `crate::groups`): this gateway learns the user's groups now.
            let groups = deps.store.user_groups(&user).await.map_err(cannot_log_in)?;
            self.shared.groups.online(&user, groups);
            self.in_group_members = true;
        }
        let cursor = deps
            .store
            .cursor(&user, &device)
            .await
            .map_err(cannot_log_in)?;
        let c = &self.shared.config;
        let result = LoginResult {
            user_id: user,
            device_id: device,
            codec: codec as i32,
            heartbeat_interval_ms: c.heartbeat_interval.as_millis() as u32,
            max_body_bytes: c.max_body_bytes as u32,
            cursor,
            server_time_ms: now_ms(),
            login_push_max: c.login_push_max as u32,
            login_push_per_conversation: c.login_push_per_conversation as u32,
            limits: Some(Limits {
                max_frame_bytes: c.max_frame_bytes as u32,
                max_sends_in_flight: c.max_sends_in_flight as u32,
                sends_per_second: c.limits.sends.per_second as u32,
                send_burst: c.limits.sends.burst as u32,
                frames_per_second: c.limits.frames.per_second as u32,
                max_page_messages: tern_chat::pages::MAX_PAGE as u32,
            }),
        };
        self.emit(server_frame::Kind::LoginResult(result))?;
        if !login.send_only {
            self.login_push(cursor).await?;
        }
        Ok(())
    }

    async fn renew_route(&mut self) {
        let Some(l) = self.login.as_ref().filter(|l| !l.send_only) else {
            return;
        };
        let route = Route {
            user: l.user.clone(),
            device: l.device.clone(),
            gateway: self.shared.config.node_id.clone(),
        };
        match self
            .shared
            .deps
            .routes
            .register(&route, self.shared.config.route_ttl)
            .await
        {
            // The route had gone (a directory restart, an expiry): pushes
            // for this device went nowhere meanwhile, but the inbox has
            // them. Catch up at the next timer tick.
            Ok(true) => {
                tracing::info!("route was missing; catching up from the inbox");
                self.behind = true;
                self.flush_at.get_or_insert_with(Instant::now);
            }
            Ok(false) => {}
            // The inbox still has everything; the next heartbeat tries again.
            Err(e) => tracing::warn!(error = %e, "route renewal failed"),
        }
    }

    async fn on_event(&mut self, event: SessionEvent) -> Result<(), Close> {
        match event {
            SessionEvent::Receipt(r) => self.on_receipt(r),
            SessionEvent::CatchUp => {
                if self.login.as_ref().is_some_and(|l| !l.send_only) {
                    self.behind = true;
                    self.flush_at.get_or_insert_with(Instant::now);
                }
                Ok(())
            }
            SessionEvent::GroupPush(frame) => {
                // Live only (the message is in the group's history): it
                // never takes the room replies and pushes need.
                if self.out.capacity() > LIVE_RESERVE {
                    self.emit_bytes(frame)
                } else {
                    metrics::GROUP_FEED_DROPPED.inc();
                    Ok(())
                }
            }
            SessionEvent::Deliveries(refs) => {
                if self.login.as_ref().is_none_or(|l| l.send_only) {
                    return Ok(());
                }
                if refs.iter().any(|r| r.cursor > self.last_pushed) {
                    self.behind = true;
                    if self.flush_at.is_none() {
                        self.flush_at = Some(Instant::now() + self.shared.config.push_window);
                    }
                }
                Ok(())
            }
        }
    }

    /// Pushes what the inbox holds after `last_pushed`, packed into as
    /// few frames as fit `push_max_bytes`, while there is room (see
    /// [`Self::push_room`]). What does not fit stays in the inbox, and
    /// `behind` stays set until an ACK makes room.
    async fn catch_up(&mut self) -> Result<(), Close> {
        self.flush_at = None;
        let user = self
            .login
            .as_ref()
            .expect("pushes only after login")
            .user
            .clone();
        let c = &self.shared.config;
        let (limit, max_bytes, max_messages) =
            (c.push_max_messages, frame_budget(c), c.push_max_messages);
        let store = self.shared.deps.store.clone();
        // Messages of the frame being filled, and its encoded size.
        let mut frame: Vec<Message> = Vec::new();
        let mut frame_bytes = 0;
        // Cursor of the last inbox entry looked at.
        let mut read_to = self.last_pushed;
        while self.behind {
            if !self.push_room() {
                self.wait_for_room(); // `frame` is read again once there is room.
                return Ok(());
            }
            // A store outage does not end the connection: what could not be
            // read stays in the inbox, and pushing is tried again shortly.
            let page = match store.read_inbox(&user, read_to, limit).await {
                Ok(p) => p,
                Err(e) => {
                    self.retry_later(e);
                    return Ok(());
                }
            };
            let caught_up = page.entries.last().is_none_or(|e| e.cursor >= page.head);
            for chunk in page.entries.chunks(BODY_BATCH) {
                let messages = match self.shared.bodies.load(store.as_ref(), chunk).await {
                    Ok(m) => m,
                    Err(e) => {
                        self.retry_later(e);
                        return Ok(());
                    }
                };
                for m in messages {
                    let len = m.encoded_len() + 4;
                    if !frame.is_empty()
                        && (frame_bytes + len > max_bytes || frame.len() >= max_messages)
                    {
                        if !self.push_room() {
                            self.wait_for_room();
                            return Ok(());
                        }
                        let through = frame.last().map_or(read_to, |m| m.cursor);
                        self.push(std::mem::take(&mut frame), through, true, false)?;
                        frame_bytes = 0;
                    }
                    frame_bytes += len;
                    frame.push(m);
                }
                read_to = chunk.last().map_or(read_to, |e| e.cursor);
            }
            if caught_up {
                if !frame.is_empty() {
                    if !self.push_room() {
                        self.wait_for_room();
                        return Ok(());
                    }
                    self.push(std::mem::take(&mut frame), read_to, false, false)?;
                }
                // Entries whose message is gone are skipped, not pushed.
                self.last_pushed = self.last_pushed.max(read_to);
                self.behind = false;
            }
        }
        Ok(())
    }

    /// Pushing failed on the store: keep `behind`, try again in a second.
    fn retry_later(&mut self, e: tern_core::store::StoreError) {
        tracing::warn!(error = %e, "cannot read the inbox; pushing again in 1 s");
        self.flush_at = Some(Instant::now() + STORE_RETRY);
    }

    /// Pushing stopped for lack of room: an ACK restarts it, or, if no push
    /// is waiting for one (the queue is full of replies), a short timer.
    fn wait_for_room(&mut self) {
        if self.unacked.is_empty() {
            self.flush_at = Some(Instant::now() + ROOM_RETRY);
        }
    }

    /// Sends one push frame covering inbox entries up to `through`, and
    /// remembers it until ACKed.
    fn push(
        &mut self,
        messages: Vec<Message>,
        through: u64,
        more_pending: bool,
        older_not_pushed: bool,
    ) -> Result<(), Close> {
        let codec = self.login.as_ref().map_or(Codec::None, |l| l.codec);
        let first_cursor = messages.first().map_or(through, |m| m.cursor);
        let count = messages.len();
        let raw_len: usize = messages.iter().map(|m| m.encoded_len() + 2).sum();
        let (used, payload) =
            tern_wire::pack_batch(messages, codec, self.shared.config.compress_min_bytes);
        metrics::PUSHES.inc();
        metrics::PUSHED_MESSAGES.add(count as u64);
        if count > 0 {
            // Empty frames only move the cursor or carry a gap marker.
            metrics::PUSH_BATCH.observe(count as f64);
        }
        metrics::PUSH_RAW_BYTES.add(raw_len as u64);
        metrics::PUSH_PAYLOAD_BYTES.add(payload.len() as u64);
        let frame = tern_wire::encode_server(server_frame::Kind::Push(Push {
            first_cursor,
            last_cursor: through,
            codec: used as i32,
            payload,
            more_pending,
            older_not_pushed,
            gap: std::mem::take(&mut self.gap_pending),
        }));
        tracing::debug!(
            first_cursor,
            last_cursor = through,
            count,
            bytes = frame.len(),
            "push sent"
        );
        self.emit_bytes(frame.clone())?;
        let now = Instant::now();
        self.unacked.push_back(Unacked {
            last_cursor: through,
            frame,
            sent_at: now,
            first_sent: now,
        });
        self.last_pushed = through;
        Ok(())
    }

    async fn on_ack(&mut self, cursor: u64) -> Result<(), Close> {
        // The latency ends when the ACK arrives, not after the cursor is saved.
        let arrived = Instant::now();
        metrics::ACKS.inc();
        if cursor > self.last_pushed {
            let msg = format!(
                "ack for cursor {cursor}, but the last cursor pushed is {}",
                self.last_pushed
            );
            return self.reject(ErrorCode::BadCursor, msg, "", 0);
        }
        self.cursor_acked = self.cursor_acked.max(cursor);
        self.write_cursor();
        self.unacked.retain(|u| {
            let covered = u.last_cursor <= cursor;
            if covered {
                metrics::ACK_LATENCY.observe_duration(arrived - u.first_sent);
            }
            !covered
        });
        if self.behind {
            self.catch_up().await?;
        }
        Ok(())
    }

    async fn on_sync(&mut self, req: SyncRequest) -> Result<(), Close> {
        let (user, codec) = {
            let l = self.login.as_ref().expect("checked by caller");
            (l.user.clone(), l.codec)
        };
        let limit = tern_chat::pages::page_limit(req.limit);
        let store = self.shared.deps.store.clone();
        // Behind the trim point: the page starts there and says so.
        let read = async {
            let trimmed = store.trimmed_through(&user).await?;
            let after = req.after_cursor.max(trimmed);
            let page = store.read_inbox(&user, after, limit).await?;
            Ok::<_, tern_core::store::StoreError>((req.after_cursor < trimmed, after, page))
        };
        let (gap, after, page) = match read.await {
            Ok(read) => read,
            Err(e) => return self.refuse(Refusal::unavailable(&e), "", req.request_id),
        };
        if req.after_cursor > page.head {
            let msg = format!(
                "cursor {} is past the end of the inbox ({})",
                req.after_cursor, page.head
            );
            return self.reject(ErrorCode::BadCursor, msg, "", req.request_id);
        }
        let c = self.shared.config.clone();
        let budget = frame_budget(&c);
        // Bodies a chunk at a time, up to the page's byte bound (a page of
        // large bodies does not load its whole count first).
        let (mut messages, mut bytes, mut covered) = (Vec::new(), 0, after);
        for chunk in page.entries.chunks(tern_chat::pages::READ_CHUNK) {
            if bytes > budget {
                break;
            }
            match self.shared.bodies.load(store.as_ref(), chunk).await {
                Ok(loaded) => {
                    bytes += loaded.iter().map(|m| m.body.len()).sum::<usize>();
                    messages.extend(loaded);
                }
                Err(e) => return self.refuse(Refusal::unavailable(&e), "", req.request_id),
            }
            covered = chunk.last().map_or(covered, |e| e.cursor);
        }
        let total = messages.len();
        let page_messages = tern_chat::pages::fitting_prefix(messages, budget);
        // All fitted: the page covers every entry looked at, bodies or not
        // (an entry whose message expired must not be asked for forever).
        let next_cursor = if page_messages.len() == total {
            covered
        } else {
            page_messages.last().map_or(after, |m| m.cursor)
        };
        let (used, payload) = tern_wire::pack_batch(page_messages, codec, c.compress_min_bytes);
        self.emit(server_frame::Kind::SyncPage(SyncPage {
            request_id: req.request_id,
            codec: used as i32,
            payload,
            next_cursor,
            has_more: page.head > next_cursor,
            gap,
        }))
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
        if self.flush_at.is_some_and(|at| now >= at) {
            self.catch_up().await?;
        }
        let ack_timeout = c.ack_timeout;
        // Re-send only once everything queued is written: a push waiting in
        // our queue or the socket's buffer is not lost, only slow.
        let drained = self.out.capacity() == self.out.max_capacity();
        // Otherwise the re-send is put off by another `ack_timeout`.
        let resend: Vec<Bytes> = self
            .unacked
            .iter_mut()
            .filter(|u| now >= u.sent_at + ack_timeout)
            .filter_map(|u| {
                u.sent_at = now;
                drained.then(|| u.frame.clone())
            })
            .collect();
        for frame in resend {
            tracing::debug!("re-sending un-ACKed push");
            metrics::PUSHES.inc();
            self.emit_bytes(frame)?;
        }
        while let Some((at, _)) = self.deadlines.front() {
            if *at > now {
                break;
            }
            let (_, cmid) = self.deadlines.pop_front().expect("front exists");
            if self.awaiting.get(&cmid).is_some_and(|(d, _, _)| *d <= now) {
                let asked = self.answered(&cmid).unwrap_or(0);
                let msg = "send not confirmed in time; retry with the same client_msg_id (it will be stored once)";
                for _ in 0..asked {
                    self.reject(ErrorCode::Unavailable, msg, &cmid, 0)?;
                }
            }
        }
        Ok(())
    }

    /// Forgets the connection; removes the route unless the device already
    /// logged in again elsewhere on this gateway.
    /// Starts writing the highest ACKed cursor, unless a write is in
    /// flight (its completion calls this again) or nothing new was ACKed.
    fn write_cursor(&mut self) {
        if self.cursor_write.is_some() || self.cursor_acked <= self.cursor_writing {
            return;
        }
        let Some(l) = self.login.as_ref() else {
            return;
        };
        let (store, user, device) = (
            self.shared.deps.store.clone(),
            l.user.clone(),
            l.device.clone(),
        );
        let cursor = self.cursor_acked;
        self.cursor_writing = cursor;
        self.cursor_write = Some(
            async move {
                if let Err(e) = store.advance_cursor(&user, &device, cursor).await {
                    // Not fatal: the device gets those pushes again at its
                    // next login, and the next ACK writes a higher cursor.
                    tracing::warn!(error = %e, cursor, "cursor not saved");
                }
            }
            .in_current_span()
            .boxed(),
        );
    }

    /// Waits for the cursor write in flight and writes any cursor ACKed
    /// after it; gives up after `CURSOR_FLUSH` (a dead store).
    async fn flush_cursor(&mut self) {
        let flush = async {
            if let Some(w) = self.cursor_write.take() {
                w.await;
            }
            self.write_cursor();
            if let Some(w) = self.cursor_write.take() {
                w.await;
            }
        };
        if tokio::time::timeout(CURSOR_FLUSH, flush).await.is_err() {
            tracing::warn!(
                "cursor not saved before the close; the device gets the last pushes again"
            );
        }
    }

    async fn cleanup(&mut self) {
        self.leave_room();
        let Some(login) = self.login.take() else {
            return;
        };
        if std::mem::take(&mut self.in_group_members) {
            self.shared.groups.offline(&login.user);
        }
        let current = self.shared.hub.remove(self.id);
        if current && !login.send_only {
            let route = Route {
                user: login.user,
                device: login.device,
                gateway: self.shared.config.node_id.clone(),
            };
            if let Err(e) = self.shared.deps.routes.unregister(&route).await {
                tracing::warn!(error = %e, "route not removed; it expires with its TTL");
            }
        }
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
