//! Storage for API budgets, automatic restrictions and the notices they send.
//!
//! Budget counters live in the database so that several instances sharing it enforce one budget:
//! each instance counts locally and adds its counts with [`LimitStore::budget_add`] about once a
//! second, reading back the global totals. Restrictions are rows with a partial unique index
//! (one in force per subject), so two instances deciding at once create one.

use async_trait::async_trait;

use crate::StoreError;

/// Attempts to add to one budget counter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BudgetDelta {
    /// The budget's key, e.g. `token:12`, `user:5`, `app_user:3`, `ip:192.0.2.1`.
    pub key: String,
    /// Start of the fixed window, in ms since the epoch.
    pub window_start: i64,
    /// Attempts counted locally since the last flush (accepted and refused alike).
    pub attempts: i64,
}

/// A restriction of a token, an account or a collector.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct RestrictionRow {
    /// Id.
    pub id: i64,
    /// What is restricted: `token:<id>`, `user:<id>` or `app_user:<id>`.
    pub subject: String,
    /// `read_only` or `suspended`.
    pub mode: String,
    /// Why, for people (the budget, the excess, how long).
    pub reason: String,
    /// When it began.
    pub created_at: i64,
    /// When it was lifted, if it was.
    pub lifted_at: Option<i64>,
    /// Who lifted it (`user:<name>` or `cli:<os user>`).
    pub lifted_by: Option<String>,
}

/// A notice for one account.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct NoticeRow {
    /// Id.
    pub id: i64,
    /// The account it is for.
    pub user_id: i64,
    /// Stable kind, e.g. `restriction.created`.
    pub kind: String,
    /// For people.
    pub message: String,
    /// When it was sent.
    pub created_at: i64,
    /// When the account marked it read.
    pub read_at: Option<i64>,
}

/// Budgets, restrictions and notices.
#[async_trait]
pub trait LimitStore: Send + Sync {
    /// Adds each delta to its counter in one transaction and returns the new totals, in order.
    async fn budget_add(&self, deltas: &[BudgetDelta]) -> Result<Vec<i64>, StoreError>;

    /// The shared total of one counter (0 when it does not exist).
    async fn budget_get(&self, key: &str, window_start: i64) -> Result<i64, StoreError>;

    /// How many windows of `key` starting at or after `since` counted at least `threshold`
    /// attempts.
    async fn budget_windows_over(
        &self,
        key: &str,
        since: i64,
        threshold: i64,
    ) -> Result<i64, StoreError>;

    /// Forgets the counters of `key` (a lifted restriction starts from a clean slate).
    async fn budget_reset(&self, key: &str) -> Result<(), StoreError>;

    /// Forgets every window that started before `before`.
    async fn budget_prune(&self, before: i64) -> Result<u64, StoreError>;

    /// Restricts `subject` unless a restriction is already in force, and sends `message` to each
    /// account in `notify`, atomically. `None` when one was already in force.
    async fn restrict(
        &self,
        subject: &str,
        mode: &str,
        reason: &str,
        notify: &[i64],
        now: i64,
    ) -> Result<Option<RestrictionRow>, StoreError>;

    /// Restrictions in force.
    async fn active_restrictions(&self) -> Result<Vec<RestrictionRow>, StoreError>;

    /// The newest restrictions, lifted or not.
    async fn restrictions(&self, limit: i64) -> Result<Vec<RestrictionRow>, StoreError>;

    /// Lifts a restriction in force and forgets its subject's counters; `None` if there is no
    /// such restriction in force.
    async fn lift_restriction(
        &self,
        id: i64,
        by: &str,
        now: i64,
    ) -> Result<Option<RestrictionRow>, StoreError>;

    /// Ids of active site administrators (they are told of every restriction).
    async fn superuser_ids(&self) -> Result<Vec<i64>, StoreError>;

    /// An account's newest notices.
    async fn notices(&self, user_id: i64, limit: i64) -> Result<Vec<NoticeRow>, StoreError>;

    /// Marks every notice of an account read; returns how many changed.
    async fn mark_notices_read(&self, user_id: i64, now: i64) -> Result<u64, StoreError>;
}
