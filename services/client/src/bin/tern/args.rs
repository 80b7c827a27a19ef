//! The command line: the global options (where the servers are, who to act
//! as) and every subcommand with its arguments, as clap derives them, plus
//! the helpers that read them the way every command does.

use clap::{ArgGroup, Args, CommandFactory, Parser, Subcommand};

use crate::archive_cmd;

#[derive(Debug, Parser)]
#[command(
    name = "tern",
    version,
    about = "Command-line client for tern: dev tokens, send, listen, chat, history, blocks, logout, groups, rooms, the compliance archive"
)]
pub struct Cli {
    /// Gateway address: tcp://host:port, ws://host:port/, or host:port (TCP).
    #[arg(long, global = true, env = "TERN_SERVER", default_value = tern_client::DEFAULT_SERVER_ADDR)]
    pub server: String,

    /// User API address (gRPC): dev tokens, groups, room viewers, logout.
    #[arg(long, global = true, env = "TERN_API", default_value = tern_client::DEFAULT_API_ADDR)]
    pub api: String,

    /// Back-end API address (gRPC, the server's backend_listen), where `tern archive` administers the archive.
    #[arg(long, global = true, env = "TERN_BACKEND", default_value = tern_client::DEFAULT_BACKEND_ADDR)]
    pub backend: String,

    /// User to act as. Without --token, a dev token for this user is fetched from --api.
    #[arg(long, global = true, env = "TERN_USER")]
    pub user: Option<String>,

    /// Login token; takes precedence over --user.
    #[arg(long, global = true, env = "TERN_TOKEN", hide_env_values = true)]
    pub token: Option<String>,

    /// Device id: the one to log in as [default: "cli" for listen and chat, "cli-send" for
    /// send, "cli-room" for rooms, "cli-read" for the rest], the one `tern token` binds its
    /// token to, the one `tern logout` logs out [default there: every device].
    #[arg(long, global = true, env = "TERN_DEVICE")]
    pub device: Option<String>,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
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
pub struct ConversationArgs {
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
    pub fn id(&self, me: &str) -> String {
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
pub enum RoomCommand {
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
pub enum GroupCommand {
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
pub struct SendArgs {
    /// Recipient user, for a 1:1 message.
    #[arg(long)]
    pub to: Option<String>,

    /// Group id, to send to a group you are a member of.
    #[arg(long)]
    pub group: Option<String>,

    /// Existing conversation id to send to instead.
    #[arg(long)]
    pub conversation: Option<String>,

    /// Client message id; sending again with the same id stores the message once [default: a new UUIDv7].
    #[arg(long = "client-id")]
    pub client_id: Option<String>,

    /// MIME type of the body.
    #[arg(long, default_value = "text/plain")]
    pub content_type: String,

    /// The message text.
    pub text: String,
}

pub fn non_empty(value: &Option<String>) -> Option<&str> {
    value.as_deref().filter(|v| !v.is_empty())
}

/// Reports a usage error the way clap does (exit code 2).
pub fn usage_error(message: &str) -> ! {
    Cli::command()
        .error(clap::error::ErrorKind::MissingRequiredArgument, message)
        .exit()
}

#[cfg(test)]
mod tests {
    use super::*;

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
