//! Posture as of a past instant: the replay's cost (a bench binary printing figures and writing
//! JSON, not a timed test).
//!
//! The target: posture, findings and readiness as of any past instant T answered within
//! 10 s for a tenant with 1M events. The bench applies `AISPM_BENCH_EVENTS` (default 1 000 000)
//! generated events of one tenant (`aispm_tools::records::Gen`, one event every 10 ms of event
//! time, over `AISPM_BENCH_ENTITIES` entities, default 1 000) through the engine into a RocksDB
//! store, as the projector keeps them, then replays them as of three instants with
//! `aispm_projector::as_of::replay`, which is what `?as_of=` runs before it answers:
//! 1. **before the first event**: nothing replayed; the cost of scanning the kept events and
//!    reading each one's event time;
//! 2. **the middle**: half the events replayed;
//! 3. **the end**: every event replayed (the case).
//!
//! For each: wall seconds, events replayed, process CPU-µs per kept event, and the peak RSS.
//! Writes `bench/as-of.json` and `bench/as-of.md`.
//!
//! Run: `source ~/.cache/aispm/env.sh && cargo bench -p aispm-tests --bench as_of`.

use aispm_projector::store::Store;
use aispm_projector::{Engine, Settings};
use aispm_schemas::{Timestamp, Topics};
use aispm_tests::measure::{env_or, peak_rss_mib, process_cpu, round, rss_mib};
use aispm_tools::records::Gen;
use anyhow::Result;
use serde_json::json;
use std::sync::Arc;
use std::time::Instant;

/// The projector binary's allocator, so the figures match the service's.
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

const SEED: u64 = 11;
const TENANT: &str = "tenant-00000";
/// `Gen`'s first event time, and its step.
const T0: i64 = 1_763_719_200_000;
const STEP_MS: i64 = 10;

/// Applies `events` generated events of one tenant into a store under `dir`.
fn fill(dir: &std::path::Path, topics: &Topics, events: u64, entities: usize) -> Result<Store> {
    let store = Arc::new(Store::open(dir, 64 << 20, false)?);
    store.check_version()?;
    let mut engine = Engine::new(
        Arc::clone(&store),
        topics.clone(),
        Settings::default(),
        100_000,
    )?;
    let mut g = Gen::new(SEED, 1, entities);
    let mut offsets = [0i64; 3];
    let mut done = 0u64;
    while done < events {
        let n = (events - done).min(50_000);
        let recs: Vec<_> = (0..n).map(|_| g.next_record()).collect();
        let inputs = aispm_tests::measure::inputs(&recs, topics, &mut offsets);
        let mut p = engine.prepare(&inputs)?;
        engine.commit(&mut p)?;
        engine.clear_outbox(p.outbox)?;
        done += n;
    }
    drop(engine);
    Arc::try_unwrap(store).map_err(|_| anyhow::anyhow!("the store is still shared"))
}

fn main() -> Result<()> {
    if std::env::args().any(|a| a == "--list") {
        return Ok(());
    }
    let events = env_or("AISPM_BENCH_EVENTS", 1_000_000);
    let entities = env_or("AISPM_BENCH_ENTITIES", 1_000) as usize;
    let topics = Topics::default();
    let dir = tempfile::tempdir()?;
    let started = Instant::now();
    let store = fill(&dir.path().join("projector"), &topics, events, entities)?;
    let kept = {
        let mut n = 0u64;
        store.for_each_prefix("seen", format!("{TENANT}\0").as_bytes(), |_, _| {
            n += 1;
            Ok(())
        })?;
        n
    };
    println!(
        "filled: {events} records ({kept} distinct events kept) in {:.1} s; RSS {:.0} MiB",
        started.elapsed().as_secs_f64(),
        rss_mib()
    );
    let last = T0 + events as i64 * STEP_MS;
    let mut rows = Vec::new();
    for (name, at) in [
        ("before the first event", T0 - 1),
        ("the middle", T0 + (last - T0) / 2),
        ("the end", last),
    ] {
        let scratch = tempfile::tempdir()?;
        let (cpu0, t) = (process_cpu(), Instant::now());
        let (replayed, summary) = aispm_projector::as_of::replay(
            &store,
            &topics,
            &Settings::default(),
            TENANT,
            Timestamp(at),
            &scratch.path().join("db"),
        )?;
        let seconds = t.elapsed().as_secs_f64();
        let cpu = process_cpu() - cpu0;
        let rows_replayed = replayed.dump_views()?.len();
        drop(replayed);
        let row = json!({
            "as_of": name,
            "at": Timestamp(at).to_string(),
            "events_replayed": summary.events,
            "events_after": summary.after,
            "rows": rows_replayed,
            "seconds": round(seconds, 2),
            "replayed_events_per_second": round(summary.events as f64 / seconds, 0),
            "cpu_us_per_kept_event": round(cpu * 1e6 / kept.max(1) as f64, 2),
            "cpu_us_per_replayed_event": (summary.events > 0)
                .then(|| round(cpu * 1e6 / summary.events as f64, 2)),
            "peak_rss_mib": round(peak_rss_mib(), 0),
        });
        println!("as of {name}: {row}");
        rows.push(row);
    }
    let out = json!({
        "events": events,
        "kept": kept,
        "entities": entities,
        "target_seconds_at_1m": 10,
        "replays": rows,
    });
    let mut md = vec![
        "## Posture as of a past instant".to_owned(),
        String::new(),
        format!("{events} records of one tenant ({kept} distinct events), {entities} entities; `as_of::replay`, release build."),
        String::new(),
        "| as of | replayed | seconds | replayed events/s | CPU-µs per replayed event | peak RSS (MiB) |".to_owned(),
        "|---|---:|---:|---:|---:|---:|".to_owned(),
    ];
    for r in &rows {
        md.push(format!(
            "| {} | {} | {} | {} | {} | {} |",
            r["as_of"].as_str().unwrap_or(""),
            r["events_replayed"],
            r["seconds"],
            r["replayed_events_per_second"],
            r["cpu_us_per_replayed_event"],
            r["peak_rss_mib"]
        ));
    }
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../bench");
    std::fs::create_dir_all(&root)?;
    std::fs::write(root.join("as-of.json"), serde_json::to_string_pretty(&out)?)?;
    std::fs::write(root.join("as-of.md"), md.join("\n") + "\n")?;
    println!("{}", md.join("\n"));
    Ok(())
}
