//! Catching up: an input partition this instance takes (at start, from an instance that left,
//! or back after it was away) is replayed from the offset its state stands at to the end the
//! partition had when it was taken, and the view changes of its tenants are published once,
//! when that end is reached, as the rows are stored then.
//!
//! Why: whoever owned the partition before (this instance before a crash, or another instance)
//! may have published its tenants' rows as of any offset up to that end. Replayed batch by
//! batch and published as each batch commits, a row would go out as of an older event after
//! the newer version, and a subscriber would see it go back until the replay caught up (the
//! two-instance test measured it: a finding published 10 s older than the one before it). Held
//! to the end, each row's last value on the views topic only moves forward: what anyone
//! published was as of an offset at most that end.
//!
//! How (`consumer.rs` drives it):
//! 1. The rebalance hook notes the partitions taken: assigned now, not owned just before (an
//!    eager rebalance revokes everything and assigns again; what comes back was never away).
//! 2. Before a batch is applied the loop reads each taken partition's end ([`CatchUp::begin`]);
//!    one whose state stands before it is catching up.
//! 3. A record on a partition whose number is catching up, on any input topic, makes its
//!    tenant owed ([`Engine::owe`](crate::project::Engine::owe)): its changed rows are written
//!    to the `owed` column family with the batch (the state, the rows and the offsets in one
//!    write), not to the outbox. Every topic is keyed by tenant with the same partition count,
//!    so a tenant's records share one partition number across the input topics; a partition
//!    of another topic with that number that is not behind still carries that tenant's
//!    records, so the number, not the topic-partition, decides.
//! 4. Once no partition of that number is behind ([`CatchUp::advance`]), the owed rows are
//!    published, page by page, then removed. A crash before they are removed publishes them
//!    again after the next catch-up (the same rows or newer ones); a crash before they are
//!    published leaves them stored, and the restart, taking the partitions again, catches up
//!    again and publishes them then.
//!
//! Tenants on other partitions are published batch by batch as before, so a catch-up delays
//! only the tenants it replays. The rows the HTTP API serves are the stored ones throughout.

use std::collections::{BTreeMap, BTreeSet};

/// A topic and partition.
pub(crate) type Partition = (String, i32);

/// The input partitions catching up and the end each must reach.
#[derive(Debug, Default)]
pub(crate) struct CatchUp {
    ends: BTreeMap<Partition, i64>,
}

impl CatchUp {
    /// `tp` was taken with its state standing at offset `from` and the partition ending at
    /// `end`: it catches up if `from` is before `end` (true then). Taken again while catching
    /// up, it keeps the farther end.
    pub(crate) fn begin(&mut self, tp: Partition, from: i64, end: i64) -> bool {
        if from >= end {
            return false;
        }
        let e = self.ends.entry(tp).or_insert(end);
        *e = (*e).max(end);
        true
    }

    /// Whether an input partition numbered `partition` is catching up.
    pub(crate) fn catching(&self, partition: i32) -> bool {
        self.ends.keys().any(|(_, p)| *p == partition)
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }

    pub(crate) fn len(&self) -> usize {
        self.ends.len()
    }

    /// Ends the catch-up of each partition that reached its end (`at`: the offset it stands at
    /// now) and of each not `ours` any more (revoked: its new owner catches it up).
    pub(crate) fn advance(&mut self, at: impl Fn(&Partition) -> i64, ours: &BTreeSet<Partition>) {
        self.ends
            .retain(|tp, end| ours.contains(tp) && at(tp) < *end);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tp(topic: &str, p: i32) -> Partition {
        (topic.to_owned(), p)
    }

    #[test]
    fn a_partition_catches_up_until_it_reaches_the_end_it_was_taken_with() {
        let mut c = CatchUp::default();
        assert!(
            !c.begin(tp("decisions", 0), 40, 40),
            "at its end: nothing to catch up"
        );
        assert!(!c.begin(tp("decisions", 0), 0, 0), "an empty partition");
        assert!(c.begin(tp("decisions", 1), 0, 100));
        assert!(c.begin(tp("approvals", 2), 10, 20));
        assert!(c.catching(1) && c.catching(2) && !c.catching(0));
        let ours: BTreeSet<Partition> = [tp("decisions", 1), tp("approvals", 2)].into();

        c.advance(|p| if p.1 == 2 { 15 } else { 99 }, &ours);
        assert!(c.catching(1) && c.catching(2));
        c.advance(|p| if p.1 == 2 { 20 } else { 60 }, &ours);
        assert!(c.catching(1) && !c.catching(2), "approvals-2 reached 20");
        c.advance(|_| 150, &ours);
        assert!(c.is_empty());
    }

    #[test]
    fn a_revoked_partition_stops_catching_up_and_taken_again_keeps_the_farther_end() {
        let mut c = CatchUp::default();
        assert!(c.begin(tp("decisions", 3), 0, 100));
        assert!(c.begin(tp("decisions", 3), 50, 80));
        c.advance(|_| 90, &[tp("decisions", 3)].into());
        assert!(c.catching(3), "the end is 100, not 80");
        c.advance(|_| 0, &BTreeSet::new());
        assert!(c.is_empty(), "revoked: its new owner catches it up");
    }
}
