//! `tern-bench <scenario> [options]`: drives a running tern (embedded or
//! distributed) with real client connections on loopback and reports what
//! it measured, for people (a summary) or scripts (`--json`).
//!
//! Scenarios: `direct` (1:1 messages at a target or maximum rate), `idle`
//! (hold many connections; server memory per connection), `group` (one
//! sender, a group of many online members), `room` (one publisher, many
//! viewers of a live room) and `backlog` (a user logs in to a long offline
//! backlog), and `archive` (the compliance archiver in process, no server).
//! Runs are bounded in count and time and stop by themselves.
//!
//! A benchmark exceeds the server's abuse limits by design (hundreds of
//! sends a second per user, thousands of connections from one address): the
//! server must run with them off ([`limits::UNLIMITED_FLAGS`]), and in dev
//! mode, since the users' tokens are dev tokens. The `group` scenario
//! creates its group through the user API as the group's owner.

mod archive;
mod backlog;
mod cost;
mod direct;
mod group;
mod idle;
mod limits;
mod procstat;
mod report;
mod room;
mod scrape;
mod stats;
mod wire;

use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "tern-bench",
    version,
    about = "Load tool for tern: real connections, real frames, measured figures",
    long_about = "Load tool for tern: real connections, real frames, measured figures.\n\n\
        A benchmark exceeds the server's abuse limits by design, so the server must run \
        without them and in dev mode (tern-bench logs in with dev tokens), for example:\n\n  \
        ternd --sends-per-second 0 --frames-per-second 0 --max-connections-per-ip 0 \
        --new-connections-per-ip-per-second 0\n\n\
        (tern-server: add --dev-mode true, on loopback listeners.) Scenarios that send \
        refuse to start when the gateway reports a send or frame limit at login."
)]
struct Cli {
    #[command(flatten)]
    target: Target,
    #[command(subcommand)]
    scenario: Scenario,
}

/// Where the server is, and what to watch.
#[derive(Debug, Clone, Args)]
pub struct Target {
    /// Gateway address: tcp://host:port or ws://host:port/ (loopback only).
    #[arg(long, global = true, env = "TERN_SERVER", default_value = tern_client::DEFAULT_SERVER_ADDR)]
    pub server: String,
    /// User API address (gRPC): dev tokens, and the group scenario's group.
    #[arg(long, global = true, env = "TERN_API", default_value = tern_client::DEFAULT_API_ADDR)]
    pub api: String,
    /// Server process to report CPU and memory of (repeat for several).
    #[arg(long = "pid", global = true)]
    pub pids: Vec<u32>,
    /// Admin address of a server node, whose /metrics (read before and
    /// after the run) gives the push bytes before and after compression and
    /// the store cost per message. Repeat it, or separate with commas, for
    /// every node of a distributed deployment: the figures sum over them
    /// (give them all on the same side of the scenario's name: clap keeps
    /// only the scenario's side otherwise).
    #[arg(
        long,
        global = true,
        env = "TERN_ADMIN",
        value_delimiter = ',',
        default_value = "127.0.0.1:7403"
    )]
    pub admin: Vec<String>,
    /// Print one JSON object with the figures instead of the summary.
    #[arg(long, global = true)]
    pub json: bool,
}

#[derive(Debug, Subcommand)]
enum Scenario {
    /// 1:1 messages between pairs of users: throughput and send → push latency.
    Direct(direct::DirectArgs),
    /// Many idle logged-in connections: how many, and memory per connection.
    Idle(idle::IdleArgs),
    /// One sender, one group of many online members: fan-out in the pipeline.
    Group(group::GroupArgs),
    /// One publisher, many viewers of a live room: fan-out in the gateway.
    Room(room::RoomArgs),
    /// A user logs in to a long offline backlog: login push, conversation
    /// list, history pages; time, bytes on the wire, ACKs.
    Backlog(backlog::BacklogArgs),
    /// The compliance archiver, in process on embedded storage: messages/s,
    /// MB/s written, compression ratio, export time for one user.
    Archive(archive::ArchiveArgs),
}

fn check_loopback(addr: &str) -> anyhow::Result<()> {
    let host = addr
        .split("://")
        .nth(1)
        .unwrap_or(addr)
        .split(['/', ':'])
        .next()
        .unwrap_or_default();
    if !(host == "localhost" || host.starts_with("127.") || host == "[") {
        anyhow::bail!(
            "tern-bench only targets loopback addresses (127.0.0.0/8, localhost); got {addr}"
        );
    }
    Ok(())
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    // Thousands of connections need thousands of file descriptors.
    let _ = rlimit::increase_nofile_limit(u64::MAX);
    let result = async {
        // The archive scenario runs in process: no server to check or scrape.
        let server = !matches!(cli.scenario, Scenario::Archive(_));
        if server {
            check_loopback(&cli.target.server)?;
            check_loopback(&cli.target.api)?;
        }
        let nodes = scrape::nodes(&cli.target.admin);
        let scrape = async || match server {
            true => scrape::fetch_all(&nodes).await,
            false => Vec::new(),
        };
        let before = scrape().await;
        let mut report = match &cli.scenario {
            Scenario::Direct(args) => direct::run(&cli.target, args).await,
            Scenario::Idle(args) => idle::run(&cli.target, args).await,
            Scenario::Group(args) => group::run(&cli.target, args).await,
            Scenario::Room(args) => room::run(&cli.target, args).await,
            Scenario::Backlog(args) => backlog::run(&cli.target, args).await,
            Scenario::Archive(args) => archive::run(args).await,
        }?;
        let after = scrape().await;
        if server {
            scrape::add_figures(&mut report, &nodes, before, after);
        }
        anyhow::Ok(report)
    }
    .await;
    match result {
        Ok(report) if cli.target.json => match serde_json::to_string(&report) {
            Ok(json) => {
                println!("{json}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("tern-bench: cannot write the report as JSON: {e}");
                ExitCode::FAILURE
            }
        },
        Ok(report) => {
            print!("{}", report.summary());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("tern-bench: {e:#}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory as _;

    #[test]
    fn help_names_every_limit_to_turn_off() {
        let help = Cli::command().render_long_help().to_string();
        let help = help.split_whitespace().collect::<Vec<_>>().join(" ");
        assert!(help.contains(limits::UNLIMITED_FLAGS), "{help}");
    }

    #[test]
    fn admin_is_repeated_or_comma_separated() {
        let nodes = ["127.0.0.1:7413", "127.0.0.1:7423", "127.0.0.1:7443"];
        let before = Cli::try_parse_from([
            "tern-bench",
            "--admin",
            "127.0.0.1:7413,127.0.0.1:7423",
            "--admin",
            "127.0.0.1:7443",
            "idle",
        ])
        .unwrap();
        assert_eq!(before.target.admin, nodes);
        let after = Cli::try_parse_from([
            "tern-bench",
            "idle",
            "--admin",
            "127.0.0.1:7413",
            "--admin",
            "127.0.0.1:7423,127.0.0.1:7443",
        ])
        .unwrap();
        assert_eq!(after.target.admin, nodes);
        let default = Cli::try_parse_from(["tern-bench", "idle"]).unwrap();
        assert_eq!(default.target.admin, ["127.0.0.1:7403"]);
    }
}
