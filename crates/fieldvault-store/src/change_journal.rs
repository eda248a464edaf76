//! The embedded store's change journal: what point-in-time recovery replays (M8).
//!
//! SQLite has no WAL archive to ship the way PostgreSQL has, and SQLCipher's WAL frames are
//! pages, not changes. So each journaled table gets three triggers that write, in the same
//! transaction as the change, the SQL statement that replays it (`quote()` renders every value,
//! blobs included, exactly) into `fv_change_journal`. A journal row exists exactly when its
//! change committed, and sequence numbers (`AUTOINCREMENT`, never reused) follow commit order,
//! because SQLite has one writer at a time.
//!
//! A *mark* is a journal row without a statement, written in a transaction of its own by the
//! server about once a second while there are changes: every change before a mark committed
//! before the mark's time, and none after it. Recovery to a time `T` replays up to the last mark
//! at or before `T`, so it never applies half a transaction, and lands on the state of some
//! instant less than about a second before `T`.
//!
//! Rows leave the table once the shipper (`crate::pitr`) has copied them, encrypted, to the
//! backup target. The triggers exist only while a backup target is set; turning them off drops
//! the unshipped rows and the timeline, so the next start begins a new one.
//!
//! Left out: `auth_throttle` and `api_budget` (rate-limit counters, rewritten every second and
//! worthless after a restore), the journal's own tables and SQLite's and sqlx's bookkeeping.

use serde::{Deserialize, Serialize};
use sqlx::Row as _;

use crate::StoreError;
use crate::sqlite::SqliteStore;

/// Tables whose changes are not journaled.
const SKIPPED: &[&str] = &[
    "fv_change_journal",
    "fv_journal_state",
    "_sqlx_migrations",
    "auth_throttle",
    "api_budget",
];
/// Names of the journal's triggers start with this.
const TRIGGER_PREFIX: &str = "fvj_";
/// Milliseconds since the epoch, in SQL (works on every SQLite version).
const NOW_MS: &str = "CAST((julianday('now') - 2440587.5) * 86400000 AS INTEGER)";
/// Most journal rows read in one go.
pub const MAX_ROWS_PER_READ: i64 = 2_000;

/// One journal row: a change (`stmt`) or a mark (`stmt` is `None`).
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// Sequence number (commit order).
    pub seq: i64,
    /// When it was written, Unix milliseconds.
    pub at_ms: i64,
    /// The statement that replays the change; `None` for a mark.
    pub stmt: Option<String>,
    /// The blob the changed row names (its `blob_name`), which recovery also needs.
    pub blob: Option<String>,
}

impl std::fmt::Debug for Entry {
    // The statement holds row values (sealed, but still data): never in logs.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Entry")
            .field("seq", &self.seq)
            .field("at_ms", &self.at_ms)
            .field("mark", &self.stmt.is_none())
            .finish()
    }
}

impl Entry {
    /// True for a mark.
    pub fn is_mark(&self) -> bool {
        self.stmt.is_none()
    }
}

/// Where a database stands in its journal history.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Position {
    /// The timeline (empty when the journal is off).
    pub timeline: String,
    /// The last sequence number ever assigned: every change up to it is in this database.
    pub seq: i64,
}

fn ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// An identifier as it appears inside a single-quoted SQL string literal.
fn lit_ident(name: &str) -> String {
    ident(name).replace('\'', "''")
}

/// The three trigger statements for `table` with `cols` (name, position in the primary key).
fn triggers(table: &str, cols: &[(String, i64)]) -> Result<[String; 3], StoreError> {
    let mut pk: Vec<&(String, i64)> = cols.iter().filter(|(_, p)| *p > 0).collect();
    pk.sort_by_key(|(_, p)| *p);
    if pk.is_empty() {
        return Err(StoreError::Setup(format!(
            "table {table} has no primary key, so its changes cannot be journaled"
        )));
    }
    let t = lit_ident(table);
    let where_of = |row: &str| {
        pk.iter()
            .map(|(c, _)| format!("'{} IS ' || quote({row}.{})", lit_ident(c), ident(c)))
            .collect::<Vec<_>>()
            .join(" || ' AND ' || ")
    };
    let names = cols
        .iter()
        .map(|(c, _)| lit_ident(c))
        .collect::<Vec<_>>()
        .join(",");
    let values = cols
        .iter()
        .map(|(c, _)| format!("quote(NEW.{})", ident(c)))
        .collect::<Vec<_>>()
        .join(" || ',' || ");
    let sets = cols
        .iter()
        .enumerate()
        .map(|(i, (c, _))| {
            let sep = if i == 0 { "" } else { "," };
            format!("'{sep}{}=' || quote(NEW.{})", lit_ident(c), ident(c))
        })
        .collect::<Vec<_>>()
        .join(" || ");
    let has_blob = cols.iter().any(|(c, _)| c == "blob_name");
    let blob = |row: &str| {
        if has_blob {
            format!("{row}.\"blob_name\"")
        } else {
            "NULL".to_owned()
        }
    };
    let tbl = ident(table);
    let name = |op: &str| ident(&format!("{TRIGGER_PREFIX}{op}_{table}"));
    let insert = format!(
        "CREATE TRIGGER {} AFTER INSERT ON {tbl} BEGIN INSERT INTO fv_change_journal \
         (at_ms, stmt, blob_name) VALUES ({NOW_MS}, 'INSERT INTO {t} ({names}) VALUES (' || \
         {values} || ')', {}); END",
        name("i"),
        blob("NEW")
    );
    let update = format!(
        "CREATE TRIGGER {} AFTER UPDATE ON {tbl} BEGIN INSERT INTO fv_change_journal \
         (at_ms, stmt, blob_name) VALUES ({NOW_MS}, 'UPDATE {t} SET ' || {sets} || ' WHERE ' || \
         {}, {}); END",
        name("u"),
        where_of("OLD"),
        blob("NEW")
    );
    let delete = format!(
        "CREATE TRIGGER {} AFTER DELETE ON {tbl} BEGIN INSERT INTO fv_change_journal \
         (at_ms, stmt) VALUES ({NOW_MS}, 'DELETE FROM {t} WHERE ' || {}); END",
        name("d"),
        where_of("OLD")
    );
    Ok([insert, update, delete])
}

async fn drop_triggers(conn: &mut sqlx::SqliteConnection) -> Result<(), StoreError> {
    let names: Vec<String> = sqlx::query_scalar(
        "SELECT name FROM sqlite_master WHERE type = 'trigger' AND substr(name, 1, 4) = $1",
    )
    .bind(TRIGGER_PREFIX)
    .fetch_all(&mut *conn)
    .await?;
    for n in names {
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!("DROP TRIGGER {}", ident(&n))))
            .execute(&mut *conn)
            .await?;
    }
    Ok(())
}

impl SqliteStore {
    /// Turns the journal on: (re)creates the triggers from the tables as they are now (a
    /// migration may have changed them), all in one transaction so no change slips between the
    /// old and the new triggers. Keeps the timeline if there is one, starts one otherwise.
    pub async fn journal_enable(&self) -> Result<Position, StoreError> {
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        drop_triggers(&mut tx).await?;
        let tables: Vec<String> = sqlx::query_scalar(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite\\_%' \
             ESCAPE '\\' ORDER BY name",
        )
        .fetch_all(&mut *tx)
        .await?;
        for table in tables.iter().filter(|t| !SKIPPED.contains(&t.as_str())) {
            let cols: Vec<(String, i64)> =
                sqlx::query_as("SELECT name, pk FROM pragma_table_info($1) ORDER BY cid")
                    .bind(table)
                    .fetch_all(&mut *tx)
                    .await?;
            for sql in triggers(table, &cols)? {
                sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
                    .execute(&mut *tx)
                    .await?;
            }
        }
        let timeline: Option<String> =
            sqlx::query_scalar("SELECT timeline FROM fv_journal_state WHERE id = 1")
                .fetch_optional(&mut *tx)
                .await?;
        let timeline = match timeline {
            Some(t) => t,
            None => {
                let t = fieldvault_crypto::random::hex(8)?;
                sqlx::query("INSERT INTO fv_journal_state (id, timeline) VALUES (1, $1)")
                    .bind(&t)
                    .execute(&mut *tx)
                    .await?;
                t
            }
        };
        let seq = last_seq(&mut tx).await?;
        tx.commit().await?;
        Ok(Position { timeline, seq })
    }

    /// Turns the journal off: drops the triggers, the unshipped rows and the timeline.
    pub async fn journal_disable(&self) -> Result<(), StoreError> {
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        drop_triggers(&mut tx).await?;
        forget_history(&mut tx).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Where this database stands: its timeline and the last sequence number assigned.
    pub async fn journal_position(&self) -> Result<Position, StoreError> {
        let mut conn = self.pool.acquire().await?;
        let timeline: Option<String> =
            sqlx::query_scalar("SELECT timeline FROM fv_journal_state WHERE id = 1")
                .fetch_optional(&mut *conn)
                .await?;
        Ok(Position {
            timeline: timeline.unwrap_or_default(),
            seq: last_seq(&mut conn).await?,
        })
    }

    /// Writes a mark if a change was journaled since the last one. Returns whether it did.
    pub async fn journal_mark(&self) -> Result<bool, StoreError> {
        let r = sqlx::query(sqlx::AssertSqlSafe(format!(
            "INSERT INTO fv_change_journal (at_ms) SELECT {NOW_MS} WHERE EXISTS (SELECT 1 FROM \
             fv_change_journal WHERE stmt IS NOT NULL AND seq > COALESCE((SELECT max(seq) FROM \
             fv_change_journal WHERE stmt IS NULL), 0))"
        )))
        .execute(&self.pool)
        .await?;
        Ok(r.rows_affected() > 0)
    }

    /// Up to [`MAX_ROWS_PER_READ`] rows after `after`, up to the last mark (rows after it
    /// belong to changes the next mark has not yet closed), stopping early past `max_bytes`.
    pub async fn journal_read(
        &self,
        after: i64,
        max_bytes: usize,
    ) -> Result<Vec<Entry>, StoreError> {
        let rows = sqlx::query(
            "SELECT seq, at_ms, stmt, blob_name FROM fv_change_journal WHERE seq > $1 AND seq <= \
             (SELECT max(seq) FROM fv_change_journal WHERE stmt IS NULL) ORDER BY seq LIMIT $2",
        )
        .bind(after)
        .bind(MAX_ROWS_PER_READ)
        .fetch_all(&self.pool)
        .await?;
        let mut out = Vec::with_capacity(rows.len());
        let mut bytes = 0usize;
        for r in rows {
            let e = Entry {
                seq: r.try_get("seq")?,
                at_ms: r.try_get("at_ms")?,
                stmt: r.try_get("stmt")?,
                blob: r.try_get("blob_name")?,
            };
            bytes += e.stmt.as_ref().map_or(0, String::len) + 32;
            out.push(e);
            if bytes >= max_bytes {
                break;
            }
        }
        Ok(out)
    }

    /// Deletes the rows up to `upto` (they are on the backup target).
    pub async fn journal_forget(&self, upto: i64) -> Result<(), StoreError> {
        sqlx::query("DELETE FROM fv_change_journal WHERE seq <= $1")
            .bind(upto)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Replays `entries` (in order, marks skipped) in one transaction, with the journal off so
    /// the replay is not journaled again, and leaves the journal empty and without a timeline:
    /// a restored database starts a history of its own.
    pub async fn journal_replay(&self, entries: &[Entry]) -> Result<u64, StoreError> {
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        drop_triggers(&mut tx).await?;
        // Rows are re-inserted in the order they were first written, but a row's parent may
        // have been replaced by an update meanwhile; checked once, at commit.
        sqlx::query("PRAGMA defer_foreign_keys = ON")
            .execute(&mut *tx)
            .await?;
        let mut applied = 0u64;
        for e in entries {
            if let Some(stmt) = &e.stmt {
                sqlx::raw_sql(sqlx::AssertSqlSafe(stmt.clone()))
                    .execute(&mut *tx)
                    .await
                    .map_err(|err| {
                        StoreError::Corrupt(format!(
                            "journal entry {} does not apply to the restored database: {err}",
                            e.seq
                        ))
                    })?;
                applied += 1;
            }
        }
        forget_history(&mut tx).await?;
        tx.commit().await?;
        Ok(applied)
    }
}

/// Empties the journal and ends its timeline (the next `journal_enable` starts a new one).
async fn forget_history(conn: &mut sqlx::SqliteConnection) -> Result<(), StoreError> {
    sqlx::query("DELETE FROM fv_change_journal")
        .execute(&mut *conn)
        .await?;
    sqlx::query("DELETE FROM fv_journal_state")
        .execute(&mut *conn)
        .await?;
    Ok(())
}

async fn last_seq(conn: &mut sqlx::SqliteConnection) -> Result<i64, StoreError> {
    let seq: Option<i64> =
        sqlx::query_scalar("SELECT seq FROM sqlite_sequence WHERE name = 'fv_change_journal'")
            .fetch_optional(&mut *conn)
            .await?;
    Ok(seq.unwrap_or(0))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn triggers_need_a_primary_key_and_quote_names() {
        assert!(triggers("t", &[("a".into(), 0)]).is_err());
        let [i, u, d] = triggers("o'dd", &[("id".into(), 1), ("blob_name".into(), 0)]).unwrap();
        assert!(i.contains("INSERT INTO \"o''dd\""), "{i}");
        assert!(i.contains("NEW.\"blob_name\""), "{i}");
        assert!(u.contains("quote(OLD.\"id\")"), "{u}");
        assert!(d.contains("DELETE FROM \"o''dd\" WHERE"), "{d}");
    }
}
