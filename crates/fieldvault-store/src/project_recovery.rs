//! Live partial recovery (M8): one project of a running server brought back as it was in a
//! restored copy, while intake to every project goes on. The copy is, on the embedded store, a
//! database restored to a point in time by [`crate::pitr`] and attached; on PostgreSQL, a
//! database pgBackRest recovered to that time, whose rows of the project are copied (`COPY …
//! (FORMAT binary)`) into temporary tables of the live session. Either way the same statements
//! then run, written for SQLite's names (`pitr.` the copy, `main.` the live tables, `temp.` the
//! session's temporary tables) and renamed for PostgreSQL (`pg_temp.`, `public.`, `pg_temp.`);
//! what differs by backend is how the copy arrives, the column list, and how ids are reserved.
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
//! never half-restored; intake to the project waits for it and then goes on. On the embedded
//! store the replaced rows are themselves in the change journal, so a recovery can be undone by
//! another.

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

/// `(table, rows of the project, as a condition on schema `{s}`)`, parents before children.
const TABLES: &[(&str, &str)] = &[
    ("forms", "project_id = $1"),
    (
        "form_defs",
        "form_id IN (SELECT id FROM {s}.forms WHERE project_id = $1)",
    ),
    (
        "form_attachments",
        "form_def_id IN (SELECT d.id FROM {s}.form_defs d JOIN {s}.forms f ON d.form_id = f.id \
         WHERE f.project_id = $1)",
    ),
    ("submissions", "project_id = $1"),
    (
        "submission_versions",
        "form_id IN (SELECT id FROM {s}.forms WHERE project_id = $1)",
    ),
    (
        "submission_attachments",
        "version_id IN (SELECT v.id FROM {s}.submission_versions v JOIN {s}.forms f ON \
         v.form_id = f.id WHERE f.project_id = $1)",
    ),
];

/// Where the statements find the copy, the live tables and the session's temporary tables.
struct Dialect {
    /// The copy's schema.
    copy: &'static str,
    /// The live tables' schema.
    live: &'static str,
    /// The session's temporary tables' schema.
    temp: &'static str,
    /// Which backend.
    backend: crate::Backend,
}

const SQLITE: Dialect = Dialect {
    copy: "pitr",
    live: "main",
    temp: "temp",
    backend: crate::Backend::Sqlite,
};
const POSTGRES: Dialect = Dialect {
    copy: "pg_temp",
    live: "public",
    temp: "pg_temp",
    backend: crate::Backend::Postgres,
};

impl Dialect {
    /// `text` with the SQLite schema names replaced by this backend's.
    fn sql(&self, text: &str) -> String {
        // Through markers, so a name put in is never renamed again (`pg_temp.` holds `temp.`).
        text.replace("pitr.", "\u{1}c")
            .replace("main.", "\u{1}l")
            .replace("temp.", "\u{1}t")
            .replace("\u{1}c", &format!("{}.", self.copy))
            .replace("\u{1}l", &format!("{}.", self.live))
            .replace("\u{1}t", &format!("{}.", self.temp))
    }

    /// The statement listing a live table's columns in order (`$1`: the table).
    fn columns_sql(&self) -> &'static str {
        match self.backend {
            crate::Backend::Sqlite => "SELECT name FROM pragma_table_info($1) ORDER BY cid",
            crate::Backend::Postgres => {
                "SELECT column_name::TEXT FROM information_schema.columns WHERE table_schema = \
                 'public' AND table_name = $1 ORDER BY ordinal_position"
            }
        }
    }
}

/// A statement for this backend.
fn q(d: &Dialect, text: &str) -> sqlx::AssertSqlSafe<String> {
    sqlx::AssertSqlSafe(d.sql(text))
}

/// A project-rows condition of [`TABLES`] on `schema`.
fn on(schema: &str, cond: &str) -> String {
    cond.replace("{s}", schema)
}

fn quoted(cols: &[String]) -> String {
    cols.iter()
        .map(|c| format!("\"{}\"", c.replace('"', "\"\"")))
        .collect::<Vec<_>>()
        .join(",")
}

/// What a recovery as a new project did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProjectCopied {
    /// The new project's id.
    pub project_id: i64,
    /// Its name.
    pub name: String,
    /// Forms copied.
    pub forms: i64,
    /// Submissions copied (deleted ones included, as they were).
    pub submissions: i64,
    /// Blobs re-encrypted into the new project.
    pub blobs: u64,
}

/// Column → the SQL expression that replaces it in a copy.
type Overrides<'a> = Vec<(&'a str, String)>;

/// Tables whose rows a copy takes, with the ids it reserves in each.
const COPIED: [&str; 8] = [
    "projects",
    "forms",
    "form_defs",
    "form_attachments",
    "submissions",
    "submission_versions",
    "submission_attachments",
    "project_keys",
];

async fn reseal_blob(
    copy_blobs: &BlobStore,
    blobs: &BlobStore,
    from: (&fieldvault_crypto::Key256, &str, &[u8]),
    to: (&fieldvault_crypto::Key256, &str, &[u8]),
) -> Result<(), StoreError> {
    let source = match copy_blobs.get_stream(from.0, from.1, from.2).await {
        Ok(s) => s,
        Err(StoreError::NotFound) => {
            return Err(StoreError::Corrupt(format!(
                "blob {}, which the restored project names, is not in the restored copy",
                from.1
            )));
        }
        Err(e) => return Err(e),
    };
    blobs.put_stream(to.0, to.1, to.2, Box::pin(source)).await?;
    Ok(())
}

/// The recovery statements for one backend: `$conn` its connection type, `$begin` the statement
/// opening a write transaction, `$reserve(conn, table, n)` reserves `n` ids of `table` and
/// returns the offset to add to the copy's ids.
macro_rules! recovery_core {
    ($conn:ty, $begin:expr, $reserve:path) => {
        use sqlx::Connection as _;

        use super::{
            COPIED, Dialect, Overrides, ProjectCopied, ProjectRecovered, TABLES, on, q, quoted,
            reseal_blob,
        };
        use crate::StoreError;
        use crate::blob::BlobStore;

/// Counts with `sql` (one `$1`: the project).
pub(super) async fn count(
    conn: &mut $conn,
    sql: sqlx::AssertSqlSafe<String>,
    project: i64,
) -> Result<i64, StoreError> {
    Ok(sqlx::query_scalar(sql).bind(project).fetch_one(&mut *conn).await?)
}

/// See [`crate::sqlite::SqliteStore::recover_project`].
pub(super) async fn recover(
    conn: &mut $conn,
    d: &Dialect,
    copy_blobs: &BlobStore,
    blobs: &BlobStore,
    project: i64,
    dry_run: bool,
) -> Result<ProjectRecovered, StoreError> {
    let name: Option<String> = sqlx::query_scalar(q(d, "SELECT name FROM pitr.projects WHERE id = $1"))
        .bind(project)
        .fetch_optional(&mut *conn)
        .await
        .map_err(|e| StoreError::Setup(format!("the restored copy cannot be read: {e}")))?;
    let name = name.ok_or_else(|| {
        StoreError::Setup(format!("project {project} did not exist at that time"))
    })?;
    let mut out = ProjectRecovered {
        name,
        forms: count(conn, q(d, "SELECT count(*) FROM pitr.forms WHERE project_id = $1"), project)
            .await?,
        submissions: count(
            conn,
            q(d, "SELECT count(*) FROM pitr.submissions WHERE project_id = $1"),
            project,
        )
        .await?,
        removed_submissions: count(
            conn,
            q(
                d,
                "SELECT count(*) FROM main.submissions WHERE project_id = $1 AND id NOT IN \
                 (SELECT id FROM pitr.submissions WHERE project_id = $1)",
            ),
            project,
        )
        .await?,
        returned_submissions: count(
            conn,
            q(
                d,
                "SELECT count(*) FROM pitr.submissions c WHERE project_id = $1 AND (deleted_at IS \
                 NULL) AND NOT EXISTS (SELECT 1 FROM main.submissions m WHERE m.id = c.id AND \
                 m.deleted_at IS NULL)",
            ),
            project,
        )
        .await?,
        blobs_copied: 0,
    };
    if dry_run {
        return Ok(out);
    }
    let names: Vec<String> = sqlx::query_scalar(q(d, &format!(
        "SELECT blob_name FROM pitr.form_attachments WHERE blob_name IS NOT NULL AND {} UNION \
         SELECT blob_name FROM pitr.submission_attachments WHERE blob_name IS NOT NULL AND {}",
        on("pitr", TABLES[2].1),
        on("pitr", TABLES[5].1),
    )))
    .bind(project)
    .fetch_all(&mut *conn)
    .await?;
    for n in &names {
        if blobs.exists(n).await? {
            continue;
        }
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
    let mut tx = conn.begin_with($begin).await?;
    // Rows go out and come back under the same ids, parents first in, children first out. The
    // live rows that point at them and stay (collectors' form assignments, KoboToolbox exports
    // and saved export settings of forms that existed then) step aside meanwhile, so every
    // reference holds throughout.
    let stashes = [
        ("fv_keep_assignments", "form_assignments"),
        ("fv_keep_exports", "kobo_exports"),
        ("fv_keep_export_settings", "kobo_export_settings"),
    ];
    for (stash, table) in stashes {
        sqlx::query(q(d, &format!("DROP TABLE IF EXISTS temp.{stash}")))
            .execute(&mut *tx)
            .await?;
        sqlx::query(q(d, &format!(
            "CREATE TEMP TABLE {stash} AS SELECT * FROM main.{table} WHERE form_id IN (SELECT id \
             FROM main.forms WHERE project_id = $1) AND form_id IN (SELECT id FROM pitr.forms \
             WHERE project_id = $1)"
        )))
        .bind(project)
        .execute(&mut *tx)
        .await?;
        sqlx::query(q(d, &format!(
            "DELETE FROM main.{table} WHERE form_id IN (SELECT id FROM main.forms WHERE \
             project_id = $1)"
        )))
        .bind(project)
        .execute(&mut *tx)
        .await?;
    }
    for sql in [
        "INSERT INTO main.data_keys SELECT * FROM pitr.data_keys WHERE id = (SELECT data_key_id \
         FROM pitr.projects WHERE id = $1) ON CONFLICT DO NOTHING",
        "INSERT INTO main.project_keys SELECT * FROM pitr.project_keys WHERE project_id = $1 ON \
         CONFLICT DO NOTHING",
        "INSERT INTO main.projects SELECT * FROM pitr.projects WHERE id = $1 ON CONFLICT DO \
         NOTHING",
        "UPDATE main.projects SET (name, description, data_key_id, archived, deleted_at, \
         updated_at) = (SELECT name, description, data_key_id, archived, deleted_at, updated_at \
         FROM pitr.projects WHERE id = $1) WHERE id = $1",
    ] {
        sqlx::query(q(d, sql)).bind(project).execute(&mut *tx).await?;
    }
    for (table, cond) in TABLES.iter().rev() {
        sqlx::query(q(d, &format!("DELETE FROM main.{table} WHERE {}", on("main", cond))))
            .bind(project)
            .execute(&mut *tx)
            .await?;
    }
    for (table, cond) in TABLES {
        let cols: Vec<String> = sqlx::query_scalar(d.columns_sql())
            .bind(table)
            .fetch_all(&mut *tx)
            .await?;
        let cols = quoted(&cols);
        sqlx::query(q(d, &format!(
            "INSERT INTO main.{table} ({cols}) SELECT {cols} FROM pitr.{table} WHERE {}",
            on("pitr", cond)
        )))
        .bind(project)
        .execute(&mut *tx)
        .await?;
    }
    for (stash, table) in stashes {
        sqlx::query(q(d, &format!("INSERT INTO main.{table} SELECT * FROM temp.{stash}")))
            .execute(&mut *tx)
            .await?;
        sqlx::query(q(d, &format!("DROP TABLE temp.{stash}")))
            .execute(&mut *tx)
            .await?;
    }
    tx.commit().await?;
    Ok(out)
}

#[allow(clippy::too_many_arguments)]
pub(super) async fn copy_as_new(
    conn: &mut $conn,
    d: &Dialect,
    copy_blobs: &BlobStore,
    blobs: &BlobStore,
    keyring: &crate::Keyring,
    project: i64,
    name: &str,
    written: &mut Vec<String>,
) -> Result<ProjectCopied, StoreError> {
    use crate::forms::media_aad;
    use crate::submissions::{attachment_aad, xml_aad};
    use std::collections::HashMap;

    let source: Option<Option<String>> =
        sqlx::query_scalar(q(d, "SELECT data_key_id FROM pitr.projects WHERE id = $1"))
            .bind(project)
            .fetch_optional(&mut *conn)
            .await?;
    let dk = source
        .ok_or_else(|| StoreError::Setup(format!("project {project} did not exist at that time")))?
        .ok_or_else(|| StoreError::Setup(format!("project {project} has no data key")))?;
    let wrapped: Vec<u8> = sqlx::query_scalar(q(d, "SELECT wrapped FROM pitr.data_keys WHERE id = $1"))
        .bind(&dk)
        .fetch_optional(&mut *conn)
        .await?
        .ok_or_else(|| {
            StoreError::Setup(format!(
                "project {project}'s data key was already destroyed at that time"
            ))
        })?;
    let old_key = keyring
        .master()
        .unwrap(&wrapped, &crate::keyring::data_key_aad(&dk))
        .map_err(|_| {
            StoreError::WrongKey(format!("data key {dk} does not open with the master key"))
        })?;
    let (new_dk, new_key) = keyring.new_data_key()?;

    // Ids: a range in each table reserved up front, so the blobs (whose associated data names
    // the new ids) can be re-encrypted before the write transaction, without holding the lock.
    let mut off: HashMap<&str, i64> = HashMap::new();
    {
        let mut tx = conn.begin_with($begin).await?;
        for t in COPIED {
            let max_old: i64 = sqlx::query_scalar(q(d, &format!("SELECT COALESCE(max(id), 0) FROM pitr.{t}")))
                .fetch_one(&mut *tx)
                .await?;
            off.insert(t, $reserve(&mut tx, t, max_old).await?);
        }
        tx.commit().await?;
    }
    let o = |t: &str| off.get(t).copied().unwrap_or(0);
    let new_pid = project + o("projects");

    // Pieces of statements stay in SQLite's names: `q` renames each statement once, whole.
    let forms_of = "SELECT id FROM pitr.forms WHERE project_id = $1";
    let mut map: Vec<(String, String)> = Vec::new();
    let media: Vec<(i64, Option<i64>, String, String)> =
        sqlx::query_as(q(d, &format!(
            "SELECT form_def_id, sealed_for_def, name, blob_name FROM pitr.form_attachments WHERE \
         blob_name IS NOT NULL AND form_def_id IN (SELECT id FROM pitr.form_defs WHERE form_id \
         IN ({forms_of})) ORDER BY id"
        )))
        .bind(project)
        .fetch_all(&mut *conn)
        .await?;
    let mut seen = std::collections::HashSet::new();
    for (def, sealed_for, att, blob) in media {
        if !seen.insert(blob.clone()) {
            continue;
        }
        let sealed_def = sealed_for.unwrap_or(def);
        let new_name = format!("p{new_pid}/media/{}", fieldvault_crypto::random::hex(16)?);
        written.push(new_name.clone());
        reseal_blob(
            copy_blobs,
            blobs,
            (&old_key, &blob, &media_aad(project, sealed_def, &att)),
            (
                &new_key,
                &new_name,
                &media_aad(new_pid, sealed_def + o("form_defs"), &att),
            ),
        )
        .await?;
        map.push((blob, new_name));
    }
    let atts: Vec<(String, String, String, i64)> = sqlx::query_as(q(d, &format!(
        "SELECT a.blob_name, a.name, v.instance_id, v.form_id FROM pitr.submission_attachments a \
         JOIN pitr.submission_versions v ON a.version_id = v.id WHERE a.blob_name IS NOT NULL \
         AND v.form_id IN ({forms_of}) ORDER BY v.id, a.id"
    )))
    .bind(project)
    .fetch_all(&mut *conn)
    .await?;
    for (blob, att, owner, form) in atts {
        // Sealed for the first version that named it (edits carry attachments over).
        if !seen.insert(blob.clone()) {
            continue;
        }
        let new_form = form + o("forms");
        let new_name = format!(
            "p{new_pid}/f{new_form}/{}",
            fieldvault_crypto::random::hex(16)?
        );
        written.push(new_name.clone());
        reseal_blob(
            copy_blobs,
            blobs,
            (
                &old_key,
                &blob,
                &attachment_aad(project, form, &owner, &att),
            ),
            (
                &new_key,
                &new_name,
                &attachment_aad(new_pid, new_form, &owner, &att),
            ),
        )
        .await?;
        map.push((blob, new_name));
    }

    let mut tx = conn.begin_with($begin).await?;
    sqlx::query(q(d, "CREATE TEMP TABLE IF NOT EXISTS fv_blob_map (src TEXT PRIMARY KEY, dst TEXT NOT NULL)"))
    .execute(&mut *tx)
    .await?;
    sqlx::query(q(d, "DELETE FROM temp.fv_blob_map"))
        .execute(&mut *tx)
        .await?;
    for (old, new) in &map {
        sqlx::query(q(d, "INSERT INTO temp.fv_blob_map (src, dst) VALUES ($1, $2)"))
            .bind(old)
            .bind(new)
            .execute(&mut *tx)
            .await?;
    }
    sqlx::query(q(d, "INSERT INTO main.data_keys (id, wrapped, created_at) VALUES ($1, $2, $3)"))
        .bind(&new_dk.id)
        .bind(&new_dk.wrapped)
        .bind(new_dk.created_at)
        .execute(&mut *tx)
        .await?;
    let now = crate::now_ms();
    let blob_expr = "(SELECT dst FROM temp.fv_blob_map WHERE src = blob_name)".to_owned();
    let plus = |c: &str, t: &str| format!("{c} + {}", o(t));
    let copies: Vec<(&str, Overrides, String)> = vec![
        (
            "projects",
            vec![
                ("id", new_pid.to_string()),
                ("name", "$2".into()),
                ("data_key_id", "$3".into()),
                ("created_at", now.to_string()),
                ("updated_at", "NULL".into()),
                ("archived", "FALSE".into()),
                ("deleted_at", "NULL".into()),
            ],
            "id = $1".into(),
        ),
        (
            "forms",
            vec![
                ("id", plus("id", "forms")),
                ("project_id", new_pid.to_string()),
                ("published_def_id", plus("published_def_id", "form_defs")),
                ("draft_def_id", plus("draft_def_id", "form_defs")),
            ],
            "project_id = $1".into(),
        ),
        (
            "form_defs",
            vec![
                ("id", plus("id", "form_defs")),
                ("form_id", plus("form_id", "forms")),
            ],
            format!("form_id IN ({forms_of})"),
        ),
        (
            "form_attachments",
            vec![
                ("id", plus("id", "form_attachments")),
                ("form_def_id", plus("form_def_id", "form_defs")),
                ("sealed_for_def", plus("sealed_for_def", "form_defs")),
                ("blob_name", blob_expr.clone()),
            ],
            format!("form_def_id IN (SELECT id FROM pitr.form_defs WHERE form_id IN ({forms_of}))"),
        ),
        (
            "submissions",
            vec![
                ("id", plus("id", "submissions")),
                ("project_id", new_pid.to_string()),
                ("form_id", plus("form_id", "forms")),
            ],
            "project_id = $1".into(),
        ),
        (
            "submission_versions",
            vec![
                ("id", plus("id", "submission_versions")),
                ("submission_id", plus("submission_id", "submissions")),
                ("form_id", plus("form_id", "forms")),
                ("form_def_id", plus("form_def_id", "form_defs")),
            ],
            format!("form_id IN ({forms_of})"),
        ),
        (
            "submission_attachments",
            vec![
                ("id", plus("id", "submission_attachments")),
                ("version_id", plus("version_id", "submission_versions")),
                ("blob_name", blob_expr),
            ],
            format!(
                "version_id IN (SELECT id FROM pitr.submission_versions WHERE form_id IN \
                 ({forms_of}))"
            ),
        ),
        (
            "project_keys",
            vec![
                ("id", plus("id", "project_keys")),
                ("project_id", new_pid.to_string()),
            ],
            "project_id = $1".into(),
        ),
    ];
    for (table, overrides, cond) in copies {
        let cols: Vec<String> =
            sqlx::query_scalar(d.columns_sql())
                .bind(table)
                .fetch_all(&mut *tx)
                .await?;
        let exprs = cols
            .iter()
            .map(|c| {
                overrides
                    .iter()
                    .find(|(n, _)| n == c)
                    .map_or_else(|| format!("\"{c}\""), |(_, e)| e.clone())
            })
            .collect::<Vec<_>>()
            .join(",");
        let names = cols
            .iter()
            .map(|c| format!("\"{c}\""))
            .collect::<Vec<_>>()
            .join(",");
        let insert = sqlx::query(q(d, &format!(
            "INSERT INTO main.{table} ({names}) SELECT {exprs} FROM pitr.{table} WHERE {cond}"
        )))
        .bind(project);
        let insert = if table == "projects" {
            insert.bind(name).bind(&new_dk.id)
        } else {
            insert
        };
        insert.execute(&mut *tx).await?;
    }
    // Whoever holds a role on the current project holds it on the copy (not more).
    sqlx::query(q(d, "INSERT INTO main.project_roles (project_id, user_id, role, created_at) SELECT $1, \
         user_id, role, $2 FROM main.project_roles WHERE project_id = $3"))
    .bind(new_pid)
    .bind(now)
    .bind(project)
    .execute(&mut *tx)
    .await?;
    // Sealed XML, opened with the old key and place, sealed with the new ones.
    let mut after = 0i64;
    loop {
        let page: Vec<(i64, i64, String, Vec<u8>)> = sqlx::query_as(q(d, &format!(
            "SELECT id, form_id, instance_id, xml_sealed FROM pitr.submission_versions WHERE \
             form_id IN ({forms_of}) AND id > $2 ORDER BY id LIMIT 500"
        )))
        .bind(project)
        .bind(after)
        .fetch_all(&mut *tx)
        .await?;
        let Some(last) = page.last().map(|r| r.0) else {
            break;
        };
        for (id, form, instance, sealed) in page {
            let xml = fieldvault_crypto::envelope::open(
                &old_key,
                &xml_aad(project, form, &instance),
                &sealed,
            )
            .map_err(|_| {
                StoreError::Corrupt(format!(
                    "submission {instance} does not open with its project's data key"
                ))
            })?;
            let resealed = fieldvault_crypto::envelope::seal(
                &new_key,
                &xml_aad(new_pid, form + o("forms"), &instance),
                &xml,
            )?;
            sqlx::query(q(d, "UPDATE main.submission_versions SET xml_sealed = $1 WHERE id = $2"))
                .bind(resealed)
                .bind(id + o("submission_versions"))
                .execute(&mut *tx)
                .await?;
        }
        after = last;
    }
    let forms = count(&mut tx, q(d, "SELECT count(*) FROM main.forms WHERE project_id = $1"),
        new_pid,
    )
    .await?;
    let submissions = count(&mut tx, q(d, "SELECT count(*) FROM main.submissions WHERE project_id = $1"),
        new_pid,
    )
    .await?;
    tx.commit().await?;
    keyring.remember(&new_dk.id, &new_key);
    Ok(ProjectCopied {
        project_id: new_pid,
        name: name.to_owned(),
        forms,
        submissions,
        blobs: map.len() as u64,
    })
}
    };
}

mod sqlite_core {
    recovery_core!(
        sqlx::SqliteConnection,
        "BEGIN IMMEDIATE",
        super::reserve_sqlite
    );
}

mod postgres_core {
    recovery_core!(sqlx::PgConnection, "BEGIN", super::reserve_postgres);
}

/// SQLite: the reserved range starts after `sqlite_sequence` (ids are never reused).
async fn reserve_sqlite(
    conn: &mut sqlx::SqliteConnection,
    table: &str,
    n: i64,
) -> Result<i64, StoreError> {
    let seq: i64 = sqlx::query_scalar(
        "SELECT COALESCE((SELECT seq FROM main.sqlite_sequence WHERE name = $1), 0)",
    )
    .bind(table)
    .fetch_one(&mut *conn)
    .await?;
    sqlx::query("DELETE FROM main.sqlite_sequence WHERE name = $1")
        .bind(table)
        .execute(&mut *conn)
        .await?;
    sqlx::query("INSERT INTO main.sqlite_sequence (name, seq) VALUES ($1, $2)")
        .bind(table)
        .bind(seq + n)
        .execute(&mut *conn)
        .await?;
    Ok(seq)
}

/// PostgreSQL: the table's sequence moves past the reserved range.
async fn reserve_postgres(
    conn: &mut sqlx::PgConnection,
    table: &str,
    n: i64,
) -> Result<i64, StoreError> {
    let name = format!("public.{table}");
    let next: i64 = sqlx::query_scalar("SELECT nextval(pg_get_serial_sequence($1, 'id'))")
        .bind(&name)
        .fetch_one(&mut *conn)
        .await?;
    sqlx::query("SELECT setval(pg_get_serial_sequence($1, 'id'), $2)")
        .bind(&name)
        .bind(next + n.max(1))
        .execute(&mut *conn)
        .await?;
    // The copy's ids start at 1, so `next - 1 + id` is at least `next`: never handed out.
    Ok(next - 1)
}

async fn attach_sqlite(
    store: &SqliteStore,
    copy: &Path,
    copy_key: &fieldvault_crypto::Key256,
) -> Result<sqlx::SqliteConnection, StoreError> {
    // A connection of its own: it carries the attachment and never goes back to the pool.
    let mut conn = store.pool.acquire().await?.detach();
    let key = format!(
        "x'{}'",
        fieldvault_crypto::random::to_hex(copy_key.expose())
    );
    sqlx::query("ATTACH DATABASE $1 AS pitr KEY $2")
        .bind(copy.display().to_string())
        .bind(key)
        .execute(&mut conn)
        .await?;
    Ok(conn)
}

async fn forget_blobs<T>(r: &Result<T, StoreError>, blobs: &BlobStore, written: &[String]) {
    if r.is_err() {
        // The rows never committed: the re-encrypted blobs name nothing.
        for b in written {
            let _ = blobs.delete(b).await;
        }
    }
}

impl SqliteStore {
    /// Replaces project `project` with its state in the copy at `copy` (a Fieldvault database
    /// file opened with `copy_key`), first copying the blobs its rows name from `copy_blobs`
    /// into `blobs` when they are missing there (a reader never meets a row whose blob is
    /// missing). With `dry_run`, only counts.
    pub async fn recover_project(
        &self,
        copy: &Path,
        copy_key: &fieldvault_crypto::Key256,
        copy_blobs: &BlobStore,
        blobs: &BlobStore,
        project: i64,
        dry_run: bool,
    ) -> Result<ProjectRecovered, StoreError> {
        let mut conn = attach_sqlite(self, copy, copy_key).await?;
        let r = sqlite_core::recover(&mut conn, &SQLITE, copy_blobs, blobs, project, dry_run).await;
        let _ = conn.close().await;
        r
    }

    /// Brings project `project` back from the copy at `copy` as a **new** project beside the
    /// current one (named `name`), leaving the current one untouched. Everything sealed is
    /// re-encrypted: sealed XML and blobs are bound to their project, form and definition ids
    /// (and the new project gets a data key of its own, so destroying either project's key
    /// never touches the other). Whoever has a role on the current project gets the same on
    /// the new one; collectors and tokens are not copied.
    #[allow(clippy::too_many_arguments)]
    pub async fn recover_project_as_new(
        &self,
        copy: &Path,
        copy_key: &fieldvault_crypto::Key256,
        copy_blobs: &BlobStore,
        blobs: &BlobStore,
        keyring: &crate::Keyring,
        project: i64,
        name: &str,
    ) -> Result<ProjectCopied, StoreError> {
        let mut conn = attach_sqlite(self, copy, copy_key).await?;
        let mut written = Vec::new();
        let r = sqlite_core::copy_as_new(
            &mut conn,
            &SQLITE,
            copy_blobs,
            blobs,
            keyring,
            project,
            name,
            &mut written,
        )
        .await;
        forget_blobs(&r, blobs, &written).await;
        let _ = conn.close().await;
        r
    }
}

/// The tables a PostgreSQL recovery copies, with the project's rows in the source database.
fn pg_source_rows(project: i64) -> Vec<(&'static str, String)> {
    let mut out = vec![
        ("projects", format!("id = {project}")),
        (
            "data_keys",
            format!("id = (SELECT data_key_id FROM public.projects WHERE id = {project})"),
        ),
        ("project_keys", format!("project_id = {project}")),
    ];
    out.extend(
        TABLES
            .iter()
            .map(|(t, cond)| (*t, on("public", cond).replace("$1", &project.to_string()))),
    );
    out
}

/// A live connection of its own holding, in temporary tables named like the real ones, the
/// rows of `project` in the database at `source` (copied with `COPY … (FORMAT binary)`).
async fn attach_postgres(
    store: &crate::postgres::PgStore,
    source: &fieldvault_crypto::SecretString,
    project: i64,
) -> Result<sqlx::PgConnection, StoreError> {
    use futures_util::StreamExt as _;
    use sqlx::Connection as _;
    let mut from = sqlx::PgConnection::connect(source.expose())
        .await
        .map_err(|e| StoreError::Setup(format!("cannot connect to the restored database: {e}")))?;
    let mut conn = store.pool.acquire().await?.detach();
    for (table, cond) in pg_source_rows(project) {
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "CREATE TEMP TABLE {table} (LIKE public.{table} INCLUDING DEFAULTS)"
        )))
        .execute(&mut conn)
        .await?;
        let mut rows = from
            .copy_out_raw(&format!(
                "COPY (SELECT * FROM public.{table} WHERE {cond}) TO STDOUT (FORMAT binary)"
            ))
            .await?;
        let mut sink = conn
            .copy_in_raw(&format!("COPY pg_temp.{table} FROM STDIN (FORMAT binary)"))
            .await?;
        while let Some(chunk) = rows.next().await {
            sink.send(chunk?).await?;
        }
        sink.finish().await?;
    }
    let _ = from.close().await;
    Ok(conn)
}

impl crate::postgres::PgStore {
    /// [`SqliteStore::recover_project`] on PostgreSQL: the copy is the database at `source` (this
    /// one, recovered by pgBackRest to the time wanted, in a scratch cluster). Blobs are not in
    /// the database: those the project names must still be in the blob store, or in `copy_blobs`.
    pub async fn recover_project(
        &self,
        source: &fieldvault_crypto::SecretString,
        copy_blobs: &BlobStore,
        blobs: &BlobStore,
        project: i64,
        dry_run: bool,
    ) -> Result<ProjectRecovered, StoreError> {
        let mut conn = attach_postgres(self, source, project).await?;
        let r =
            postgres_core::recover(&mut conn, &POSTGRES, copy_blobs, blobs, project, dry_run).await;
        let _ = sqlx::Connection::close(conn).await;
        r
    }

    /// [`SqliteStore::recover_project_as_new`] on PostgreSQL, from the database at `source`.
    pub async fn recover_project_as_new(
        &self,
        source: &fieldvault_crypto::SecretString,
        copy_blobs: &BlobStore,
        blobs: &BlobStore,
        keyring: &crate::Keyring,
        project: i64,
        name: &str,
    ) -> Result<ProjectCopied, StoreError> {
        let mut conn = attach_postgres(self, source, project).await?;
        let mut written = Vec::new();
        let r = postgres_core::copy_as_new(
            &mut conn,
            &POSTGRES,
            copy_blobs,
            blobs,
            keyring,
            project,
            name,
            &mut written,
        )
        .await;
        forget_blobs(&r, blobs, &written).await;
        let _ = sqlx::Connection::close(conn).await;
        r
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statements_are_renamed_once_for_postgres() {
        assert_eq!(
            POSTGRES.sql("SELECT * FROM pitr.forms JOIN main.forms USING (id), temp.x"),
            "SELECT * FROM pg_temp.forms JOIN public.forms USING (id), pg_temp.x"
        );
        assert_eq!(SQLITE.sql("pitr.a main.b temp.c"), "pitr.a main.b temp.c");
    }
}
