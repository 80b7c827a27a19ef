//! The API's errors, each mapped to a gRPC status in one place.

use std::time::Duration;

use tern_chat::{ChatError, Refusal};
use tern_core::ids::IdError;
use tern_core::log::LogError;
use tern_core::proto::client::ErrorCode;
use tern_core::store::StoreError;
use tonic::Status;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// A rule of `tern-chat` said no; its code picks the status.
    #[error(transparent)]
    Refused(#[from] Refusal),
    #[error(transparent)]
    BadId(#[from] IdError),
    #[error("cursor {cursor} is past the end of the inbox ({head})")]
    BadCursor { cursor: u64, head: u64 },
    #[error("message not stored: {0}; retry with the same client_msg_id")]
    Log(#[from] LogError),
    #[error("store unavailable: {0}")]
    Store(#[from] StoreError),
    #[error("route directory unavailable: {0}")]
    Routes(#[from] tern_core::routes::RouteError),
    #[error(
        "send not confirmed within {0:?}; retry with the same client_msg_id (it is stored once)"
    )]
    NotConfirmed(Duration),
    #[error("unknown group {0}")]
    UnknownGroup(String),
    #[error("the change is stored, but the gateways could not be told yet: {0}; retry the call")]
    Feed(LogError),
}

impl From<ChatError> for ApiError {
    fn from(e: ChatError) -> Self {
        match e {
            ChatError::Refused(r) => ApiError::Refused(r),
            ChatError::Store(e) => ApiError::Store(e),
        }
    }
}

/// The gRPC status for a client error code: what the refusal means to a
/// stock gRPC client.
fn status_code(code: ErrorCode) -> tonic::Code {
    use tonic::Code;
    match code {
        ErrorCode::Unauthenticated | ErrorCode::TokenRevoked => Code::Unauthenticated,
        ErrorCode::Forbidden | ErrorCode::Blocked => Code::PermissionDenied,
        ErrorCode::UnknownConversation => Code::NotFound,
        ErrorCode::RateLimited | ErrorCode::TooManyConnections => Code::ResourceExhausted,
        ErrorCode::Unavailable | ErrorCode::GoingAway => Code::Unavailable,
        ErrorCode::Internal => Code::Internal,
        _ => Code::InvalidArgument,
    }
}

/// The refusal as a status; the client error code's name leads the
/// message (`BLOCKED: …`), so API clients can branch on it like wire
/// clients do, and a retry-after travels in the `retry-after-ms` header.
pub fn refusal_status(r: &Refusal) -> Status {
    let mut status = Status::new(
        status_code(r.code),
        format!("{}: {}", r.code.as_str_name(), r.message),
    );
    if let Some(after) = r.retry_after
        && let Ok(v) = after.as_millis().to_string().parse()
    {
        status.metadata_mut().insert("retry-after-ms", v);
    }
    status
}

impl From<ApiError> for Status {
    fn from(e: ApiError) -> Self {
        let msg = e.to_string();
        match e {
            ApiError::Refused(r) => refusal_status(&r),
            ApiError::BadId(IdError::UnknownConversation(_)) | ApiError::UnknownGroup(_) => {
                Status::not_found(msg)
            }
            ApiError::BadId(_) | ApiError::BadCursor { .. } => Status::invalid_argument(msg),
            ApiError::NotConfirmed(_) => Status::unavailable(msg),
            // The cause names internal hosts: logged, not sent.
            ApiError::Log(_) | ApiError::Feed(_) | ApiError::Store(_) | ApiError::Routes(_) => {
                tracing::warn!(error = %msg, "API call failed on a backend");
                Status::unavailable(match e {
                    ApiError::Log(_) => {
                        "not stored: the event log is unavailable; retry (with the same client_msg_id for a send)"
                    }
                    ApiError::Feed(_) => {
                        "the change is stored, but the gateways could not be told yet; retry the call"
                    }
                    _ => "a backend is unavailable; try again",
                })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_keep_their_code_and_retry_time() {
        let s: Status = ApiError::from(Refusal::rate_limited(
            "slow down",
            Duration::from_millis(1500),
        ))
        .into();
        assert_eq!(s.code(), tonic::Code::ResourceExhausted);
        assert_eq!(s.message(), "RATE_LIMITED: slow down");
        assert_eq!(s.metadata().get("retry-after-ms").unwrap(), "1500");
        let s: Status = ApiError::from(Refusal::new(ErrorCode::Blocked, "no")).into();
        assert_eq!(s.code(), tonic::Code::PermissionDenied);
    }
}
