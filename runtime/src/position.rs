//! Where partitions end and where a consumer resumes, exactly, on any Kafka-protocol broker.
//!
//! Two behaviours of Tansu 0.6 (the broker our tests and demo run) break the usual recipes, and
//! both lose records silently rather than fail:
//! - **ListOffsets(latest)** answers with the base offset of the most recently written record
//!   batch plus one (ties within a millisecond pick an earlier batch), so `fetch_watermarks` can
//!   be thousands of records short of the end. The high watermark in a *fetch* response is
//!   right, so [`partition_ends`] reads the end from there.
//! - **A fetch at an offset inside a record batch** returns the batches that *start* after it,
//!   skipping the rest of that batch. A consumer that stored "the next offset" mid-batch and
//!   resumes there loses those records. [`ResumeGuard`] notices the first record arriving past
//!   the stored offset and has the consumer seek back until it arrives at or before it.
//!
//! Against Apache Kafka both are no-ops: the ends agree with ListOffsets, and a fetch always
//! starts at or before the requested offset (a transaction marker at the stored offset costs one
//! short rewind).

use crate::kafka::KafkaConfig;
use crate::{Error, Result};
use rdkafka::client::ClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};
use rdkafka::statistics::Statistics;
use rdkafka::{Offset, TopicPartitionList};
use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// A topic-partition.
pub type Tp = (String, i32);

/// Collects the high watermark of each partition from fetch responses (librdkafka's statistics
/// report `hi_offset` only once a fetch response set it).
#[derive(Debug, Default)]
struct EndsContext {
    seen: Mutex<BTreeMap<Tp, i64>>,
}

impl ClientContext for EndsContext {
    fn stats(&self, statistics: Statistics) {
        let mut seen = self
            .seen
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        for (topic, t) in &statistics.topics {
            for (partition, p) in &t.partitions {
                if *partition >= 0 && p.hi_offset >= 0 {
                    seen.insert((topic.clone(), *partition), p.hi_offset);
                }
            }
        }
    }
}

impl ConsumerContext for EndsContext {}

/// The end of every partition of `topics` now: the offset the next record written to it will
/// get, taken from the high watermark of a fetch response. No group is joined and nothing is
/// committed.
pub fn partition_ends(
    kafka: &KafkaConfig,
    topics: &[&str],
    timeout: Duration,
) -> Result<BTreeMap<Tp, i64>> {
    let mut config = kafka.consumer_config("aispm-partition-ends");
    config
        .set("statistics.interval.ms", "20")
        .set("fetch.wait.max.ms", "10");
    let consumer: BaseConsumer<EndsContext> = config.create_with_context(EndsContext::default())?;
    let mut tpl = TopicPartitionList::new();
    for topic in topics {
        let md = consumer.fetch_metadata(Some(topic), timeout)?;
        for t in md.topics().iter().filter(|t| t.name() == *topic) {
            for p in t.partitions() {
                tpl.add_partition_offset(topic, p.id(), Offset::End)?;
            }
        }
    }
    let wanted: Vec<Tp> = tpl
        .elements()
        .iter()
        .map(|e| (e.topic().to_owned(), e.partition()))
        .collect();
    consumer.assign(&tpl)?;
    let deadline = Instant::now() + timeout;
    loop {
        // Serves the statistics callback; records at the end are of no interest.
        let _ = consumer.poll(Duration::from_millis(20));
        let seen = consumer
            .context()
            .seen
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone();
        let missing: Vec<&Tp> = wanted.iter().filter(|tp| !seen.contains_key(*tp)).collect();
        if missing.is_empty() {
            return Ok(wanted.iter().map(|tp| (tp.clone(), seen[tp])).collect());
        }
        if Instant::now() > deadline {
            return Err(Error::Config(format!(
                "no fetch response within {timeout:?} for {} partition(s), e.g. {}/{}",
                missing.len(),
                missing[0].0,
                missing[0].1
            )));
        }
    }
}

/// What to do with a record of a partition that was just resumed at a stored offset.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resume {
    /// Process it (records before the stored offset are the caller's to skip as redelivered).
    Continue,
    /// The broker skipped records: drop this record and the rest of this partition's records in
    /// hand, and seek the partition to this offset.
    SeekBack(i64),
    /// Records between the stored offset and this one are gone from the log (retention or
    /// compaction): a seek to offset 0 still started after the stored offset. Process it.
    Gap { expected: i64 },
}

#[derive(Debug, Clone, Copy)]
struct Pending {
    expected: i64,
    /// How far back the last seek went (0: not yet).
    back: i64,
    /// When the partition was last resumed or sought.
    since: Instant,
}

impl Pending {
    /// The next, wider seek back; `None` once a seek already went to offset 0.
    fn widen(&mut self) -> Option<i64> {
        if self.back > 0 && self.expected - self.back <= 0 {
            return None;
        }
        self.back = if self.back == 0 {
            ResumeGuard::FIRST_STEP
        } else {
            self.back.saturating_mul(8)
        };
        self.since = Instant::now();
        Some((self.expected - self.back).max(0))
    }
}

/// Checks the first records after a partition was resumed at a stored offset (see the module
/// docs). Arm it on every assignment or seek to a stored offset; `check` every record, and call
/// `stalled` while idle: a stored offset inside the *last* batch gets no records at all.
#[derive(Debug, Default)]
pub struct ResumeGuard {
    pending: HashMap<Tp, Pending>,
}

impl ResumeGuard {
    /// The first seek goes this many records back; each further one eight times as far
    /// (librdkafka's producer batches hold up to 10,000 records: two seeks cover them).
    const FIRST_STEP: i64 = 256;

    /// `topic`/`partition` was assigned (or sought) at `expected`.
    pub fn resumed(&mut self, topic: &str, partition: i32, expected: i64) {
        self.pending.insert(
            (topic.to_owned(), partition),
            Pending {
                expected,
                back: 0,
                since: Instant::now(),
            },
        );
    }

    /// The partition was revoked.
    pub fn forget(&mut self, topic: &str, partition: i32) {
        self.pending.remove(&(topic.to_owned(), partition));
    }

    /// Whether any partition still waits for its first record.
    pub fn is_armed(&self) -> bool {
        !self.pending.is_empty()
    }

    /// Checks a record delivered at `offset`.
    pub fn check(&mut self, topic: &str, partition: i32, offset: i64) -> Resume {
        if self.pending.is_empty() {
            return Resume::Continue;
        }
        let tp = (topic.to_owned(), partition);
        let Some(p) = self.pending.get_mut(&tp) else {
            return Resume::Continue;
        };
        if offset <= p.expected {
            self.pending.remove(&tp);
            return Resume::Continue;
        }
        match p.widen() {
            Some(to) => Resume::SeekBack(to),
            None => {
                let expected = p.expected;
                self.pending.remove(&tp);
                Resume::Gap { expected }
            }
        }
    }

    /// The partitions that got no record for `idle` since they were resumed or sought, with the
    /// offset to seek each back to. A partition whose seek to offset 0 brought nothing is
    /// empty up to its stored offset and is disarmed.
    pub fn stalled(&mut self, idle: Duration) -> Vec<(Tp, i64)> {
        let mut out = Vec::new();
        self.pending.retain(|tp, p| {
            if p.since.elapsed() < idle {
                return true;
            }
            match p.widen() {
                Some(to) => {
                    out.push((tp.clone(), to));
                    true
                }
                None => false,
            }
        });
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A log of record batches as Tansu serves it: a fetch at `offset` returns the batches whose
    /// base offset is at or after it.
    fn tansu_fetch(bases: &[i64], end: i64, offset: i64) -> Option<i64> {
        bases
            .iter()
            .copied()
            .find(|b| *b >= offset)
            .filter(|b| *b < end)
    }

    /// Drives the guard against a log the way a consumer would and returns the first offset it
    /// processes and how many seeks it took.
    fn resume(bases: &[i64], end: i64, stored: i64) -> (Option<i64>, usize) {
        let mut g = ResumeGuard::default();
        g.resumed("t", 0, stored);
        let mut at = stored;
        let mut seeks = 0;
        loop {
            let Some(first) = tansu_fetch(bases, end, at) else {
                // Nothing delivered: the consumer idles, then the guard widens the seek.
                match g.stalled(Duration::ZERO).first() {
                    Some((_, to)) => {
                        seeks += 1;
                        at = *to;
                        continue;
                    }
                    None => return (None, seeks),
                }
            };
            match g.check("t", 0, first) {
                Resume::Continue | Resume::Gap { .. } => return (Some(first), seeks),
                Resume::SeekBack(to) => {
                    seeks += 1;
                    at = to;
                }
            }
        }
    }

    #[test]
    fn a_resume_inside_a_batch_seeks_back_to_a_batch_that_holds_the_stored_offset() {
        // Batches of 1000 records; resuming at 2500 must not start at 3000.
        let bases: Vec<i64> = (0..10).map(|i| i * 1000).collect();
        let (first, seeks) = resume(&bases, 10_000, 2500);
        let first = first.unwrap();
        assert!(first <= 2500, "started at {first}");
        assert!(seeks <= 4, "{seeks} seeks");
        // Inside the last batch a fetch returns nothing at all; a seek back finds it.
        let (first, _) = resume(&bases, 10_000, 9_999);
        assert!(first.unwrap() <= 9_999);
    }

    #[test]
    fn a_resume_at_a_batch_boundary_needs_no_seek() {
        let bases: Vec<i64> = (0..10).map(|i| i * 1000).collect();
        assert_eq!(resume(&bases, 10_000, 3000), (Some(3000), 0));
    }

    #[test]
    fn records_deleted_before_the_stored_offset_are_a_gap_not_a_loop() {
        // The log starts at 5000 (retention); the stored offset 100 is gone.
        let bases: Vec<i64> = (5..10).map(|i| i * 1000).collect();
        let mut g = ResumeGuard::default();
        g.resumed("t", 0, 100);
        let mut outcome = Resume::SeekBack(100);
        for _ in 0..10 {
            outcome = g.check("t", 0, tansu_fetch(&bases, 10_000, 0).unwrap());
            if !matches!(outcome, Resume::SeekBack(_)) {
                break;
            }
        }
        assert_eq!(outcome, Resume::Gap { expected: 100 });
        assert!(!g.is_armed());
    }

    #[test]
    fn other_partitions_and_later_records_pass_untouched() {
        let mut g = ResumeGuard::default();
        g.resumed("t", 0, 10);
        assert_eq!(g.check("t", 1, 500), Resume::Continue);
        assert_eq!(g.check("u", 0, 500), Resume::Continue);
        assert_eq!(g.check("t", 0, 7), Resume::Continue);
        assert!(!g.is_armed());
        assert_eq!(g.check("t", 0, 500), Resume::Continue);
        g.resumed("t", 0, 10);
        g.forget("t", 0);
        assert_eq!(g.check("t", 0, 500), Resume::Continue);
    }
}
