//! How often one source address may call `Register`: a token bucket per address, so that no
//! caller that has not proven anything yet can keep the hub busy. The decisions are pure (the
//! clock comes in as a value); the buckets live behind one mutex.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Registrations per minute from one source address unless configured otherwise: a fleet
/// behind one NAT address registers 60 clusters at once, then one a second.
pub const DEFAULT_REGISTER_PER_MINUTE: u32 = 60;

/// Source addresses tracked at most. Beyond that, the buckets that are full again (their
/// address has been quiet) are dropped; should every one still be in use, all are dropped:
/// the memory stays bounded at the price of forgetting who was throttled.
const MAX_SOURCES: usize = 65_536;

/// A token bucket: `tokens` left at `updated`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Bucket {
    tokens: f64,
    updated: Instant,
}

impl Bucket {
    /// A full bucket at `now`.
    pub fn full(capacity: u32, now: Instant) -> Self {
        Self {
            tokens: f64::from(capacity),
            updated: now,
        }
    }

    /// Takes one token at `now`, refilling `capacity` tokens a minute up to `capacity`; when
    /// there is none, how long until there is one.
    pub fn take(&mut self, capacity: u32, now: Instant) -> Result<(), Duration> {
        let capacity = f64::from(capacity.max(1));
        let per_second = capacity / 60.0;
        let elapsed = now.saturating_duration_since(self.updated).as_secs_f64();
        self.tokens = (self.tokens + elapsed * per_second).min(capacity);
        self.updated = self.updated.max(now);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64((1.0 - self.tokens) / per_second))
        }
    }

    /// Whether the bucket has refilled by `now`: it is then no different from no bucket.
    fn is_full(&self, capacity: u32, now: Instant) -> bool {
        let per_second = f64::from(capacity.max(1)) / 60.0;
        let elapsed = now.saturating_duration_since(self.updated).as_secs_f64();
        self.tokens + elapsed * per_second >= f64::from(capacity)
    }
}

/// The address a bucket is kept for: IPv4 addresses one by one, IPv6 by /64 (one host usually
/// holds a whole /64, so counting its addresses one by one would limit nothing).
pub fn source_key(ip: IpAddr) -> IpAddr {
    match ip.to_canonical() {
        IpAddr::V6(v6) => {
            let bits = u128::from(v6) & !((1u128 << 64) - 1);
            IpAddr::V6(bits.into())
        }
        v4 => v4,
    }
}

/// Token buckets by source address.
#[derive(Debug)]
pub struct RateLimiter {
    /// Calls a minute per source address, and the burst allowed; 0: no limit.
    per_minute: u32,
    buckets: Mutex<HashMap<Option<IpAddr>, Bucket>>,
}

impl RateLimiter {
    pub fn per_minute(per_minute: u32) -> Self {
        Self {
            per_minute,
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Counts a call from `source` (`None` when the transport does not say: those share one
    /// bucket) at `now`; when over the budget, how long until the next call would be allowed.
    pub fn check(&self, source: Option<IpAddr>, now: Instant) -> Result<(), Duration> {
        if self.per_minute == 0 {
            return Ok(());
        }
        let key = source.map(source_key);
        let mut buckets = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        if !buckets.contains_key(&key) && buckets.len() >= MAX_SOURCES {
            buckets.retain(|_, b| !b.is_full(self.per_minute, now));
            if buckets.len() >= MAX_SOURCES {
                buckets.clear();
            }
        }
        buckets
            .entry(key)
            .or_insert_with(|| Bucket::full(self.per_minute, now))
            .take(self.per_minute, now)
    }

    /// Source addresses currently tracked.
    pub fn tracked(&self) -> usize {
        self.buckets.lock().unwrap_or_else(|p| p.into_inner()).len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bucket_allows_its_burst_then_one_call_per_refill() {
        let t0 = Instant::now();
        let mut b = Bucket::full(3, t0);
        for _ in 0..3 {
            assert_eq!(b.take(3, t0), Ok(()));
        }
        // Three a minute: the next token comes 20 s later.
        let wait = b.take(3, t0).unwrap_err();
        assert!(
            (19.9..=20.1).contains(&wait.as_secs_f64()),
            "waits {wait:?}"
        );
        assert!(b.take(3, t0 + Duration::from_secs(19)).is_err());
        assert_eq!(b.take(3, t0 + Duration::from_secs(20)), Ok(()));
        // A long pause refills to the burst, not beyond.
        let later = t0 + Duration::from_secs(3600);
        for _ in 0..3 {
            assert_eq!(b.take(3, later), Ok(()));
        }
        assert!(b.take(3, later).is_err());
    }

    #[test]
    fn a_clock_that_goes_backwards_refills_nothing() {
        let t0 = Instant::now() + Duration::from_secs(60);
        let mut b = Bucket::full(1, t0);
        assert_eq!(b.take(1, t0), Ok(()));
        assert!(b.take(1, t0 - Duration::from_secs(30)).is_err());
        assert!(b.take(1, t0 + Duration::from_secs(59)).is_err());
        assert_eq!(b.take(1, t0 + Duration::from_secs(60)), Ok(()));
    }

    #[test]
    fn sources_are_limited_apart_and_ipv6_by_prefix() {
        let limiter = RateLimiter::per_minute(2);
        let now = Instant::now();
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let b: IpAddr = "192.0.2.2".parse().unwrap();
        assert!(limiter.check(Some(a), now).is_ok());
        assert!(limiter.check(Some(a), now).is_ok());
        assert!(limiter.check(Some(a), now).is_err());
        assert!(limiter.check(Some(b), now).is_ok(), "another address");
        // An IPv4-mapped address is the IPv4 address.
        let mapped: IpAddr = "::ffff:192.0.2.2".parse().unwrap();
        assert!(limiter.check(Some(mapped), now).is_ok());
        assert!(limiter.check(Some(mapped), now).is_err());
        // Every address of one /64 shares a bucket.
        let v6: Vec<IpAddr> = ["2001:db8::1", "2001:db8::ffff:2", "2001:db8::3"]
            .iter()
            .map(|s| s.parse().unwrap())
            .collect();
        assert!(limiter.check(Some(v6[0]), now).is_ok());
        assert!(limiter.check(Some(v6[1]), now).is_ok());
        assert!(limiter.check(Some(v6[2]), now).is_err());
        let other_64: IpAddr = "2001:db8:0:1::1".parse().unwrap();
        assert!(limiter.check(Some(other_64), now).is_ok());
    }

    #[test]
    fn zero_means_no_limit() {
        let limiter = RateLimiter::per_minute(0);
        let now = Instant::now();
        for _ in 0..1000 {
            assert!(limiter.check(None, now).is_ok());
        }
        assert_eq!(limiter.tracked(), 0);
    }

    #[test]
    fn the_buckets_kept_are_bounded() {
        let limiter = RateLimiter::per_minute(1);
        let now = Instant::now();
        for i in 0..(MAX_SOURCES as u32 + 10) {
            let ip = IpAddr::from(std::net::Ipv4Addr::from(0x0a00_0000 + i));
            assert!(limiter.check(Some(ip), now).is_ok());
        }
        assert!(limiter.tracked() <= MAX_SOURCES, "{}", limiter.tracked());
        // Quiet sources are dropped first: a minute later every bucket is full again.
        let later = now + Duration::from_secs(61);
        let noisy = IpAddr::from(std::net::Ipv4Addr::new(192, 0, 2, 9));
        assert!(limiter.check(Some(noisy), later).is_ok());
        assert!(limiter.check(Some(noisy), later).is_err());
        assert!(limiter.tracked() < MAX_SOURCES);
    }
}
