//! tern-gateway: holds the clients' long-lived connections.
//!
//! - Accepts TCP (length-prefixed frames) and WebSocket (one binary message
//!   per frame) connections that speak the same protobuf frames.
//! - On login, checks the token, registers user/device → this gateway in the
//!   route directory and keeps user → connections in memory ([`hub`]).
//! - Turns each `Send` into an `inbound` record and answers with the
//!   persister's receipt.
//! - Consumes its own push topic ([`pusher`]): inbox entries for its users,
//!   batched per connection over a short window, bodies fetched from the
//!   store, compressed when it pays, re-sent until ACKed ([`session`]).
//! - Reads every live room message and fans it out to its own viewers,
//!   merged and encoded once per batch ([`rooms`]).
//!
//! Every connection has a bounded outbound queue and a bounded mailbox: a
//! client that cannot keep up is disconnected with a reason instead of
//! growing the gateway's memory. A client that sends faster than its
//! replies drain, or than its limits allow, is read more slowly (TCP
//! backpressure) or told `RATE_LIMITED` ([`limits`]); what it may do is
//! decided by `tern-chat`, the rules the API shares.

mod bodies;
pub mod groups;
pub mod hub;
pub mod limits;
pub mod metrics;
pub mod pusher;
pub mod rooms;
pub mod session;
pub mod transport;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tern_core::auth::TokenAuthority;
use tern_core::log::EventLog;
use tern_core::routes::RouteDirectory;
use tern_core::stage::stopped;
use tern_core::store::MessageStore;
use tokio::net::TcpListener;
use tokio::sync::watch;

/// Everything a gateway can be told. `Default` is what `ternd` uses.
#[derive(Debug, Clone)]
pub struct GatewayConfig {
    /// Identity in the route directory and name of the push topic
    /// (`push.<node_id>`). Must be stable across restarts of this gateway.
    pub node_id: String,
    pub tcp_listen: SocketAddr,
    pub ws_listen: SocketAddr,
    /// Largest frame accepted or sent, in bytes.
    pub max_frame_bytes: usize,
    /// Largest message body accepted, in bytes.
    pub max_body_bytes: usize,
    /// How often clients are told to send heartbeats.
    pub heartbeat_interval: Duration,
    /// A connection with no frame for this long is closed.
    pub idle_timeout: Duration,
    /// A connection that has not logged in after this long is closed.
    pub login_timeout: Duration,
    /// Lifetime of a route in the directory; renewed by heartbeats.
    pub route_ttl: Duration,
    /// New inbox entries for a connection are merged for this long before
    /// one push frame goes out.
    pub push_window: Duration,
    /// Most messages in one push frame.
    pub push_max_messages: usize,
    /// Most bytes of messages in one push frame (the frame limit, less room
    /// for the frame around them, caps it too).
    pub push_max_bytes: usize,
    /// An un-ACKed push is re-sent after this long.
    pub ack_timeout: Duration,
    /// Most un-ACKed push frames per connection; past it, new messages wait
    /// in the inbox until the client ACKs.
    pub max_unacked_pushes: usize,
    /// Frames queued for one connection's socket; a full queue disconnects
    /// the client as too slow.
    pub outbound_queue: usize,
    /// Events queued for one connection's session (pushes, receipts).
    pub mailbox: usize,
    /// Payloads smaller than this are not compressed.
    pub compress_min_bytes: usize,
    /// A send with no receipt after this long is answered UNAVAILABLE.
    pub receipt_timeout: Duration,
    /// Sends of one connection waiting for their receipt.
    pub max_sends_in_flight: usize,
    /// A socket write that takes longer than this drops the connection.
    pub write_timeout: Duration,
    /// Room messages are merged this long before one batch goes to every
    /// viewer (zero: as they arrive).
    pub room_window: Duration,
    /// Room batches queued per viewer; past it the viewer loses batches.
    pub room_queue: usize,
    /// How often viewer counts are reported to the route directory.
    pub room_report_every: Duration,
    /// With more pending messages than this at login, only the newest this
    /// many are pushed; older ones are read through history pages (0: push
    /// everything).
    pub login_push_max: usize,
    /// In that case, at most this many of one conversation (so one busy
    /// group does not crowd out every other conversation).
    pub login_push_per_conversation: usize,
    /// Inbox bounds, applied at each login (and by the router as inboxes
    /// grow); a device behind the trim point gets a gap marker.
    pub inbox_retention: tern_core::store::InboxRetention,
    /// Message bodies kept in memory for pushes and pages (shared by all
    /// sessions: a group message is read from the store once per gateway).
    pub body_cache_entries: usize,
    /// Which live rooms a login may join and post to.
    pub room_policy: tern_chat::rooms::RoomPolicy,
    /// Rate and connection limits.
    pub limits: limits::LimitsConfig,
}

impl Default for GatewayConfig {
    fn default() -> Self {
        GatewayConfig {
            node_id: "gw-local".into(),
            tcp_listen: SocketAddr::from(([127, 0, 0, 1], 7400)),
            ws_listen: SocketAddr::from(([127, 0, 0, 1], 7401)),
            max_frame_bytes: tern_wire::DEFAULT_MAX_FRAME,
            max_body_bytes: 64 * 1024,
            heartbeat_interval: Duration::from_secs(15),
            idle_timeout: Duration::from_secs(45),
            login_timeout: Duration::from_secs(10),
            route_ttl: Duration::from_secs(90),
            push_window: Duration::from_millis(2),
            push_max_messages: 500,
            push_max_bytes: 256 * 1024,
            ack_timeout: Duration::from_secs(5),
            max_unacked_pushes: 16,
            outbound_queue: 64,
            mailbox: 1024,
            compress_min_bytes: tern_wire::DEFAULT_COMPRESS_MIN,
            receipt_timeout: Duration::from_secs(10),
            max_sends_in_flight: 256,
            write_timeout: Duration::from_secs(10),
            room_window: Duration::from_millis(20),
            room_queue: 32,
            room_report_every: Duration::from_secs(5),
            login_push_max: 500,
            login_push_per_conversation: 100,
            inbox_retention: Default::default(),
            body_cache_entries: 10_000,
            room_policy: Default::default(),
            limits: Default::default(),
        }
    }
}

/// The backends a gateway talks to.
#[derive(Clone)]
pub struct GatewayDeps {
    pub log: Arc<dyn EventLog>,
    pub store: Arc<dyn MessageStore>,
    pub routes: Arc<dyn RouteDirectory>,
    pub auth: TokenAuthority,
}

/// What every connection of this gateway shares.
pub(crate) struct Shared {
    pub config: GatewayConfig,
    pub deps: GatewayDeps,
    pub hub: hub::Hub,
    pub rooms: rooms::Rooms,
    pub bodies: bodies::BodyCache,
    pub groups: groups::GroupMembers,
    pub limits: limits::Limits,
}

/// A gateway with its listeners bound (so callers can learn the ports).
pub struct Gateway {
    shared: Arc<Shared>,
    tcp: TcpListener,
    ws: TcpListener,
    /// The listeners' addresses, read once at bind (port 0 resolved).
    tcp_addr: SocketAddr,
    ws_addr: SocketAddr,
}

#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error(transparent)]
    Log(#[from] tern_core::log::LogError),
}

/// Binds `addr` and learns the address it got (port 0 resolved).
async fn listen(addr: SocketAddr) -> Result<(TcpListener, SocketAddr), GatewayError> {
    let bind_error = |source| GatewayError::Bind { addr, source };
    let listener = TcpListener::bind(addr).await.map_err(bind_error)?;
    let local = listener.local_addr().map_err(bind_error)?;
    Ok((listener, local))
}

impl Gateway {
    pub async fn bind(config: GatewayConfig, deps: GatewayDeps) -> Result<Self, GatewayError> {
        let (tcp, tcp_addr) = listen(config.tcp_listen).await?;
        let (ws, ws_addr) = listen(config.ws_listen).await?;
        Ok(Gateway {
            shared: Arc::new(Shared {
                bodies: bodies::BodyCache::new(config.body_cache_entries),
                limits: limits::Limits::new(config.limits),
                config,
                deps,
                hub: hub::Hub::new(),
                rooms: rooms::Rooms::default(),
                groups: groups::GroupMembers::default(),
            }),
            tcp,
            ws,
            tcp_addr,
            ws_addr,
        })
    }

    pub fn tcp_addr(&self) -> SocketAddr {
        self.tcp_addr
    }

    pub fn ws_addr(&self) -> SocketAddr {
        self.ws_addr
    }

    /// Serves until `shutdown` turns true; then tells every client to
    /// reconnect (GOING_AWAY) and removes its routes.
    pub async fn run(self, mut shutdown: watch::Receiver<bool>) -> Result<(), GatewayError> {
        let Gateway {
            shared, tcp, ws, ..
        } = self;
        let sub = pusher::subscribe(&shared).await?;
        let pusher = tokio::spawn(pusher::run(shared.clone(), sub, shutdown.clone()));
        let room_sub = rooms::subscribe(&shared).await?;
        let room_feed = tokio::spawn(rooms::run_feed(shared.clone(), room_sub, shutdown.clone()));
        let room_reports = tokio::spawn(rooms::report_viewers(shared.clone(), shutdown.clone()));
        let group_sub = groups::subscribe(&shared).await?;
        let group_feed = tokio::spawn(groups::run_feed(
            shared.clone(),
            group_sub,
            shutdown.clone(),
        ));
        let alive = tokio::spawn(keep_alive(shared.clone(), shutdown.clone()));
        let accept_tcp = tokio::spawn(accept_loop(
            shared.clone(),
            tcp,
            transport::Kind::Tcp,
            shutdown.clone(),
        ));
        let accept_ws = tokio::spawn(accept_loop(
            shared.clone(),
            ws,
            transport::Kind::WebSocket,
            shutdown.clone(),
        ));
        stopped(&mut shutdown).await;
        accept_tcp.abort();
        accept_ws.abort();
        shared.hub.kick_all(hub::Kick::GoingAway);
        // Give sessions a moment to write their last frame and unregister.
        for _ in 0..50 {
            if shared.hub.is_empty() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let _ = alive.await;
        let _ = room_feed.await;
        let _ = group_feed.await;
        let _ = room_reports.await;
        // This gateway's viewers are gone: withdraw its counts now rather
        // than when the reports lapse.
        let counts = shared.rooms.counts();
        let _ = shared
            .deps
            .routes
            .report_room_viewers(&shared.config.node_id, &counts, Duration::from_secs(1))
            .await;
        // Whatever a session could not remove goes now, and the gateway is forgotten.
        let node = &shared.config.node_id;
        match shared.deps.routes.remove_gateway(node).await {
            Ok(n) => tracing::info!(gateway = %node, leftover_routes = n, "gateway unregistered"),
            Err(e) => {
                tracing::warn!(gateway = %node, error = %e, "routes not removed; the sweeper will remove them")
            }
        }
        match pusher.await {
            Ok(result) => result?,
            Err(e) => tracing::error!(error = %e, "push consumer task failed"),
        }
        Ok(())
    }
}

/// Renews this gateway's liveness in the route directory three times per
/// route TTL; if the gateway dies, routers sweep its routes once it lapses.
async fn keep_alive(shared: Arc<Shared>, mut shutdown: watch::Receiver<bool>) {
    let ttl = shared.config.route_ttl;
    loop {
        if let Err(e) = shared
            .deps
            .routes
            .gateway_alive(&shared.config.node_id, ttl)
            .await
        {
            tracing::warn!(error = %e, "gateway liveness not renewed");
        }
        tokio::select! {
            _ = tokio::time::sleep(ttl / 3) => {}
            _ = stopped(&mut shutdown) => return,
        }
    }
}

async fn accept_loop(
    shared: Arc<Shared>,
    listener: TcpListener,
    kind: transport::Kind,
    shutdown: watch::Receiver<bool>,
) {
    let turning_away = Arc::new(tokio::sync::Semaphore::new(limits::MAX_TURNING_AWAY));
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(x) => x,
            Err(e) => {
                // Out of file descriptors and the like: back off instead of spinning.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let admitted = shared
            .limits
            .admit(peer.ip(), tokio::time::Instant::now().into_std());
        let place = match admitted {
            Ok(place) => place,
            Err(why) => {
                tracing::debug!(%peer, "connection turned away by a limit");
                if let Ok(permit) = turning_away.clone().try_acquire_owned() {
                    tokio::spawn(async move {
                        limits::turn_away(kind, stream, why).await;
                        drop(permit);
                    });
                }
                continue;
            }
        };
        let shared = shared.clone();
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            // Held while the connection lives: its address's place.
            let _place = place;
            let _ = stream.set_nodelay(true);
            // The WebSocket handshake counts against the login timeout: a
            // peer that connects and says nothing must not hold a task.
            let handshake = transport::open(kind, stream, shared.config.max_frame_bytes);
            match tokio::time::timeout(shared.config.login_timeout, handshake).await {
                Ok(Ok((reader, writer, budget))) => {
                    session::serve(shared, reader, writer, budget, peer, shutdown).await
                }
                Ok(Err(e)) => tracing::debug!(%peer, error = %e, "handshake failed"),
                Err(_) => tracing::debug!(%peer, "no handshake within the login timeout"),
            }
        });
    }
}
