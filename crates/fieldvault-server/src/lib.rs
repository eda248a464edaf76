//! Fieldvault's HTTP server: configuration, application state, routes, middleware and TLS.
//!
//! Requests flow one way: middleware (request id, client IP, access log, limits, security
//! headers) → extractor (who is calling) → handler → service (authorize + rules) → store.
#![warn(missing_docs)]

pub mod api;
pub mod app;
pub mod auth_cache;
pub mod config;
pub mod extract;
pub mod health;
pub mod metrics;
pub mod middleware;
pub mod openrosa;
pub mod problem;
pub mod router;
pub mod serve;
pub mod service;
pub mod tls;
pub mod users;
pub mod web;

pub use app::App;
pub use config::Config;
pub use problem::ApiError;
