//! End-to-end tests of the `fieldvault` binary: real processes, real HTTP over loopback, a real
//! PostgreSQL and a real S3-compatible server. One test binary (link time), one module per surface.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod account_delete;
mod accounts_util;
mod api_projects;
mod audit;
mod authz_matrix;
mod backup;
mod browser_sessions;
mod console;
mod data;
mod degraded;
mod encrypted;
mod harness;
mod import;
mod keys;
mod kobo_api;
mod limits;
mod odk_cli;
mod openrosa;
mod passwords;
mod pitr;
mod pitr_embedded;
mod project_key;
mod serve;
mod signup;
mod startup_errors;
mod tls;
mod tokens;
mod two_factor_admin;
mod users_list;
