//! The one error type of the client library.

use tern_proto::client::ErrorCode;
use tern_wire::WireError;

/// Why a client call failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The gateway answered with an `Error` frame.
    #[error("{message} ({})", code.as_str_name())]
    Server {
        /// Stable code to branch on (`MESSAGE_TOO_LARGE`, `UNAVAILABLE`, ...).
        code: ErrorCode,
        /// The server's sentence for people.
        message: String,
        /// With `RATE_LIMITED` and `TOO_MANY_CONNECTIONS`: when to retry.
        retry_after: Option<std::time::Duration>,
    },
    /// The connection is closed, or closed before the answer arrived.
    #[error("connection closed: {0}")]
    Closed(String),
    /// No answer within the request timeout.
    #[error("the server did not answer in time")]
    Timeout,
    // The causes below are part of the message, not `source()`, so that
    // printing the error with its chain does not say the same thing twice.
    #[error("network error: {0}")]
    Io(std::io::Error),
    /// A frame or payload from the server could not be decoded (or a frame to
    /// send was over the limit).
    #[error("bad frame: {0}")]
    Wire(WireError),
    #[error("WebSocket error: {0}")]
    WebSocket(tokio_tungstenite::tungstenite::Error),
    /// A server address the client cannot use.
    #[error("bad server address {addr:?}: {reason}")]
    Address { addr: String, reason: String },
    /// The server broke the protocol (for example answered the login with something else).
    #[error("protocol violation: {0}")]
    Protocol(String),
    /// The gRPC API could not be reached.
    #[error("could not reach the API at {addr}: {reason}")]
    ApiUnreachable { addr: String, reason: String },
    /// The gRPC API answered with an error status.
    #[error("API call failed ({code:?}): {message}")]
    Api { code: tonic::Code, message: String },
}

impl ClientError {
    /// How long the server asked to wait before retrying, if it did.
    pub fn retry_after(&self) -> Option<std::time::Duration> {
        match self {
            ClientError::Server { retry_after, .. } => *retry_after,
            _ => None,
        }
    }

    /// The server's error code, when the error came from an `Error` frame.
    pub fn code(&self) -> Option<ErrorCode> {
        match self {
            ClientError::Server { code, .. } => Some(*code),
            _ => None,
        }
    }

    pub(crate) fn from_frame(err: &tern_proto::client::Error) -> Self {
        ClientError::Server {
            code: ErrorCode::try_from(err.code).unwrap_or(ErrorCode::Unspecified),
            message: err.message.clone(),
            retry_after: (err.retry_after_ms > 0)
                .then(|| std::time::Duration::from_millis(err.retry_after_ms)),
        }
    }
}

impl From<std::io::Error> for ClientError {
    fn from(err: std::io::Error) -> Self {
        ClientError::Io(err)
    }
}

impl From<WireError> for ClientError {
    fn from(err: WireError) -> Self {
        ClientError::Wire(err)
    }
}

impl From<tokio_tungstenite::tungstenite::Error> for ClientError {
    fn from(err: tokio_tungstenite::tungstenite::Error) -> Self {
        match err {
            // Keep I/O errors as I/O errors whichever transport carried them.
            tokio_tungstenite::tungstenite::Error::Io(io) => ClientError::Io(io),
            other => ClientError::WebSocket(other),
        }
    }
}

impl From<tonic::Status> for ClientError {
    fn from(status: tonic::Status) -> Self {
        ClientError::Api {
            code: status.code(),
            message: status.message().to_string(),
        }
    }
}

/// `CODE: message`, how errors from the server are written in close reasons and logs.
pub(crate) fn describe(err: &tern_proto::client::Error) -> String {
    let name = ErrorCode::try_from(err.code)
        .map(|c| c.as_str_name())
        .unwrap_or("UNKNOWN_CODE");
    format!("{name}: {}", err.message)
}
