//! Rolling upgrades without loss, the way Kubernetes does them: each old
//! pod gets SIGTERM. A gateway tells its clients to reconnect (they do, to
//! the other gateway) and hands back what they had not ACKed; a persister or
//! router finishes its batch, commits and leaves its consumer group, after
//! its replacement started (a Deployment's surge). Meanwhile messages flow
//! both ways between the two gateways, and none is lost or shown twice.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::Arc;
use std::sync::atomic::AtomicUsize;
use std::time::Duration;

use common::stream::{
    Lb, check_all_once_in_order, receive_stream, report_resume, send_stream, wait_for,
};
use common::{Cluster, Service, infra};

const N: usize = 600;
/// SIGTERM to exit; the chart's terminationGracePeriodSeconds is 30.
const GRACE: Duration = Duration::from_secs(30);

/// SIGTERMs `service`, which must exit with status 0 within the grace
/// period; prints how long that took and how soon messages flowed again.
async fn stop_cleanly(service: &mut Service, what: &str, progress: &AtomicUsize) {
    let t = tokio::time::Instant::now();
    let status = service.terminate(GRACE).await;
    eprintln!("{what} exited {:?} after SIGTERM", t.elapsed());
    assert!(
        status.success(),
        "{what} exits cleanly on SIGTERM: {status}"
    );
    report_resume(what, progress).await;
}

/// Starts the new pod of a rolling update and returns once it is ready,
/// as a Deployment with `maxSurge: 1, maxUnavailable: 0` waits for the
/// new pod's readiness before it stops an old one.
async fn start_replacement(service: &mut Service) {
    service.start();
    service.wait_ready().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_of_a_gateway_and_rolling_consumers_under_load_lose_nothing() {
    let Some(infra) = infra() else {
        eprintln!(
            "TERN_TEST_KAFKA/CQL/REDIS not set: skipping the drain test (make test sets them)"
        );
        return;
    };
    let mut cluster = Cluster::new(&infra);
    let lb = Lb {
        api: cluster.api_addr.clone(),
        gateways: [cluster.gw1_addr.clone(), cluster.gw2_addr.clone()],
    };
    let [alice, bob, carol, dave] =
        ["alice", "bob", "carol", "dave"].map(tern_core::conformance::fresh);
    // Gateway 2 will be drained: alice sends from it, dave receives on it.
    let (bob_progress, dave_progress) =
        (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let bob_rx = tokio::spawn(receive_stream(lb.clone(), 0, bob.clone(), N, bob_progress));
    let dave_rx = tokio::spawn(receive_stream(
        lb.clone(),
        1,
        dave.clone(),
        N,
        dave_progress.clone(),
    ));
    let alice_tx = tokio::spawn(send_stream(lb.clone(), 1, alice, bob, N));
    let carol_tx = tokio::spawn(send_stream(lb.clone(), 0, carol, dave, N));

    // Roll the persister and the router: the new pod first, then SIGTERM.
    wait_for(&dave_progress, N / 6).await;
    let mut persister2 = cluster.service("persister 2", "persister", "p2");
    start_replacement(&mut persister2).await;
    stop_cleanly(&mut cluster.persister, "the persister", &dave_progress).await;
    wait_for(&dave_progress, N / 3).await;
    let mut router2 = cluster.service("router 2", "router", "r2");
    start_replacement(&mut router2).await;
    stop_cleanly(&mut cluster.router, "the router", &dave_progress).await;

    // Drain gateway 2 mid-stream.
    wait_for(&dave_progress, N / 2).await;
    stop_cleanly(&mut cluster.gw2, "gateway 2", &dave_progress).await;

    let alice_reconnects = alice_tx.await.expect("alice's sends");
    let carol_reconnects = carol_tx.await.expect("carol's sends");
    let bob_got = bob_rx.await.expect("bob receives");
    let dave_got = dave_rx.await.expect("dave receives");
    check_all_once_in_order("bob", &bob_got, N);
    check_all_once_in_order("dave", &dave_got, N);
    assert!(alice_reconnects >= 1, "alice moved to gateway 1");
    assert!(dave_got.reconnects >= 1, "dave moved to gateway 1");
    assert!(
        dave_got.going_away >= 1,
        "dave was told the gateway is going away"
    );
    assert_eq!(
        carol_reconnects + bob_got.reconnects,
        0,
        "clients of gateway 1 stayed"
    );
}
