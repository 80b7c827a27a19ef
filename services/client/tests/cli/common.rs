//! What every CLI test uses: a ternd on port 0 in a temporary directory,
//! `tern` run against it (to completion, or left running in the
//! background with its stdout read line by line), and its output as text.

use std::process::{Command, Output};

pub struct Server {
    pub running: ternd::Running,
    _dir: tempfile::TempDir,
}

pub async fn start(tweak: impl FnOnce(&mut ternd::TerndConfig)) -> Server {
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
pub fn tern_command(server: &Server, args: &[&str]) -> Command {
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
pub async fn tern(server: &Server, args: &[&str]) -> Output {
    let mut cmd = tern_command(server, args);
    tokio::task::spawn_blocking(move || cmd.output().expect("tern runs"))
        .await
        .unwrap()
}

/// A `tern` left running (`listen`, `room watch`): its stdout lines as they
/// come, and its exit.
pub struct Background {
    child: std::process::Child,
    lines: tokio::sync::mpsc::UnboundedReceiver<String>,
}

impl Background {
    pub fn spawn(server: &Server, args: &[&str]) -> Background {
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
    pub async fn next_line(&mut self) -> String {
        tokio::time::timeout(WAIT, self.lines.recv())
            .await
            .expect("a line within the wait")
            .expect("tern is still writing")
    }

    /// Waits (at most 20 s) for it to exit; its status and stderr.
    pub async fn exit(mut self) -> (std::process::ExitStatus, String) {
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
pub const WAIT: std::time::Duration = std::time::Duration::from_secs(20);

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

pub fn last_line(o: &Output) -> String {
    stdout(o).lines().last().unwrap_or_default().to_owned()
}
