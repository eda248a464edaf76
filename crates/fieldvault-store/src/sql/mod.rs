//! The queries both backends share, written once, one file per table family.
//!
//! SQLite and PostgreSQL accept the same text for everything here (`$n` placeholders,
//! `RETURNING`, `ON CONFLICT`, partial indexes), so each macro expands one body per backend.
//! Backend-specific SQL stays in `sqlite.rs` / `postgres.rs`; nothing here branches on the
//! backend. Only the statement that opens a write transaction differs, and it is a parameter:
//! SQLite needs `BEGIN IMMEDIATE` so a read-then-write transaction takes the write lock up front
//! instead of failing when another writer got there first.

mod accounts;
mod audit;
mod data;
mod forms;
mod kobo;
pub(crate) mod lifecycle;
mod limits;
mod project_keys;
mod submissions;
mod throttle;
mod tokens;
mod two_factor;

pub(crate) use accounts::{shared_store_impl, user_cols};
pub(crate) use audit::audit_store_impl;
pub(crate) use data::{data_store_impl, page_where, record_select};
pub(crate) use forms::{APP_USER_BY_TOKEN, app_user_cols, def_cols, form_cols, form_store_impl};
pub(crate) use kobo::{kobo_export_cols, kobo_record_select, kobo_setting_cols, kobo_store_impl};
pub(crate) use lifecycle::lifecycle_store_impl;
pub(crate) use limits::{limit_store_impl, restriction_cols};
pub(crate) use project_keys::project_key_store_impl;
pub(crate) use submissions::{
    INSERT_ATTACHMENT_SLOT, INSERT_IF_UNKNOWN, INSERT_VERSION, submission_cols,
    submission_store_impl, version_cols,
};
pub(crate) use throttle::{throttle_store_impl, to_state};
pub(crate) use tokens::{api_token_cols, session_cols, token_store_impl};
pub(crate) use two_factor::two_factor_store_impl;
