//! Liveness, readiness and metrics endpoints.

use axum::Json;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::App;

/// `GET /healthz`: the process is up and serving. Never touches storage.
pub async fn healthz() -> Json<serde_json::Value> {
    Json(json!({"status": "ok"}))
}

/// `GET /readyz`: 200 when the database and blob store answer, 503 `degraded` naming what does
/// not (load balancers stop sending traffic; the console shows it).
pub async fn readyz(State(app): State<App>) -> Response {
    let store = app.store.health().await;
    let blobs = app.blobs.health().await;
    let ok = store.is_ok() && blobs.is_ok();
    let body = json!({
        "status": if ok { "ok" } else { "degraded" },
        "store": { "backend": app.store.backend().as_str(), "ok": store.is_ok() },
        "blobs": { "ok": blobs.is_ok() },
    });
    if let Err(e) = &store {
        tracing::warn!(error = %e, "readiness: database unavailable");
    }
    if let Err(e) = &blobs {
        tracing::warn!(error = %e, "readiness: blob store unavailable");
    }
    let status = if ok {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(body)).into_response()
}

/// `GET /metrics`: Prometheus text format.
pub async fn metrics(State(app): State<App>) -> Response {
    let store_up = if app.store.health().await.is_ok() {
        1.0
    } else {
        0.0
    };
    let blobs_up = if app.blobs.health().await.is_ok() {
        1.0
    } else {
        0.0
    };
    let uptime = app.started.elapsed().as_secs_f64();
    let text = app.metrics.render(&[
        (
            "fieldvault_store_up",
            "1 when the database answers.",
            store_up,
        ),
        (
            "fieldvault_blob_store_up",
            "1 when the blob store answers.",
            blobs_up,
        ),
        (
            "fieldvault_uptime_seconds",
            "Seconds since this instance started.",
            uptime,
        ),
    ]);
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        text,
    )
        .into_response()
}
