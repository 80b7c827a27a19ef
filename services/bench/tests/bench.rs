//! tern-bench against a real ternd: its counts are exact, and bad input is
//! refused clearly.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::{Command, Output};

async fn run(args: Vec<String>) -> Output {
    tokio::task::spawn_blocking(move || {
        Command::new(env!("CARGO_BIN_EXE_tern-bench"))
            .args(args)
            .output()
            .unwrap()
    })
    .await
    .unwrap()
}

fn args(running: &ternd::Running, rest: &[&str]) -> Vec<String> {
    let mut a = vec![
        "--server".to_owned(),
        format!("tcp://{}", running.tcp_addr.expect("service running")),
        "--api".to_owned(),
        format!("http://{}", running.api_addr.expect("service running")),
        "--pid".to_owned(),
        std::process::id().to_string(),
        "--admin".to_owned(),
        running.admin_addr.expect("admin listener").to_string(),
        "--json".to_owned(),
    ];
    a.extend(rest.iter().map(|s| s.to_string()));
    a
}

#[tokio::test(flavor = "multi_thread")]
async fn a_short_direct_run_counts_exactly_what_it_sent_and_received() {
    let dir = tempfile::tempdir().unwrap();
    let running = ternd::start(ternd::TerndConfig::for_tests(dir.path()).unwrap())
        .await
        .unwrap();
    let out = run(args(
        &running,
        &["direct", "--pairs", "3", "--messages", "301"],
    ))
    .await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).expect("one JSON object");
    let counts = &report["counts"];
    assert_eq!(counts["sent"], 301);
    assert_eq!(counts["confirmed"], 301);
    assert_eq!(counts["delivered"], 301);
    assert_eq!(counts["duplicates"], 0);
    assert_eq!(counts["out_of_order"], 0);
    assert_eq!(report["latency"]["send_to_push"]["count"], 301);
    // Read from the gateway's /metrics (shared by the tests of this
    // process, so only "some" is certain).
    assert!(counts["push_payload_raw_bytes"].as_u64().unwrap() > 301 * 8);
    assert!(counts["push_payload_wire_bytes"].as_u64().unwrap() > 0);
    let cost = &report["store_cost"];
    assert!(cost["messages_stored"].as_u64().unwrap() >= 301, "{cost}");
    assert_eq!(cost["store_backend"], "embedded", "{cost}");
    assert_eq!(cost["cql_statements"]["count"], 0);
    assert!(
        cost["store"]["by_op"]["put_messages"]["count"]
            .as_u64()
            .unwrap()
            >= 1
    );
    assert!(cost["store"]["calls"]["per_message"].as_f64().unwrap() > 0.0);
    assert!(
        report["errors"].as_object().unwrap().is_empty(),
        "{}",
        report["errors"]
    );
    assert_eq!(
        report["servers"].as_array().unwrap().len(),
        1,
        "the watched process is reported"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_short_idle_run_holds_its_connections() {
    let dir = tempfile::tempdir().unwrap();
    let running = ternd::start(ternd::TerndConfig::for_tests(dir.path()).unwrap())
        .await
        .unwrap();
    let out = run(args(
        &running,
        &["idle", "--connections", "50", "--hold", "0"],
    ))
    .await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["counts"]["connections_opened"], 50);
    assert_eq!(report["counts"]["connections_open_after_hold"], 50);
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_arguments_and_unreachable_servers_fail_clearly() {
    let zero = run(vec!["direct".into(), "--pairs".into(), "0".into()]).await;
    assert!(!zero.status.success());
    assert!(String::from_utf8_lossy(&zero.stderr).contains("--pairs must be at least 1"));
    for (scenario, flag) in [
        ("group", "--members"),
        ("room", "--viewers"),
        ("backlog", "--pending"),
    ] {
        let zero = run(vec![scenario.into(), flag.into(), "0".into()]).await;
        assert_eq!(zero.status.code(), Some(1));
        let err = String::from_utf8_lossy(&zero.stderr);
        assert!(err.contains(&format!("{flag} must be at least 1")), "{err}");
    }

    let unreachable = run(vec![
        "--api".into(),
        "http://127.0.0.1:1".into(),
        "idle".into(),
        "--connections".into(),
        "1".into(),
    ])
    .await;
    assert!(!unreachable.status.success());
    let err = String::from_utf8_lossy(&unreachable.stderr);
    assert!(err.contains("127.0.0.1:1"), "names the address: {err}");

    let remote = run(vec![
        "--server".into(),
        "tcp://10.1.2.3:7400".into(),
        "idle".into(),
    ])
    .await;
    assert!(!remote.status.success());
    assert!(String::from_utf8_lossy(&remote.stderr).contains("loopback"));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_server_with_its_send_limits_on_is_refused_with_the_flags_to_turn_them_off() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = ternd::TerndConfig::for_tests(dir.path()).unwrap();
    config.gateway.limits = ternd::config::Settings::default()
        .resolve()
        .expect("defaults are valid")
        .gateway
        .limits;
    let running = ternd::start(config).await.unwrap();
    let out = run(args(
        &running,
        &["direct", "--pairs", "1", "--messages", "1"],
    ))
    .await;
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("sends per second per user"), "{err}");
    assert!(err.contains("--sends-per-second 0"), "{err}");
}

async fn report_of(rest: &[&str]) -> serde_json::Value {
    let dir = tempfile::tempdir().unwrap();
    let running = ternd::start(ternd::TerndConfig::for_tests(dir.path()).unwrap())
        .await
        .unwrap();
    let out = run(args(&running, rest)).await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("one JSON object")
}

#[tokio::test(flavor = "multi_thread")]
async fn a_short_group_run_counts_every_member_delivery() {
    let report = report_of(&["group", "--members", "20", "--messages", "30"]).await;
    let counts = &report["counts"];
    assert_eq!(counts["confirmed"], 30);
    assert_eq!(counts["expected_deliveries"], 600);
    assert_eq!(counts["delivered"], 600);
    assert_eq!(counts["duplicates"], 0);
    assert_eq!(counts["out_of_order"], 0);
    assert_eq!(report["latency"]["send_to_push"]["count"], 600);
    assert!(
        report["errors"].as_object().unwrap().is_empty(),
        "{}",
        report["errors"]
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_group_larger_than_one_user_api_call_is_filled_in_several() {
    // The user API adds at most 100 members a call (the default setting).
    let report = report_of(&["group", "--members", "150", "--messages", "2"]).await;
    let counts = &report["counts"];
    assert_eq!(counts["expected_deliveries"], 300);
    assert_eq!(counts["delivered"], 300, "{report}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_short_room_run_counts_every_viewer_delivery() {
    let report = report_of(&[
        "room",
        "--viewers",
        "20",
        "--messages",
        "40",
        "--rate",
        "400",
    ])
    .await;
    let counts = &report["counts"];
    assert_eq!(counts["confirmed"], 40);
    assert_eq!(counts["expected_deliveries"], 800);
    assert_eq!(counts["delivered"], 800, "{report}");
    assert_eq!(counts["lost"], 0);
    assert_eq!(report["latency"]["post_to_viewer"]["count"], 800);
    assert!(counts["batches_received"].as_u64().unwrap() <= 800);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_short_backlog_run_holds_every_message_once() {
    // More than the login push carries (500), so pages are needed too; the
    // push takes at most 100 of each of the 3 conversations.
    let report = report_of(&["backlog", "--pending", "1200", "--senders", "3"]).await;
    let counts = &report["counts"];
    assert_eq!(counts["held"], 1200, "{report}");
    assert_eq!(counts["duplicates"], 0);
    assert_eq!(counts["pushed"], 300);
    assert_eq!(counts["pulled"], 900);
    assert_eq!(counts["conversations"], 3);
    assert_eq!(counts["acks"], counts["push_frames"]);
    assert!(counts["history_pages"].as_u64().unwrap() >= 3);
    let (wire, raw) = (
        counts["wire_bytes"].as_u64().unwrap(),
        counts["raw_bytes"].as_u64().unwrap(),
    );
    assert!(wire > 0 && wire < raw, "compressed: {wire} of {raw} bytes");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_short_archive_run_archives_every_message_and_exports_one_user() {
    let out = run(["archive", "--messages", "5000", "--users", "10", "--json"]
        .map(str::to_owned)
        .to_vec())
    .await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let counts = &report["counts"];
    assert_eq!(counts["archived"], 5000);
    assert!(
        counts["compression_ratio"].as_f64().unwrap() > 1.0,
        "{counts}"
    );
    // With 10 users, user0 is in about a fifth of the pairs.
    let mine = counts["export_user_messages"].as_u64().unwrap();
    assert!((500..=1500).contains(&mine), "{counts}");
    assert!(report["rates"]["archived_messages"].as_f64().unwrap() > 0.0);
}
