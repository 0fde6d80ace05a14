//! Brute-force defence: per-account delays and lock, and a per-address throttle.
//!
//! Two attacks, two defences:
//!
//! - **Guessing one account's password.** [`LockoutPolicy`] lets a few failures pass
//!   freely (typos), then makes each further attempt wait a delay that doubles per failure
//!   up to a cap, and locks the account after [`LockoutPolicy::hard_lock_after`]
//!   consecutive failures until an administrator unlocks it. NIST SP 800-63B-4 3.2.2
//!   limits consecutive failed attempts on one account to at most 100; the delays make
//!   reaching 100 take about 21 hours, so a legitimate user nearly never meets the lock.
//!   The state ([`AccountAttempts`]) is persisted by the caller with the account.
//! - **Password spraying**: one common password tried against many accounts, which
//!   per-account counting never sees. [`AddressThrottle`] counts failures per client
//!   address (IPv6 per /64, since one host usually holds a whole /64) in memory and blocks
//!   an address that fails too often.
//!
//! Time is always passed in (`now_ms`, Unix milliseconds); nothing here reads a clock.
//!
//! When a gate is not [`Gate::Open`], the caller refuses the attempt *without* checking the
//! password and *without* recording a failure. Checking would let an attacker keep
//! guessing during the wait; recording would let anyone extend another user's wait.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::sync::{Mutex, PoisonError};

/// Whether an attempt may proceed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Gate {
    /// Check the credentials.
    Open,
    /// Refuse now; an attempt after `retry_after_ms` milliseconds may proceed. Suitable
    /// for a `Retry-After` header (rounded up to seconds).
    Wait { retry_after_ms: i64 },
    /// Refuse until an administrator unlocks the account.
    Locked,
}

/// The per-account policy. See the module documentation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LockoutPolicy {
    /// Consecutive failures allowed without delay: room for typos.
    pub free_attempts: u32,
    /// The wait after the first failure beyond the free ones; doubled per further failure.
    pub base_delay_ms: i64,
    /// The longest wait between attempts.
    pub max_delay_ms: i64,
    /// Consecutive failures at which the account locks (NIST's limit is 100).
    pub hard_lock_after: u32,
}

impl LockoutPolicy {
    /// 5 free attempts; then 1 s, 2 s, 4 s, … up to 15 min between attempts; locked at
    /// 100 consecutive failures. Reaching the lock takes at least 77,523 s (21.5 h).
    pub const DEFAULT: LockoutPolicy =
        LockoutPolicy { free_attempts: 5, base_delay_ms: 1_000, max_delay_ms: 15 * 60 * 1_000, hard_lock_after: 100 };

    /// Whether an attempt on the account may proceed at `now_ms`.
    ///
    /// After `n ≥ free_attempts` consecutive failures, the next attempt must wait
    /// `base_delay_ms · 2^(n − free_attempts)`, at most `max_delay_ms`, after the last
    /// failure. A clock that went backwards never makes the wait longer than that delay.
    pub fn gate(&self, attempts: &AccountAttempts, now_ms: i64) -> Gate {
        if attempts.locked || attempts.consecutive_failures >= self.hard_lock_after {
            return Gate::Locked;
        }
        if attempts.consecutive_failures < self.free_attempts {
            return Gate::Open;
        }
        // Without a recorded time (state written by something else), there is nothing
        // to wait from; record_failure always sets it.
        let Some(last_failure_ms) = attempts.last_failure_ms else {
            return Gate::Open;
        };
        let delay_ms = self.delay_ms(attempts.consecutive_failures);
        let ready_ms = last_failure_ms.saturating_add(delay_ms);
        if now_ms >= ready_ms {
            Gate::Open
        } else {
            Gate::Wait { retry_after_ms: ready_ms.saturating_sub(now_ms).min(delay_ms) }
        }
    }

    /// Records a failed attempt (call only after the gate was open). Locks the account
    /// when the count reaches `hard_lock_after`.
    pub fn record_failure(&self, attempts: &mut AccountAttempts, now_ms: i64) {
        attempts.consecutive_failures = attempts.consecutive_failures.saturating_add(1);
        attempts.last_failure_ms = Some(now_ms);
        if attempts.consecutive_failures >= self.hard_lock_after {
            attempts.locked = true;
        }
    }

    /// Records a successful attempt: the failure count starts again. A lock stays: only
    /// [`LockoutPolicy::unlock`] lifts it (and the gate never lets a locked account
    /// reach a success).
    pub fn record_success(&self, attempts: &mut AccountAttempts) {
        attempts.consecutive_failures = 0;
        attempts.last_failure_ms = None;
    }

    /// An administrator's unlock: clears the lock and the failure count.
    pub fn unlock(&self, attempts: &mut AccountAttempts) {
        *attempts = AccountAttempts::default();
    }

    fn delay_ms(&self, consecutive_failures: u32) -> i64 {
        let doublings = consecutive_failures.saturating_sub(self.free_attempts).min(62);
        self.base_delay_ms.checked_mul(1i64 << doublings).unwrap_or(i64::MAX).min(self.max_delay_ms)
    }
}

impl Default for LockoutPolicy {
    fn default() -> Self {
        Self::DEFAULT
    }
}

/// An account's failure record, persisted by the caller with the account.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct AccountAttempts {
    pub consecutive_failures: u32,
    /// Unix milliseconds of the last failure.
    pub last_failure_ms: Option<i64>,
    /// Locked until an administrator unlocks.
    pub locked: bool,
}

/// The per-address policy.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AddressPolicy {
    /// Failures from one address within a window that block it.
    pub failures_max: u32,
    /// The counting window, starting at the first failure after the last window or block.
    pub window_ms: i64,
    /// How long a blocked address stays blocked.
    pub block_ms: i64,
    /// Most addresses remembered; when full, the address whose last failure is oldest is
    /// forgotten. Bounds memory to a few megabytes at the default.
    pub entries_max: usize,
}

impl AddressPolicy {
    /// 20 failures within 10 minutes block the address for 15 minutes; 100,000 addresses
    /// remembered (about 10 MB). 20 allows a busy shared address (a hospital's NAT) its
    /// typos while stopping a sprayer after 20 accounts per quarter hour.
    pub const DEFAULT: AddressPolicy =
        AddressPolicy { failures_max: 20, window_ms: 10 * 60 * 1_000, block_ms: 15 * 60 * 1_000, entries_max: 100_000 };
}

impl Default for AddressPolicy {
    fn default() -> Self {
        Self::DEFAULT
    }
}

/// Per-address failure counting, in memory, shared across threads.
///
/// Limitation: the memory bound means an attacker controlling more than `entries_max`
/// addresses (or IPv6 /64s) can push a blocked address out and so unblock it; the
/// per-account lockout still applies to every account.
#[derive(Debug)]
pub struct AddressThrottle {
    policy: AddressPolicy,
    state: Mutex<AddressState>,
}

impl AddressThrottle {
    pub fn new(policy: AddressPolicy) -> AddressThrottle {
        AddressThrottle { policy, state: Mutex::new(AddressState::default()) }
    }

    /// Whether an attempt from `address` may proceed at `now_ms`.
    pub fn check(&self, address: IpAddr, now_ms: i64) -> Gate {
        let state = self.lock();
        let Some(entry) = state.entries.get(&AddressKey::of(address)) else {
            return Gate::Open;
        };
        match entry.blocked_until_ms {
            Some(until_ms) if now_ms < until_ms => {
                Gate::Wait { retry_after_ms: until_ms.saturating_sub(now_ms).min(self.policy.block_ms) }
            }
            _ => Gate::Open,
        }
    }

    /// Records a failed attempt from `address` (call only after the gate was open).
    pub fn record_failure(&self, address: IpAddr, now_ms: i64) {
        let key = AddressKey::of(address);
        let mut state = self.lock();
        let state = &mut *state;
        state.sequence += 1;
        let sequence = state.sequence;
        if !state.entries.contains_key(&key) {
            while state.entries.len() >= self.policy.entries_max.max(1) {
                let Some((_, oldest)) = state.by_recency.pop_first() else { break };
                state.entries.remove(&oldest);
            }
            state
                .entries
                .insert(key, AddressEntry { window_start_ms: now_ms, failures: 0, blocked_until_ms: None, sequence });
        } else if let Some(entry) = state.entries.get(&key) {
            state.by_recency.remove(&entry.sequence);
        }
        state.by_recency.insert(sequence, key);
        let Some(entry) = state.entries.get_mut(&key) else { return };
        entry.sequence = sequence;
        if entry.blocked_until_ms.is_some_and(|until_ms| now_ms < until_ms) {
            return;
        }
        let block_over = entry.blocked_until_ms.is_some();
        if block_over || now_ms.saturating_sub(entry.window_start_ms) >= self.policy.window_ms {
            entry.window_start_ms = now_ms;
            entry.failures = 0;
            entry.blocked_until_ms = None;
        }
        entry.failures = entry.failures.saturating_add(1);
        if entry.failures >= self.policy.failures_max {
            entry.blocked_until_ms = Some(now_ms.saturating_add(self.policy.block_ms));
        }
    }

    /// Addresses (IPv4 addresses and IPv6 /64s) currently remembered.
    pub fn tracked_addresses(&self) -> usize {
        self.lock().entries.len()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, AddressState> {
        // The state is a cache of counters; after a panic elsewhere it is still usable.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Default for AddressThrottle {
    fn default() -> Self {
        Self::new(AddressPolicy::DEFAULT)
    }
}

/// An IPv4 address, or the /64 prefix of an IPv6 address. IPv4-mapped IPv6 addresses
/// count as their IPv4 address, so a dual-stack listener does not split one client.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum AddressKey {
    V4([u8; 4]),
    V6Prefix([u8; 8]),
}

impl AddressKey {
    fn of(address: IpAddr) -> AddressKey {
        match address {
            IpAddr::V4(v4) => AddressKey::V4(v4.octets()),
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => AddressKey::V4(v4.octets()),
                None => {
                    let octets = v6.octets();
                    let mut prefix = [0u8; 8];
                    prefix.copy_from_slice(&octets[..8]);
                    AddressKey::V6Prefix(prefix)
                }
            },
        }
    }
}

#[derive(Debug)]
struct AddressEntry {
    window_start_ms: i64,
    failures: u32,
    blocked_until_ms: Option<i64>,
    /// Position in `by_recency`: larger is more recent.
    sequence: u64,
}

#[derive(Debug, Default)]
struct AddressState {
    entries: HashMap<AddressKey, AddressEntry>,
    /// Entries by the sequence number of their last failure, oldest first, for eviction
    /// in O(log n).
    by_recency: BTreeMap<u64, AddressKey>,
    sequence: u64,
}
