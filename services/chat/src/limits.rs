//! Rate limits and connection counts, sans I/O: every call is given the
//! time, so tests run on a made-up clock and callers may use tokio's
//! (pausable) one.
//!
//! A [`Rate`] is a token bucket: `burst` tokens at most, refilled at
//! `per_second`. A request takes one token or is told how long until one
//! is there. Buckets are kept per key (a user, a source address) in a
//! [`KeyedLimiter`], which forgets full buckets (a full bucket is the same
//! as none), so memory follows the keys active within the refill time.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tern_core::sync;

/// A token bucket's shape. A `per_second` of 0 means no limit.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rate {
    pub per_second: f64,
    pub burst: f64,
}

impl Rate {
    pub const UNLIMITED: Rate = Rate {
        per_second: 0.0,
        burst: 0.0,
    };

    /// `per_second` with bursts of `burst` (at least 1).
    pub fn per_second(per_second: f64, burst: u32) -> Rate {
        Rate {
            per_second,
            burst: f64::from(burst.max(1)),
        }
    }

    /// `n` an hour, all of which may be used at once.
    pub fn per_hour(n: u32) -> Rate {
        Rate {
            per_second: f64::from(n) / 3600.0,
            burst: f64::from(n.max(1)),
        }
    }

    pub fn is_unlimited(&self) -> bool {
        self.per_second <= 0.0
    }
}

/// One token bucket.
#[derive(Debug, Clone)]
pub struct TokenBucket {
    tokens: f64,
    updated: Instant,
}

impl TokenBucket {
    /// A full bucket.
    pub fn new(rate: Rate, now: Instant) -> Self {
        TokenBucket {
            tokens: rate.burst,
            updated: now,
        }
    }

    fn refill(&mut self, rate: Rate, now: Instant) {
        let elapsed = now.saturating_duration_since(self.updated).as_secs_f64();
        self.tokens = (self.tokens + elapsed * rate.per_second).min(rate.burst);
        self.updated = now;
    }

    /// Takes a token, or says how long until one is there.
    pub fn take(&mut self, rate: Rate, now: Instant) -> Result<(), Duration> {
        if rate.is_unlimited() {
            return Ok(());
        }
        self.refill(rate, now);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            Ok(())
        } else {
            let wait = (1.0 - self.tokens) / rate.per_second;
            // Rounded up to the millisecond, so a retry at that time works.
            Err(Duration::from_millis((wait * 1000.0).ceil() as u64).max(Duration::from_millis(1)))
        }
    }

    /// Spends a token whether or not one is there (what was done is done:
    /// a frame already read). Returns how long until the bucket is out of
    /// debt, if it went into debt; whoever paces the spending waits that.
    pub fn spend(&mut self, rate: Rate, now: Instant) -> Option<Duration> {
        if rate.is_unlimited() {
            return None;
        }
        self.refill(rate, now);
        self.tokens -= 1.0;
        (self.tokens < 0.0).then(|| {
            let wait = -self.tokens / rate.per_second;
            Duration::from_millis((wait * 1000.0).ceil() as u64).max(Duration::from_millis(1))
        })
    }

    fn is_full(&mut self, rate: Rate, now: Instant) -> bool {
        self.refill(rate, now);
        self.tokens >= rate.burst
    }
}

/// Token buckets by key, sharing one [`Rate`].
#[derive(Debug)]
pub struct KeyedLimiter<K> {
    rate: Rate,
    buckets: HashMap<K, TokenBucket>,
    /// Takes since full buckets were last forgotten.
    takes: usize,
}

/// Full buckets are looked for after this many takes (amortized O(1)).
const SWEEP_EVERY: usize = 4096;

impl<K: Hash + Eq + Clone> KeyedLimiter<K> {
    pub fn new(rate: Rate) -> Self {
        KeyedLimiter {
            rate,
            buckets: HashMap::new(),
            takes: 0,
        }
    }

    pub fn rate(&self) -> Rate {
        self.rate
    }

    /// Takes a token from `key`'s bucket, or says how long until one is
    /// there. The key is copied only for a bucket not kept yet.
    pub fn take<Q>(&mut self, key: &Q, now: Instant) -> Result<(), Duration>
    where
        K: std::borrow::Borrow<Q>,
        Q: Hash + Eq + ToOwned<Owned = K> + ?Sized,
    {
        if self.rate.is_unlimited() {
            return Ok(());
        }
        self.takes += 1;
        if self.takes >= SWEEP_EVERY.max(self.buckets.len()) {
            self.takes = 0;
            let rate = self.rate;
            self.buckets.retain(|_, b| !b.is_full(rate, now));
        }
        let rate = self.rate;
        if let Some(bucket) = self.buckets.get_mut(key) {
            return bucket.take(rate, now);
        }
        let mut bucket = TokenBucket::new(rate, now);
        let taken = bucket.take(rate, now);
        self.buckets.insert(key.to_owned(), bucket);
        taken
    }

    /// Keys with a bucket that is not full.
    pub fn len(&self) -> usize {
        self.buckets.len()
    }

    pub fn is_empty(&self) -> bool {
        self.buckets.is_empty()
    }
}

/// How many of something (connections) each key holds at once, with a
/// guard that gives the place back when dropped.
#[derive(Debug)]
pub struct Counts<K: Hash + Eq> {
    held: Arc<Mutex<HashMap<K, usize>>>,
}

impl<K: Hash + Eq> Default for Counts<K> {
    fn default() -> Self {
        Counts {
            held: Arc::default(),
        }
    }
}

/// A place held in [`Counts`] until dropped.
#[derive(Debug)]
pub struct CountGuard<K: Hash + Eq + Clone> {
    held: Arc<Mutex<HashMap<K, usize>>>,
    key: K,
}

impl<K: Hash + Eq + Clone> Counts<K> {
    /// A place for `key` if it holds fewer than `max` (0: no limit).
    pub fn try_acquire(&self, key: &K, max: usize) -> Option<CountGuard<K>> {
        let mut held = sync::lock(&self.held);
        let n = held.entry(key.clone()).or_default();
        if max > 0 && *n >= max {
            return None;
        }
        *n += 1;
        Some(CountGuard {
            held: self.held.clone(),
            key: key.clone(),
        })
    }

    /// How many `key` holds.
    #[cfg(test)]
    pub fn count(&self, key: &K) -> usize {
        let held = sync::lock(&self.held);
        held.get(key).copied().unwrap_or(0)
    }
}

impl<K: Hash + Eq + Clone> Drop for CountGuard<K> {
    fn drop(&mut self) {
        let mut held = sync::lock(&self.held);
        if let Some(n) = held.get_mut(&self.key) {
            *n -= 1;
            if *n == 0 {
                held.remove(&self.key);
            }
        }
    }
}

/// Per-user budgets for requests that cost the store far more than a send:
/// changes of a user's account state (block, unblock, log out: each a
/// durable write, a log out also a message to every gateway) and reads of
/// whole lists (the conversation list reads every conversation and group
/// of the user). One per gateway or API node, like the send rate.
#[derive(Debug)]
pub struct CostlyRequests {
    changes: Mutex<KeyedLimiter<String>>,
    lists: Mutex<KeyedLimiter<String>>,
}

/// Rates of [`CostlyRequests`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CostlyRates {
    pub changes: Rate,
    pub lists: Rate,
}

impl Default for CostlyRates {
    fn default() -> Self {
        CostlyRates {
            changes: Rate::per_second(1.0, 20),
            lists: Rate::per_second(2.0, 20),
        }
    }
}

impl CostlyRates {
    pub const UNLIMITED: CostlyRates = CostlyRates {
        changes: Rate::UNLIMITED,
        lists: Rate::UNLIMITED,
    };
}

impl CostlyRequests {
    pub fn new(rates: CostlyRates) -> Self {
        CostlyRequests {
            changes: Mutex::new(KeyedLimiter::new(rates.changes)),
            lists: Mutex::new(KeyedLimiter::new(rates.lists)),
        }
    }

    /// Takes one of `user`'s account changes.
    pub fn change(&self, user: &str, now: Instant) -> Result<(), crate::Refusal> {
        take(
            &self.changes,
            user,
            now,
            "account changes (block, unblock, log out)",
        )
    }

    /// Takes one of `user`'s list reads.
    pub fn list(&self, user: &str, now: Instant) -> Result<(), crate::Refusal> {
        take(&self.lists, user, now, "conversation list reads")
    }
}

fn take(
    limiter: &Mutex<KeyedLimiter<String>>,
    user: &str,
    now: Instant,
    what: &str,
) -> Result<(), crate::Refusal> {
    let mut limiter = sync::lock(limiter);
    let per_second = limiter.rate().per_second;
    limiter.take(user, now).map_err(|after| {
        crate::Refusal::rate_limited(
            format!("{user} makes more {what} than the {per_second} a second allowed"),
            after,
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn a_bucket_allows_its_burst_then_its_rate() {
        let t0 = Instant::now();
        let rate = Rate::per_second(10.0, 3);
        let mut b = TokenBucket::new(rate, t0);
        for _ in 0..3 {
            b.take(rate, t0).unwrap();
        }
        assert_eq!(b.take(rate, t0), Err(ms(100)), "one token every 100 ms");
        assert_eq!(b.take(rate, t0 + ms(40)), Err(ms(60)));
        b.take(rate, t0 + ms(100)).unwrap();
        assert!(b.take(rate, t0 + ms(100)).is_err());
        // A long pause refills to the burst, no more.
        for _ in 0..3 {
            b.take(rate, t0 + Duration::from_secs(60)).unwrap();
        }
        assert!(b.take(rate, t0 + Duration::from_secs(60)).is_err());
    }

    #[test]
    fn spending_into_debt_paces_at_the_rate() {
        let t0 = Instant::now();
        let rate = Rate::per_second(10.0, 2);
        let mut b = TokenBucket::new(rate, t0);
        assert_eq!(b.spend(rate, t0), None);
        assert_eq!(b.spend(rate, t0), None);
        assert_eq!(b.spend(rate, t0), Some(ms(100)), "one token owed");
        // Repaid at 100 ms; the next spend owes again: 10 a second.
        assert_eq!(b.spend(rate, t0 + ms(100)), Some(ms(100)));
        assert_eq!(b.spend(rate, t0 + ms(200)), Some(ms(100)));
    }

    #[test]
    fn unlimited_never_refuses() {
        let t0 = Instant::now();
        let mut l = KeyedLimiter::new(Rate::UNLIMITED);
        for _ in 0..10_000 {
            l.take(&"k", t0).unwrap();
        }
        assert!(l.is_empty(), "no bucket is kept");
    }

    #[test]
    fn keys_have_their_own_buckets_and_full_ones_are_forgotten() {
        let t0 = Instant::now();
        let mut l = KeyedLimiter::new(Rate::per_second(1.0, 1));
        l.take(&"alice", t0).unwrap();
        assert!(l.take(&"alice", t0).is_err());
        l.take(&"bob", t0).unwrap();
        // Many other keys later: alice's and bob's buckets refilled and go.
        let later = t0 + Duration::from_secs(10);
        for i in 0..SWEEP_EVERY {
            l.take(&"carol", later + ms(i as u64 * 1000)).unwrap();
        }
        assert_eq!(l.len(), 1, "only carol's bucket, not full, is kept");
    }

    #[test]
    fn an_hourly_rate_spends_its_burst_then_waits() {
        let t0 = Instant::now();
        let mut l = KeyedLimiter::new(Rate::per_hour(2));
        l.take(&1, t0).unwrap();
        l.take(&1, t0).unwrap();
        let wait = l.take(&1, t0).unwrap_err();
        assert_eq!(wait, Duration::from_secs(1800));
    }

    #[test]
    fn counts_give_places_back_on_drop() {
        let counts = Counts::default();
        let a = counts.try_acquire(&"ip", 2).unwrap();
        let _b = counts.try_acquire(&"ip", 2).unwrap();
        assert!(counts.try_acquire(&"ip", 2).is_none());
        drop(a);
        assert_eq!(counts.count(&"ip"), 1);
        assert!(counts.try_acquire(&"ip", 2).is_some());
        assert!(counts.try_acquire(&"other", 0).is_some(), "0: no limit");
    }
}
