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
    #[arg(long)]
    from: String,
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
    /// Bring back only this project, as it was at --to-time, into the running server's data
    /// directory (`--data-dir`), replacing its current forms, submissions and attachments. Needs
    /// --into-live; asks for confirmation unless --yes.
    #[arg(long, requires = "into_live", requires = "to_time")]
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
    let target = svc::open_target(&args.from, &config)?;
    let key_path = args
        .backup_key_file
        .clone()
        .or_else(|| config.backup_key_file.clone())
        .ok_or_else(|| anyhow::anyhow!("pass --backup-key-file (or set backup.key_file)"))?;
    let key = BackupKey::load(&key_path)?;
    if let Some(project) = args.project {
        let at = parse_utc(args.to_time.as_deref().unwrap_or_default())?;
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
                .ok_or_else(|| {
                    anyhow::anyhow!("{} holds no backup taken at or before {t}", args.from)
                })?
        }
        (None, None) => backup::list(&target)
            .await?
            .pop()
            .ok_or_else(|| anyhow::anyhow!("{} holds no backup", args.from))?,
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
            "--project --into-live restores from the embedded store's journal; for PostgreSQL, \
             recover the database to the time with pgBackRest into a scratch cluster \
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
    let copy_db = copy_dir.join(fieldvault_store::open::DATABASE_FILE);
    let preview = db
        .recover_project(&copy_db, &copy_key, &copy_blobs, &live.blobs, project, true)
        .await?;
    if args.as_new {
        let name = args.name.clone().unwrap_or_else(|| {
            let at = pitr::fmt_ms(at);
            format!("{} (restored to {})", preview.name, &at[..16])
        });
        let r = db
            .recover_project_as_new(
                &copy_db,
                &copy_key,
                &copy_blobs,
                &live.blobs,
                &live.keyring,
                project,
                &name,
            )
            .await;
        db.close().await;
        let done = r?;
        fieldvault_server::service::audit::record(
            live.store.as_ref(),
            fieldvault_server::service::audit::actor_name(&operator(), None),
            "project.recovered",
            Some(done.project_id.to_string()),
            serde_json::json!({
                "from_project": project,
                "as_new": true,
                "to_time": pitr::fmt_ms(at),
                "state_at": p.cut_at_ms.map(pitr::fmt_ms),
                "backup": p.backup,
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
            db.close().await;
            anyhow::bail!("not confirmed; nothing was changed");
        }
    }
    let r = db
        .recover_project(
            &copy_db,
            &copy_key,
            &copy_blobs,
            &live.blobs,
            project,
            false,
        )
        .await;
    db.close().await;
    let done = r?;
    fieldvault_server::service::audit::record(
        live.store.as_ref(),
        fieldvault_server::service::audit::actor_name(&operator(), None),
        "project.recovered",
        Some(project.to_string()),
        serde_json::json!({
            "to_time": pitr::fmt_ms(at),
            "state_at": p.cut_at_ms.map(pitr::fmt_ms),
            "backup": p.backup,
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
        assert!(super::parse_utc("yesterday").is_err());
    }
}
