//! The `ternd` binary refuses settings that would expose it: dev mode (its
//! default) with a listener anyone can reach, placeholder secrets. It says
//! why and exits 64 before opening anything.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::Command;

fn ternd(args: &[&str]) -> (Option<i32>, String) {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_ternd"))
        .args(["--data-dir", dir.path().to_str().unwrap()])
        .args(args)
        .env_remove("TERN_DEV_MODE")
        .env_remove("TERN_JWT_SECRET")
        .output()
        .expect("ternd runs");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn ternd_in_dev_mode_on_a_public_address_refuses_to_start() {
    // Not --check-config: the real start, which must stop before binding.
    let (code, stderr) = ternd(&["--tcp-listen", "0.0.0.0:7400"]);
    assert_eq!(code, Some(64), "{stderr}");
    assert!(
        stderr.contains("dev_mode is on (the default of ternd)"),
        "{stderr}"
    );
    assert!(stderr.contains("tcp_listen 0.0.0.0:7400"), "{stderr}");
    assert!(stderr.contains("docs/security.md"), "{stderr}");
}

#[test]
fn placeholder_secrets_are_refused_outside_dev_mode() {
    let (code, stderr) = ternd(&[
        "--dev-mode",
        "false",
        "--jwt-secret",
        "change-me-0123456789abcdef-0123456789",
        "--check-config",
    ]);
    assert_eq!(code, Some(64), "{stderr}");
    assert!(
        stderr.contains("jwt_secret contains \"change-me\""),
        "{stderr}"
    );
    assert!(!stderr.contains("0123456789abcdef-0123456789"), "{stderr}");
}

#[test]
fn a_public_ternd_with_a_real_secret_is_accepted() {
    let (code, stderr) = ternd(&[
        "--dev-mode",
        "false",
        "--tcp-listen",
        "0.0.0.0:7400",
        "--jwt-secret",
        "9c2e4f6a8b0d1e3f5a7c9e1b3d5f7a9c2e4f6a8b0d1e3f5a7c9e1b3d5f7a9c2e",
        "--check-config",
    ]);
    assert_eq!(code, Some(0), "{stderr}");
}
