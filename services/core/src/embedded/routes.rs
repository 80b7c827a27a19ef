//! [`RouteDirectory`] in memory: enough for one process, where every route
//! points at the one local gateway and is rebuilt by logins after a restart.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use async_trait::async_trait;

use crate::routes::{Route, RouteDirectory, RouteError};
use crate::sync;

/// device → (gateway, expiry) of one user.
type Devices = HashMap<String, (String, Instant)>;
/// gateway → (viewers, when the report lapses) of one room.
type RoomReports = HashMap<String, (u64, Instant)>;

#[derive(Default)]
pub struct MemoryRoutes {
    /// user → their devices' routes.
    routes: Mutex<HashMap<String, Devices>>,
    /// gateway → when its liveness lapses.
    gateways: Mutex<HashMap<String, Instant>>,
    /// room → gateway → (viewers, when the report lapses).
    rooms: Mutex<HashMap<String, RoomReports>>,
}

impl MemoryRoutes {
    pub fn new() -> Self {
        Self::default()
    }
}

#[async_trait]
impl RouteDirectory for MemoryRoutes {
    async fn register(&self, route: &Route, ttl: Duration) -> Result<bool, RouteError> {
        let now = Instant::now();
        let mut routes = sync::lock(&self.routes);
        // Routes of users who never came back would otherwise stay forever.
        if routes.len() % 1024 == 1023 {
            routes.retain(|_, devices| {
                devices.retain(|_, (_, expires)| *expires > now);
                !devices.is_empty()
            });
        }
        let previous = routes
            .entry(route.user.clone())
            .or_default()
            .insert(route.device.clone(), (route.gateway.clone(), now + ttl));
        Ok(!previous.is_some_and(|(gw, expires)| gw == route.gateway && expires > now))
    }

    async fn unregister(&self, route: &Route) -> Result<(), RouteError> {
        let mut routes = sync::lock(&self.routes);
        if let Some(devices) = routes.get_mut(&route.user) {
            if devices
                .get(&route.device)
                .is_some_and(|(gw, _)| *gw == route.gateway)
            {
                devices.remove(&route.device);
            }
            if devices.is_empty() {
                routes.remove(&route.user);
            }
        }
        Ok(())
    }

    async fn lookup(&self, users: &[String]) -> Result<HashMap<String, Vec<Route>>, RouteError> {
        let now = Instant::now();
        let routes = sync::lock(&self.routes);
        let mut out = HashMap::new();
        for user in users {
            let Some(devices) = routes.get(user) else {
                continue;
            };
            let live: Vec<Route> = devices
                .iter()
                .filter(|(_, (_, expires))| *expires > now)
                .map(|(device, (gateway, _))| Route {
                    user: user.clone(),
                    device: device.clone(),
                    gateway: gateway.clone(),
                })
                .collect();
            if !live.is_empty() {
                out.insert(user.clone(), live);
            }
        }
        Ok(out)
    }

    async fn gateway_alive(&self, gateway: &str, ttl: Duration) -> Result<(), RouteError> {
        sync::lock(&self.gateways).insert(gateway.to_owned(), Instant::now() + ttl);
        Ok(())
    }

    async fn dead_gateways(&self) -> Result<Vec<String>, RouteError> {
        let now = Instant::now();
        let gateways = sync::lock(&self.gateways);
        Ok(gateways
            .iter()
            .filter(|(_, until)| **until <= now)
            .map(|(g, _)| g.clone())
            .collect())
    }

    async fn remove_gateway(&self, gateway: &str) -> Result<usize, RouteError> {
        let mut removed = 0;
        let mut routes = sync::lock(&self.routes);
        routes.retain(|_, devices| {
            let before = devices.len();
            devices.retain(|_, (gw, _)| gw != gateway);
            removed += before - devices.len();
            !devices.is_empty()
        });
        sync::lock(&self.gateways).remove(gateway);
        Ok(removed)
    }

    async fn report_room_viewers(
        &self,
        gateway: &str,
        counts: &[(String, u64)],
        ttl: Duration,
    ) -> Result<(), RouteError> {
        let now = Instant::now();
        let mut rooms = sync::lock(&self.rooms);
        for (room, viewers) in counts {
            let by_gateway = rooms.entry(room.clone()).or_default();
            by_gateway.retain(|_, (_, until)| *until > now);
            if *viewers == 0 {
                by_gateway.remove(gateway);
            } else {
                by_gateway.insert(gateway.to_owned(), (*viewers, now + ttl));
            }
            if by_gateway.is_empty() {
                rooms.remove(room);
            }
        }
        Ok(())
    }

    async fn room_viewers(&self, rooms: &[String]) -> Result<HashMap<String, u64>, RouteError> {
        let now = Instant::now();
        let known = sync::lock(&self.rooms);
        Ok(rooms
            .iter()
            .filter_map(|room| {
                let n: u64 = known
                    .get(room)?
                    .values()
                    .filter(|(_, until)| *until > now)
                    .map(|(n, _)| n)
                    .sum();
                (n > 0).then(|| (room.clone(), n))
            })
            .collect())
    }
}
