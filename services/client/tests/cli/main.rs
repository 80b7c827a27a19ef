//! The `tern` CLI against a real ternd: the commands and output other tools
//! and scripts rely on.
//!
//! `common` starts a server and runs `tern` against it; each other module
//! tests one family of commands.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod archive;
mod blocks;
mod common;
mod conversations;
mod groups;
mod messaging;
mod rooms;
mod tokens;
