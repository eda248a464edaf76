//! Login throttling (M4): a temporary softlock per (account, client address) and per client
//! address, with progressive delay, that an attacker cannot turn into a permanent lockout of
//! someone else.
//!
//! ```text
//!            failure                    failure (count ≥ threshold)
//!   Open ───────────────▶ Counting ─────────────────────────────▶ Locked until t + backoff
//!    ▲   success / window expired          │  ▲                          │
//!    └─────────────────────────────────────┘  └── failure after unlock ──┘  (backoff doubles)
//! ```
//! Keys are (account, IP) pairs and bare IPs, never a bare account: guessing a victim's password
//! from many addresses locks those addresses out, not the victim, who signs in from their own
//! address as usual. The clock is an argument so tests step time (kanidm `credential/softlock.rs`).
//! The state is plain data so several instances can share it through the store.

/// One key's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct LockState {
    /// Failures in the current window.
    pub failures: u32,
    /// Start of the current window (Unix ms).
    pub window_start: i64,
    /// Locked until this time (Unix ms); 0 when open.
    pub locked_until: i64,
    /// Locks applied in a row (sets the backoff).
    pub strikes: u32,
}

/// Thresholds for one kind of key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy {
    /// Failures within `window_ms` that lock the key.
    pub threshold: u32,
    /// Length of the counting window.
    pub window_ms: i64,
    /// First lock duration; doubles with each further lock, up to `max_lock_ms`.
    pub base_lock_ms: i64,
    /// Longest lock.
    pub max_lock_ms: i64,
}

/// For (account, IP): 5 failures in 15 minutes lock for 1 minute, then 2, 4… up to an hour.
pub const ACCOUNT_IP: Policy = Policy {
    threshold: 5,
    window_ms: 15 * 60_000,
    base_lock_ms: 60_000,
    max_lock_ms: 3_600_000,
};

/// For a client address across accounts: 30 failures in 15 minutes lock for 5 minutes, up to an hour.
pub const IP: Policy = Policy {
    threshold: 30,
    window_ms: 15 * 60_000,
    base_lock_ms: 5 * 60_000,
    max_lock_ms: 3_600_000,
};

/// Sign-up attempts from one client address: every attempt counts; 10 in an hour lock the
/// address out of sign-up for an hour (M4: account creation is not a free-for-all).
pub const SIGNUP: Policy = Policy {
    threshold: 10,
    window_ms: 3_600_000,
    base_lock_ms: 3_600_000,
    max_lock_ms: 6 * 3_600_000,
};

impl LockState {
    /// Milliseconds until an attempt is allowed again (0: allowed now).
    pub fn retry_after(&self, now: i64) -> i64 {
        (self.locked_until - now).max(0)
    }

    /// Records a failed attempt at `now`.
    pub fn fail(mut self, policy: &Policy, now: i64) -> LockState {
        if now - self.window_start >= policy.window_ms {
            self.failures = 0;
            self.window_start = now;
            // A quiet window forgives earlier locks.
            if self.locked_until + policy.window_ms <= now {
                self.strikes = 0;
            }
        }
        self.failures += 1;
        if self.failures >= policy.threshold {
            let factor = 1i64 << self.strikes.min(20);
            let lock = policy
                .base_lock_ms
                .saturating_mul(factor)
                .min(policy.max_lock_ms);
            self.locked_until = now + lock;
            self.strikes += 1;
            self.failures = 0;
            self.window_start = now;
        }
        self
    }

    /// A successful sign-in clears the (account, IP) state.
    pub fn succeed() -> LockState {
        LockState::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_machine() {
        let p = ACCOUNT_IP;
        let mut s = LockState::default();
        let t0 = 1_000_000;
        for i in 0..4 {
            s = s.fail(&p, t0 + i);
            assert_eq!(s.retry_after(t0 + i), 0, "open before the threshold");
        }
        s = s.fail(&p, t0 + 10);
        assert_eq!(s.retry_after(t0 + 10), 60_000, "locked for a minute");
        assert_eq!(s.retry_after(t0 + 10 + 60_000), 0, "temporary");
        // Failing again right after: the lock doubles.
        let t1 = t0 + 70_000;
        for i in 0..5 {
            s = s.fail(&p, t1 + i);
        }
        assert_eq!(s.retry_after(t1 + 4), 120_000);
        // It never exceeds the maximum.
        let mut t = t1 + 200_000;
        for _ in 0..20 {
            for _ in 0..5 {
                s = s.fail(&p, t);
            }
            t += s.retry_after(t) + 1;
        }
        assert!(s.retry_after(t - 1) <= p.max_lock_ms);
        // A quiet window forgives.
        let quiet = t + 2 * p.window_ms + p.max_lock_ms;
        let s2 = s.fail(&p, quiet);
        assert_eq!((s2.failures, s2.strikes), (1, 0));
        assert_eq!(LockState::succeed(), LockState::default());
    }
}
