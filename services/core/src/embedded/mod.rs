//! Embedded backends: the whole pipeline in one process with no servers.
//!
//! The durable parts use [redb](https://docs.rs/redb), chosen because it is
//! pure Rust (no C++ toolchain or long build, unlike RocksDB), has a stable
//! file format since 1.0, ACID transactions with a real fsync on commit
//! (copy-on-write B-trees: a crash leaves the last committed state), and is
//! actively maintained. sled was the other pure-Rust candidate; its last
//! release is years old and its on-disk format is not stable.
//!
//! One write transaction commits many records (group commit), so throughput
//! does not pay one fsync per message.

mod accounts;
mod log;
mod routes;
mod store;

pub use self::log::{EmbeddedLog, EmbeddedLogConfig};
pub use routes::MemoryRoutes;
pub use store::EmbeddedStore;

fn io_err(e: impl std::fmt::Display) -> String {
    e.to_string()
}
