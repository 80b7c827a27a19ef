//! `tern block`, `tern unblock` and `tern blocked`.

use crate::common::{start, stderr, stdout, tern};

#[tokio::test(flavor = "multi_thread")]
async fn block_unblock_and_the_block_list() {
    let server = start(|_| {}).await;
    let blocked = tern(&server, &["--user", "bob", "block", "alice"]).await;
    assert!(blocked.status.success(), "{}", stderr(&blocked));
    let list = tern(&server, &["--user", "bob", "blocked"]).await;
    assert!(list.status.success(), "{}", stderr(&list));
    assert_eq!(stdout(&list), "alice\n");

    let refused = tern(&server, &["--user", "alice", "send", "--to", "bob", "hi"]).await;
    assert_eq!(refused.status.code(), Some(1));
    assert!(stderr(&refused).contains("BLOCKED"), "{}", stderr(&refused));
    // Blocking is one way: bob still writes to alice.
    let reply = tern(&server, &["--user", "bob", "send", "--to", "alice", "hi"]).await;
    assert!(reply.status.success(), "{}", stderr(&reply));

    let unblocked = tern(&server, &["--user", "bob", "unblock", "alice"]).await;
    assert!(unblocked.status.success(), "{}", stderr(&unblocked));
    let list = tern(&server, &["--user", "bob", "blocked"]).await;
    assert!(list.status.success(), "{}", stderr(&list));
    assert_eq!(stdout(&list), "", "nobody blocked");
    let sent = tern(
        &server,
        &["--user", "alice", "send", "--to", "bob", "hi again"],
    )
    .await;
    assert!(sent.status.success(), "{}", stderr(&sent));
    // bob's inbox: his own reply (for his other devices), then alice's
    // message once unblocked; the refused one is stored nowhere.
    let got = tern(&server, &["--user", "bob", "listen", "--count", "2"]).await;
    assert!(got.status.success(), "{}", stderr(&got));
    let lines: Vec<(String, String)> = stdout(&got)
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            (v["from"].to_string(), v["body"].to_string())
        })
        .collect();
    assert_eq!(
        lines,
        [
            ("\"bob\"".to_owned(), "\"hi\"".to_owned()),
            ("\"alice\"".to_owned(), "\"hi again\"".to_owned())
        ]
    );
}
