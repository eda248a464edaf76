//! Second-factor state. Accepting a TOTP step or a recovery code is a conditional UPDATE, so a
//! code is accepted once even when two instances see it at the same moment.

use async_trait::async_trait;

use crate::{DataKeyRow, StoreError};

/// A user's TOTP enrolment.
#[derive(Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct TotpRow {
    /// The account.
    pub user_id: i64,
    /// The secret, sealed with the site data key.
    pub secret_sealed: Vec<u8>,
    /// When enrolment was confirmed; `None` while pending.
    pub confirmed_at: Option<i64>,
    /// The last accepted step.
    pub last_step: i64,
}

impl std::fmt::Debug for TotpRow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "TotpRow(user {}, confirmed {:?})",
            self.user_id, self.confirmed_at
        )
    }
}

/// Second factors and the site data key that seals their secrets.
#[async_trait]
pub trait TwoFactorStore: Send + Sync {
    /// Stores `key` unless a key with its id exists; returns the stored key (first writer wins).
    async fn ensure_data_key(&self, key: &DataKeyRow) -> Result<DataKeyRow, StoreError>;

    /// Starts (or restarts) enrolment with a new sealed secret; not active until confirmed.
    async fn set_totp_pending(&self, user_id: i64, secret_sealed: &[u8]) -> Result<(), StoreError>;

    /// The enrolment, if any.
    async fn totp(&self, user_id: i64) -> Result<Option<TotpRow>, StoreError>;

    /// Confirms enrolment at `step` and replaces the recovery codes, in one transaction.
    async fn confirm_totp(
        &self,
        user_id: i64,
        step: i64,
        code_hashes: &[Vec<u8>],
    ) -> Result<(), StoreError>;

    /// Accepts `step` if it is later than the last accepted one; `false` for a replay.
    async fn accept_totp_step(&self, user_id: i64, step: i64) -> Result<bool, StoreError>;

    /// Uses a recovery code; `false` if unknown or already used.
    async fn use_recovery_code(&self, user_id: i64, code_hash: &[u8]) -> Result<bool, StoreError>;

    /// Removes the second factor and its recovery codes.
    async fn delete_totp(&self, user_id: i64) -> Result<(), StoreError>;
}
