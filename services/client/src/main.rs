//! `tern`: a command-line client for tern, for people and for scripts.
//!
//! `tern token` prints a dev token, `tern send` sends one message and prints
//! its server id, `tern listen` prints received messages as JSON lines, and
//! `tern chat` is a small interactive chat. `tern history`, `tern
//! conversations` and `tern read` read and mark conversations; `tern block`,
//! `tern unblock` and `tern blocked` keep a user's block list (all of these
//! over a gateway connection). `tern group`, `tern room viewers` and `tern
//! logout` call the user API with the user's login token; `tern room watch`
//! and `post` use live rooms; `tern archive` administers the compliance
//! archive on the back-end listener with the admin token.
//!
//! Output meant for scripts (the token, the message id, JSON lines) goes to
//! stdout; everything else to stderr. Errors exit with 1, usage errors with 2.

mod archive_cmd;

use std::io::{BufRead, Write};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{Context, bail};
use clap::{ArgGroup, Args, CommandFactory, Parser, Subcommand};
use tern_client::proto::{ErrorCode, Message};
use tern_client::{Client, Event, GroupApi, LoginOptions, SendOptions, Target, message_id_string};

#[derive(Debug, Parser)]
#[command(
    name = "tern",
    version,
    about = "Command-line client for tern: dev tokens, send, listen, chat, history, blocks, logout, groups, rooms, the compliance archive"
)]
struct Cli {
    /// Gateway address: tcp://host:port, ws://host:port/, or host:port (TCP).
    #[arg(long, global = true, env = "TERN_SERVER", default_value = tern_client::DEFAULT_SERVER_ADDR)]
    server: String,

    /// User API address (gRPC): dev tokens, groups, room viewers, logout.
    #[arg(long, global = true, env = "TERN_API", default_value = tern_client::DEFAULT_API_ADDR)]
    api: String,

    /// Back-end API address (gRPC, the server's backend_listen), where `tern archive` administers the archive.
    #[arg(long, global = true, env = "TERN_BACKEND", default_value = tern_client::DEFAULT_BACKEND_ADDR)]
    backend: String,

    /// User to act as. Without --token, a dev token for this user is fetched from --api.
    #[arg(long, global = true, env = "TERN_USER")]
    user: Option<String>,

    /// Login token; takes precedence over --user.
    #[arg(long, global = true, env = "TERN_TOKEN", hide_env_values = true)]
    token: Option<String>,

    /// Device id: the one to log in as [default: "cli" for listen and chat, "cli-send" for
    /// send, "cli-room" for rooms, "cli-read" for the rest], the one `tern token` binds its
    /// token to, the one `tern logout` logs out [default there: every device].
    #[arg(long, global = true, env = "TERN_DEVICE")]
    device: Option<String>,

    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Print a dev token for --user (only a server in dev mode issues them;
    /// they live at most 24 h). With --device, the token logs in only as
    /// that device.
    Token {
        /// Token lifetime in seconds; 0 means the server's default.
        #[arg(long, default_value_t = 0)]
        ttl: u64,
        /// Live rooms the token may join and post to, comma-separated: room
        /// ids, or prefixes ending in `*` (used when the server's
        /// room_policy is "token").
        #[arg(long, value_delimiter = ',')]
        rooms: Vec<String>,
    },
    /// Send one message and print its server message id.
    Send(SendArgs),
    /// Print received messages as JSON lines, ACKing each push once printed.
    Listen {
        /// Exit after this many messages.
        #[arg(long)]
        count: Option<u64>,
    },
    /// Chat with a user: each line of stdin is sent, incoming messages are printed.
    Chat {
        /// The user to chat with.
        #[arg(long)]
        to: String,
    },
    /// Create groups and manage their members (as --user).
    #[command(subcommand)]
    Group(GroupCommand),
    /// The compliance archive: verify, export, legal holds (with the admin token).
    Archive(archive_cmd::ArchiveArgs),
    /// Watch and post to live rooms (best-effort, not stored).
    #[command(subcommand)]
    Room(RoomCommand),
    /// Print a conversation's history as JSON lines, oldest first: the
    /// newest --limit messages, or those before --before.
    History {
        #[command(flatten)]
        target: ConversationArgs,
        /// How many messages.
        #[arg(long, default_value_t = 50)]
        limit: u32,
        /// Only messages with a seq below this one.
        #[arg(long, default_value_t = 0)]
        before: u64,
    },
    /// Print --user's conversations as JSON lines, most recently active
    /// first, with the newest message and the unread count of each.
    Conversations {
        /// At most this many [default: every conversation].
        #[arg(long)]
        limit: Option<u64>,
    },
    /// Mark a conversation read up to --seq (default: everything) for --user.
    Read {
        #[command(flatten)]
        target: ConversationArgs,
        #[arg(long, default_value_t = u64::MAX, hide_default_value = true)]
        seq: u64,
    },
    /// Block a user: their 1:1 messages to --user are refused (BLOCKED)
    /// and stored nowhere.
    Block {
        /// The user to block.
        // Not named `user`: that id is the global --user's.
        #[arg(value_name = "USER")]
        other: String,
    },
    /// Unblock a user.
    Unblock {
        /// The user to unblock.
        #[arg(value_name = "USER")]
        other: String,
    },
    /// Print the users --user blocks, one per line.
    Blocked,
    /// Log out: revoke --user's tokens issued before now, of --device, or
    /// of every device without --device. Their connections close with
    /// TOKEN_REVOKED; prints the revocation time (ms since the epoch).
    Logout,
}

/// One conversation: with a user, a group, or by id.
#[derive(Debug, Args)]
#[command(group(ArgGroup::new("conversation_target").required(true).args(["with", "group", "conversation"])))]
struct ConversationArgs {
    /// The other user of a 1:1 conversation.
    #[arg(long)]
    with: Option<String>,
    /// A group id.
    #[arg(long)]
    group: Option<String>,
    /// A conversation id (d:alice:bob, g:<group>).
    #[arg(long)]
    conversation: Option<String>,
}

impl ConversationArgs {
    /// The conversation id, as --user sees it.
    fn id(&self, me: &str) -> String {
        match (&self.with, &self.group, &self.conversation) {
            (Some(other), _, _) => {
                let (low, high) = if me <= other.as_str() {
                    (me, other.as_str())
                } else {
                    (other.as_str(), me)
                };
                format!("d:{low}:{high}")
            }
            (None, Some(group), _) => format!("g:{group}"),
            (None, None, Some(conversation)) => conversation.clone(),
            (None, None, None) => unreachable!("clap requires one of them"),
        }
    }
}

#[derive(Debug, Subcommand)]
enum RoomCommand {
    /// Join a room and print its messages as JSON lines.
    Watch {
        #[arg(long)]
        room: String,
        /// Exit after this many messages.
        #[arg(long)]
        count: Option<u64>,
    },
    /// Join a room and post one message to it.
    Post {
        #[arg(long)]
        room: String,
        text: String,
    },
    /// Print the approximate viewer count of a room (a few seconds old),
    /// asked of the user API as --user.
    Viewers {
        #[arg(long)]
        room: String,
    },
}

#[derive(Debug, Subcommand)]
enum GroupCommand {
    /// Create a group owned by --user; prints the new group id as the last line.
    Create {
        /// Other members, comma-separated.
        #[arg(long, value_delimiter = ',')]
        members: Vec<String>,
        /// A display name.
        #[arg(long, default_value = "")]
        name: String,
    },
    /// Add members (only the owner may).
    Add {
        #[arg(long)]
        group: String,
        /// Users to add, comma-separated or repeated.
        #[arg(long = "member", value_delimiter = ',', required = true)]
        members: Vec<String>,
    },
    /// Remove members (the owner removes anyone; a member removes themselves).
    Remove {
        #[arg(long)]
        group: String,
        /// Users to remove, comma-separated or repeated.
        #[arg(long = "member", value_delimiter = ',', required = true)]
        members: Vec<String>,
    },
    /// Print the members, one per line.
    Members {
        #[arg(long)]
        group: String,
    },
    /// Print the groups of --user, one JSON object per line.
    List,
}

#[derive(Debug, Args)]
#[command(group(ArgGroup::new("target").required(true).args(["to", "group", "conversation"])))]
struct SendArgs {
    /// Recipient user, for a 1:1 message.
    #[arg(long)]
    to: Option<String>,

    /// Group id, to send to a group you are a member of.
    #[arg(long)]
    group: Option<String>,

    /// Existing conversation id to send to instead.
    #[arg(long)]
    conversation: Option<String>,

    /// Client message id; sending again with the same id stores the message once [default: a new UUIDv7].
    #[arg(long = "client-id")]
    client_id: Option<String>,

    /// MIME type of the body.
    #[arg(long, default_value = "text/plain")]
    content_type: String,

    /// The message text.
    text: String,
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .init();
    match run(cli).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    match &cli.command {
        Command::Token { ttl, rooms } => {
            let Some(user) = non_empty(&cli.user) else {
                usage_error("`tern token` needs --user (or TERN_USER)");
            };
            let request = tern_client::api_proto::IssueDevTokenRequest {
                user: user.to_owned(),
                ttl_seconds: *ttl,
                device: non_empty(&cli.device).unwrap_or_default().to_owned(),
                rooms: rooms.clone(),
            };
            let token = tern_client::dev_token_with(&cli.api, request)
                .await
                .with_context(|| {
                    format!("could not get a dev token for {user} from {}", cli.api)
                })?;
            println!("{token}");
            Ok(())
        }
        Command::Send(args) => send(&cli, args).await,
        Command::Listen { count } => listen(&cli, *count).await,
        Command::Chat { to } => chat(&cli, to).await,
        Command::Group(command) => group(&cli, command).await,
        Command::Room(command) => room(&cli, command).await,
        Command::Archive(args) => archive_cmd::run(&cli.backend, args).await,
        Command::History {
            target,
            limit,
            before,
        } => history(&cli, target, *limit, *before).await,
        Command::Conversations { limit } => conversations(&cli, *limit).await,
        Command::Read { target, seq } => mark_read(&cli, target, *seq).await,
        Command::Block { other } => set_blocked(&cli, other, true).await,
        Command::Unblock { other } => set_blocked(&cli, other, false).await,
        Command::Blocked => blocked(&cli).await,
        Command::Logout => logout(&cli).await,
    }
}

async fn history(
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
async fn conversations(cli: &Cli, limit: Option<u64>) -> anyhow::Result<()> {
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

/// `tern block` / `tern unblock`, over a gateway connection.
async fn set_blocked(cli: &Cli, user: &str, block: bool) -> anyhow::Result<()> {
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
async fn blocked(cli: &Cli) -> anyhow::Result<()> {
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

/// `tern logout`: the user API's RevokeTokens, with the user's own token.
async fn logout(cli: &Cli) -> anyhow::Result<()> {
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

async fn mark_read(cli: &Cli, target: &ConversationArgs, seq: u64) -> anyhow::Result<()> {
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

async fn room(cli: &Cli, command: &RoomCommand) -> anyhow::Result<()> {
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

async fn group(cli: &Cli, command: &GroupCommand) -> anyhow::Result<()> {
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

async fn send(cli: &Cli, args: &SendArgs) -> anyhow::Result<()> {
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

async fn listen(cli: &Cli, count: Option<u64>) -> anyhow::Result<()> {
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

async fn chat(cli: &Cli, to: &str) -> anyhow::Result<()> {
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

/// The token from --token, or a dev token for --user.
async fn token(cli: &Cli) -> anyhow::Result<String> {
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
async fn connect(
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

/// `err`, followed by when to retry if the server said (RATE_LIMITED,
/// TOO_MANY_CONNECTIONS).
fn retry_hint(err: tern_client::ClientError) -> anyhow::Error {
    match err.retry_after() {
        Some(wait) => anyhow::anyhow!("{err}, retry after {} ms", wait.as_millis()),
        None => err.into(),
    }
}

/// Prints messages as `sender: text` lines, except this device's own.
fn print_chat(messages: &[Message], login: &tern_client::proto::LoginResult) -> anyhow::Result<()> {
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

fn message_json(m: &Message) -> serde_json::Value {
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
fn describe_error(err: &tern_client::proto::Error) -> String {
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

fn non_empty(value: &Option<String>) -> Option<&str> {
    value.as_deref().filter(|v| !v.is_empty())
}

/// Reports a usage error the way clap does (exit code 2).
fn usage_error(message: &str) -> ! {
    Cli::command()
        .error(clap::error::ErrorKind::MissingRequiredArgument, message)
        .exit()
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

    #[test]
    fn the_command_line_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn token_and_logout_take_the_global_device() {
        let cli = Cli::try_parse_from([
            "tern", "--user", "alice", "token", "--device", "phone", "--rooms", "a.*,b",
        ])
        .unwrap();
        assert_eq!(cli.device.as_deref(), Some("phone"));
        let Command::Token { rooms, .. } = &cli.command else {
            panic!("{:?}", cli.command)
        };
        assert_eq!(rooms, &["a.*", "b"]);
        let cli = Cli::try_parse_from(["tern", "logout", "--device", "phone"]).unwrap();
        assert!(matches!(cli.command, Command::Logout));
        assert_eq!(cli.device.as_deref(), Some("phone"));
    }

    #[test]
    fn the_blocked_user_is_not_taken_for_the_global_user() {
        for args in [
            &["tern", "--user", "bob", "block", "alice"][..],
            &["tern", "block", "alice", "--user", "bob"][..],
        ] {
            let cli = Cli::try_parse_from(args).unwrap();
            assert_eq!(cli.user.as_deref(), Some("bob"), "{args:?}");
            let Command::Block { other } = &cli.command else {
                panic!("{:?}", cli.command)
            };
            assert_eq!(other, "alice");
        }
        let cli = Cli::try_parse_from(["tern", "--user", "bob", "unblock", "alice"]).unwrap();
        assert_eq!(cli.user.as_deref(), Some("bob"));
        assert!(matches!(&cli.command, Command::Unblock { other } if other == "alice"));
    }
}
