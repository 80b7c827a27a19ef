//! `tern history`, `tern conversations` and `tern read`: reading
//! conversations, the conversation list page by page, and read marks.

use crate::common::{WAIT, last_line, start, stderr, stdout, tern};

#[tokio::test]
async fn conversations_history_and_read_marks() {
    let server = start(|_| {}).await;
    for i in 1..=3 {
        let sent = tern(
            &server,
            &["--user", "alice", "send", "--to", "bob", &format!("m{i}")],
        )
        .await;
        assert!(sent.status.success(), "{}", stderr(&sent));
    }
    // The router writes the list just after the send is confirmed.
    let mut list = String::new();
    for _ in 0..100 {
        let out = tern(&server, &["--user", "bob", "conversations"]).await;
        assert!(out.status.success(), "{}", stderr(&out));
        list = stdout(&out);
        if list.contains("\"last_seq\":3") {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let line: serde_json::Value = serde_json::from_str(list.trim()).expect(&list);
    assert_eq!(line["conversation"], "d:alice:bob");
    assert_eq!(line["unread"], 3);
    assert_eq!(line["last_message"]["body"], "m3");

    let history = tern(
        &server,
        &[
            "--user", "bob", "history", "--with", "alice", "--limit", "2",
        ],
    )
    .await;
    assert!(history.status.success(), "{}", stderr(&history));
    let bodies: Vec<String> = stdout(&history)
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["body"].to_string())
        .collect();
    assert_eq!(
        bodies,
        vec!["\"m2\"", "\"m3\""],
        "the newest two, oldest first"
    );
    let older = tern(
        &server,
        &[
            "--user", "bob", "history", "--with", "alice", "--before", "2",
        ],
    )
    .await;
    assert!(stdout(&older).contains("\"m1\"") && !stdout(&older).contains("\"m2\""));

    let read = tern(
        &server,
        &["--user", "bob", "read", "--with", "alice", "--seq", "2"],
    )
    .await;
    assert!(read.status.success(), "{}", stderr(&read));
    assert_eq!(last_line(&read), "2");
    let out = tern(&server, &["--user", "bob", "conversations"]).await;
    assert!(stdout(&out).contains("\"unread\":1"), "{}", stdout(&out));

    // Someone else's conversation: a clear refusal, exit 1.
    let refused = tern(
        &server,
        &[
            "--user",
            "mallory",
            "history",
            "--conversation",
            "d:alice:bob",
        ],
    )
    .await;
    assert_eq!(refused.status.code(), Some(1));
    assert!(
        stderr(&refused).contains("FORBIDDEN"),
        "{}",
        stderr(&refused)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn conversations_are_read_page_by_page() {
    let server = start(|_| {}).await;
    // More conversations than one page holds (100).
    const PEERS: usize = 130;
    let token = tern_client::dev_token(
        &format!("http://{}", server.running.api_addr.unwrap()),
        "hub",
    )
    .await
    .unwrap();
    let (client, _) = tern_client::Client::connect(
        &format!("tcp://{}", server.running.tcp_addr.unwrap()),
        tern_client::LoginOptions::new(token, "setup").send_only(),
    )
    .await
    .unwrap();
    for i in 0..PEERS {
        client
            .send_to(format!("peer{i:03}"), b"hi".to_vec())
            .await
            .unwrap();
    }
    // The router writes the list just after each send is confirmed.
    let deadline = std::time::Instant::now() + WAIT;
    let all = loop {
        let out = tern(&server, &["--user", "hub", "conversations"]).await;
        assert!(out.status.success(), "{}", stderr(&out));
        let lines: Vec<String> = stdout(&out).lines().map(str::to_owned).collect();
        if lines.len() == PEERS {
            break lines;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{} of {PEERS} conversations listed",
            lines.len()
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    };
    let mut ids: Vec<String> = all
        .iter()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["conversation"].to_string())
        .collect();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), PEERS, "each conversation once");

    for limit in [5, 120] {
        let out = tern(
            &server,
            &[
                "--user",
                "hub",
                "conversations",
                "--limit",
                &limit.to_string(),
            ],
        )
        .await;
        assert!(out.status.success(), "{}", stderr(&out));
        let lines: Vec<String> = stdout(&out).lines().map(str::to_owned).collect();
        assert_eq!(lines.len(), limit, "--limit is the total");
        assert_eq!(lines[..], all[..limit], "the most recent, in order");
    }
}
