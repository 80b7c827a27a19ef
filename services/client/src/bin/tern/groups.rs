//! `tern group …`: creating groups and managing their members through the
//! user API, as --user.

use anyhow::Context;
use tern_client::GroupApi;

use crate::args::{Cli, GroupCommand};
use crate::login::token;

pub async fn group(cli: &Cli, command: &GroupCommand) -> anyhow::Result<()> {
    let token = token(cli).await?;
    let mut api = GroupApi::connect(&cli.api, token)
        .await
        .context("could not reach the API")?;
    match command {
        GroupCommand::Create { members, name } => {
            let g = api
                .create(name, members)
                .await
                .context("could not create the group")?;
            eprintln!(
                "created group {:?} owned by {} with {} members; send to it with --group {}",
                g.name, g.owner, g.member_count, g.id
            );
            println!("{}", g.id);
        }
        GroupCommand::Add { group, members } => {
            let g = api
                .add(group, members)
                .await
                .context("could not add members")?;
            eprintln!("group {} has {} members", g.id, g.member_count);
        }
        GroupCommand::Remove { group, members } => {
            let g = api
                .remove(group, members)
                .await
                .context("could not remove members")?;
            eprintln!("group {} has {} members", g.id, g.member_count);
        }
        GroupCommand::Members { group } => {
            for user in api
                .members(group)
                .await
                .context("could not list the members")?
            {
                println!("{user}");
            }
        }
        GroupCommand::List => {
            for g in api.list().await.context("could not list the groups")? {
                let line = serde_json::json!({
                    "id": g.id,
                    "conversation": g.conversation,
                    "name": g.name,
                    "owner": g.owner,
                    "members": g.member_count,
                    "created_at_ms": g.created_at_ms,
                });
                println!("{line}");
            }
        }
    }
    Ok(())
}
