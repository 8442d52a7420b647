//! jemalloc as a service's allocator, and its statistics as a metric.
//!
//! The projector and the gatekeeper run jemalloc for every allocation in the process: their
//! `main.rs` sets [`Jemalloc`] as the global allocator and, unprefixed (the workspace's
//! `tikv-jemallocator` features), it is `malloc` for RocksDB's C++ and librdkafka's C too. One
//! allocator whose background threads give freed pages back on a timer (the projector's soak
//! levelled off with it: `docs/reliability.md`, "Which allocator keeps it flat"), and cheaper on
//! their many small values than glibc's, whose `malloc`, `free` and consolidation took 40 % of
//! the gatekeeper's time at 10,000 events/s (`docs/performance.md`). [`JemallocCollector`]
//! exports jemalloc's own statistics in place of glibc's heap, in the registry [`metrics`]
//! makes.
//!
//! A crate of its own, linked only by the services that choose jemalloc: linking
//! `tikv-jemalloc-ctl` pulls in jemalloc's unprefixed `malloc`, which would replace glibc's in
//! every service that depends on the crate holding it.

use aispm_runtime::metrics::Metrics;
use prometheus::IntGaugeVec;

pub use tikv_jemallocator::Jemalloc;

/// The metrics registry of `service`, whose global allocator is [`Jemalloc`]: its heap is
/// reported by [`JemallocCollector`] (`aispm_{service}_jemalloc_bytes`) in place of glibc's.
pub fn metrics(service: &'static str) -> aispm_runtime::Result<Metrics> {
    let heap = JemallocCollector::new(service).map_err(aispm_runtime::Error::from)?;
    Metrics::with_heap(service, Box::new(heap))
}

/// `aispm_<service>_jemalloc_bytes{state}`, jemalloc's own statistics read at each scrape (the
/// service's `malloc` for Rust, RocksDB and librdkafka alike):
/// - `allocated`: bytes in live allocations;
/// - `active`: bytes in the pages those allocations occupy (`allocated` plus fragmentation);
/// - `resident`: bytes of the allocator's pages that are resident (active pages, dirty free
///   pages not yet purged, metadata): with the process's RSS, what the heap keeps;
/// - `mapped`, `retained` (address space kept for reuse but not resident) and `metadata`.
///
/// A steady `allocated` with a climbing `resident` is memory freed but kept; a climbing
/// `allocated` is live values growing.
#[derive(Debug)]
pub struct JemallocCollector {
    bytes: IntGaugeVec,
}

impl JemallocCollector {
    /// The collector of `aispm_{service}_jemalloc_bytes`.
    pub fn new(service: &str) -> prometheus::Result<Self> {
        let bytes = IntGaugeVec::new(
            prometheus::Opts::new(
                format!("aispm_{service}_jemalloc_bytes"),
                "jemalloc's statistics, by state: allocated (live allocations), active (their \
                 pages), resident (resident pages of the allocator: active, dirty free pages not \
                 yet purged, metadata), mapped, retained (kept mapped but not resident) and \
                 metadata.",
            ),
            &["state"],
        )?;
        Ok(JemallocCollector { bytes })
    }
}

/// jemalloc's statistics now, by state (cached by jemalloc until its epoch is advanced, which
/// this does first). `None` if jemalloc does not answer.
pub fn stats() -> Option<[(&'static str, usize); 6]> {
    use tikv_jemalloc_ctl::{epoch, stats};
    epoch::advance().ok()?;
    Some([
        ("allocated", stats::allocated::read().ok()?),
        ("active", stats::active::read().ok()?),
        ("resident", stats::resident::read().ok()?),
        ("mapped", stats::mapped::read().ok()?),
        ("retained", stats::retained::read().ok()?),
        ("metadata", stats::metadata::read().ok()?),
    ])
}

impl prometheus::core::Collector for JemallocCollector {
    fn desc(&self) -> Vec<&prometheus::core::Desc> {
        self.bytes.desc()
    }

    fn collect(&self) -> Vec<prometheus::proto::MetricFamily> {
        let Some(stats) = stats() else {
            return Vec::new();
        };
        for (state, bytes) in stats {
            self.bytes
                .with_label_values(&[state])
                .set(i64::try_from(bytes).unwrap_or(i64::MAX));
        }
        self.bytes.collect()
    }
}

#[cfg(test)]
mod tests {
    use std::alloc::{GlobalAlloc, Layout};

    #[test]
    #[allow(unsafe_code)]
    fn jemalloc_counts_a_live_allocation_and_its_release() {
        let allocated = || {
            let stats = super::stats().expect("jemalloc answers");
            stats[0].1 as i64
        };
        // Straight from jemalloc, whatever this test binary's global allocator; other tests'
        // allocations in between are far smaller than 64 MiB.
        let layout = Layout::from_size_align(64 << 20, 16).unwrap();
        let before = allocated();
        // SAFETY: a non-zero size and a valid alignment; the block is freed below with the
        // same layout and allocator, and never read.
        let block = unsafe { tikv_jemallocator::Jemalloc.alloc(layout) };
        assert!(!block.is_null());
        let during = allocated();
        // SAFETY: `block` came from this allocator with this layout.
        unsafe { tikv_jemallocator::Jemalloc.dealloc(block, layout) };
        let after = allocated();
        assert!(
            during - before > 60 << 20,
            "allocated grew {} bytes",
            during - before
        );
        assert!(
            during - after > 60 << 20,
            "allocated fell {} bytes",
            during - after
        );
    }

    #[test]
    fn the_collector_exports_every_state() {
        let c = super::JemallocCollector::new("test").unwrap();
        let families = prometheus::core::Collector::collect(&c);
        let states: Vec<String> = families[0]
            .get_metric()
            .iter()
            .map(|m| m.label[0].value().to_string())
            .collect();
        for s in [
            "allocated",
            "active",
            "resident",
            "mapped",
            "retained",
            "metadata",
        ] {
            assert!(states.iter().any(|x| x == s), "{s} missing from {states:?}");
        }
    }
}
