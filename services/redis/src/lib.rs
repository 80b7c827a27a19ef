//! tern-redis: the route directory on Redis.
//!
//! Layout (every key under a configurable prefix, `tern:` by default):
//! - `{p}r:{user}` — hash, device → `gateway|expires_at_ms`. The key itself
//!   expires with the newest route; each field carries its own expiry
//!   (Redis 7.0 has no per-field TTL), checked on lookup. A lookup of many
//!   users is one pipelined round trip of HGETALLs.
//! - `{p}gw:{gateway}` — set of `user|device` the gateway registered, so a
//!   gateway's routes can be removed when it shuts down or dies.
//! - `{p}alive:{gateway}` — present while the gateway renews its liveness.
//! - `{p}gateways` — every gateway that registered routes, for the sweeper.
//! - `{p}room:{room}` — hash, gateway → `viewers|expires_at_ms`, the viewer
//!   counts each gateway reports; lapsed fields are ignored on read and the
//!   key expires with the newest report.
//!
//! Nothing here is the only copy of anything: after a Redis restart, routes
//! come back with the next heartbeat of each connection.

use std::collections::HashMap;
use std::time::Duration;

use async_trait::async_trait;
use redis::aio::ConnectionManager;
use tern_core::routes::{Route, RouteDirectory, RouteError};

/// Removes a device's route only if it still points at the given gateway,
/// atomically (one key, so it is also safe on Redis Cluster).
const UNREGISTER: &str = r#"
local v = redis.call('HGET', KEYS[1], ARGV[1])
if v and string.sub(v, 1, string.len(ARGV[2]) + 1) == ARGV[2] .. '|' then
  redis.call('HDEL', KEYS[1], ARGV[1])
  return 1
end
return 0
"#;

/// Sets a device's route and says whether it was missing before (absent,
/// expired, or on another gateway): then the device may have missed pushes.
/// KEYS[1] = user hash; ARGV = device, gateway, now_ms, ttl_ms.
const REGISTER: &str = r#"
local old = redis.call('HGET', KEYS[1], ARGV[1])
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2] .. '|' .. (tonumber(ARGV[3]) + tonumber(ARGV[4])))
redis.call('PEXPIRE', KEYS[1], ARGV[4])
if not old then return 1 end
local sep = string.find(old, '|', 1, true)
if not sep then return 1 end
local gw = string.sub(old, 1, sep - 1)
local expires = tonumber(string.sub(old, sep + 1))
if gw ~= ARGV[2] or not expires or expires <= tonumber(ARGV[3]) then return 1 end
return 0
"#;

#[derive(Debug, Clone)]
pub struct RedisRoutesConfig {
    /// `redis://host:port/db`
    pub url: String,
    /// Prefix of every key, so several deployments can share one Redis.
    pub prefix: String,
    /// How long to wait for a connection or a reply before failing a call.
    pub timeout: Duration,
}

impl RedisRoutesConfig {
    pub fn new(url: impl Into<String>) -> Self {
        RedisRoutesConfig {
            url: url.into(),
            prefix: "tern:".into(),
            timeout: Duration::from_secs(2),
        }
    }
}

#[derive(Clone)]
pub struct RedisRoutes {
    conn: ConnectionManager,
    prefix: String,
}

fn unavailable(url: &str) -> impl Fn(redis::RedisError) -> RouteError + '_ {
    move |e| RouteError::Unavailable(format!("Redis at {url}: {e}"))
}

fn now_ms() -> u64 {
    tern_core::now_ms()
}

impl RedisRoutes {
    /// Connects (and fails with a clear error if Redis does not answer).
    pub async fn connect(config: &RedisRoutesConfig) -> Result<Self, RouteError> {
        let url = config.url.as_str();
        let client = redis::Client::open(url).map_err(unavailable(url))?;
        let manager_config = redis::aio::ConnectionManagerConfig::new()
            .set_connection_timeout(Some(config.timeout))
            .set_response_timeout(Some(config.timeout))
            .set_number_of_retries(2);
        let conn = client
            .get_connection_manager_with_config(manager_config)
            .await
            .map_err(unavailable(url))?;
        Ok(RedisRoutes {
            conn,
            prefix: config.prefix.clone(),
        })
    }

    fn user_key(&self, user: &str) -> String {
        format!("{}r:{user}", self.prefix)
    }

    fn gateway_key(&self, gateway: &str) -> String {
        format!("{}gw:{gateway}", self.prefix)
    }

    fn alive_key(&self, gateway: &str) -> String {
        format!("{}alive:{gateway}", self.prefix)
    }

    fn room_key(&self, room: &str) -> String {
        format!("{}room:{room}", self.prefix)
    }

    fn gateways_key(&self) -> String {
        format!("{}gateways", self.prefix)
    }

    fn err(&self) -> impl Fn(redis::RedisError) -> RouteError {
        |e| RouteError::Unavailable(format!("Redis: {e}"))
    }
}

/// Splits `gateway|expires_ms`.
fn parse_route(v: &str) -> Option<(&str, u64)> {
    let (gw, exp) = v.rsplit_once('|')?;
    Some((gw, exp.parse().ok()?))
}

#[async_trait]
impl RouteDirectory for RedisRoutes {
    async fn register(&self, route: &Route, ttl: Duration) -> Result<bool, RouteError> {
        let ttl_ms = ttl.as_millis() as u64;
        let mut conn = self.conn.clone();
        let (was_missing,): (i64,) = redis::pipe()
            .cmd("EVAL")
            .arg(REGISTER)
            .arg(1)
            .arg(self.user_key(&route.user))
            .arg(&route.device)
            .arg(&route.gateway)
            .arg(now_ms())
            .arg(ttl_ms)
            .sadd(
                self.gateway_key(&route.gateway),
                format!("{}|{}", route.user, route.device),
            )
            .ignore()
            .sadd(self.gateways_key(), &route.gateway)
            .ignore()
            .query_async(&mut conn)
            .await
            .map_err(self.err())?;
        Ok(was_missing == 1)
    }

    async fn unregister(&self, route: &Route) -> Result<(), RouteError> {
        let mut conn = self.conn.clone();
        redis::pipe()
            .cmd("EVAL")
            .arg(UNREGISTER)
            .arg(1)
            .arg(self.user_key(&route.user))
            .arg(&route.device)
            .arg(&route.gateway)
            .ignore()
            .srem(
                self.gateway_key(&route.gateway),
                format!("{}|{}", route.user, route.device),
            )
            .ignore()
            .query_async::<()>(&mut conn)
            .await
            .map_err(self.err())
    }

    async fn lookup(&self, users: &[String]) -> Result<HashMap<String, Vec<Route>>, RouteError> {
        if users.is_empty() {
            return Ok(HashMap::new());
        }
        let mut pipe = redis::pipe();
        for user in users {
            pipe.hgetall(self.user_key(user));
        }
        let mut conn = self.conn.clone();
        let replies: Vec<HashMap<String, String>> =
            pipe.query_async(&mut conn).await.map_err(self.err())?;
        let now = now_ms();
        let mut out = HashMap::new();
        for (user, devices) in users.iter().zip(replies) {
            let live: Vec<Route> = devices
                .iter()
                .filter_map(|(device, v)| {
                    let (gateway, expires) = parse_route(v)?;
                    (expires > now).then(|| Route {
                        user: user.clone(),
                        device: device.clone(),
                        gateway: gateway.to_owned(),
                    })
                })
                .collect();
            if !live.is_empty() {
                out.insert(user.clone(), live);
            }
        }
        Ok(out)
    }

    async fn gateway_alive(&self, gateway: &str, ttl: Duration) -> Result<(), RouteError> {
        let mut conn = self.conn.clone();
        redis::pipe()
            .pset_ex(self.alive_key(gateway), now_ms(), ttl.as_millis() as u64)
            .ignore()
            .sadd(self.gateways_key(), gateway)
            .ignore()
            .query_async::<()>(&mut conn)
            .await
            .map_err(self.err())
    }

    async fn dead_gateways(&self) -> Result<Vec<String>, RouteError> {
        let mut conn = self.conn.clone();
        let gateways: Vec<String> = redis::cmd("SMEMBERS")
            .arg(self.gateways_key())
            .query_async(&mut conn)
            .await
            .map_err(self.err())?;
        if gateways.is_empty() {
            return Ok(Vec::new());
        }
        let mut pipe = redis::pipe();
        for g in &gateways {
            pipe.exists(self.alive_key(g));
        }
        let alive: Vec<bool> = pipe.query_async(&mut conn).await.map_err(self.err())?;
        Ok(gateways
            .into_iter()
            .zip(alive)
            .filter(|(_, a)| !a)
            .map(|(g, _)| g)
            .collect())
    }

    async fn remove_gateway(&self, gateway: &str) -> Result<usize, RouteError> {
        let mut conn = self.conn.clone();
        let members: Vec<String> = redis::cmd("SMEMBERS")
            .arg(self.gateway_key(gateway))
            .query_async(&mut conn)
            .await
            .map_err(self.err())?;
        let mut pipe = redis::pipe();
        let mut asked = 0;
        for m in &members {
            let Some((user, device)) = m.split_once('|') else {
                continue;
            };
            pipe.cmd("EVAL")
                .arg(UNREGISTER)
                .arg(1)
                .arg(self.user_key(user))
                .arg(device)
                .arg(gateway);
            asked += 1;
        }
        let removed: Vec<i64> = if asked > 0 {
            pipe.query_async(&mut conn).await.map_err(self.err())?
        } else {
            Vec::new()
        };
        redis::pipe()
            .del(self.gateway_key(gateway))
            .ignore()
            .del(self.alive_key(gateway))
            .ignore()
            .srem(self.gateways_key(), gateway)
            .ignore()
            .query_async::<()>(&mut conn)
            .await
            .map_err(self.err())?;
        Ok(removed.into_iter().filter(|r| *r == 1).count())
    }

    async fn report_room_viewers(
        &self,
        gateway: &str,
        counts: &[(String, u64)],
        ttl: Duration,
    ) -> Result<(), RouteError> {
        if counts.is_empty() {
            return Ok(());
        }
        let ttl_ms = ttl.as_millis() as u64;
        let expires = now_ms() + ttl_ms;
        let mut pipe = redis::pipe();
        for (room, viewers) in counts {
            let key = self.room_key(room);
            if *viewers == 0 {
                pipe.hdel(&key, gateway).ignore();
            } else {
                // The key lives as long as its longest report: NX sets an
                // expiry on a new key, GT only ever extends it.
                pipe.hset(&key, gateway, format!("{viewers}|{expires}"))
                    .ignore()
                    .cmd("PEXPIRE")
                    .arg(&key)
                    .arg(ttl_ms)
                    .arg("NX")
                    .ignore()
                    .cmd("PEXPIRE")
                    .arg(&key)
                    .arg(ttl_ms)
                    .arg("GT")
                    .ignore();
            }
        }
        let mut conn = self.conn.clone();
        pipe.query_async::<()>(&mut conn).await.map_err(self.err())
    }

    async fn room_viewers(&self, rooms: &[String]) -> Result<HashMap<String, u64>, RouteError> {
        if rooms.is_empty() {
            return Ok(HashMap::new());
        }
        let mut pipe = redis::pipe();
        for room in rooms {
            pipe.hgetall(self.room_key(room));
        }
        let mut conn = self.conn.clone();
        let replies: Vec<HashMap<String, String>> =
            pipe.query_async(&mut conn).await.map_err(self.err())?;
        let now = now_ms();
        Ok(rooms
            .iter()
            .zip(replies)
            .filter_map(|(room, by_gateway)| {
                let n: u64 = by_gateway
                    .values()
                    .filter_map(|v| {
                        let (n, expires) = v.split_once('|')?;
                        let expires: u64 = expires.parse().ok()?;
                        (expires > now).then(|| n.parse::<u64>().ok()).flatten()
                    })
                    .sum();
                (n > 0).then(|| (room.clone(), n))
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn route_values_parse() {
        assert_eq!(super::parse_route("gw-1|123"), Some(("gw-1", 123)));
        assert_eq!(super::parse_route("gw|x"), None);
        assert_eq!(super::parse_route("nope"), None);
    }
}
