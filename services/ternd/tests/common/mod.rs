//! Helpers shared by ternd's end-to-end tests: a ternd on free ports in a
//! temporary directory, logged-in clients, and a raw TCP connection for
//! frames no well-behaved client would send.

#![allow(dead_code)]

use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tern_client::{Client, Event, LoginOptions};
use tern_proto::client::{Message, client_frame, server_frame};
use ternd::{Running, TerndConfig};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

pub struct Server {
    pub running: Running,
    pub dir: tempfile::TempDir,
}

impl Server {
    pub async fn start() -> Server {
        Self::start_with(|_| {}).await
    }

    pub async fn start_with(tweak: impl FnOnce(&mut TerndConfig)) -> Server {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut config = TerndConfig::for_tests(dir.path()).unwrap();
        tweak(&mut config);
        let running = ternd::start(config).await.expect("ternd starts");
        Server { running, dir }
    }

    pub fn tcp(&self) -> String {
        format!("tcp://{}", self.running.tcp_addr.expect("service running"))
    }

    pub fn ws(&self) -> String {
        format!("ws://{}/", self.running.ws_addr.expect("service running"))
    }

    pub fn api(&self) -> String {
        format!("http://{}", self.running.api_addr.expect("service running"))
    }

    pub fn backend_addr(&self) -> String {
        format!(
            "http://{}",
            self.running.backend_addr.expect("back-end API served")
        )
    }

    /// The back-end API, with the test back-end token.
    pub async fn backend(
        &self,
    ) -> tern_proto::api::backend_api_client::BackendApiClient<tern_client::Authorized> {
        tern_client::connect_backend_as(&self.backend_addr(), ternd::TEST_BACKEND_TOKEN)
            .await
            .expect("back-end API reachable")
    }

    /// The user API, as `user` (with a dev token).
    pub async fn user_api(
        &self,
        user: &str,
    ) -> tern_proto::api::user_api_client::UserApiClient<tern_client::Authorized> {
        let token = self.token(user).await;
        tern_client::connect_api_as(&self.api(), &token)
            .await
            .expect("user API reachable")
    }

    pub async fn token(&self, user: &str) -> String {
        tern_client::dev_token(&self.api(), user)
            .await
            .expect("dev token")
    }

    /// `user` logged in as `device` over TCP.
    pub async fn login(&self, user: &str, device: &str) -> Client {
        self.login_at(&self.tcp(), user, device).await
    }

    pub async fn login_at(&self, addr: &str, user: &str, device: &str) -> Client {
        let token = self.token(user).await;
        let (client, _) = Client::connect(addr, LoginOptions::new(token, device))
            .await
            .expect("login");
        client
    }
}

/// Retries `check` until it returns Some, for at most 20 s.
pub async fn eventually<T, F, Fut>(what: &str, check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    eventually_within(
        what,
        Duration::from_secs(20),
        Duration::from_millis(20),
        check,
    )
    .await
}

/// Polls `check` every `every` until it returns Some; panics after `timeout`.
pub async fn eventually_within<T, F, Fut>(
    what: &str,
    timeout: Duration,
    every: Duration,
    mut check: F,
) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(every).await;
    }
}

/// Reads events until `n` messages arrived, ACKing each push; panics on
/// anything else or after `timeout`.
pub async fn receive(client: &Client, n: usize, timeout: Duration) -> Vec<Message> {
    let mut got = Vec::new();
    let deadline = tokio::time::Instant::now() + timeout;
    while got.len() < n {
        let event = tokio::time::timeout_at(deadline, client.next_event())
            .await
            .unwrap_or_else(|_| panic!("only {} of {n} messages after {timeout:?}", got.len()));
        match event {
            Some(Event::Messages {
                messages,
                last_cursor,
                ..
            }) => {
                got.extend(messages);
                client.ack(last_cursor).await.expect("ack");
            }
            other => panic!("expected messages, got {other:?}"),
        }
    }
    got
}

pub fn bodies(messages: &[Message]) -> Vec<String> {
    messages
        .iter()
        .map(|m| String::from_utf8_lossy(&m.body).into_owned())
        .collect()
}

/// A TCP connection speaking raw length-prefixed frames.
pub struct Raw {
    pub stream: TcpStream,
    buf: BytesMut,
}

impl Raw {
    pub async fn connect(addr: std::net::SocketAddr) -> Raw {
        Raw {
            stream: TcpStream::connect(addr).await.expect("connect"),
            buf: BytesMut::new(),
        }
    }

    pub fn from_stream(stream: TcpStream) -> Raw {
        Raw {
            stream,
            buf: BytesMut::new(),
        }
    }

    /// Reads whatever arrives within 200 ms without blocking longer; returns
    /// the error frames seen and whether the server closed the connection.
    pub async fn drain_available(&mut self) -> (Vec<tern_proto::client::Error>, bool) {
        let codec = tern_wire::LengthPrefixed::new(64 << 20);
        let mut errors = Vec::new();
        loop {
            while let Some(frame) = codec.decode(&mut self.buf).expect("server frame") {
                if let Ok(server_frame::Kind::Error(e)) = tern_wire::decode_server(&frame) {
                    errors.push(e);
                }
            }
            match tokio::time::timeout(
                Duration::from_millis(200),
                self.stream.read_buf(&mut self.buf),
            )
            .await
            {
                Err(_) => return (errors, false),
                Ok(Ok(0)) | Ok(Err(_)) => return (errors, true),
                Ok(Ok(_)) => {}
            }
        }
    }

    /// Writes `bytes` as one frame (with a correct length prefix).
    pub async fn write_frame(&mut self, bytes: &[u8]) {
        let mut out = BytesMut::new();
        tern_wire::LengthPrefixed::new(usize::MAX)
            .encode(bytes, &mut out)
            .unwrap();
        self.stream.write_all(&out).await.expect("write");
    }

    pub async fn write(&mut self, kind: client_frame::Kind) {
        let bytes = tern_wire::encode_client(kind);
        self.write_frame(&bytes).await;
    }

    /// The next frame, or None once the server closed the connection.
    pub async fn read(&mut self) -> Option<server_frame::Kind> {
        let codec = tern_wire::LengthPrefixed::new(64 << 20);
        loop {
            if let Some(frame) = codec.decode(&mut self.buf).expect("server frame") {
                return Some(tern_wire::decode_server(&frame).expect("decodable server frame"));
            }
            let n =
                tokio::time::timeout(Duration::from_secs(30), self.stream.read_buf(&mut self.buf))
                    .await
                    .expect("server answers within 30 s");
            match n {
                Ok(0) | Err(_) => return None,
                Ok(_) => {}
            }
        }
    }

    /// Reads until the server closes; returns the last error frame seen.
    pub async fn read_until_closed(&mut self) -> Option<tern_proto::client::Error> {
        let mut last_error = None;
        while let Some(kind) = self.read().await {
            if let server_frame::Kind::Error(e) = kind {
                last_error = Some(e);
            }
        }
        last_error
    }
}

pub fn login_frame(token: &str, device: &str) -> client_frame::Kind {
    client_frame::Kind::Login(tern_proto::client::Login {
        token: token.into(),
        device_id: device.into(),
        accept_codecs: vec![],
        send_only: false,
    })
}

pub fn _unused(_: Bytes) {}

/// A free port for a process the test starts (see
/// [`tern_core::conformance::free_ports`] for why not port 0's choice).
pub fn free_port() -> u16 {
    tern_core::conformance::free_ports(1)[0]
}

/// The real `ternd` binary, as a process a test can SIGKILL.
pub struct Ternd {
    pub child: std::process::Child,
    pub tcp: String,
    pub api: String,
}

/// Starts the `ternd` binary on `ports` (TCP, WebSocket, API) with its
/// data in `dir` and `extra` flags; returns once its API answers.
pub async fn spawn_ternd(dir: &std::path::Path, ports: (u16, u16, u16), extra: &[&str]) -> Ternd {
    let child = std::process::Command::new(env!("CARGO_BIN_EXE_ternd"))
        .args(["--data-dir", dir.to_str().unwrap()])
        .args(["--tcp-listen", &format!("127.0.0.1:{}", ports.0)])
        .args(["--ws-listen", &format!("127.0.0.1:{}", ports.1)])
        .args(["--api-listen", &format!("127.0.0.1:{}", ports.2)])
        .args(["--admin-listen", "127.0.0.1:0"])
        // No back-end API (tests run in parallel: its fixed port would
        // clash) and no rate limits (these tests stream thousands of sends).
        .args(["--backend-listen", "off", "--sends-per-second", "0"])
        .args(["--frames-per-second", "0", "--max-connections-per-ip", "0"])
        .args(["--new-connections-per-ip-per-second", "0"])
        .args(extra)
        .env("TERN_LOG", "warn")
        .stdin(std::process::Stdio::null())
        .spawn()
        .expect("ternd binary runs");
    let t = Ternd {
        child,
        tcp: format!("tcp://127.0.0.1:{}", ports.0),
        api: format!("http://127.0.0.1:{}", ports.2),
    };
    // Ready when the API answers.
    for _ in 0..200 {
        if tern_client::dev_token(&t.api, "probe").await.is_ok() {
            return t;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("ternd did not start");
}
