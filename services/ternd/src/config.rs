//! ternd's settings: defaults < TOML file (`--config`) < `TERN_*`
//! environment variables < command-line flags. Every setting documents
//! itself in `ternd --help`; every bad setting is reported at once.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use serde::Deserialize;
use tern_api::ApiConfig;
use tern_chat::limits::Rate;
use tern_core::secret::Secret;
use tern_gateway::GatewayConfig;

use crate::TerndConfig;

/// The whole tern pipeline in one process, on embedded storage.
///
/// Every setting can also be given in a TOML file (same names, with
/// underscores: `tcp_listen = "0.0.0.0:7400"`) or as an environment variable
/// (`TERN_TCP_LISTEN`). Flags override variables, which override the file.
#[derive(Parser, Deserialize, Debug, Default, Clone)]
#[command(name = "ternd", version, about, long_about = None)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    /// TOML file with settings.
    #[arg(long, env = "TERN_CONFIG")]
    #[serde(skip)]
    pub config: Option<PathBuf>,

    /// Directory of the embedded event log and store [default: ./data].
    #[arg(long, env = "TERN_DATA_DIR")]
    pub data_dir: Option<PathBuf>,

    /// Address for client TCP connections (length-prefixed frames) [default: 127.0.0.1:7400].
    #[arg(long, env = "TERN_TCP_LISTEN")]
    pub tcp_listen: Option<SocketAddr>,

    /// Address for client WebSocket connections (binary messages) [default: 127.0.0.1:7401].
    #[arg(long, env = "TERN_WS_LISTEN")]
    pub ws_listen: Option<SocketAddr>,

    /// Address of the user API (gRPC; every call needs a login token)
    /// [default: 127.0.0.1:7402].
    #[arg(long, env = "TERN_API_LISTEN")]
    pub api_listen: Option<SocketAddr>,

    /// Address of the back-end API (gRPC, for the application's servers;
    /// every call needs backend_token) and the archive administration; keep
    /// it off the public network. "off" serves neither [default: 127.0.0.1:7404].
    #[arg(long, env = "TERN_BACKEND_LISTEN")]
    pub backend_listen: Option<String>,

    /// Credential of the back-end API, sent as `authorization: Bearer
    /// <backend_token>`; at least 32 random bytes. Unset: back-end calls are
    /// refused [default: unset].
    #[arg(long, env = "TERN_BACKEND_TOKEN", hide_env_values = true)]
    pub backend_token: Option<Secret>,

    /// Secret that signs login tokens (HS256 JWT); at least 32 random
    /// bytes. Required unless dev mode is on; in dev mode a random one is
    /// created and kept in the data directory.
    #[arg(long, env = "TERN_JWT_SECRET", hide_env_values = true)]
    pub jwt_secret: Option<Secret>,

    /// The previous token secret during a rotation: tokens it signed still
    /// log in; new tokens are signed with jwt_secret. Remove it once those
    /// tokens have expired [default: unset].
    #[arg(long, env = "TERN_JWT_SECRET_PREVIOUS", hide_env_values = true)]
    pub jwt_secret_previous: Option<Secret>,

    /// The `iss` claim login tokens must carry (your auth server's name) [default: tern].
    #[arg(long, env = "TERN_TOKEN_ISSUER")]
    pub token_issuer: Option<String>,

    /// The `aud` claim login tokens must carry [default: tern].
    #[arg(long, env = "TERN_TOKEN_AUDIENCE")]
    pub token_audience: Option<String>,

    /// Dev mode: the API hands out login tokens for any user to anyone
    /// (`tern token`), and short placeholder secrets are accepted. Only
    /// while every listener is on loopback: tern refuses to start in dev
    /// mode otherwise [default: ternd: true when every listener is on
    /// loopback; tern-server: false].
    #[arg(long, env = "TERN_DEV_MODE", action = clap::ArgAction::Set)]
    pub dev_mode: Option<bool>,

    /// Live rooms a user may join and post to: "open" (any) or "token"
    /// (those the login token's `rooms` claim lists: exact ids, or a
    /// prefix ending in `*`) [default: open].
    #[arg(long, env = "TERN_ROOM_POLICY")]
    pub room_policy: Option<String>,

    /// Messages (and room posts) one user may send per second on one
    /// gateway; faster sends are answered RATE_LIMITED. 0: no limit [default: 20].
    #[arg(long, env = "TERN_SENDS_PER_SECOND")]
    pub sends_per_second: Option<u32>,

    /// Sends a user may make at once above that rate [default: 100].
    #[arg(long, env = "TERN_SEND_BURST")]
    pub send_burst: Option<u32>,

    /// Frames one connection may send per second (bursts of twice as
    /// many); past it the gateway reads the connection more slowly. 0: no
    /// limit [default: 100].
    #[arg(long, env = "TERN_FRAMES_PER_SECOND")]
    pub frames_per_second: Option<u32>,

    /// Connections one user may hold on one gateway; another is refused
    /// with TOO_MANY_CONNECTIONS (a device logging in again replaces its
    /// old connection instead). 0: no limit [default: 10].
    #[arg(long, env = "TERN_MAX_CONNECTIONS_PER_USER")]
    pub max_connections_per_user: Option<usize>,

    /// Connections from one source address at once, per gateway. 0: no
    /// limit [default: 500].
    #[arg(long, env = "TERN_MAX_CONNECTIONS_PER_IP")]
    pub max_connections_per_ip: Option<usize>,

    /// New connections from one source address per second, per gateway
    /// (bursts of five times as many). 0: no limit [default: 20].
    #[arg(long, env = "TERN_NEW_CONNECTIONS_PER_IP_PER_SECOND")]
    pub new_connections_per_ip_per_second: Option<u32>,

    /// Groups one user may create per hour, per API node. 0: no limit [default: 30].
    #[arg(long, env = "TERN_GROUP_CREATIONS_PER_HOUR")]
    pub group_creations_per_hour: Option<u32>,

    /// Groups one user may be in; adding them to more is refused. 0: no
    /// limit [default: 500].
    #[arg(long, env = "TERN_MAX_GROUPS_PER_USER")]
    pub max_groups_per_user: Option<usize>,

    /// Users one user API call adds or removes (the back-end API: 1000) [default: 100].
    #[arg(long, env = "TERN_MAX_MEMBERS_PER_CALL")]
    pub max_members_per_call: Option<usize>,

    /// API calls in progress at once, per listener; more wait their turn [default: 256].
    #[arg(long, env = "TERN_API_CONCURRENCY")]
    pub api_concurrency: Option<usize>,

    /// An API call taking longer than this (its wait for a turn included)
    /// is cancelled, in ms [default: 30000].
    #[arg(long, env = "TERN_API_TIMEOUT_MS")]
    pub api_timeout_ms: Option<u64>,

    /// Largest message body accepted, in bytes [default: 65536].
    #[arg(long, env = "TERN_MAX_BODY_BYTES")]
    pub max_body_bytes: Option<usize>,

    /// Largest client frame, in bytes, either direction [default: 1048576].
    #[arg(long, env = "TERN_MAX_FRAME_BYTES")]
    pub max_frame_bytes: Option<usize>,

    /// Clients are told to send a heartbeat this often, in ms [default: 15000].
    #[arg(long, env = "TERN_HEARTBEAT_INTERVAL_MS")]
    pub heartbeat_interval_ms: Option<u64>,

    /// A connection with no frame for this long is closed, in ms [default: 45000].
    #[arg(long, env = "TERN_IDLE_TIMEOUT_MS")]
    pub idle_timeout_ms: Option<u64>,

    /// New messages for a connection are merged this long into one push, in ms [default: 2].
    #[arg(long, env = "TERN_PUSH_WINDOW_MS")]
    pub push_window_ms: Option<u64>,

    /// Live room messages are merged this long into one batch per room, in
    /// ms; 0 sends them as they arrive [default: 20].
    #[arg(long, env = "TERN_ROOM_WINDOW_MS")]
    pub room_window_ms: Option<u64>,

    /// Room batches queued per viewer before a slow viewer loses some [default: 32].
    #[arg(long, env = "TERN_ROOM_QUEUE")]
    pub room_queue: Option<usize>,

    /// With more pending messages than this at login, only the newest this
    /// many are pushed and older ones are left to history pages; 0 pushes
    /// everything [default: 500].
    #[arg(long, env = "TERN_LOGIN_PUSH_MAX")]
    pub login_push_max: Option<usize>,

    /// Of the login push, at most this many messages of one conversation [default: 100].
    #[arg(long, env = "TERN_LOGIN_PUSH_PER_CONVERSATION")]
    pub login_push_per_conversation: Option<usize>,

    /// Message bodies a gateway keeps in memory for pushes and pages (a
    /// group message is then read once per gateway); 0: none [default: 10000].
    #[arg(long, env = "TERN_BODY_CACHE_ENTRIES")]
    pub body_cache_entries: Option<usize>,

    /// Most messages per push frame [default: 500].
    #[arg(long, env = "TERN_PUSH_MAX_MESSAGES")]
    pub push_max_messages: Option<usize>,

    /// An un-ACKed push is re-sent after this long, in ms [default: 5000].
    #[arg(long, env = "TERN_ACK_TIMEOUT_MS")]
    pub ack_timeout_ms: Option<u64>,

    /// Most un-ACKed push frames per connection [default: 16].
    #[arg(long, env = "TERN_MAX_UNACKED_PUSHES")]
    pub max_unacked_pushes: Option<usize>,

    /// Frames queued for one connection before it is dropped as too slow [default: 64].
    #[arg(long, env = "TERN_OUTBOUND_QUEUE")]
    pub outbound_queue: Option<usize>,

    /// A send without a receipt after this long is answered UNAVAILABLE, in ms [default: 10000].
    #[arg(long, env = "TERN_RECEIPT_TIMEOUT_MS")]
    pub receipt_timeout_ms: Option<u64>,

    /// Partitions per topic of the embedded log; fixed when the log is created [default: 4].
    #[arg(long, env = "TERN_LOG_PARTITIONS")]
    pub log_partitions: Option<u32>,

    /// Page cache of the embedded store, MiB; the embedded log gets a quarter
    /// more. Memory for speed [default: 128].
    #[arg(long, env = "TERN_CACHE_MIB")]
    pub cache_mib: Option<usize>,

    /// Event log: "embedded" (a file in data_dir), or, with tern-server,
    /// "kafka://host:port[,host:port]" [default: embedded].
    #[arg(long, env = "TERN_EVENT_LOG")]
    pub event_log: Option<String>,

    /// Message store: "embedded", or, with tern-server,
    /// "cql://host:port[,host:port]/keyspace" (ScyllaDB or Cassandra) [default: embedded].
    #[arg(long, env = "TERN_STORE")]
    pub store: Option<String>,

    /// Route directory: "memory", or, with tern-server, "redis://host:port/db" [default: memory].
    #[arg(long, env = "TERN_ROUTES")]
    pub routes: Option<String>,

    /// Services this process runs: any of gateway, persister, router,
    /// api, archiver, comma-separated, or all (the archiver runs only
    /// when archive is set) [default: all].
    #[arg(long, env = "TERN_SERVICES")]
    pub services: Option<String>,

    /// This node's identity: the gateway's id in the route directory and
    /// push topic (keep it stable across restarts, e.g. the pod name);
    /// the API uses "<node_id>.api" [default: local].
    #[arg(long, env = "TERN_NODE_ID")]
    pub node_id: Option<String>,

    /// Prefix of Kafka topic and consumer-group names [default: tern.].
    #[arg(long, env = "TERN_TOPIC_PREFIX")]
    pub topic_prefix: Option<String>,

    /// Partitions of the Kafka topics tern creates [default: 12].
    #[arg(long, env = "TERN_TOPIC_PARTITIONS")]
    pub topic_partitions: Option<u32>,

    /// Days messages are kept (bodies and history; in the CQL store inbox
    /// rows too, by TTL; embedded, a sweep every 10 minutes); 0 keeps them
    /// [default: 0].
    #[arg(long, env = "TERN_RETENTION_DAYS")]
    pub retention_days: Option<u32>,

    /// Groups with more members than this are large: a message is stored
    /// once and pushed live to members online, not copied into every
    /// member's inbox; members page the group's history [default: 1000].
    #[arg(long, env = "TERN_LARGE_GROUP_MEMBERS")]
    pub large_group_members: Option<u64>,

    /// Most entries kept in a user's inbox; older ones are trimmed and a
    /// device behind them gets a gap marker; 0: no bound [default: 100000].
    #[arg(long, env = "TERN_INBOX_MAX_ENTRIES")]
    pub inbox_max_entries: Option<u64>,

    /// Days an inbox entry is kept; 0: no bound [default: 30].
    #[arg(long, env = "TERN_INBOX_MAX_AGE_DAYS")]
    pub inbox_max_age_days: Option<u32>,

    /// How often routers remove the routes of dead gateways, in ms [default: 10000].
    #[arg(long, env = "TERN_SWEEP_EVERY_MS")]
    pub sweep_every_ms: Option<u64>,

    /// Compliance archive of every stored message: "off", a directory,
    /// "file:///path", or, with tern-server, "s3://bucket[/prefix]" (AWS_*
    /// variables give the credentials and endpoint). When set, the persister
    /// emits each stored message for the archiver, and the archiver service
    /// runs [default: off].
    #[arg(long, env = "TERN_ARCHIVE")]
    pub archive: Option<String>,

    /// Credential of the archive administration API (export, legal holds,
    /// verify), sent as `authorization: Bearer <admin_token>`, on the back-end
    /// listener; at least 32 random bytes. Unset: those calls are refused [default: unset].
    #[arg(long, env = "TERN_ADMIN_TOKEN", hide_env_values = true)]
    pub admin_token: Option<Secret>,

    /// Days archived messages are kept before purge may remove them (legal
    /// holds keep them longer); independent of chat retention [default: 2557, 7 years].
    #[arg(long, env = "TERN_ARCHIVE_RETENTION_DAYS")]
    pub archive_retention_days: Option<u32>,

    /// An archive segment is closed at this many MiB of messages (before
    /// compression) [default: 32].
    #[arg(long, env = "TERN_ARCHIVE_SEGMENT_MAX_MIB")]
    pub archive_segment_max_mib: Option<u64>,

    /// An archive segment is closed this long after its first message, in
    /// ms [default: 300000].
    #[arg(long, env = "TERN_ARCHIVE_SEGMENT_MAX_AGE_MS")]
    pub archive_segment_max_age_ms: Option<u64>,

    /// Address of the admin endpoints /healthz, /readyz and /metrics;
    /// "off" serves none [default: 127.0.0.1:7403].
    #[arg(long, env = "TERN_ADMIN_LISTEN")]
    pub admin_listen: Option<String>,

    /// On SIGTERM, how long a gateway or API keeps serving after /readyz
    /// turns 503, in ms: time for load balancers to stop sending new
    /// connections here before clients are told to reconnect (on
    /// Kubernetes, a few seconds; keep it under the termination grace
    /// period). Other services stop at once [default: 0].
    #[arg(long, env = "TERN_SHUTDOWN_DELAY_MS")]
    pub shutdown_delay_ms: Option<u64>,

    /// Log filter, as RUST_LOG (e.g. "info,tern_gateway=debug") [default: info].
    #[arg(long, env = "TERN_LOG")]
    pub log: Option<String>,

    /// OpenTelemetry collector for traces, OTLP over gRPC (e.g.
    /// "http://otel-collector:4317"): each message becomes one trace across
    /// the stages and processes it passes. "off" or unset: no tracing [default: off].
    #[arg(long, env = "TERN_OTLP_ENDPOINT")]
    pub otlp_endpoint: Option<String>,

    /// Share of messages traced when otlp_endpoint is set, in (0, 1] [default: 1].
    #[arg(long, env = "TERN_TRACE_SAMPLE_RATIO")]
    pub trace_sample_ratio: Option<f64>,

    /// Check the settings, print what would run, and exit: 0 when they
    /// can be used, 64 otherwise. Nothing is opened or contacted.
    #[arg(long)]
    #[serde(skip)]
    pub check_config: bool,

    /// Prepare the backends and exit: create the Kafka topics and the CQL
    /// keyspace, apply pending CQL migrations. What a deployment runs once
    /// before rolling out a new version (the services also do it at start).
    #[arg(long)]
    #[serde(skip)]
    pub migrate: bool,
}

/// Which binary reads the settings: their defaults differ.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Binary {
    /// `ternd`: everything in one process, dev mode on by default (on loopback).
    Ternd,
    /// `tern-server`: deployments; dev mode off by default.
    Server,
}

/// Words that mark a secret as an example someone forgot to replace.
const PLACEHOLDERS: &[&str] = &[
    "change-me",
    "changeme",
    "change_me",
    "secret",
    "password",
    "example",
    "placeholder",
];

/// Shortest secret accepted outside dev mode (and inside it).
const MIN_SECRET: usize = 32;
const MIN_DEV_SECRET: usize = 16;

/// Why `secret` may not be used as `name`, if it may not. The secret
/// itself is never part of the message.
fn weak_secret(name: &str, secret: &str, dev_mode: bool) -> Option<String> {
    if dev_mode {
        return (secret.len() < MIN_DEV_SECRET)
            .then(|| format!("{name} must be at least {MIN_DEV_SECRET} bytes"));
    }
    if secret.len() < MIN_SECRET {
        return Some(format!(
            "{name} must be at least {MIN_SECRET} bytes (it is {}): use 32 random bytes, e.g. `openssl rand -hex 32`",
            secret.len()
        ));
    }
    let lower = secret.to_ascii_lowercase();
    PLACEHOLDERS
        .iter()
        .find(|p| lower.contains(*p))
        .map(|p| format!("{name} contains {p:?}, which marks an example value: use 32 random bytes, e.g. `openssl rand -hex 32`"))
}

/// The listeners a process with `services` binds, by setting name.
fn listeners(
    services: &crate::Services,
    gateway: &GatewayConfig,
    api: &ApiConfig,
    admin: Option<SocketAddr>,
) -> Vec<(&'static str, SocketAddr)> {
    let mut out = Vec::new();
    if services.gateway {
        out.push(("tcp_listen", gateway.tcp_listen));
        out.push(("ws_listen", gateway.ws_listen));
    }
    if services.api {
        out.push(("api_listen", api.listen));
        if let Some(b) = api.backend_listen {
            out.push(("backend_listen", b));
        }
    }
    if let Some(a) = admin {
        out.push(("admin_listen", a));
    }
    out
}

/// Settings that cannot be used; ternd exits with code 64 (EX_USAGE).
#[derive(Debug, thiserror::Error)]
#[error("invalid configuration:\n  - {}", .0.join("\n  - "))]
pub struct ConfigError(pub Vec<String>);

macro_rules! overlay {
    ($top:expr, $base:expr; $($field:ident),*) => {
        Settings {
            config: $top.config.or($base.config),
            check_config: $top.check_config,
            migrate: $top.migrate,
            $($field: $top.$field.or($base.$field)),*
        }
    };
}

impl Settings {
    /// `self` (flags and env) over the TOML file it names, if any.
    pub fn with_file(self) -> Result<Settings, ConfigError> {
        let Some(path) = self.config.clone() else {
            return Ok(self);
        };
        let text = std::fs::read_to_string(&path).map_err(|e| {
            ConfigError(vec![format!(
                "cannot read config file {}: {e}",
                path.display()
            )])
        })?;
        let file: Settings = toml::from_str(&text)
            .map_err(|e| ConfigError(vec![format!("config file {}: {e}", path.display())]))?;
        Ok(
            overlay!(self, file; data_dir, tcp_listen, ws_listen, api_listen, backend_listen, backend_token,
            jwt_secret, jwt_secret_previous, token_issuer, token_audience, dev_mode, room_policy,
            sends_per_second, send_burst, frames_per_second, max_connections_per_user, max_connections_per_ip,
            new_connections_per_ip_per_second, group_creations_per_hour, max_groups_per_user,
            max_members_per_call, api_concurrency, api_timeout_ms,
            max_body_bytes, max_frame_bytes, heartbeat_interval_ms, idle_timeout_ms, push_window_ms,
            room_window_ms, room_queue, login_push_max, login_push_per_conversation, body_cache_entries, push_max_messages, ack_timeout_ms, max_unacked_pushes, outbound_queue, receipt_timeout_ms,
            log_partitions, cache_mib, event_log, store, routes, services, node_id, topic_prefix,
            topic_partitions, retention_days, large_group_members, inbox_max_entries, inbox_max_age_days, sweep_every_ms, archive, admin_token, archive_retention_days, archive_segment_max_mib, archive_segment_max_age_ms, admin_listen, shutdown_delay_ms, log, otlp_endpoint, trace_sample_ratio),
        )
    }

    /// `resolve_for(Binary::Ternd)`.
    pub fn resolve(self) -> Result<TerndConfig, ConfigError> {
        self.resolve_for(Binary::Ternd)
    }

    /// Applies the defaults of `binary` and checks every value, reporting
    /// all problems.
    pub fn resolve_for(self, binary: Binary) -> Result<TerndConfig, ConfigError> {
        let mut problems = Vec::new();
        // Problems found while `positive` holds `problems`.
        let mut early = Vec::new();
        let mut positive = |name: &str, v: u64| {
            if v == 0 {
                problems.push(format!("{name} must be greater than 0"));
            }
            v
        };
        let mut gateway = GatewayConfig::default();
        let mut api = ApiConfig::default();
        let ms = |v: u64| Duration::from_millis(v);
        if let Some(a) = self.tcp_listen {
            gateway.tcp_listen = a;
        }
        if let Some(a) = self.ws_listen {
            gateway.ws_listen = a;
        }
        if let Some(a) = self.api_listen {
            api.listen = a;
        }
        api.backend_listen = match self.backend_listen.as_deref() {
            Some("off") => None,
            Some(a) => a.parse().map(Some).unwrap_or_else(|_| {
                early.push(format!(
                    "backend_listen {:?} is not an address (host:port) or \"off\"",
                    tern_core::ids::clip(a)
                ));
                None
            }),
            None => api.backend_listen,
        };
        api.backend_token = self.backend_token.clone();
        if let Some(p) = self.room_policy.as_deref() {
            match p.parse() {
                Ok(policy) => {
                    gateway.room_policy = policy;
                    api.room_policy = policy;
                }
                Err(e) => early.push(e),
            }
        }
        let limits = &mut gateway.limits;
        if let Some(n) = self.sends_per_second {
            limits.sends.per_second = f64::from(n);
        }
        if let Some(n) = self.send_burst {
            limits.sends.burst = f64::from(positive("send_burst", u64::from(n)) as u32);
        }
        if let Some(n) = self.frames_per_second {
            limits.frames = Rate::per_second(f64::from(n), n.saturating_mul(2));
        }
        if let Some(n) = self.max_connections_per_user {
            limits.connections_per_user = n;
        }
        if let Some(n) = self.max_connections_per_ip {
            limits.connections_per_ip = n;
        }
        if let Some(n) = self.new_connections_per_ip_per_second {
            limits.new_connections_per_ip = Rate::per_second(f64::from(n), n.saturating_mul(5));
        }
        if let Some(n) = self.group_creations_per_hour {
            api.group_creations = if n == 0 {
                Rate::UNLIMITED
            } else {
                Rate::per_hour(n)
            };
        }
        if let Some(n) = self.max_groups_per_user {
            api.group_limits.groups_per_user = n;
        }
        if let Some(n) = self.max_members_per_call {
            api.group_limits.members_per_call = positive("max_members_per_call", n as u64) as usize;
        }
        if let Some(n) = self.api_concurrency {
            api.concurrency = positive("api_concurrency", n as u64) as usize;
        }
        if let Some(ms) = self.api_timeout_ms {
            api.call_timeout = Duration::from_millis(positive("api_timeout_ms", ms));
        }
        if let Some(v) = self.max_body_bytes {
            gateway.max_body_bytes = positive("max_body_bytes", v as u64) as usize;
            api.max_body_bytes = gateway.max_body_bytes;
        }
        if let Some(v) = self.max_frame_bytes {
            gateway.max_frame_bytes = positive("max_frame_bytes", v as u64) as usize;
        }
        if let Some(v) = self.heartbeat_interval_ms {
            gateway.heartbeat_interval = ms(positive("heartbeat_interval_ms", v));
        }
        if let Some(v) = self.idle_timeout_ms {
            gateway.idle_timeout = ms(positive("idle_timeout_ms", v));
        }
        if let Some(v) = self.push_window_ms {
            gateway.push_window = ms(v);
        }
        if let Some(v) = self.room_window_ms {
            gateway.room_window = ms(v);
        }
        if let Some(v) = self.room_queue {
            gateway.room_queue = positive("room_queue", v as u64) as usize;
        }
        if let Some(v) = self.login_push_max {
            gateway.login_push_max = v;
        }
        if let Some(v) = self.login_push_per_conversation {
            gateway.login_push_per_conversation =
                positive("login_push_per_conversation", v as u64) as usize;
        }
        if let Some(v) = self.inbox_max_entries {
            gateway.inbox_retention.max_entries = v;
        }
        if let Some(days) = self.inbox_max_age_days {
            gateway.inbox_retention.max_age = Duration::from_secs(u64::from(days) * 86_400);
        }
        if let Some(v) = self.body_cache_entries {
            gateway.body_cache_entries = v;
        }
        if let Some(v) = self.push_max_messages {
            gateway.push_max_messages = positive("push_max_messages", v as u64) as usize;
        }
        if let Some(v) = self.ack_timeout_ms {
            gateway.ack_timeout = ms(positive("ack_timeout_ms", v));
        }
        if let Some(v) = self.max_unacked_pushes {
            gateway.max_unacked_pushes = positive("max_unacked_pushes", v as u64) as usize;
        }
        if let Some(v) = self.outbound_queue {
            gateway.outbound_queue = positive("outbound_queue", v as u64) as usize;
        }
        if let Some(v) = self.receipt_timeout_ms {
            gateway.receipt_timeout = ms(positive("receipt_timeout_ms", v));
            api.receipt_timeout = gateway.receipt_timeout;
        }
        let log_partitions = positive(
            "log_partitions",
            u64::from(self.log_partitions.unwrap_or(4)),
        ) as u32;
        let cache_mib = positive("cache_mib", self.cache_mib.unwrap_or(128) as u64) as usize;
        let archive = match self.archive.as_deref().map(str::trim) {
            None | Some("") | Some("off") => None,
            Some(location) => Some(crate::ArchiveSettings {
                location: location.to_owned(),
                retention: Duration::from_secs(
                    positive(
                        "archive_retention_days",
                        u64::from(self.archive_retention_days.unwrap_or(2557)),
                    ) * 86_400,
                ),
                archiver: tern_archive::ArchiverConfig {
                    segment_max_bytes: (positive(
                        "archive_segment_max_mib",
                        self.archive_segment_max_mib.unwrap_or(32),
                    ) << 20) as usize,
                    segment_max_age: ms(positive(
                        "archive_segment_max_age_ms",
                        self.archive_segment_max_age_ms.unwrap_or(300_000),
                    )),
                },
            }),
        };
        problems.append(&mut early);
        if gateway.max_body_bytes + 1024 > gateway.max_frame_bytes {
            problems.push(format!(
                "max_body_bytes ({}) must leave room for the frame around it: raise max_frame_bytes ({}) above it by 1 KiB",
                gateway.max_body_bytes, gateway.max_frame_bytes
            ));
        }
        if gateway.idle_timeout <= gateway.heartbeat_interval {
            problems.push("idle_timeout_ms must be longer than heartbeat_interval_ms".into());
        }
        let backends = crate::BackendUrls {
            event_log: self.event_log.clone().unwrap_or_else(|| "embedded".into()),
            store: self.store.clone().unwrap_or_else(|| "embedded".into()),
            routes: self.routes.clone().unwrap_or_else(|| "memory".into()),
        };
        let services = crate::Services::parse(self.services.as_deref().unwrap_or("all"))
            .unwrap_or_else(|e| {
                problems.push(e);
                crate::Services::ALL
            });
        let node_id = self.node_id.clone().unwrap_or_else(|| "local".into());
        if tern_core::ids::check_device(&node_id).is_err() {
            problems.push(format!(
                "node_id {node_id:?} is invalid: use 1 to 64 of a-z A-Z 0-9 _ - . @"
            ));
        }
        gateway.node_id = node_id.clone();
        api.node_id = format!("{node_id}.api");
        let distributed = backends != crate::BackendUrls::embedded();
        // Preparing the backends signs no token: no secret is needed.
        if distributed && self.jwt_secret.is_none() && !self.migrate {
            problems.push("jwt_secret is required with distributed backends: every gateway and API node must share it".into());
        }
        let admin_listen = match self.admin_listen.as_deref() {
            Some("off") => None,
            Some(a) => a.parse().map(Some).unwrap_or_else(|_| {
                problems.push(format!(
                    "admin_listen {a:?} is not an address (host:port) or \"off\""
                ));
                None
            }),
            None => Some(SocketAddr::from(([127, 0, 0, 1], 7403))),
        };
        // s3:// is checked by tern-server when it opens the archive.
        if let Some(a) = archive
            .as_ref()
            .filter(|a| !a.location.starts_with("s3://"))
            && let Err(e) = tern_archive::open(&a.location)
        {
            problems.push(e.to_string());
        }
        if archive.is_none() && services.archiver && services != crate::Services::ALL {
            problems.push("services includes archiver, but archive is off: set archive".into());
        }
        let dev_mode = self.dev_mode.unwrap_or(binary == Binary::Ternd);
        api.dev_mode = dev_mode;
        if dev_mode {
            // Tokens for anyone, from anyone who can reach a listener.
            let listeners = listeners(&services, &gateway, &api, admin_listen);
            if let Some((name, addr)) = listeners.iter().find(|(_, a)| !a.ip().is_loopback()) {
                let default = if self.dev_mode.is_none() {
                    " (the default of ternd)"
                } else {
                    ""
                };
                problems.push(format!(
                    "dev_mode is on{default} and {name} {addr} is not a loopback address: in dev mode anyone who reaches tern gets a token for any user. For a deployment set dev_mode = false with a jwt_secret of 32 random bytes (docs/security.md); to try tern on one machine, listen on 127.0.0.1"
                ));
            }
        }
        if !dev_mode && self.jwt_secret.is_none() && !self.migrate {
            problems.push("jwt_secret is required when dev_mode is false".into());
        }
        for (name, secret) in [
            ("jwt_secret", &self.jwt_secret),
            ("jwt_secret_previous", &self.jwt_secret_previous),
            ("backend_token", &self.backend_token),
            ("admin_token", &self.admin_token),
        ] {
            if let Some(problem) = secret
                .as_ref()
                .and_then(|s| weak_secret(name, s.expose(), dev_mode))
            {
                problems.push(problem);
            }
        }
        // One secret per job: a leaked back-end token must not sign logins.
        let named = [
            ("jwt_secret", &self.jwt_secret),
            ("backend_token", &self.backend_token),
            ("admin_token", &self.admin_token),
        ];
        for (i, (a, x)) in named.iter().enumerate() {
            for (b, y) in &named[i + 1..] {
                if x.is_some() && x == y {
                    problems.push(format!(
                        "{a} and {b} are the same: give each its own secret"
                    ));
                }
            }
        }
        api.admin_token = self.admin_token.clone();
        let otlp_endpoint = match self.otlp_endpoint.as_deref().map(str::trim) {
            None | Some("") | Some("off") => None,
            Some(e) if e.starts_with("http://") || e.starts_with("https://") => Some(e.to_owned()),
            Some(e) => {
                problems.push(format!(
                    "otlp_endpoint {e:?} is not an http:// or https:// URL (or \"off\")"
                ));
                None
            }
        };
        let trace_sample_ratio = self.trace_sample_ratio.unwrap_or(1.0);
        if !(trace_sample_ratio > 0.0 && trace_sample_ratio <= 1.0) {
            problems.push(format!(
                "trace_sample_ratio must be greater than 0 and at most 1, not {trace_sample_ratio}"
            ));
        }
        if !problems.is_empty() {
            return Err(ConfigError(problems));
        }
        Ok(TerndConfig {
            otlp_endpoint,
            trace_sample_ratio,
            data_dir: self.data_dir.unwrap_or_else(|| PathBuf::from("data")),
            gateway,
            api,
            jwt_secret: self.jwt_secret,
            jwt_secret_previous: self.jwt_secret_previous,
            token_issuer: self
                .token_issuer
                .unwrap_or_else(|| tern_core::auth::DEFAULT_ISSUER.into()),
            token_audience: self
                .token_audience
                .unwrap_or_else(|| tern_core::auth::DEFAULT_AUDIENCE.into()),
            dev_mode,
            log_partitions,
            cache_mib,
            backends,
            services,
            topic_prefix: self.topic_prefix.unwrap_or_else(|| "tern.".into()),
            topic_partitions: self.topic_partitions.unwrap_or(12).max(1),
            retention_days: self.retention_days.unwrap_or(0),
            large_group_members: self.large_group_members.unwrap_or(1000),
            sweep_every: Duration::from_millis(self.sweep_every_ms.unwrap_or(10_000).max(100)),
            archive,
            admin_listen,
            shutdown_delay: Duration::from_millis(self.shutdown_delay_ms.unwrap_or(0)),
            migrate_only: self.migrate,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_resolve() {
        let c = Settings::default().resolve().unwrap();
        assert!(c.dev_mode);
        assert_eq!(c.gateway.tcp_listen.port(), 7400);
        assert_eq!(c.api.listen.port(), 7402);
    }

    #[test]
    fn every_problem_is_reported_at_once() {
        let s = Settings {
            dev_mode: Some(false),
            push_max_messages: Some(0),
            idle_timeout_ms: Some(1),
            ..Default::default()
        };
        let e = s.resolve().unwrap_err();
        assert_eq!(e.0.len(), 3, "{e}");
        assert!(e.to_string().contains("jwt_secret is required"));
    }

    const STRONG: &str = "9c2e4f6a8b0d1e3f5a7c9e1b3d5f7a9c2e4f6a8b0d1e3f5a7c9e1b3d5f7a9c2e";

    #[test]
    fn dev_mode_with_a_public_listener_is_refused_with_a_way_out() {
        let e = Settings {
            tcp_listen: Some("0.0.0.0:7400".parse().unwrap()),
            ..Default::default()
        }
        .resolve()
        .unwrap_err()
        .to_string();
        assert!(e.contains("dev_mode is on (the default of ternd)"), "{e}");
        assert!(e.contains("tcp_listen 0.0.0.0:7400"), "{e}");
        assert!(e.contains("dev_mode = false"), "{e}");
        // Off, with a secret: a public ternd is fine.
        let c = Settings {
            tcp_listen: Some("0.0.0.0:7400".parse().unwrap()),
            dev_mode: Some(false),
            jwt_secret: Some(STRONG.into()),
            ..Default::default()
        }
        .resolve()
        .unwrap();
        assert!(!c.dev_mode);
    }

    #[test]
    fn tern_server_defaults_to_dev_mode_off() {
        let c = Settings {
            jwt_secret: Some(STRONG.into()),
            ..Default::default()
        }
        .resolve_for(Binary::Server)
        .unwrap();
        assert!(!c.dev_mode && !c.api.dev_mode);
        let e = Settings::default().resolve_for(Binary::Server).unwrap_err();
        assert!(e.to_string().contains("jwt_secret is required"), "{e}");
        let e = Settings {
            dev_mode: Some(true),
            api_listen: Some("0.0.0.0:7402".parse().unwrap()),
            ..Default::default()
        }
        .resolve_for(Binary::Server)
        .unwrap_err();
        assert!(e.to_string().contains("api_listen 0.0.0.0:7402"), "{e}");
    }

    #[test]
    fn short_and_placeholder_secrets_are_refused_without_echoing_them() {
        let weak = [
            "change-me-0123456789abcdef-0123456789",
            "my-Secret-value-0123456789abcdef0123",
            "password0123456789abcdef0123456789ab",
            "example-0123456789abcdef0123456789ab",
            "short-but-random-q8w7e6",
        ];
        for secret in weak {
            for field in [
                "jwt_secret",
                "backend_token",
                "admin_token",
                "jwt_secret_previous",
            ] {
                let mut s = Settings {
                    dev_mode: Some(false),
                    jwt_secret: Some(STRONG.into()),
                    ..Default::default()
                };
                match field {
                    "jwt_secret" => s.jwt_secret = Some(secret.into()),
                    "backend_token" => s.backend_token = Some(secret.into()),
                    "admin_token" => s.admin_token = Some(secret.into()),
                    _ => s.jwt_secret_previous = Some(secret.into()),
                }
                let e = s.resolve().unwrap_err().to_string();
                assert!(e.contains(field), "{field} {secret}: {e}");
                assert!(!e.contains(secret), "the secret is not repeated: {e}");
            }
        }
        // Dev mode takes short test secrets (at least 16 bytes).
        let c = Settings {
            jwt_secret: Some("dev-secret-0123456".into()),
            ..Default::default()
        }
        .resolve()
        .unwrap();
        assert!(c.dev_mode);
    }

    #[test]
    fn one_secret_per_job_and_none_printed() {
        let e = Settings {
            dev_mode: Some(false),
            jwt_secret: Some(STRONG.into()),
            backend_token: Some(STRONG.into()),
            ..Default::default()
        }
        .resolve()
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("jwt_secret and backend_token are the same"),
            "{e}"
        );
        let c = Settings {
            dev_mode: Some(false),
            jwt_secret: Some(STRONG.into()),
            ..Default::default()
        }
        .resolve()
        .unwrap();
        assert!(
            !format!("{c:?}").contains(STRONG),
            "config dumps redact secrets"
        );
    }

    #[test]
    fn the_readme_example_config_is_accepted() {
        let readme = include_str!("../../../README.md");
        let start = readme
            .find("Example `tern.toml`")
            .expect("the README has an example config");
        let block = &readme[start..];
        let toml_start = block.find("```toml\n").unwrap() + "```toml\n".len();
        let toml_end = block[toml_start..].find("```").unwrap();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tern.toml");
        std::fs::write(&path, &block[toml_start..toml_start + toml_end]).unwrap();
        let c = Settings {
            config: Some(path),
            // As the README's command gives it, from the environment.
            jwt_secret: Some(STRONG.into()),
            ..Default::default()
        }
        .with_file()
        .unwrap()
        .resolve()
        .unwrap();
        assert!(!c.dev_mode);
        assert_eq!(c.gateway.tcp_listen.to_string(), "0.0.0.0:7400");
    }

    #[test]
    fn tracing_is_off_by_default_and_checked_when_on() {
        let c = Settings::default().resolve().unwrap();
        assert_eq!(c.otlp_endpoint, None);
        let c = Settings {
            otlp_endpoint: Some("http://collector:4317".into()),
            trace_sample_ratio: Some(0.25),
            ..Default::default()
        }
        .resolve()
        .unwrap();
        assert_eq!(c.otlp_endpoint.as_deref(), Some("http://collector:4317"));
        assert_eq!(c.trace_sample_ratio, 0.25);
        let e = Settings {
            otlp_endpoint: Some("collector:4317".into()),
            trace_sample_ratio: Some(0.0),
            ..Default::default()
        }
        .resolve()
        .unwrap_err();
        assert_eq!(e.0.len(), 2, "{e}");
        assert!(
            e.to_string().contains("otlp_endpoint \"collector:4317\""),
            "{e}"
        );
    }

    #[test]
    fn services_print_as_they_parse() {
        for list in ["gateway", "persister,router", "api,archiver", "all"] {
            let s = crate::Services::parse(list).unwrap();
            assert_eq!(crate::Services::parse(&s.to_string()).unwrap(), s, "{list}");
        }
        assert_eq!(
            crate::Services::parse("api,gateway").unwrap().to_string(),
            "gateway,api"
        );
    }

    #[test]
    fn preparing_distributed_backends_needs_no_secret() {
        let distributed = Settings {
            event_log: Some("kafka://127.0.0.1:9092".into()),
            store: Some("cql://127.0.0.1:9042/tern".into()),
            routes: Some("redis://127.0.0.1:6379/".into()),
            dev_mode: Some(false),
            ..Default::default()
        };
        let e = distributed.clone().resolve().unwrap_err();
        assert!(e.to_string().contains("jwt_secret is required"), "{e}");
        let c = Settings {
            migrate: true,
            ..distributed
        }
        .resolve()
        .unwrap();
        assert!(c.migrate_only);
    }

    #[test]
    fn flags_override_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tern.toml");
        std::fs::write(
            &path,
            "tcp_listen = \"127.0.0.1:9000\"\nws_listen = \"127.0.0.1:9001\"\n",
        )
        .unwrap();
        let s = Settings {
            config: Some(path),
            tcp_listen: Some("127.0.0.1:9100".parse().unwrap()),
            ..Default::default()
        };
        let c = s.with_file().unwrap().resolve().unwrap();
        assert_eq!(c.gateway.tcp_listen.port(), 9100);
        assert_eq!(c.gateway.ws_listen.port(), 9001);
    }

    #[test]
    fn unknown_keys_in_the_file_are_rejected() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tern.toml");
        std::fs::write(&path, "tcp_lisen = \"127.0.0.1:9000\"\n").unwrap();
        let e = Settings {
            config: Some(path),
            ..Default::default()
        }
        .with_file()
        .unwrap_err();
        assert!(e.to_string().contains("tcp_lisen"), "{e}");
    }
}
