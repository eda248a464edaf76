//! The few reads the web console needs that no JSON route answers yet: an administrator looking one
//! account up by name or id (with its second-factor state, which `GET /v1/users` does not give), and the instance's backup status
//! for the system-health panel. Everything else the console does goes through the JSON API.

use fieldvault_core::{Actor, Resource, Verb, authorize};
use fieldvault_store::UserRow;

use super::ServiceError;
use crate::App;

/// One account as the admin page shows it.
#[derive(Debug, Clone)]
pub struct AccountSummary {
    /// The account.
    pub user: UserRow,
    /// Whether it has a confirmed second factor.
    pub second_factor: bool,
}

/// Looks an account up by username (case-insensitive) or numeric id (administrators with a
/// second factor only).
pub async fn find_account(
    app: &App,
    actor: &Actor,
    username: &str,
) -> Result<Option<AccountSummary>, ServiceError> {
    authorize(actor, Verb::UserList, Resource::Site)?;
    let name = username.trim();
    if name.is_empty() || name.chars().count() > 320 {
        return Ok(None);
    }
    let found = match name.parse::<i64>() {
        Ok(id) => app.store.user_by_id(fieldvault_core::UserId(id)).await?,
        Err(_) => app.store.user_by_username(name).await?,
    };
    let Some(user) = found else {
        return Ok(None);
    };
    let second_factor = super::two_factor::enabled(app, &user).await?;
    Ok(Some(AccountSummary {
        user,
        second_factor,
    }))
}

/// What this instance knows of its backups.
#[derive(Debug, Clone, Default)]
pub struct BackupOverview {
    /// `backup.target` is set.
    pub configured: bool,
    /// Unix seconds of the last backup this instance took since it started.
    pub last_success: Option<i64>,
    /// Unix seconds of the last failed scheduled backup.
    pub last_failure: Option<i64>,
    /// Whether the last backup passed its check.
    pub last_check_ok: Option<bool>,
}

/// The backup status for the system-health panel (administrators only).
pub fn backup_overview(app: &App, actor: &Actor) -> Result<BackupOverview, ServiceError> {
    authorize(actor, Verb::UserList, Resource::Site)?;
    let s = app.backup.lock().map(|s| s.clone()).unwrap_or_default();
    Ok(BackupOverview {
        configured: app.config.backup_target.is_some(),
        last_success: s.last_success,
        last_failure: s.last_failure,
        last_check_ok: s.last_check_ok,
    })
}
