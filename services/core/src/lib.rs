//! tern-core: the vocabulary every tern service shares.
//!
//! - [`ids`]: user, device, conversation and message ids, and their validation;
//! - the three boundary traits the pipeline is written against, each with the
//!   embedded implementation used by `ternd`:
//!   [`log::EventLog`] (Kafka in production, [`embedded::EmbeddedLog`] here),
//!   [`store::MessageStore`] (ScyllaDB, [`embedded::EmbeddedStore`]),
//!   [`routes::RouteDirectory`] (Redis, [`embedded::MemoryRoutes`]);
//!   the store is one narrow trait per aggregate: messages and history
//!   ([`store::HistoryStore`]), inboxes and cursors ([`store::InboxStore`]),
//!   conversation lists and read marks ([`store::ConversationStore`]),
//!   groups ([`groups::GroupStore`]), and per-user blocks and token
//!   revocations ([`accounts::AccountStore`]); a function that needs one
//!   takes that one (a `&dyn MessageStore` converts to it);
//! - [`instrument`]: wrappers that time every operation of the three
//!   boundaries, whatever the backend (instrument once);
//! - [`stage`]: the consume → act → commit loop every pipeline stage runs;
//! - [`auth`]: HS256 JWT tokens for client logins;
//! - [`sync`]: taking std locks, with the one policy on poisoning;
//! - `conformance` (feature `conformance`, for tests): scenarios every
//!   backend must pass, run against each one.
//!
//! Business logic holds `Arc<dyn Trait>` and never knows which backend it has.

pub mod accounts;
pub mod auth;
#[cfg(any(test, feature = "conformance"))]
pub mod conformance;
pub mod embedded;
pub mod groups;
pub mod ids;
pub mod instrument;
pub mod log;
pub mod metrics;
pub mod routes;
pub mod secret;
pub mod stage;
pub mod store;
mod store_error;
pub mod sync;
pub mod topics;
pub mod trace;

pub use tern_proto as proto;

/// Milliseconds since the Unix epoch, the timestamp unit of every record.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}
