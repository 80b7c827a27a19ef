//! The gateway's limits that span connections: connections per source
//! address and per user, new connections per address per second, and
//! sends per user per second (summed over the user's connections on this
//! gateway: a gateway cannot see the others, so a user connected to N
//! gateways may send N times the rate; deployments that need one global
//! budget put the rate in the application's auth server or a proxy).
//!
//! A connection refused at accept is told why in the cheapest way its
//! transport allows: one `Error` frame on TCP, an HTTP 429 on WebSocket
//! (the handshake is not even read), then closed.

use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::metrics;
use tern_chat::limits::{CostlyRates, CostlyRequests, CountGuard, Counts, KeyedLimiter, Rate};
use tern_core::proto::client::{Error as ErrorFrame, ErrorCode, server_frame};
use tern_core::sync;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::transport::Kind;

/// What the limits are set to (see `GatewayConfig`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LimitsConfig {
    /// Sends of one user per second on this gateway.
    pub sends: Rate,
    /// Frames one connection may send per second before reads slow down.
    pub frames: Rate,
    /// Connections of one user on this gateway (0: no bound).
    pub connections_per_user: usize,
    /// Connections from one address at once (0: no bound).
    pub connections_per_ip: usize,
    /// New connections from one address per second.
    pub new_connections_per_ip: Rate,
    /// Account changes and list reads of one user.
    pub costly: CostlyRates,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig {
            sends: Rate::per_second(20.0, 100),
            frames: Rate::per_second(100.0, 200),
            connections_per_user: 10,
            connections_per_ip: 500,
            new_connections_per_ip: Rate::per_second(20.0, 100),
            costly: CostlyRates::default(),
        }
    }
}

impl LimitsConfig {
    /// No limit at all (benchmarks, tests of other things).
    pub fn unlimited() -> Self {
        LimitsConfig {
            sends: Rate::UNLIMITED,
            frames: Rate::UNLIMITED,
            connections_per_user: 0,
            connections_per_ip: 0,
            new_connections_per_ip: Rate::UNLIMITED,
            costly: CostlyRates::UNLIMITED,
        }
    }
}

/// The state behind the limits, shared by the gateway's connections.
pub(crate) struct Limits {
    pub config: LimitsConfig,
    sends: Mutex<KeyedLimiter<String>>,
    new_connections: Mutex<KeyedLimiter<IpAddr>>,
    per_ip: Counts<IpAddr>,
    pub per_user: Counts<String>,
    pub costly: CostlyRequests,
}

/// Why a new connection is turned away.
pub(crate) struct Turned {
    code: ErrorCode,
    message: String,
    retry_after: Duration,
}

impl Limits {
    pub fn new(config: LimitsConfig) -> Self {
        Limits {
            sends: Mutex::new(KeyedLimiter::new(config.sends)),
            new_connections: Mutex::new(KeyedLimiter::new(config.new_connections_per_ip)),
            per_ip: Counts::default(),
            per_user: Counts::default(),
            costly: CostlyRequests::new(config.costly),
            config,
        }
    }

    /// A place for a new connection from `ip`, held until the guard drops.
    pub fn admit(&self, ip: IpAddr, now: Instant) -> Result<CountGuard<IpAddr>, Turned> {
        let ip = client_key(ip);
        let taken = sync::lock(&self.new_connections).take(&ip, now);
        if let Err(retry_after) = taken {
            metrics::GATEWAY_LIMITED.inc("new_connections_per_ip");
            return Err(Turned {
                code: ErrorCode::RateLimited,
                message: "too many new connections from this address; retry later".into(),
                retry_after,
            });
        }
        self.per_ip
            .try_acquire(&ip, self.config.connections_per_ip)
            .ok_or_else(|| {
                metrics::GATEWAY_LIMITED.inc("connections_per_ip");
                Turned {
                    code: ErrorCode::TooManyConnections,
                    message: format!(
                        "this address has {} connections open, the most allowed",
                        self.config.connections_per_ip
                    ),
                    retry_after: Duration::from_secs(1),
                }
            })
    }

    /// Takes one of `user`'s sends, or says when to retry.
    pub fn take_send(&self, user: &str, now: Instant) -> Result<(), Duration> {
        // Every send passes here: no lock shared by all connections when
        // there is no limit to keep.
        if self.config.sends.is_unlimited() {
            return Ok(());
        }
        let taken = sync::lock(&self.sends).take(user, now);
        if taken.is_err() {
            metrics::GATEWAY_LIMITED.inc("sends");
        }
        taken
    }
}

/// The address limits count by: an IPv4 address, or an IPv6 /64 (what one
/// subscriber usually gets: counting single IPv6 addresses would let one
/// machine take as many places as it has addresses).
fn client_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let s = v6.segments();
                IpAddr::V6(std::net::Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
            }
        },
        v4 => v4,
    }
}

/// Connections being told why they were turned away, at most this many at
/// once; past it, a refused connection is closed without a word (a flood
/// must not cost a task and a descriptor for two seconds each).
pub(crate) const MAX_TURNING_AWAY: usize = 256;

/// Tells a connection refused at accept why, then closes it: at most a
/// second of writing and a second of draining what it sent (so the close
/// does not reset the connection before the client reads the answer).
pub(crate) async fn turn_away(kind: Kind, mut stream: TcpStream, why: Turned) {
    let bytes = match kind {
        Kind::Tcp => {
            let frame = tern_wire::encode_server(server_frame::Kind::Error(ErrorFrame {
                code: why.code as i32,
                message: why.message,
                fatal: true,
                retry_after_ms: why.retry_after.as_millis() as u64,
                ..Default::default()
            }));
            let mut out = (frame.len() as u32).to_be_bytes().to_vec();
            out.extend_from_slice(&frame);
            out
        }
        Kind::WebSocket => format!(
            "HTTP/1.1 429 Too Many Requests\r\nRetry-After: {}\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{}",
            why.retry_after.as_secs().max(1),
            why.message.len(),
            why.message
        )
        .into_bytes(),
    };
    let second = Duration::from_secs(1);
    if tokio::time::timeout(second, stream.write_all(&bytes))
        .await
        .is_err()
    {
        return;
    }
    let _ = stream.shutdown().await;
    let mut sink = [0u8; 4096];
    let _ = tokio::time::timeout(second, async {
        while let Ok(n) = stream.read(&mut sink).await {
            if n == 0 {
                break;
            }
        }
    })
    .await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_ipv6_subscriber_counts_once_and_mapped_ipv4_as_ipv4() {
        let a: IpAddr = "2001:db8:1:2:aaaa::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:bbbb::9".parse().unwrap();
        assert_eq!(client_key(a), client_key(b));
        let mapped: IpAddr = "::ffff:192.0.2.7".parse().unwrap();
        assert_eq!(client_key(mapped), "192.0.2.7".parse::<IpAddr>().unwrap());
        let v4: IpAddr = "192.0.2.7".parse().unwrap();
        assert_eq!(client_key(v4), v4);
    }
}
