//! Server addresses: `tcp://host:port`, `ws://host:port/path`, or a bare
//! `host:port` meaning TCP.

use std::fmt;

use crate::ClientError;

/// Port a `tcp://` address without one gets: the gateway's default TCP port.
pub const DEFAULT_TCP_PORT: u16 = 7400;

/// Where a gateway listens, and which transport to speak to it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServerAddr {
    /// Length-prefixed frames over TCP; holds `host:port`.
    Tcp(String),
    /// One binary WebSocket message per frame; holds the whole `ws://` URL.
    WebSocket(String),
}

impl ServerAddr {
    pub fn parse(addr: &str) -> Result<ServerAddr, ClientError> {
        let bad = |reason: &str| ClientError::Address {
            addr: addr.to_string(),
            reason: reason.to_string(),
        };
        let trimmed = addr.trim();
        if trimmed.is_empty() {
            return Err(bad("it is empty"));
        }
        let Some((scheme, rest)) = trimmed.split_once("://") else {
            return tcp_authority(trimmed)
                .map(ServerAddr::Tcp)
                .ok_or_else(|| bad("expected host:port"));
        };
        match scheme.to_ascii_lowercase().as_str() {
            "tcp" => {
                let authority = rest.trim_end_matches('/');
                if authority.contains('/') {
                    return Err(bad("a tcp:// address has no path"));
                }
                tcp_authority(authority)
                    .map(ServerAddr::Tcp)
                    .ok_or_else(|| bad("expected tcp://host:port"))
            }
            "ws" => {
                let host = rest.split(['/', '?']).next().unwrap_or("");
                if host.is_empty() {
                    return Err(bad("expected ws://host:port/"));
                }
                Ok(ServerAddr::WebSocket(format!("ws://{rest}")))
            }
            "wss" => Err(bad(
                "wss:// needs TLS, which this build of tern-client does not include",
            )),
            other => Err(bad(&format!(
                "unsupported scheme {other:?}: use tcp:// or ws://"
            ))),
        }
    }
}

/// `host:port` for TCP, adding the default port when there is none; `None`
/// when there is no host.
fn tcp_authority(authority: &str) -> Option<String> {
    if authority.is_empty() || authority.contains(['/', '?', '#', ' ']) {
        return None;
    }
    // An IPv6 literal keeps its colons inside brackets: only a colon after
    // the last `]` can start a port.
    let host_end = authority.rfind(']').map_or(0, |i| i + 1);
    match authority[host_end..].rfind(':') {
        Some(i) => {
            let (host, port) = (&authority[..host_end + i], &authority[host_end + i + 1..]);
            if host.is_empty() || port.parse::<u16>().is_err() {
                return None;
            }
            Some(authority.to_string())
        }
        None => Some(format!("{authority}:{DEFAULT_TCP_PORT}")),
    }
}

impl fmt::Display for ServerAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ServerAddr::Tcp(authority) => write!(f, "tcp://{authority}"),
            ServerAddr::WebSocket(url) => f.write_str(url),
        }
    }
}

impl std::str::FromStr for ServerAddr {
    type Err = ClientError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        ServerAddr::parse(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tcp(s: &str) -> ServerAddr {
        ServerAddr::Tcp(s.to_string())
    }

    #[test]
    fn tcp_urls_and_bare_host_port_mean_tcp() {
        assert_eq!(
            ServerAddr::parse("tcp://127.0.0.1:7400").unwrap(),
            tcp("127.0.0.1:7400")
        );
        assert_eq!(
            ServerAddr::parse("TCP://gw.example:9000/").unwrap(),
            tcp("gw.example:9000")
        );
        assert_eq!(
            ServerAddr::parse("127.0.0.1:7400").unwrap(),
            tcp("127.0.0.1:7400")
        );
        assert_eq!(
            ServerAddr::parse(" localhost:1 ").unwrap(),
            tcp("localhost:1")
        );
        assert_eq!(ServerAddr::parse("[::1]:7400").unwrap(), tcp("[::1]:7400"));
    }

    #[test]
    fn tcp_without_port_gets_the_default_port() {
        assert_eq!(
            ServerAddr::parse("tcp://localhost").unwrap(),
            tcp("localhost:7400")
        );
        assert_eq!(ServerAddr::parse("gw").unwrap(), tcp("gw:7400"));
        assert_eq!(ServerAddr::parse("tcp://[::1]").unwrap(), tcp("[::1]:7400"));
    }

    #[test]
    fn websocket_urls_are_kept_whole() {
        assert_eq!(
            ServerAddr::parse("ws://127.0.0.1:7401/").unwrap(),
            ServerAddr::WebSocket("ws://127.0.0.1:7401/".into())
        );
        assert_eq!(
            ServerAddr::parse("ws://gw:80/chat?x=1").unwrap(),
            ServerAddr::WebSocket("ws://gw:80/chat?x=1".into())
        );
    }

    #[test]
    fn unusable_addresses_are_rejected_with_a_reason() {
        for bad in [
            "",
            "   ",
            "http://x:1",
            "wss://x:1/",
            "tcp://",
            "tcp://x:notaport",
            "x:99999",
            ":7400",
            "ws://",
            "tcp://x:1/path",
        ] {
            let err = ServerAddr::parse(bad).expect_err(bad);
            assert!(matches!(err, ClientError::Address { .. }), "{bad}: {err}");
        }
        let err = ServerAddr::parse("wss://x/").unwrap_err();
        assert!(err.to_string().contains("TLS"), "{err}");
    }

    #[test]
    fn display_round_trips() {
        for s in ["tcp://127.0.0.1:7400", "ws://127.0.0.1:7401/"] {
            assert_eq!(ServerAddr::parse(s).unwrap().to_string(), s);
        }
    }
}
