//! Tokens and logging out: no dev tokens without dev mode, `tern logout`
//! revokes tokens and closes their connections, and device-bound tokens.

use crate::common::{Background, last_line, start, stderr, tern};

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
