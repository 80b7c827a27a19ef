//! The block list over a gateway connection: `tern block`, `tern unblock`
//! and `tern blocked`.

use std::io::Write;

use anyhow::Context;

use crate::args::Cli;
use crate::login::connect;

/// `tern block` / `tern unblock`, over a gateway connection.
pub async fn set_blocked(cli: &Cli, user: &str, block: bool) -> anyhow::Result<()> {
    let (client, login) = connect(cli, "cli-read", true).await?;
    let blocked = client.set_blocked(user, block).await.with_context(|| {
        format!(
            "could not {} {user}",
            if block { "block" } else { "unblock" }
        )
    })?;
    if blocked {
        eprintln!(
            "{} blocks {user}: their 1:1 messages are refused",
            login.user_id
        );
    } else {
        eprintln!("{} does not block {user}", login.user_id);
    }
    let _ = client.logout().await;
    Ok(())
}

/// `tern blocked`: one user per line, in id order.
pub async fn blocked(cli: &Cli) -> anyhow::Result<()> {
    let (client, _) = connect(cli, "cli-read", true).await?;
    let users = client
        .blocked_users()
        .await
        .context("could not read the block list")?;
    let mut out = std::io::stdout().lock();
    for user in &users {
        writeln!(out, "{user}").context("could not write to stdout")?;
    }
    out.flush().context("could not write to stdout")?;
    drop(out);
    let _ = client.logout().await;
    Ok(())
}
