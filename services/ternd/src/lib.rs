//! ternd: the tern services wired together. The `ternd` binary runs all of
//! them in one process on embedded backends (the redb event log and store,
//! the in-memory route directory): what `cargo run --bin ternd` starts, and
//! what small installs and development use. The `tern-server` binary runs
//! any subset of them on Kafka, ScyllaDB/Cassandra and Redis, with the same
//! settings; both call [`start_with`].

pub mod admin;
pub mod config;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use tern_api::{ApiConfig, ApiDeps, ApiServer};
use tern_core::auth::TokenAuthority;
use tern_core::embedded::{EmbeddedLog, EmbeddedLogConfig, EmbeddedStore, MemoryRoutes};
use tern_core::log::EventLog;
use tern_core::routes::RouteDirectory;
use tern_core::store::MessageStore;
use tern_gateway::{Gateway, GatewayConfig, GatewayDeps};
use tern_persister::Persister;
use tern_router::Router;
use tokio::sync::watch;
use tokio::task::JoinSet;

/// Which services this process runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Services {
    pub gateway: bool,
    pub persister: bool,
    pub router: bool,
    pub api: bool,
    pub archiver: bool,
}

impl Services {
    pub const ALL: Services = Services {
        gateway: true,
        persister: true,
        router: true,
        api: true,
        archiver: true,
    };
    const NONE: Services = Services {
        gateway: false,
        persister: false,
        router: false,
        api: false,
        archiver: false,
    };

    /// Parses `gateway,persister,router,api,archiver` or `all` (`ingest`, the
    /// old name of `api`, is still understood).
    pub fn parse(list: &str) -> Result<Services, String> {
        let mut s = Services::NONE;
        for name in list.split(',').map(str::trim).filter(|n| !n.is_empty()) {
            match name {
                "all" => s = Services::ALL,
                "gateway" => s.gateway = true,
                "persister" => s.persister = true,
                "router" => s.router = true,
                "api" | "ingest" => s.api = true,
                "archiver" => s.archiver = true,
                other => {
                    return Err(format!(
                        "unknown service {other:?}: use gateway, persister, router, api, archiver or all"
                    ));
                }
            }
        }
        if s == Services::NONE {
            return Err("services lists no service".into());
        }
        Ok(s)
    }
}

impl std::fmt::Display for Services {
    /// The list [`Services::parse`] reads back, e.g. `gateway,router`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names = [
            (self.gateway, "gateway"),
            (self.persister, "persister"),
            (self.router, "router"),
            (self.api, "api"),
            (self.archiver, "archiver"),
        ];
        let on: Vec<&str> = names
            .iter()
            .filter(|(on, _)| *on)
            .map(|(_, n)| *n)
            .collect();
        f.write_str(&on.join(","))
    }
}

/// Where the three backends are: `embedded` (or `memory` for routes), or a
/// URL that `tern-server` understands (`kafka://`, `cql://`, `redis://`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackendUrls {
    pub event_log: String,
    pub store: String,
    pub routes: String,
}

impl BackendUrls {
    pub fn embedded() -> Self {
        BackendUrls {
            event_log: "embedded".into(),
            store: "embedded".into(),
            routes: "memory".into(),
        }
    }
}

/// The backends, opened.
#[derive(Clone)]
pub struct Backends {
    pub log: Arc<dyn EventLog>,
    pub store: Arc<dyn MessageStore>,
    pub routes: Arc<dyn RouteDirectory>,
    /// The compliance archive, when `archive` is set.
    pub archive: Option<tern_archive::Archive>,
}

/// The compliance archive, when one is configured.
#[derive(Debug, Clone)]
pub struct ArchiveSettings {
    /// A directory or `file:///path`.
    pub location: String,
    /// How long archived messages are kept before purge may remove them.
    pub retention: Duration,
    pub archiver: tern_archive::ArchiverConfig,
}

/// Everything ternd needs to start (see [`config::Settings`] for the knobs).
#[derive(Debug, Clone)]
pub struct TerndConfig {
    pub data_dir: PathBuf,
    pub gateway: GatewayConfig,
    pub api: ApiConfig,
    pub jwt_secret: Option<tern_core::secret::Secret>,
    /// The previous token secret, accepted during a rotation.
    pub jwt_secret_previous: Option<tern_core::secret::Secret>,
    /// `iss` and `aud` that login tokens must carry.
    pub token_issuer: String,
    pub token_audience: String,
    pub dev_mode: bool,
    pub log_partitions: u32,
    /// Page cache of the embedded store, MiB (the log gets a quarter of it).
    pub cache_mib: usize,
    pub backends: BackendUrls,
    pub services: Services,
    /// Prefix of Kafka topics and consumer groups.
    pub topic_prefix: String,
    /// Partitions of the Kafka topics tern creates.
    pub topic_partitions: u32,
    /// Retention of messages and inbox entries in the CQL store, days (0: keep).
    pub retention_days: u32,
    /// Groups with more members than this are large: their messages go to
    /// the group's history and live to online members, not into inboxes.
    pub large_group_members: u64,
    /// How often the router sweeps the routes of dead gateways.
    pub sweep_every: Duration,
    /// The compliance archive; None: no archive.
    pub archive: Option<ArchiveSettings>,
    /// Address of /healthz, /readyz and /metrics; None serves none.
    pub admin_listen: Option<SocketAddr>,
    /// How long a gateway or API keeps serving, not ready, before it stops.
    pub shutdown_delay: Duration,
    /// Only prepare the backends (topics, keyspace, migrations), then exit.
    pub migrate_only: bool,
    /// OTLP/gRPC collector of message traces; None: no tracing.
    pub otlp_endpoint: Option<String>,
    /// Share of messages traced, in (0, 1].
    pub trace_sample_ratio: f64,
}

impl TerndConfig {
    /// Defaults with every listener on a free loopback port, the back-end
    /// API open to [`TEST_BACKEND_TOKEN`], and no rate or connection limit
    /// (tests of limits set their own): for tests. Errors only if the
    /// defaults themselves do not resolve.
    pub fn for_tests(data_dir: &Path) -> Result<Self, config::ConfigError> {
        let any = SocketAddr::from(([127, 0, 0, 1], 0));
        let mut c = config::Settings::default().resolve()?;
        c.data_dir = data_dir.to_owned();
        c.gateway.tcp_listen = any;
        c.gateway.ws_listen = any;
        c.api.listen = any;
        c.api.backend_listen = Some(any);
        c.api.backend_token = Some(TEST_BACKEND_TOKEN.into());
        c.gateway.limits = tern_gateway::limits::LimitsConfig::unlimited();
        c.api.group_creations = tern_chat::limits::Rate::UNLIMITED;
        c.api.costly = tern_chat::limits::CostlyRates::UNLIMITED;
        c.admin_listen = Some(any);
        Ok(c)
    }
}

/// The back-end token of [`TerndConfig::for_tests`].
/// The metrics of every service a node runs, each owned by its crate:
/// what `/metrics` renders.
pub static METRICS: &[&tern_core::metrics::Family] = &[
    &tern_core::metrics::CORE,
    &tern_gateway::metrics::GATEWAY,
    &tern_api::metrics::API,
    &tern_archive::metrics::ARCHIVE,
];

pub const TEST_BACKEND_TOKEN: &str = "test-backend-token-0123456789abcdef";

/// A started set of services. Addresses are those actually bound (a port
/// of 0 in the config becomes a real one); None for a service not run.
pub struct Running {
    pub tcp_addr: Option<SocketAddr>,
    pub ws_addr: Option<SocketAddr>,
    pub api_addr: Option<SocketAddr>,
    /// The back-end API (and archive administration), when served.
    pub backend_addr: Option<SocketAddr>,
    pub admin_addr: Option<SocketAddr>,
    /// What /readyz reports; false again once shutting down.
    ready: Arc<std::sync::atomic::AtomicBool>,
    /// Served on, not ready, for this long after a shutdown is asked for.
    shutdown_delay: Duration,
    shutdown: watch::Sender<bool>,
    tasks: JoinSet<(&'static str, anyhow::Result<()>)>,
}

/// The login-token secret: configured, or in dev mode created once and kept
/// in the data directory (so tokens survive restarts), readable by its
/// owner only.
fn token_secret(config: &TerndConfig) -> anyhow::Result<Vec<u8>> {
    if let Some(s) = &config.jwt_secret {
        return Ok(s.expose().as_bytes().to_vec());
    }
    let path = config.data_dir.join("dev-jwt-secret");
    let secret = match std::fs::read(&path) {
        Ok(s) if !s.is_empty() => s,
        _ => {
            let secret: String = (0..32)
                .map(|_| format!("{:02x}", rand::random::<u8>()))
                .collect();
            // Private from the start, not made so after being written.
            use std::io::Write as _;
            use std::os::unix::fs::OpenOptionsExt as _;
            std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .open(&path)
                .and_then(|mut f| f.write_all(secret.as_bytes()))
                .with_context(|| format!("cannot write {}", path.display()))?;
            secret.into_bytes()
        }
    };
    // Also tightens a file written by an older version.
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))
        .with_context(|| format!("cannot make {} private", path.display()))?;
    Ok(secret)
}

/// The token authority of `config`: the current secret signs, the previous
/// one (during a rotation) still verifies.
fn token_authority(config: &TerndConfig) -> anyhow::Result<TokenAuthority> {
    let mut auth = TokenAuthority::new(token_secret(config)?)
        .with_issuer(config.token_issuer.clone())
        .with_audience(config.token_audience.clone());
    if let Some(previous) = &config.jwt_secret_previous {
        auth = auth.with_previous(previous.expose().as_bytes().to_vec());
    }
    Ok(auth)
}

/// Opens the embedded backends named by `config.backends`; any other kind
/// needs the `tern-server` binary, which links the Kafka, CQL and Redis clients.
pub fn open_embedded(config: &TerndConfig) -> anyhow::Result<Backends> {
    let b = &config.backends;
    for (what, url, embedded) in [
        ("event_log", &b.event_log, "embedded"),
        ("store", &b.store, "embedded"),
        ("routes", &b.routes, "memory"),
    ] {
        if url != embedded {
            anyhow::bail!(
                "{what} = {url:?} is not available in ternd, which runs embedded backends only: run tern-server for kafka://, cql:// and redis://"
            );
        }
    }
    std::fs::create_dir_all(&config.data_dir)
        .with_context(|| format!("cannot create data directory {}", config.data_dir.display()))?;
    let in_use = || format!("is another ternd using {}?", config.data_dir.display());
    let log = EmbeddedLog::open(&EmbeddedLogConfig {
        path: EmbeddedLog::path_in(&config.data_dir),
        partitions: config.log_partitions,
        cache_bytes: config.cache_mib << 20 >> 2,
    })
    .with_context(in_use)?;
    let store = EmbeddedStore::open(&config.data_dir.join("store.redb"), config.cache_mib << 20)
        .with_context(in_use)?;
    Ok(Backends {
        log: Arc::new(log),
        store: Arc::new(store),
        routes: Arc::new(MemoryRoutes::new()),
        archive: open_local_archive(config)?,
    })
}

/// The archive named by `config.archive` when it is a directory; an
/// `s3://` archive needs the `tern-server` binary, which links the S3 client.
pub fn open_local_archive(config: &TerndConfig) -> anyhow::Result<Option<tern_archive::Archive>> {
    match &config.archive {
        Some(a) => Ok(tern_archive::open(&a.location)?),
        None => Ok(None),
    }
}

/// How often messages past retention are looked for.
const EXPIRE_EVERY: Duration = Duration::from_secs(600);
/// Messages expired per store call (one transaction embedded).
const EXPIRE_BATCH: usize = 10_000;

/// Deletes messages older than `retention` now and every `EXPIRE_EVERY`
/// until `shutdown` (a no-op for stores with TTLs).
async fn expire_messages(
    store: Arc<dyn tern_core::store::MessageStore>,
    retention: Duration,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        let before = tern_core::now_ms().saturating_sub(retention.as_millis() as u64);
        let mut total = 0;
        loop {
            match store.expire_messages(before, EXPIRE_BATCH).await {
                Ok(n) => {
                    total += n;
                    if n < EXPIRE_BATCH as u64 {
                        break;
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "message expiry failed; trying again later");
                    break;
                }
            }
        }
        if total > 0 {
            tracing::info!(
                expired = total,
                before_ms = before,
                "messages past retention deleted"
            );
        }
        tokio::select! {
            _ = tokio::time::sleep(EXPIRE_EVERY) => {}
            _ = tern_core::stage::stopped(&mut shutdown) => return,
        }
    }
}

/// How often the archive is purged of segments past its retention.
const ARCHIVE_PURGE_EVERY: Duration = Duration::from_secs(3600);

/// Purges archive segments past `retention` that no legal hold covers,
/// now and every [`ARCHIVE_PURGE_EVERY`], until `shutdown`.
async fn purge_archive(
    archive: tern_archive::Archive,
    retention: Duration,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        if let Err(e) = archive
            .purge(tern_core::now_ms(), retention.as_millis() as u64)
            .await
        {
            tracing::warn!(error = %e, "archive purge failed; trying again later");
        }
        tokio::select! {
            _ = tokio::time::sleep(ARCHIVE_PURGE_EVERY) => {}
            _ = tern_core::stage::stopped(&mut shutdown) => return,
        }
    }
}

/// Opens the embedded backends and starts every configured service.
pub async fn start(config: TerndConfig) -> anyhow::Result<Running> {
    let backends = open_embedded(&config)?;
    start_with(config, backends).await
}

/// Binds the listeners of the configured services and starts them on `backends`.
pub async fn start_with(config: TerndConfig, backends: Backends) -> anyhow::Result<Running> {
    let Backends {
        log,
        store,
        routes,
        archive,
    } = backends;
    // Instrument once: every service's backend calls are timed alike.
    let log = tern_core::instrument::InstrumentedLog::wrap(log);
    let store = tern_core::instrument::InstrumentedStore::wrap(store);
    let routes = tern_core::instrument::InstrumentedRoutes::wrap(routes);
    if config.jwt_secret.is_none() {
        std::fs::create_dir_all(&config.data_dir).with_context(|| {
            format!("cannot create data directory {}", config.data_dir.display())
        })?;
    }
    let auth = token_authority(&config)?;
    tracing::info!(key_ids = ?auth.key_ids(), "token keys loaded");
    let services = config.services;
    let (shutdown, rx) = watch::channel(false);
    let mut tasks = JoinSet::new();
    let (mut tcp_addr, mut ws_addr, mut api_addr, mut admin_addr) = (None, None, None, None);
    let mut backend_addr = None;
    let ready = Arc::new(std::sync::atomic::AtomicBool::new(false));
    if let Some(listen) = config.admin_listen {
        let listener = tokio::net::TcpListener::bind(listen)
            .await
            .with_context(|| format!("cannot listen on {listen}"))?;
        admin_addr = Some(listener.local_addr()?);
        let (r, ready) = (rx.clone(), ready.clone());
        tasks.spawn(async move {
            (
                "admin",
                admin::serve(listener, ready, r).await.map_err(Into::into),
            )
        });
    }

    if services.gateway {
        let deps = GatewayDeps {
            log: log.clone(),
            store: store.clone(),
            routes: routes.clone(),
            auth: auth.clone(),
        };
        let gateway = Gateway::bind(config.gateway.clone(), deps).await?;
        tcp_addr = Some(gateway.tcp_addr());
        ws_addr = Some(gateway.ws_addr());
        let r = rx.clone();
        tasks.spawn(async move { ("gateway", gateway.run(r).await.map_err(Into::into)) });
    }
    if services.api {
        let mut api_config = config.api.clone();
        api_config.dev_mode = config.dev_mode;
        let deps = ApiDeps {
            log: log.clone(),
            store: store.clone(),
            routes: routes.clone(),
            auth,
            archive: archive.clone(),
        };
        let api = ApiServer::bind(api_config.clone(), deps)
            .await
            .with_context(|| format!("cannot listen on {}", api_config.listen))?;
        api_addr = Some(api.local_addr());
        backend_addr = api.backend_addr();
        let r = rx.clone();
        tasks.spawn(async move { ("api", api.run(r).await.map_err(|e| anyhow::anyhow!(e))) });
    }
    if services.persister {
        let persister = Persister::new(log.clone(), store.clone(), config.large_group_members)
            .with_archive(config.archive.is_some());
        let r = rx.clone();
        tasks.spawn(async move { ("persister", persister.run(r).await.map_err(Into::into)) });
        if config.retention_days > 0 {
            let retention = Duration::from_secs(u64::from(config.retention_days) * 86_400);
            let (r, store) = (rx.clone(), store.clone());
            tasks.spawn(async move {
                expire_messages(store, retention, r).await;
                ("message expiry", Ok(()))
            });
        }
    }
    if services.router {
        let router = Router::new(
            log.clone(),
            store.clone(),
            routes.clone(),
            config.gateway.inbox_retention,
        );
        let r = rx.clone();
        tasks.spawn(async move { ("router", router.run(r).await.map_err(Into::into)) });
        let (r, every, routes) = (rx.clone(), config.sweep_every, routes.clone());
        tasks.spawn(async move {
            tern_router::sweep_routes(routes, every, r).await;
            ("route sweeper", Ok(()))
        });
    }
    if services.archiver
        && let (Some(settings), Some(archive)) = (&config.archive, archive)
    {
        let archiver = tern_archive::Archiver::new(
            log.clone(),
            store.clone(),
            archive.clone(),
            settings.archiver.clone(),
        );
        let r = rx.clone();
        tasks.spawn(async move { ("archiver", archiver.run(r).await.map_err(Into::into)) });
        let (r, retention) = (rx.clone(), settings.retention);
        tasks.spawn(async move {
            purge_archive(archive, retention, r).await;
            ("archive purge", Ok(()))
        });
    }
    tracing::info!(
        tcp = ?tcp_addr, ws = ?ws_addr, api = ?api_addr, backend = ?backend_addr, %services,
        event_log = %config.backends.event_log, store = %config.backends.store, routes = %config.backends.routes,
        dev_mode = config.dev_mode, "tern started"
    );
    ready.store(true, std::sync::atomic::Ordering::Relaxed);
    Ok(Running {
        tcp_addr,
        ws_addr,
        api_addr,
        backend_addr,
        admin_addr,
        ready,
        // Only client-facing services are behind a load balancer that
        // needs time to notice; consumers have nobody to wait for.
        shutdown_delay: if services.gateway || services.api {
            config.shutdown_delay
        } else {
            Duration::ZERO
        },
        shutdown,
        tasks,
    })
}

impl Running {
    /// Waits until a service stops by itself (which is an error).
    pub async fn wait(&mut self) -> anyhow::Result<()> {
        match self.tasks.join_next().await {
            Some(Ok((name, Ok(())))) => anyhow::bail!("{name} stopped unexpectedly"),
            Some(Ok((name, Err(e)))) => Err(e.context(format!("{name} failed"))),
            Some(Err(e)) => Err(anyhow::anyhow!("a service task panicked: {e}")),
            None => Ok(()),
        }
    }

    /// Reports not ready, serves on for the shutdown delay (while load
    /// balancers take this instance out), then stops accepting, tells
    /// clients to reconnect and stops the stages.
    pub async fn shutdown(mut self) -> anyhow::Result<()> {
        self.ready
            .store(false, std::sync::atomic::Ordering::Relaxed);
        if !self.shutdown_delay.is_zero() {
            tracing::info!(
                delay_ms = self.shutdown_delay.as_millis() as u64,
                "not ready; serving on until load balancers have noticed"
            );
            tokio::time::sleep(self.shutdown_delay).await;
        }
        let _ = self.shutdown.send(true);
        while let Some(done) = self.tasks.join_next().await {
            match done {
                Ok((_, Ok(()))) => {}
                Ok((name, Err(e))) => {
                    tracing::warn!(service = name, error = %e, "service ended with an error")
                }
                Err(e) => tracing::warn!(error = %e, "service task panicked"),
            }
        }
        Ok(())
    }
}

/// EX_USAGE: the configuration cannot be used.
pub const EXIT_CONFIG: i32 = 64;

/// What both binaries do in `main`: read the settings (flags, `TERN_*`,
/// the TOML file, with `binary`'s defaults), set up logging, open the backends with `open`, start
/// the services, and run until SIGINT/SIGTERM (then shut down cleanly) or
/// until a service fails. `name` and `about` head `--help`. Returns the
/// process exit code.
pub async fn main_with<F, Fut>(
    name: &'static str,
    about: &'static str,
    binary: config::Binary,
    open: F,
) -> i32
where
    F: FnOnce(TerndConfig) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<(TerndConfig, Backends)>>,
{
    use clap::{CommandFactory as _, FromArgMatches as _};
    let matches = config::Settings::command()
        .name(name)
        .bin_name(name)
        .about(about)
        .get_matches();
    let settings = match config::Settings::from_arg_matches(&matches) {
        Ok(s) => s,
        Err(e) => e.exit(),
    };
    let check_only = settings.check_config;
    let (config, log_filter) = match settings.with_file().and_then(|s| {
        let log = s.log.clone().unwrap_or_else(|| "info".into());
        Ok((s.resolve_for(binary)?, log))
    }) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{name}: {e}");
            return EXIT_CONFIG;
        }
    };
    // Spans name the process by what it runs: ternd, tern-gateway, …
    let service_name = if config.services == Services::ALL {
        name.to_owned()
    } else {
        format!("tern-{}", config.services.to_string().replace(',', "+"))
    };
    let telemetry = match tern_telemetry::init(&tern_telemetry::TelemetrySettings {
        log_filter,
        otlp_endpoint: config.otlp_endpoint.clone().filter(|_| !check_only),
        service_name,
        instance_id: config.gateway.node_id.clone(),
        sample_ratio: config.trace_sample_ratio,
    }) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("{name}: {e}");
            return EXIT_CONFIG;
        }
    };
    let code = run(name, config, check_only, open).await;
    telemetry.shutdown().await;
    code
}

/// [`main_with`] once logging and tracing are set up.
async fn run<F, Fut>(name: &'static str, config: TerndConfig, check_only: bool, open: F) -> i32
where
    F: FnOnce(TerndConfig) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<(TerndConfig, Backends)>>,
{
    if check_only {
        let b = &config.backends;
        println!(
            "{name}: settings are valid: services {}, event_log {}, store {}, routes {}, node_id {}",
            config.services, b.event_log, b.store, b.routes, config.gateway.node_id
        );
        return 0;
    }
    if config.migrate_only {
        return match open(config).await {
            Ok(_) => {
                println!("{name}: backends ready: topics created, CQL migrations applied");
                0
            }
            Err(e) => {
                eprintln!("{name}: cannot prepare the backends: {e:#}");
                1
            }
        };
    }
    // Thousands of client connections need thousands of file descriptors.
    let _ = rlimit::increase_nofile_limit(u64::MAX);
    let started = async {
        let (config, backends) = open(config).await?;
        start_with(config, backends).await
    };
    let mut running = match started.await {
        Ok(r) => r,
        Err(e) => {
            eprintln!("{name}: cannot start: {e:#}");
            return 1;
        }
    };
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("{name}: cannot watch SIGTERM: {e}");
            return 1;
        }
    };
    let outcome = tokio::select! {
        r = running.wait() => Some(r),
        _ = tokio::signal::ctrl_c() => None,
        _ = term.recv() => None,
    };
    match outcome {
        Some(Err(e)) => {
            eprintln!("{name}: {e:#}");
            1
        }
        Some(Ok(())) => 0,
        None => {
            tracing::info!("shutting down");
            match running.shutdown().await {
                Ok(()) => 0,
                Err(e) => {
                    eprintln!("{name}: shutdown: {e:#}");
                    1
                }
            }
        }
    }
}
