//! Sending and receiving over a gateway connection: `tern send` (one
//! message, prints its id), `tern listen` (JSON lines, ACKed once printed)
//! and `tern chat` (lines of stdin out, incoming messages in).

use std::io::{BufRead, Write};
use std::sync::Arc;

use anyhow::{Context, bail};
use tern_client::{Event, SendOptions, Target, message_id_string};

use crate::args::{Cli, SendArgs, usage_error};
use crate::login::connect;
use crate::output::{describe_error, message_json, print_chat, retry_hint};

pub async fn send(cli: &Cli, args: &SendArgs) -> anyhow::Result<()> {
    let (client, _) = connect(cli, "cli-send", true).await?;
    let target = match (&args.to, &args.group, &args.conversation) {
        (Some(user), _, _) => Target::ToUser(user.clone()),
        (None, Some(group), _) => Target::Conversation(format!("g:{group}")),
        (None, None, Some(conversation)) => Target::Conversation(conversation.clone()),
        (None, None, None) => usage_error("give --to USER, --group ID or --conversation ID"),
    };
    let mut options = SendOptions::new(target, args.text.clone().into_bytes())
        .with_content_type(&args.content_type);
    options.client_msg_id = args.client_id.clone();
    let result = client
        .send(options)
        .await
        .map_err(retry_hint)
        .context("could not send the message")?;
    println!("{}", message_id_string(&result.message_id));
    // The message is stored whatever happens to the goodbye.
    let _ = client.logout().await;
    Ok(())
}

pub async fn listen(cli: &Cli, count: Option<u64>) -> anyhow::Result<()> {
    let (client, _) = connect(cli, "cli", false).await?;
    let mut remaining = count;
    if remaining == Some(0) {
        let _ = client.logout().await;
        return Ok(());
    }
    loop {
        match client.next_event().await {
            Some(Event::Messages {
                messages,
                last_cursor,
                ..
            }) => {
                let mut ack_to = last_cursor;
                let mut finished = false;
                {
                    let mut out = std::io::stdout().lock();
                    for message in &messages {
                        writeln!(out, "{}", message_json(message))
                            .context("could not write to stdout")?;
                        if let Some(left) = remaining.as_mut() {
                            *left -= 1;
                            if *left == 0 {
                                // ACK only what was printed: the rest stays pending for the next listener.
                                ack_to = message.cursor;
                                finished = true;
                                break;
                            }
                        }
                    }
                    out.flush().context("could not write to stdout")?;
                }
                if let Err(e) = client.ack(ack_to).await {
                    eprintln!(
                        "warning: could not ACK cursor {ack_to}, the messages will be pushed again: {e}"
                    );
                }
                if finished {
                    let _ = client.logout().await;
                    return Ok(());
                }
            }
            // Large groups: live only, nothing to ACK.
            Some(Event::GroupMessages { messages, .. }) => {
                let mut out = std::io::stdout().lock();
                for message in &messages {
                    writeln!(out, "{}", message_json(message))
                        .context("could not write to stdout")?;
                    if let Some(left) = remaining.as_mut() {
                        *left -= 1;
                        if *left == 0 {
                            out.flush().context("could not write to stdout")?;
                            drop(out);
                            let _ = client.logout().await;
                            return Ok(());
                        }
                    }
                }
                out.flush().context("could not write to stdout")?;
            }
            // Not in a room: none come.
            Some(Event::RoomMessages { .. }) => {}
            Some(Event::ServerError(err)) => eprintln!("server error: {}", describe_error(&err)),
            Some(Event::Closed { reason }) => bail!("connection closed: {reason}"),
            None => bail!("connection closed"),
        }
    }
}

pub async fn chat(cli: &Cli, to: &str) -> anyhow::Result<()> {
    let (client, login) = connect(cli, "cli", false).await?;
    let client = Arc::new(client);
    eprintln!(
        "logged in as {} (device {}); chatting with {to}; end with EOF (Ctrl-D)",
        login.user_id, login.device_id
    );

    // stdin is read on a plain thread: a blocked read must not keep the runtime from exiting.
    let (lines_tx, mut lines) = tokio::sync::mpsc::unbounded_channel::<String>();
    std::thread::spawn(move || {
        for line in std::io::stdin().lock().lines() {
            let Ok(line) = line else { break };
            if lines_tx.send(line).is_err() {
                break;
            }
        }
    });
    // One send at a time, so messages arrive in the order they were typed.
    let mut sender = tokio::spawn({
        let client = client.clone();
        let to = to.to_string();
        async move {
            while let Some(line) = lines.recv().await {
                if line.trim().is_empty() {
                    continue;
                }
                if let Err(e) = client.send_to(to.as_str(), line.into_bytes()).await {
                    eprintln!("error: could not send the message: {}", retry_hint(e));
                }
            }
        }
    });

    loop {
        tokio::select! {
            _ = &mut sender => break,
            event = client.next_event() => match event {
                Some(Event::Messages { messages, last_cursor, .. }) => {
                    print_chat(&messages, &login)?;
                    client.ack(last_cursor).await.context("could not ACK received messages")?;
                }
                Some(Event::GroupMessages { messages, .. }) => print_chat(&messages, &login)?,
                Some(Event::RoomMessages { .. }) => {}
                Some(Event::ServerError(err)) => eprintln!("server error: {}", describe_error(&err)),
                Some(Event::Closed { reason }) => bail!("connection closed: {reason}"),
                None => bail!("connection closed"),
            },
        }
    }
    let _ = client.logout().await;
    Ok(())
}
