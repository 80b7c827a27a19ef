//! The services as separate processes on real Kafka, Cassandra and Redis:
//! two gateways, a persister, a router and the API, each a `tern-server`.
//!
//! Needs `TERN_TEST_KAFKA`, `TERN_TEST_CQL` and `TERN_TEST_REDIS` (set by
//! `make test`, which starts the servers through `infra/up`). Without them
//! the tests say so and pass; with them set and a server down, they fail.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::Arc;
use std::sync::atomic::AtomicUsize;
use std::time::Duration;

use common::stream::{Lb, check_all_once_in_order, receive_stream, send_stream, wait_for};
use common::{Cluster, bodies, infra, receive, send_until_stored, send_until_stored_to};
use tern_client::{Event, Target};
use tern_proto::client::ErrorCode;

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
async fn a_group_of_three_on_two_gateways() {
    let Some(infra) = infra() else {
        eprintln!(
            "TERN_TEST_KAFKA/CQL/REDIS not set: skipping the distributed test (make test sets them)"
        );
        return;
    };
    let cluster = Cluster::new(&infra);
    let [alice_name, bob_name, carol_name, dave_name] =
        ["alice", "bob", "carol", "dave"].map(tern_core::conformance::fresh);
    // alice on gateway 1, bob on gateway 2, carol offline for now.
    let alice = cluster.login(&cluster.gw1_addr, &alice_name, "phone").await;
    let bob = cluster.login(&cluster.gw2_addr, &bob_name, "phone").await;
    let token = tern_client::dev_token(&cluster.api_addr, &alice_name)
        .await
        .unwrap();
    let mut groups = tern_client::GroupApi::connect(&cluster.api_addr, token)
        .await
        .unwrap();
    let group = groups
        .create("e2e", &[bob_name.clone(), carol_name.clone()])
        .await
        .expect("group created in Cassandra");
    let to_group = || Target::Conversation(group.conversation.clone());
    for i in 0..5 {
        send_until_stored_to(&alice, to_group(), &format!("g{i}"), format!("g{i}")).await;
    }
    let (got, repeats) = receive(&bob, 5).await;
    assert_eq!(bodies(&got), vec!["g0", "g1", "g2", "g3", "g4"]);
    assert_eq!(repeats, 0);

    let carol = cluster.login(&cluster.gw2_addr, &carol_name, "phone").await;
    let (got, _) = receive(&carol, 5).await;
    assert_eq!(
        bodies(&got),
        vec!["g0", "g1", "g2", "g3", "g4"],
        "from her inbox"
    );

    groups
        .remove(&group.id, std::slice::from_ref(&carol_name))
        .await
        .unwrap();
    send_until_stored_to(&bob, to_group(), "after", "after".into()).await;
    let (got, _) = receive(&alice, 6).await;
    assert_eq!(bodies(&got).last().map(String::as_str), Some("after"));
    // Had "after" reached carol's inbox, it would precede this later message.
    send_until_stored(&alice, &carol_name, "marker", "marker".into()).await;
    let (got, _) = receive(&carol, 1).await;
    assert_eq!(bodies(&got), vec!["marker"]);

    let dave = cluster.login(&cluster.gw1_addr, &dave_name, "phone").await;
    let err = dave
        .send(tern_client::SendOptions::new(to_group(), "hi"))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::Forbidden), "{err}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_large_group_is_pushed_by_both_gateways_and_read_from_cassandra() {
    let Some(infra) = infra() else {
        eprintln!(
            "TERN_TEST_KAFKA/CQL/REDIS not set: skipping the distributed test (make test sets them)"
        );
        return;
    };
    // Every group of more than one member is large here.
    let cluster = Cluster::with_args(&infra, &[], &["--large-group-members", "1"]);
    let [alice_name, bob_name, carol_name] =
        ["alice", "bob", "carol"].map(tern_core::conformance::fresh);
    // alice's login waits for the services to be up.
    let alice = cluster.login(&cluster.gw1_addr, &alice_name, "phone").await;
    let token = tern_client::dev_token(&cluster.api_addr, &alice_name)
        .await
        .unwrap();
    let mut groups = tern_client::GroupApi::connect(&cluster.api_addr, token)
        .await
        .unwrap();
    let group = groups
        .create("big", &[bob_name.clone(), carol_name.clone()])
        .await
        .expect("group created");
    let conv = group.conversation.clone();
    // bob logs in after the group exists: his gateway reads his groups at
    // login (changes while online come through the feed, which a gateway
    // that just started may not be reading yet).
    let bob = cluster.login(&cluster.gw2_addr, &bob_name, "phone").await;
    let to_group = || Target::Conversation(conv.clone());
    // A gateway's group feed starts at the end of the topic: post until
    // bob (gateway 2) gets one live, then count from there.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let mut warm = 0;
    'warm: loop {
        assert!(
            tokio::time::Instant::now() < deadline,
            "no live group message reached gateway 2"
        );
        send_until_stored_to(&alice, to_group(), &format!("w{warm}"), format!("w{warm}")).await;
        warm += 1;
        while let Ok(Some(event)) =
            tokio::time::timeout(Duration::from_millis(200), bob.next_event()).await
        {
            if matches!(event, Event::GroupMessages { .. }) {
                break 'warm;
            }
        }
    }
    for i in 0..10 {
        send_until_stored_to(&alice, to_group(), &format!("g{i}"), format!("g{i}")).await;
    }
    let mut got = Vec::new();
    while got.len() < 10 {
        match tokio::time::timeout(Duration::from_secs(20), bob.next_event())
            .await
            .expect("live group messages")
        {
            Some(Event::GroupMessages { messages, .. }) => {
                got.extend(messages.into_iter().filter(|m| m.body.starts_with(b"g")))
            }
            other => panic!("expected large-group messages, got {other:?}"),
        }
    }
    assert_eq!(
        bodies(&got),
        (0..10).map(|i| format!("g{i}")).collect::<Vec<_>>()
    );
    let total = warm + 10;

    // carol was offline: her list and the group's history (in Cassandra).
    let carol = cluster.login(&cluster.gw1_addr, &carol_name, "phone").await;
    let list = carol.conversations(0).await.expect("list");
    let entry = list
        .iter()
        .find(|c| c.conversation == conv)
        .expect("listed");
    assert_eq!((entry.last_seq, entry.unread), (total, total));
    let (history, _, _) = carol.history(&conv, 0, 10).await.expect("history");
    assert_eq!(
        bodies(&history),
        (0..10).rev().map(|i| format!("g{i}")).collect::<Vec<_>>()
    );
    assert_eq!(carol.mark_read(&conv, u64::MAX).await.unwrap(), total);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_live_room_spans_both_gateways() {
    let Some(infra) = infra() else {
        eprintln!(
            "TERN_TEST_KAFKA/CQL/REDIS not set: skipping the distributed test (make test sets them)"
        );
        return;
    };
    let cluster = Cluster::new(&infra);
    let room = tern_core::conformance::fresh("room");
    let v1 = cluster
        .login(&cluster.gw1_addr, &tern_core::conformance::fresh("v"), "p")
        .await;
    let v2 = cluster
        .login(&cluster.gw2_addr, &tern_core::conformance::fresh("v"), "p")
        .await;
    let host = cluster
        .login(
            &cluster.gw1_addr,
            &tern_core::conformance::fresh("host"),
            "p",
        )
        .await;
    for c in [&v1, &v2, &host] {
        c.join_room(&room).await.expect("join");
    }
    // A gateway's room feed starts at the end of the topic: a first post
    // may precede the feed of a gateway that just started, so keep posting
    // until both gateways' viewers see one, then count from there.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let mut warm = [false, false];
    let mut i = 0;
    while !(warm[0] && warm[1]) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "room messages never reached both gateways"
        );
        host.post_to_room(&room, format!("warm-{i}"))
            .await
            .expect("post");
        i += 1;
        for (k, v) in [&v1, &v2].into_iter().enumerate() {
            while let Ok(Some(event)) =
                tokio::time::timeout(Duration::from_millis(100), v.next_event()).await
            {
                if matches!(event, Event::RoomMessages { .. }) {
                    warm[k] = true;
                }
            }
        }
    }
    for i in 0..50 {
        host.post_to_room(&room, format!("m{i}"))
            .await
            .expect("post");
    }
    for v in [&v1, &v2] {
        let mut got = Vec::new();
        while got.len() < 50 {
            let event = tokio::time::timeout(Duration::from_secs(20), v.next_event())
                .await
                .expect("room messages within 20 s");
            if let Some(Event::RoomMessages { room: r, messages }) = event {
                assert_eq!(r, room);
                got.extend(
                    bodies(&messages)
                        .into_iter()
                        .filter(|b| !b.starts_with("warm-")),
                );
            }
        }
        assert_eq!(got, (0..50).map(|i| format!("m{i}")).collect::<Vec<_>>());
    }
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
    let lb = Lb {
        api: cluster.api_addr.clone(),
        gateways: [cluster.gw1_addr.clone(), cluster.gw2_addr.clone()],
    };
    // 5,000 messages in flight: five senders on gateway 1, each to its own
    // receiver on gateway 2, one message after the other (so that seq
    // order can be checked against send order).
    const PAIRS: usize = 5;
    const PER_PAIR: usize = 1000;
    const TOTAL: usize = PAIRS * PER_PAIR;
    let progress = Arc::new(AtomicUsize::new(0));
    let mut receivers = Vec::new();
    let mut senders = Vec::new();
    for k in 0..PAIRS {
        let alice = tern_core::conformance::fresh(&format!("alice{k}"));
        let bob = tern_core::conformance::fresh(&format!("bob{k}"));
        receivers.push((
            bob.clone(),
            tokio::spawn(receive_stream(
                lb.clone(),
                1,
                bob.clone(),
                PER_PAIR,
                progress.clone(),
            )),
        ));
        senders.push(tokio::spawn(send_stream(
            lb.clone(),
            0,
            alice,
            bob,
            PER_PAIR,
        )));
    }
    // A fifth of the way in, SIGKILL the persister; at two fifths, the
    // router; at three fifths, gateway 2, whose clients log in on gateway 1
    // saying which cursor they stored (what the dead gateway pushed but
    // never saw ACKed is not shown again).
    wait_for(&progress, TOTAL / 5).await;
    cluster.persister.kill();
    tokio::time::sleep(Duration::from_millis(500)).await;
    cluster.persister.start();
    wait_for(&progress, 2 * TOTAL / 5).await;
    cluster.router.kill();
    tokio::time::sleep(Duration::from_millis(500)).await;
    cluster.router.start();
    wait_for(&progress, 3 * TOTAL / 5).await;
    cluster.gw2.kill();
    for s in senders {
        assert_eq!(
            s.await.expect("every send confirmed"),
            0,
            "senders on gateway 1 stayed"
        );
    }
    for (bob, r) in receivers {
        let got = r.await.expect("receiver");
        // Each message once, none lost, seq in send order.
        check_all_once_in_order(&bob, &got, PER_PAIR);
        assert!(got.reconnects >= 1, "{bob} moved to gateway 1");
    }
}
