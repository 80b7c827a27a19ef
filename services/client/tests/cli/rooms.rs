//! `tern room …`: watching, posting to and counting the viewers of a live
//! room.

use crate::common::{Background, WAIT, last_line, start, stderr, tern};

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
