//! Who may call what, tried as an outsider would: every gRPC method of
//! every service, and every client frame kind, with no credential, a token
//! signed with another key, an expired token, a revoked token, the wrong
//! kind of credential, and another user's token. The methods and frame
//! kinds are read from the protobuf descriptors, so one added later without
//! a row in its table fails the test ("no row for …"). `setup` holds the
//! server, the tokens and the descriptor readers; `user_api`, `backend_api`
//! and `archive_admin` hold one gRPC service's table each, which `rpc` runs;
//! `frames` holds the client frame table and runs it.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../common/mod.rs"]
mod common;

mod archive_admin;
mod backend_api;
mod frames;
mod rpc;
mod setup;
mod user_api;
