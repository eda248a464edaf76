//! A one-second cache of what every submission looks up but almost never changes: the project,
//! the caller's role in it, the form and the matching form version.
//!
//! Why: at hundreds of submissions per second these reads dominate the intake path's CPU (each
//! commit invalidates SQLite's page cache, so every read decrypts pages again). Why it is safe:
//! entries live at most [`TTL`], so a form closed, a project archived or a role withdrawn on any
//! instance takes effect within a second; credentials themselves (collector tokens, passwords,
//! sessions) are never cached here and stop working at once.
//!
//! Degraded intake (M11): entries past their TTL are kept (until [`HotCache::clear`] or the size
//! bound) as the *last known* value. When the store is unreachable, or the instance is already
//! degraded, a lookup answers from them instead of failing, so submissions to forms this instance
//! has served keep being accepted (into the intake journal) during a database outage. The same
//! holds for collector tokens ([`HotCache::remember_app_user`]), which are otherwise always read
//! from the store.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use fieldvault_core::flatten::CsvLayout;
use fieldvault_core::{ProjectId, UserId, parse_schema};
use fieldvault_store::{AppUserRow, FormDefMeta, FormRow, ProjectRow, Store, StoreError};

use super::ServiceError;
use super::ingest_queue::IntakeHealth;

/// How long an entry is trusted.
pub const TTL: Duration = Duration::from_secs(1);
/// Entries kept per map before it is cleared (bounds memory under many distinct keys).
const MAX_ENTRIES: usize = 10_000;

type Timed<T> = (Instant, T);
/// A map whose entries carry the time they were stored.
type TimedMap<K, V> = Mutex<HashMap<K, Timed<V>>>;

/// A collector (app user) and the forms assigned to it, by token hash.
type AppUserEntry = (AppUserRow, Vec<i64>);

/// The cache.
pub struct HotCache {
    health: Arc<IntakeHealth>,
    projects: TimedMap<i64, Option<ProjectRow>>,
    roles: TimedMap<(i64, i64), Option<String>>,
    forms: TimedMap<(i64, String), Option<FormRow>>,
    defs: TimedMap<(i64, String), Option<FormDefMeta>>,
    app_users: TimedMap<[u8; 32], AppUserEntry>,
    /// CSV layouts of definitions by id. A definition never changes, so these do not expire.
    layouts: Mutex<HashMap<i64, Option<Arc<CsvLayout>>>>,
}

fn get<K: std::hash::Hash + Eq, V: Clone>(m: &TimedMap<K, V>, k: &K) -> Option<V> {
    let map = m.lock().ok()?;
    map.get(k)
        .filter(|(t, _)| t.elapsed() < TTL)
        .map(|(_, v)| v.clone())
}

/// The last known value, however old.
fn last<K: std::hash::Hash + Eq, V: Clone>(m: &TimedMap<K, V>, k: &K) -> Option<V> {
    let map = m.lock().ok()?;
    map.get(k).map(|(_, v)| v.clone())
}

/// Fresh entry, else the store, else (store unreachable) the last known entry.
async fn fetch<K, V, F>(
    health: &IntakeHealth,
    m: &TimedMap<K, V>,
    k: K,
    load: F,
) -> Result<V, ServiceError>
where
    K: std::hash::Hash + Eq,
    V: Clone,
    F: std::future::Future<Output = Result<V, StoreError>>,
{
    if let Some(v) = get(m, &k) {
        return Ok(v);
    }
    let loaded = if health.degraded() {
        Err(StoreError::Unavailable("degraded".into()))
    } else {
        load.await
    };
    match loaded {
        Ok(v) => {
            put(m, k, v.clone());
            Ok(v)
        }
        Err(StoreError::Unavailable(why)) => {
            health.mark_unreachable(&why);
            last(m, &k).ok_or(ServiceError::Store(StoreError::Unavailable(why)))
        }
        Err(e) => Err(e.into()),
    }
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
    /// An empty cache that consults `health` for degraded operation.
    pub fn new(health: Arc<IntakeHealth>) -> Self {
        Self {
            health,
            projects: Mutex::default(),
            roles: Mutex::default(),
            forms: Mutex::default(),
            defs: Mutex::default(),
            app_users: Mutex::default(),
            layouts: Mutex::default(),
        }
    }

    /// A project (including soft-deleted ones, as the store returns them).
    pub async fn project(
        &self,
        store: &dyn Store,
        id: ProjectId,
    ) -> Result<Option<ProjectRow>, ServiceError> {
        fetch(&self.health, &self.projects, id.0, store.project(id)).await
    }

    /// A user's role in a project.
    pub async fn role(
        &self,
        store: &dyn Store,
        project: ProjectId,
        user: UserId,
    ) -> Result<Option<String>, ServiceError> {
        fetch(
            &self.health,
            &self.roles,
            (project.0, user.0),
            store.project_role(project, user),
        )
        .await
    }

    /// A form by its XForm id.
    pub async fn form(
        &self,
        store: &dyn Store,
        project: ProjectId,
        xml_form_id: &str,
    ) -> Result<Option<FormRow>, ServiceError> {
        let k = (project.0, xml_form_id.to_owned());
        fetch(
            &self.health,
            &self.forms,
            k,
            store.form(project, xml_form_id),
        )
        .await
    }

    /// The published definition of a form with this version.
    pub async fn def(
        &self,
        store: &dyn Store,
        form_id: i64,
        version: &str,
    ) -> Result<Option<FormDefMeta>, ServiceError> {
        let k = (form_id, version.to_owned());
        fetch(
            &self.health,
            &self.defs,
            k,
            store.published_def_meta(form_id, version),
        )
        .await
    }

    /// The CSV layout of a definition alone, to check at intake whether a submission fits it;
    /// `None` when the definition cannot be read (then nothing is checked). Parsing a form costs
    /// far more than a submission, so each definition is parsed once.
    pub async fn def_layout(&self, store: &dyn Store, def_id: i64) -> Option<Arc<CsvLayout>> {
        if let Some(hit) = self
            .layouts
            .lock()
            .ok()
            .and_then(|m| m.get(&def_id).cloned())
        {
            return hit;
        }
        // A store error (an outage) is not remembered: the next submission asks again.
        let def = store.form_def(def_id).await.ok()?;
        let layout = def
            .and_then(|d| parse_schema(&d.xml, super::forms::MAX_FORM_BYTES).ok())
            .map(|s| Arc::new(CsvLayout::new(Some(&s))));
        if let Ok(mut m) = self.layouts.lock() {
            if m.len() >= MAX_ENTRIES {
                m.clear();
            }
            m.insert(def_id, layout.clone());
        }
        layout
    }

    /// Projects this instance last saw holding a form with this id (degraded intake to the
    /// server root, where the project is not in the URL).
    pub fn last_projects_with_form(&self, xml_form_id: &str) -> Vec<ProjectId> {
        let Ok(map) = self.forms.lock() else {
            return Vec::new();
        };
        let mut out: Vec<ProjectId> = map
            .iter()
            .filter(|((_, f), (_, v))| f == xml_form_id && v.is_some())
            .map(|((p, _), _)| ProjectId(*p))
            .collect();
        out.sort_by_key(|p| p.0);
        out
    }

    /// Remembers a collector token that just resolved in the store.
    pub fn remember_app_user(&self, token_hash: [u8; 32], user: AppUserRow, forms: Vec<i64>) {
        put(&self.app_users, token_hash, (user, forms));
    }

    /// The collector last resolved for this token hash (used only while the store is
    /// unreachable; a revoked token stops working once the database answers again).
    pub fn last_app_user(&self, token_hash: &[u8; 32]) -> Option<AppUserEntry> {
        last(&self.app_users, token_hash)
    }

    /// The shared health state.
    pub fn health(&self) -> &Arc<IntakeHealth> {
        &self.health
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
        if let Ok(mut x) = self.app_users.lock() {
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
