//! glibc malloc tuning: arenas capped before any thread starts, free memory trimmed while
//! running.
//!
//! glibc gives each thread that contends for the heap its own arena, up to eight per core, and
//! returns an arena's free memory to the system only from its top. A long-running service with
//! a thread pool (tokio's blocking threads come and go; RocksDB and librdkafka run their own
//! threads) therefore spreads its heap over many arenas whose free space stays resident: the
//! 20-minute soak saw the reporter's RSS creep about 0.6 MiB a minute that way. Two arenas keep
//! contention low on the few cores this runs on and stop that creep.
//!
//! Within an arena, memory freed below live allocations (a report's rendering buffers under a
//! connection's, a batch's records under RocksDB's) also stays resident: glibc returns only the
//! top of a heap by itself. [`spawn_trimmer`] calls `malloc_trim(0)` every
//! `--malloc-trim-interval` (30 s), which gives the free pages of every arena back; in the soak
//! that took the reporter's anonymous memory from 28.7 to 22.5 MiB at once. It takes well under
//! a millisecond on these heaps.
//!
//! An operator's `MALLOC_ARENA_MAX` (read by glibc itself at start) wins: the cap is applied
//! only when that variable is unset. The projector replaces `malloc` itself with jemalloc
//! (for Rust, RocksDB's C++ and librdkafka alike), so there both calls act on a glibc heap that
//! holds nothing, and it exports jemalloc's statistics in place of [`heap`]'s
//! (`aispm_runtime::metrics::Metrics::with_heap`).

/// Arenas when `MALLOC_ARENA_MAX` is not set.
pub const DEFAULT_ARENAS: i32 = 2;

/// Caps glibc's arenas at [`DEFAULT_ARENAS`] unless `MALLOC_ARENA_MAX` is set. Call first thing
/// in `main`, before any thread is spawned. Returns the cap applied, if any.
pub fn limit_arenas() -> Option<i32> {
    if std::env::var_os("MALLOC_ARENA_MAX").is_some() {
        return None;
    }
    set_arena_max(DEFAULT_ARENAS).then_some(DEFAULT_ARENAS)
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[allow(unsafe_code)]
fn set_arena_max(arenas: i32) -> bool {
    // SAFETY: `mallopt` takes two integers and touches only malloc's own parameters; with
    // M_ARENA_MAX it is documented as safe to call at any time (it only limits arenas created
    // later). No pointer is passed or returned.
    unsafe { libc::mallopt(libc::M_ARENA_MAX, arenas) == 1 }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn set_arena_max(_arenas: i32) -> bool {
    false
}

/// Gives glibc's free heap memory back to the system. Returns whether any was released.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[allow(unsafe_code)]
pub fn trim() -> bool {
    // SAFETY: `malloc_trim` takes an integer (the padding to keep at the top of the heap) and
    // works under malloc's own locks; it only releases pages no allocation uses.
    unsafe { libc::malloc_trim(0) == 1 }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
pub fn trim() -> bool {
    false
}

/// Calls [`trim`] every `interval` on the current tokio runtime, on a blocking thread, for the
/// life of the process. A zero interval does nothing.
pub fn spawn_trimmer(interval: std::time::Duration) {
    if interval.is_zero() {
        return;
    }
    tokio::spawn(async move {
        let mut ticks = tokio::time::interval(interval);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        ticks.tick().await; // the first tick is immediate
        loop {
            ticks.tick().await;
            let _ = tokio::task::spawn_blocking(trim).await;
        }
    });
}

/// glibc's heap over all arenas, as `mallinfo2` counts it: what the C and C++ code (RocksDB,
/// librdkafka) and, in services without another allocator, Rust hold through `malloc`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Heap {
    /// Bytes in allocations in use (`uordblks`).
    pub in_use: u64,
    /// Free bytes the arenas keep resident-able (`fordblks`): what [`trim`] may give back.
    pub free: u64,
    /// Bytes in allocations served by their own `mmap` (`hblkhd`), large blocks.
    pub mmapped: u64,
}

/// glibc's heap now (`None` off glibc). It walks every arena's free lists under its lock:
/// microseconds on these heaps, fine at each scrape.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[allow(unsafe_code)]
pub fn heap() -> Option<Heap> {
    // SAFETY: `mallinfo2` takes nothing and returns a struct of counters by value, read under
    // malloc's own locks (glibc 2.33 and later, which Debian 12 has).
    let m = unsafe { libc::mallinfo2() };
    Some(Heap {
        in_use: m.uordblks as u64,
        free: m.fordblks as u64,
        mmapped: m.hblkhd as u64,
    })
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
pub fn heap() -> Option<Heap> {
    None
}

/// `aispm_<service>_malloc_heap_bytes{state}` (`in_use`, `free`, `mmapped`), read from
/// [`heap`] at each scrape. With RocksDB's own memory (the projector's
/// `aispm_projector_state_memory_bytes`) and the process's RSS it splits a service's memory
/// into what the C heap holds live, what it keeps free, and the rest (Rust's allocator).
#[derive(Debug)]
pub(crate) struct HeapCollector {
    bytes: prometheus::IntGaugeVec,
}

impl HeapCollector {
    pub(crate) fn new(name: String) -> prometheus::Result<Self> {
        let bytes = prometheus::IntGaugeVec::new(
            prometheus::Opts::new(
                name,
                "glibc's heap over all arenas (mallinfo2), by state: in_use (live malloc \
                 allocations: RocksDB, librdkafka and other C code), free (kept by the arenas; \
                 --malloc-trim-interval gives it back) and mmapped (large blocks mapped alone).",
            ),
            &["state"],
        )?;
        Ok(HeapCollector { bytes })
    }
}

impl prometheus::core::Collector for HeapCollector {
    fn desc(&self) -> Vec<&prometheus::core::Desc> {
        self.bytes.desc()
    }

    fn collect(&self) -> Vec<prometheus::proto::MetricFamily> {
        let Some(h) = heap() else {
            return Vec::new();
        };
        let gauge = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
        self.bytes
            .with_label_values(&["in_use"])
            .set(gauge(h.in_use));
        self.bytes.with_label_values(&["free"]).set(gauge(h.free));
        self.bytes
            .with_label_values(&["mmapped"])
            .set(gauge(h.mmapped));
        self.bytes.collect()
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_heap_counts_a_live_allocation_and_its_release() {
        if !cfg!(all(target_os = "linux", target_env = "gnu")) {
            return;
        }
        // The tests run in threads that share arenas: measure a change far larger than theirs.
        let before = super::heap().expect("glibc");
        let blocks: Vec<Vec<u8>> = (0..4_000).map(|i| vec![i as u8; 16_000]).collect();
        let during = super::heap().expect("glibc");
        let grown = during.in_use as i64 - before.in_use as i64;
        assert!(grown > 50_000_000, "in_use grew {grown} bytes for 64 MB");
        drop(blocks);
        let after = super::heap().expect("glibc");
        let shrunk = during.in_use as i64 - after.in_use as i64;
        assert!(
            shrunk > 50_000_000,
            "in_use fell {shrunk} bytes after freeing 64 MB"
        );
    }

    #[test]
    fn trimming_after_freeing_a_large_heap_releases_it() {
        // Many small blocks (below the mmap threshold, so on the heap), the last one kept:
        // what glibc cannot return from the top by itself.
        let mut blocks: Vec<Vec<u8>> = (0..20_000).map(|i| vec![i as u8; 1_000]).collect();
        let keep = blocks.pop();
        drop(blocks);
        if cfg!(all(target_os = "linux", target_env = "gnu")) {
            assert!(super::trim(), "nothing was released");
        }
        drop(keep);
    }

    #[test]
    fn the_cap_is_applied_unless_the_operator_set_one() {
        let applied = super::limit_arenas();
        if std::env::var_os("MALLOC_ARENA_MAX").is_some() {
            assert_eq!(applied, None);
        } else if cfg!(all(target_os = "linux", target_env = "gnu")) {
            assert_eq!(applied, Some(super::DEFAULT_ARENAS));
        }
    }
}
