//! Point-in-time recovery of the embedded store (M8): the change journal shipped to the backup
//! target, and restores to any moment it covers — of the whole database, or of one project into
//! a running server.
//!
//! Layout on the target, beside the backups of [`crate::backup`]:
//! ```text
//! journal/<timeline>/<first seq>-<last seq>-<first ms>-<last ms>   one sealed segment
//! blobs/<sha256>                                                    as for backups, shared
//! ```
//! A segment holds journal entries ([`crate::change_journal::Entry`]) in sequence order and the
//! blobs their rows name, copied the same content-addressed way as a backup's. It is sealed
//! under the backup key and bound to its name, like every backup object. Sequence numbers are
//! contiguous within a timeline, so a missing segment is found, not skipped over.
//!
//! A restore to `T` takes the newest backup whose database copy was complete by `T`, then
//! replays that copy's timeline from the copy's own position up to the last mark at or before
//! `T`.

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};
use std::collections::{BTreeMap, BTreeSet};

use crate::StoreError;
use crate::backup::{self, BackupKey, ObjectRef};
use crate::blob::BlobStore;
use crate::change_journal::Entry;
use crate::sqlite::SqliteStore;

/// Segment format version.
const SEGMENT_VERSION: u32 = 1;
/// A segment is closed once its statements pass this many bytes.
pub const SEGMENT_BYTES: usize = 16 * 1024 * 1024;
/// Most segments shipped by one call (the rest go on the next).
const MAX_SEGMENTS_PER_SHIP: usize = 64;

#[derive(Serialize, Deserialize)]
struct Segment {
    version: u32,
    timeline: String,
    entries: Vec<Entry>,
    /// Blob name → its object on the target.
    blobs: BTreeMap<String, ObjectRef>,
}

/// A segment's name, parsed.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct SegmentName {
    /// First sequence number in it.
    pub first: i64,
    /// Last sequence number in it.
    pub last: i64,
    /// Time of its first entry, Unix milliseconds.
    pub first_ms: i64,
    /// Time of its last entry.
    pub last_ms: i64,
    /// The object's name on the target.
    pub object: String,
}

fn segment_object(timeline: &str, entries: &[Entry]) -> Option<String> {
    let (a, b) = (entries.first()?, entries.last()?);
    Some(format!(
        "journal/{timeline}/{:020}-{:020}-{:015}-{:015}",
        a.seq, b.seq, a.at_ms, b.at_ms
    ))
}

/// Parses `journal/<timeline>/<first>-<last>-<first ms>-<last ms>`.
pub fn parse_segment(object: &str) -> Option<SegmentName> {
    let name = object.rsplit('/').next()?;
    let mut it = name.split('-').map(|p| p.parse::<i64>().ok());
    let (first, last, first_ms, last_ms) = (it.next()??, it.next()??, it.next()??, it.next()??);
    if it.next().is_some() || first > last {
        return None;
    }
    Some(SegmentName {
        first,
        last,
        first_ms,
        last_ms,
        object: object.to_owned(),
    })
}

/// Segments of one timeline on the target, in sequence order.
pub async fn segments(target: &BlobStore, timeline: &str) -> Result<Vec<SegmentName>, StoreError> {
    segments_under(target, &format!("journal/{timeline}")).await
}

/// Every segment on the target, of every timeline.
pub async fn all_segments(target: &BlobStore) -> Result<Vec<SegmentName>, StoreError> {
    segments_under(target, "journal").await
}

async fn segments_under(target: &BlobStore, prefix: &str) -> Result<Vec<SegmentName>, StoreError> {
    let mut out: Vec<SegmentName> = target
        .list(prefix)
        .await?
        .iter()
        .filter_map(|o| parse_segment(o))
        .collect();
    out.sort();
    Ok(out)
}

async fn read_segment(
    target: &BlobStore,
    key: &BackupKey,
    s: &SegmentName,
) -> Result<Segment, StoreError> {
    let bytes = target
        .get_bytes(key.key(), &s.object, &backup::aad(&s.object))
        .await
        .map_err(|e| backup::damaged(&s.object, e))?;
    let seg: Segment = serde_json::from_slice(&bytes)
        .map_err(|e| StoreError::Corrupt(format!("{}: {e}", s.object)))?;
    if seg.version != SEGMENT_VERSION {
        return Err(StoreError::Corrupt(format!(
            "{}: segment version {} is not one this build reads",
            s.object, seg.version
        )));
    }
    Ok(seg)
}

/// Blob objects the given segments name (for pruning: they stay while a segment needs them).
pub async fn segment_blobs(
    target: &BlobStore,
    key: &BackupKey,
    segs: &[SegmentName],
) -> Result<BTreeSet<String>, StoreError> {
    let mut out = BTreeSet::new();
    for s in segs {
        let seg = read_segment(target, key, s).await?;
        out.extend(seg.blobs.into_values().map(|r| r.object));
    }
    Ok(out)
}

/// What [`check_journal`] read.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct JournalChecked {
    /// Timelines on the target.
    pub timelines: u64,
    /// Segments decrypted.
    pub segments: u64,
    /// Journal entries in them.
    pub entries: u64,
}

/// Reads every journal segment on the target: each must open with the backup key, hold the
/// entries its name says, in order, and follow the previous segment of its timeline without a
/// gap. The first problem is returned, naming the object.
pub async fn check_journal(
    target: &BlobStore,
    key: &BackupKey,
) -> Result<JournalChecked, StoreError> {
    let mut done = JournalChecked::default();
    let mut timelines: BTreeMap<String, Vec<SegmentName>> = BTreeMap::new();
    for object in target.list("journal").await? {
        let parsed = parse_segment(&object).ok_or_else(|| {
            StoreError::Corrupt(format!("{object} is not a journal segment's name"))
        })?;
        let timeline = object.split('/').nth(1).unwrap_or_default().to_owned();
        timelines.entry(timeline).or_default().push(parsed);
    }
    for (timeline, mut segs) in timelines {
        segs.sort();
        done.timelines += 1;
        let mut next: Option<i64> = None;
        for s in &segs {
            if let Some(n) = next
                && s.first > n
            {
                return Err(StoreError::Corrupt(format!(
                    "the journal of timeline {timeline} has a gap: changes {n} to {} are missing                      before {}",
                    s.first - 1,
                    s.object
                )));
            }
            let seg = read_segment(target, key, s).await?;
            let (first, last) = (seg.entries.first(), seg.entries.last());
            let ordered = seg.entries.windows(2).all(|w| w[1].seq == w[0].seq + 1);
            if seg.timeline != timeline
                || first.map(|e| e.seq) != Some(s.first)
                || last.map(|e| e.seq) != Some(s.last)
                || !ordered
            {
                return Err(StoreError::Corrupt(format!(
                    "{} does not hold the changes its name says",
                    s.object
                )));
            }
            done.segments += 1;
            done.entries += seg.entries.len() as u64;
            next = Some(next.map_or(s.last + 1, |n| n.max(s.last + 1)));
        }
    }
    Ok(done)
}

/// What one [`Shipper::ship`] did.
#[derive(Debug, Clone, Default)]
pub struct Shipped {
    /// Segments written.
    pub segments: u64,
    /// Journal rows shipped (marks included).
    pub entries: u64,
    /// Blob objects copied to the target.
    pub blobs_copied: u64,
    /// The last sequence number shipped.
    pub last_seq: Option<i64>,
    /// Time of the last entry shipped.
    pub last_ms: Option<i64>,
}

/// Copies the journal to the backup target. One per server.
pub struct Shipper {
    target: BlobStore,
    key: BackupKey,
}

impl Shipper {
    /// A shipper to `target`, sealing with `key`.
    pub fn new(target: BlobStore, key: BackupKey) -> Self {
        Self { target, key }
    }

    /// Ships every journal row up to the last mark, then deletes the rows from the database.
    /// The segment is stored before the rows are deleted, so a crash in between ships them
    /// twice (the restore skips sequence numbers it has applied), never not at all.
    pub async fn ship(
        &mut self,
        db: &SqliteStore,
        blobs: &BlobStore,
    ) -> Result<Shipped, StoreError> {
        let mut done = Shipped::default();
        let timeline = db.journal_position().await?.timeline;
        if timeline.is_empty() {
            return Ok(done);
        }
        for _ in 0..MAX_SEGMENTS_PER_SHIP {
            let entries = db.journal_read(0, SEGMENT_BYTES).await?;
            let Some(object) = segment_object(&timeline, &entries) else {
                break;
            };
            let mut refs = BTreeMap::new();
            let names: BTreeSet<&str> = entries.iter().filter_map(|e| e.blob.as_deref()).collect();
            for name in names {
                let raw = match blobs.get_raw(name).await {
                    Ok(r) => r,
                    // Deleted before it could be shipped: so was (later) the row that named it.
                    Err(StoreError::NotFound) => continue,
                    Err(e) => return Err(e),
                };
                let sha = fieldvault_crypto::random::to_hex(&Sha256::digest(&raw));
                let obj = format!("blobs/{sha}");
                // Asked each time, not remembered: pruning may have removed it since.
                let r = if self.target.exists(&obj).await? {
                    ObjectRef {
                        object: obj,
                        sha256: sha,
                        size: raw.len() as u64,
                    }
                } else {
                    let r = backup::put(&self.target, &self.key, &obj, raw).await?;
                    done.blobs_copied += 1;
                    r
                };
                refs.insert(name.to_owned(), r);
            }
            let last = entries.last().map(|e| (e.seq, e.at_ms));
            let n = entries.len() as u64;
            let seg = Segment {
                version: SEGMENT_VERSION,
                timeline: timeline.clone(),
                entries,
                blobs: refs,
            };
            let json = serde_json::to_vec(&seg).map_err(|e| StoreError::Backend(e.to_string()))?;
            self.target
                .put_bytes(
                    self.key.key(),
                    &object,
                    &backup::aad(&object),
                    Bytes::from(json),
                )
                .await?;
            if let Some((seq, ms)) = last {
                db.journal_forget(seq).await?;
                done.last_seq = Some(seq);
                done.last_ms = Some(ms);
            }
            done.segments += 1;
            done.entries += n;
        }
        Ok(done)
    }
}

/// What a restore to a point in time did.
#[derive(Debug, Clone)]
pub struct PointInTime {
    /// The backup it started from.
    pub backup: String,
    /// The journal timeline replayed (empty: the backup was taken with the journal off).
    pub timeline: String,
    /// The backup copy's position in it.
    pub snapshot_seq: i64,
    /// The last sequence number applied (the mark the restore stopped at).
    pub cut_seq: i64,
    /// Time of that mark: the restored state is the state at this instant. `None` when no
    /// change after the backup copy was applied.
    pub cut_at_ms: Option<i64>,
    /// Changes applied.
    pub applied: u64,
    /// Segments read.
    pub segments: u64,
    /// Blobs written (from the backup and from the journal).
    pub blobs: u64,
    /// Time of the newest entry the target's journal holds for this timeline.
    pub journal_end_ms: Option<i64>,
}

/// Restores the embedded database as it was at `at_ms` into the data directory of `settings`
/// (which must hold no database unless `force`) and the blob store `blobs`. The master key of
/// `settings` opens the restored copy to replay the journal onto it; a passphrase's salt comes
/// from the backup.
pub async fn restore_to_time(
    target: &BlobStore,
    key: &BackupKey,
    at_ms: i64,
    settings: &crate::StorageSettings,
    blobs: &BlobStore,
    force: bool,
) -> Result<PointInTime, StoreError> {
    let dir = settings.data_dir.as_path();
    let mut chosen = None;
    for id in backup::list(target).await?.iter().rev() {
        let m = backup::manifest(target, key, id).await?;
        if m.backend == "sqlite" && m.snapshot_at.unwrap_or(m.created_at) <= at_ms {
            chosen = Some(m);
            break;
        }
    }
    let m = chosen.ok_or_else(|| {
        StoreError::Setup(format!(
            "the target holds no backup of the embedded database complete by {}; the earliest \
             time it can restore to is the first backup's",
            fmt_ms(at_ms)
        ))
    })?;
    backup::restore(
        target,
        key,
        &m.id,
        &backup::RestoreInto::DataDir { dir, blobs },
        force,
    )
    .await?;
    let master = crate::open::existing_master_key(settings)?;
    let db = crate::open::open_embedded(dir, &master).await?;
    let r = replay_to(&db, target, key, blobs, at_ms, &m.id).await;
    crate::Store::close(&db).await;
    r
}

async fn replay_to(
    db: &SqliteStore,
    target: &BlobStore,
    key: &BackupKey,
    blobs: &BlobStore,
    at_ms: i64,
    backup_id: &str,
) -> Result<PointInTime, StoreError> {
    let pos = db.journal_position().await?;
    let mut out = PointInTime {
        backup: backup_id.to_owned(),
        timeline: pos.timeline.clone(),
        snapshot_seq: pos.seq,
        cut_seq: pos.seq,
        cut_at_ms: None,
        applied: 0,
        segments: 0,
        blobs: 0,
        journal_end_ms: None,
    };
    if pos.timeline.is_empty() {
        // The copy was taken with the journal off: it is the newest state there is.
        db.journal_replay(&[]).await?;
        return Ok(out);
    }
    let segs = segments(target, &pos.timeline).await?;
    out.journal_end_ms = segs.iter().map(|s| s.last_ms).max();
    let mut entries: Vec<Entry> = Vec::new();
    let mut seg_blobs: BTreeMap<String, ObjectRef> = BTreeMap::new();
    let mut next = pos.seq + 1;
    'segments: for s in &segs {
        if s.last < next {
            continue;
        }
        if s.first_ms > at_ms {
            break;
        }
        if s.first > next {
            return Err(StoreError::Corrupt(format!(
                "the journal on the target has a gap: changes {next} to {} are missing (a \
                 segment was deleted or never shipped); the latest time this backup can be \
                 restored to is {}",
                s.first - 1,
                entries
                    .iter()
                    .rev()
                    .find(|e| e.is_mark())
                    .map_or_else(|| "the backup itself".to_owned(), |e| fmt_ms(e.at_ms))
            )));
        }
        let seg = read_segment(target, key, s).await?;
        out.segments += 1;
        seg_blobs.extend(seg.blobs);
        for e in seg.entries {
            if e.seq < next {
                continue;
            }
            if e.seq != next {
                return Err(StoreError::Corrupt(format!(
                    "{} skips from change {next} to {}",
                    s.object, e.seq
                )));
            }
            next += 1;
            if e.is_mark() && e.at_ms > at_ms {
                break 'segments;
            }
            entries.push(e);
        }
    }
    // Up to the last mark at or before the target time: whole transactions only.
    let cut = entries.iter().rposition(Entry::is_mark);
    let entries = match cut {
        Some(i) => &entries[..=i],
        None => &entries[..0],
    };
    let mut written = BTreeSet::new();
    for name in entries.iter().filter_map(|e| e.blob.as_deref()) {
        if let Some(r) = seg_blobs.get(name)
            && written.insert(name)
        {
            let data = backup::fetch(target, key, r).await?;
            blobs.put_raw(name, Bytes::from(data)).await?;
            out.blobs += 1;
        }
    }
    if let Some(last) = entries.last() {
        out.cut_seq = last.seq;
        out.cut_at_ms = Some(last.at_ms);
    }
    out.applied = db.journal_replay(entries).await?;
    Ok(out)
}

/// A UTC time for messages.
pub fn fmt_ms(ms: i64) -> String {
    let t =
        std::time::UNIX_EPOCH + std::time::Duration::from_millis(u64::try_from(ms).unwrap_or(0));
    humantime::format_rfc3339_millis(t).to_string()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn segment_names_round_trip_and_sort_by_sequence() {
        let e = |seq, at_ms| Entry {
            seq,
            at_ms,
            stmt: None,
            blob: None,
        };
        let a = segment_object("tl", &[e(9, 1_000), e(12, 2_000)]).unwrap();
        let b = segment_object("tl", &[e(100, 3_000)]).unwrap();
        let (pa, pb) = (parse_segment(&a).unwrap(), parse_segment(&b).unwrap());
        assert_eq!(
            (pa.first, pa.last, pa.first_ms, pa.last_ms),
            (9, 12, 1_000, 2_000)
        );
        assert!(pa < pb, "numeric order, not text order");
        assert!(parse_segment("journal/tl/1-2-3").is_none());
        assert!(parse_segment("journal/tl/5-2-3-4").is_none());
        assert!(segment_object("tl", &[]).is_none());
    }
}
