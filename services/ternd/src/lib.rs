//! ternd: every tern service in one process, on embedded backends: the
//! redb event log and store, the in-memory route directory, one gateway,
//! the persister, the router and the gRPC API. What `cargo run --bin ternd`
//! starts, and what small installs and development use.

pub mod config;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context as _;
use tern_core::auth::TokenAuthority;
use tern_core::embedded::{EmbeddedLog, EmbeddedLogConfig, EmbeddedStore, MemoryRoutes};
use tern_core::log::EventLog;
use tern_core::routes::RouteDirectory;
use tern_core::store::MessageStore;
use tern_gateway::{Gateway, GatewayConfig, GatewayDeps};
use tern_ingest::{Ingest, IngestConfig, IngestDeps};
use tern_persister::Persister;
use tern_router::Router;
use tokio::sync::watch;
use tokio::task::JoinSet;

/// Everything ternd needs to start (see [`config::Settings`] for the knobs).
#[derive(Debug, Clone)]
pub struct TerndConfig {
    pub data_dir: PathBuf,
    pub gateway: GatewayConfig,
    pub ingest: IngestConfig,
    pub jwt_secret: Option<String>,
    pub dev_mode: bool,
    pub log_partitions: u32,
    /// Page cache of the embedded store, MiB (the log gets a quarter of it).
    pub cache_mib: usize,
}

impl TerndConfig {
    /// Defaults with every listener on a free loopback port: for tests.
    pub fn for_tests(data_dir: &Path) -> Self {
        let any: SocketAddr = "127.0.0.1:0".parse().expect("valid address");
        let mut c = config::Settings::default()
            .resolve()
            .expect("defaults are valid");
        c.data_dir = data_dir.to_owned();
        c.gateway.tcp_listen = any;
        c.gateway.ws_listen = any;
        c.ingest.listen = any;
        c
    }
}

/// A started ternd.
pub struct Running {
    pub tcp_addr: SocketAddr,
    pub ws_addr: SocketAddr,
    pub api_addr: SocketAddr,
    shutdown: watch::Sender<bool>,
    tasks: JoinSet<(&'static str, anyhow::Result<()>)>,
}

/// The login-token secret: configured, or in dev mode created once and kept
/// in the data directory (so tokens survive restarts).
fn token_secret(config: &TerndConfig) -> anyhow::Result<Vec<u8>> {
    if let Some(s) = &config.jwt_secret {
        return Ok(s.as_bytes().to_vec());
    }
    let path = config.data_dir.join("dev-jwt-secret");
    match std::fs::read(&path) {
        Ok(s) if !s.is_empty() => Ok(s),
        _ => {
            let secret: String = (0..32)
                .map(|_| format!("{:02x}", rand::random::<u8>()))
                .collect();
            std::fs::write(&path, &secret)
                .with_context(|| format!("cannot write {}", path.display()))?;
            Ok(secret.into_bytes())
        }
    }
}

/// Opens the embedded backends, binds every listener and starts every service.
pub async fn start(config: TerndConfig) -> anyhow::Result<Running> {
    std::fs::create_dir_all(&config.data_dir)
        .with_context(|| format!("cannot create data directory {}", config.data_dir.display()))?;
    let in_use = || format!("is another ternd using {}?", config.data_dir.display());
    let log: Arc<dyn EventLog> = Arc::new(
        EmbeddedLog::open(&EmbeddedLogConfig {
            path: EmbeddedLog::path_in(&config.data_dir),
            partitions: config.log_partitions,
            cache_bytes: config.cache_mib << 20 >> 2,
        })
        .with_context(in_use)?,
    );
    let store: Arc<dyn MessageStore> = Arc::new(
        EmbeddedStore::open(&config.data_dir.join("store.redb"), config.cache_mib << 20)
            .with_context(in_use)?,
    );
    let routes: Arc<dyn RouteDirectory> = Arc::new(MemoryRoutes::new());
    let auth = TokenAuthority::new(token_secret(&config)?);

    let gateway = Gateway::bind(
        config.gateway.clone(),
        GatewayDeps {
            log: log.clone(),
            store: store.clone(),
            routes: routes.clone(),
            auth: auth.clone(),
        },
    )
    .await?;
    let mut ingest_config = config.ingest.clone();
    ingest_config.dev_mode = config.dev_mode;
    let ingest = Ingest::bind(
        ingest_config.clone(),
        IngestDeps {
            log: log.clone(),
            store: store.clone(),
            auth,
        },
    )
    .await
    .with_context(|| format!("cannot listen on {}", ingest_config.listen))?;

    let (shutdown, rx) = watch::channel(false);
    let running_addrs = (gateway.tcp_addr(), gateway.ws_addr(), ingest.local_addr());
    let mut tasks = JoinSet::new();
    let persister = Persister::new(log.clone(), store.clone());
    let r = rx.clone();
    tasks.spawn(async move { ("persister", persister.run(r).await.map_err(Into::into)) });
    let router = Router::new(log.clone(), store.clone(), routes.clone());
    let r = rx.clone();
    tasks.spawn(async move { ("router", router.run(r).await.map_err(Into::into)) });
    let r = rx.clone();
    tasks.spawn(async move { ("gateway", gateway.run(r).await.map_err(Into::into)) });
    let r = rx.clone();
    tasks.spawn(async move { ("api", ingest.run(r).await.map_err(|e| anyhow::anyhow!(e))) });

    let (tcp_addr, ws_addr, api_addr) = running_addrs;
    tracing::info!(%tcp_addr, %ws_addr, %api_addr, data_dir = %config.data_dir.display(), dev_mode = config.dev_mode, "ternd started");
    Ok(Running {
        tcp_addr,
        ws_addr,
        api_addr,
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

    /// Stops accepting, tells clients to reconnect, stops the stages.
    pub async fn shutdown(mut self) -> anyhow::Result<()> {
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
