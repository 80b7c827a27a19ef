//! Outages of the servers under a running deployment: Cassandra paused for
//! 20 s, Redis restarted, Kafka paused at send time and frozen for 40 s. Each stops a shared
//! server, so they run one at a time, after everything else: `make test`
//! runs this file last with `TERN_TEST_OUTAGES=1`. Without it they say so
//! and pass.
//!
//! "Paused" is SIGSTOP/SIGCONT of the server process: to its clients that
//! is a server that stops answering (the nastiest kind of outage: no
//! connection refused, only timeouts), and it keeps the server's data.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::PathBuf;
use std::time::Duration;

use common::{Cluster, Infra, bodies, infra, receive, send_until_stored};
use tern_client::SendOptions;

fn outages() -> Option<Infra> {
    if std::env::var("TERN_TEST_OUTAGES").ok().as_deref() != Some("1") {
        eprintln!(
            "TERN_TEST_OUTAGES not set: skipping the outage tests (make test runs them last)"
        );
        return None;
    }
    infra()
}

/// The pid `infra/` recorded for a server.
fn server_pid(name: &str) -> String {
    let state = std::env::var("TERN_INFRA_STATE")
        .map(PathBuf::from)
        .unwrap_or_else(|_| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target/infra"));
    let file = state.join(name).join(format!("{name}.pid"));
    std::fs::read_to_string(&file)
        .unwrap_or_else(|e| panic!("{}: {e}", file.display()))
        .trim()
        .to_owned()
}

fn signal(pid: &str, sig: &str) {
    let ok = std::process::Command::new("kill")
        .args([sig, pid])
        .status()
        .unwrap()
        .success();
    assert!(ok, "kill {sig} {pid}");
}

/// Resumes a paused server even if the test fails half-way.
struct Paused(String);

impl Paused {
    fn pause(name: &str) -> Paused {
        let pid = server_pid(name);
        signal(&pid, "-STOP");
        Paused(pid)
    }
}

impl Drop for Paused {
    fn drop(&mut self) {
        signal(&self.0, "-CONT");
    }
}

fn script(path: &str, arg: &str) {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
    let ok = std::process::Command::new(root.join(path))
        .arg(arg)
        .status()
        .unwrap()
        .success();
    assert!(ok, "{path} {arg}");
}

#[tokio::test(flavor = "multi_thread")]
async fn cassandra_paused_for_20_s_mid_stream_loses_nothing() {
    let Some(infra) = outages() else { return };
    let cluster = Cluster::new(&infra);
    let (alice_name, bob_name) = (
        tern_core::conformance::fresh("alice"),
        tern_core::conformance::fresh("bob"),
    );
    let alice = std::sync::Arc::new(cluster.login(&cluster.gw1_addr, &alice_name, "phone").await);
    let bob = cluster.login(&cluster.gw2_addr, &bob_name, "phone").await;
    const N: usize = 200;
    let sender = {
        let (alice, bob_name) = (alice.clone(), bob_name.clone());
        tokio::spawn(async move {
            for i in 0..N {
                send_until_stored(&alice, &bob_name, &format!("m{i}"), format!("m{i}")).await;
            }
        })
    };
    let (first, r1) = receive(&bob, N / 4).await;
    {
        let _paused = Paused::pause("cassandra");
        tokio::time::sleep(Duration::from_secs(20)).await;
    }
    let (rest, r2) = receive(&bob, N - first.len()).await;
    sender.await.expect("every send eventually confirmed");
    let mut all = bodies(&first);
    all.extend(bodies(&rest));
    assert_eq!(
        all,
        (0..N).map(|i| format!("m{i}")).collect::<Vec<_>>(),
        "all, once, in order"
    );
    assert_eq!(r1 + r2, 0, "no repeats shown");
}

#[tokio::test(flavor = "multi_thread")]
async fn redis_restarted_mid_stream_routes_come_back_and_nothing_is_lost() {
    let Some(infra) = outages() else { return };
    // Heartbeats every 3 s: the messages below are all sent before bob's
    // next heartbeat re-creates his route, and nothing is sent after it.
    let cluster = Cluster::with_gateway_args(
        &infra,
        &[
            "--heartbeat-interval-ms",
            "3000",
            "--idle-timeout-ms",
            "10000",
        ],
    );
    let (alice_name, bob_name) = (
        tern_core::conformance::fresh("alice"),
        tern_core::conformance::fresh("bob"),
    );
    let alice = cluster.login(&cluster.gw1_addr, &alice_name, "phone").await;
    let bob = cluster.login(&cluster.gw2_addr, &bob_name, "phone").await;
    for i in 0..20 {
        send_until_stored(&alice, &bob_name, &format!("a{i}"), format!("a{i}")).await;
    }
    let (first, _) = receive(&bob, 20).await;
    // Redis restarts empty: every route is gone.
    script("infra/redis/run.sh", "stop");
    script("infra/redis/run.sh", "start");
    // Sent meanwhile: stored and in bob's inbox, but the router finds no
    // route for bob, so no push goes to his gateway.
    let started = std::time::Instant::now();
    for i in 20..40 {
        send_until_stored(&alice, &bob_name, &format!("a{i}"), format!("a{i}")).await;
    }
    eprintln!(
        "sent 20 messages in {:?} after the restart",
        started.elapsed()
    );
    // bob, still connected, gets them once his heartbeat re-creates his
    // route: the gateway sees the route was missing and reads his inbox.
    let (rest, repeats) = receive(&bob, 20).await;
    let mut all = bodies(&first);
    all.extend(bodies(&rest));
    assert_eq!(all, (0..40).map(|i| format!("a{i}")).collect::<Vec<_>>());
    assert_eq!(repeats, 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn kafka_paused_at_send_time_never_reports_success_for_an_unwritten_message() {
    let Some(infra) = outages() else { return };
    // Sends unconfirmed after 4 s are answered UNAVAILABLE, so the pause
    // below (about 4 s) stays under the consumers' 10 s session timeout
    // (longer freezes: the next test).
    let cluster = Cluster::with_gateway_args(&infra, &["--receipt-timeout-ms", "4000"]);
    let (alice_name, bob_name) = (
        tern_core::conformance::fresh("alice"),
        tern_core::conformance::fresh("bob"),
    );
    let mut alice = cluster.login(&cluster.gw1_addr, &alice_name, "phone").await;
    let bob = cluster.login(&cluster.gw2_addr, &bob_name, "phone").await;
    send_until_stored(&alice, &bob_name, "before", "before".into()).await;
    alice.set_request_timeout(Duration::from_secs(30));
    let during = {
        let _paused = Paused::pause("kafka");
        // The gateway cannot write the message: the client is told so (or
        // waits), it is never told the message was stored.
        alice
            .send(SendOptions::to_user(&bob_name, "during").with_client_msg_id("during"))
            .await
    };
    match during {
        Err(e) => assert!(
            e.code() == Some(tern_proto::client::ErrorCode::Unavailable)
                || matches!(e, tern_client::ClientError::Timeout),
            "a clear error: {e}"
        ),
        Ok(r) => panic!("a send confirmed while Kafka could not store it: {r:?}"),
    }
    // After the outage the same client_msg_id is retried: stored once.
    send_until_stored(&alice, &bob_name, "during", "during".into()).await;
    send_until_stored(&alice, &bob_name, "after", "after".into()).await;
    let (got, repeats) = receive(&bob, 3).await;
    assert_eq!(bodies(&got), vec!["before", "during", "after"]);
    assert_eq!(repeats, 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn kafka_frozen_longer_than_the_session_timeout_then_everything_flows_again() {
    let Some(infra) = outages() else { return };
    let cluster = Cluster::new(&infra);
    let (alice_name, bob_name) = (
        tern_core::conformance::fresh("alice"),
        tern_core::conformance::fresh("bob"),
    );
    let alice = cluster.login(&cluster.gw1_addr, &alice_name, "phone").await;
    let bob = cluster.login(&cluster.gw2_addr, &bob_name, "phone").await;
    send_until_stored(&alice, &bob_name, "before", "before".into()).await;
    {
        // 40 s: longer than the consumers' 10 s session timeout (the broker,
        // once resumed, finds every member expired), and longer than the 30 s
        // after which a consumer that is no settled group member is replaced.
        let _paused = Paused::pause("kafka");
        tokio::time::sleep(Duration::from_secs(40)).await;
    }
    // Every stage must come back: the persister (receipts), the router and
    // both gateways' push consumers (bob's push).
    for i in 0..5 {
        send_until_stored(&alice, &bob_name, &format!("after{i}"), format!("after{i}")).await;
    }
    let (got, repeats) = receive(&bob, 6).await;
    assert_eq!(
        bodies(&got),
        ["before", "after0", "after1", "after2", "after3", "after4"]
    );
    assert_eq!(repeats, 0);
}
