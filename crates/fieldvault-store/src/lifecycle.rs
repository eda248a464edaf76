//! Account lifecycle: invite links, password-reset links, forced resets, the per-account 2FA
//! requirement, browser sessions and account deletion.
//!
//! Invite and reset tokens are looked up by their SHA-256, like sessions, so a copy of the
//! database yields no usable link. Each use case that writes several rows is one method (one
//! transaction): using an invite creates the account; using a reset link sets the password and
//! ends every session; deleting an account takes its sole-managed projects and their data keys
//! with it.

use async_trait::async_trait;
use fieldvault_core::UserId;

use crate::{NewUser, ProjectRow, StoreError, UserRow};

/// An invite link as stored.
#[derive(Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct InviteRow {
    /// Store id.
    pub id: i64,
    /// SHA-256 of the invite token.
    pub token_hash: Vec<u8>,
    /// The administrator who made it.
    pub created_by: Option<i64>,
    /// Creation time.
    pub created_at: i64,
    /// Expiry time.
    pub expires_at: i64,
    /// When it was used (single use).
    pub used_at: Option<i64>,
    /// The account it created.
    pub used_by: Option<i64>,
    /// A username the invite is fixed to, if any.
    pub username: Option<String>,
    /// An e-mail address the invite is fixed to, if any.
    pub email: Option<String>,
}

impl std::fmt::Debug for InviteRow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "InviteRow({})", self.id)
    }
}

/// What creating an invite needs.
pub struct NewInvite {
    /// SHA-256 of the token handed out.
    pub token_hash: Vec<u8>,
    /// Who made it.
    pub created_by: Option<UserId>,
    /// Expiry time.
    pub expires_at: i64,
    /// Fixed username, if any.
    pub username: Option<String>,
    /// Fixed e-mail, if any.
    pub email: Option<String>,
}

/// A password-reset link as stored.
#[derive(Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct PasswordResetRow {
    /// Store id.
    pub id: i64,
    /// The account whose password it resets.
    pub user_id: i64,
    /// SHA-256 of the token.
    pub token_hash: Vec<u8>,
    /// The administrator who issued it.
    pub created_by: Option<i64>,
    /// Creation time.
    pub created_at: i64,
    /// Expiry time.
    pub expires_at: i64,
    /// When it was used (single use).
    pub used_at: Option<i64>,
}

impl std::fmt::Debug for PasswordResetRow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PasswordResetRow({}, user {})", self.id, self.user_id)
    }
}

/// Account lifecycle storage.
#[async_trait]
pub trait LifecycleStore: Send + Sync {
    /// Stores an invite link.
    async fn create_invite(&self, new: &NewInvite) -> Result<InviteRow, StoreError>;

    /// An invite that is unused and has not expired at `now`.
    async fn invite_by_hash(
        &self,
        token_hash: &[u8],
        now: i64,
    ) -> Result<Option<InviteRow>, StoreError>;

    /// Uses the invite `invite_id` and creates the account, atomically. `NotFound` when the
    /// invite is used or expired by now; `Conflict` for a taken username (the invite stays
    /// unused).
    async fn create_user_with_invite(
        &self,
        invite_id: i64,
        now: i64,
        new: &NewUser,
    ) -> Result<UserRow, StoreError>;

    /// Stores a password-reset link for an account.
    async fn create_password_reset(
        &self,
        user_id: UserId,
        token_hash: &[u8],
        created_by: Option<UserId>,
        expires_at: i64,
    ) -> Result<PasswordResetRow, StoreError>;

    /// A reset link that is unused and has not expired at `now`.
    async fn password_reset_by_hash(
        &self,
        token_hash: &[u8],
        now: i64,
    ) -> Result<Option<PasswordResetRow>, StoreError>;

    /// Uses the reset link `reset_id`: sets the password hash, clears the forced-reset flag,
    /// voids the account's other reset links and ends every session, atomically. `NotFound`
    /// when the link is used or expired by now.
    async fn complete_password_reset(
        &self,
        reset_id: i64,
        now: i64,
        password_hash: &str,
    ) -> Result<UserId, StoreError>;

    /// A changed password: sets the hash, clears the forced-reset flag and ends every session
    /// of the account except `keep` (the caller's own), atomically. Returns sessions ended.
    async fn change_password(
        &self,
        user_id: UserId,
        password_hash: &str,
        keep: Option<&[u8]>,
    ) -> Result<u64, StoreError>;

    /// Sets or clears the forced-reset flag; setting it also ends every session.
    async fn set_must_reset_password(&self, user_id: UserId, on: bool) -> Result<(), StoreError>;

    /// Sets or clears the administrator's 2FA requirement.
    async fn set_require_2fa(&self, user_id: UserId, on: bool) -> Result<(), StoreError>;

    /// Stores a browser (cookie) session.
    async fn create_browser_session(
        &self,
        user_id: i64,
        token_hash: &[u8],
        expires_at: i64,
    ) -> Result<crate::SessionRow, StoreError>;

    /// Records activity on a session (for the idle timeout).
    async fn touch_session(&self, token_hash: &[u8], now: i64) -> Result<(), StoreError>;

    /// Active, undeleted site administrators.
    async fn count_active_superusers(&self) -> Result<i64, StoreError>;

    /// Undeleted projects in which the account is a manager and no other account is.
    async fn sole_managed_projects(&self, user_id: UserId) -> Result<Vec<ProjectRow>, StoreError>;

    /// Deletes an account, atomically: its sole-managed projects are soft-deleted and their
    /// data keys destroyed (crypto-shredding); its roles, sessions, second factor and reset
    /// links go; its API tokens are revoked; the row is kept (audit references, foreign keys)
    /// but anonymised (`deleted-<id>`, no e-mail, no usable hash) and can never be reactivated.
    /// Returns the projects deleted with it (their `data_key_id` as it was, for cache eviction).
    async fn delete_account(
        &self,
        user_id: UserId,
        now: i64,
    ) -> Result<Vec<ProjectRow>, StoreError>;
}
