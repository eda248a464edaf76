//! Storage for login throttling (`core::softlock`): one row per key, updated in a transaction
//! that locks the row, so instances sharing the database count every failure exactly once.

use async_trait::async_trait;
use fieldvault_core::softlock::LockState;

use crate::StoreError;

/// A state transition applied under the row lock.
pub type Transition<'a> = dyn Fn(LockState) -> LockState + Send + Sync + 'a;

/// Throttle state.
#[async_trait]
pub trait ThrottleStore: Send + Sync {
    /// The state of `key` (default when unknown).
    async fn throttle_state(&self, key: &str) -> Result<LockState, StoreError>;

    /// Applies `f` to the state of `key` atomically and returns the new state.
    async fn throttle_update(&self, key: &str, f: &Transition<'_>)
    -> Result<LockState, StoreError>;

    /// Forgets `key`.
    async fn throttle_clear(&self, key: &str) -> Result<(), StoreError>;
}
