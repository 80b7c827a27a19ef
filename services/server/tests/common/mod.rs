//! A deployment of `tern-server` processes on the real servers, for the
//! distributed and outage tests: two gateways, a persister, a router and
//! the API, plus what a client does against them.

#![allow(dead_code)]

pub mod stream;

use std::collections::HashSet;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use tern_client::{Client, ClientError, Event, LoginOptions, SendOptions, Target};
use tern_proto::client::{ErrorCode, Message};

pub const SECRET: &str = "distributed-test-secret-0123456789";
/// The back-end API's token of the API process.
pub const BACKEND_TOKEN: &str = "distributed-test-backend-0123456789";
pub const WAIT: Duration = Duration::from_secs(90);

pub struct Infra {
    pub kafka: String,
    pub cql: String,
    pub redis: String,
}

pub fn infra() -> Option<Infra> {
    Some(Infra {
        kafka: std::env::var("TERN_TEST_KAFKA").ok()?,
        cql: std::env::var("TERN_TEST_CQL").ok()?,
        redis: std::env::var("TERN_TEST_REDIS").ok()?,
    })
}

pub use tern_core::conformance::free_ports;

pub fn free_port() -> u16 {
    free_ports(1)[0]
}

/// One `tern-server` process, restartable with the same arguments.
pub struct Service {
    name: &'static str,
    args: Vec<String>,
    /// Extra environment variables (e.g. object storage credentials).
    env: Vec<(String, String)>,
    child: Option<Child>,
}

impl Service {
    pub fn start(&mut self) {
        let child = Command::new(env!("CARGO_BIN_EXE_tern-server"))
            .args(&self.args)
            .env(
                "TERN_LOG",
                std::env::var("TERN_TEST_LOG").unwrap_or_else(|_| "warn".into()),
            )
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("{} starts: {e}", self.name));
        self.child = Some(child);
    }

    /// SIGTERM, as Kubernetes stops a pod; waits up to `within` for the
    /// process to exit (SIGKILL and a panic after that) and returns how it exited.
    pub async fn terminate(&mut self, within: Duration) -> std::process::ExitStatus {
        let mut child = self
            .child
            .take()
            .unwrap_or_else(|| panic!("{} is not running", self.name));
        let sent = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .expect("kill runs");
        assert!(sent.success(), "SIGTERM to {}", self.name);
        let deadline = tokio::time::Instant::now() + within;
        loop {
            if let Some(status) = child.try_wait().expect("wait") {
                return status;
            }
            if tokio::time::Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!("{} did not exit within {within:?} of SIGTERM", self.name);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Waits until the process answers 200 on its `/readyz`: started, and
    /// what an orchestrator waits for before it stops the pod this one
    /// replaces. Panics after [`WAIT`].
    pub async fn wait_ready(&self) {
        use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
        let admin = self
            .args
            .iter()
            .skip_while(|a| *a != "--admin-listen")
            .nth(1)
            .unwrap_or_else(|| panic!("{} serves no admin endpoints", self.name));
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let status = async {
                let mut conn = tokio::net::TcpStream::connect(admin).await.ok()?;
                conn.write_all(b"GET /readyz HTTP/1.1\r\nHost: tern\r\nConnection: close\r\n\r\n")
                    .await
                    .ok()?;
                let mut answer = Vec::new();
                conn.read_to_end(&mut answer).await.ok()?;
                Some(String::from_utf8_lossy(&answer).into_owned())
            };
            let status = status.await;
            if status
                .as_deref()
                .is_some_and(|a| a.starts_with("HTTP/1.1 200"))
            {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{} never became ready: {status:?}",
                self.name
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Sends `signal` (e.g. "-STOP", "-CONT") to the running process.
    pub fn signal(&self, signal: &str) {
        let child = self
            .child
            .as_ref()
            .unwrap_or_else(|| panic!("{} is not running", self.name));
        let sent = Command::new("kill")
            .args([signal, &child.id().to_string()])
            .status()
            .expect("kill runs");
        assert!(sent.success(), "{signal} to {}", self.name);
    }

    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            c.kill().expect("SIGKILL"); // std's kill() is SIGKILL on Unix
            c.wait().unwrap();
        }
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A deployment: fresh topic prefix (so runs never share topics or consumer
/// groups), one shared keyspace (users are fresh per run).
pub struct Cluster {
    pub gw1: Service,
    pub gw2: Service,
    pub persister: Service,
    pub router: Service,
    pub api: Service,
    pub gw1_addr: String,
    pub gw2_addr: String,
    pub api_addr: String,
    /// The back-end API (and archive administration) of the API process.
    pub backend_addr: String,
    /// What every process gets besides its services, node id and admin port.
    base_args: Vec<String>,
    env: Vec<(String, String)>,
}

impl Cluster {
    pub fn new(infra: &Infra) -> Cluster {
        Self::with_gateway_args(infra, &[])
    }

    /// A cluster whose gateways get `gateway_extra` flags too.
    pub fn with_gateway_args(infra: &Infra, gateway_extra: &[&str]) -> Cluster {
        Self::with_args(infra, gateway_extra, &[])
    }

    /// A cluster whose gateways get `gateway_extra` flags, and every
    /// process `all_extra`.
    pub fn with_args(infra: &Infra, gateway_extra: &[&str], all_extra: &[&str]) -> Cluster {
        Self::with_env(infra, gateway_extra, all_extra, &[])
    }

    /// [`Cluster::with_args`], with `env` set for every process.
    pub fn with_env(
        infra: &Infra,
        gateway_extra: &[&str],
        all_extra: &[&str],
        env: &[(&str, &str)],
    ) -> Cluster {
        let env: Vec<(String, String)> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let prefix = format!("{}.", tern_core::conformance::fresh("e2e"));
        let dir = std::env::temp_dir().join(&prefix);
        // gw1 tcp, gw2 tcp, api, gw1 ws, gw2 ws, back end, and an admin
        // port per process.
        let ports = free_ports(11);
        let admin_ports = std::cell::RefCell::new(ports[6..].to_vec());
        let mut base_args: Vec<String> = [
            "--event-log",
            &format!("kafka://{}", infra.kafka),
            "--store",
            &format!("cql://{}/tern_e2e", infra.cql),
            "--routes",
            &infra.redis,
            "--topic-prefix",
            &prefix,
            "--topic-partitions",
            "4",
            "--jwt-secret",
            SECRET,
            "--data-dir",
            dir.to_str().unwrap(),
            "--sweep-every-ms",
            "1000",
            // Tokens from the API (every listener is on loopback).
            "--dev-mode",
            "true",
            // Tests of limits are elsewhere: these send thousands of
            // messages from a few users and connect from one address.
            "--sends-per-second",
            "0",
            "--frames-per-second",
            "0",
            "--max-connections-per-ip",
            "0",
            "--new-connections-per-ip-per-second",
            "0",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        base_args.extend(all_extra.iter().map(|s| s.to_string()));
        let common = |services: &str, node: &str, extra: &[String]| -> Vec<String> {
            let admin = format!(
                "127.0.0.1:{}",
                admin_ports
                    .borrow_mut()
                    .pop()
                    .expect("an admin port per process")
            );
            let mut a = base_args.clone();
            a.extend(
                [
                    "--services",
                    services,
                    "--node-id",
                    node,
                    "--admin-listen",
                    &admin,
                ]
                .map(str::to_owned),
            );
            a.extend(extra.iter().cloned());
            a
        };
        let ws_port = |node: &str| if node == "gw1" { ports[3] } else { ports[4] };
        let gateway_args = |node: &str, tcp: u16| {
            let mut extra = vec![
                "--tcp-listen".to_string(),
                format!("127.0.0.1:{tcp}"),
                "--ws-listen".into(),
                format!("127.0.0.1:{}", ws_port(node)),
            ];
            extra.extend(gateway_extra.iter().map(|s| s.to_string()));
            common("gateway", node, &extra)
        };
        let (p1, p2, pa) = (ports[0], ports[1], ports[2]);
        let svc = |name, args| Service {
            name,
            args,
            env: env.clone(),
            child: None,
        };
        // Only the API process binds a back-end listener (below): the
        // others run no API.
        let mut c = Cluster {
            gw1: svc("gateway 1", gateway_args("gw1", p1)),
            gw2: svc("gateway 2", gateway_args("gw2", p2)),
            persister: svc("persister", common("persister", "p1", &[])),
            router: svc("router", common("router", "r1", &[])),
            api: svc(
                "api",
                common(
                    "api",
                    "api1",
                    &[
                        "--api-listen".into(),
                        format!("127.0.0.1:{pa}"),
                        "--backend-listen".into(),
                        format!("127.0.0.1:{}", ports[5]),
                        "--backend-token".into(),
                        BACKEND_TOKEN.into(),
                    ],
                ),
            ),
            gw1_addr: format!("tcp://127.0.0.1:{p1}"),
            gw2_addr: format!("tcp://127.0.0.1:{p2}"),
            api_addr: format!("http://127.0.0.1:{pa}"),
            backend_addr: format!("http://127.0.0.1:{}", ports[5]),
            base_args: base_args.clone(),
            env: env.clone(),
        };
        for s in [
            &mut c.persister,
            &mut c.router,
            &mut c.api,
            &mut c.gw1,
            &mut c.gw2,
        ] {
            s.start();
        }
        c
    }

    /// Another process of this deployment running `services` as `node`
    /// (not started yet).
    pub fn service(&self, name: &'static str, services: &str, node: &str) -> Service {
        let mut args = self.base_args.clone();
        args.extend(
            [
                "--services",
                services,
                "--node-id",
                node,
                "--admin-listen",
                &format!("127.0.0.1:{}", free_port()),
            ]
            .map(str::to_owned),
        );
        Service {
            name,
            args,
            env: self.env.clone(),
            child: None,
        }
    }

    /// Logs `user` in on `gateway`, retrying while the services start.
    pub async fn login(&self, gateway: &str, user: &str, device: &str) -> Client {
        self.login_from(gateway, user, device, 0).await
    }

    /// Logs in as a device that already stored everything up to `known_cursor`.
    pub async fn login_from(
        &self,
        gateway: &str,
        user: &str,
        device: &str,
        known_cursor: u64,
    ) -> Client {
        login_at(&self.api_addr, gateway, user, device, known_cursor).await
    }
}

/// Logs `user` in on `gateway` with a token from the API at `api_addr`,
/// retrying while the services start; for tasks that cannot borrow the
/// [`Cluster`].
pub async fn login_at(
    api_addr: &str,
    gateway: &str,
    user: &str,
    device: &str,
    known_cursor: u64,
) -> Client {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let attempt = async {
            let token = tern_client::dev_token(api_addr, user).await?;
            let mut options = LoginOptions::new(token, device);
            options.known_cursor = known_cursor;
            Client::connect(gateway, options).await
        };
        match attempt.await {
            Ok((c, _)) => return c,
            Err(e) if tokio::time::Instant::now() < deadline => {
                tracing_free_sleep(&e).await;
            }
            Err(e) => panic!("{user} cannot log in on {gateway}: {e}"),
        }
    }
}

async fn tracing_free_sleep(_e: &ClientError) {
    tokio::time::sleep(Duration::from_millis(250)).await;
}

/// Sends with the same client_msg_id until the server confirms: what a
/// real client does when a send is not confirmed (UNAVAILABLE, timeout,
/// closed connection).
pub async fn send_until_stored(client: &Client, to: &str, id: &str, body: String) {
    send_until_stored_to(client, Target::ToUser(to.into()), id, body).await
}

/// [`send_until_stored`] to any target (a group's conversation, say).
pub async fn send_until_stored_to(client: &Client, target: Target, id: &str, body: String) {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        match client
            .send(SendOptions::new(target.clone(), body.clone()).with_client_msg_id(id))
            .await
        {
            Ok(_) => return,
            Err(e) if tokio::time::Instant::now() < deadline => {
                assert!(
                    e.code() != Some(ErrorCode::InvalidArgument),
                    "send {id} refused: {e}"
                );
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(e) => panic!("send {id} never confirmed: {e}"),
        }
    }
}

/// Receives until `n` distinct messages arrived, ACKing; returns them in
/// arrival order, with the number of repeated message ids the app saw.
pub async fn receive(client: &Client, n: usize) -> (Vec<Message>, usize) {
    let mut got = Vec::new();
    let mut ids = HashSet::new();
    let mut repeats = 0;
    let deadline = tokio::time::Instant::now() + WAIT;
    while ids.len() < n {
        let event = tokio::time::timeout_at(deadline, client.next_event())
            .await
            .unwrap_or_else(|_| panic!("only {} of {n} messages arrived", ids.len()));
        match event {
            Some(Event::Messages {
                messages,
                last_cursor,
                ..
            }) => {
                for m in messages {
                    if ids.insert(m.message_id.clone()) {
                        got.push(m);
                    } else {
                        repeats += 1;
                    }
                }
                client.ack(last_cursor).await.expect("ack");
            }
            Some(Event::RoomMessages { .. } | Event::GroupMessages { .. }) => {}
            Some(Event::ServerError(e)) => panic!("server error: {e:?}"),
            Some(Event::Closed { reason }) => panic!("connection closed: {reason}"),
            None => panic!("events ended"),
        }
    }
    (got, repeats)
}

pub fn bodies(m: &[Message]) -> Vec<String> {
    m.iter()
        .map(|m| String::from_utf8_lossy(&m.body).into_owned())
        .collect()
}
