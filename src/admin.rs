//! The admin HTTP endpoint (`[admin] listen`, loopback by default): `GET /metrics`
//! (Prometheus text), `GET /healthz` (the process is alive), `GET /readyz` (200 when this
//! daemon is active, connected to the source and every sink's last attempt worked; 503 with a
//! JSON reason otherwise, e.g. `{"status":"standby",…}`).

use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use std::net::SocketAddr;
use tracing::{info, warn};

/// Binds `listen` and serves in the background; `Ok(None)` when disabled (`listen = ""`).
pub async fn start(listen: &str) -> Result<Option<SocketAddr>, String> {
    if listen.is_empty() {
        return Ok(None);
    }
    let l = tokio::net::TcpListener::bind(listen).await.map_err(|e| {
        format!("admin.listen {listen:?}: {e}; pick a free address, or listen = \"\" to disable the endpoint")
    })?;
    let addr = l.local_addr().map_err(|e| e.to_string())?;
    let app = Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz));
    tokio::spawn(async move {
        if let Err(e) = axum::serve(l, app).await {
            warn!(error = %e, "admin endpoint stopped");
        }
    });
    info!(%addr, "admin endpoint listening (/metrics, /healthz, /readyz)");
    Ok(Some(addr))
}

async fn metrics() -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        crate::metrics::get().encode(),
    )
}

async fn readyz() -> impl IntoResponse {
    match crate::metrics::get().readiness() {
        Ok(s) => (
            StatusCode::OK,
            [(header::CONTENT_TYPE, "application/json")],
            s,
        ),
        Err(s) => (
            StatusCode::SERVICE_UNAVAILABLE,
            [(header::CONTENT_TYPE, "application/json")],
            s,
        ),
    }
}
