//! `tern archive …` with the admin token on the back-end listener:
//! verify, export and legal holds.

use std::process::Output;

use crate::common::{Server, last_line, start, stderr, tern};

const ADMIN_TOKEN: &str = "admin-token-for-tests-0123456789";

/// The back-end listener, where the archive is administered.
fn backend(server: &Server) -> String {
    format!(
        "http://{}",
        server.running.backend_addr.expect("back-end API served")
    )
}

/// Runs `tern --backend <back-end address> archive --admin-token <ADMIN_TOKEN> <args>`.
async fn admin(server: &Server, args: &[&str]) -> Output {
    let backend = backend(server);
    tern(
        server,
        &[
            &[
                "--backend",
                &backend,
                "archive",
                "--admin-token",
                ADMIN_TOKEN,
            ][..],
            args,
        ]
        .concat(),
    )
    .await
}

#[tokio::test(flavor = "multi_thread")]
async fn archive_verify_export_and_holds_with_the_admin_token() {
    let dir = tempfile::tempdir().unwrap();
    let archive_dir = dir.path().join("archive");
    let server = start(|c| {
        c.archive = Some(ternd::ArchiveSettings {
            location: archive_dir.to_str().unwrap().to_owned(),
            retention: std::time::Duration::from_secs(86_400),
            archiver: tern_archive::ArchiverConfig {
                segment_max_bytes: 1 << 20,
                segment_max_age: std::time::Duration::from_millis(100),
            },
        });
        c.api.admin_token = Some(ADMIN_TOKEN.into());
    })
    .await;
    for (from, to, text) in [
        ("alice", "bob", "one"),
        ("bob", "alice", "two"),
        ("carol", "dan", "other"),
    ] {
        let sent = tern(&server, &["--user", from, "send", "--to", to, text]).await;
        assert!(sent.status.success(), "{}", stderr(&sent));
    }
    let archived = async || {
        for _ in 0..100 {
            let v = admin(&server, &["verify"]).await;
            if v.status.success() && stderr(&v).contains("3 messages") {
                return v;
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        panic!("the three messages were not archived");
    };
    let verified = archived().await;
    assert!(
        stderr(&verified).contains("every hash and the chain check out"),
        "{}",
        stderr(&verified)
    );

    let out = dir.path().join("alice.jsonl");
    let export = admin(
        &server,
        &[
            "export",
            "--user",
            "alice",
            "--from",
            "2020-01-01T00:00:00Z",
            "--out",
            out.to_str().unwrap(),
        ],
    )
    .await;
    assert!(export.status.success(), "{}", stderr(&export));
    let lines: Vec<serde_json::Value> = std::fs::read_to_string(&out)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let mut bodies: Vec<&str> = lines.iter().map(|l| l["body"].as_str().unwrap()).collect();
    bodies.sort_unstable();
    assert_eq!(bodies, ["one", "two"], "both directions, not carol's");
    let before = admin(
        &server,
        &[
            "export",
            "--conversation",
            "d:alice:bob",
            "--to",
            "2020-01-01T00:00:00Z",
            "--out",
            out.to_str().unwrap(),
        ],
    )
    .await;
    assert!(before.status.success(), "{}", stderr(&before));
    assert_eq!(
        std::fs::read_to_string(&out).unwrap(),
        "",
        "nothing before 2020"
    );

    let added = admin(
        &server,
        &[
            "hold",
            "add",
            "--conversation",
            "d:alice:bob",
            "--reason",
            "case 9",
            "--id",
            "case-9",
        ],
    )
    .await;
    assert!(added.status.success(), "{}", stderr(&added));
    assert_eq!(last_line(&added), "case-9");
    let list = admin(&server, &["hold", "list"]).await;
    let hold: serde_json::Value = serde_json::from_str(&last_line(&list)).unwrap();
    assert_eq!(hold["conversation"], "d:alice:bob");
    assert_eq!(hold["reason"], "case 9");
    let removed = admin(&server, &["hold", "remove", "--id", "case-9"]).await;
    assert!(removed.status.success(), "{}", stderr(&removed));
    let again = admin(&server, &["hold", "remove", "--id", "case-9"]).await;
    assert!(!again.status.success());
    assert!(
        stderr(&again).contains("no such hold"),
        "{}",
        stderr(&again)
    );

    // A user's token is not an admin credential; nor is a wrong token.
    let user_token = last_line(&tern(&server, &["token", "--user", "alice"]).await);
    let backend = backend(&server);
    let as_user = tern(
        &server,
        &[
            "--backend",
            &backend,
            "archive",
            "--admin-token",
            &user_token,
            "hold",
            "list",
        ],
    )
    .await;
    assert!(!as_user.status.success());
    assert!(
        stderr(&as_user).contains("login token cannot"),
        "{}",
        stderr(&as_user)
    );
    let wrong = tern(
        &server,
        &[
            "--backend",
            &backend,
            "archive",
            "--admin-token",
            "not-the-admin-token",
            "verify",
        ],
    )
    .await;
    assert!(!wrong.status.success());
    assert!(stderr(&wrong).contains("wrong token"), "{}", stderr(&wrong));
    let bad_time = admin(
        &server,
        &[
            "export",
            "--user",
            "alice",
            "--from",
            "yesterday",
            "--out",
            out.to_str().unwrap(),
        ],
    )
    .await;
    assert!(
        stderr(&bad_time).contains("is not a time"),
        "{}",
        stderr(&bad_time)
    );

    // The user API's listener does not serve the archive any more.
    let api = format!("http://{}", server.running.api_addr.unwrap());
    let on_api = tern(
        &server,
        &[
            "--backend",
            &api,
            "archive",
            "--admin-token",
            ADMIN_TOKEN,
            "verify",
        ],
    )
    .await;
    assert_eq!(on_api.status.code(), Some(1), "{}", stderr(&on_api));
}
