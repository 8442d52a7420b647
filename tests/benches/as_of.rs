//! Posture as of a past instant: the replay's cost (a bench binary printing figures and writing
//! JSON, not a timed test).
//!
//! The target: posture, findings and readiness as of any past instant T answered within
//! 10 s for a tenant with 1M events. The bench applies `AISPM_BENCH_EVENTS` (default 1 000 000)
//! generated events of one tenant (`aispm_tools::load::LoadGen::keyed`, one event every 10 ms of event
//! time, over `AISPM_BENCH_ENTITIES` entities, default 1 000) through the engine into a RocksDB
//! store, as the projector keeps them, then makes the replay checkpoints the projector keeps
//! in the background (`aispm_projector::checkpoints::extend`, one every
//! `AISPM_BENCH_CHECKPOINT_EVENTS`, default 100 000, the projector's default), timed on their
//! own, and replays with `aispm_projector::as_of::replay_from`, which is what `?as_of=` runs
//! before it answers, as of:
//! 1. **before the first event**: nothing replayed; the cost of scanning the kept events and
//!    reading each one's event time;
//! 2. **55 % of the way**: from the newest checkpoint at or before it;
//! 3. **just before a checkpoint**: the worst case, almost a whole interval replayed;
//! 4. **the end**: every event (the case), from the newest checkpoint, and from
//!    nothing (what a replay costs without checkpoints).
//!
//! For each: wall seconds, events applied, process CPU-µs per kept event, and the peak RSS;
//! for the checkpoints, their number, the time to make them and their disk (table files shared
//! between checkpoints counted once). Writes `bench/as-of.json` and `bench/as-of.md`.
//!
//! Run: `source ~/.cache/aispm/env.sh && cargo bench -p aispm-tests --bench as_of`.

use aispm_projector::store::Store;
use aispm_projector::{Engine, Settings};
use aispm_schemas::{Timestamp, Topics};
use aispm_tests::measure::{env_or, peak_rss_mib, process_cpu, round, rss_mib};
use aispm_tools::load::LoadGen;
use anyhow::Result;
use serde_json::json;
use std::sync::Arc;
use std::time::Instant;

/// The projector binary's allocator, so the figures match the service's.
#[global_allocator]
static GLOBAL: aispm_jemalloc::Jemalloc = aispm_jemalloc::Jemalloc;

const SEED: u64 = 11;
const TENANT: &str = "tenant-000";
/// `LoadGen::keyed`'s first event time, and its step.
const T0: i64 = aispm_tools::load::KEYED_START.0;
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
    let mut g = LoadGen::keyed(SEED, 1, entities);
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
    let every = env_or("AISPM_BENCH_CHECKPOINT_EVENTS", 100_000) as usize;
    let settings = Settings::default();
    let (cpu0, t) = (process_cpu(), Instant::now());
    let checkpoints = aispm_projector::checkpoints::extend(
        &store,
        &topics,
        &settings,
        TENANT,
        None,
        Timestamp(last),
        every,
        &dir.path().join("checkpoints"),
        &dir.path().join("work"),
    )?
    .made;
    let made = json!({
        "every": every,
        "count": checkpoints.len(),
        "seconds": round(t.elapsed().as_secs_f64(), 2),
        "cpu_us_per_kept_event": round((process_cpu() - cpu0) * 1e6 / kept.max(1) as f64, 2),
        "disk_mib": round(disk_bytes(&dir.path().join("checkpoints")) as f64 / 1048576.0, 0),
        "peak_rss_mib": round(peak_rss_mib(), 0),
    });
    println!("checkpoints: {made}");
    let newest_before = |at: i64| checkpoints.iter().rev().find(|c| c.at.0 <= at);
    // The instant just before the checkpoint nearest the middle: almost an interval after
    // the one before it.
    let worst = checkpoints
        .get(checkpoints.len() / 2)
        .map_or(last, |c| c.at.0 - 1);
    let mut rows = Vec::new();
    for (name, at, from_checkpoint) in [
        ("before the first event", T0 - 1, true),
        ("55 % of the way", T0 + (last - T0) * 11 / 20, true),
        ("just before a checkpoint", worst, true),
        ("the end", last, true),
        ("the end", last, false),
    ] {
        let base = newest_before(at).filter(|_| from_checkpoint);
        let scratch = tempfile::tempdir()?;
        let (cpu0, t) = (process_cpu(), Instant::now());
        let (replayed, summary) = aispm_projector::as_of::replay_from(
            &store,
            &topics,
            &settings,
            TENANT,
            Timestamp(at),
            base,
            &scratch.path().join("db"),
        )?;
        let seconds = t.elapsed().as_secs_f64();
        let cpu = process_cpu() - cpu0;
        let rows_replayed = replayed.dump_views()?.len();
        drop(replayed);
        let applied = summary.events - base.map_or(0, |b| b.events);
        let row = json!({
            "as_of": name,
            "at": Timestamp(at).to_string(),
            "from": base.map_or("nothing".to_owned(), |b| format!("checkpoint as of {} ({} events)", b.at, b.events)),
            "events": summary.events,
            "events_applied": applied,
            "events_after": summary.after,
            "rows": rows_replayed,
            "seconds": round(seconds, 2),
            "cpu_us_per_kept_event": round(cpu * 1e6 / kept.max(1) as f64, 2),
            "cpu_us_per_applied_event": (applied > 0)
                .then(|| round(cpu * 1e6 / applied as f64, 2)),
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
        "checkpoints": made,
        "replays": rows,
    });
    let mut md = vec![
        "## Posture as of a past instant".to_owned(),
        String::new(),
        format!(
            "{events} records of one tenant ({kept} distinct events), {entities} entities; release build."
        ),
        String::new(),
        format!(
            "Replay checkpoints, one every {every} events (`checkpoints::extend`, made in the background by the projector): {} made in {} s ({} CPU-µs per kept event), {} MiB on disk, peak RSS {} MiB.",
            made["count"],
            made["seconds"],
            made["cpu_us_per_kept_event"],
            made["disk_mib"],
            made["peak_rss_mib"]
        ),
        String::new(),
        "A request as of T (`as_of::replay_from`):".to_owned(),
        String::new(),
        "| as of | from | events | applied | seconds | CPU-µs per applied event | peak RSS (MiB) |"
            .to_owned(),
        "|---|---|---:|---:|---:|---:|---:|".to_owned(),
    ];
    for r in &rows {
        md.push(format!(
            "| {} | {} | {} | {} | {} | {} | {} |",
            r["as_of"].as_str().unwrap_or(""),
            r["from"].as_str().unwrap_or(""),
            r["events"],
            r["events_applied"],
            r["seconds"],
            r["cpu_us_per_applied_event"],
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

/// Bytes of the files under `dir`, each file once however many hard links it has.
fn disk_bytes(dir: &std::path::Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    let mut seen = std::collections::HashSet::new();
    let mut total = 0;
    let mut stack = vec![dir.to_owned()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let Ok(m) = e.metadata() else { continue };
            if m.is_dir() {
                stack.push(e.path());
            } else if seen.insert((m.dev(), m.ino())) {
                total += m.len();
            }
        }
    }
    total
}
