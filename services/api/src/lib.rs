//! tern-api: the server-side gRPC APIs, on two listeners.
//!
//! - The **user API** (`api_listen`): what apps and the `tern` CLI call.
//!   Every call needs a login token and acts as its user; in dev mode
//!   anyone can get a token ([`accounts`]).
//! - The **back-end API** (`backend_listen`, loopback by default): for the
//!   application's own servers. Every call needs the back-end token; calls
//!   act for any user (send as a system user or bot, read any inbox,
//!   administer groups, post to rooms, revoke tokens). The archive
//!   administration (admin token) is served there too.
//!
//! Who may call what is decided in one place, [`authz`]; what a caller may
//! then do is `tern-chat`'s rule, shared with the gateway. Both listeners
//! bound the calls in progress and each call's time.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tern_chat::access::{Actor, GroupLimits};
use tern_chat::limits::{CostlyRates, CostlyRequests, KeyedLimiter, Rate};
use tern_core::auth::TokenAuthority;
use tern_core::log::EventLog;
use tern_core::proto::api::archive_admin_server::ArchiveAdminServer;
use tern_core::proto::api::backend_api_server::BackendApiServer;
use tern_core::proto::api::user_api_server::UserApiServer;
use tern_core::stage::stopped;
use tern_core::store::MessageStore;
use tern_core::topics;
use tokio::net::TcpListener;
use tokio::sync::watch;

mod accounts;
mod archive;
mod authz;
mod backend_api;
mod error;
mod groups;
pub mod metrics;
mod reading;
mod send;
mod user_api;

pub use accounts::MAX_DEV_TOKEN_TTL;
pub use error::ApiError;

/// Calls one client connection may have in progress (HTTP/2 streams).
const CALLS_PER_CONNECTION: usize = 32;

/// Largest request the user API reads: its calls carry ids, not bodies.
const MAX_USER_REQUEST: usize = 64 * 1024;

#[derive(Debug, Clone)]
pub struct ApiConfig {
    /// Identity of this node: receipts come back on `push.<node_id>`.
    pub node_id: String,
    /// The user API.
    pub listen: SocketAddr,
    /// The back-end API and the archive administration; None: not served.
    pub backend_listen: Option<SocketAddr>,
    /// The credential of the back-end API; None turns its calls away.
    pub backend_token: Option<tern_core::secret::Secret>,
    pub max_body_bytes: usize,
    /// A send with no receipt after this long fails with UNAVAILABLE.
    pub receipt_timeout: Duration,
    /// Issue tokens to anyone who asks (development only).
    pub dev_mode: bool,
    /// Lifetime of a dev token when the caller asks for none (at most 24 h).
    pub dev_token_ttl: Duration,
    /// The credential of the archive administration calls; None turns them off.
    pub admin_token: Option<tern_core::secret::Secret>,
    pub group_limits: GroupLimits,
    /// Groups one user may create, per API node.
    pub group_creations: Rate,
    /// Account changes (block, log out) and list reads of one user, per
    /// API node.
    pub costly: CostlyRates,
    /// Which live rooms a user may ask about (their viewer counts).
    pub room_policy: tern_chat::rooms::RoomPolicy,
    /// Calls in progress at once, per listener; more wait their turn.
    pub concurrency: usize,
    /// A call (waiting for its turn included) taking longer is cancelled.
    pub call_timeout: Duration,
}

impl Default for ApiConfig {
    fn default() -> Self {
        ApiConfig {
            node_id: "api-local".into(),
            listen: SocketAddr::from(([127, 0, 0, 1], 7402)),
            backend_listen: Some(SocketAddr::from(([127, 0, 0, 1], 7404))),
            backend_token: None,
            max_body_bytes: 64 * 1024,
            receipt_timeout: Duration::from_secs(10),
            dev_mode: false,
            dev_token_ttl: MAX_DEV_TOKEN_TTL,
            admin_token: None,
            group_limits: GroupLimits::default(),
            group_creations: Rate::per_hour(30),
            costly: CostlyRates::default(),
            room_policy: Default::default(),
            concurrency: 256,
            call_timeout: Duration::from_secs(30),
        }
    }
}

#[derive(Clone)]
pub struct ApiDeps {
    pub log: Arc<dyn EventLog>,
    pub store: Arc<dyn MessageStore>,
    /// For room viewer counts.
    pub routes: Arc<dyn tern_core::routes::RouteDirectory>,
    pub auth: TokenAuthority,
    /// The compliance archive, for the ArchiveAdmin calls.
    pub archive: Option<tern_archive::Archive>,
}

/// What every call shares.
#[derive(Clone)]
pub(crate) struct Api {
    config: Arc<ApiConfig>,
    deps: ApiDeps,
    waiters: Arc<send::Waiters>,
    /// Group creations per user (this node's share of the limit).
    group_creations: Arc<Mutex<KeyedLimiter<String>>>,
    costly: Arc<CostlyRequests>,
}

pub struct ApiServer {
    api: Api,
    listener: TcpListener,
    /// The user API's address, read once at bind (port 0 resolved).
    local_addr: SocketAddr,
    /// The back-end API's listener and address, if served.
    backend: Option<(TcpListener, SocketAddr)>,
}

impl Api {
    /// Takes one of a user's costly requests (`change` or a list read);
    /// the back end is not limited.
    pub(crate) fn costly(&self, actor: &Actor, change: bool) -> Result<(), ApiError> {
        let tern_chat::access::Actor::User(user) = actor else {
            return Ok(());
        };
        let now = tokio::time::Instant::now().into_std();
        let taken = if change {
            self.costly.change(user, now)
        } else {
            self.costly.list(user, now)
        };
        taken.map_err(|r| {
            crate::metrics::API_LIMITED.inc(if change {
                "account_changes"
            } else {
                "list_reads"
            });
            r.into()
        })
    }
}

impl ApiServer {
    pub async fn bind(config: ApiConfig, deps: ApiDeps) -> std::io::Result<Self> {
        let listener = TcpListener::bind(config.listen).await?;
        let local_addr = listener.local_addr()?;
        let backend = match config.backend_listen {
            Some(addr) => {
                let backend = TcpListener::bind(addr).await?;
                let backend_addr = backend.local_addr()?;
                Some((backend, backend_addr))
            }
            None => None,
        };
        Ok(ApiServer {
            api: Api {
                group_creations: Arc::new(Mutex::new(KeyedLimiter::new(config.group_creations))),
                costly: Arc::new(CostlyRequests::new(config.costly)),
                config: Arc::new(config),
                deps,
                waiters: Default::default(),
            },
            listener,
            local_addr,
            backend,
        })
    }

    /// The user API's address.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The back-end API's address, if served.
    pub fn backend_addr(&self) -> Option<SocketAddr> {
        self.backend.as_ref().map(|(_, addr)| *addr)
    }

    /// Serves until `shutdown` turns true.
    pub async fn run(
        self,
        shutdown: watch::Receiver<bool>,
    ) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
        let ApiServer {
            api,
            listener,
            backend,
            ..
        } = self;
        let node = api.config.node_id.clone();
        let sub =
            // The consumer group keeps its name from before the API was
            // renamed, so an upgraded node resumes it.
            topics::subscribe_push_topic(api.deps.log.as_ref(), &node, &format!("ingest.{node}"))
                .await?;
        let receipts = tokio::spawn(send::receive_receipts(api.clone(), sub, shutdown.clone()));
        let config = api.config.clone();
        // The gate first, then a place among the calls in progress.
        let server = |gate: authz::Gate| {
            tonic::transport::Server::builder()
                .timeout(config.call_timeout)
                .concurrency_limit_per_connection(CALLS_PER_CONNECTION)
                .max_concurrent_streams(CALLS_PER_CONNECTION as u32)
                .layer(tonic::service::InterceptorLayer::new(gate))
                .layer(tower::limit::GlobalConcurrencyLimitLayer::new(
                    config.concurrency,
                ))
        };
        let user_gate = authz::Gate::User {
            auth: api.deps.auth.clone(),
            dev_mode: config.dev_mode,
        };
        let backend_gate = authz::Gate::Backend {
            auth: api.deps.auth.clone(),
            tokens: [&config.backend_token, &config.admin_token]
                .into_iter()
                .flatten()
                .map(|t| t.expose().to_owned())
                .collect(),
        };
        let mut signal = shutdown.clone();
        let user_api = server(user_gate)
            .add_service(
                UserApiServer::new(authz::UserService(api.clone()))
                    .max_decoding_message_size(MAX_USER_REQUEST),
            )
            .serve_with_incoming_shutdown(
                tonic::transport::server::TcpIncoming::from(listener),
                async move { stopped(&mut signal).await },
            );
        let backend_api = backend.map(|(listener, _)| {
            let mut signal = shutdown.clone();
            let archive_admin = archive::ArchiveAdminService::new(
                api.deps.archive.clone(),
                api.config.admin_token.clone(),
                api.deps.auth.clone(),
            );
            server(backend_gate)
                .add_service(ArchiveAdminServer::new(archive_admin))
                .add_service(
                    BackendApiServer::new(authz::BackendService(api.clone()))
                        .max_decoding_message_size(api.config.max_body_bytes + MAX_USER_REQUEST),
                )
                .serve_with_incoming_shutdown(
                    tonic::transport::server::TcpIncoming::from(listener),
                    async move { stopped(&mut signal).await },
                )
        });
        match backend_api {
            Some(backend_api) => {
                let (a, b) = tokio::join!(user_api, backend_api);
                a?;
                b?;
            }
            None => user_api.await?,
        }
        receipts.await??;
        Ok(())
    }
}
