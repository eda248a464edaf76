//! API budgets, automatic restriction after sustained excess, and the notices it sends (M4).
//!
//! A budget is a number of requests per fixed window (`limits.window_secs`) for one key: an API
//! token (`token:<id>`), an account (`user:<id>`), an account using the OpenRosa endpoints
//! (`collector:<id>`), a collector token (`app_user:<id>`), or an IP address without credentials
//! (`ip:<addr>`, IPv6 by /64). Collectors have their own, larger budget, so a field team syncing
//! at the end of the day is never cut off by someone's script on the JSON API.
//!
//! Several instances share one budget through the database. Counting in the database on every
//! request would put a write on the intake hot path, so each instance counts locally and a
//! background task adds its counts to the shared counters about once a second, reading back
//! the totals ([`fieldvault_store::LimitStore::budget_add`]). A key can therefore overshoot by
//! at most what the other instances admit in one flush interval — bounded and documented, in
//! exchange for no database round trip per request.
//!
//! Attempts are counted whether admitted or refused: a client that keeps hammering after its 429s
//! is what sustained excess means. When a key's attempts reach `restrict_factor` × its budget
//! in each of `restrict_windows` consecutive windows, its subject (the token, the account, the
//! collector) is restricted — read-only or suspended — with an audit event and a notice to its
//! owner and every administrator, until an administrator lifts it. Restrictions are rows in the
//! database, reloaded every second by every instance, so one decision holds everywhere.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Mutex, RwLock};
use std::time::Duration;

use fieldvault_store::{BudgetDelta, RestrictionRow, now_ms};
use serde_json::json;

use super::ServiceError;
use crate::App;
use crate::config::Config;

/// Most keys counted at once; past it, new anonymous keys are refused (counted keys go on).
const MAX_KEYS: usize = 100_000;
/// How often counts are flushed and restrictions reloaded.
const FLUSH_EVERY: Duration = Duration::from_secs(1);

/// Which budget a request draws on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    /// The JSON APIs (native, Central-shaped, KoboToolbox-shaped).
    Api,
    /// The OpenRosa endpoints (form list, downloads, submissions).
    Collector,
}

/// What a restriction in force does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Reads still work; changes are refused.
    ReadOnly,
    /// Every request is refused.
    Suspended,
}

/// A refusal: over budget (429) or restricted (403).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// Over budget for this window.
    OverBudget {
        /// Seconds until the window ends.
        retry_after_secs: u64,
    },
    /// The subject is restricted.
    Restricted {
        /// The restricted subject (`token:12`).
        subject: String,
        /// Its mode.
        mode: Mode,
    },
}

#[derive(Debug)]
struct Counter {
    window_start: i64,
    /// The shared total last read back from the database for this window.
    global: i64,
    /// Attempts counted here since the last flush.
    pending: i64,
    limit: i64,
    /// The account told about a restriction of this key.
    owner: Option<i64>,
}

/// Local counters and the restrictions in force.
#[derive(Debug, Default)]
pub struct Budgets {
    counters: Mutex<HashMap<String, Counter>>,
    restrictions: RwLock<HashMap<String, (i64, Mode)>>,
}

/// The key of an anonymous caller: its IP, IPv6 by /64 (one host's whole prefix is one caller).
pub fn ip_key(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) => format!("ip:{v4}"),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => format!("ip:{v4}"),
            None => {
                let s = v6.segments();
                format!("ip:{:x}:{:x}:{:x}:{:x}::/64", s[0], s[1], s[2], s[3])
            }
        },
    }
}

/// The subject a restriction of `key` applies to (an account's OpenRosa budget restricts the
/// account); `None` for keys that are never restricted (IP addresses).
fn subject_of(key: &str) -> Option<String> {
    if let Some(id) = key.strip_prefix("collector:") {
        return Some(format!("user:{id}"));
    }
    ["token:", "user:", "app_user:"]
        .iter()
        .any(|p| key.starts_with(p))
        .then(|| key.to_owned())
}

fn mode_of(s: &str) -> Mode {
    if s == "suspended" {
        Mode::Suspended
    } else {
        Mode::ReadOnly
    }
}

impl Budgets {
    /// The restriction in force for `subject`, if any.
    pub fn restriction(&self, subject: &str) -> Option<Mode> {
        let map = self.restrictions.read().unwrap_or_else(|e| e.into_inner());
        map.get(subject).map(|(_, m)| *m)
    }

    /// Refuses a request of a restricted subject: suspended always, read-only for changes.
    pub fn check_restricted(&self, subject: &str, changes: bool) -> Result<(), Refusal> {
        match self.restriction(subject) {
            Some(mode @ Mode::Suspended) => Err(Refusal::Restricted {
                subject: subject.to_owned(),
                mode,
            }),
            Some(mode @ Mode::ReadOnly) if changes => Err(Refusal::Restricted {
                subject: subject.to_owned(),
                mode,
            }),
            _ => Ok(()),
        }
    }

    /// Counts one attempt of `key` and admits it while the window's total is within `limit`.
    ///
    /// The first time this instance sees a key in a window it reads the shared total, so a
    /// budget spent on other instances is honoured at once; after that the count is local until
    /// the next flush. If the database cannot answer (degraded intake) the local count alone
    /// decides: limits must never stop intake that would otherwise work.
    pub async fn spend(
        &self,
        app: &App,
        key: &str,
        limit: u64,
        owner: Option<i64>,
    ) -> Result<(), Refusal> {
        let now = now_ms();
        let window_ms = window_ms(&app.config);
        let window_start = now - now.rem_euclid(window_ms);
        let known = {
            let map = self.counters.lock().unwrap_or_else(|e| e.into_inner());
            map.get(key).is_some_and(|c| c.window_start == window_start)
        };
        let shared = if known || app.ingest.health().degraded() {
            None
        } else {
            app.store.budget_get(key, window_start).await.ok()
        };
        self.take(key, limit, owner, window_ms, now, shared)
    }

    fn take(
        &self,
        key: &str,
        limit: u64,
        owner: Option<i64>,
        window_ms: i64,
        now: i64,
        shared: Option<i64>,
    ) -> Result<(), Refusal> {
        let window_start = now - now.rem_euclid(window_ms);
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let mut map = self.counters.lock().unwrap_or_else(|e| e.into_inner());
        if !map.contains_key(key) && map.len() >= MAX_KEYS {
            if key.starts_with("ip:") {
                return Err(over(window_start, window_ms, now));
            }
            tracing::warn!(keys = map.len(), "API budget table is full");
        }
        let fresh = || Counter {
            window_start,
            global: 0,
            pending: 0,
            limit,
            owner,
        };
        let c = map.entry(key.to_owned()).or_insert_with(fresh);
        if c.window_start != window_start {
            *c = fresh();
        }
        if let Some(total) = shared {
            c.global = c.global.max(total);
        }
        let seen = c.global + c.pending;
        c.pending += 1;
        if seen >= limit {
            Err(over(window_start, window_ms, now))
        } else {
            Ok(())
        }
    }

    /// Adds local counts to the shared counters, reloads restrictions, and restricts keys whose
    /// excess has been sustained.
    pub async fn flush(&self, app: &App) -> Result<(), ServiceError> {
        let now = now_ms();
        let window_ms = window_ms(&app.config);
        let current = now - now.rem_euclid(window_ms);
        // Take the pending counts out under the lock; the database round trip happens without it.
        let (deltas, limits): (Vec<BudgetDelta>, Vec<(i64, Option<i64>)>) = {
            let mut map = self.counters.lock().unwrap_or_else(|e| e.into_inner());
            map.retain(|_, c| c.window_start >= current || c.pending > 0);
            map.iter_mut()
                .filter(|(_, c)| c.pending > 0)
                .map(|(k, c)| {
                    let d = BudgetDelta {
                        key: k.clone(),
                        window_start: c.window_start,
                        attempts: c.pending,
                    };
                    c.global += c.pending;
                    c.pending = 0;
                    (d, (c.limit, c.owner))
                })
                .unzip()
        };
        if !deltas.is_empty() {
            let totals = app.store.budget_add(&deltas).await?;
            {
                let mut map = self.counters.lock().unwrap_or_else(|e| e.into_inner());
                for (d, total) in deltas.iter().zip(&totals) {
                    if let Some(c) = map.get_mut(&d.key)
                        && c.window_start == d.window_start
                    {
                        c.global = c.global.max(*total);
                    }
                }
            }
            let factor = i64::try_from(app.config.limits_restrict_factor).unwrap_or(i64::MAX);
            let windows = i64::try_from(app.config.limits_restrict_windows).unwrap_or(0);
            for ((d, total), (limit, owner)) in deltas.iter().zip(&totals).zip(&limits) {
                let threshold = limit.saturating_mul(factor);
                if windows == 0 || *total < threshold {
                    continue;
                }
                let Some(subject) = subject_of(&d.key) else {
                    continue;
                };
                if self.restriction(&subject).is_some() {
                    continue;
                }
                let since = current - (windows - 1) * window_ms;
                let over = app
                    .store
                    .budget_windows_over(&d.key, since, threshold)
                    .await?;
                if over >= windows {
                    restrict(app, &subject, *limit, *owner).await?;
                }
            }
        }
        let active = app.store.active_restrictions().await?;
        let fresh: HashMap<String, (i64, Mode)> = active
            .into_iter()
            .map(|r| (r.subject, (r.id, mode_of(&r.mode))))
            .collect();
        *self.restrictions.write().unwrap_or_else(|e| e.into_inner()) = fresh;
        Ok(())
    }
}

fn window_ms(config: &Config) -> i64 {
    i64::try_from(config.limits_window_secs)
        .unwrap_or(60)
        .saturating_mul(1000)
        .max(1000)
}

fn over(window_start: i64, window_ms: i64, now: i64) -> Refusal {
    let left_ms = (window_start + window_ms - now).max(1);
    Refusal::OverBudget {
        retry_after_secs: u64::try_from((left_ms + 999) / 1000).unwrap_or(1),
    }
}

/// Restricts `subject`: the row (once, even when instances race), the audit event, the notices.
async fn restrict(
    app: &App,
    subject: &str,
    limit: i64,
    owner: Option<i64>,
) -> Result<(), ServiceError> {
    let c = &app.config;
    let mode = c.limits_restrict_mode.as_str();
    let reason = format!(
        "more than {} × its budget of {limit} requests per {} s in each of {} consecutive windows",
        c.limits_restrict_factor, c.limits_window_secs, c.limits_restrict_windows
    );
    let mut notify = app.store.superuser_ids().await?;
    if let Some(o) = owner
        && !notify.contains(&o)
    {
        notify.push(o);
    }
    let Some(row) = app
        .store
        .restrict(subject, mode, &reason, &notify, now_ms())
        .await?
    else {
        return Ok(());
    };
    tracing::warn!(
        subject,
        mode,
        "restricted after sustained excess over its API budget"
    );
    super::audit::record(
        app.store.as_ref(),
        "system".into(),
        "restriction.create",
        Some(subject.to_owned()),
        json!({ "id": row.id, "mode": mode, "reason": reason, "budget": limit }),
    )
    .await?;
    Ok(())
}

/// Flushes counts and reloads restrictions every second until the process ends.
pub fn spawn_flush(app: App) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(FLUSH_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut rounds: u64 = 0;
        loop {
            tick.tick().await;
            if let Err(e) = app.budgets.flush(&app).await {
                tracing::warn!(error = %e, "could not flush API budget counters");
            }
            rounds += 1;
            if rounds.is_multiple_of(60) {
                let keep = window_ms(&app.config).saturating_mul(
                    i64::try_from(app.config.limits_restrict_windows).unwrap_or(0) + 2,
                );
                let _ = app.store.budget_prune(now_ms() - keep).await;
            }
        }
    });
}

/// Restrictions for administrators (newest first).
pub async fn list(
    app: &App,
    actor: &fieldvault_core::Actor,
) -> Result<Vec<RestrictionRow>, ServiceError> {
    fieldvault_core::authorize(
        actor,
        fieldvault_core::Verb::RestrictionManage,
        fieldvault_core::Resource::Site,
    )?;
    Ok(app.store.restrictions(500).await?)
}

/// Restricts a token, an account or a collector by hand (an administrator who sees abuse before
/// the automatic rule does). Notices go to the owner of a restricted account and to every
/// administrator, as for automatic restrictions.
pub async fn restrict_by_hand(
    app: &App,
    actor: &fieldvault_core::Actor,
    by: &str,
    subject: &str,
    mode: &str,
    reason: Option<&str>,
) -> Result<RestrictionRow, ServiceError> {
    fieldvault_core::authorize(
        actor,
        fieldvault_core::Verb::RestrictionManage,
        fieldvault_core::Resource::Site,
    )?;
    let bad = |field: &'static str, msg: &str| {
        ServiceError::Core(fieldvault_core::CoreError::invalid(field, msg.to_owned()))
    };
    let (kind, id) = subject
        .split_once(':')
        .ok_or_else(|| bad("subject", "must be token:<id>, user:<id> or app_user:<id>"))?;
    let id: i64 = id
        .parse()
        .map_err(|_| bad("subject", "the id after the colon must be a number"))?;
    if !matches!(kind, "token" | "user" | "app_user") {
        return Err(bad(
            "subject",
            "must be token:<id>, user:<id> or app_user:<id>",
        ));
    }
    if !matches!(mode, "read_only" | "suspended") {
        return Err(bad("mode", "must be read_only or suspended"));
    }
    let reason = reason.unwrap_or("restricted by an administrator").trim();
    if reason.is_empty() || reason.chars().count() > 500 {
        return Err(bad("reason", "must be 1 to 500 characters"));
    }
    let reason = format!("{reason} ({by})");
    let mut notify = app.store.superuser_ids().await?;
    if kind == "user" && !notify.contains(&id) {
        notify.push(id);
    }
    let row = app
        .store
        .restrict(subject, mode, &reason, &notify, now_ms())
        .await?
        .ok_or(ServiceError::Conflict {
            code: "restriction.exists",
            message: format!("{subject} is already restricted; lift that restriction first."),
        })?;
    super::audit::record(
        app.store.as_ref(),
        by.to_owned(),
        "restriction.create",
        Some(subject.to_owned()),
        json!({ "id": row.id, "mode": mode, "reason": reason, "manual": true }),
    )
    .await?;
    app.budgets
        .restrictions
        .write()
        .unwrap_or_else(|e| e.into_inner())
        .insert(subject.to_owned(), (row.id, mode_of(mode)));
    Ok(row)
}

/// Lifts a restriction; the subject's counters start again from zero.
pub async fn lift(
    app: &App,
    actor: &fieldvault_core::Actor,
    by: &str,
    id: i64,
) -> Result<RestrictionRow, ServiceError> {
    fieldvault_core::authorize(
        actor,
        fieldvault_core::Verb::RestrictionManage,
        fieldvault_core::Resource::Site,
    )?;
    let row = app
        .store
        .lift_restriction(id, by, now_ms())
        .await?
        .ok_or(ServiceError::NotFound)?;
    super::audit::record(
        app.store.as_ref(),
        by.to_owned(),
        "restriction.lift",
        Some(row.subject.clone()),
        json!({ "id": row.id, "mode": row.mode }),
    )
    .await?;
    {
        let mut map = app
            .budgets
            .restrictions
            .write()
            .unwrap_or_else(|e| e.into_inner());
        map.remove(&row.subject);
    }
    {
        let mut map = app
            .budgets
            .counters
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        map.retain(|k, _| subject_of(k).as_deref() != Some(row.subject.as_str()));
    }
    Ok(row)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn budget_admits_up_to_the_limit_then_says_when_the_window_ends() {
        let b = Budgets::default();
        let w = 60_000;
        // 15 s into a window (1_800_000_000_000 is a multiple of 60 000).
        let t0 = 1_800_000_000_000 + 15_000;
        for _ in 0..3 {
            assert_eq!(b.take("token:1", 3, None, w, t0, None), Ok(()));
        }
        assert_eq!(
            b.take("token:1", 3, None, w, t0, None),
            Err(Refusal::OverBudget {
                retry_after_secs: 45
            })
        );
        // Another key has its own budget, here with 2 already spent on another instance; the
        // next window starts afresh.
        assert_eq!(b.take("token:2", 3, None, w, t0, Some(2)), Ok(()));
        assert!(b.take("token:2", 3, None, w, t0, None).is_err());
        assert_eq!(b.take("token:1", 3, None, w, t0 + 60_000, None), Ok(()));
    }

    #[test]
    fn keys_map_to_restriction_subjects() {
        assert_eq!(subject_of("collector:4").as_deref(), Some("user:4"));
        assert_eq!(subject_of("token:9").as_deref(), Some("token:9"));
        assert_eq!(subject_of("app_user:2").as_deref(), Some("app_user:2"));
        assert_eq!(subject_of("ip:192.0.2.1"), None);
        assert_eq!(ip_key("192.0.2.1".parse().unwrap()), "ip:192.0.2.1");
        assert_eq!(
            ip_key("2001:db8:1:2:3:4:5:6".parse().unwrap()),
            "ip:2001:db8:1:2::/64"
        );
        assert_eq!(ip_key("::ffff:192.0.2.7".parse().unwrap()), "ip:192.0.2.7");
    }

    #[test]
    fn restrictions_refuse_by_mode() {
        let b = Budgets::default();
        b.restrictions
            .write()
            .unwrap()
            .insert("token:1".into(), (1, Mode::ReadOnly));
        b.restrictions
            .write()
            .unwrap()
            .insert("user:2".into(), (2, Mode::Suspended));
        assert!(b.check_restricted("token:1", false).is_ok());
        assert!(b.check_restricted("token:1", true).is_err());
        assert!(b.check_restricted("user:2", false).is_err());
        assert!(b.check_restricted("user:3", true).is_ok());
    }
}
