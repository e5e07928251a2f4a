use super::*;

fn ms(millis: u64) -> Duration {
    Duration::from_millis(millis)
}

fn secs(secs: u64) -> Duration {
    Duration::from_secs(secs)
}

fn policy(attempts: u32, base: Duration, max: Duration) -> RetryPolicy {
    RetryPolicy {
        attempts,
        base,
        max,
    }
}

/// The waits between every try of `policy`, at a fixed jitter.
fn waits(policy: &RetryPolicy, jitter: f64) -> Vec<Option<Duration>> {
    (1..=policy.attempts() + 1)
        .map(|failed| policy.next_delay(failed, jitter))
        .collect()
}

#[test]
fn the_wait_doubles_after_each_failure_until_the_last_try() {
    let p = policy(4, secs(1), secs(15));
    assert_eq!(
        waits(&p, 1.0),
        [Some(secs(1)), Some(secs(2)), Some(secs(4)), None, None]
    );
}

#[test]
fn the_wait_is_capped() {
    let p = policy(8, secs(1), secs(15));
    assert_eq!(
        waits(&p, 1.0),
        [
            Some(secs(1)),
            Some(secs(2)),
            Some(secs(4)),
            Some(secs(8)),
            Some(secs(15)),
            Some(secs(15)),
            Some(secs(15)),
            None,
            None,
        ]
    );
}

#[test]
fn jitter_spreads_the_wait_over_its_upper_half() {
    let p = policy(4, secs(1), secs(15));
    assert_eq!(p.next_delay(1, 0.0), Some(ms(500)));
    assert_eq!(p.next_delay(1, 0.5), Some(ms(750)));
    assert_eq!(p.next_delay(1, 1.0), Some(secs(1)));
    assert_eq!(p.next_delay(3, 0.0), Some(secs(2)));
    assert_eq!(p.next_delay(3, 0.25), Some(ms(2_500)));
    // The cap bounds the wait before jitter: a capped wait is spread too.
    let capped = policy(10, secs(1), secs(15));
    assert_eq!(capped.next_delay(9, 0.0), Some(ms(7_500)));
    assert_eq!(capped.next_delay(9, 1.0), Some(secs(15)));
}

#[test]
fn every_jitter_keeps_the_wait_between_half_and_all_of_the_backoff() {
    let p = policy(12, ms(300), secs(15));
    for failed in 1..12 {
        let full = p.next_delay(failed, 1.0).expect("a try is left");
        for step in 0..=100 {
            let wait = p
                .next_delay(failed, f64::from(step) / 100.0)
                .expect("a try is left");
            assert!(wait <= full, "failed {failed}, step {step}: {wait:?}");
            assert!(wait >= full / 2, "failed {failed}, step {step}: {wait:?}");
        }
    }
}

#[test]
fn jitter_outside_its_range_is_clamped_and_nan_counts_as_one() {
    let p = policy(4, secs(2), secs(15));
    assert_eq!(p.next_delay(1, -3.0), Some(secs(1)));
    assert_eq!(p.next_delay(1, 7.0), Some(secs(2)));
    assert_eq!(p.next_delay(1, f64::NAN), Some(secs(2)));
    assert_eq!(p.next_delay(1, f64::INFINITY), Some(secs(2)));
    assert_eq!(p.next_delay(1, f64::NEG_INFINITY), Some(secs(1)));
}

#[test]
fn one_attempt_or_none_never_retries() {
    for attempts in [0, 1] {
        let p = policy(attempts, secs(1), secs(15));
        assert_eq!(p.attempts(), 1);
        assert_eq!(waits(&p, 1.0), [None, None]);
    }
}

#[test]
fn try_zero_has_not_failed_yet_and_gets_no_wait() {
    assert_eq!(policy(4, secs(1), secs(15)).next_delay(0, 1.0), None);
}

#[test]
fn a_cap_below_the_base_wins_and_zero_waits_are_allowed() {
    let p = policy(3, secs(10), secs(4));
    assert_eq!(waits(&p, 1.0), [Some(secs(4)), Some(secs(4)), None, None]);
    let p = policy(3, Duration::ZERO, secs(4));
    assert_eq!(
        waits(&p, 0.3),
        [Some(Duration::ZERO), Some(Duration::ZERO), None, None]
    );
}

#[test]
fn huge_attempt_numbers_and_durations_saturate_instead_of_overflowing() {
    let p = policy(u32::MAX, secs(1), Duration::MAX);
    assert_eq!(p.next_delay(40, 1.0), Some(secs(1).saturating_mul(1 << 31)));
    assert_eq!(p.next_delay(u32::MAX - 1, 1.0), p.next_delay(32, 1.0));
    assert_eq!(p.next_delay(u32::MAX, 1.0), None);
    let p = policy(3, Duration::MAX, Duration::MAX);
    assert_eq!(p.next_delay(2, 1.0), Some(Duration::MAX));
    assert!(p.next_delay(2, 0.0) >= Some(Duration::MAX / 2));
}

#[test]
fn waits_read_as_a_person_would_write_them() {
    let cases = [
        (Duration::ZERO, "0ms"),
        (ms(20), "20ms"),
        (ms(999), "999ms"),
        (ms(1_000), "1s"),
        (ms(1_049), "1s"),
        (ms(1_050), "1.1s"),
        (ms(1_500), "1.5s"),
        (ms(1_960), "2s"),
        (ms(9_940), "9.9s"),
        (ms(9_960), "10s"),
        (ms(14_400), "14s"),
        (secs(15), "15s"),
    ];
    for (wait, text) in cases {
        assert_eq!(describe(wait), text, "{wait:?}");
    }
}
