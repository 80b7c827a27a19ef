//! Limits slow clients down with a clear code and never lose data
//! silently: pipelined sends are all answered, sends above the rate are
//! refused with RATE_LIMITED and stored nowhere, connections beyond the
//! per-address and per-user bounds are turned away with a code, a stranger
//! cannot make the gateway buffer a large frame, and an abuser does not
//! slow other users down.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::{Raw, Server, eventually, login_frame};
use futures_util::future::join_all;
use tern_chat::limits::Rate;
use tern_client::{Client, Event, LoginOptions, SendOptions};
use tern_gateway::limits::LimitsConfig;
use tern_proto::api::HistoryRequest;
use tern_proto::client::{ErrorCode, client_frame, server_frame};
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpSocket, TcpStream};

/// How many messages the conversation holds (read through the back end).
async fn stored(server: &Server, conversation: &str) -> usize {
    let mut backend = server.backend().await;
    let mut count = 0;
    let mut before = 0;
    loop {
        let page = backend
            .history(HistoryRequest {
                conversation: conversation.into(),
                before_seq: before,
                limit: 1000,
            })
            .await
            .unwrap()
            .into_inner();
        count += page.messages.len();
        match page.messages.last() {
            Some(m) if page.has_more => before = m.seq,
            _ => return count,
        }
    }
}

/// Sends `n` messages from `client` to `to` all at once, without waiting
/// for any answer first; returns how many were stored and how many refused
/// as RATE_LIMITED (each with a retry time). Any other answer fails.
async fn pipeline(client: &Client, to: &str, n: usize, tag: &str) -> (usize, usize) {
    let sends = (0..n).map(|i| {
        client.send(
            SendOptions::to_user(to, format!("{tag}-{i}")).with_client_msg_id(format!("{tag}-{i}")),
        )
    });
    let (mut ok, mut limited) = (0, 0);
    for result in join_all(sends).await {
        match result {
            Ok(_) => ok += 1,
            Err(e) if e.code() == Some(ErrorCode::RateLimited) => {
                assert!(e.retry_after().is_some(), "{e}");
                limited += 1;
            }
            Err(e) => panic!("a pipelined send got {e}"),
        }
    }
    (ok, limited)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_thousand_pipelined_sends_are_all_answered_and_the_client_stays() {
    // No rate limit: only flow control. The outbound queue (64 frames) is
    // far smaller than the burst; before flow control this client was
    // dropped as SLOW_CONSUMER after about 100 sends.
    let server = Server::start().await;
    let alice = server.login("alice", "phone").await;
    let (ok, limited) = pipeline(&alice, "bob", 3000, "p").await;
    assert_eq!((ok, limited), (3000, 0));
    assert_eq!(alice.closed_reason(), None, "never disconnected");
    assert_eq!(stored(&server, "d:alice:bob").await, 3000);
    alice
        .send_to("bob", "still here")
        .await
        .expect("still connected");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sends_above_the_rate_are_refused_and_stored_nowhere() {
    let server = Server::start_with(|c| {
        c.gateway.limits.sends = Rate::per_second(50.0, 100);
    })
    .await;
    let alice = server.login("alice", "phone").await;
    let started = Instant::now();
    let (ok, limited) = pipeline(&alice, "bob", 3000, "r").await;
    let elapsed = started.elapsed().as_secs_f64();
    assert_eq!(ok + limited, 3000, "every send answered");
    assert!(limited > 0, "3000 at once is far above 50/s");
    assert!(
        ok as f64 <= 100.0 + 50.0 * elapsed + 1.0,
        "{ok} stored in {elapsed:.1} s: more than the burst and the rate allow"
    );
    assert_eq!(
        stored(&server, "d:alice:bob").await,
        ok,
        "exactly the accepted sends are stored"
    );
    assert_eq!(alice.closed_reason(), None, "limited, not disconnected");
    let metrics = reqwest_metrics(&server).await;
    assert!(
        metrics.contains("tern_gateway_limited_total{limit=\"sends\"}"),
        "refusals are counted"
    );
}

/// The gateway's /metrics text.
async fn reqwest_metrics(server: &Server) -> String {
    use tokio::io::AsyncReadExt;
    let addr = server.running.admin_addr.expect("admin listener");
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(b"GET /metrics HTTP/1.0\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).await.unwrap();
    out
}

/// The median send → push time of `n` messages from `from` to `to`.
async fn median_latency(from: &Client, to: &Client, n: usize, tag: &str) -> Duration {
    let mut times = Vec::new();
    for i in 0..n {
        let started = Instant::now();
        from.send_to(to.user_id(), format!("{tag}{i}"))
            .await
            .expect("send");
        loop {
            match tokio::time::timeout(Duration::from_secs(20), to.next_event()).await {
                Ok(Some(Event::Messages {
                    messages,
                    last_cursor,
                    ..
                })) => {
                    to.ack(last_cursor).await.unwrap();
                    if messages
                        .iter()
                        .any(|m| m.body == format!("{tag}{i}").as_bytes())
                    {
                        break;
                    }
                }
                other => panic!("waiting for a push, got {other:?}"),
            }
        }
        times.push(started.elapsed());
    }
    times.sort();
    times[n / 2]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_abuser_does_not_slow_other_users_down() {
    // The defaults: 20 sends/s, 100 frames/s per connection.
    let server = Server::start_with(|c| c.gateway.limits = LimitsConfig::default()).await;
    let carol = server.login("carol", "phone").await;
    let dave = server.login("dave", "phone").await;
    let unloaded = median_latency(&carol, &dave, 20, "u").await;

    let abuser = server.login("mallory", "phone").await;
    let (stop_tx, stop) = tokio::sync::watch::channel(false);
    let hammer = tokio::spawn(async move {
        let mut refused = 0u64;
        let mut i = 0u64;
        while !*stop.borrow() {
            let burst = (0..200).map(|j| {
                abuser.send(
                    SendOptions::to_user("victim", "spam").with_client_msg_id(format!("s{i}-{j}")),
                )
            });
            for r in join_all(burst).await {
                if matches!(r, Err(ref e) if e.code() == Some(ErrorCode::RateLimited)) {
                    refused += 1;
                }
            }
            i += 1;
        }
        refused
    });
    let loaded = median_latency(&carol, &dave, 20, "l").await;
    stop_tx.send(true).unwrap();
    let refused = hammer.await.unwrap();
    eprintln!(
        "send → push median: {unloaded:?} unloaded, {loaded:?} while an abuser hammers ({refused} of its sends refused)"
    );
    assert!(refused > 0, "the abuser was limited");
    // Loose: twice the unloaded figure, plus 50 ms for a loaded CI machine.
    assert!(
        loaded <= unloaded * 2 + Duration::from_millis(50),
        "{loaded:?} under abuse against {unloaded:?} without"
    );
}

/// A TCP connection to `server` from `source` (another loopback address
/// is another client address).
async fn connect_from(source: &str, server: SocketAddr) -> TcpStream {
    let socket = TcpSocket::new_v4().unwrap();
    socket.bind(format!("{source}:0").parse().unwrap()).unwrap();
    socket.connect(server).await.unwrap()
}

/// The error a refused connection is told before it is closed.
async fn refusal(mut raw: Raw) -> tern_proto::client::Error {
    let error = raw.read_until_closed().await.expect("told why");
    assert!(error.fatal);
    error
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_address_at_its_limit_is_refused_while_another_still_connects() {
    let server = Server::start_with(|c| {
        c.gateway.limits.connections_per_ip = 10;
    })
    .await;
    let addr = server.running.tcp_addr.unwrap();
    let mut held = Vec::new();
    for _ in 0..10 {
        held.push(Raw::from_stream(connect_from("127.0.0.1", addr).await));
    }
    // The 10 are counted once accepted: wait until an 11th is refused.
    let first = eventually("the address to be at its limit", || async {
        let mut raw = Raw::from_stream(connect_from("127.0.0.1", addr).await);
        match raw.read().await {
            Some(server_frame::Kind::Error(e)) => Some(e),
            _ => None,
        }
    })
    .await;
    assert_eq!(first.code(), ErrorCode::TooManyConnections);
    assert!(first.retry_after_ms > 0);
    // 1000 more attempts, 50 at a time: every one refused with the code.
    for _ in 0..20 {
        let batch = (0..50).map(|_| async {
            let raw = Raw::from_stream(connect_from("127.0.0.1", addr).await);
            refusal(raw).await.code()
        });
        for code in join_all(batch).await {
            assert_eq!(code, ErrorCode::TooManyConnections);
        }
    }
    // Another address is not affected.
    let token = server.token("erin").await;
    let mut other = Raw::from_stream(connect_from("127.0.0.2", addr).await);
    other.write(login_frame(&token, "phone")).await;
    assert!(matches!(
        other.read().await,
        Some(server_frame::Kind::LoginResult(_))
    ));
    // A place freed is a place again.
    drop(held.pop());
    eventually("a freed place to be taken", || async {
        let mut raw = Raw::from_stream(connect_from("127.0.0.1", addr).await);
        raw.write(client_frame::Kind::Heartbeat(Default::default()))
            .await;
        matches!(raw.read().await, Some(server_frame::Kind::HeartbeatAck(_))).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn too_many_new_connections_from_an_address_are_rate_limited() {
    let server = Server::start_with(|c| {
        c.gateway.limits.new_connections_per_ip = Rate::per_second(5.0, 10);
    })
    .await;
    let addr = server.running.tcp_addr.unwrap();
    let mut limited = 0;
    for _ in 0..10 {
        let batch = (0..100).map(|_| async {
            let mut raw = Raw::from_stream(connect_from("127.0.0.1", addr).await);
            raw.write(client_frame::Kind::Heartbeat(Default::default()))
                .await;
            raw.read().await
        });
        for answer in join_all(batch).await {
            match answer {
                Some(server_frame::Kind::Error(e)) => {
                    assert_eq!(e.code(), ErrorCode::RateLimited);
                    assert!(e.retry_after_ms > 0);
                    limited += 1;
                }
                Some(server_frame::Kind::HeartbeatAck(_)) => {}
                other => panic!("{other:?}"),
            }
        }
    }
    assert!(limited >= 900, "{limited} of 1000 refused");
    let token = server.token("erin").await;
    let mut other = Raw::from_stream(connect_from("127.0.0.2", addr).await);
    other.write(login_frame(&token, "phone")).await;
    assert!(matches!(
        other.read().await,
        Some(server_frame::Kind::LoginResult(_))
    ));
}

#[tokio::test]
async fn a_user_at_the_connection_limit_gets_a_code_and_a_device_may_reconnect() {
    let server = Server::start_with(|c| c.gateway.limits.connections_per_user = 2).await;
    let phone = server.login("alice", "phone").await;
    let _laptop = server.login("alice", "laptop").await;
    let token = server.token("alice").await;
    let err = Client::connect(&server.tcp(), LoginOptions::new(token.clone(), "tablet"))
        .await
        .err()
        .expect("a third device is refused");
    assert_eq!(err.code(), Some(ErrorCode::TooManyConnections), "{err}");
    // The phone logging in again replaces its old connection: allowed.
    let (again, _) = Client::connect(&server.tcp(), LoginOptions::new(token, "phone"))
        .await
        .expect("the same device reconnects");
    phone.closed().await;
    assert!(
        phone.closed_reason().unwrap().contains("SESSION_REPLACED"),
        "{:?}",
        phone.closed_reason()
    );
    drop(again);
}

#[tokio::test]
async fn the_login_result_tells_the_client_its_limits() {
    let server = Server::start_with(|c| {
        c.gateway.limits = LimitsConfig::default();
    })
    .await;
    let alice = server.login("alice", "phone").await;
    let limits = alice.login_result().limits.expect("limits");
    assert_eq!(limits.sends_per_second, 20);
    assert_eq!(limits.send_burst, 100);
    assert_eq!(limits.frames_per_second, 100);
    assert_eq!(limits.max_sends_in_flight, 256);
    assert_eq!(limits.max_frame_bytes, 1 << 20);
}

#[tokio::test]
async fn a_large_frame_before_login_is_refused_before_it_is_buffered() {
    let server = Server::start().await;
    let addr = server.running.tcp_addr.unwrap();
    let mut raw = Raw::connect(addr).await;
    // Announces 1 MiB, under the frame limit; sends 40 KiB of it.
    raw.stream
        .write_all(&(1u32 << 20).to_be_bytes())
        .await
        .unwrap();
    let _ = raw.stream.write_all(&vec![0u8; 40 * 1024]).await;
    let error = raw.read_until_closed().await.expect("told why");
    assert_eq!(error.code(), ErrorCode::FrameTooLarge);
    assert!(error.message.contains("before login"), "{}", error.message);

    // The same over WebSocket.
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message as Ws;
    let (mut ws, _) = tokio_tungstenite::connect_async(server.ws()).await.unwrap();
    let _ = ws.send(Ws::Binary(vec![0u8; 100 * 1024].into())).await;
    let mut told = None;
    while let Some(Ok(m)) = ws.next().await {
        if let Ws::Binary(b) = m
            && let Ok(server_frame::Kind::Error(e)) = tern_wire::decode_server(&b)
        {
            told = Some(e);
        }
    }
    let error = told.expect("told why over WebSocket");
    assert_eq!(error.code(), ErrorCode::FrameTooLarge);

    // After login, frames up to the limit are fine.
    let alice = server.login("alice", "phone").await;
    alice
        .send(SendOptions::to_user("bob", vec![b'x'; 60 * 1024]))
        .await
        .expect("a 60 KiB message after login");
}

#[tokio::test]
async fn a_fast_connection_is_read_more_slowly_not_dropped() {
    let server = Server::start_with(|c| {
        c.gateway.limits.frames = Rate::per_second(10.0, 20);
    })
    .await;
    let addr = server.running.tcp_addr.unwrap();
    let mut raw = Raw::connect(addr).await;
    let started = Instant::now();
    for _ in 0..60 {
        raw.write(client_frame::Kind::Heartbeat(Default::default()))
            .await;
    }
    for i in 0..60 {
        match raw.read().await {
            Some(server_frame::Kind::HeartbeatAck(_)) => {}
            other => panic!("heartbeat {i}: {other:?}"),
        }
    }
    // 20 at once, then 10 a second: the other 40 take at least 4 s (a
    // lower bound, which a slow machine only makes longer).
    assert!(
        started.elapsed() >= Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_queue_full_of_receipts_does_not_stall_the_connection() {
    // Rounds of sends that fill the outbound queue exactly with their
    // receipts: reading must resume as soon as the queue drains, not at
    // the next timer (a bug once: each round then took 10 s).
    // A send-only connection: no pushes of its own messages wake it.
    let server = Server::start_with(|c| c.gateway.outbound_queue = 8).await;
    let token = server.token("alice").await;
    let (alice, _) = Client::connect(&server.tcp(), LoginOptions::new(token, "bot").send_only())
        .await
        .unwrap();
    let started = Instant::now();
    for round in 0..20 {
        let (ok, limited) = pipeline(&alice, "bob", 8, &format!("w{round}")).await;
        assert_eq!((ok, limited), (8, 0));
    }
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "20 rounds took {:?}",
        started.elapsed()
    );
}
