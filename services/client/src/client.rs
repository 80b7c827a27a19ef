//! The connection to a gateway: one background reader and one writer own the
//! socket; [`Client`] hands them frames and waits for the answers.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use tern_proto::client::{
    BlockedList, BlockedListRequest, Codec, ConversationList, ConversationSummary,
    ConversationsRequest, Heartbeat, HistoryPage, HistoryRequest, Login, LoginResult, Logout,
    MarkRead, MarkReadResult, Message, PushAck, RoomJoin, RoomLeave, RoomResult, RoomSend,
    SendResult, SetBlocked, SetBlockedResult, SyncPage, SyncRequest, client_frame, server_frame,
};
use tern_wire::{WireError, decode_server, encode_client, unpack_batch};
use tokio::sync::{mpsc, oneshot};
use tokio::time::{Instant, Interval, MissedTickBehavior};
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

pub use tern_proto::client::send::Target;

use crate::dedup::CursorDedup;
use crate::error::describe;
use crate::transport::{self, FrameSink, FrameStream};
use crate::{ClientError, ServerAddr};

/// How long a request waits for its answer unless told otherwise.
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(15);
/// Largest frame the client reads or writes: above the gateway's own limit,
/// so that the gateway, not the client, decides what is too large.
pub const DEFAULT_CLIENT_MAX_FRAME: usize = 16 << 20;
/// Largest push or sync payload once decompressed.
pub const MAX_PAYLOAD: usize = 64 << 20;
/// Heartbeat period when the gateway does not name one.
const FALLBACK_HEARTBEAT: Duration = Duration::from_secs(30);
/// How long `logout` waits for the gateway to close the connection.
const LOGOUT_GRACE: Duration = Duration::from_secs(5);
/// Frames waiting for the writer before callers wait for room.
const OUTBOUND_QUEUE: usize = 1024;

/// Who logs in, and how the connection behaves.
#[derive(Debug, Clone)]
pub struct LoginOptions {
    /// Signed token whose subject is the user id.
    pub token: String,
    /// This installation; each device has its own inbox cursor.
    pub device_id: String,
    /// Codecs the client can decode, most preferred first.
    pub accept_codecs: Vec<Codec>,
    /// Only send: the gateway pushes nothing to this connection.
    pub send_only: bool,
    /// Send heartbeats at the interval the gateway asks for. Turning them off
    /// is for tests of the gateway's idle timeout.
    pub heartbeats: bool,
    /// How long connecting, logging in and each request may take.
    pub request_timeout: Duration,
    /// Largest frame read or written.
    pub max_frame: usize,
    /// The highest inbox cursor this device already stored, if the app
    /// keeps one: pushes at or below it (or below the server's cursor for
    /// the device, whichever is higher) are dropped as repeats. A server
    /// whose cursor update was lost in a crash re-pushes; this is what
    /// keeps the app from seeing those messages twice.
    pub known_cursor: u64,
}

impl LoginOptions {
    pub fn new(token: impl Into<String>, device_id: impl Into<String>) -> Self {
        LoginOptions {
            token: token.into(),
            device_id: device_id.into(),
            accept_codecs: vec![Codec::Zstd, Codec::Deflate],
            send_only: false,
            heartbeats: true,
            request_timeout: DEFAULT_REQUEST_TIMEOUT,
            max_frame: DEFAULT_CLIENT_MAX_FRAME,
            known_cursor: 0,
        }
    }

    /// The same options for a connection that only sends.
    pub fn send_only(mut self) -> Self {
        self.send_only = true;
        self
    }
}

/// One message to send.
#[derive(Debug, Clone)]
pub struct SendOptions {
    pub target: Target,
    /// Retrying with the same id is answered with the same result and stores
    /// the message once; `None` picks a fresh UUIDv7.
    pub client_msg_id: Option<String>,
    pub content_type: String,
    pub body: Bytes,
}

impl SendOptions {
    /// A `text/plain` message in the 1:1 chat with `user`.
    pub fn to_user(user: impl Into<String>, body: impl Into<Bytes>) -> Self {
        SendOptions::new(Target::ToUser(user.into()), body)
    }

    /// A `text/plain` message in an existing conversation.
    pub fn to_conversation(conversation: impl Into<String>, body: impl Into<Bytes>) -> Self {
        SendOptions::new(Target::Conversation(conversation.into()), body)
    }

    pub fn new(target: Target, body: impl Into<Bytes>) -> Self {
        SendOptions {
            target,
            client_msg_id: None,
            content_type: "text/plain".into(),
            body: body.into(),
        }
    }

    pub fn with_client_msg_id(mut self, id: impl Into<String>) -> Self {
        self.client_msg_id = Some(id.into());
        self
    }

    pub fn with_content_type(mut self, content_type: impl Into<String>) -> Self {
        self.content_type = content_type.into();
        self
    }
}

/// A page of the inbox, from [`Client::sync`].
#[derive(Debug, Clone, PartialEq)]
pub struct InboxSlice {
    pub messages: Vec<Message>,
    /// Pass as `after_cursor` for the next page.
    pub next_cursor: u64,
    pub has_more: bool,
    /// Retention trimmed entries after the cursor asked for: this page
    /// starts at the trim point, and the device missed what was before.
    pub gap: bool,
}

/// What the connection reports besides answers to requests.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// New messages from a push, repeats already removed. ACK `last_cursor`
    /// (with [`Client::ack`]) once they are stored. `messages` may be empty
    /// when the push only moved the cursor.
    Messages {
        messages: Vec<Message>,
        last_cursor: u64,
        more_pending: bool,
        /// Only the newest of a long backlog were pushed after login: page
        /// back through older ones with [`Client::history`] when needed.
        older_not_pushed: bool,
        /// Retention trimmed inbox entries this device had not received
        /// (it was away too long, or too much arrived meanwhile).
        gap: bool,
    },
    /// New messages of a large group (live only, not ACKed): they are in
    /// the group's history, which a client pages when it finds a gap in
    /// the group's seq numbers or comes back online.
    GroupMessages {
        conversation: String,
        messages: Vec<Message>,
    },
    /// Messages of the live room this connection is in (best-effort: not
    /// ACKed, and a client that reads too slowly misses some).
    RoomMessages {
        room: String,
        messages: Vec<Message>,
    },
    /// An error frame that answers no request of this client (fatal ones
    /// are followed by `Closed`).
    ServerError(tern_proto::client::Error),
    /// The connection is over; the last event.
    Closed { reason: String },
}

/// A logged-in connection to a gateway.
///
/// All methods take `&self`: share the client in an `Arc` to send from one
/// task while another reads events. Dropping it closes the connection after
/// the frames already queued are written.
pub struct Client {
    /// Frames for the writer task, in order.
    outbound: mpsc::Sender<Outbound>,
    /// Waiters and the connection's fate, shared with the reader.
    shared: Arc<Shared>,
    /// Pushes and unsolicited errors, behind a lock so `next_event` needs only `&self`.
    events: tokio::sync::Mutex<mpsc::UnboundedReceiver<Event>>,
    login: LoginResult,
    request_timeout: Duration,
    max_frame: usize,
    /// Sync request ids, from 1 (0 means "no request" in an Error frame).
    next_request_id: AtomicU64,
}

enum Outbound {
    Frame(Bytes),
    /// Close the sending side but keep reading until the gateway closes.
    Finish,
}

impl Client {
    /// Connects to `addr` (`tcp://host:port`, `ws://host:port/` or
    /// `host:port`) and logs in. A refused login is `ClientError::Server`.
    pub async fn connect(
        addr: &str,
        login: LoginOptions,
    ) -> Result<(Client, LoginResult), ClientError> {
        Client::connect_to(&ServerAddr::parse(addr)?, login).await
    }

    pub async fn connect_to(
        addr: &ServerAddr,
        options: LoginOptions,
    ) -> Result<(Client, LoginResult), ClientError> {
        let (mut sink, mut stream) =
            transport::open(addr, options.max_frame, options.request_timeout).await?;
        let login_frame = encode_client(client_frame::Kind::Login(Login {
            token: options.token.clone(),
            device_id: options.device_id.clone(),
            accept_codecs: options.accept_codecs.iter().map(|c| *c as i32).collect(),
            send_only: options.send_only,
        }));
        let reply = tokio::time::timeout(options.request_timeout, async {
            sink.send(login_frame).await?;
            stream.next().await.transpose()
        })
        .await
        .map_err(|_| ClientError::Timeout)??;
        let Some(reply) = reply else {
            return Err(ClientError::Closed(
                "the gateway closed the connection before answering the login".into(),
            ));
        };
        let login = match decode_server(&reply)? {
            server_frame::Kind::LoginResult(login) => login,
            server_frame::Kind::Error(err) => return Err(ClientError::from_frame(&err)),
            other => {
                return Err(ClientError::Protocol(format!(
                    "the gateway answered the login with {} instead of LoginResult",
                    kind_name(&other)
                )));
            }
        };

        let shared = Arc::new(Shared::default());
        let (outbound, outbound_rx) = mpsc::channel(OUTBOUND_QUEUE);
        let (events_tx, events_rx) = mpsc::unbounded_channel();
        let heartbeat = options
            .heartbeats
            .then(|| match login.heartbeat_interval_ms {
                0 => FALLBACK_HEARTBEAT,
                ms => Duration::from_millis(u64::from(ms)),
            });
        tokio::spawn(write_loop(sink, outbound_rx, heartbeat, shared.clone()));
        tokio::spawn(read_loop(
            stream,
            shared.clone(),
            events_tx,
            CursorDedup::new(login.cursor.max(options.known_cursor)),
        ));

        let client = Client {
            outbound,
            shared,
            events: tokio::sync::Mutex::new(events_rx),
            login: login.clone(),
            request_timeout: options.request_timeout,
            max_frame: options.max_frame,
            next_request_id: AtomicU64::new(1),
        };
        Ok((client, login))
    }

    /// What the gateway answered the login with.
    pub fn login_result(&self) -> &LoginResult {
        &self.login
    }

    pub fn user_id(&self) -> &str {
        &self.login.user_id
    }

    pub fn device_id(&self) -> &str {
        &self.login.device_id
    }

    pub fn request_timeout(&self) -> Duration {
        self.request_timeout
    }

    pub fn set_request_timeout(&mut self, timeout: Duration) {
        self.request_timeout = timeout;
    }

    /// Why the connection ended, once it has.
    pub fn closed_reason(&self) -> Option<String> {
        self.shared.state().closed.clone()
    }

    /// Waits until the connection is over.
    pub async fn closed(&self) {
        self.shared.done.cancelled().await;
    }

    /// The next push or unsolicited error; `Closed` is the last event, then `None`.
    pub async fn next_event(&self) -> Option<Event> {
        self.events.lock().await.recv().await
    }

    /// Sends a `text/plain` message to `to_user` with a fresh client message id.
    pub async fn send_to(
        &self,
        to_user: impl Into<String>,
        body: impl Into<Bytes>,
    ) -> Result<SendResult, ClientError> {
        self.send(SendOptions::to_user(to_user, body)).await
    }

    /// Sends a message and waits for its `SendResult`. Several sends may be
    /// in flight at once; each answer is matched by client message id.
    pub async fn send(&self, options: SendOptions) -> Result<SendResult, ClientError> {
        let client_msg_id = options
            .client_msg_id
            .unwrap_or_else(|| uuid::Uuid::now_v7().to_string());
        let (tx, rx) = oneshot::channel();
        let _pending = self.shared.register_send(&client_msg_id, tx)?;
        self.write(encode_client(client_frame::Kind::Send(
            tern_proto::client::Send {
                client_msg_id,
                target: Some(options.target),
                content_type: options.content_type,
                body: options.body,
            },
        )))
        .await?;
        self.wait(rx).await
    }

    /// Tells the gateway everything up to `cursor` is stored on this device.
    pub async fn ack(&self, cursor: u64) -> Result<(), ClientError> {
        self.write(encode_client(client_frame::Kind::PushAck(PushAck {
            cursor,
        })))
        .await
    }

    /// Pulls up to `limit` inbox messages after `after_cursor`.
    pub async fn sync(&self, after_cursor: u64, limit: u32) -> Result<InboxSlice, ClientError> {
        let answer = self
            .request(|request_id| {
                client_frame::Kind::Sync(SyncRequest {
                    request_id,
                    after_cursor,
                    limit,
                })
            })
            .await?;
        let Answer::Sync(page) = answer else {
            return Err(ClientError::Protocol(format!(
                "a sync was answered with {answer:?}"
            )));
        };
        let messages = unpack_batch(page.codec, &page.payload, MAX_PAYLOAD)?;
        Ok(InboxSlice {
            messages,
            next_cursor: page.next_cursor,
            has_more: page.has_more,
            gap: page.gap,
        })
    }

    /// A page of `conversation`'s history, newest first: messages with seq
    /// below `before_seq` (0: from the newest). Returns the messages, the
    /// `before_seq` for the next (older) page, and whether there is one.
    pub async fn history(
        &self,
        conversation: impl Into<String>,
        before_seq: u64,
        limit: u32,
    ) -> Result<(Vec<Message>, u64, bool), ClientError> {
        let conversation = conversation.into();
        let answer = self
            .request(|request_id| {
                client_frame::Kind::History(HistoryRequest {
                    request_id,
                    conversation,
                    before_seq,
                    limit,
                })
            })
            .await?;
        let Answer::History(page) = answer else {
            return Err(ClientError::Protocol(format!(
                "a history request was answered with {answer:?}"
            )));
        };
        let messages = unpack_batch(page.codec, &page.payload, MAX_PAYLOAD)?;
        Ok((messages, page.next_before_seq, page.has_more))
    }

    /// Up to `limit` (0: the server's default) of this user's
    /// conversations, most recently active first, with the newest message
    /// and the unread count of each.
    pub async fn conversations(&self, limit: u32) -> Result<Vec<ConversationSummary>, ClientError> {
        Ok(self.conversations_page(limit, Bytes::new()).await?.0)
    }

    /// A page of the conversation list: up to `limit` conversations after
    /// the page that returned `before` as its next position (empty: the
    /// most recent). Returns the page and the next position (empty: none).
    pub async fn conversations_page(
        &self,
        limit: u32,
        before: Bytes,
    ) -> Result<(Vec<ConversationSummary>, Bytes), ClientError> {
        match self
            .request(|request_id| {
                client_frame::Kind::Conversations(ConversationsRequest {
                    request_id,
                    limit,
                    before,
                })
            })
            .await?
        {
            Answer::Conversations(list) => Ok((list.conversations, list.next)),
            other => Err(ClientError::Protocol(format!(
                "a conversation list request was answered with {other:?}"
            ))),
        }
    }

    /// Blocks `user` (`blocked` true) or unblocks them: a blocked user's
    /// 1:1 messages to this user are refused with `BLOCKED`. Returns whether
    /// the user is blocked now.
    pub async fn set_blocked(
        &self,
        user: impl Into<String>,
        blocked: bool,
    ) -> Result<bool, ClientError> {
        let user = user.into();
        match self
            .request(|request_id| {
                client_frame::Kind::SetBlocked(SetBlocked {
                    request_id,
                    user,
                    blocked,
                })
            })
            .await?
        {
            Answer::Blocked(result) => Ok(result.blocked),
            other => Err(ClientError::Protocol(format!(
                "a block request was answered with {other:?}"
            ))),
        }
    }

    /// Every user this user blocks, in id order (read a page at a time).
    pub async fn blocked_users(&self) -> Result<Vec<String>, ClientError> {
        let mut all = Vec::new();
        let mut after = String::new();
        loop {
            let page = self
                .request(|request_id| {
                    client_frame::Kind::BlockedList(BlockedListRequest {
                        request_id,
                        after,
                        limit: 0,
                    })
                })
                .await?;
            let Answer::BlockedList(page) = page else {
                return Err(ClientError::Protocol(format!(
                    "a blocked-list request was answered with {page:?}"
                )));
            };
            all.extend(page.users);
            if page.next.is_empty() {
                return Ok(all);
            }
            after = page.next;
        }
    }

    /// Marks `conversation` read up to `seq` for this user (on every
    /// device). Returns the read mark now stored: never lower than before,
    /// never past the newest message.
    pub async fn mark_read(
        &self,
        conversation: impl Into<String>,
        seq: u64,
    ) -> Result<u64, ClientError> {
        let conversation = conversation.into();
        match self
            .request(|request_id| {
                client_frame::Kind::MarkRead(MarkRead {
                    request_id,
                    conversation,
                    seq,
                })
            })
            .await?
        {
            Answer::MarkRead(result) => Ok(result.read_seq),
            other => Err(ClientError::Protocol(format!(
                "a mark-read request was answered with {other:?}"
            ))),
        }
    }

    /// Enters live room `room`, leaving the one this connection was in.
    /// Once this returns, no message of the old room arrives and every
    /// message posted to `room` from now on does (as [`Event::RoomMessages`]).
    pub async fn join_room(&self, room: impl Into<String>) -> Result<(), ClientError> {
        let room = room.into();
        self.room_request(|request_id| client_frame::Kind::RoomJoin(RoomJoin { request_id, room }))
            .await
    }

    /// Leaves the current room.
    pub async fn leave_room(&self) -> Result<(), ClientError> {
        self.room_request(|request_id| client_frame::Kind::RoomLeave(RoomLeave { request_id }))
            .await
    }

    /// Posts a `text/plain` message to `room`, which this connection must
    /// be in. Returns once every gateway can read it; rooms are best-effort,
    /// so it is not stored and viewers who are too slow may miss it.
    pub async fn post_to_room(
        &self,
        room: impl Into<String>,
        body: impl Into<Bytes>,
    ) -> Result<(), ClientError> {
        let (room, body) = (room.into(), body.into());
        self.room_request(|request_id| {
            client_frame::Kind::RoomSend(RoomSend {
                request_id,
                room,
                content_type: "text/plain".into(),
                body,
            })
        })
        .await
    }

    async fn room_request(
        &self,
        frame: impl FnOnce(u64) -> client_frame::Kind,
    ) -> Result<(), ClientError> {
        match self.request(frame).await? {
            Answer::Room(result) => {
                debug!(room = %result.room, "room request answered");
                Ok(())
            }
            other => Err(ClientError::Protocol(format!(
                "a room request was answered with {other:?}"
            ))),
        }
    }

    /// Writes the frame `frame` builds with a fresh request id and waits
    /// for the answer with that id.
    async fn request(
        &self,
        frame: impl FnOnce(u64) -> client_frame::Kind,
    ) -> Result<Answer, ClientError> {
        let request_id = self.next_request_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        let _pending = self.shared.register_request(request_id, tx)?;
        self.write(encode_client(frame(request_id))).await?;
        self.wait(rx).await
    }

    /// Says goodbye: sends `Logout`, closes the sending side, and waits
    /// (briefly) for the gateway to close the connection. Frames queued
    /// before, such as ACKs, are written first.
    pub async fn logout(&self) -> Result<(), ClientError> {
        self.write(encode_client(client_frame::Kind::Logout(Logout {})))
            .await?;
        self.shared.closing("the client logged out");
        // The writer has stopped if this fails; the reader still finishes below.
        let _ = self.outbound.send(Outbound::Finish).await;
        let grace = LOGOUT_GRACE.min(self.request_timeout);
        if tokio::time::timeout(grace, self.shared.done.cancelled())
            .await
            .is_err()
        {
            debug!(
                ?grace,
                "gateway did not close the connection after logout; closing it"
            );
            self.shared.stop.cancel();
            self.shared.done.cancelled().await;
        }
        Ok(())
    }

    /// Writes `frame` as one frame, whatever it holds (tests of malformed input).
    pub async fn send_raw_frame(&self, frame: impl Into<Bytes>) -> Result<(), ClientError> {
        self.write(frame.into()).await
    }

    async fn write(&self, frame: Bytes) -> Result<(), ClientError> {
        // Checked here, not by the writer, so an oversized frame fails this
        // call instead of the whole connection.
        if frame.len() > self.max_frame {
            return Err(WireError::FrameTooLarge {
                len: frame.len(),
                max: self.max_frame,
            }
            .into());
        }
        if let Some(reason) = self.shared.state().closed.clone() {
            return Err(ClientError::Closed(reason));
        }
        self.outbound
            .send(Outbound::Frame(frame))
            .await
            .map_err(|_| self.shared.closed_error())
    }

    async fn wait<T>(
        &self,
        rx: oneshot::Receiver<Result<T, ClientError>>,
    ) -> Result<T, ClientError> {
        match tokio::time::timeout(self.request_timeout, rx).await {
            Err(_) => Err(ClientError::Timeout),
            Ok(Err(_)) => Err(self.shared.closed_error()),
            Ok(Ok(answer)) => answer,
        }
    }
}

type SendWaiter = oneshot::Sender<Result<SendResult, ClientError>>;
/// What a request (sync, room join/leave/post) is answered with.
#[derive(Debug)]
enum Answer {
    Sync(SyncPage),
    Room(RoomResult),
    History(HistoryPage),
    Conversations(ConversationList),
    MarkRead(MarkReadResult),
    Blocked(SetBlockedResult),
    BlockedList(BlockedList),
}

type RequestWaiter = oneshot::Sender<Result<Answer, ClientError>>;

/// State shared by the client, the reader and the writer.
#[derive(Default)]
struct Shared {
    state: Mutex<State>,
    /// Asks the reader to end the connection (writer failed, logout timed out, client dropped).
    stop: CancellationToken,
    /// The reader has ended: the connection is over.
    done: CancellationToken,
}

#[derive(Default)]
struct State {
    /// Set once the connection is over; every request fails with it from then on.
    closed: Option<String>,
    /// Why the connection is ending, known before the socket closes (a
    /// fatal error, a logout): a better reason than "the gateway closed it".
    closing: Option<String>,
    /// Sends waiting for their answer, by client message id. A queue because
    /// a test may send the same id again before the first answer.
    sends: HashMap<String, VecDeque<(u64, SendWaiter)>>,
    /// Requests waiting for their answer, by request id.
    requests: HashMap<u64, RequestWaiter>,
    /// Tells apart waiters that share a client message id.
    next_waiter: u64,
}

impl Shared {
    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn closed_error(&self) -> ClientError {
        let state = self.state();
        let reason = state.closed.clone().or_else(|| state.closing.clone());
        ClientError::Closed(reason.unwrap_or_else(|| "the connection is closed".into()))
    }

    fn closing(&self, reason: impl Into<String>) {
        self.state().closing.get_or_insert_with(|| reason.into());
    }

    /// Registers a waiter, unless the connection is already over (then no
    /// answer can come, and the caller must not wait for one).
    fn register_send(
        self: &Arc<Self>,
        client_msg_id: &str,
        waiter: SendWaiter,
    ) -> Result<PendingSend, ClientError> {
        let mut state = self.state();
        if let Some(reason) = &state.closed {
            return Err(ClientError::Closed(reason.clone()));
        }
        state.next_waiter += 1;
        let token = state.next_waiter;
        state
            .sends
            .entry(client_msg_id.to_string())
            .or_default()
            .push_back((token, waiter));
        Ok(PendingSend {
            shared: self.clone(),
            client_msg_id: client_msg_id.to_string(),
            token,
        })
    }

    fn register_request(
        self: &Arc<Self>,
        request_id: u64,
        waiter: RequestWaiter,
    ) -> Result<PendingRequest, ClientError> {
        let mut state = self.state();
        if let Some(reason) = &state.closed {
            return Err(ClientError::Closed(reason.clone()));
        }
        state.requests.insert(request_id, waiter);
        Ok(PendingRequest {
            shared: self.clone(),
            request_id,
        })
    }

    /// Hands an answer to the oldest send waiting on `client_msg_id`; false if none waits.
    fn resolve_send(&self, client_msg_id: &str, answer: Result<SendResult, ClientError>) -> bool {
        let mut state = self.state();
        let Some(queue) = state.sends.get_mut(client_msg_id) else {
            return false;
        };
        let waiter = queue.pop_front();
        if queue.is_empty() {
            state.sends.remove(client_msg_id);
        }
        match waiter {
            Some((_, tx)) => {
                let _ = tx.send(answer);
                true
            }
            None => false,
        }
    }

    fn resolve_request(&self, request_id: u64, answer: Result<Answer, ClientError>) -> bool {
        match self.state().requests.remove(&request_id) {
            Some(tx) => {
                let _ = tx.send(answer);
                true
            }
            None => false,
        }
    }

    /// Ends the connection: fails every waiter, wakes everyone, and returns the reason.
    fn finish(&self, observed: String) -> String {
        let mut state = self.state();
        let reason = state.closing.take().unwrap_or(observed);
        state.closed = Some(reason.clone());
        for (_, queue) in state.sends.drain() {
            for (_, tx) in queue {
                let _ = tx.send(Err(ClientError::Closed(reason.clone())));
            }
        }
        for (_, tx) in state.requests.drain() {
            let _ = tx.send(Err(ClientError::Closed(reason.clone())));
        }
        drop(state);
        self.done.cancel();
        reason
    }
}

/// Removes a send's waiter when the call ends without an answer (timeout,
/// the caller's future dropped).
struct PendingSend {
    shared: Arc<Shared>,
    client_msg_id: String,
    token: u64,
}

impl Drop for PendingSend {
    fn drop(&mut self) {
        let mut state = self.shared.state();
        if let Some(queue) = state.sends.get_mut(&self.client_msg_id) {
            queue.retain(|(token, _)| *token != self.token);
            if queue.is_empty() {
                state.sends.remove(&self.client_msg_id);
            }
        }
    }
}

struct PendingRequest {
    shared: Arc<Shared>,
    request_id: u64,
}

impl Drop for PendingRequest {
    fn drop(&mut self) {
        self.shared.state().requests.remove(&self.request_id);
    }
}

/// Writes queued frames in order and a heartbeat every period.
async fn write_loop(
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
async fn read_loop(
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

fn kind_name(kind: &server_frame::Kind) -> &'static str {
    match kind {
        server_frame::Kind::LoginResult(_) => "LoginResult",
        server_frame::Kind::HeartbeatAck(_) => "HeartbeatAck",
        server_frame::Kind::SendResult(_) => "SendResult",
        server_frame::Kind::Push(_) => "Push",
        server_frame::Kind::SyncPage(_) => "SyncPage",
        server_frame::Kind::Error(_) => "Error",
        server_frame::Kind::RoomResult(_) => "RoomResult",
        server_frame::Kind::RoomBatch(_) => "RoomBatch",
        server_frame::Kind::HistoryPage(_) => "HistoryPage",
        server_frame::Kind::ConversationList(_) => "ConversationList",
        server_frame::Kind::MarkReadResult(_) => "MarkReadResult",
        server_frame::Kind::GroupMessages(_) => "GroupMessages",
        server_frame::Kind::SetBlockedResult(_) => "SetBlockedResult",
        server_frame::Kind::BlockedList(_) => "BlockedList",
    }
}

/// A server message id (16 bytes) as a UUID string; other lengths as hex.
pub fn message_id_string(id: &[u8]) -> String {
    match uuid::Uuid::from_slice(id) {
        Ok(uuid) => uuid.to_string(),
        Err(_) => id.iter().map(|b| format!("{b:02x}")).collect(),
    }
}

#[cfg(test)]
mod tests;
