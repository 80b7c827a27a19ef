//! The `tern` CLI against a real ternd: the commands and output other tools
//! and scripts rely on.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::{Command, Output};

struct Server {
    running: ternd::Running,
    _dir: tempfile::TempDir,
}

async fn start(tweak: impl FnOnce(&mut ternd::TerndConfig)) -> Server {
    let dir = tempfile::tempdir().unwrap();
    let mut config = ternd::TerndConfig::for_tests(dir.path()).unwrap();
    tweak(&mut config);
    Server {
        running: ternd::start(config).await.unwrap(),
        _dir: dir,
    }
}

/// `tern` with the server's gateway and user API addresses (TERN_SERVER,
/// TERN_API) and `args`; the back-end address only where a test gives
/// `--backend`.
fn tern_command(server: &Server, args: &[&str]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_tern"));
    cmd.env_clear()
        .env(
            "TERN_SERVER",
            format!(
                "tcp://{}",
                server.running.tcp_addr.expect("service running")
            ),
        )
        .env(
            "TERN_API",
            format!(
                "http://{}",
                server.running.api_addr.expect("service running")
            ),
        )
        .args(args);
    cmd
}

/// Runs `tern` with the server's addresses and `args`, off the async threads.
async fn tern(server: &Server, args: &[&str]) -> Output {
    let mut cmd = tern_command(server, args);
    tokio::task::spawn_blocking(move || cmd.output().expect("tern runs"))
        .await
        .unwrap()
}

/// A `tern` left running (`listen`, `room watch`): its stdout lines as they
/// come, and its exit.
struct Background {
    child: std::process::Child,
    lines: tokio::sync::mpsc::UnboundedReceiver<String>,
}

impl Background {
    fn spawn(server: &Server, args: &[&str]) -> Background {
        let mut child = tern_command(server, args)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("tern runs");
        let stdout = child.stdout.take().expect("piped");
        let (tx, lines) = tokio::sync::mpsc::unbounded_channel();
        std::thread::spawn(move || {
            use std::io::BufRead as _;
            for line in std::io::BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Background { child, lines }
    }

    /// The next line of its stdout, within 20 s.
    async fn next_line(&mut self) -> String {
        tokio::time::timeout(WAIT, self.lines.recv())
            .await
            .expect("a line within the wait")
            .expect("tern is still writing")
    }

    /// Waits (at most 20 s) for it to exit; its status and stderr.
    async fn exit(mut self) -> (std::process::ExitStatus, String) {
        let waited = tokio::time::timeout(
            WAIT,
            tokio::task::spawn_blocking(move || {
                let status = self.child.wait().expect("tern exits");
                let mut err = String::new();
                use std::io::Read as _;
                if let Some(mut e) = self.child.stderr.take() {
                    let _ = e.read_to_string(&mut err);
                }
                (status, err)
            }),
        )
        .await;
        waited.expect("tern exits within the wait").unwrap()
    }
}

/// How long a test waits for something that happens in milliseconds.
const WAIT: std::time::Duration = std::time::Duration::from_secs(20);

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn last_line(o: &Output) -> String {
    stdout(o).lines().last().unwrap_or_default().to_owned()
}

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
async fn without_dev_mode_no_tokens_are_handed_out() {
    let server = start(|c| {
        c.dev_mode = false;
        c.jwt_secret = Some("0f3a9c1e5b7d2846a1c3e5f7092b4d6e".into());
    })
    .await;
    let token = tern(&server, &["token", "--user", "alice"]).await;
    assert_eq!(token.status.code(), Some(1));
    assert!(stderr(&token).contains("dev"), "{}", stderr(&token));
}

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

#[tokio::test(flavor = "multi_thread")]
async fn room_watch_post_and_viewers() {
    let server =
        start(|c| c.gateway.room_report_every = std::time::Duration::from_millis(100)).await;
    let mut watcher = Background::spawn(
        &server,
        &[
            "--user", "viewer", "room", "watch", "--room", "stage", "--count", "2",
        ],
    );
    // Posts before the watcher joined would be lost (rooms keep nothing):
    // wait until it is counted. The viewer count is a user API call, made
    // with a user's token.
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        let viewers = tern(
            &server,
            &["--user", "host", "room", "viewers", "--room", "stage"],
        )
        .await;
        assert!(viewers.status.success(), "{}", stderr(&viewers));
        if last_line(&viewers) == "1" {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the watcher never joined"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    for text in ["first", "second"] {
        let posted = tern(
            &server,
            &["--user", "host", "room", "post", "--room", "stage", text],
        )
        .await;
        assert!(posted.status.success(), "{}", stderr(&posted));
    }
    let lines: Vec<serde_json::Value> = [watcher.next_line().await, watcher.next_line().await]
        .iter()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let (status, err) = watcher.exit().await;
    assert!(status.success(), "{err}");
    let bodies: Vec<&str> = lines.iter().map(|l| l["body"].as_str().unwrap()).collect();
    assert_eq!(bodies, vec!["first", "second"]);
    assert_eq!(lines[0]["conversation"], "r:stage");
    assert_eq!(lines[0]["from"], "host");
}

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

#[tokio::test(flavor = "multi_thread")]
async fn logout_revokes_the_token_and_closes_its_connections() {
    let server = start(|_| {}).await;
    let token = last_line(&tern(&server, &["token", "--user", "carol"]).await);
    let mut listener = Background::spawn(&server, &["--token", &token, "listen"]);
    // Once a message is printed, the listener is logged in.
    let sent = tern(&server, &["--user", "dave", "send", "--to", "carol", "hi"]).await;
    assert!(sent.status.success(), "{}", stderr(&sent));
    let line: serde_json::Value = serde_json::from_str(&listener.next_line().await).unwrap();
    assert_eq!(line["body"], "hi");

    let before = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    let out = tern(&server, &["--token", &token, "logout"]).await;
    assert!(out.status.success(), "{}", stderr(&out));
    let revoked: u64 = last_line(&out).parse().expect("the revocation time, ms");
    assert!(revoked >= before, "{revoked} < {before}");

    let (status, err) = listener.exit().await;
    assert_eq!(status.code(), Some(1), "{err}");
    assert!(err.contains("TOKEN_REVOKED"), "{err}");
    let again = tern(&server, &["--token", &token, "send", "--to", "dave", "x"]).await;
    assert_eq!(again.status.code(), Some(1));
    assert!(
        stderr(&again).contains("TOKEN_REVOKED"),
        "{}",
        stderr(&again)
    );
    let api = tern(&server, &["--token", &token, "group", "list"]).await;
    assert_eq!(api.status.code(), Some(1));
    assert!(stderr(&api).contains("revoked"), "{}", stderr(&api));

    // A new token works.
    let fresh = tern(&server, &["token", "--user", "carol"]).await;
    assert!(fresh.status.success(), "{}", stderr(&fresh));
    let sent = tern(
        &server,
        &[
            "--token",
            &last_line(&fresh),
            "send",
            "--to",
            "dave",
            "back",
        ],
    )
    .await;
    assert!(sent.status.success(), "{}", stderr(&sent));
}

#[tokio::test(flavor = "multi_thread")]
async fn tokens_bound_to_a_device_and_logging_out_one_device() {
    let server = start(|_| {}).await;
    let phone = last_line(&tern(&server, &["token", "--user", "erin", "--device", "phone"]).await);
    let laptop = last_line(&tern(&server, &["token", "--user", "erin"]).await);
    let send = async |token: &str, device: &str| {
        tern(
            &server,
            &[
                "--token", token, "--device", device, "send", "--to", "frank", "x",
            ],
        )
        .await
    };
    let sent = send(&phone, "phone").await;
    assert!(sent.status.success(), "{}", stderr(&sent));
    let elsewhere = send(&phone, "tablet").await;
    assert_eq!(elsewhere.status.code(), Some(1));
    assert!(
        stderr(&elsewhere).contains("bound to another device"),
        "{}",
        stderr(&elsewhere)
    );

    let out = tern(
        &server,
        &["--token", &laptop, "logout", "--device", "phone"],
    )
    .await;
    assert!(out.status.success(), "{}", stderr(&out));
    let refused = send(&phone, "phone").await;
    assert!(
        stderr(&refused).contains("TOKEN_REVOKED"),
        "{}",
        stderr(&refused)
    );
    let other = send(&laptop, "laptop").await;
    assert!(
        other.status.success(),
        "other devices stay logged in: {}",
        stderr(&other)
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
