//! The two steps of a batch's intake, shared by both backends: the new submissions by the
//! backend's fast path, then everything else by the general path.
//!
//! Almost every submission is new, and a new one needs no decision beyond "this instanceID is
//! unknown", so each backend writes those in the cheapest way it has (PostgreSQL: one statement
//! for the batch, `crate::pg_intake`; SQLite: one blocking call on its own connection,
//! `crate::sqlite_intake`). An item skips the fast path when it is an edit (`deprecatedID`), when
//! its instanceID already exists (retry, split upload, conflict), or when the same instanceID
//! occurs earlier in the batch; those are decided afterwards by the general path in a second
//! transaction, which sees the fast path's rows, so a retry in the same batch is a duplicate
//! exactly as if the items had been decided one by one.

use std::collections::HashSet;

use crate::{IngestOutcome, NewSubmission, ReceivedAttachment, StoreError};

/// Runs a batch through `fast` and then `general`, and returns one outcome per item, in order.
///
/// `fast` gets the indexes of the candidates and returns `(index, submission id)` of those it
/// inserted; `general` gets the remaining items and returns their outcomes (one each, in order)
/// and the blobs their rows took. The blobs of the fast path's rows are added to `used` here.
pub(crate) async fn ingest_split<'a, F, FF, G, GF>(
    batch: &'a [NewSubmission],
    used: &mut HashSet<String>,
    fast: F,
    general: G,
) -> Result<Vec<IngestOutcome>, StoreError>
where
    F: FnOnce(Vec<usize>) -> FF,
    FF: Future<Output = Result<Vec<(usize, i64)>, StoreError>>,
    G: FnOnce(Vec<&'a NewSubmission>) -> GF,
    GF: Future<Output = Result<(Vec<IngestOutcome>, HashSet<String>), StoreError>>,
{
    let mut outcomes: Vec<Option<IngestOutcome>> = vec![None; batch.len()];
    let candidates = candidates(batch);
    if !candidates.is_empty() {
        for (i, submission_id) in fast(candidates).await? {
            let slot = outcomes
                .get_mut(i)
                .ok_or_else(|| StoreError::Backend("fast intake: bad row index".into()))?;
            *slot = Some(IngestOutcome::Created { submission_id });
            if let Some(s) = batch.get(i) {
                used.extend(slots(s).filter_map(|(_, r)| r.map(|a| a.blob_name.clone())));
            }
        }
    }
    let rest: Vec<usize> = (0..batch.len())
        .filter(|&i| outcomes.get(i).is_some_and(Option::is_none))
        .collect();
    if !rest.is_empty() {
        let items: Vec<&NewSubmission> = rest.iter().filter_map(|&i| batch.get(i)).collect();
        let (decided, taken) = general(items).await?;
        if decided.len() != rest.len() {
            return Err(StoreError::Backend("intake lost an outcome".into()));
        }
        used.extend(taken);
        for (i, o) in rest.into_iter().zip(decided) {
            if let Some(slot) = outcomes.get_mut(i) {
                *slot = Some(o);
            }
        }
    }
    outcomes
        .into_iter()
        .map(|o| o.ok_or_else(|| StoreError::Backend("intake lost an outcome".into())))
        .collect()
}

/// The items the fast path may insert: not an edit, and the first of its instanceID in this
/// batch (a second copy must see the first one's row, which only the general path afterwards
/// does).
fn candidates(batch: &[NewSubmission]) -> Vec<usize> {
    let mut seen: HashSet<(i64, &str)> = HashSet::new();
    batch
        .iter()
        .enumerate()
        .filter(|(_, s)| s.deprecated_id.is_none())
        .filter(|(_, s)| seen.insert((s.form_id, s.instance_id.as_str())))
        .map(|(i, _)| i)
        .collect()
}

/// The attachment slots of a new submission: each expected name once (sorted), with the file
/// received for it, if any (the same rule as the general path's `insert_version`).
pub(crate) fn slots(
    s: &NewSubmission,
) -> impl Iterator<Item = (&str, Option<&ReceivedAttachment>)> + '_ {
    let mut names: Vec<&str> = s.expected_attachments.iter().map(String::as_str).collect();
    names.sort_unstable();
    names.dedup();
    names
        .into_iter()
        .map(move |n| (n, s.attachments.iter().find(|a| a.name == n)))
}
