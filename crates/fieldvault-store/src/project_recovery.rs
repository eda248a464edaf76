//! Live partial recovery (M8): one project of a running embedded store brought back as it was
//! in a restored copy (usually one restored to a point in time by [`crate::pitr`]), while
//! intake to every project goes on.
//!
//! The project keeps its id, and its forms, definitions, submissions and attachments take the
//! ids they had in the copy. That matters: sealed submission XML and attachments are bound to
//! their project and form ids (`submissions::xml_aad`), so rows put back under their own ids
//! open with the keys they were sealed with, and nothing is re-encrypted. Ids are never reused,
//! so no row of another project can hold one of them.
//!
//! Access is *not* restored: roles, collectors (app users) and tokens stay as they are now, so
//! a recovery never gives back access that was revoked since. Assignments and KoboToolbox
//! exports of forms that did not exist at that time go with those forms.
//!
//! Everything happens in one write transaction, so readers see the project before or after,
//! never half-restored; intake waits for it (SQLite has one writer) and then goes on. The
//! replaced rows are themselves in the change journal, so a recovery can be undone by another.

use std::path::Path;

use sqlx::Connection as _;

use crate::StoreError;
use crate::blob::BlobStore;
use crate::sqlite::SqliteStore;

/// What a project recovery did (or, for a dry run, would do).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProjectRecovered {
    /// The project's name in the copy.
    pub name: String,
    /// Forms in the copy.
    pub forms: i64,
    /// Submissions in the copy (deleted ones included).
    pub submissions: i64,
    /// Submissions the live project has that the copy does not: they go.
    pub removed_submissions: i64,
    /// Submissions in the copy that the live project lacks: they come back.
    pub returned_submissions: i64,
    /// Blobs copied from the copy's blob store into the live one.
    pub blobs_copied: u64,
}

/// `(table, rows of the project, as a condition on schema `{s}`)`.
const TABLES: &[(&str, &str)] = &[
    ("forms", "{s}.forms.project_id = $1"),
    (
        "form_defs",
        "{s}.form_defs.form_id IN (SELECT id FROM {s}.forms WHERE project_id = $1)",
    ),
    (
        "form_attachments",
        "{s}.form_attachments.form_def_id IN (SELECT d.id FROM {s}.form_defs d JOIN {s}.forms f ON \
         d.form_id = f.id WHERE f.project_id = $1)",
    ),
    ("submissions", "{s}.submissions.project_id = $1"),
    (
        "submission_versions",
        "{s}.submission_versions.form_id IN (SELECT id FROM {s}.forms WHERE project_id = $1)",
    ),
    (
        "submission_attachments",
        "{s}.submission_attachments.version_id IN (SELECT v.id FROM {s}.submission_versions v JOIN \
         {s}.forms f ON v.form_id = f.id WHERE f.project_id = $1)",
    ),
];

fn on(schema: &str, cond: &str) -> String {
    cond.replace("{s}.", &format!("{schema}."))
}

async fn columns(conn: &mut sqlx::SqliteConnection, table: &str) -> Result<String, StoreError> {
    let cols: Vec<String> =
        sqlx::query_scalar("SELECT name FROM pragma_table_info($1) ORDER BY cid")
            .bind(table)
            .fetch_all(&mut *conn)
            .await?;
    Ok(cols
        .iter()
        .map(|c| format!("\"{}\"", c.replace('"', "\"\"")))
        .collect::<Vec<_>>()
        .join(","))
}

async fn count(
    conn: &mut sqlx::SqliteConnection,
    sql: &str,
    project: i64,
) -> Result<i64, StoreError> {
    Ok(sqlx::query_scalar(sqlx::AssertSqlSafe(sql.to_owned()))
        .bind(project)
        .fetch_one(&mut *conn)
        .await?)
}

impl SqliteStore {
    /// Replaces project `project` with its state in the copy at `copy` (a Fieldvault database
    /// file opened with `copy_key`), first copying the blobs its rows name from `copy_blobs`
    /// into `blobs` (a reader never meets a row whose blob is missing). With `dry_run`, only
    /// counts.
    pub async fn recover_project(
        &self,
        copy: &Path,
        copy_key: &fieldvault_crypto::Key256,
        copy_blobs: &BlobStore,
        blobs: &BlobStore,
        project: i64,
        dry_run: bool,
    ) -> Result<ProjectRecovered, StoreError> {
        // A connection of its own: it carries the attachment and never goes back to the pool.
        let mut conn = self.pool.acquire().await?.detach();
        let key = format!(
            "x'{}'",
            fieldvault_crypto::random::to_hex(copy_key.expose())
        );
        sqlx::query("ATTACH DATABASE $1 AS pitr KEY $2")
            .bind(copy.display().to_string())
            .bind(key)
            .execute(&mut conn)
            .await?;
        let r = recover(&mut conn, copy_blobs, blobs, project, dry_run).await;
        let _ = conn.close().await;
        r
    }
}

async fn recover(
    conn: &mut sqlx::SqliteConnection,
    copy_blobs: &BlobStore,
    blobs: &BlobStore,
    project: i64,
    dry_run: bool,
) -> Result<ProjectRecovered, StoreError> {
    let name: Option<String> = sqlx::query_scalar("SELECT name FROM pitr.projects WHERE id = $1")
        .bind(project)
        .fetch_optional(&mut *conn)
        .await
        .map_err(|e| StoreError::Setup(format!("the restored copy cannot be read: {e}")))?;
    let name = name.ok_or_else(|| {
        StoreError::Setup(format!("project {project} did not exist at that time"))
    })?;
    let mut out = ProjectRecovered {
        name,
        forms: count(
            conn,
            "SELECT count(*) FROM pitr.forms WHERE project_id = $1",
            project,
        )
        .await?,
        submissions: count(
            conn,
            "SELECT count(*) FROM pitr.submissions WHERE project_id = $1",
            project,
        )
        .await?,
        removed_submissions: count(
            conn,
            "SELECT count(*) FROM main.submissions WHERE project_id = $1 AND id NOT IN \
             (SELECT id FROM pitr.submissions WHERE project_id = $1)",
            project,
        )
        .await?,
        returned_submissions: count(
            conn,
            "SELECT count(*) FROM pitr.submissions c WHERE project_id = $1 AND (deleted_at IS \
             NULL) AND NOT EXISTS (SELECT 1 FROM main.submissions m WHERE m.id = c.id AND \
             m.deleted_at IS NULL)",
            project,
        )
        .await?,
        blobs_copied: 0,
    };
    if dry_run {
        return Ok(out);
    }
    let names: Vec<String> = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
        "SELECT blob_name FROM pitr.form_attachments WHERE blob_name IS NOT NULL AND {} UNION \
         SELECT blob_name FROM pitr.submission_attachments WHERE blob_name IS NOT NULL AND {}",
        on("pitr", TABLES[2].1),
        on("pitr", TABLES[5].1)
    )))
    .bind(project)
    .fetch_all(&mut *conn)
    .await?;
    let live: std::collections::HashSet<String> = blobs.list("").await?.into_iter().collect();
    for n in names.iter().filter(|n| !live.contains(*n)) {
        match copy_blobs.get_raw(n).await {
            Ok(data) => {
                blobs.put_raw(n, data).await?;
                out.blobs_copied += 1;
            }
            Err(StoreError::NotFound) => {
                return Err(StoreError::Corrupt(format!(
                    "blob {n}, which the restored project names, is in neither the restored \
                     copy nor the live blob store"
                )));
            }
            Err(e) => return Err(e),
        }
    }
    let mut tx = conn.begin_with("BEGIN IMMEDIATE").await?;
    // Rows go out and come back under the same ids; references are checked at commit.
    sqlx::query("PRAGMA defer_foreign_keys = ON")
        .execute(&mut *tx)
        .await?;
    let pitr_forms = "SELECT id FROM pitr.forms WHERE project_id = $1";
    for sql in [
        format!(
            "DELETE FROM main.form_assignments WHERE form_id IN (SELECT id FROM main.forms WHERE \
             project_id = $1) AND form_id NOT IN ({pitr_forms})"
        ),
        format!(
            "DELETE FROM main.kobo_exports WHERE project_id = $1 AND form_id NOT IN ({pitr_forms})"
        ),
        "INSERT OR IGNORE INTO main.data_keys SELECT * FROM pitr.data_keys WHERE id = (SELECT \
         data_key_id FROM pitr.projects WHERE id = $1)"
            .to_owned(),
        "INSERT OR IGNORE INTO main.project_keys SELECT * FROM pitr.project_keys WHERE \
         project_id = $1"
            .to_owned(),
        "INSERT OR IGNORE INTO main.projects SELECT * FROM pitr.projects WHERE id = $1".to_owned(),
        "UPDATE main.projects SET (name, description, data_key_id, archived, deleted_at, \
         updated_at) = (SELECT name, description, data_key_id, archived, deleted_at, updated_at \
         FROM pitr.projects WHERE id = $1) WHERE id = $1"
            .to_owned(),
    ] {
        sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(project)
            .execute(&mut *tx)
            .await?;
    }
    // Children first out, parents first in.
    for (table, cond) in TABLES.iter().rev() {
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "DELETE FROM main.{table} WHERE {}",
            on("main", cond)
        )))
        .bind(project)
        .execute(&mut *tx)
        .await?;
    }
    for (table, cond) in TABLES {
        let cols = columns(&mut tx, table).await?;
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "INSERT INTO main.{table} ({cols}) SELECT {cols} FROM pitr.{table} WHERE {}",
            on("pitr", cond)
        )))
        .bind(project)
        .execute(&mut *tx)
        .await?;
    }
    let broken: Vec<(String, String)> =
        sqlx::query_as("SELECT \"table\", parent FROM pragma_foreign_key_check LIMIT 5")
            .fetch_all(&mut *tx)
            .await?;
    if !broken.is_empty() {
        let list = broken
            .iter()
            .map(|(t, p)| format!("{t} → {p}"))
            .collect::<Vec<_>>()
            .join(", ");
        return Err(StoreError::Setup(format!(
            "the restored project refers to rows the live database no longer has ({list}); \
             nothing was changed"
        )));
    }
    tx.commit().await?;
    Ok(out)
}
