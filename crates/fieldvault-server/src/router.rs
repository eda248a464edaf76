//! The route table. Each surface module owns its handlers; this file only wires them up.

use std::time::Duration;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::routing::get;
use tower_http::limit::RequestBodyLimitLayer;
use tower_http::timeout::TimeoutLayer;

use crate::problem::ApiError;
use crate::{App, api, health, middleware, openrosa, users, web};

/// Builds the application router with every middleware applied.
pub fn router(app: App) -> Router {
    let body_limit = usize::try_from(app.config.body_limit_bytes).unwrap_or(usize::MAX);
    let timeout = Duration::from_secs(app.config.request_timeout_secs);
    Router::new()
        .route("/healthz", get(health::healthz))
        .route("/readyz", get(health::readyz))
        .route("/metrics", get(health::metrics))
        .route("/v1/users/current", get(users::current))
        .route("/v1/users", get(users::list).post(users::create))
        .route(
            "/v1/admin/users/{id}/suspend",
            axum::routing::post(users::suspend),
        )
        .route(
            "/v1/admin/users/{id}/activate",
            axum::routing::post(users::activate),
        )
        .route(
            "/v1/password-strength",
            axum::routing::post(users::password_strength),
        )
        .merge(api::routes())
        .merge(openrosa::routes::routes())
        .merge(web::router())
        .fallback(not_found)
        .layer(axum::middleware::from_fn(web::quiet_challenge))
        .layer(DefaultBodyLimit::max(body_limit))
        .layer(RequestBodyLimitLayer::new(body_limit))
        .layer(TimeoutLayer::with_status_code(
            axum::http::StatusCode::REQUEST_TIMEOUT,
            timeout,
        ))
        .layer(axum::middleware::from_fn_with_state(
            app.clone(),
            middleware::access_log::layer,
        ))
        .with_state(app)
}

async fn not_found() -> ApiError {
    ApiError::NotFound
}
