//! Crash and scale: kill -9 the projector at random points while events stream in, and move
//! partitions between two instances; the views must equal those of a clean replay.

use aispm_projector::store::{Store, columns};
use aispm_projector::{Config, catch_up};
use aispm_schemas::ViewChange;
use aispm_schemas::codec::Codec;
use aispm_tests::Broker;
use aispm_tests::broker::free_port;
use aispm_tests::kafka::{create_contract_topics, random_prefix, read_to_end, wait_caught_up};
use aispm_tests::process::{Service, sum};
use aispm_tools::load::LoadGen;
use rand::Rng;
use rdkafka::producer::{FutureProducer, FutureRecord};
use std::collections::HashMap;
use std::path::Path;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

fn args(broker: &Broker, prefix: &str, state: &Path, group: &str) -> Vec<String> {
    [
        "--brokers",
        &broker.bootstrap(),
        "--topic-prefix",
        prefix,
        "--state-dir",
        &state.display().to_string(),
        "--group",
        group,
    ]
    .iter()
    .map(|s| (*s).to_owned())
    .collect()
}

/// What one projector under test runs on: fresh contract topics (3 partitions) under their own
/// prefix, a state directory, a consumer group, an HTTP address, and its arguments.
struct Rig {
    prefix: String,
    topics: aispm_schemas::Topics,
    dir: tempfile::TempDir,
    state: std::path::PathBuf,
    group: String,
    http: String,
    args: Vec<String>,
}

async fn rig(broker: &Broker) -> Rig {
    let prefix = random_prefix();
    let topics = create_contract_topics(&broker.bootstrap(), &prefix, 3)
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let group = format!("proj-{}", random_prefix());
    let args = args(broker, &prefix, &state, &group);
    Rig {
        prefix,
        topics,
        dir,
        state,
        group,
        http: format!("127.0.0.1:{}", free_port()),
        args,
    }
}

/// Produces `n` generated events at about `rate` per second; returns once all are acknowledged.
async fn stream(
    producer: FutureProducer,
    topics: aispm_schemas::Topics,
    mut g: LoadGen,
    n: usize,
    rate: usize,
) {
    let started = Instant::now();
    let chunk = 500;
    let mut sent = 0;
    while sent < n {
        let mut pending = Vec::with_capacity(chunk);
        for _ in 0..chunk.min(n - sent) {
            let r = g.next_record();
            let topic = r.kind.topic(&topics).to_owned();
            let p = producer.clone();
            pending.push(tokio::spawn(async move {
                p.send(
                    FutureRecord::to(&topic)
                        .key(r.tenant.as_bytes())
                        .payload(&r.bytes),
                    Duration::from_secs(60),
                )
                .await
                .map(|_| ())
                .map_err(|(e, _)| e)
            }));
        }
        sent += pending.len();
        for p in pending {
            p.await.expect("send task").expect("acknowledged");
        }
        let due = Duration::from_secs_f64(sent as f64 / rate as f64);
        if let Some(wait) = due.checked_sub(started.elapsed()) {
            tokio::time::sleep(wait).await;
        }
    }
}

/// The digest of a clean replay of the topics into a fresh store.
async fn clean_digest(broker: &Broker, prefix: &str) -> (usize, u64) {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = Config::local(&broker.bootstrap(), dir.path().join("clean"));
    cfg.common.topic_prefix = prefix.to_owned();
    cfg.group = format!("clean-{}", random_prefix());
    let report = catch_up(cfg, CancellationToken::new()).await.unwrap();
    assert!(report.totals.applied > 0);
    Store::open(&dir.path().join("clean"), 8 << 20, false)
        .unwrap()
        .view_digest()
        .unwrap()
}

fn digest(dir: &Path) -> (usize, u64) {
    Store::open(dir, 8 << 20, false)
        .unwrap()
        .view_digest()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn kill_9_at_random_points_then_views_equal_a_clean_replay() {
    // Restarting in place with static membership: each restart reclaims the partitions at once.
    let events = std::env::var("AISPM_CRASH_EVENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000);
    kill_9_at_random_points(Some("projector-0"), events, 8).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn kill_9_without_instance_id_then_the_partitions_come_back_after_the_session_timeout() {
    // A new member each time: the dead one holds its partitions until the broker expires its
    // session (10 s), then the group gives them to the restarted process.
    kill_9_at_random_points(None, 30_000, 3).await;
}

async fn kill_9_at_random_points(instance_id: Option<&str>, events: usize, min_kills: usize) {
    let broker = Broker::start().unwrap();
    let Rig {
        prefix,
        topics,
        dir,
        state,
        group,
        http,
        args: mut a,
    } = rig(&broker).await;
    if let Some(id) = instance_id {
        a.extend(["--instance-id".to_owned(), id.to_owned()]);
    }
    let mut projector = Service::start("aispm-projector", &http, &a, dir.path()).unwrap();
    projector.wait_ready(Duration::from_secs(60)).await.unwrap();

    let producer: FutureProducer = aispm_tests::kafka::producer(&broker.bootstrap()).unwrap();
    let feed = tokio::spawn(stream(
        producer,
        topics.clone(),
        LoadGen::keyed(7, 40, 4000),
        events,
        6_000,
    ));
    // Every kill lands while the projector is applying: after each restart it first gets its
    // partitions back (ready), then runs for a random while. Kills go on after the last event
    // is produced (the projector is still catching up) until there were at least `min_kills`.
    let mut kills = 0;
    let mut rng = rand::thread_rng();
    while !feed.is_finished() || kills < min_kills {
        projector
            .wait_ready(Duration::from_secs(120))
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(rng.gen_range(300..2000))).await;
        projector.kill9();
        kills += 1;
        projector.restart().unwrap();
    }
    feed.await.unwrap();
    // One more kill after the last event, then let it finish.
    projector.kill9();
    kills += 1;
    projector.restart().unwrap();
    let inputs = topics.inputs();
    if let Err(e) = wait_caught_up(
        &broker.bootstrap(),
        &group,
        &inputs,
        Duration::from_secs(300),
    ) {
        let m = reqwest::get(format!("http://{http}/metrics"))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        let m: Vec<&str> = m
            .lines()
            .filter(|l| l.starts_with("aispm_projector_events") || l.contains("lag"))
            .collect();
        panic!("{e}\n{}\n{}", m.join("\n"), projector.log_tail());
    }
    assert!(
        projector.terminate(Duration::from_secs(30)).unwrap(),
        "clean exit on SIGTERM:\n{}",
        projector.log_tail()
    );

    // Before the clean replay, which publishes to the same topic from the beginning.
    changes_never_go_back(&view_changes(&broker, &topics.views));
    let crashed = digest(&state);
    let clean = clean_digest(&broker, &prefix).await;
    println!(
        "instance_id={instance_id:?} events={events} kills={kills} rows={} digest={:016x} clean_rows={} clean_digest={:016x}",
        crashed.0, crashed.1, clean.0, clean.1
    );
    assert!(kills >= min_kills, "killed {kills} times");
    assert_eq!(
        crashed, clean,
        "views after {kills} kill -9 differ from a clean replay"
    );
}

/// Every change on the views topic, in offset order per partition, with its record.
fn view_changes(broker: &Broker, views: &str) -> Vec<(aispm_tests::kafka::Record, ViewChange)> {
    let mut records = read_to_end(&broker.bootstrap(), &[views], Duration::from_secs(60)).unwrap();
    assert!(!records.is_empty(), "no view change on {views}");
    records.sort_by_key(|(_, r)| (r.partition, r.offset));
    let codec = Codec::new();
    records
        .into_iter()
        .map(|(_, r)| {
            let change: ViewChange = codec.decode(r.value.as_deref().unwrap()).unwrap();
            (r, change)
        })
        .collect()
}

/// On the views topic, no row's `changed_at` goes backwards, whatever the kills made the
/// projector publish again: a consumer that keeps the newest change of each row by
/// `changed_at` keeps the last one on the topic.
fn changes_never_go_back(changes: &[(aispm_tests::kafka::Record, ViewChange)]) {
    let mut newest: HashMap<&[u8], (i64, i64)> = HashMap::new();
    let mut last: HashMap<&[u8], &ViewChange> = HashMap::new();
    for (r, change) in changes {
        let key = r.key.as_deref().unwrap();
        let at = change.changed_at.0;
        if let Some((before, offset)) = newest.get(key) {
            assert!(
                at >= *before,
                "{}: changed_at {at} at offset {} after {before} at offset {offset}\nnow {:?}\nbefore {:?}",
                String::from_utf8_lossy(key),
                r.offset,
                change,
                last[key]
            );
        }
        last.insert(key, change);
        newest.insert(key, (at, r.offset));
    }
    println!(
        "views topic: {} changes of {} rows, changed_at never backwards",
        changes.len(),
        newest.len()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn two_instances_split_the_partitions_and_a_moved_partition_is_rebuilt() {
    let broker = Broker::start().unwrap();
    let prefix = random_prefix();
    let topics = create_contract_topics(&broker.bootstrap(), &prefix, 4)
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (state_a, state_b) = (dir.path().join("a"), dir.path().join("b"));
    let group = format!("proj-{}", random_prefix());
    let producer: FutureProducer = aispm_tests::kafka::producer(&broker.bootstrap()).unwrap();
    let mut g = LoadGen::keyed(11, 30, 3000);

    let mut a = Service::start(
        "aispm-projector",
        &format!("127.0.0.1:{}", free_port()),
        &args(&broker, &prefix, &state_a, &group),
        dir.path(),
    )
    .unwrap();
    a.wait_ready(Duration::from_secs(60)).await.unwrap();
    stream(
        producer.clone(),
        topics.clone(),
        std::mem::replace(&mut g, LoadGen::keyed(12, 30, 3000)),
        10_000,
        20_000,
    )
    .await;

    // A second instance joins: the group rebalances and each takes part of the partitions.
    let mut b = Service::start(
        "aispm-projector",
        &format!("127.0.0.1:{}", free_port()),
        &args(&broker, &prefix, &state_b, &group),
        dir.path(),
    )
    .unwrap();
    b.wait_ready(Duration::from_secs(60)).await.unwrap();
    stream(
        producer.clone(),
        topics.clone(),
        std::mem::replace(&mut g, LoadGen::keyed(13, 30, 3000)),
        10_000,
        20_000,
    )
    .await;
    let inputs = topics.inputs();
    if let Err(e) = wait_caught_up(
        &broker.bootstrap(),
        &group,
        &inputs,
        Duration::from_secs(120),
    ) {
        panic!("{e}\nA:\n{}\nB:\n{}", a.log_tail(), b.log_tail());
    }
    let assigned = |http: String| async move {
        let m = reqwest::get(format!("{http}/metrics"))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        m.lines()
            .find_map(|l| l.strip_prefix("aispm_projector_consumer_assigned_partitions "))
            .and_then(|v| v.trim().parse::<i64>().ok())
            .unwrap_or(-1)
    };
    let settle = Instant::now() + Duration::from_secs(60);
    let (mut on_a, mut on_b) = (0, 0);
    while Instant::now() < settle {
        (on_a, on_b) = (
            assigned(a.http.clone()).await,
            assigned(b.http.clone()).await,
        );
        if on_a > 0 && on_b > 0 && on_a + on_b == 16 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    println!("after the join: A owns {on_a} partitions, B owns {on_b}");
    if !(on_a > 0 && on_b > 0) {
        println!(
            "A:\n{}\nB:\n{}\nbroker:\n{}",
            a.log_tail(),
            b.log_tail(),
            broker.log_tail()
        );
    }
    assert!(
        on_a > 0 && on_b > 0 && on_a + on_b == 16,
        "the group split the 16 input partitions: A {on_a}, B {on_b}"
    );

    // A dies (kill -9, no goodbye to the group); once the broker expires its session, B takes
    // its partitions and rebuilds them from the beginning of the topics.
    a.kill9();
    stream(producer, topics.clone(), g, 5_000, 20_000).await;
    if let Err(e) = wait_caught_up(
        &broker.bootstrap(),
        &group,
        &inputs,
        Duration::from_secs(180),
    ) {
        panic!("{e}\nB:\n{}", b.log_tail());
    }
    assert!(
        b.terminate(Duration::from_secs(30)).unwrap(),
        "{}",
        b.log_tail()
    );

    let owned_by_a: Vec<(String, i32)> = Store::open(&state_a, 8 << 20, false)
        .unwrap()
        .offsets()
        .unwrap()
        .into_keys()
        .collect();
    let owned_by_b: Vec<(String, i32)> = Store::open(&state_b, 8 << 20, false)
        .unwrap()
        .offsets()
        .unwrap()
        .into_keys()
        .collect();
    println!(
        "A applied {} partitions, B {} partitions",
        owned_by_a.len(),
        owned_by_b.len()
    );
    assert!(!owned_by_a.is_empty(), "A applied records");
    assert_eq!(
        owned_by_b.len(),
        12,
        "B ends owning every partition with records (3 topics x 4)"
    );

    assert_eq!(
        digest(&state_b),
        clean_digest(&broker, &prefix).await,
        "B's views after taking over equal a clean replay"
    );
    // B published the tenants it took over once it had replayed them to the end A's had:
    // never a row older than A's version of it.
    let changes = view_changes(&broker, &topics.views);
    changes_never_go_back(&changes);
    topic_ends_with_the_store(&changes, &state_b);
}

/// Produces `n` generated events in one burst, so they reach the broker as large record batches.
async fn burst(broker: &Broker, topics: &aispm_schemas::Topics, seed: u64, n: usize) {
    let producer: FutureProducer = aispm_tests::kafka::producer(&broker.bootstrap()).unwrap();
    let mut g = LoadGen::keyed(seed, 5, 500).with_duplicates(0.0);
    let records: Vec<_> = (0..n).map(|_| g.next_record()).collect();
    aispm_tests::kafka::send_all(&producer, topics, &records).await;
}

/// A rebuild applies every record, including a burst that reached the broker as large batches:
/// the end it runs to (ListOffsets) is past the last record of the last batch.
#[tokio::test(flavor = "multi_thread")]
async fn a_rebuild_applies_every_record_of_a_burst() {
    let broker = Broker::start().unwrap();
    let prefix = random_prefix();
    let topics = create_contract_topics(&broker.bootstrap(), &prefix, 2)
        .await
        .unwrap();
    burst(&broker, &topics, 21, 3000).await;
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = Config::local(&broker.bootstrap(), dir.path().join("s"));
    cfg.common.topic_prefix = prefix.clone();
    cfg.group = format!("rebuild-{}", random_prefix());
    let report = catch_up(cfg, CancellationToken::new()).await.unwrap();
    assert_eq!(
        report.totals.applied, 3000,
        "every record applied ({} records read)",
        report.totals.records
    );
}

/// A projector whose stored offsets are already at the end (a crash after its last batch
/// committed but before the asynchronous commit to Kafka landed; here, state caught up by
/// `catch_up`, which never commits to the group) has nothing to poll: it must still tell the
/// group its offsets, or the group's lag, and every SRE alert on it, stays up until new records
/// arrive. The full suite once stalled here for 300 s after a kill -9.
#[tokio::test(flavor = "multi_thread")]
async fn with_nothing_left_to_apply_the_group_still_learns_the_stored_offsets() {
    let broker = Broker::start().unwrap();
    let prefix = random_prefix();
    let topics = create_contract_topics(&broker.bootstrap(), &prefix, 2)
        .await
        .unwrap();
    burst(&broker, &topics, 23, 2000).await;
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("s");
    let group = format!("idle-{}", random_prefix());
    let mut cfg = Config::local(&broker.bootstrap(), state.clone());
    cfg.common.topic_prefix = prefix.clone();
    cfg.group = group.clone();
    let report = catch_up(cfg, CancellationToken::new()).await.unwrap();
    assert_eq!(report.totals.applied, 2000);
    let inputs = topics.inputs();
    assert!(
        wait_caught_up(&broker.bootstrap(), &group, &inputs, Duration::from_secs(2)).is_err(),
        "catch_up left the group's offsets alone"
    );
    let mut projector = Service::start(
        "aispm-projector",
        &format!("127.0.0.1:{}", free_port()),
        &args(&broker, &prefix, &state, &group),
        dir.path(),
    )
    .unwrap();
    projector.wait_ready(Duration::from_secs(60)).await.unwrap();
    let started = Instant::now();
    if let Err(e) = wait_caught_up(
        &broker.bootstrap(),
        &group,
        &inputs,
        Duration::from_secs(60),
    ) {
        panic!("{e}\n{}", projector.log_tail());
    }
    println!(
        "the group learned the stored offsets {:.1} s after the projector was ready",
        started.elapsed().as_secs_f64()
    );
}

/// Without the WAL, what the projector applied since its last flush is what a crash would make
/// it apply again: `unflushed_records` counts it, partition by partition, and the group's
/// committed offsets (and so its lag) stand before it. A stop flushes: the group then stands
/// at the ends.
#[tokio::test(flavor = "multi_thread")]
async fn records_applied_since_the_last_flush_are_counted_until_a_flush() {
    let broker = Broker::start().unwrap();
    let r = rig(&broker).await;
    // A first burst applied and flushed (a catch-up ends with a flush): each partition has a
    // durable offset.
    burst(&broker, &r.topics, 31, 600).await;
    let mut cfg = Config::local(&broker.bootstrap(), r.state.clone());
    cfg.common.topic_prefix = r.prefix.clone();
    cfg.group = r.group.clone();
    assert_eq!(
        catch_up(cfg, CancellationToken::new())
            .await
            .unwrap()
            .totals
            .applied,
        600
    );
    let mut args = r.args.clone();
    args.extend(["--flush-interval".to_owned(), "1h".to_owned()]);
    let mut projector = Service::start("aispm-projector", &r.http, &args, r.dir.path()).unwrap();
    projector.wait_ready(Duration::from_secs(60)).await.unwrap();
    burst(&broker, &r.topics, 37, 1500).await;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let text = projector.metrics().await;
        // Each summed over the partitions.
        let applied = sum(&text, "aispm_projector_unflushed_records", "topic=");
        let waiting = sum(&text, "aispm_projector_consumer_lag_messages", "topic=");
        // The group is told only of flushed offsets: its lag is the second burst until then.
        if applied == 1500.0 && waiting == 1500.0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "unflushed {applied} and lag {waiting}, expected 1500 each:\n{}",
            projector.log_tail()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let inputs = r.topics.inputs();
    assert!(
        wait_caught_up(
            &broker.bootstrap(),
            &r.group,
            &inputs,
            Duration::from_secs(3)
        )
        .is_err(),
        "the group learned offsets no flush made durable"
    );
    assert!(projector.terminate(Duration::from_secs(60)).unwrap());
    wait_caught_up(
        &broker.bootstrap(),
        &r.group,
        &inputs,
        Duration::from_secs(30),
    )
    .unwrap();
}

/// Stopping in the middle of a record batch and resuming there loses nothing: small projector
/// batches store offsets inside the broker's large record batches, and a fetch from inside a
/// batch must deliver the rest of it.
#[tokio::test(flavor = "multi_thread")]
async fn resuming_inside_a_record_batch_applies_every_record_once() {
    let broker = Broker::start().unwrap();
    let prefix = random_prefix();
    let topics = create_contract_topics(&broker.bootstrap(), &prefix, 2)
        .await
        .unwrap();
    burst(&broker, &topics, 22, 3000).await;
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("s");
    let (mut applied, mut runs) = (0, 0);
    // Each run is cut short after a growing delay, then the next resumes from its offsets.
    loop {
        runs += 1;
        let mut cfg = Config::local(&broker.bootstrap(), state.clone());
        cfg.common.topic_prefix = prefix.clone();
        cfg.group = format!("resume-{}", random_prefix());
        cfg.batch_max = 7;
        let stop = CancellationToken::new();
        let cut = stop.clone();
        let delay = Duration::from_millis(150 * runs);
        tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            cut.cancel();
        });
        let report = catch_up(cfg, stop).await.unwrap();
        println!(
            "run {runs}: applied {} of {} records",
            report.totals.applied, report.totals.records
        );
        applied += report.totals.applied;
        if applied >= 3000 || runs >= 40 {
            // One more uncut run: nothing may be left, nothing applied twice.
            let mut cfg = Config::local(&broker.bootstrap(), state.clone());
            cfg.common.topic_prefix = prefix.clone();
            cfg.group = format!("resume-{}", random_prefix());
            let last = tokio::time::timeout(
                Duration::from_secs(120),
                catch_up(cfg, CancellationToken::new()),
            )
            .await
            .expect("the last run reaches the end of the topics")
            .unwrap();
            applied += last.totals.applied;
            break;
        }
    }
    println!("runs={runs} applied={applied}");
    assert!(
        runs >= 3,
        "only {runs} runs: the cuts did not interrupt the replay"
    );
    assert_eq!(
        applied, 3000,
        "every record applied exactly once over {runs} runs"
    );
    assert_eq!(digest(&state), clean_digest(&broker, &prefix).await);
}

/// Kill -9 at each step of the commit protocol (`aispm_projector`'s crash points): after the
/// batch is applied, after its dead letters, after its write, in the middle of publishing, after
/// publishing and before the flush (the service's default writes no WAL: what it published is
/// newer than what the kill leaves), after the outbox is cleared, in the middle of a flush, and,
/// with the WAL on, after a logged write and while a start republishes the outbox that crash
/// left; and while catching up at start (rows held until the end): in the middle of the
/// replay, in the middle of publishing the held rows, and after publishing them. After each, the restarted projector must lose nothing and apply nothing twice: the
/// same events sent again after the restart, and again after a clean stop (every batch
/// checkpointed), are all duplicates and change no row; the views equal a clean replay; the
/// views topic ends with every stored row and no other; no `changed_at` goes backwards on it;
/// every bad record is dead-lettered.
#[test]
fn kill_9_at_each_step_of_the_commit_protocol() {
    let broker = Broker::start().unwrap();
    // (step, n): the n-th time the step is reached; a publishing crash lands after some
    // hundreds of acknowledgements, inside a batch's changes.
    // Each step on its own topics, group and state, and thread, all at once: most of a step's
    // time is spent waiting (for a group to settle, a topic to be read to its end).
    // Live: the projector is started before the events are sent, so it applies them as they
    // come. Catching up: the events are sent before it starts, so its partitions are behind at
    // start and their rows are held until the end (`catchup.rs`): killed in the middle of that
    // replay (rows owed, stored), while the owed rows are published, and after they are.
    // Each without the WAL (the default) but where the flags say otherwise: a logged write is
    // what leaves an outbox for the next start to drain; a flush after every batch puts one
    // under way at the third. Without the WAL, batches are written together in epochs: an
    // epoch that lives long (`--epoch-interval 1h`, so only an idle input, a flush or a
    // catch-up's end writes it) has batches published and not written when the kill comes at
    // `published:3`; a catch-up's epoch lasts until it ends unless it fills (small
    // `--epoch-bytes`: several written, owed rows stored, before the third write's kill).
    let steps: [(&str, u64, Start, &[&str]); 12] = [
        ("applied", 3, Live, &[]),
        ("dead_lettered", 3, Live, &[]),
        ("committed", 3, Live, &[]),
        ("committed", 3, Live, &["--wal"]),
        ("publishing", 400, Live, &[]),
        ("published", 3, Live, &[]),
        ("published", 3, Live, &["--epoch-interval", "1h"]),
        ("outbox_cleared", 3, Live, &[]),
        ("flushing", 3, Live, &["--flush-interval", "0s"]),
        ("committed", 3, CatchingUp, &["--epoch-bytes", "300000"]),
        ("publishing", 400, CatchingUp, &[]),
        ("caught_up", 1, CatchingUp, &[]),
    ];
    // A mistyped crash point stops the projector with the reason at once, instead of never
    // firing (and the test waiting for the crash failing on its timeout).
    tokio::runtime::Runtime::new()
        .unwrap()
        .block_on(a_mistyped_crash_point_stops_the_projector(&broker));
    std::thread::scope(|s| {
        for (step, n, start, flags) in steps {
            let broker = &broker;
            s.spawn(move || {
                tokio::runtime::Runtime::new()
                    .unwrap()
                    .block_on(crash_at_step(broker, step, n, start, flags));
            });
        }
    });
}

async fn a_mistyped_crash_point_stops_the_projector(broker: &Broker) {
    let r = rig(broker).await;
    for (at, reason) in [
        ("comitted:3", "unknown step \"comitted\""),
        ("committed:0", "the count \"0\""),
    ] {
        let env = [("AISPM_CRASH_AT".to_owned(), at.to_owned())];
        let mut p =
            Service::start_with_env("aispm-projector", &r.http, &r.args, &env, r.dir.path())
                .unwrap();
        let status = p.wait_exit(Duration::from_secs(60)).await.unwrap();
        assert!(
            status.is_some_and(|s| !s.success()) && p.log().contains(reason),
            "AISPM_CRASH_AT={at}: {status:?}\n{}",
            p.log_tail()
        );
    }
}

/// One record to send: topic, key, payload.
type Outbound = (String, Vec<u8>, Vec<u8>);

/// Sends every record and waits for each acknowledgement; their (partition, offset).
async fn send_all(producer: &FutureProducer, records: &[Outbound]) -> Vec<(i32, i64)> {
    let mut sent = Vec::with_capacity(records.len());
    for chunk in records.chunks(500) {
        let pending: Vec<_> = chunk
            .iter()
            .map(|(topic, key, payload)| {
                producer.send(
                    FutureRecord::to(topic).key(key).payload(payload),
                    Duration::from_secs(60),
                )
            })
            .collect();
        for p in pending {
            let d = p.await.map_err(|(e, _)| e).expect("acknowledged");
            sent.push((d.partition, d.offset));
        }
    }
    sent
}

/// The events of one run, every hundredth record a bad one (not Avro), and the bad ones' indexes.
fn crash_records(topics: &aispm_schemas::Topics, events: usize) -> (Vec<Outbound>, Vec<usize>) {
    let mut g = LoadGen::keyed(11, 6, 300).with_duplicates(0.0);
    let mut records = Vec::new();
    let mut bad = Vec::new();
    for i in 0..events {
        if i % 100 == 50 {
            bad.push(records.len());
            records.push((
                topics.decisions.clone(),
                g.tenants()[0].clone().into_bytes(),
                b"not an avro record".to_vec(),
            ));
        }
        let r = g.next_record();
        records.push((
            r.kind.topic(topics).to_owned(),
            r.tenant.into_bytes(),
            r.bytes,
        ));
    }
    (records, bad)
}

/// Whether the crashing projector applies the events as they are sent, or catches up with them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Start {
    Live,
    CatchingUp,
}
use Start::{CatchingUp, Live};

async fn crash_at_step(broker: &Broker, step: &str, n: u64, start: Start, flags: &[&str]) {
    let started = Instant::now();
    let mut r = rig(broker).await;
    let logged = flags.contains(&"--wal");
    // Small batches, so that the crash lands after some have committed; static membership, so
    // that each start gets the partitions back at once.
    r.args.extend(
        ["--batch-max", "200", "--instance-id", "projector-0"]
            .iter()
            .chain(flags)
            .map(|s| (*s).to_owned()),
    );
    let (records, bad) = crash_records(&r.topics, 3_000);
    let good = (records.len() - bad.len()) as f64;
    let producer: FutureProducer = aispm_tests::kafka::producer(&broker.bootstrap()).unwrap();
    let mut sent = Vec::new();
    if start == CatchingUp {
        sent = send_all(&producer, &records).await;
    }

    let crash = |at: &str| vec![("AISPM_CRASH_AT".to_owned(), at.to_owned())];
    let mut crashing = Service::start_with_env(
        "aispm-projector",
        &r.http,
        &r.args,
        &crash(&format!("{step}:{n}")),
        r.dir.path(),
    )
    .unwrap();
    if start == Live {
        // Ready (partitions assigned), and the loop has read their ends (all 0: nothing to
        // catch up), so every event below is applied live.
        crashing.wait_ready(Duration::from_secs(60)).await.unwrap();
        let deadline = Instant::now() + Duration::from_secs(30);
        while !crashing.log().contains("Partitions taken looked at") {
            assert!(Instant::now() < deadline, "{}", crashing.log_tail());
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        sent = send_all(&producer, &records).await;
    }
    let status = crashing
        .wait_exit(Duration::from_secs(120))
        .await
        .unwrap()
        .unwrap_or_else(|| panic!("no crash at {step}:{n}:\n{}", crashing.log_tail()));
    let reached = format!("crash point {step}:{n} reached");
    assert!(
        !status.success() && crashing.log().contains(&reached),
        "{step}: exited with {status}, not at the crash point:\n{}",
        crashing.log_tail()
    );
    if step == "committed" && start == Live && logged {
        // The write is durable and nothing of it published: the next start republishes the
        // outbox; kill it there too.
        let mut draining = Service::start_with_env(
            "aispm-projector",
            &r.http,
            &r.args,
            &crash("drained"),
            r.dir.path(),
        )
        .unwrap();
        let status = draining.wait_exit(Duration::from_secs(120)).await.unwrap();
        assert!(
            status.is_some_and(|s| !s.success())
                && draining.log().contains("crash point drained:1 reached"),
            "no crash while draining the outbox: {status:?}\n{}",
            draining.log_tail()
        );
    }

    // Restarted: the same events again, before it has caught up with the first copies. Then
    // stopped cleanly (every batch checkpointed), started again: a third copy. Each time every
    // copy is a duplicate, and only those; the third changes no row.
    let mut changes = 0.0;
    for after in ["the restart", "a checkpoint"] {
        let mut projector =
            Service::start("aispm-projector", &r.http, &r.args, r.dir.path()).unwrap();
        projector.wait_ready(Duration::from_secs(60)).await.unwrap();
        send_all(&producer, &records).await;
        wait_caught_up(
            &broker.bootstrap(),
            &r.group,
            &r.topics.inputs(),
            Duration::from_secs(120),
        )
        .unwrap();
        let page = projector.metrics().await;
        assert_eq!(
            aispm_tests::process::sample(
                &page,
                "aispm_projector_events_total{outcome=\"duplicate\",topic=\"all\"}"
            ),
            good,
            "{step}: after {after}, every event sent again is a duplicate, and only those"
        );
        let changed = aispm_tests::process::sum(&page, "aispm_projector_view_changes_total", "");
        if after == "a checkpoint" {
            assert_eq!(changed, 0.0, "{step}: duplicates changed rows");
        } else {
            changes = changed;
        }
        assert!(projector.terminate(Duration::from_secs(30)).unwrap());
    }

    let changes_on_topic = view_changes(broker, &r.topics.views);
    changes_never_go_back(&changes_on_topic);
    topic_ends_with_the_store(&changes_on_topic, &r.state);
    let dead: std::collections::HashSet<(i32, i64)> = read_to_end(
        &broker.bootstrap(),
        &[&r.topics.dlq],
        Duration::from_secs(60),
    )
    .unwrap()
    .iter()
    .map(|(_, record)| {
        let h = |name: &str| {
            let (_, v) = record.headers.iter().find(|(k, _)| k == name).unwrap();
            String::from_utf8_lossy(v).parse::<i64>().unwrap()
        };
        (
            h(aispm_schemas::topics::dlq_headers::SOURCE_PARTITION) as i32,
            h(aispm_schemas::topics::dlq_headers::SOURCE_OFFSET),
        )
    })
    .collect();
    for i in &bad {
        assert!(
            dead.contains(&sent[*i]),
            "{step}: bad record at {:?} not dead-lettered",
            sent[*i]
        );
    }
    let crashed = digest(&r.state);
    let clean = clean_digest(broker, &r.prefix).await;
    println!(
        "crash at {step}:{n} ({start:?}, flags {flags:?}; view changes before the clean stop: {changes}): rows={} digest={:016x} clean_rows={} clean_digest={:016x} in {:.1}s",
        crashed.0,
        crashed.1,
        clean.0,
        clean.1,
        started.elapsed().as_secs_f64()
    );
    assert_eq!(
        crashed, clean,
        "views after a crash at {step} differ from a clean replay"
    );
}

/// The last change of every row on the views topic is the row as stored (a delete for a row not
/// stored): a consumer of the topic alone ends with the projector's views.
fn topic_ends_with_the_store(changes: &[(aispm_tests::kafka::Record, ViewChange)], state: &Path) {
    let mut last = HashMap::new();
    for (_, change) in changes {
        last.insert(
            (change.tenant_id.clone(), change.view, change.key.clone()),
            change.row.clone(),
        );
    }
    let store = Store::open(state, 8 << 20, false).unwrap();
    let mut stored = HashMap::new();
    for ((cf, key), value) in store.dump_views().unwrap() {
        let (view, _) = columns::VIEWS.iter().find(|(_, c)| *c == cf).unwrap();
        let (tenant, row) = columns::split_tenant_key(&key).unwrap();
        let decoded = aispm_projector::decode_row(*view, &value).unwrap();
        stored.insert((tenant.to_owned(), *view, row.to_owned()), decoded);
    }
    for (k, row) in &stored {
        assert_eq!(
            last.get(k),
            Some(&Some(row.clone())),
            "{k:?}: the topic's last change is not the stored row"
        );
    }
    for (k, row) in &last {
        assert!(
            row.is_none() || stored.contains_key(k),
            "{k:?}: on the topic, not stored"
        );
    }
}
