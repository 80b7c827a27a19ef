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
//!
//! `args` defines the command line; each family of subcommands has a
//! module of its own (`messaging`, `conversations`, `blocks`, `rooms`,
//! `groups`, `archive_cmd`); `login` turns --token/--user into a
//! connection, and `output` formats what is printed.

mod archive_cmd;
mod args;
mod blocks;
mod conversations;
mod groups;
mod login;
mod messaging;
mod output;
mod rooms;

use std::process::ExitCode;

use clap::Parser;

use args::{Cli, Command};

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
        Command::Token { ttl, rooms } => login::print_token(&cli, *ttl, rooms).await,
        Command::Send(args) => messaging::send(&cli, args).await,
        Command::Listen { count } => messaging::listen(&cli, *count).await,
        Command::Chat { to } => messaging::chat(&cli, to).await,
        Command::Group(command) => groups::group(&cli, command).await,
        Command::Room(command) => rooms::room(&cli, command).await,
        Command::Archive(args) => archive_cmd::run(&cli.backend, args).await,
        Command::History {
            target,
            limit,
            before,
        } => conversations::history(&cli, target, *limit, *before).await,
        Command::Conversations { limit } => conversations::conversations(&cli, *limit).await,
        Command::Read { target, seq } => conversations::mark_read(&cli, target, *seq).await,
        Command::Block { other } => blocks::set_blocked(&cli, other, true).await,
        Command::Unblock { other } => blocks::set_blocked(&cli, other, false).await,
        Command::Blocked => blocks::blocked(&cli).await,
        Command::Logout => login::logout(&cli).await,
    }
}
