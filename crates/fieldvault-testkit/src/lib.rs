//! Test harness shared by every crate's integration tests.
//!
//! External services are real: a PostgreSQL server named by `FIELDVAULT_TEST_PG` (CI sets it to
//! the machine's server) and an `s3s-fs` process started per test. When one is not available the
//! test says so and skips, except under `CI=true`, where a missing service is a failure: the
//! PostgreSQL and S3 halves are never skipped silently there.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

pub mod pg;
pub mod pg_cluster;
pub mod s3;

/// True when running in CI, where every service must be present.
pub fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true" || v == "1")
}

/// Reports a missing service: panics in CI, prints a notice elsewhere and returns `None`.
pub fn unavailable<T>(what: &str) -> Option<T> {
    if in_ci() {
        panic!("{what} is required in CI but not available");
    }
    eprintln!("SKIPPED (not available here): {what}");
    None
}

/// A short random lowercase suffix for unique names.
pub fn unique_suffix() -> String {
    let mut b = [0u8; 6];
    getrandom::getrandom(&mut b).unwrap();
    b.iter().map(|x| format!("{x:02x}")).collect()
}
