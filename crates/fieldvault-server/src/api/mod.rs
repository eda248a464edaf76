//! The native JSON API under `/v1`, shaped like ODK Central's (specs/central-api.md) so Central's
//! clients and habits carry over. Each module owns its routes; `routes()` merges them.

pub mod accounts;
pub mod app_users;
pub mod audits;
pub mod data;
pub mod forms;
pub mod json;
pub mod kobo_v2;
pub mod project_key;
pub mod projects;
pub mod redactions;
pub mod restrictions;
pub mod sessions;

use axum::Router;

use crate::App;

/// Every `/v1` JSON route.
pub fn routes() -> Router<App> {
    Router::new()
        .merge(forms::routes())
        .merge(projects::routes())
        .merge(project_key::routes())
        .merge(app_users::routes())
        .merge(sessions::routes())
        .merge(audits::routes())
        .merge(data::routes())
        .merge(accounts::routes())
        .merge(redactions::routes())
        .merge(restrictions::routes())
        .merge(kobo_v2::routes())
}
