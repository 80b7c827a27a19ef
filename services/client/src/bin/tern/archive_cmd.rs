//! `tern archive …`: the compliance archive, administered with the
//! server's admin token on its back-end listener (`--backend`).

use std::io::Write as _;
use std::path::PathBuf;

use anyhow::{Context, bail};
use clap::{ArgGroup, Args, Subcommand};
use tern_client::api_proto::{ArchiveHold, archive_hold};
use tern_client::{ArchiveApi, ArchiveSubject};

#[derive(Debug, Args)]
pub struct ArchiveArgs {
    /// The server's admin token (its `admin_token` setting); a user's login token is refused.
    #[arg(long, env = "TERN_ADMIN_TOKEN", hide_env_values = true)]
    admin_token: String,

    #[command(subcommand)]
    command: ArchiveCommand,
}

#[derive(Debug, Subcommand)]
enum ArchiveCommand {
    /// Check every manifest, segment hash and the chain; list each problem
    /// (exit 1 if there is any).
    Verify,
    /// Write what --user sent or received, or what --conversation holds,
    /// from --from until before --to, to --out as JSON Lines.
    Export(ExportArgs),
    /// Legal holds: held users' and conversations' segments are never purged.
    #[command(subcommand)]
    Hold(HoldCommand),
}

#[derive(Debug, Args)]
#[command(group(ArgGroup::new("subject").required(true).args(["user", "conversation"])))]
struct Subject {
    /// A user id.
    #[arg(long = "user")]
    user: Option<String>,
    /// A conversation id (d:alice:bob, g:<group>).
    #[arg(long)]
    conversation: Option<String>,
}

impl Subject {
    fn get(&self) -> ArchiveSubject {
        match (&self.user, &self.conversation) {
            (Some(u), _) => ArchiveSubject::User(u.clone()),
            (None, Some(c)) => ArchiveSubject::Conversation(c.clone()),
            (None, None) => unreachable!("clap requires one"),
        }
    }
}

#[derive(Debug, Args)]
struct ExportArgs {
    #[command(flatten)]
    subject: Subject,
    /// Start, inclusive: RFC 3339 (2026-01-31T00:00:00Z, or 2026-01-31 00:00:00) or ms since the epoch [default: the beginning].
    #[arg(long)]
    from: Option<String>,
    /// End, exclusive, in the same forms [default: no end].
    #[arg(long)]
    to: Option<String>,
    /// File to write (replaced if it exists).
    #[arg(long)]
    out: PathBuf,
}

#[derive(Debug, Subcommand)]
enum HoldCommand {
    /// Place a hold; prints its id as the last line.
    Add {
        #[command(flatten)]
        subject: Subject,
        /// Why (a case number, a request): kept with the hold.
        #[arg(long)]
        reason: String,
        /// The hold's id [default: one is made].
        #[arg(long)]
        id: Option<String>,
    },
    /// Remove a hold by id.
    Remove {
        #[arg(long)]
        id: String,
    },
    /// Print every hold as a JSON line.
    List,
}

/// Parses `--from`/`--to`: ms since the epoch, or an RFC 3339 time.
fn parse_time(what: &str, text: &str) -> anyhow::Result<u64> {
    if let Ok(ms) = text.parse::<u64>() {
        return Ok(ms);
    }
    let t = humantime::parse_rfc3339_weak(text).with_context(|| {
        format!("{what} {text:?} is not a time: use RFC 3339 (2026-01-31T00:00:00Z) or ms since the epoch")
    })?;
    Ok(t.duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0))
}

fn hold_line(h: &ArchiveHold) -> serde_json::Value {
    let (key, value) = match &h.scope {
        Some(archive_hold::Scope::User(u)) => ("user", u.as_str()),
        Some(archive_hold::Scope::Conversation(c)) => ("conversation", c.as_str()),
        None => ("user", ""),
    };
    serde_json::json!({
        "id": h.id,
        key: value,
        "reason": h.reason,
        "created_at_ms": h.created_at_ms,
    })
}

/// Runs `args` against the archive administration at `backend_addr` (the
/// server's back-end listener).
pub async fn run(backend_addr: &str, args: &ArchiveArgs) -> anyhow::Result<()> {
    let mut api = ArchiveApi::connect(backend_addr, args.admin_token.clone())
        .await
        .context("the archive is administered on the back-end listener (--backend)")?;
    match &args.command {
        ArchiveCommand::Verify => {
            let r = api.verify().await.context("could not verify the archive")?;
            for p in &r.problems {
                println!("segment {}: {}", p.segment, p.what);
            }
            eprintln!(
                "{} segments ({} purged), {} messages: {}",
                r.segments,
                r.purged,
                r.records,
                if r.problems.is_empty() {
                    "every hash and the chain check out".to_owned()
                } else {
                    format!(
                        "{} problems, the first in segment {}",
                        r.problems.len(),
                        r.problems[0].segment
                    )
                }
            );
            if !r.problems.is_empty() {
                bail!("the archive failed verification");
            }
        }
        ArchiveCommand::Export(e) => {
            let from = e
                .from
                .as_deref()
                .map(|t| parse_time("--from", t))
                .transpose()?
                .unwrap_or(0);
            let to =
                e.to.as_deref()
                    .map(|t| parse_time("--to", t))
                    .transpose()?
                    .unwrap_or(0);
            let file = std::fs::File::create(&e.out)
                .with_context(|| format!("cannot create {}", e.out.display()))?;
            let mut out = std::io::BufWriter::new(file);
            let bar = indicatif::ProgressBar::new(0);
            bar.set_style(
                indicatif::ProgressStyle::with_template(
                    "{bar:40} {pos}/{len} segments, {msg} messages, {elapsed}",
                )
                .context("the progress bar's template")?,
            );
            let mut messages = 0;
            api.export(e.subject.get(), from, to, |chunk| {
                out.write_all(&chunk.jsonl).map_err(|err| {
                    tern_client::ClientError::Protocol(format!("cannot write the export: {err}"))
                })?;
                bar.set_length(chunk.segments_total);
                bar.set_position(chunk.segments_done);
                bar.set_message(chunk.messages.to_string());
                messages = chunk.messages;
                Ok(())
            })
            .await
            .context("export failed")?;
            out.flush().context("cannot write the export")?;
            bar.finish_and_clear();
            eprintln!("{messages} messages written to {}", e.out.display());
        }
        ArchiveCommand::Hold(HoldCommand::Add {
            subject,
            reason,
            id,
        }) => {
            let h = api
                .add_hold(id.clone(), subject.get(), reason)
                .await
                .context("could not place the hold")?;
            eprintln!("hold placed: {}", hold_line(&h));
            println!("{}", h.id);
        }
        ArchiveCommand::Hold(HoldCommand::Remove { id }) => {
            let h = api
                .remove_hold(id)
                .await
                .context("could not remove the hold")?;
            eprintln!("hold removed: {}", hold_line(&h));
        }
        ArchiveCommand::Hold(HoldCommand::List) => {
            for h in api.holds().await.context("could not list the holds")? {
                println!("{}", hold_line(&h));
            }
        }
    }
    Ok(())
}
