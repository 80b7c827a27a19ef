//! The admin endpoints every tern process serves for its orchestrator:
//! `GET /healthz` (the process is alive), `GET /readyz` (its services are
//! started and it is not shutting down: send it traffic), and
//! `GET /metrics` (Prometheus text: every family of [`crate::METRICS`]).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::Router;
use axum::http::{StatusCode, header};
use axum::routing::get;
use tokio::net::TcpListener;
use tokio::sync::watch;

pub async fn serve(
    listener: TcpListener,
    ready: Arc<AtomicBool>,
    mut shutdown: watch::Receiver<bool>,
) -> std::io::Result<()> {
    let app = Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route(
            "/readyz",
            get(move || {
                let ready = ready.load(Ordering::Relaxed);
                async move {
                    if ready {
                        (StatusCode::OK, "ready\n")
                    } else {
                        (StatusCode::SERVICE_UNAVAILABLE, "not ready\n")
                    }
                }
            }),
        )
        .route(
            "/metrics",
            get(|| async {
                (
                    [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
                    tern_core::metrics::render(crate::METRICS),
                )
            }),
        );
    axum::serve(listener, app)
        .with_graceful_shutdown(async move { tern_core::stage::stopped(&mut shutdown).await })
        .await
}
