//! Crash points: the kill -9 tests stop the projector at each step of its commit protocol, not
//! only at random instants (`tests/tests/projector_crash.rs`).
//!
//! `AISPM_CRASH_AT=<step>:<n>` makes a debug build abort the n-th time it reaches `<step>`
//! (`:<n>` left out: the first time), as a kill -9 there would: no destructor runs and nothing
//! buffered is flushed, neither RocksDB's memtables nor librdkafka's queue. Release builds have
//! no crash points; the variable is not read.
//!
//! The steps of one batch, in order (`consumer.rs`), and of a start (`lib.rs`):
//! - [`APPLIED`]: the batch applied in memory; nothing of it sent or written.
//! - [`DEAD_LETTERED`]: its dead letters acknowledged by the broker; its write not made.
//! - [`COMMITTED`]: its write (state, rows, outbox, offsets) durable; nothing published.
//! - [`PUBLISHING`]: a view change acknowledged, others of the batch maybe not (the n-th
//!   acknowledgement of the process, so a large enough n lands in the middle of a batch).
//! - [`PUBLISHED`]: every change acknowledged; the outbox not yet cleared.
//! - [`OUTBOX_CLEARED`]: the outbox cleared; the offsets not yet committed to Kafka.
//! - [`DRAINED`]: at start, what a crash left in the outbox published again; not yet cleared.

/// The batch applied in memory; nothing of it sent or written.
pub(crate) const APPLIED: &str = "applied";
/// Its dead letters acknowledged; its write not made.
pub(crate) const DEAD_LETTERED: &str = "dead_lettered";
/// Its write durable; nothing published.
pub(crate) const COMMITTED: &str = "committed";
/// One view change acknowledged; the rest of the batch's maybe not.
pub(crate) const PUBLISHING: &str = "publishing";
/// Every change acknowledged; the outbox not cleared.
pub(crate) const PUBLISHED: &str = "published";
/// The outbox cleared; the offsets not committed to Kafka.
pub(crate) const OUTBOX_CLEARED: &str = "outbox_cleared";
/// At start, the outbox a crash left published again; not cleared.
pub(crate) const DRAINED: &str = "drained";

/// Aborts the process if `AISPM_CRASH_AT` names `step` and this is the n-th time it is reached.
#[cfg(debug_assertions)]
pub(crate) fn reached(step: &'static str) {
    use std::sync::LazyLock;
    use std::sync::atomic::{AtomicU64, Ordering};

    /// The step and the count the variable names, read once.
    static AT: LazyLock<Option<(String, u64)>> = LazyLock::new(|| {
        let v = std::env::var("AISPM_CRASH_AT").ok()?;
        let (step, n) = v.split_once(':').unwrap_or((v.as_str(), "1"));
        Some((step.to_owned(), n.parse().unwrap_or(1)))
    });
    static COUNT: AtomicU64 = AtomicU64::new(0);

    let Some((at, n)) = AT.as_ref() else {
        return;
    };
    if at == step && COUNT.fetch_add(1, Ordering::Relaxed) + 1 == *n {
        eprintln!("crash point {step}:{n} reached; aborting");
        std::process::abort();
    }
}

/// Release builds have no crash points.
#[cfg(not(debug_assertions))]
#[inline(always)]
pub(crate) fn reached(_step: &'static str) {}
