//! One supervisor for a service's tasks. A task that fails, panics, or ends while the service
//! should still be running stops the others: its name and reason are logged, shown on
//! `/readyz` (the `tasks` condition), and returned as the service's error, so the process
//! exits non-zero instead of serving on without a part of itself (an HTTP server that died,
//! a consumer loop that returned).
//!
//! ```ignore
//! let mut tasks = Supervisor::new(shutdown.child_token(), health.clone());
//! tasks.spawn("http", serve(listener, routes, tasks.token()));
//! tasks.spawn_once("topics", create_topics());
//! tasks.wait(Error::Task).await?;
//! ```

use crate::health::Health;
use std::collections::HashMap;
use std::fmt::Display;
use std::future::Future;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

/// Whether a task may end on its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Lifetime {
    /// Runs until the supervisor's token is cancelled; ending earlier is a failure.
    UntilStopped,
    /// Does its work and ends; only an error or a panic is a failure.
    Once,
}

/// A service's tasks (see the module docs).
#[derive(Debug)]
pub struct Supervisor<E> {
    set: JoinSet<(Lifetime, Result<(), E>)>,
    names: HashMap<tokio::task::Id, &'static str>,
    stop: CancellationToken,
    health: Health,
}

impl<E: Display + Send + 'static> Supervisor<E> {
    /// Tasks that stop when `stop` is cancelled (pass a child of the service's shutdown token:
    /// a failing task cancels it, which must not look like a signal to the rest of the process).
    pub fn new(stop: CancellationToken, health: Health) -> Self {
        health.set("tasks", true, "every task is running");
        Supervisor {
            set: JoinSet::new(),
            names: HashMap::new(),
            stop,
            health,
        }
    }

    /// The token every task should stop on.
    pub fn token(&self) -> CancellationToken {
        self.stop.clone()
    }

    /// Runs `task` until the token is cancelled; its ending earlier, even without an error,
    /// stops the service.
    pub fn spawn<F>(&mut self, name: &'static str, task: F)
    where
        F: Future<Output = Result<(), E>> + Send + 'static,
    {
        let id = self
            .set
            .spawn(async move { (Lifetime::UntilStopped, task.await) })
            .id();
        self.names.insert(id, name);
    }

    /// Runs `task`, which may end; only its error (or panic) stops the service.
    pub fn spawn_once<F>(&mut self, name: &'static str, task: F)
    where
        F: Future<Output = Result<(), E>> + Send + 'static,
    {
        let id = self
            .set
            .spawn(async move { (Lifetime::Once, task.await) })
            .id();
        self.names.insert(id, name);
    }

    /// Waits for every task. The first failure cancels the token and is returned: a task's own
    /// error as it is, a panic or an early end as `other(reason)`.
    pub async fn wait(mut self, other: impl Fn(String) -> E) -> Result<(), E> {
        let mut first: Option<E> = None;
        while let Some(joined) = self.set.join_next_with_id().await {
            let id = match &joined {
                Ok((id, _)) => *id,
                Err(e) => e.id(),
            };
            let name = self.names.remove(&id).unwrap_or("task");
            let failure = match joined {
                Ok((_, (_, Ok(())))) if self.stop.is_cancelled() => None,
                Ok((_, (Lifetime::Once, Ok(())))) => None,
                Ok((_, (Lifetime::UntilStopped, Ok(())))) => {
                    Some(other(format!("task {name} ended before shutdown")))
                }
                Ok((_, (_, Err(e)))) => Some(e),
                Err(e) => Some(other(format!("task {name} panicked: {e}"))),
            };
            let Some(error) = failure else {
                continue;
            };
            if first.is_none() {
                tracing::error!(task = name, error = %error, "A task failed; stopping the rest.");
                self.health
                    .set("tasks", false, format!("{name} failed: {error}"));
                first = Some(error);
            } else {
                tracing::warn!(task = name, error = %error, "Another task failed while stopping.");
            }
            self.stop.cancel();
        }
        first.map_or(Ok(()), Err)
    }
}

/// Lowers the calling thread's CPU priority (nice 10 on Linux, or more if it was already) for background work that must
/// not slow the service's own (the projector's replay checkpoints): the scheduler gives the
/// thread what the service's other threads leave. Call it on a thread of its own, not a pooled
/// one (the priority stays with the thread). False where it could not.
#[cfg(target_os = "linux")]
#[allow(unsafe_code)]
pub fn lower_thread_priority() -> bool {
    // SAFETY: `gettid` takes nothing; `getpriority` and `setpriority` take integers (which,
    // the calling thread's id, the niceness) and read or change only that thread's scheduling
    // priority. No pointer is passed or returned.
    unsafe {
        let tid = libc::gettid() as libc::id_t;
        // Never raised: a thread already nicer (the service started under `nice`) stays so.
        let now = libc::getpriority(libc::PRIO_PROCESS, tid);
        libc::setpriority(libc::PRIO_PROCESS, tid, now.max(10)) == 0
    }
}

/// [`lower_thread_priority`] where it is not implemented: nothing changes.
#[cfg(not(target_os = "linux"))]
pub fn lower_thread_priority() -> bool {
    false
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use std::time::Duration;

    /// The calling thread's niceness, from `/proc/thread-self/stat` (field 19).
    #[cfg(target_os = "linux")]
    fn nice() -> i64 {
        let stat = std::fs::read_to_string("/proc/thread-self/stat").unwrap();
        // Fields after the command name (in parentheses, which may hold spaces).
        let rest = &stat[stat.rfind(')').unwrap() + 2..];
        rest.split(' ').nth(16).unwrap().parse().unwrap()
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn a_background_thread_runs_at_a_lower_priority_and_only_it() {
        let before = nice();
        let background = std::thread::spawn(|| {
            assert!(lower_thread_priority());
            nice()
        })
        .join()
        .unwrap();
        assert_eq!(background, before.max(10));
        assert_eq!(nice(), before, "the calling thread is not changed");
    }

    async fn until(token: CancellationToken) -> Result<(), String> {
        token.cancelled().await;
        Ok(())
    }

    #[tokio::test]
    async fn a_task_that_ends_early_stops_the_others_and_is_the_error() {
        let health = Health::new();
        let mut s = Supervisor::new(CancellationToken::new(), health.clone());
        s.spawn("http", until(s.token()));
        s.spawn("consumer", async { Ok(()) });
        let e = s.wait(|r| r).await.unwrap_err();
        assert_eq!(e, "task consumer ended before shutdown");
        let (ready, conditions) = health.ready();
        assert!(!ready);
        assert!(
            conditions["tasks"].detail.contains("consumer"),
            "{conditions:?}"
        );
    }

    #[tokio::test]
    async fn an_error_is_returned_as_it_is_and_a_once_task_may_finish() {
        let mut s = Supervisor::new(CancellationToken::new(), Health::new());
        s.spawn_once("topics", async { Ok(()) });
        s.spawn("http", until(s.token()));
        s.spawn("follow", async {
            tokio::time::sleep(Duration::from_millis(20)).await;
            Err("broker gone".to_owned())
        });
        assert_eq!(s.wait(|r| r).await.unwrap_err(), "broker gone");
    }

    #[tokio::test]
    async fn a_panic_is_a_failure() {
        let mut s: Supervisor<String> = Supervisor::new(CancellationToken::new(), Health::new());
        s.spawn("http", until(s.token()));
        s.spawn_once("probe", async { panic!("boom") });
        let e = s.wait(|r| r).await.unwrap_err();
        assert!(e.contains("probe panicked"), "{e}");
    }

    #[tokio::test]
    async fn a_stop_ends_every_task_cleanly() {
        let stop = CancellationToken::new();
        let health = Health::new();
        let mut s: Supervisor<String> = Supervisor::new(stop.clone(), health.clone());
        s.spawn("http", until(s.token()));
        s.spawn("follow", until(s.token()));
        stop.cancel();
        assert_eq!(s.wait(|r| r).await, Ok(()));
        assert!(health.ready().0);
    }
}
