//! tern-client: the Rust client library for tern, and the `tern` CLI on top.
//!
//! [`Client::connect`] opens a connection to a gateway (TCP or WebSocket),
//! logs in, and leaves a background reader and writer owning the socket. The
//! writer sends heartbeats on the interval the gateway asked for; the reader
//! answers waiting [`Client::send`] / [`Client::sync`] calls and turns pushes
//! (decompressed, with re-sent messages dropped by cursor) and unsolicited
//! errors into [`Event`]s read with [`Client::next_event`]. The application
//! ACKs pushes itself ([`Client::ack`]) once it has stored them: the client
//! never ACKs on its own, because only the application knows when a message
//! is safe.
//!
//! Frames are encoded and decoded by `tern-wire`, the same crate the gateway
//! uses. [`dev_token`] fetches a token from the gRPC API of a server in dev
//! mode; [`GroupApi`] creates and manages groups as a user; [`ArchiveApi`]
//! administers the compliance archive with the admin token.

mod address;
mod api;
mod archive;
mod client;
mod dedup;
mod error;
mod groups;
mod transport;

pub use address::{DEFAULT_TCP_PORT, ServerAddr};
pub use api::{
    Authorized, Bearer, DEFAULT_API_ADDR, DEFAULT_BACKEND_ADDR, connect_api, connect_api_as,
    connect_backend, connect_backend_as, dev_token, dev_token_with, dev_token_with_ttl, with_token,
};
pub use archive::{ArchiveApi, ArchiveSubject};
pub use client::{
    Client, DEFAULT_CLIENT_MAX_FRAME, DEFAULT_REQUEST_TIMEOUT, Event, InboxSlice, LoginOptions,
    MAX_PAYLOAD, SendOptions, Target, message_id_string,
};
pub use dedup::CursorDedup;
pub use error::ClientError;
pub use groups::GroupApi;
/// The gRPC API's types, for calls made with [`connect_api`].
pub use tern_proto::api as api_proto;
/// The protocol types callers handle (`Message`, `SendResult`, `LoginResult`, `ErrorCode`, ...).
pub use tern_proto::client as proto;

/// Default gateway address.
pub const DEFAULT_SERVER_ADDR: &str = "tcp://127.0.0.1:7400";
