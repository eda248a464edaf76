//! Throwaway PostgreSQL databases: each test creates its own and drops it afterwards.

use sqlx::Connection as _;

/// A database created for one test, dropped (forcefully) on [`TestDb::drop_db`] or at drop.
pub struct TestDb {
    admin_url: String,
    name: String,
    /// Connection URL of the new database.
    pub url: String,
}

/// Server URL (without database) from `FIELDVAULT_TEST_PG`, e.g. `postgres://postgres@127.0.0.1:5432`.
pub fn server_url() -> Option<String> {
    std::env::var("FIELDVAULT_TEST_PG")
        .ok()
        .filter(|s| !s.is_empty())
}

impl TestDb {
    /// Creates a uniquely named database, or `None` (skip) when no server is configured.
    pub async fn create() -> Option<TestDb> {
        let Some(server) = server_url() else {
            return crate::unavailable("PostgreSQL (set FIELDVAULT_TEST_PG)");
        };
        let server = server.trim_end_matches('/').to_owned();
        let admin_url = format!("{server}/postgres");
        let name = format!("fv_test_{}", crate::unique_suffix());
        let mut c = sqlx::PgConnection::connect(&admin_url)
            .await
            .unwrap_or_else(|e| panic!("cannot connect to {admin_url}: {e}"));
        // `name` is generated here from hex digits only.
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .execute(&mut c)
            .await
            .unwrap();
        let _ = c.close().await;
        Some(TestDb {
            url: format!("{server}/{name}"),
            admin_url,
            name,
        })
    }

    /// Drops the database now.
    pub async fn drop_db(self) {
        if let Ok(mut c) = sqlx::PgConnection::connect(&self.admin_url).await {
            let _ = sqlx::query(sqlx::AssertSqlSafe(format!(
                "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                self.name
            )))
            .execute(&mut c)
            .await;
        }
    }
}
