//! ternd under abuse and failure: a SIGKILLed server, malformed and
//! oversized frames, idle and slow clients. Each test says what the client sees.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::{Raw, Server, bodies, free_port, login_frame, receive, spawn_ternd};
use tern_client::{Client, LoginOptions};
use tern_proto::client::{ErrorCode, Heartbeat, Send, client_frame, server_frame};

const WAIT: Duration = Duration::from_secs(20);

#[tokio::test]
async fn a_message_acknowledged_before_sigkill_is_delivered_after_restart() {
    let dir = tempfile::tempdir().unwrap();
    let ports = (free_port(), free_port(), free_port());
    let mut first = spawn_ternd(dir.path(), ports, &[]).await;
    let alice_token = tern_client::dev_token(&first.api, "alice").await.unwrap();
    let (alice, _) = Client::connect(&first.tcp, LoginOptions::new(alice_token.clone(), "phone"))
        .await
        .unwrap();
    let mut sent = Vec::new();
    for i in 0..20 {
        // Each send returns only once the persister stored it.
        sent.push(
            alice
                .send_to("bob", format!("before-kill-{i}"))
                .await
                .expect("acknowledged send")
                .message_id,
        );
    }
    first.child.kill().expect("SIGKILL"); // std's kill() is SIGKILL on Unix
    first.child.wait().unwrap();
    drop(alice);

    let mut second = spawn_ternd(dir.path(), ports, &[]).await;
    // The dev secret survived too: the old token still logs in.
    let bob_token = tern_client::dev_token(&second.api, "bob").await.unwrap();
    let (bob, _) = Client::connect(&second.tcp, LoginOptions::new(bob_token, "phone"))
        .await
        .unwrap();
    let got = receive(&bob, 20, WAIT).await;
    assert_eq!(
        bodies(&got),
        (0..20)
            .map(|i| format!("before-kill-{i}"))
            .collect::<Vec<_>>()
    );
    assert_eq!(
        got.iter().map(|m| m.message_id.clone()).collect::<Vec<_>>(),
        sent
    );
    let (alice, _) = Client::connect(&second.tcp, LoginOptions::new(alice_token, "phone"))
        .await
        .expect("old token works");
    // Sequence numbers go on from where they were.
    assert_eq!(alice.send_to("bob", "after").await.unwrap().seq, 21);
    second.child.kill().unwrap();
    second.child.wait().unwrap();
}

#[tokio::test]
async fn a_malformed_frame_gets_an_error_and_a_close_while_others_are_served() {
    let server = Server::start().await;
    let bob = server.login("bob", "phone").await;
    let mut raw = Raw::connect(server.running.tcp_addr.expect("service running")).await;
    raw.write_frame(&[0xff, 0xff, 0xff, 0xff, 0x0f, 0x01]).await;
    let err = raw
        .read_until_closed()
        .await
        .expect("an error frame before the close");
    assert_eq!(err.code(), ErrorCode::MalformedFrame, "{err:?}");
    assert!(err.fatal);
    // Other connections carry on.
    let alice = server.login("alice", "phone").await;
    alice.send_to("bob", "still here").await.unwrap();
    assert_eq!(bodies(&receive(&bob, 1, WAIT).await), vec!["still here"]);
}

#[tokio::test]
async fn a_frame_over_the_limit_is_refused_before_it_is_read() {
    let server = Server::start().await;
    let mut raw = Raw::connect(server.running.tcp_addr.expect("service running")).await;
    use tokio::io::AsyncWriteExt;
    // Announce 100 MiB and send nothing more: the gateway must not wait for (or buffer) it.
    raw.stream
        .write_all(&(100u32 << 20).to_be_bytes())
        .await
        .unwrap();
    let err = raw.read_until_closed().await.expect("an error frame");
    assert_eq!(err.code(), ErrorCode::FrameTooLarge, "{err:?}");
    assert!(err.message.contains("over the limit"), "{}", err.message);
}

#[tokio::test]
async fn a_websocket_text_message_is_refused() {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;
    let server = Server::start().await;
    let (mut ws, _) = tokio_tungstenite::connect_async(server.ws()).await.unwrap();
    ws.send(Message::Text("hello".into())).await.unwrap();
    let mut error = None;
    while let Some(Ok(m)) = ws.next().await {
        if let Message::Binary(b) = m
            && let Ok(server_frame::Kind::Error(e)) = tern_wire::decode_server(&b)
        {
            error = Some(e);
        }
    }
    let e = error.expect("an error frame");
    assert_eq!(e.code(), ErrorCode::MalformedFrame);
    assert!(e.message.contains("binary"), "{}", e.message);
}

#[tokio::test]
async fn frames_before_login_are_refused_and_login_must_come_in_time() {
    let server = Server::start_with(|c| c.gateway.login_timeout = Duration::from_millis(300)).await;
    let mut raw = Raw::connect(server.running.tcp_addr.expect("service running")).await;
    raw.write(client_frame::Kind::Send(Send {
        client_msg_id: "x".into(),
        ..Default::default()
    }))
    .await;
    match raw.read().await {
        Some(server_frame::Kind::Error(e)) => {
            assert_eq!(e.code(), ErrorCode::NotLoggedIn);
            assert_eq!(e.client_msg_id, "x");
        }
        other => panic!("expected NOT_LOGGED_IN, got {other:?}"),
    }
    // Heartbeats before login are fine, but do not stand in for a login.
    raw.write(client_frame::Kind::Heartbeat(Heartbeat {})).await;
    let err = raw.read_until_closed().await.expect("error frame");
    assert_eq!(err.code(), ErrorCode::Unauthenticated, "{err:?}");
}

#[tokio::test]
async fn an_idle_connection_is_closed_with_a_reason() {
    let server = Server::start_with(|c| {
        // A heartbeat every 100 ms against a 1.5 s limit: a loaded machine
        // may stall the client for a while without failing the test.
        c.gateway.heartbeat_interval = Duration::from_millis(100);
        c.gateway.idle_timeout = Duration::from_millis(1500);
    })
    .await;
    let token = server.token("bob").await;
    let mut raw = Raw::connect(server.running.tcp_addr.expect("service running")).await;
    raw.write(login_frame(&token, "phone")).await;
    let err = raw.read_until_closed().await.expect("error frame");
    assert_eq!(err.code(), ErrorCode::IdleTimeout, "{err:?}");
    // A client that heartbeats stays.
    let mut opts = LoginOptions::new(server.token("alice").await, "phone");
    opts.heartbeats = true;
    let (alice, _) = Client::connect(&server.tcp(), opts).await.unwrap();
    // Twice the idle limit.
    tokio::time::sleep(Duration::from_millis(3000)).await;
    alice
        .send_to("bob", "alive")
        .await
        .expect("heartbeats kept the connection open");
}

#[tokio::test]
async fn a_second_login_of_the_same_device_replaces_the_first() {
    let server = Server::start().await;
    let token = server.token("bob").await;
    let mut first = Raw::connect(server.running.tcp_addr.expect("service running")).await;
    first.write(login_frame(&token, "phone")).await;
    assert!(matches!(
        first.read().await,
        Some(server_frame::Kind::LoginResult(_))
    ));
    let _second = server.login("bob", "phone").await;
    let err = first.read_until_closed().await.expect("error frame");
    assert_eq!(err.code(), ErrorCode::SessionReplaced);
}

#[tokio::test]
async fn a_client_that_stops_reading_is_disconnected_with_a_reason() {
    let server = Server::start_with(|c| {
        c.gateway.ack_timeout = Duration::from_millis(100);
        c.gateway.write_timeout = Duration::from_millis(300);
        c.gateway.max_body_bytes = 60_000;
    })
    .await;
    let token = server.token("bob").await;
    // bob's socket has a tiny receive buffer, and bob stops reading after login.
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let stream = socket
        .connect(server.running.tcp_addr.expect("service running"))
        .await
        .unwrap();
    let mut bob = Raw::from_stream(stream);
    bob.write(login_frame(&token, "phone")).await;
    assert!(matches!(
        bob.read().await,
        Some(server_frame::Kind::LoginResult(_))
    ));
    let alice = server.login("alice", "phone").await;
    // alice keeps sending while bob dawdles: how long her 300 sends take
    // depends on the machine, and bob's pace must not.
    let sending = tokio::spawn(async move {
        for i in 0..300 {
            alice
                .send_to("bob", vec![b'a' + (i % 26) as u8; 50_000])
                .await
                .expect("a send is stored whatever bob does");
        }
        alice
    });
    // bob wakes up now and then and reads what is there, never ACKing;
    // the gateway, blocked on his socket, drops him and says why.
    let mut reason = None;
    loop {
        tokio::time::sleep(Duration::from_millis(1500)).await;
        let (errors, closed) = bob.drain_available().await;
        reason = errors.into_iter().last().or(reason);
        if closed {
            break;
        }
    }
    let reason = reason.expect("told why before the close");
    assert_eq!(reason.code(), ErrorCode::SlowConsumer, "{reason:?}");
    // Nobody else was held up, and bob's messages wait in his inbox.
    let alice = sending.await.expect("alice's sends");
    alice.send_to("carol", "unaffected").await.unwrap();
    let bob = server.login("bob", "phone").await;
    assert_eq!(receive(&bob, 300, WAIT).await.len(), 300);
}

#[tokio::test]
async fn a_slow_reader_gets_everything_at_its_own_pace() {
    let server = Server::start_with(|c| {
        c.gateway.outbound_queue = 4;
        c.gateway.max_body_bytes = 60_000;
    })
    .await;
    let bob = server.login("bob", "phone").await;
    let alice = server.login("alice", "phone").await;
    for i in 0..100 {
        alice
            .send_to("bob", vec![b'a' + (i % 26) as u8; 50_000])
            .await
            .unwrap();
    }
    let mut got = 0;
    while got < 100 {
        match tokio::time::timeout(WAIT, bob.next_event())
            .await
            .expect("pushes keep coming")
        {
            Some(tern_client::Event::Messages {
                messages,
                last_cursor,
                ..
            }) => {
                got += messages.len();
                // Slow: a pause before each ACK. Pushes wait for the ACKs instead of piling up.
                tokio::time::sleep(Duration::from_millis(20)).await;
                bob.ack(last_cursor).await.unwrap();
            }
            other => panic!("a slow but steady reader must not be dropped: {other:?}"),
        }
    }
    assert_eq!(got, 100);
}
