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
//! - [`COMMITTED`]: its write (state, rows, outbox, offsets) made (durable at once with `--wal`,
//!   else at the next flush); nothing published.
//! - [`PUBLISHING`]: a view change acknowledged, others of the batch maybe not (the n-th
//!   acknowledgement of the process, so a large enough n lands in the middle of a batch).
//! - [`PUBLISHED`]: every change acknowledged; the outbox not yet cleared.
//! - [`OUTBOX_CLEARED`]: the outbox cleared; the offsets not yet committed to Kafka.
//! - [`DRAINED`]: what a crash left in the outbox published again (once the partitions taken at
//!   start caught up); not yet cleared.
//! - [`FLUSHING`]: a flush of the state and its offsets started and running on RocksDB's
//!   threads (`Durability::Flushed`): a kill here lands in the middle of the flush or just
//!   after it.
//! - [`CAUGHT_UP`]: the rows a catch-up held (`catchup.rs`) published; not yet removed.

/// The batch applied in memory; nothing of it sent or written.
pub(crate) const APPLIED: &str = "applied";
/// Its dead letters acknowledged; its write not made.
pub(crate) const DEAD_LETTERED: &str = "dead_lettered";
/// Its write made (durable with `--wal`, else at the next flush); nothing published.
pub(crate) const COMMITTED: &str = "committed";
/// One view change acknowledged; the rest of the batch's maybe not.
pub(crate) const PUBLISHING: &str = "publishing";
/// Every change acknowledged; the outbox not cleared.
pub(crate) const PUBLISHED: &str = "published";
/// The outbox cleared; the offsets not committed to Kafka.
pub(crate) const OUTBOX_CLEARED: &str = "outbox_cleared";
/// The outbox a crash left published again; not cleared.
pub(crate) const DRAINED: &str = "drained";
/// A flush of the state started, running on RocksDB's threads.
pub(crate) const FLUSHING: &str = "flushing";

/// The rows a catch-up held published; not yet removed.
pub(crate) const CAUGHT_UP: &str = "caught_up";

/// Every step, in the order of the list above.
#[cfg(any(debug_assertions, test))]
const STEPS: [&str; 9] = [
    APPLIED,
    DEAD_LETTERED,
    COMMITTED,
    PUBLISHING,
    PUBLISHED,
    OUTBOX_CLEARED,
    DRAINED,
    CAUGHT_UP,
    FLUSHING,
];

/// The step and the count `value` names (`<step>` or `<step>:<n>`, n at least 1), or why it
/// names none: a mistyped variable would otherwise never fire, and the test waiting for the
/// crash would fail on its timeout instead of on the typo.
#[cfg(any(debug_assertions, test))]
fn parse(value: &str) -> Result<(&'static str, u64), String> {
    let (name, n) = value.split_once(':').unwrap_or((value, "1"));
    let step = STEPS
        .into_iter()
        .find(|s| *s == name)
        .ok_or_else(|| format!("unknown step {name:?}; the steps are {}", STEPS.join(", ")))?;
    match n.parse::<u64>() {
        Ok(n) if n >= 1 => Ok((step, n)),
        _ => Err(format!("the count {n:?} is not a whole number from 1")),
    }
}

/// The crash point `AISPM_CRASH_AT` names, if any (read once), or why it names none.
#[cfg(debug_assertions)]
fn armed() -> &'static Result<Option<(&'static str, u64)>, String> {
    use std::sync::LazyLock;
    static AT: LazyLock<Result<Option<(&'static str, u64)>, String>> =
        LazyLock::new(|| match std::env::var("AISPM_CRASH_AT") {
            Ok(v) => parse(&v)
                .map(Some)
                .map_err(|e| format!("AISPM_CRASH_AT={v:?}: {e}")),
            Err(_) => Ok(None),
        });
    &AT
}

/// Checks `AISPM_CRASH_AT` at start: the process stops with the reason when it names no crash
/// point. Release builds do not read it.
pub(crate) fn check() -> crate::error::Result<()> {
    #[cfg(debug_assertions)]
    if let Err(e) = armed() {
        return Err(crate::error::Error::Other(e.clone()));
    }
    Ok(())
}

/// Aborts the process if `AISPM_CRASH_AT` names `step` and this is the n-th time it is reached.
#[cfg(debug_assertions)]
pub(crate) fn reached(step: &'static str) {
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNT: AtomicU64 = AtomicU64::new(0);

    let Ok(Some((at, n))) = armed() else {
        return;
    };
    if *at == step && COUNT.fetch_add(1, Ordering::Relaxed) + 1 == *n {
        eprintln!("crash point {step}:{n} reached; aborting");
        std::process::abort();
    }
}

/// Release builds have no crash points.
#[cfg(not(debug_assertions))]
#[inline(always)]
pub(crate) fn reached(_step: &'static str) {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_crash_point_names_a_step_and_a_count_from_one() {
        assert_eq!(parse("committed"), Ok((COMMITTED, 1)));
        assert_eq!(parse("publishing:250"), Ok((PUBLISHING, 250)));
        assert_eq!(parse("drained:1"), Ok((DRAINED, 1)));
        let unknown = parse("comitted:2").unwrap_err();
        assert!(
            unknown.contains("unknown step \"comitted\"") && unknown.contains("outbox_cleared"),
            "{unknown}"
        );
        for bad in [
            "applied:0",
            "applied:",
            "applied:x",
            "applied:-1",
            "applied:1:2",
        ] {
            assert!(parse(bad).unwrap_err().contains("count"), "{bad}");
        }
    }
}
