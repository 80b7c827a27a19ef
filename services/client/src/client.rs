//! The connection to a gateway: one background reader and one writer own the
//! socket; [`Client`] hands them frames and waits for the answers.
//!
//! This module connects and logs in, defines the [`Event`]s a connection
//! reports, and holds what every request shares: writing a frame, waiting
//! for its answer, logging out. Each family of requests has a submodule of
//! its own (`send`, `inbox`, `conversations`, `rooms`, `blocks`); the
//! waiters shared with the reader are in `shared`, and the reader and
//! writer tasks in `tasks`.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use tern_proto::client::{Codec, Login, LoginResult, Logout, Message, client_frame, server_frame};
use tern_wire::{WireError, decode_server, encode_client};
use tokio::sync::{mpsc, oneshot};
use tracing::debug;

pub use tern_proto::client::send::Target;

use crate::dedup::CursorDedup;
use crate::transport;
use crate::{ClientError, ServerAddr};

mod blocks;
mod conversations;
mod inbox;
mod rooms;
mod send;
mod shared;
mod tasks;

pub use inbox::InboxSlice;
pub use send::SendOptions;
use shared::{Answer, Shared};
use tasks::{read_loop, write_loop};

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
