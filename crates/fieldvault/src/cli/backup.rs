//! `fieldvault backup …` and `fieldvault restore …`.

use std::path::PathBuf;
use std::sync::Arc;

use clap::Subcommand;
use fieldvault_core::Actor;
use fieldvault_server::config::Config;
use fieldvault_server::service::backup as svc;
use fieldvault_store::backup::{self, BackupKey, RestoreInto};
use fieldvault_store::blob::BlobSettings;
use fieldvault_store::pitr;
use fieldvault_store::{BlobStore, Store as _};
use serde_json::json;

/// Backups to `backup.target`, encrypted under the key in `backup.key_file`.
#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(subcommand)]
    cmd: Option<Cmd>,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Take a backup now (the default): database, blobs and wrapped keyring; then prune by the
    /// retention policy. Safe while the server runs.
    Run,
    /// List the backups on the target.
    List,
    /// Restore a backup (the newest unless ID is given) into scratch space, decrypting every
    /// object and checking hashes and row counts, and read the whole change journal on the
    /// target (every segment decrypts, in order, without gaps); the result goes to the audit log.
    Verify {
        /// Backup id (from `fieldvault backup list`).
        id: Option<String>,
    },
    /// Create a new backup key file (refuses to overwrite one). Escrow a copy off-site, apart
    /// from the master key.
    Keygen {
        /// Where to write it (mode 0600).
        out: PathBuf,
    },
}

fn operator() -> Actor {
    Actor::Operator {
        os_user: super::os_user(),
    }
}

pub async fn run(args: &Args, config: Arc<Config>, passphrase_stdin: bool) -> anyhow::Result<()> {
    match args.cmd.as_ref().unwrap_or(&Cmd::Run) {
        Cmd::Keygen { out } => {
            let key = BackupKey::generate(out)?;
            eprintln!(
                "Wrote a new backup key to {} (fingerprint {}). Set backup.key_file to it and keep \
                 an escrowed copy apart from the master key: a backup opens only with both.",
                out.display(),
                key.fingerprint()
            );
            Ok(())
        }
        Cmd::List => {
            for m in svc::list(&operator(), &config).await? {
                println!(
                    "{}\t{}\t{} submissions\t{} blobs\tmaster key {}",
                    m.id,
                    m.backend,
                    m.counts.get("submissions").copied().unwrap_or(0),
                    m.blobs.len(),
                    m.master_key_fingerprint
                );
            }
            Ok(())
        }
        Cmd::Run => {
            let settings = super::storage_settings(&config, passphrase_stdin)?;
            let opened = fieldvault_store::open(&settings, false).await?;
            let r = svc::take(
                &operator(),
                &config,
                opened.store.as_ref(),
                &opened.blobs,
                &opened.keyring,
            )
            .await;
            opened.store.close().await;
            let (created, pruned) = r?;
            println!("{}", created.manifest.id);
            eprintln!(
                "Backup {} taken: {} blobs ({} copied, the rest already on the target); {} \
                 expired backup(s) pruned.",
                created.manifest.id,
                created.manifest.blobs.len(),
                created.blobs_copied,
                pruned.len()
            );
            Ok(())
        }
        Cmd::Verify { id } => {
            let settings = super::storage_settings(&config, passphrase_stdin)?;
            let opened = fieldvault_store::open(&settings, false).await?;
            let r = svc::verify(
                &operator(),
                &config,
                opened.store.as_ref(),
                opened.keyring.master(),
                id.as_deref(),
                &std::env::temp_dir(),
            )
            .await;
            opened.store.close().await;
            let v = r?;
            println!(
                "Backup {} is good: {} objects decrypted and matched their hashes{}.",
                v.manifest.id,
                v.objects,
                if v.restored_counts.is_some() {
                    "; the restored database opens and its row counts match"
                } else {
                    ""
                }
            );
            if v.journal.segments > 0 {
                println!(
                    "Change journal: {} segment(s) of {} timeline(s), {} change(s) and marks, all \
                     decrypted, in order and without gaps.",
                    v.journal.segments, v.journal.timelines, v.journal.entries
                );
            }
            Ok(())
        }
    }
}

/// `fieldvault restore --from TARGET [--backup ID | --to-time T] --data-dir NEW |
/// --into-database-url URL`, and `fieldvault restore --from TARGET --to-time T --project ID
/// --into-live`.
#[derive(clap::Args, Debug)]
pub struct RestoreArgs {
    /// The backup target (`file:///path` or `s3://bucket/prefix`).
    #[arg(long, required_unless_present = "from_database_url")]
    from: Option<String>,
    /// PostgreSQL deployments, with --project: the database recovered to the time wanted (by
    /// pgBackRest, into a scratch cluster), to take the project from.
    #[arg(long, requires = "project", conflicts_with_all = ["from", "to_time"])]
    from_database_url: Option<String>,
    /// Backup id (default: the newest).
    #[arg(long, conflicts_with = "to_time")]
    backup: Option<String>,
    /// Restore the state at this UTC time (`2026-11-27T10:41Z` or RFC 3339). The embedded store
    /// is restored to that minute (the newest backup before it, then the change journal up to
    /// it); a PostgreSQL backup is the newest taken at or before it (to the minute on
    /// PostgreSQL is pgBackRest's point-in-time recovery, docs/operations/backup-and-restore.md).
    #[arg(long)]
    to_time: Option<String>,
    /// Restore a PostgreSQL backup into this (empty) database instead of a data directory.
    #[arg(long)]
    into_database_url: Option<String>,
    /// Bring back only this project, as it was at --to-time (embedded store) or in
    /// --from-database-url (PostgreSQL), into the running server, replacing its current forms,
    /// submissions and attachments (asks for confirmation unless --yes), or beside it with
    /// --as-new. Needs --into-live.
    #[arg(long, requires = "into_live")]
    project: Option<i64>,
    /// With --project: restore into the live data directory while the server keeps running.
    #[arg(long, requires = "project")]
    into_live: bool,
    /// With --project: replace without asking.
    #[arg(long, requires = "project", conflicts_with = "as_new")]
    yes: bool,
    /// With --project: bring it back as a new project beside the current one (untouched),
    /// instead of replacing it. Its data is re-encrypted under a data key of its own.
    #[arg(long, requires = "project")]
    as_new: bool,
    /// With --as-new: the new project's name (default: the old name and the time).
    #[arg(long, requires = "as_new")]
    name: Option<String>,
    /// Backup key file (default: `backup.key_file`).
    #[arg(long)]
    backup_key_file: Option<PathBuf>,
    /// Overwrite a data directory or database that already holds data.
    #[arg(long)]
    force: bool,
}

pub async fn restore(
    args: &RestoreArgs,
    config: Arc<Config>,
    passphrase_stdin: bool,
) -> anyhow::Result<()> {
    if let (Some(project), Some(url)) = (args.project, &args.from_database_url) {
        return recover_project_postgres(args, &config, project, url, passphrase_stdin).await;
    }
    let from = args.from.clone().unwrap_or_default();
    let target = svc::open_target(&from, &config)?;
    let key_path = args
        .backup_key_file
        .clone()
        .or_else(|| config.backup_key_file.clone())
        .ok_or_else(|| anyhow::anyhow!("pass --backup-key-file (or set backup.key_file)"))?;
    let key = BackupKey::load(&key_path)?;
    if let Some(project) = args.project {
        let t = args.to_time.as_deref().ok_or_else(|| {
            anyhow::anyhow!("--project on the embedded store needs --to-time (the minute wanted)")
        })?;
        let at = parse_utc(t)?;
        return recover_project(args, &config, &target, key, project, at, passphrase_stdin).await;
    }
    let settings = super::storage_settings(&config, false);
    let blob_settings = settings
        .as_ref()
        .ok()
        .and_then(|s| s.blobs.clone())
        .unwrap_or_else(|| BlobSettings::Local(config.data_dir.join("blobs")));
    if args.into_database_url.is_none() {
        if args.force {
            eprintln!("--force: overwriting {}", config.data_dir.display());
        } else if config
            .data_dir
            .join(fieldvault_store::open::DATABASE_FILE)
            .exists()
        {
            anyhow::bail!(
                "{} already holds a Fieldvault database; restore into a new --data-dir, or \
                 pass --force to overwrite it (stop every server using it first)",
                config.data_dir.display()
            );
        }
        std::fs::create_dir_all(&config.data_dir)?;
    }
    if let (Some(t), None) = (&args.to_time, &args.into_database_url) {
        let at = parse_utc(t)?;
        let settings = super::storage_settings(&config, passphrase_stdin)?;
        let blobs = BlobStore::open(&blob_settings)?;
        let p = pitr::restore_to_time(&target, &key, at, &settings, &blobs, args.force).await?;
        eprintln!("{}", describe_point_in_time(&p, at));
        return Ok(());
    }
    let id = match (&args.backup, &args.to_time) {
        (Some(i), _) => i.clone(),
        (None, Some(t)) => {
            let at = parse_utc(t)?;
            backup::list(&target)
                .await?
                .into_iter()
                .filter(|i| backup::id_time(i).is_some_and(|ms| ms <= at))
                .max_by_key(|i| backup::id_time(i))
                .ok_or_else(|| anyhow::anyhow!("{from} holds no backup taken at or before {t}"))?
        }
        (None, None) => backup::list(&target)
            .await?
            .pop()
            .ok_or_else(|| anyhow::anyhow!("{from} holds no backup"))?,
    };
    let (m, done) = match &args.into_database_url {
        None => {
            let blobs = BlobStore::open(&blob_settings)?;
            backup::restore(
                &target,
                &key,
                &id,
                &RestoreInto::DataDir {
                    dir: &config.data_dir,
                    blobs: &blobs,
                },
                args.force,
            )
            .await?
        }
        Some(url) => {
            let url = fieldvault_crypto::SecretString::new(url.clone());
            let blobs = BlobStore::open(&blob_settings)?;
            let scratch = backup::scratch_dir(&std::env::temp_dir());
            std::fs::create_dir_all(&scratch)?;
            let r = backup::restore(
                &target,
                &key,
                &id,
                &RestoreInto::Postgres {
                    url: &url,
                    blobs: &blobs,
                    scratch: &scratch,
                },
                args.force,
            )
            .await;
            let _ = std::fs::remove_dir_all(&scratch);
            r?
        }
    };
    eprintln!(
        "Restored backup {} ({}): {} objects checked, {} blobs written. Start the server with the \
         master key of fingerprint {} (it is not in the backup).",
        m.id, m.backend, done.objects, done.blobs, m.master_key_fingerprint
    );
    Ok(())
}

fn describe_point_in_time(p: &pitr::PointInTime, at: i64) -> String {
    let state = match p.cut_at_ms {
        Some(ms) => format!("the state at {}", pitr::fmt_ms(ms)),
        None => format!(
            "the state of backup {} (no later change before then)",
            p.backup
        ),
    };
    let mut text = format!(
        "Restored {state}, for {}: backup {} plus {} change(s) from {} journal segment(s); {} \
         blobs written.",
        pitr::fmt_ms(at),
        p.backup,
        p.applied,
        p.segments,
        p.blobs
    );
    if p.timeline.is_empty() {
        text.push_str(
            " The backup was taken with the change journal off, so it is the newest state.",
        );
    } else if p.journal_end_ms.is_none_or(|end| end < at) {
        text.push_str(&format!(
            " The journal on the target ends at {}: nothing later was shipped (or nothing changed).",
            p.journal_end_ms.map_or_else(|| "the backup".to_owned(), pitr::fmt_ms)
        ));
    }
    text
}

/// `--project ID --into-live`: a point-in-time copy in scratch space beside the live data, then
/// the project swapped in one transaction while the server runs.
async fn recover_project(
    args: &RestoreArgs,
    config: &Config,
    target: &BlobStore,
    key: BackupKey,
    project: i64,
    at: i64,
    passphrase_stdin: bool,
) -> anyhow::Result<()> {
    if config.database_url.is_some() {
        anyhow::bail!(
            "this server runs on PostgreSQL: recover its database to the time with pgBackRest \
             into a scratch cluster, then pass --from-database-url \
             (docs/operations/backup-and-restore.md)"
        );
    }
    let settings = super::storage_settings(config, passphrase_stdin)?;
    let live = fieldvault_store::open(&settings, false).await?;
    let scratch = backup::scratch_dir(&config.data_dir);
    std::fs::create_dir_all(&scratch)?;
    let r = recover_project_via(args, &settings, &live, target, &key, project, at, &scratch).await;
    let _ = std::fs::remove_dir_all(&scratch);
    live.store.close().await;
    r
}

#[allow(clippy::too_many_arguments)]
async fn recover_project_via(
    args: &RestoreArgs,
    settings: &fieldvault_store::StorageSettings,
    live: &fieldvault_store::Opened,
    target: &BlobStore,
    key: &BackupKey,
    project: i64,
    at: i64,
    scratch: &std::path::Path,
) -> anyhow::Result<()> {
    let copy_dir = scratch.join("data");
    let copy_blobs = BlobStore::open(&BlobSettings::Local(scratch.join("blobs")))?;
    let mut copy_settings = settings.clone();
    copy_settings.data_dir = copy_dir.clone();
    let p = pitr::restore_to_time(target, key, at, &copy_settings, &copy_blobs, false).await?;
    eprintln!("{}", describe_point_in_time(&p, at));
    let master = live.keyring.master();
    let db = fieldvault_store::open::open_embedded(&settings.data_dir, master).await?;
    let copy_key = fieldvault_store::open::embedded_database_key(&copy_dir, master)?;
    let source = Source::Sqlite {
        db: &db,
        copy: copy_dir.join(fieldvault_store::open::DATABASE_FILE),
        key: copy_key,
        blobs: &copy_blobs,
    };
    let r = finish_recovery(args, live, &source, project, Some((&p, at))).await;
    db.close().await;
    r
}

/// `--project N --into-live --from-database-url URL` on a PostgreSQL deployment.
async fn recover_project_postgres(
    args: &RestoreArgs,
    config: &Config,
    project: i64,
    url: &str,
    passphrase_stdin: bool,
) -> anyhow::Result<()> {
    let live_url = config.database_url.as_ref().ok_or_else(|| {
        anyhow::anyhow!(
            "--from-database-url is for PostgreSQL deployments; on the embedded store pass \
             --from TARGET --to-time T"
        )
    })?;
    let settings = super::storage_settings(config, passphrase_stdin)?;
    let live = fieldvault_store::open(&settings, false).await?;
    let r = async {
        let db = fieldvault_store::postgres::PgStore::connect(live_url.expose(), 2).await?;
        let source = Source::Postgres {
            db: &db,
            url: fieldvault_crypto::SecretString::new(url.to_owned()),
        };
        let r = finish_recovery(args, &live, &source, project, None).await;
        db.close().await;
        r
    }
    .await;
    live.store.close().await;
    r
}

/// Where a recovered project comes from.
enum Source<'a> {
    /// A point-in-time copy of the embedded store, and its blobs.
    Sqlite {
        db: &'a fieldvault_store::sqlite::SqliteStore,
        copy: std::path::PathBuf,
        key: fieldvault_crypto::Key256,
        blobs: &'a BlobStore,
    },
    /// A recovered PostgreSQL database (blobs are the live store's).
    Postgres {
        db: &'a fieldvault_store::postgres::PgStore,
        url: fieldvault_crypto::SecretString,
    },
}

impl Source<'_> {
    async fn replace(
        &self,
        blobs: &BlobStore,
        project: i64,
        dry_run: bool,
    ) -> Result<fieldvault_store::project_recovery::ProjectRecovered, fieldvault_store::StoreError>
    {
        match self {
            Source::Sqlite {
                db,
                copy,
                key,
                blobs: from,
            } => {
                db.recover_project(copy, key, from, blobs, project, dry_run)
                    .await
            }
            Source::Postgres { db, url } => {
                db.recover_project(url, blobs, blobs, project, dry_run)
                    .await
            }
        }
    }

    async fn as_new(
        &self,
        blobs: &BlobStore,
        keyring: &fieldvault_store::Keyring,
        project: i64,
        name: &str,
    ) -> Result<fieldvault_store::project_recovery::ProjectCopied, fieldvault_store::StoreError>
    {
        match self {
            Source::Sqlite {
                db,
                copy,
                key,
                blobs: from,
            } => {
                db.recover_project_as_new(copy, key, from, blobs, keyring, project, name)
                    .await
            }
            Source::Postgres { db, url } => {
                db.recover_project_as_new(url, blobs, blobs, keyring, project, name)
                    .await
            }
        }
    }
}

/// Shows what the copy holds, then replaces the project (after confirmation) or adds it as a
/// new one, and audits it. `pitr` is the embedded store's point-in-time restore and its target.
async fn finish_recovery(
    args: &RestoreArgs,
    live: &fieldvault_store::Opened,
    source: &Source<'_>,
    project: i64,
    pitr: Option<(&pitr::PointInTime, i64)>,
) -> anyhow::Result<()> {
    let preview = source.replace(&live.blobs, project, true).await?;
    let when = pitr.map(|(p, at)| {
        json!({
            "to_time": pitr::fmt_ms(at),
            "state_at": p.cut_at_ms.map(pitr::fmt_ms),
            "backup": p.backup,
        })
    });
    if args.as_new {
        let name = args.name.clone().unwrap_or_else(|| match pitr {
            Some((_, at)) => format!("{} (restored to {})", preview.name, &pitr::fmt_ms(at)[..16]),
            None => format!("{} (restored)", preview.name),
        });
        let done = source
            .as_new(&live.blobs, &live.keyring, project, &name)
            .await?;
        audit_recovery(
            live,
            done.project_id,
            json!({
                "from_project": project,
                "as_new": true,
                "point_in_time": when,
                "submissions": done.submissions,
                "blobs": done.blobs,
            }),
        )
        .await?;
        println!("{}", done.project_id);
        eprintln!(
            "Project {project} as it was is now project {} ({:?}): {} form(s), {} submission(s), \
             {} blob(s) re-encrypted under its own data key. Project {project} is unchanged.",
            done.project_id, done.name, done.forms, done.submissions, done.blobs
        );
        return Ok(());
    }
    eprintln!(
        "Project {project} ({:?}) at that time: {} form(s), {} submission(s). Replacing it \
         removes {} submission(s) received since and brings back {}.",
        preview.name,
        preview.forms,
        preview.submissions,
        preview.removed_submissions,
        preview.returned_submissions
    );
    if !args.yes {
        eprint!("Type the project id ({project}) to replace it: ");
        let mut line = String::new();
        std::io::stdin().read_line(&mut line)?;
        if line.trim() != project.to_string() {
            anyhow::bail!("not confirmed; nothing was changed");
        }
    }
    let done = source.replace(&live.blobs, project, false).await?;
    audit_recovery(
        live,
        project,
        json!({
            "point_in_time": when,
            "submissions": done.submissions,
            "removed_submissions": done.removed_submissions,
            "returned_submissions": done.returned_submissions,
            "blobs_copied": done.blobs_copied,
        }),
    )
    .await?;
    println!("{project}");
    eprintln!(
        "Project {project} is back as it was: {} submission(s); {} removed, {} brought back, {} \
         blob(s) copied.",
        done.submissions, done.removed_submissions, done.returned_submissions, done.blobs_copied
    );
    Ok(())
}

async fn audit_recovery(
    live: &fieldvault_store::Opened,
    project: i64,
    details: serde_json::Value,
) -> anyhow::Result<()> {
    fieldvault_server::service::audit::record(
        live.store.as_ref(),
        fieldvault_server::service::audit::actor_name(&operator(), None),
        "project.recovered",
        Some(project.to_string()),
        details,
    )
    .await?;
    Ok(())
}

/// A UTC time as ms since the epoch: RFC 3339, or to the minute (`2026-11-27T10:41Z`).
fn parse_utc(t: &str) -> anyhow::Result<i64> {
    let t = t.trim();
    let full = match t.strip_suffix('Z') {
        Some(rest) if rest.len() == 16 => format!("{rest}:00Z"),
        _ => t.to_owned(),
    };
    let at = humantime::parse_rfc3339_weak(full.trim_end_matches('Z')).map_err(|_| {
        anyhow::anyhow!("--to-time {t:?} is not a UTC time such as 2026-11-27T10:41Z")
    })?;
    let ms = at
        .duration_since(std::time::UNIX_EPOCH)
        .map_err(|_| anyhow::anyhow!("--to-time {t:?} is before 1970"))?
        .as_millis();
    Ok(i64::try_from(ms)?)
}

#[cfg(test)]
mod tests {
    #[test]
    fn times_to_the_minute_or_rfc3339() {
        assert_eq!(super::parse_utc("1970-01-01T00:01Z").unwrap(), 60_000);
        assert_eq!(super::parse_utc("1970-01-01T00:00:02Z").unwrap(), 2_000);
        assert_eq!(super::parse_utc("1970-01-01T00:00:02.500Z").unwrap(), 2_500);
        assert!(super::parse_utc("yesterday").is_err());
    }
}
