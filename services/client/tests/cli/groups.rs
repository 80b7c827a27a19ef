//! `tern group …`: creating a group, sending to it, and managing its
//! members.

use crate::common::{last_line, start, stderr, stdout, tern};

#[tokio::test(flavor = "multi_thread")]
async fn group_create_send_members_add_and_remove() {
    let server = start(|_| {}).await;
    let created = tern(
        &server,
        &[
            "--user",
            "alice",
            "group",
            "create",
            "--members",
            "bob,carol",
            "--name",
            "team",
        ],
    )
    .await;
    assert!(created.status.success(), "{}", stderr(&created));
    let group = last_line(&created);
    assert_eq!(group.len(), 32, "a group id: {group}");

    let members = tern(
        &server,
        &["--user", "bob", "group", "members", "--group", &group],
    )
    .await;
    assert!(members.status.success(), "{}", stderr(&members));
    assert_eq!(stdout(&members), "alice\nbob\ncarol\n");

    let sent = tern(
        &server,
        &["--user", "alice", "send", "--group", &group, "hello team"],
    )
    .await;
    assert!(sent.status.success(), "{}", stderr(&sent));
    for user in ["bob", "carol"] {
        let got = tern(&server, &["--user", user, "listen", "--count", "1"]).await;
        let line: serde_json::Value = serde_json::from_str(&last_line(&got)).unwrap();
        assert_eq!(line["body"], "hello team");
        assert_eq!(line["conversation"], format!("g:{group}"));
    }

    // Only the owner adds; then dave is a member and can post.
    let refused = tern(
        &server,
        &[
            "--user", "bob", "group", "add", "--group", &group, "--member", "dave",
        ],
    )
    .await;
    assert_eq!(refused.status.code(), Some(1));
    assert!(
        stderr(&refused).contains("only the owner"),
        "{}",
        stderr(&refused)
    );
    let added = tern(
        &server,
        &[
            "--user", "alice", "group", "add", "--group", &group, "--member", "dave",
        ],
    )
    .await;
    assert!(added.status.success(), "{}", stderr(&added));
    let list = tern(&server, &["--user", "dave", "group", "list"]).await;
    let line: serde_json::Value = serde_json::from_str(&last_line(&list)).unwrap();
    assert_eq!(line["id"], group.as_str());
    assert_eq!(line["members"], 4);

    let removed = tern(
        &server,
        &[
            "--user", "alice", "group", "remove", "--group", &group, "--member", "dave",
        ],
    )
    .await;
    assert!(removed.status.success(), "{}", stderr(&removed));
    let refused = tern(
        &server,
        &["--user", "dave", "send", "--group", &group, "still here?"],
    )
    .await;
    assert_eq!(refused.status.code(), Some(1));
    assert!(
        stderr(&refused).contains("FORBIDDEN"),
        "{}",
        stderr(&refused)
    );
}
