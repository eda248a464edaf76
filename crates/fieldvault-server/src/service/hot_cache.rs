//! A one-second cache of what every submission looks up but almost never changes: the project,
//! the caller's role in it, the form and the matching form version.
//!
//! Why: at hundreds of submissions per second these reads dominate the intake path's CPU (each
//! commit invalidates SQLite's page cache, so every read decrypts pages again). Why it is safe:
//! entries live at most [`TTL`], so a form closed, a project archived or a role withdrawn on any
//! instance takes effect within a second; credentials themselves (collector tokens, passwords,
//! sessions) are never cached here and stop working at once.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use fieldvault_core::{ProjectId, UserId};
use fieldvault_store::{FormDefMeta, FormRow, ProjectRow, Store};

use super::ServiceError;

/// How long an entry is trusted.
pub const TTL: Duration = Duration::from_secs(1);
/// Entries kept per map before it is cleared (bounds memory under many distinct keys).
const MAX_ENTRIES: usize = 10_000;

type Timed<T> = (Instant, T);
/// A map whose entries carry the time they were stored.
type TimedMap<K, V> = Mutex<HashMap<K, Timed<V>>>;

/// The cache.
#[derive(Default)]
pub struct HotCache {
    projects: TimedMap<i64, Option<ProjectRow>>,
    roles: TimedMap<(i64, i64), Option<String>>,
    forms: TimedMap<(i64, String), Option<FormRow>>,
    defs: TimedMap<(i64, String), Option<FormDefMeta>>,
}

fn get<K: std::hash::Hash + Eq, V: Clone>(m: &TimedMap<K, V>, k: &K) -> Option<V> {
    let map = m.lock().ok()?;
    map.get(k)
        .filter(|(t, _)| t.elapsed() < TTL)
        .map(|(_, v)| v.clone())
}

fn put<K: std::hash::Hash + Eq, V>(m: &TimedMap<K, V>, k: K, v: V) {
    if let Ok(mut map) = m.lock() {
        if map.len() >= MAX_ENTRIES {
            map.clear();
        }
        map.insert(k, (Instant::now(), v));
    }
}

impl HotCache {
    /// A project (including soft-deleted ones, as the store returns them).
    pub async fn project(
        &self,
        store: &dyn Store,
        id: ProjectId,
    ) -> Result<Option<ProjectRow>, ServiceError> {
        if let Some(v) = get(&self.projects, &id.0) {
            return Ok(v);
        }
        let v = store.project(id).await?;
        put(&self.projects, id.0, v.clone());
        Ok(v)
    }

    /// A user's role in a project.
    pub async fn role(
        &self,
        store: &dyn Store,
        project: ProjectId,
        user: UserId,
    ) -> Result<Option<String>, ServiceError> {
        if let Some(v) = get(&self.roles, &(project.0, user.0)) {
            return Ok(v);
        }
        let v = store.project_role(project, user).await?;
        put(&self.roles, (project.0, user.0), v.clone());
        Ok(v)
    }

    /// A form by its XForm id.
    pub async fn form(
        &self,
        store: &dyn Store,
        project: ProjectId,
        xml_form_id: &str,
    ) -> Result<Option<FormRow>, ServiceError> {
        let k = (project.0, xml_form_id.to_owned());
        if let Some(v) = get(&self.forms, &k) {
            return Ok(v);
        }
        let v = store.form(project, xml_form_id).await?;
        put(&self.forms, k, v.clone());
        Ok(v)
    }

    /// The published definition of a form with this version.
    pub async fn def(
        &self,
        store: &dyn Store,
        form_id: i64,
        version: &str,
    ) -> Result<Option<FormDefMeta>, ServiceError> {
        let k = (form_id, version.to_owned());
        if let Some(v) = get(&self.defs, &k) {
            return Ok(v);
        }
        let v = store.published_def_meta(form_id, version).await?;
        put(&self.defs, k, v.clone());
        Ok(v)
    }

    /// Drops everything (after this instance changed a project, form or role).
    pub fn clear(&self) {
        if let Ok(mut x) = self.projects.lock() {
            x.clear();
        }
        if let Ok(mut x) = self.roles.lock() {
            x.clear();
        }
        if let Ok(mut x) = self.forms.lock() {
            x.clear();
        }
        if let Ok(mut x) = self.defs.lock() {
            x.clear();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_expire_and_the_map_is_bounded() {
        let m: TimedMap<i64, i64> = Mutex::default();
        put(&m, 1, 10);
        assert_eq!(get(&m, &1), Some(10));
        if let Some(old) = Instant::now().checked_sub(TTL * 2) {
            m.lock().unwrap().insert(2, (old, 20));
            assert_eq!(get(&m, &2), None, "stale entries are not served");
        }
        for i in 0..(MAX_ENTRIES as i64 + 5) {
            put(&m, 100 + i, i);
        }
        assert!(m.lock().unwrap().len() <= MAX_ENTRIES);
    }
}
