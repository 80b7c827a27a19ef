//! The services as separate processes on real Kafka, Cassandra and Redis:
//! two gateways, a persister, a router and the API, each a `tern-server`.
//!
//! Needs `TERN_TEST_KAFKA`, `TERN_TEST_CQL` and `TERN_TEST_REDIS` (set by
//! `make test`, which starts the servers through `infra/up`). Without them
//! the tests say so and pass; with them set and a server down, they fail.

use std::collections::HashSet;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use tern_client::{Client, ClientError, Event, LoginOptions, SendOptions};
use tern_proto::client::{ErrorCode, Message};

const SECRET: &str = "distributed-test-secret-0123456789";
const WAIT: Duration = Duration::from_secs(90);

struct Infra {
    kafka: String,
    cql: String,
    redis: String,
}

fn infra() -> Option<Infra> {
    Some(Infra {
        kafka: std::env::var("TERN_TEST_KAFKA").ok()?,
        cql: std::env::var("TERN_TEST_CQL").ok()?,
        redis: std::env::var("TERN_TEST_REDIS").ok()?,
    })
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// One `tern-server` process, restartable with the same arguments.
struct Service {
    name: &'static str,
    args: Vec<String>,
    child: Option<Child>,
}

impl Service {
    fn start(&mut self) {
        let child = Command::new(env!("CARGO_BIN_EXE_tern-server"))
            .args(&self.args)
            .env("TERN_LOG", "warn")
            .stdin(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("{} starts: {e}", self.name));
        self.child = Some(child);
    }

    fn kill(&mut self) {
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
struct Cluster {
    gw1: Service,
    gw2: Service,
    persister: Service,
    router: Service,
    api: Service,
    gw1_addr: String,
    gw2_addr: String,
    api_addr: String,
}

impl Cluster {
    fn new(infra: &Infra) -> Cluster {
        let prefix = format!("{}.", tern_core::conformance::fresh("e2e"));
        let dir = std::env::temp_dir().join(&prefix);
        let common = |services: &str, node: &str, extra: &[String]| -> Vec<String> {
            let mut a: Vec<String> = [
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
                "--services",
                services,
                "--node-id",
                node,
                "--data-dir",
                dir.to_str().unwrap(),
                "--sweep-every-ms",
                "1000",
                "--admin-listen",
                "127.0.0.1:0",
            ]
            .iter()
            .map(|s| s.to_string())
            .collect();
            a.extend(extra.iter().cloned());
            a
        };
        let gateway_args = |node: &str, tcp: u16| {
            common(
                "gateway",
                node,
                &[
                    "--tcp-listen".into(),
                    format!("127.0.0.1:{tcp}"),
                    "--ws-listen".into(),
                    format!("127.0.0.1:{}", free_port()),
                ],
            )
        };
        let (p1, p2, pa) = (free_port(), free_port(), free_port());
        let svc = |name, args| Service {
            name,
            args,
            child: None,
        };
        let mut c = Cluster {
            gw1: svc("gateway 1", gateway_args("gw1", p1)),
            gw2: svc("gateway 2", gateway_args("gw2", p2)),
            persister: svc("persister", common("persister", "p1", &[])),
            router: svc("router", common("router", "r1", &[])),
            api: svc(
                "api",
                common(
                    "ingest",
                    "api1",
                    &["--api-listen".into(), format!("127.0.0.1:{pa}")],
                ),
            ),
            gw1_addr: format!("tcp://127.0.0.1:{p1}"),
            gw2_addr: format!("tcp://127.0.0.1:{p2}"),
            api_addr: format!("http://127.0.0.1:{pa}"),
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

    /// Logs `user` in on `gateway`, retrying while the services start.
    async fn login(&self, gateway: &str, user: &str, device: &str) -> Client {
        self.login_from(gateway, user, device, 0).await
    }

    /// Logs in as a device that already stored everything up to `known_cursor`.
    async fn login_from(
        &self,
        gateway: &str,
        user: &str,
        device: &str,
        known_cursor: u64,
    ) -> Client {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let attempt = async {
                let token = tern_client::dev_token(&self.api_addr, user).await?;
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
}

async fn tracing_free_sleep(_e: &ClientError) {
    tokio::time::sleep(Duration::from_millis(250)).await;
}

/// Sends with the same client_msg_id until the server confirms: what a
/// real client does when a send is not confirmed (UNAVAILABLE, timeout,
/// closed connection).
async fn send_until_stored(client: &Client, to: &str, id: &str, body: String) {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        match client
            .send(SendOptions::to_user(to, body.clone()).with_client_msg_id(id))
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
async fn receive(client: &Client, n: usize) -> (Vec<Message>, usize) {
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
            Some(Event::ServerError(e)) => panic!("server error: {e:?}"),
            Some(Event::Closed { reason }) => panic!("connection closed: {reason}"),
            None => panic!("events ended"),
        }
    }
    (got, repeats)
}

fn bodies(m: &[Message]) -> Vec<String> {
    m.iter()
        .map(|m| String::from_utf8_lossy(&m.body).into_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn alice_on_gateway_1_and_bob_on_gateway_2_chat() {
    let Some(infra) = infra() else {
        eprintln!(
            "TERN_TEST_KAFKA/CQL/REDIS not set: skipping the distributed test (make test sets them)"
        );
        return;
    };
    let cluster = Cluster::new(&infra);
    let alice_name = tern_core::conformance::fresh("alice");
    let bob_name = tern_core::conformance::fresh("bob");
    let alice = cluster.login(&cluster.gw1_addr, &alice_name, "phone").await;
    let bob = cluster.login(&cluster.gw2_addr, &bob_name, "phone").await;
    for i in 0..20 {
        send_until_stored(&alice, &bob_name, &format!("a{i}"), format!("a{i}")).await;
    }
    let (got, repeats) = receive(&bob, 20).await;
    assert_eq!(
        bodies(&got),
        (0..20).map(|i| format!("a{i}")).collect::<Vec<_>>(),
        "in order"
    );
    assert_eq!(repeats, 0);
    assert_eq!(
        got.iter().map(|m| m.seq).collect::<Vec<_>>(),
        (1..=20).collect::<Vec<_>>()
    );
    for i in 0..5 {
        send_until_stored(&bob, &alice_name, &format!("b{i}"), format!("b{i}")).await;
    }
    // alice sees her own 20 (multi-device sync) and bob's 5, in order.
    let (got, repeats) = receive(&alice, 25).await;
    let expected: Vec<String> = (0..20)
        .map(|i| format!("a{i}"))
        .chain((0..5).map(|i| format!("b{i}")))
        .collect();
    assert_eq!(bodies(&got), expected);
    assert_eq!(repeats, 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn sigkill_of_persister_router_and_a_gateway_mid_stream_loses_nothing() {
    let Some(infra) = infra() else {
        eprintln!(
            "TERN_TEST_KAFKA/CQL/REDIS not set: skipping the distributed test (make test sets them)"
        );
        return;
    };
    let mut cluster = Cluster::new(&infra);
    let alice_name = tern_core::conformance::fresh("alice");
    let bob_name = tern_core::conformance::fresh("bob");
    let alice = std::sync::Arc::new(cluster.login(&cluster.gw1_addr, &alice_name, "phone").await);
    let bob = cluster.login(&cluster.gw2_addr, &bob_name, "phone").await;
    const N: usize = 1500;
    let sender = {
        let (alice, bob_name) = (alice.clone(), bob_name.clone());
        tokio::spawn(async move {
            for i in 0..N {
                send_until_stored(&alice, &bob_name, &format!("m{i}"), format!("m{i}")).await;
            }
        })
    };
    // Receive a third, kill and restart the persister; another third, the router.
    let (first, r1) = receive(&bob, N / 3).await;
    cluster.persister.kill();
    tokio::time::sleep(Duration::from_millis(500)).await;
    cluster.persister.start();
    let (second, r2) = receive(&bob, N / 3).await;
    cluster.router.kill();
    tokio::time::sleep(Duration::from_millis(500)).await;
    cluster.router.start();
    // Then bob's gateway dies; he reconnects to the other one and catches up.
    let (third, r3) = receive(&bob, N / 6).await;
    cluster.gw2.kill();
    drop(bob);
    // The app stored everything up to the last cursor it saw, and says so at
    // login: what the dead gateway pushed but never saw ACKed is not shown again.
    let mut all: Vec<Message> = first.into_iter().chain(second).chain(third).collect();
    let stored_to = all.iter().map(|m| m.cursor).max().unwrap_or(0);
    let bob = cluster
        .login_from(&cluster.gw1_addr, &bob_name, "phone", stored_to)
        .await;
    sender.await.expect("every send confirmed");
    let (rest, r4) = receive(&bob, N - all.len()).await;
    all.extend(rest);
    let mut seen = HashSet::new();
    for m in &all {
        assert!(
            seen.insert(m.message_id.clone()),
            "message {} shown twice",
            String::from_utf8_lossy(&m.body)
        );
    }
    let mut got = bodies(&all);
    got.sort_by_key(|b| b[1..].parse::<usize>().unwrap());
    assert_eq!(
        got,
        (0..N).map(|i| format!("m{i}")).collect::<Vec<_>>(),
        "every message, none lost"
    );
    assert_eq!(r1 + r2 + r3 + r4, 0, "the app saw no message twice");
    // Per conversation, the order of seq numbers is the order of sending.
    let mut seqs: Vec<(usize, u64)> = all
        .iter()
        .map(|m| {
            (
                String::from_utf8_lossy(&m.body)[1..].parse().unwrap(),
                m.seq,
            )
        })
        .collect();
    seqs.sort();
    assert!(
        seqs.windows(2).all(|w| w[0].1 < w[1].1),
        "seq follows send order"
    );
}
