//! Limits keyed by who asks (a token, a tenant, a client address), so that one caller's flood
//! is answered `429` while everyone else is served: token buckets for rates and per-key slots
//! for concurrency. Memory stays bounded whatever the number of keys: idle buckets are
//! forgotten, and a bucket that is forgotten is full, which is what an idle caller has anyway.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

/// Keys held before idle buckets are swept.
const SWEEP_AT: usize = 10_000;

/// A token bucket per key: `rate` tokens a second, at most `burst` saved up.
#[derive(Debug)]
pub struct Buckets<K> {
    rate: f64,
    burst: f64,
    buckets: Mutex<HashMap<K, Bucket>>,
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

impl Bucket {
    fn refill(&mut self, now: Instant, rate: f64, burst: f64) {
        let elapsed = now.saturating_duration_since(self.at).as_secs_f64();
        self.tokens = (self.tokens + elapsed * rate).min(burst);
        self.at = now;
    }
}

impl<K: Hash + Eq + Clone> Buckets<K> {
    /// `rate` tokens a second (must be positive), up to `burst` (at least 1).
    pub fn new(rate: f64, burst: f64) -> Self {
        Buckets {
            rate: rate.max(f64::MIN_POSITIVE),
            burst: burst.max(1.0),
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// `per` tokens every `every`, with a burst of `per`.
    pub fn per(per: u32, every: Duration) -> Self {
        let per = f64::from(per.max(1));
        Self::new(per / every.as_secs_f64().max(1e-3), per)
    }

    /// Takes `n` tokens for `key`, or tells how long until it could. A cost above the burst is
    /// taken once the bucket is full and leaves it in debt, so large requests still pass, at
    /// the rate.
    pub fn take(&self, key: &K, n: f64) -> Result<(), Duration> {
        self.take_at(key, n, Instant::now())
    }

    fn take_at(&self, key: &K, n: f64, now: Instant) -> Result<(), Duration> {
        let mut buckets = lock(&self.buckets);
        if buckets.len() >= SWEEP_AT && !buckets.contains_key(key) {
            self.sweep(&mut buckets, now);
        }
        let bucket = buckets.entry(key.clone()).or_insert(Bucket {
            tokens: self.burst,
            at: now,
        });
        bucket.refill(now, self.rate, self.burst);
        let needed = n.min(self.burst);
        if bucket.tokens >= needed {
            bucket.tokens -= n;
            Ok(())
        } else {
            Err(Duration::from_secs_f64(
                (needed - bucket.tokens) / self.rate,
            ))
        }
    }

    /// Whether `key` has a token left, without taking one: how long until it has, if not.
    pub fn check(&self, key: &K) -> Result<(), Duration> {
        let now = Instant::now();
        let mut buckets = lock(&self.buckets);
        let Some(bucket) = buckets.get_mut(key) else {
            return Ok(());
        };
        bucket.refill(now, self.rate, self.burst);
        if bucket.tokens >= 1.0 {
            Ok(())
        } else {
            Err(Duration::from_secs_f64((1.0 - bucket.tokens) / self.rate))
        }
    }

    /// Keys currently remembered.
    pub fn len(&self) -> usize {
        lock(&self.buckets).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Forgets full buckets; if every bucket is in use (a flood from many keys), forgets the
    /// fullest half, so memory stays bounded.
    fn sweep(&self, buckets: &mut HashMap<K, Bucket>, now: Instant) {
        let (rate, burst) = (self.rate, self.burst);
        buckets.retain(|_, b| {
            b.refill(now, rate, burst);
            b.tokens < burst
        });
        if buckets.len() >= SWEEP_AT {
            let mut levels: Vec<f64> = buckets.values().map(|b| b.tokens).collect();
            levels.sort_by(f64::total_cmp);
            let median = levels[levels.len() / 2];
            buckets.retain(|_, b| b.tokens < median);
        }
    }
}

/// At most `max` at once per key (requests in progress, reports being made).
#[derive(Debug, Clone)]
pub struct Slots<K: Hash + Eq> {
    max: usize,
    held: Arc<Mutex<HashMap<K, usize>>>,
}

/// One slot, given back when dropped.
#[derive(Debug)]
pub struct Slot<K: Hash + Eq> {
    key: Option<K>,
    held: Arc<Mutex<HashMap<K, usize>>>,
}

impl<K: Hash + Eq + Clone> Slots<K> {
    pub fn new(max: usize) -> Self {
        Slots {
            max: max.max(1),
            held: Arc::new(Mutex::new(HashMap::new())),
        }
    }

    /// A slot for `key`, unless it holds `max` already.
    pub fn try_acquire(&self, key: &K) -> Option<Slot<K>> {
        let mut held = lock(&self.held);
        let n = held.entry(key.clone()).or_insert(0);
        if *n >= self.max {
            return None;
        }
        *n += 1;
        Some(Slot {
            key: Some(key.clone()),
            held: Arc::clone(&self.held),
        })
    }

    /// Slots `key` holds now.
    pub fn held(&self, key: &K) -> usize {
        lock(&self.held).get(key).copied().unwrap_or(0)
    }

    pub fn max(&self) -> usize {
        self.max
    }
}

impl<K: Hash + Eq> Drop for Slot<K> {
    fn drop(&mut self) {
        let Some(key) = self.key.take() else {
            return;
        };
        let mut held = lock(&self.held);
        if let Some(n) = held.get_mut(&key) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                held.remove(&key);
            }
        }
    }
}

/// Whole seconds for a `Retry-After` header (at least 1).
pub fn retry_after_secs(wait: Duration) -> u64 {
    wait.as_secs_f64().ceil().max(1.0) as u64
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding a counter map leaves it usable: every update is one assignment.
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn a_bucket_refills_at_its_rate_and_caps_at_its_burst() {
        let b: Buckets<&str> = Buckets::new(10.0, 5.0);
        let t0 = Instant::now();
        for _ in 0..5 {
            assert!(b.take_at(&"a", 1.0, t0).is_ok());
        }
        let wait = b.take_at(&"a", 1.0, t0).unwrap_err();
        assert!((wait.as_secs_f64() - 0.1).abs() < 1e-6, "{wait:?}");
        // Another key is untouched.
        assert!(b.take_at(&"b", 1.0, t0).is_ok());
        // 0.3 s later: three tokens back.
        let t1 = t0 + Duration::from_millis(300);
        for _ in 0..3 {
            assert!(b.take_at(&"a", 1.0, t1).is_ok());
        }
        assert!(b.take_at(&"a", 1.0, t1).is_err());
        // An hour later: no more than the burst.
        let t2 = t1 + Duration::from_secs(3600);
        for _ in 0..5 {
            assert!(b.take_at(&"a", 1.0, t2).is_ok());
        }
        assert!(b.take_at(&"a", 1.0, t2).is_err());
    }

    #[test]
    fn a_cost_above_the_burst_passes_from_a_full_bucket_and_leaves_debt() {
        let b: Buckets<&str> = Buckets::new(100.0, 50.0);
        let t0 = Instant::now();
        assert!(b.take_at(&"a", 200.0, t0).is_ok());
        // 150 in debt: 2 s until 50 tokens are back (the burst caps what one request needs).
        let wait = b.take_at(&"a", 200.0, t0).unwrap_err();
        assert!((wait.as_secs_f64() - 2.0).abs() < 1e-6, "{wait:?}");
    }

    #[test]
    fn memory_stays_bounded_under_a_flood_of_keys() {
        let b: Buckets<u64> = Buckets::new(1.0, 1.0);
        let t0 = Instant::now();
        for k in 0..(SWEEP_AT as u64 * 3) {
            let _ = b.take_at(&k, 1.0, t0);
        }
        assert!(b.len() <= SWEEP_AT, "{}", b.len());
    }

    #[test]
    fn slots_are_per_key_and_given_back_on_drop() {
        let s: Slots<String> = Slots::new(2);
        let a = "a".to_owned();
        let x = s.try_acquire(&a).unwrap();
        let _y = s.try_acquire(&a).unwrap();
        assert!(s.try_acquire(&a).is_none());
        assert!(s.try_acquire(&"b".to_owned()).is_some());
        drop(x);
        assert_eq!(s.held(&a), 1);
        assert!(s.try_acquire(&a).is_some());
    }

    #[test]
    fn retry_after_rounds_up() {
        assert_eq!(retry_after_secs(Duration::from_millis(1)), 1);
        assert_eq!(retry_after_secs(Duration::from_millis(1500)), 2);
    }
}
