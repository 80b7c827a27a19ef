//! `tern token`, `send`, `listen` and `chat`: messages go out and come
//! back, retries keep their message id, and failures exit non-zero with a
//! clear reason (and when to retry, where the server says).

use std::process::Command;

use crate::common::{last_line, start, stderr, stdout, tern, tern_command};

#[tokio::test(flavor = "multi_thread")]
async fn token_send_and_listen() {
    let server = start(|_| {}).await;

    let token = tern(&server, &["token", "--user", "alice"]).await;
    assert!(token.status.success(), "{}", stderr(&token));
    assert_eq!(
        last_line(&token).split('.').count(),
        3,
        "a JWT: {}",
        last_line(&token)
    );

    let mut ids = Vec::new();
    for text in ["hello bob", "second"] {
        let sent = tern(&server, &["--user", "alice", "send", "--to", "bob", text]).await;
        assert!(sent.status.success(), "{}", stderr(&sent));
        let id = last_line(&sent);
        assert!(
            uuid::Uuid::parse_str(&id).is_ok(),
            "message id is a UUID: {id}"
        );
        ids.push(id);
    }
    // The token printed above works as --token too.
    let sent = tern(
        &server,
        &[
            "--token",
            &last_line(&token),
            "send",
            "--to",
            "bob",
            "third",
        ],
    )
    .await;
    assert!(sent.status.success(), "{}", stderr(&sent));
    ids.push(last_line(&sent));

    let listened = tern(&server, &["--user", "bob", "listen", "--count", "3"]).await;
    assert!(listened.status.success(), "{}", stderr(&listened));
    let lines: Vec<serde_json::Value> = stdout(&listened)
        .lines()
        .map(|l| serde_json::from_str(l).expect("one JSON object per line"))
        .collect();
    assert_eq!(lines.len(), 3);
    for (line, (id, body)) in lines
        .iter()
        .zip(ids.iter().zip(["hello bob", "second", "third"]))
    {
        assert_eq!(line["id"], id.as_str());
        assert_eq!(line["body"], body);
        assert_eq!(line["from"], "alice");
        assert_eq!(line["conversation"], "d:alice:bob");
    }

    // listen ACKed what it printed: the next listen gets only what is new.
    let sent = tern(
        &server,
        &["--user", "alice", "send", "--to", "bob", "fourth"],
    )
    .await;
    assert!(sent.status.success());
    let listened = tern(&server, &["--user", "bob", "listen", "--count", "1"]).await;
    let line: serde_json::Value =
        serde_json::from_str(stdout(&listened).lines().next().unwrap()).unwrap();
    assert_eq!(line["body"], "fourth");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_retry_with_the_same_client_id_prints_the_same_message_id() {
    let server = start(|_| {}).await;
    let a = tern(
        &server,
        &[
            "--user",
            "alice",
            "send",
            "--to",
            "bob",
            "--client-id",
            "retry-1",
            "hi",
        ],
    )
    .await;
    let b = tern(
        &server,
        &[
            "--user",
            "alice",
            "send",
            "--to",
            "bob",
            "--client-id",
            "retry-1",
            "hi",
        ],
    )
    .await;
    assert!(a.status.success() && b.status.success());
    assert_eq!(last_line(&a), last_line(&b));
}

#[tokio::test(flavor = "multi_thread")]
async fn errors_are_clear_and_exit_non_zero() {
    let server = start(|c| c.gateway.max_body_bytes = 10).await;

    let too_big = tern(
        &server,
        &[
            "--user",
            "alice",
            "send",
            "--to",
            "bob",
            "this is more than ten bytes",
        ],
    )
    .await;
    assert_eq!(too_big.status.code(), Some(1));
    assert!(
        stderr(&too_big).contains("MESSAGE_TOO_LARGE"),
        "{}",
        stderr(&too_big)
    );

    let no_user = tern(&server, &["send", "--to", "bob", "hi"]).await;
    assert_eq!(
        no_user.status.code(),
        Some(2),
        "usage error: {}",
        stderr(&no_user)
    );

    let bad_token = tern(
        &server,
        &["--token", "nonsense", "send", "--to", "bob", "hi"],
    )
    .await;
    assert_eq!(bad_token.status.code(), Some(1));
    assert!(
        stderr(&bad_token).contains("UNAUTHENTICATED"),
        "{}",
        stderr(&bad_token)
    );

    let unreachable = Command::new(env!("CARGO_BIN_EXE_tern"))
        .env_clear()
        .args([
            "--server",
            "tcp://127.0.0.1:1",
            "--token",
            "x",
            "send",
            "--to",
            "bob",
            "hi",
        ])
        .output()
        .unwrap();
    assert_eq!(unreachable.status.code(), Some(1));
    assert!(!stderr(&unreachable).trim().is_empty(), "says what failed");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_rate_limited_send_says_when_to_retry() {
    // One send a second, no burst: the gateway's default limits, tightened.
    let limits = ternd::config::Settings {
        sends_per_second: Some(1),
        send_burst: Some(1),
        ..Default::default()
    }
    .resolve()
    .expect("valid settings")
    .gateway
    .limits;
    let server = start(|c| c.gateway.limits.sends = limits.sends).await;
    // chat sends each line at once, one after the other on one connection.
    let mut chat = tern_command(&server, &["--user", "alice", "chat", "--to", "bob"]);
    chat.stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let out = tokio::task::spawn_blocking(move || {
        use std::io::Write as _;
        let mut child = chat.spawn().expect("tern runs");
        child
            .stdin
            .take()
            .expect("piped")
            .write_all(b"one\ntwo\nthree\nfour\n")
            .expect("chat reads stdin");
        child.wait_with_output().expect("tern exits")
    })
    .await
    .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains("(RATE_LIMITED), retry after "),
        "the refusal names the code and the wait: {err}"
    );
}
