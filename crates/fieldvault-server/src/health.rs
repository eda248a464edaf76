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

/// Longest a readiness probe waits for the database.
const PROBE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(2);

async fn store_health(app: &App) -> Result<(), String> {
    if app.ingest.health().degraded() {
        return Err("degraded: the database did not answer the last probe".into());
    }
    match tokio::time::timeout(PROBE_TIMEOUT, app.store.health()).await {
        Ok(r) => r.map_err(|e| e.to_string()),
        Err(_) => Err("the database did not answer in time".into()),
    }
}

/// `GET /readyz`: 200 `ok` when the database and blob store answer. When only the database does
/// not, intake continues into the journal (M11): `degraded`, still 200 so load balancers keep
/// sending submissions, unless the journal is full. Anything else: 503 `degraded`.
pub async fn readyz(State(app): State<App>) -> Response {
    let store = store_health(&app).await;
    let blobs = app.blobs.health().await;
    let intake = app.ingest.health();
    let (pending, bytes) = intake.journal().pending();
    let journal_room = bytes < intake.journal().max_bytes();
    let ok = store.is_ok() && blobs.is_ok();
    let accepting = blobs.is_ok() && (store.is_ok() || journal_room);
    let body = json!({
        "status": if ok { "ok" } else { "degraded" },
        "store": { "backend": app.store.backend().as_str(), "ok": store.is_ok() },
        "blobs": { "ok": blobs.is_ok() },
        "backup": { "configured": app.config.backup_target.is_some() },
        "intake": {
            "accepting": accepting,
            "journal": if store.is_ok() { "idle" } else { "journaling" },
            "journal_pending": pending,
            "journal_bytes": bytes,
            "journal_max_bytes": intake.journal().max_bytes(),
        },
    });
    if let Err(e) = &store {
        tracing::warn!(error = %e, "readiness: database unavailable");
    }
    if let Err(e) = &blobs {
        tracing::warn!(error = %e, "readiness: blob store unavailable");
    }
    let status = if ok || accepting {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(body)).into_response()
}

/// `GET /metrics`: Prometheus text format.
pub async fn metrics(State(app): State<App>) -> Response {
    let store_up = if store_health(&app).await.is_ok() {
        1.0
    } else {
        0.0
    };
    let intake = app.ingest.health();
    let (pending, bytes) = intake.journal().pending();
    let backup = app.backup.lock().map(|s| s.clone()).unwrap_or_default();
    let counter =
        |c: &std::sync::atomic::AtomicU64| c.load(std::sync::atomic::Ordering::Relaxed) as f64;
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
            "fieldvault_intake_degraded",
            "1 while the database is unreachable and intake goes to the journal.",
            if intake.degraded() { 1.0 } else { 0.0 },
        ),
        (
            "fieldvault_intake_journal_pending",
            "Submissions waiting in the intake journal.",
            pending as f64,
        ),
        (
            "fieldvault_intake_journal_bytes",
            "Bytes held by the intake journal.",
            bytes as f64,
        ),
        (
            "fieldvault_intake_journaled_total",
            "Submissions acknowledged from the intake journal since start (counter).",
            counter(&intake.journaled_total),
        ),
        (
            "fieldvault_intake_replayed_total",
            "Journal entries stored in the database since start (counter).",
            counter(&intake.replayed_total),
        ),
        (
            "fieldvault_intake_replay_failed_total",
            "Journal entries set aside in intake-journal/failed since start (counter).",
            counter(&intake.replay_failed_total),
        ),
        (
            "fieldvault_intake_journal_full_total",
            "Submissions refused with 503 because the journal was full (counter).",
            counter(&intake.journal_full_total),
        ),
        (
            "fieldvault_backup_configured",
            "1 when backup.target is set (0: this server keeps no backups).",
            if app.config.backup_target.is_some() {
                1.0
            } else {
                0.0
            },
        ),
        (
            "fieldvault_backup_last_success_timestamp_seconds",
            "Unix time of the last backup this instance took (0: none since start).",
            backup.last_success.unwrap_or(0) as f64,
        ),
        (
            "fieldvault_backup_last_failure_timestamp_seconds",
            "Unix time of the last failed scheduled backup (0: none since start).",
            backup.last_failure.unwrap_or(0) as f64,
        ),
        (
            "fieldvault_backup_last_check_ok",
            "1 unless the last backup this instance took failed its check (decrypt + hashes).",
            if backup.last_check_ok == Some(false) {
                0.0
            } else {
                1.0
            },
        ),
        (
            "fieldvault_journal_last_ship_timestamp_seconds",
            "Embedded store: Unix time the change journal was last shipped to the backup target \
             complete (0: not since start). Point-in-time recovery reaches up to about then.",
            backup.journal_shipped_at.unwrap_or(0) as f64,
        ),
        (
            "fieldvault_journal_ship_failures_total",
            "Failed attempts to ship the change journal (counter); the journal waits in the \
             database and goes with the next attempt.",
            backup.journal_failures as f64,
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
