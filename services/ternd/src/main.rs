//! `ternd`: parse settings, start every service, stop on SIGINT/SIGTERM.

use clap::Parser as _;
use ternd::config::Settings;

/// EX_USAGE: the configuration cannot be used.
const EXIT_CONFIG: i32 = 64;

#[tokio::main]
async fn main() {
    let settings = Settings::parse();
    let filter = settings.log.clone().unwrap_or_else(|| "info".into());
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_new(&filter).unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let config = match settings.with_file().and_then(|s| s.resolve()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("ternd: {e}");
            std::process::exit(EXIT_CONFIG);
        }
    };
    let mut running = match ternd::start(config).await {
        Ok(r) => r,
        Err(e) => {
            eprintln!("ternd: cannot start: {e:#}");
            std::process::exit(1);
        }
    };
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("ternd: cannot watch SIGTERM: {e}");
            std::process::exit(1);
        }
    };
    let outcome = tokio::select! {
        r = running.wait() => Some(r),
        _ = tokio::signal::ctrl_c() => None,
        _ = term.recv() => None,
    };
    match outcome {
        Some(Err(e)) => {
            eprintln!("ternd: {e:#}");
            std::process::exit(1);
        }
        Some(Ok(())) => {}
        None => {
            tracing::info!("shutting down");
            if let Err(e) = running.shutdown().await {
                eprintln!("ternd: shutdown: {e:#}");
                std::process::exit(1);
            }
        }
    }
}
