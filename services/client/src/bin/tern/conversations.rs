//! Reading conversations over a gateway connection: `tern history` (a
//! conversation's messages, oldest first), `tern conversations` (the list,
//! a page at a time) and `tern read` (the read mark).

use std::io::Write;

use anyhow::Context;

use crate::args::{Cli, ConversationArgs};
use crate::login::connect;
use crate::output::message_json;

pub async fn history(
    cli: &Cli,
    target: &ConversationArgs,
    limit: u32,
    before: u64,
) -> anyhow::Result<()> {
    let (client, login) = connect(cli, "cli-read", true).await?;
    let conversation = target.id(&login.user_id);
    let mut messages = Vec::new();
    let mut before = before;
    while messages.len() < limit as usize {
        let want = limit - messages.len() as u32;
        let (page, next, more) = client
            .history(&conversation, before, want)
            .await
            .with_context(|| format!("could not read the history of {conversation}"))?;
        messages.extend(page);
        before = next;
        if !more {
            break;
        }
    }
    let mut out = std::io::stdout().lock();
    for m in messages.iter().rev() {
        writeln!(out, "{}", message_json(m)).context("could not write to stdout")?;
    }
    out.flush().context("could not write to stdout")?;
    let _ = client.logout().await;
    Ok(())
}

/// Conversations asked for per page by `tern conversations` (the
/// server's default page; it may return fewer to fit a frame).
const CONVERSATIONS_PAGE: u64 = 100;

/// Prints the conversation list a page at a time, each page as soon as it
/// arrives, until the last page or `limit` conversations (None: all).
pub async fn conversations(cli: &Cli, limit: Option<u64>) -> anyhow::Result<()> {
    let (client, _) = connect(cli, "cli-read", true).await?;
    let mut left = limit.unwrap_or(u64::MAX);
    let mut before = bytes::Bytes::new();
    let mut out = std::io::stdout().lock();
    while left > 0 {
        let (page, next) = client
            .conversations_page(left.min(CONVERSATIONS_PAGE) as u32, before)
            .await
            .context("could not read the conversation list")?;
        for c in page
            .iter()
            .take(usize::try_from(left).unwrap_or(usize::MAX))
        {
            let line = serde_json::json!({
                "conversation": c.conversation,
                "last_seq": c.last_seq,
                "unread": c.unread,
                "read_seq": c.read_seq,
                "last_message": c.last_message.as_ref().map(message_json),
            });
            writeln!(out, "{line}").context("could not write to stdout")?;
            left -= 1;
        }
        out.flush().context("could not write to stdout")?;
        // An empty page with a next position would never end.
        if next.is_empty() || page.is_empty() {
            break;
        }
        before = next;
    }
    drop(out);
    let _ = client.logout().await;
    Ok(())
}

pub async fn mark_read(cli: &Cli, target: &ConversationArgs, seq: u64) -> anyhow::Result<()> {
    let (client, login) = connect(cli, "cli-read", true).await?;
    let conversation = target.id(&login.user_id);
    let read_seq = client
        .mark_read(&conversation, seq)
        .await
        .with_context(|| format!("could not mark {conversation} read"))?;
    eprintln!("{conversation} is read up to seq {read_seq}");
    println!("{read_seq}");
    let _ = client.logout().await;
    Ok(())
}
