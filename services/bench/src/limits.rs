//! The server's abuse limits, which a benchmark exceeds by design: one
//! user sends hundreds of messages a second, thousands of connections come
//! from one address. A run against a limited server would measure the
//! limits, so the scenarios that send refuse to start against one.

use tern_client::proto::LoginResult;

/// The server settings a benchmark needs, for messages and `--help`.
pub const UNLIMITED_FLAGS: &str = "--sends-per-second 0 --frames-per-second 0 --max-connections-per-ip 0 --new-connections-per-ip-per-second 0";

/// Fails when the login says the gateway limits sends per user or frames
/// per connection.
pub fn ensure_unlimited(login: &LoginResult) -> anyhow::Result<()> {
    let Some(limits) = &login.limits else {
        return Ok(());
    };
    let mut on = Vec::new();
    if limits.sends_per_second > 0 {
        on.push(format!(
            "{} sends per second per user (burst {})",
            limits.sends_per_second, limits.send_burst
        ));
    }
    if limits.frames_per_second > 0 {
        on.push(format!(
            "{} frames per second per connection",
            limits.frames_per_second
        ));
    }
    anyhow::ensure!(
        on.is_empty(),
        "the gateway limits {}, which a benchmark exceeds: run the server with {UNLIMITED_FLAGS}",
        on.join(" and ")
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use tern_client::proto::Limits;

    fn login(limits: Option<Limits>) -> LoginResult {
        LoginResult {
            limits,
            ..Default::default()
        }
    }

    #[test]
    fn an_unlimited_gateway_or_one_that_does_not_say_passes() {
        assert!(ensure_unlimited(&login(None)).is_ok());
        assert!(ensure_unlimited(&login(Some(Limits::default()))).is_ok());
    }

    #[test]
    fn a_send_or_frame_limit_is_refused_with_the_flags_to_turn_it_off() {
        let err = ensure_unlimited(&login(Some(Limits {
            sends_per_second: 20,
            send_burst: 100,
            frames_per_second: 100,
            ..Default::default()
        })))
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("20 sends per second per user (burst 100)"),
            "{err}"
        );
        assert!(err.contains("100 frames per second"), "{err}");
        assert!(err.contains("--sends-per-second 0"), "{err}");
    }
}
