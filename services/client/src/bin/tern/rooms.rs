//! `tern room …`: watching and posting to live rooms over a gateway
//! connection, and a room's viewer count from the user API.

use std::io::Write;

use anyhow::{Context, bail};
use tern_client::Event;

use crate::args::{Cli, RoomCommand};
use crate::login::{connect, token};
use crate::output::{describe_error, message_json, retry_hint};

pub async fn room(cli: &Cli, command: &RoomCommand) -> anyhow::Result<()> {
    match command {
        RoomCommand::Watch { room, count } => {
            let (client, _) = connect(cli, "cli-room", false).await?;
            client
                .join_room(room)
                .await
                .with_context(|| format!("could not join room {room}"))?;
            eprintln!("watching room {room}");
            let mut remaining = *count;
            while remaining != Some(0) {
                match client.next_event().await {
                    Some(Event::RoomMessages { messages, .. }) => {
                        let mut out = std::io::stdout().lock();
                        for m in messages.iter().take(remaining.unwrap_or(u64::MAX) as usize) {
                            writeln!(out, "{}", message_json(m))
                                .context("could not write to stdout")?;
                            remaining = remaining.map(|n| n - 1);
                        }
                        out.flush().context("could not write to stdout")?;
                    }
                    // Inbox pushes wait for `tern listen`: not ACKed here.
                    Some(Event::Messages { .. } | Event::GroupMessages { .. }) => {}
                    Some(Event::ServerError(err)) => {
                        eprintln!("server error: {}", describe_error(&err))
                    }
                    Some(Event::Closed { reason }) => bail!("connection closed: {reason}"),
                    None => bail!("connection closed"),
                }
            }
            let _ = client.logout().await;
        }
        RoomCommand::Post { room, text } => {
            let (client, _) = connect(cli, "cli-room-post", true).await?;
            client
                .join_room(room)
                .await
                .with_context(|| format!("could not join room {room}"))?;
            client
                .post_to_room(room, text.clone().into_bytes())
                .await
                .map_err(retry_hint)
                .context("could not post to the room")?;
            let _ = client.logout().await;
        }
        RoomCommand::Viewers { room } => {
            let token = token(cli).await?;
            let mut api = tern_client::connect_api(&cli.api)
                .await
                .context("could not reach the API")?;
            let request = tern_client::with_token(
                tern_client::api_proto::RoomViewersRequest {
                    rooms: vec![room.clone()],
                },
                &token,
            )?;
            let reply = api
                .room_viewers(request)
                .await
                .map_err(tern_client::ClientError::from)
                .context("could not read the viewer count")?
                .into_inner();
            println!("{}", reply.viewers.get(room).copied().unwrap_or(0));
        }
    }
    Ok(())
}
