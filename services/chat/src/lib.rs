//! tern-chat: the rules of chat, decided in one place.
//!
//! The gateway (client frames) and the API (gRPC calls) both ask this crate
//! who may do what, so the two cannot disagree:
//! - [`identity`]: a login token is valid, not revoked, and for this device;
//! - [`send`]: what a valid send is (ids, sizes, target);
//! - [`access`]: who reads which conversation, and from which seq (group
//!   members from when they joined), who changes a group's members, who
//!   may be added (blocks), how many groups a user may be in;
//! - [`rooms`]: which live rooms a token may join and post to;
//! - [`pages`], [`conversations`]: how big a page of messages or
//!   conversations may be;
//! - [`limits`]: token buckets and connection counts, sans I/O (the caller
//!   passes the time), for the rate limits the gateway and API enforce.
//!
//! Every refusal is a [`Refusal`]: a stable client error code and a
//! sentence that never repeats unbounded client input. The gateway turns it
//! into an `Error` frame, the API into a gRPC status.

pub mod access;
pub mod conversations;
pub mod identity;
pub mod limits;
pub mod pages;
pub mod rooms;
pub mod send;

mod refusal;

pub use refusal::{ChatError, Refusal};
