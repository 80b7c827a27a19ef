//! What a refused request gets back, whichever edge it came through.

use std::time::Duration;

use tern_core::proto::client::ErrorCode;
use tern_core::store::StoreError;

/// A request refused by a rule: the stable code clients branch on and a
/// sentence for people.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct Refusal {
    pub code: ErrorCode,
    pub message: String,
    /// For RATE_LIMITED and TOO_MANY_CONNECTIONS: when to try again.
    pub retry_after: Option<Duration>,
}

impl Refusal {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Refusal {
            code,
            message: message.into(),
            retry_after: None,
        }
    }

    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::InvalidArgument, message)
    }

    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::Forbidden, message)
    }

    pub fn unauthenticated(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::Unauthenticated, message)
    }

    /// Over a rate: try again after `retry_after`.
    pub fn rate_limited(message: impl Into<String>, retry_after: Duration) -> Self {
        Refusal {
            retry_after: Some(retry_after),
            ..Self::new(ErrorCode::RateLimited, message)
        }
    }

    /// A dependency failed: the client retries. The cause is logged here,
    /// not sent: it names internal hosts and tables.
    pub fn unavailable(e: &StoreError) -> Self {
        tracing::warn!(error = %e, "request failed on the message store");
        Self::new(
            ErrorCode::Unavailable,
            "the message store is unavailable; try again",
        )
    }
}

/// A rule's answer when it needs the store: refused, or the store failed.
#[derive(Debug, thiserror::Error)]
pub enum ChatError {
    #[error(transparent)]
    Refused(#[from] Refusal),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl ChatError {
    /// As a refusal, a store failure becoming UNAVAILABLE.
    pub fn into_refusal(self) -> Refusal {
        match self {
            ChatError::Refused(r) => r,
            ChatError::Store(e) => Refusal::unavailable(&e),
        }
    }
}
