//! The one error of every store boundary (messages, groups, accounts), in a
//! module of its own: the group and account traits need it, and the
//! message store trait needs them, so it cannot live with any of them
//! without a module cycle.

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("message store unavailable: {0}")]
    Unavailable(String),
    #[error("message store I/O failed: {0}")]
    Io(String),
    #[error("stored data is corrupt: {0}")]
    Corrupt(String),
}
