//! The wall clock a service reads and waits on, passed in rather than read from the system, so
//! that a test can hold time still or move it and watch the service react, with no sleeps and
//! no race against real time windows. The binaries use [`SystemClock`]; tests use
//! [`ManualClock`].

use aispm_schemas::Timestamp;
use std::fmt::Debug;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;
use tokio::sync::Notify;

/// A clock: what time it is, and a wait until a given time.
pub trait Clock: Send + Sync + Debug {
    fn now(&self) -> Timestamp;

    /// Completes once `now()` has reached `at`.
    fn sleep_until(&self, at: Timestamp) -> Pin<Box<dyn Future<Output = ()> + Send + '_>>;
}

/// A clock shared by a service's parts.
pub type SharedClock = Arc<dyn Clock>;

/// The system's wall clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl SystemClock {
    pub fn shared() -> SharedClock {
        Arc::new(SystemClock)
    }
}

impl Clock for SystemClock {
    fn now(&self) -> Timestamp {
        Timestamp::now()
    }

    fn sleep_until(&self, at: Timestamp) -> Pin<Box<dyn Future<Output = ()> + Send + '_>> {
        Box::pin(async move {
            // Re-read after each sleep: the wall clock may be stepped while we wait.
            loop {
                let left = at.millis().saturating_sub(Timestamp::now().millis());
                if left <= 0 {
                    return;
                }
                let left = u64::try_from(left).unwrap_or(u64::MAX);
                tokio::time::sleep(Duration::from_millis(left)).await;
            }
        })
    }
}

/// A clock that moves only when told ([`ManualClock::set`], [`ManualClock::advance`]).
#[derive(Debug, Default)]
pub struct ManualClock {
    now: AtomicI64,
    moved: Notify,
}

impl ManualClock {
    pub fn new(at: Timestamp) -> Arc<Self> {
        Arc::new(ManualClock {
            now: AtomicI64::new(at.millis()),
            moved: Notify::new(),
        })
    }

    /// Sets the time (it may go back, as a stepped wall clock can) and wakes every waiter.
    pub fn set(&self, at: Timestamp) {
        self.now.store(at.millis(), Ordering::SeqCst);
        self.moved.notify_waiters();
    }

    /// Moves the time forward by `d`.
    pub fn advance(&self, d: Duration) {
        self.set(self.now().plus(d));
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Timestamp {
        Timestamp(self.now.load(Ordering::SeqCst))
    }

    fn sleep_until(&self, at: Timestamp) -> Pin<Box<dyn Future<Output = ()> + Send + '_>> {
        Box::pin(async move {
            loop {
                let moved = self.moved.notified();
                tokio::pin!(moved);
                // Registered before the time is read: a move in between still wakes us.
                moved.as_mut().enable();
                if self.now() >= at {
                    return;
                }
                moved.await;
            }
        })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_manual_clock_wakes_a_sleeper_only_once_it_reaches_the_time() {
        let clock = ManualClock::new(Timestamp(1_000));
        let c = Arc::clone(&clock);
        let woke = tokio::spawn(async move {
            c.sleep_until(Timestamp(5_000)).await;
            c.now()
        });
        tokio::task::yield_now().await;
        clock.advance(Duration::from_secs(1));
        tokio::task::yield_now().await;
        assert!(!woke.is_finished(), "woke at {:?}", clock.now());
        clock.advance(Duration::from_secs(3));
        assert_eq!(woke.await.unwrap(), Timestamp(5_000));
    }

    #[tokio::test]
    async fn the_system_clock_returns_at_once_for_a_past_time() {
        let c = SystemClock;
        c.sleep_until(Timestamp(0)).await;
        assert!(c.now() > Timestamp(0));
    }
}
