//! Logging in and out: the token a command acts with (--token, or a dev
//! token for --user), the gateway connection the messaging commands share,
//! and `tern token` and `tern logout`, which call the user API.

use anyhow::Context;
use tern_client::{Client, LoginOptions};

use crate::args::{Cli, non_empty, usage_error};
use crate::output::retry_hint;

/// `tern token`: prints a dev token for --user.
pub async fn print_token(cli: &Cli, ttl: u64, rooms: &[String]) -> anyhow::Result<()> {
    let Some(user) = non_empty(&cli.user) else {
        usage_error("`tern token` needs --user (or TERN_USER)");
    };
    let request = tern_client::api_proto::IssueDevTokenRequest {
        user: user.to_owned(),
        ttl_seconds: ttl,
        device: non_empty(&cli.device).unwrap_or_default().to_owned(),
        rooms: rooms.to_vec(),
    };
    let token = tern_client::dev_token_with(&cli.api, request)
        .await
        .with_context(|| format!("could not get a dev token for {user} from {}", cli.api))?;
    println!("{token}");
    Ok(())
}

/// The token from --token, or a dev token for --user.
pub async fn token(cli: &Cli) -> anyhow::Result<String> {
    Ok(match (non_empty(&cli.token), non_empty(&cli.user)) {
        (Some(token), _) => token.to_string(),
        (None, Some(user)) => tern_client::dev_token(&cli.api, user)
            .await
            .with_context(|| format!("could not get a dev token for {user} from {}", cli.api))?,
        (None, None) => usage_error(
            "give --token (or TERN_TOKEN), or --user (or TERN_USER) to fetch a dev token",
        ),
    })
}

/// Connects and logs in with the token from --token, or a dev token for --user.
pub async fn connect(
    cli: &Cli,
    default_device: &str,
    send_only: bool,
) -> anyhow::Result<(Client, tern_client::proto::LoginResult)> {
    let token = token(cli).await?;
    let device = non_empty(&cli.device).unwrap_or(default_device);
    let mut options = LoginOptions::new(token, device);
    options.send_only = send_only;
    Client::connect(&cli.server, options)
        .await
        .map_err(retry_hint)
        .with_context(|| format!("could not log in to {}", cli.server))
}

/// `tern logout`: the user API's RevokeTokens, with the user's own token.
pub async fn logout(cli: &Cli) -> anyhow::Result<()> {
    let token = token(cli).await?;
    let device = non_empty(&cli.device).unwrap_or_default();
    let mut api = tern_client::connect_api(&cli.api)
        .await
        .context("could not reach the API")?;
    let request = tern_client::with_token(
        tern_client::api_proto::RevokeTokensRequest {
            user: String::new(),
            device: device.to_owned(),
        },
        &token,
    )?;
    let revoked = api
        .revoke_tokens(request)
        .await
        .map_err(tern_client::ClientError::from)
        .context("could not log out")?
        .into_inner();
    if device.is_empty() {
        eprintln!("logged out of every device: tokens issued before now no longer log in");
    } else {
        eprintln!("logged out of device {device}: its tokens issued before now no longer log in");
    }
    println!("{}", revoked.revoked_before_ms);
    Ok(())
}
