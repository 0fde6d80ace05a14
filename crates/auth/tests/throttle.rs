//! Brute-force defence with simulated time.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use medvault_auth::throttle::{AccountAttempts, AddressPolicy, AddressThrottle, Gate, LockoutPolicy};

const SECOND_MS: i64 = 1_000;
const MINUTE_MS: i64 = 60 * SECOND_MS;
const HOUR_MS: i64 = 60 * MINUTE_MS;
const START_MS: i64 = 1_700_000_000_000;

/// An attacker who tries once per second whenever the gate is open, always wrongly.
/// Returns the times (seconds from the start) of the attempts the gate let through.
fn attack_one_account(policy: &LockoutPolicy, attempts: &mut AccountAttempts, seconds: i64) -> Vec<i64> {
    let mut let_through = Vec::new();
    for second in 0..seconds {
        let now_ms = START_MS + second * SECOND_MS;
        if policy.gate(attempts, now_ms) == Gate::Open {
            policy.record_failure(attempts, now_ms);
            let_through.push(second);
        }
    }
    let_through
}

#[test]
fn defaults_are_documented_values() {
    assert_eq!(
        LockoutPolicy::DEFAULT,
        LockoutPolicy { free_attempts: 5, base_delay_ms: 1_000, max_delay_ms: 900_000, hard_lock_after: 100 }
    );
    assert_eq!(
        AddressPolicy::DEFAULT,
        AddressPolicy { failures_max: 20, window_ms: 600_000, block_ms: 900_000, entries_max: 100_000 }
    );
}

#[test]
fn five_free_attempts_then_doubling_delays_in_the_first_hour() {
    let policy = LockoutPolicy::DEFAULT;
    let mut attempts = AccountAttempts::default();
    let let_through = attack_one_account(&policy, &mut attempts, 3_600);
    // 0..4 free; then waits of 1, 2, 4, … 512 s, then 900 s (the cap).
    assert_eq!(let_through, [0, 1, 2, 3, 4, 5, 7, 11, 19, 35, 67, 131, 259, 515, 1_027, 1_927, 2_827]);
    assert_eq!(attempts.consecutive_failures, 17);
    assert!(!attempts.locked);
}

#[test]
fn thousands_of_guesses_get_100_through_then_the_account_locks() {
    let policy = LockoutPolicy::DEFAULT;
    let mut attempts = AccountAttempts::default();
    // Two days of one guess per second: 172,800 tries.
    let let_through = attack_one_account(&policy, &mut attempts, 2 * 24 * 3_600);
    assert_eq!(let_through.len(), 100);
    // The 100th failure comes 77,523 s after the 5th (1,023 s of doubling, 85 × 900 s).
    assert_eq!(let_through[99] - let_through[4], 77_523);
    assert_eq!(let_through[99], 77_527);
    assert!(attempts.locked);
    assert_eq!(attempts.consecutive_failures, 100);
    assert_eq!(policy.gate(&attempts, START_MS + 365 * 24 * HOUR_MS), Gate::Locked);
}

#[test]
fn the_wait_is_reported_and_ends_on_time() {
    let policy = LockoutPolicy::DEFAULT;
    let mut attempts = AccountAttempts::default();
    for _ in 0..7 {
        policy.record_failure(&mut attempts, START_MS);
    }
    // 7 failures: the next attempt waits 1 s · 2^(7 − 5) = 4 s after the last one.
    assert_eq!(policy.gate(&attempts, START_MS), Gate::Wait { retry_after_ms: 4_000 });
    assert_eq!(policy.gate(&attempts, START_MS + 3_999), Gate::Wait { retry_after_ms: 1 });
    assert_eq!(policy.gate(&attempts, START_MS + 4_000), Gate::Open);
    // A clock that went back an hour never makes the wait longer than the delay.
    assert_eq!(policy.gate(&attempts, START_MS - HOUR_MS), Gate::Wait { retry_after_ms: 4_000 });
}

#[test]
fn the_delay_is_capped_at_fifteen_minutes() {
    let policy = LockoutPolicy::DEFAULT;
    let attempts = AccountAttempts { consecutive_failures: 99, last_failure_ms: Some(START_MS), locked: false };
    assert_eq!(policy.gate(&attempts, START_MS), Gate::Wait { retry_after_ms: 900_000 });
    assert_eq!(policy.gate(&attempts, START_MS + 900_000), Gate::Open);
    // Even with absurd counts and a custom policy, no overflow.
    let extreme = LockoutPolicy {
        free_attempts: 0,
        base_delay_ms: i64::MAX / 2,
        max_delay_ms: i64::MAX,
        hard_lock_after: u32::MAX,
    };
    let attempts =
        AccountAttempts { consecutive_failures: u32::MAX - 1, last_failure_ms: Some(START_MS), locked: false };
    assert_eq!(extreme.gate(&attempts, START_MS), Gate::Wait { retry_after_ms: i64::MAX - START_MS });
}

#[test]
fn success_resets_the_count_but_not_a_lock() {
    let policy = LockoutPolicy::DEFAULT;
    let mut attempts = AccountAttempts::default();
    for second in 0..6 {
        policy.record_failure(&mut attempts, START_MS + second * SECOND_MS);
    }
    policy.record_success(&mut attempts);
    assert_eq!(attempts, AccountAttempts::default());
    assert_eq!(policy.gate(&attempts, START_MS + 6 * SECOND_MS), Gate::Open);

    let mut locked = AccountAttempts { consecutive_failures: 100, last_failure_ms: Some(START_MS), locked: true };
    policy.record_success(&mut locked);
    assert!(locked.locked);
    assert_eq!(policy.gate(&locked, START_MS), Gate::Locked);
}

#[test]
fn an_administrator_unlocks_and_the_schedule_starts_again() {
    let policy = LockoutPolicy::DEFAULT;
    let mut attempts = AccountAttempts::default();
    attack_one_account(&policy, &mut attempts, 2 * 24 * 3_600);
    assert_eq!(policy.gate(&attempts, START_MS + 3 * 24 * HOUR_MS), Gate::Locked);
    policy.unlock(&mut attempts);
    assert_eq!(attempts, AccountAttempts::default());
    let again = attack_one_account(&policy, &mut attempts, 20);
    assert_eq!(again, [0, 1, 2, 3, 4, 5, 7, 11, 19]);
}

#[test]
fn a_lock_flag_alone_locks() {
    let policy = LockoutPolicy::DEFAULT;
    let attempts = AccountAttempts { consecutive_failures: 0, last_failure_ms: None, locked: true };
    assert_eq!(policy.gate(&attempts, START_MS), Gate::Locked);
}

fn v4(a: u8, b: u8, c: u8, d: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(a, b, c, d))
}

/// A sprayer tries one password against many accounts, one per second, from `address`.
/// Returns how many tries the address gate let through in `seconds`.
fn spray(throttle: &AddressThrottle, address: IpAddr, start_ms: i64, seconds: i64) -> usize {
    let mut let_through = 0;
    for second in 0..seconds {
        let now_ms = start_ms + second * SECOND_MS;
        if throttle.check(address, now_ms) == Gate::Open {
            // Each try names a different account: the per-account policy never triggers.
            throttle.record_failure(address, now_ms);
            let_through += 1;
        }
    }
    let_through
}

#[test]
fn spraying_from_one_address_is_blocked_after_20_and_another_address_is_unaffected() {
    let throttle = AddressThrottle::new(AddressPolicy::DEFAULT);
    let sprayer = v4(203, 0, 113, 7);
    let bystander = v4(198, 51, 100, 20);
    assert_eq!(spray(&throttle, sprayer, START_MS, 60), 20);
    let after_ms = START_MS + 60 * SECOND_MS;
    // Blocked at the 20th failure (second 19) for 15 minutes.
    assert_eq!(throttle.check(sprayer, after_ms), Gate::Wait { retry_after_ms: 15 * MINUTE_MS - 41 * SECOND_MS });
    assert_eq!(throttle.check(bystander, after_ms), Gate::Open);
    assert_eq!(spray(&throttle, bystander, after_ms, 10), 10);
    assert_eq!(throttle.check(bystander, after_ms + 10 * SECOND_MS), Gate::Open);
    // The block ends on time; a continuing attack gets another 20 and is blocked again.
    let unblocked_ms = START_MS + 19 * SECOND_MS + 15 * MINUTE_MS;
    assert_eq!(throttle.check(sprayer, unblocked_ms - 1), Gate::Wait { retry_after_ms: 1 });
    assert_eq!(throttle.check(sprayer, unblocked_ms), Gate::Open);
    assert_eq!(spray(&throttle, sprayer, unblocked_ms, 60), 20);
}

#[test]
fn a_slow_sprayer_within_the_window_limit_is_not_blocked() {
    let throttle = AddressThrottle::new(AddressPolicy::DEFAULT);
    let address = v4(203, 0, 113, 8);
    // 19 failures per 10-minute window, for two hours.
    for window in 0..12 {
        for attempt in 0..19 {
            let now_ms = START_MS + window * 10 * MINUTE_MS + attempt * SECOND_MS;
            assert_eq!(throttle.check(address, now_ms), Gate::Open, "window {window} attempt {attempt}");
            throttle.record_failure(address, now_ms);
        }
    }
}

#[test]
fn ipv6_addresses_count_per_64_and_mapped_ipv4_as_ipv4() {
    let throttle = AddressThrottle::new(AddressPolicy::DEFAULT);
    // Twenty different addresses in one /64: one sprayer.
    for host in 0..20u16 {
        let address = IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0x1, 0x2, host, 0, 0, host));
        assert_eq!(throttle.check(address, START_MS), Gate::Open);
        throttle.record_failure(address, START_MS);
    }
    let same_64 = IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0x1, 0x2, 0xffff, 0xffff, 0xffff, 0xffff));
    let next_64 = IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0x1, 0x3, 0, 0, 0, 1));
    assert_eq!(throttle.check(same_64, START_MS), Gate::Wait { retry_after_ms: 15 * MINUTE_MS });
    assert_eq!(throttle.check(next_64, START_MS), Gate::Open);
    assert_eq!(throttle.tracked_addresses(), 1);

    let ipv4 = v4(192, 0, 2, 1);
    for _ in 0..20 {
        throttle.record_failure(ipv4, START_MS);
    }
    let mapped = IpAddr::V6(Ipv4Addr::new(192, 0, 2, 1).to_ipv6_mapped());
    assert_eq!(throttle.check(mapped, START_MS), Gate::Wait { retry_after_ms: 15 * MINUTE_MS });
    assert_eq!(throttle.check(v4(192, 0, 2, 2), START_MS), Gate::Open);
}

#[test]
fn memory_is_bounded_by_evicting_the_oldest_address() {
    let policy = AddressPolicy { entries_max: 1_000, ..AddressPolicy::DEFAULT };
    let throttle = AddressThrottle::new(policy);
    let first = v4(10, 0, 0, 1);
    for _ in 0..20 {
        throttle.record_failure(first, START_MS);
    }
    assert!(matches!(throttle.check(first, START_MS), Gate::Wait { .. }));
    // 5,000 other addresses, one failure each: only 1,000 are remembered.
    for index in 0..5_000u32 {
        let [_, b, c, d] = (index + 2).to_be_bytes();
        throttle.record_failure(v4(10, b, c, d), START_MS + i64::from(index));
        assert!(throttle.tracked_addresses() <= 1_000);
    }
    assert_eq!(throttle.tracked_addresses(), 1_000);
    // The oldest (the first) was forgotten; the newest are remembered.
    assert_eq!(throttle.check(first, START_MS + 5_000), Gate::Open);
    let [_, b, c, d] = 5_001u32.to_be_bytes();
    for _ in 0..19 {
        throttle.record_failure(v4(10, b, c, d), START_MS + 5_000);
    }
    assert!(matches!(throttle.check(v4(10, b, c, d), START_MS + 5_000), Gate::Wait { .. }));
}

#[test]
fn a_recent_failure_keeps_an_address_from_eviction() {
    let policy = AddressPolicy { entries_max: 3, ..AddressPolicy::DEFAULT };
    let throttle = AddressThrottle::new(policy);
    let (a, b, c, d) = (v4(10, 0, 0, 1), v4(10, 0, 0, 2), v4(10, 0, 0, 3), v4(10, 0, 0, 4));
    for _ in 0..19 {
        throttle.record_failure(a, START_MS);
    }
    throttle.record_failure(b, START_MS + 1);
    throttle.record_failure(c, START_MS + 2);
    throttle.record_failure(a, START_MS + 3); // a is now the most recent, and blocked
    throttle.record_failure(d, START_MS + 4); // evicts b, the least recent
    assert_eq!(throttle.tracked_addresses(), 3);
    assert!(matches!(throttle.check(a, START_MS + 5), Gate::Wait { .. }));
    // b starts from zero: 19 more failures do not block it, the 20th does.
    for _ in 0..19 {
        throttle.record_failure(b, START_MS + 6);
    }
    assert_eq!(throttle.check(b, START_MS + 6), Gate::Open);
    throttle.record_failure(b, START_MS + 6);
    assert!(matches!(throttle.check(b, START_MS + 6), Gate::Wait { .. }));
}

#[test]
fn the_throttle_is_shared_across_threads() {
    let throttle = std::sync::Arc::new(AddressThrottle::new(AddressPolicy::DEFAULT));
    let address = v4(203, 0, 113, 9);
    let threads: Vec<_> = (0..4)
        .map(|_| {
            let throttle = std::sync::Arc::clone(&throttle);
            std::thread::spawn(move || {
                for _ in 0..5 {
                    throttle.record_failure(address, START_MS);
                }
            })
        })
        .collect();
    for thread in threads {
        thread.join().expect("thread");
    }
    assert_eq!(throttle.check(address, START_MS), Gate::Wait { retry_after_ms: 15 * MINUTE_MS });
}
