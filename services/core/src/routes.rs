//! The route directory boundary: which gateway holds a user's device, and
//! how many viewers each gateway has in each live room.
//! Redis in production, [`crate::embedded::MemoryRoutes`] embedded. Nothing
//! here is the only copy of anything: a lost route means a push waits in the
//! inbox until the device reconnects.

use std::collections::HashMap;
use std::time::Duration;

use async_trait::async_trait;

#[derive(Debug, thiserror::Error)]
pub enum RouteError {
    #[error("route directory unavailable: {0}")]
    Unavailable(String),
}

/// One device of a user, connected to one gateway.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Route {
    pub user: String,
    pub device: String,
    pub gateway: String,
}

#[async_trait]
pub trait RouteDirectory: Send + Sync + 'static {
    /// Records (or renews) that `route.device` of `route.user` is on
    /// `route.gateway`, for `ttl`: a gateway that dies stops renewing.
    /// Returns true if the route was not there (new, expired, lost in a
    /// directory restart, or pointing elsewhere): pushes may have been
    /// missed meanwhile, so the device should catch up from its inbox.
    async fn register(&self, route: &Route, ttl: Duration) -> Result<bool, RouteError>;

    /// Removes the route, but only if it still points at `route.gateway`
    /// (the device may have moved to another gateway meanwhile).
    async fn unregister(&self, route: &Route) -> Result<(), RouteError>;

    /// The live routes of many users at once (one round trip on real
    /// backends). Users with no route are absent from the map.
    async fn lookup(&self, users: &[String]) -> Result<HashMap<String, Vec<Route>>, RouteError>;

    /// Says `gateway` is alive for `ttl`; a gateway renews this well within
    /// the TTL. One that stops (crash, lost host) becomes "dead" when it lapses.
    async fn gateway_alive(&self, gateway: &str, ttl: Duration) -> Result<(), RouteError>;

    /// Gateways that registered routes but whose liveness lapsed.
    async fn dead_gateways(&self) -> Result<Vec<String>, RouteError>;

    /// Removes every route still pointing at `gateway` (on its shutdown, or
    /// by a sweeper once it is dead) and forgets the gateway. Returns how
    /// many routes were removed.
    async fn remove_gateway(&self, gateway: &str) -> Result<usize, RouteError>;

    /// Reports how many viewers `gateway` has in each room of `counts`
    /// (0: none any more), valid for `ttl`: a gateway that dies stops
    /// counting once its reports lapse.
    async fn report_room_viewers(
        &self,
        gateway: &str,
        counts: &[(String, u64)],
        ttl: Duration,
    ) -> Result<(), RouteError>;

    /// Viewers of each room, summed over the gateways whose reports have
    /// not lapsed (one round trip). Rooms nobody watches are absent.
    async fn room_viewers(&self, rooms: &[String]) -> Result<HashMap<String, u64>, RouteError>;
}

/// Removes the routes of every dead gateway; returns the gateways swept.
/// Any process may run this periodically: it is idempotent.
pub async fn sweep_dead_gateways(routes: &dyn RouteDirectory) -> Result<Vec<String>, RouteError> {
    let dead = routes.dead_gateways().await?;
    for gw in &dead {
        let removed = routes.remove_gateway(gw).await?;
        tracing::info!(gateway = %gw, routes = removed, "swept the routes of a dead gateway");
    }
    Ok(dead)
}
