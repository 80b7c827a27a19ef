//! What the CLI prints: messages as JSON lines or chat lines, error frames
//! as one readable line, and client errors with when to retry.

use std::io::Write;

use anyhow::Context;
use tern_client::message_id_string;
use tern_client::proto::{ErrorCode, Message};

/// `err`, followed by when to retry if the server said (RATE_LIMITED,
/// TOO_MANY_CONNECTIONS).
pub fn retry_hint(err: tern_client::ClientError) -> anyhow::Error {
    match err.retry_after() {
        Some(wait) => anyhow::anyhow!("{err}, retry after {} ms", wait.as_millis()),
        None => err.into(),
    }
}

/// Prints messages as `sender: text` lines, except this device's own.
pub fn print_chat(
    messages: &[Message],
    login: &tern_client::proto::LoginResult,
) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    for m in messages {
        // Our own messages come back to our other devices, not to this one; skip them anyway.
        if m.sender_user == login.user_id && m.sender_device == login.device_id {
            continue;
        }
        writeln!(
            out,
            "{}: {}",
            m.sender_user,
            String::from_utf8_lossy(&m.body)
        )
        .context("could not write to stdout")?;
    }
    out.flush().context("could not write to stdout")
}

pub fn message_json(m: &Message) -> serde_json::Value {
    serde_json::json!({
        "id": message_id_string(&m.message_id),
        "conversation": m.conversation,
        "seq": m.seq,
        "cursor": m.cursor,
        "from": m.sender_user,
        "device": m.sender_device,
        "sent_at_ms": m.sent_at_ms,
        "content_type": m.content_type,
        "client_msg_id": m.client_msg_id,
        "body": String::from_utf8_lossy(&m.body),
    })
}

/// `message (CODE)`, with when to retry (RATE_LIMITED, TOO_MANY_CONNECTIONS)
/// and whether the gateway closes the connection.
pub fn describe_error(err: &tern_client::proto::Error) -> String {
    let code = ErrorCode::try_from(err.code).map_or("UNKNOWN_CODE", |c| c.as_str_name());
    let retry = match err.retry_after_ms {
        0 => String::new(),
        ms => format!(", retry after {ms} ms"),
    };
    format!(
        "{} ({code}{retry}){}",
        err.message,
        if err.fatal { ", closing" } else { "" }
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn error(code: ErrorCode, retry_after_ms: u64, fatal: bool) -> tern_client::proto::Error {
        tern_client::proto::Error {
            code: code as i32,
            message: "slow down".into(),
            fatal,
            retry_after_ms,
            ..Default::default()
        }
    }

    #[test]
    fn errors_name_their_code_and_when_to_retry() {
        assert_eq!(
            describe_error(&error(ErrorCode::RateLimited, 250, false)),
            "slow down (RATE_LIMITED, retry after 250 ms)"
        );
        assert_eq!(
            describe_error(&error(ErrorCode::TokenRevoked, 0, true)),
            "slow down (TOKEN_REVOKED), closing"
        );
    }

    #[test]
    fn refusals_say_when_to_retry() {
        let limited = tern_client::ClientError::Server {
            code: ErrorCode::RateLimited,
            message: "too many sends".into(),
            retry_after: Some(std::time::Duration::from_millis(40)),
        };
        assert_eq!(
            retry_hint(limited).to_string(),
            "too many sends (RATE_LIMITED), retry after 40 ms"
        );
        let other = tern_client::ClientError::Timeout;
        assert_eq!(
            retry_hint(other).to_string(),
            "the server did not answer in time"
        );
    }
}
