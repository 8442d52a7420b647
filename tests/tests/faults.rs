//! Faults under load, each against the real binaries and a real broker (Apache Kafka):
//!
//! - `kill -9` of ingest at random moments while a real HTTP client posts events: every event
//!   answered `202` is applied exactly once (a client retries what got an error or a dropped
//!   connection with the same event ids, and those retries never count twice);
//! - `kill -9` of the reporter while it generates and delivers packets: no acknowledged packet
//!   is lost, none is delivered twice, every delivery is recorded once downstream;
//! - the broker killed and restarted mid-stream under ingest, projector and gatekeeper: every
//!   acknowledged event is reflected once and blockers and readiness equal a clean replay of the
//!   whole pipeline;
//! - a three-node cluster (replication factor 3, `min.insync.replicas` 2) under the same load:
//!   one node killed with `kill -9` (leadership moves, nothing acknowledged is lost), and a
//!   rolling restart of all three; the views, blockers and readiness equal a clean replay;
//! - a full disk under the projector's state and the reporter's packets (a small tmpfs): the
//!   service fails loudly, never acknowledges what it could not write, and resumes once the
//!   quota is raised.
//!
//! Each prints its figures (`events=… kills=… mismatches=0`). Sizes can be raised with
//! `AISPM_FAULT_EVENTS` (events per load test) and `AISPM_FAULT_SECONDS` (reporter kill phase).

use aispm_projector::store::Store;
use aispm_projector::{Config, catch_up};
use aispm_schemas::readiness::{Blocker, Readiness};
use aispm_schemas::{
    ApprovalEvent, Codec, DecisionEvent, InputEvent, RegistryEvent, ReportDeliveryEvent, Topics,
};
use aispm_tests::Broker;
use aispm_tests::broker::free_port;
use aispm_tests::demo::{Pipeline, TENANT, TENANT_TOKEN};
use aispm_tests::kafka::{
    create_contract_topics, create_replicated_contract_topics, latest_by_key, random_prefix,
    read_to_end, wait_caught_up,
};
use aispm_tests::process::{Service, binary};
use aispm_tools::load::LoadGen;
use rand::{Rng, SeedableRng};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use serde_json::{Value, json};
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

/// Reporter flags for tests that request packets by the hundred: no per-tenant rate, and as
/// many at once as the clients send.
const UNLIMITED_REPORTS: &[&str] = &[
    "--reports-per-tenant-per-hour",
    "0",
    "--report-concurrency-per-tenant",
    "16",
];

const OPS: &str = "faults-operator-token";

fn env_or(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn strings(args: &[&str]) -> Vec<String> {
    args.iter().map(|s| (*s).to_owned()).collect()
}

fn write_tokens(dir: &Path) -> String {
    let p = dir.join("tokens.toml");
    std::fs::write(
        &p,
        format!("[[tokens]]\ntoken = \"{OPS}\"\ntenants = [\"*\"]\nscopes = [\"read\", \"emit\", \"approve\", \"register\", \"validate\", \"admin\", \"reports\"]\nname = \"ops\"\n"),
    )
    .unwrap();
    p.display().to_string()
}

/// With `AISPM_FAULT_KEEP=<dir>`, copies a failed test's logs (and the broker's) there.
fn keep_logs(dir: &Path, broker: &Broker) -> String {
    let Ok(to) = std::env::var("AISPM_FAULT_KEEP") else {
        return String::new();
    };
    let _ = std::fs::write(dir.join("kafka.log"), broker.log());
    let copied = std::process::Command::new("cp")
        .arg("-r")
        .arg(dir)
        .arg(&to)
        .status()
        .is_ok_and(|s| s.success());
    if copied {
        format!("\n(logs kept in {to})")
    } else {
        String::new()
    }
}

/// Text without the terminal colour codes of the services' logs.
fn strip_ansi(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

fn addr() -> String {
    format!("127.0.0.1:{}", free_port())
}

fn projector_args(brokers: &str, prefix: &str, state: &Path, group: &str) -> Vec<String> {
    strings(&[
        "--brokers",
        brokers,
        "--topic-prefix",
        prefix,
        "--state-dir",
        &state.display().to_string(),
        "--group",
        group,
        "--batch-wait",
        "5ms",
    ])
}

// ---------------------------------------------------------------------------------------------
// An HTTP client that posts generated events, retrying what was not acknowledged.

/// What the HTTP client saw.
#[derive(Debug, Default)]
struct FeedReport {
    /// Every event id sent at least once.
    sent: HashSet<String>,
    /// Event ids of requests answered 202.
    accepted: HashSet<String>,
    requests: u64,
    accepted_requests: u64,
    /// 429/5xx answers (retried), by status.
    refused: BTreeMap<u16, u64>,
    /// Connection errors: refused, reset, closed before the answer, timed out (retried).
    dropped: u64,
}

/// Posts `events` generated events to `url` in JSON arrays of `batch`, at about `rate` events
/// per second from `workers` concurrent clients, and goes on past `events` (up to four times as
/// many) until `hold` is cancelled, so that a fault outlasting the planned load still happens
/// under load. A request that gets 429, 5xx or no answer is sent again, unchanged (same event
/// ids), until it is answered 202.
async fn http_feed(
    url: String,
    generator: LoadGen,
    events: usize,
    hold: CancellationToken,
    batch: usize,
    rate: usize,
    workers: usize,
) -> FeedReport {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(45))
        .build()
        .unwrap();
    let source = Arc::new(Mutex::new((generator, 0usize)));
    let report = Arc::new(Mutex::new(FeedReport::default()));
    let started = Instant::now();
    let mut handles = Vec::new();
    let most = events * 4;
    for _ in 0..workers {
        let (client, url, source, report, hold) = (
            client.clone(),
            url.clone(),
            Arc::clone(&source),
            Arc::clone(&report),
            hold.clone(),
        );
        handles.push(tokio::spawn(async move {
            loop {
                let (body, ids, due) = {
                    let mut s = source.lock().unwrap();
                    let planned = if hold.is_cancelled() { events } else { most };
                    if s.1 >= planned {
                        break;
                    }
                    let n = batch.min(planned - s.1);
                    let due = Duration::from_secs_f64(s.1 as f64 / rate as f64);
                    s.1 += n;
                    let evs: Vec<InputEvent> = (0..n).map(|_| s.0.next_event()).collect();
                    let ids: Vec<String> = evs.iter().map(|e| e.event_id().to_owned()).collect();
                    let json: Vec<Value> = evs.iter().map(InputEvent::to_json).collect();
                    (serde_json::to_vec(&json).unwrap(), ids, due)
                };
                if let Some(wait) = due.checked_sub(started.elapsed()) {
                    tokio::time::sleep(wait).await;
                }
                report.lock().unwrap().sent.extend(ids.iter().cloned());
                let first = Instant::now();
                loop {
                    let answer = client
                        .post(&url)
                        .bearer_auth(OPS)
                        .header("content-type", "application/json")
                        .body(body.clone())
                        .send()
                        .await;
                    // The status is the acknowledgement; the body is only read for errors.
                    let outcome = match answer {
                        Ok(r) if r.status().as_u16() == 202 => Ok((202, String::new())),
                        Ok(r) => {
                            let status = r.status().as_u16();
                            Ok((status, r.text().await.unwrap_or_default()))
                        }
                        Err(e) => Err(e),
                    };
                    {
                        let mut rep = report.lock().unwrap();
                        rep.requests += 1;
                        match outcome {
                            Ok((202, _)) => {
                                rep.accepted_requests += 1;
                                rep.accepted.extend(ids);
                                break;
                            }
                            Ok((status @ (429 | 500..=599), _)) => {
                                *rep.refused.entry(status).or_default() += 1
                            }
                            Ok((status, text)) => {
                                panic!("POST /v1/events answered {status}: {text}")
                            }
                            Err(_) => rep.dropped += 1,
                        }
                    }
                    assert!(
                        first.elapsed() < Duration::from_secs(90),
                        "a request was not accepted within 90 s of retries"
                    );
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
        }));
    }
    for h in handles {
        h.await.unwrap();
    }
    Arc::try_unwrap(report).unwrap().into_inner().unwrap()
}

// ---------------------------------------------------------------------------------------------
// What reached the topics and the views.

/// The event ids on the input topics: (records, occurrences per event id).
fn input_event_ids(brokers: &str, topics: &Topics) -> (usize, HashMap<String, usize>) {
    let inputs = [
        topics.decisions.as_str(),
        topics.approvals.as_str(),
        topics.registry.as_str(),
    ];
    let records = read_to_end(brokers, &inputs, Duration::from_secs(60)).unwrap();
    let codec = Codec::new();
    let mut ids: HashMap<String, usize> = HashMap::new();
    for (topic, r) in &records {
        let bytes = r.value.as_deref().expect("input records have values");
        let id = if *topic == topics.decisions {
            codec.decode::<DecisionEvent>(bytes).unwrap().event_id
        } else if *topic == topics.approvals {
            codec.decode::<ApprovalEvent>(bytes).unwrap().event_id
        } else {
            codec.decode::<RegistryEvent>(bytes).unwrap().event_id
        };
        *ids.entry(id).or_default() += 1;
    }
    (records.len(), ids)
}

async fn metrics(http: &str) -> String {
    reqwest::get(format!("{http}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

/// The sum of a metric's samples whose labels contain `labels` (e.g. `outcome="applied"`).
fn metric_sum(text: &str, name: &str, labels: &str) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(name) && l[name.len()..].starts_with(['{', ' ']))
        .filter(|l| l.contains(labels))
        .filter_map(|l| l.rsplit_once(' ').and_then(|(_, v)| v.parse::<f64>().ok()))
        .sum()
}

/// Events the projector applied since it started (not counting duplicates or skipped records).
async fn projector_applied(http: &str) -> u64 {
    metric_sum(
        &metrics(http).await,
        "aispm_projector_events_total",
        "outcome=\"applied\"",
    ) as u64
}

fn digest(dir: &Path) -> (usize, u64) {
    Store::open(dir, 8 << 20, false)
        .unwrap()
        .view_digest()
        .unwrap()
}

/// A clean replay of the input topics into a fresh store: (events applied, view digest).
async fn clean_replay(brokers: &str, prefix: &str, dir: &Path) -> (u64, (usize, u64)) {
    let mut cfg = Config::local(brokers, dir.to_owned());
    cfg.common.topic_prefix = prefix.to_owned();
    cfg.group = format!("clean-{}", random_prefix());
    let report = catch_up(cfg, CancellationToken::new()).await.unwrap();
    (report.totals.applied, digest(dir))
}

/// Compares what the client was told with what reached the topics and the views.
#[derive(Debug)]
struct Reconciled {
    /// Acknowledged (202) but not on the topics.
    lost: usize,
    /// On the topics but never sent.
    invented: usize,
    /// On the topics but never acknowledged (the client retries until 202, so none expected).
    unacknowledged: usize,
    records: usize,
    distinct: usize,
}

fn reconcile(feed: &FeedReport, on_topics: &(usize, HashMap<String, usize>)) -> Reconciled {
    let ids = &on_topics.1;
    Reconciled {
        lost: feed
            .accepted
            .iter()
            .filter(|i| !ids.contains_key(*i))
            .count(),
        invented: ids.keys().filter(|i| !feed.sent.contains(*i)).count(),
        unacknowledged: ids.keys().filter(|i| !feed.accepted.contains(*i)).count(),
        records: on_topics.0,
        distinct: ids.len(),
    }
}

// ---------------------------------------------------------------------------------------------
// 1. kill -9 ingest under HTTP load.

#[tokio::test(flavor = "multi_thread")]
async fn kill_9_ingest_under_http_load_then_every_accepted_event_is_applied_once() {
    let broker = Broker::start().unwrap();
    let brokers = broker.bootstrap();
    let prefix = random_prefix();
    let topics = create_contract_topics(&brokers, &prefix, 3).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let tokens = write_tokens(dir.path());
    let state = dir.path().join("projector");
    let group = format!("proj-{}", random_prefix());
    let mut projector = Service::start(
        "aispm-projector",
        &addr(),
        &projector_args(&brokers, &prefix, &state, &group),
        dir.path(),
    )
    .unwrap();
    let mut ingest = Service::start(
        "aispm-ingest",
        &addr(),
        &strings(&[
            "--brokers",
            &brokers,
            "--tokens-file",
            &tokens,
            "--topic-prefix",
            &prefix,
            "--partitions",
            "3",
        ]),
        dir.path(),
    )
    .unwrap();
    projector.wait_ready(Duration::from_secs(60)).await.unwrap();
    ingest.wait_ready(Duration::from_secs(60)).await.unwrap();

    let events = env_or("AISPM_FAULT_EVENTS", 30_000);
    let no_hold = CancellationToken::new();
    no_hold.cancel();
    let feed = tokio::spawn(http_feed(
        format!("{}/v1/events", ingest.http),
        LoadGen::keyed(31, 30, 3000),
        events,
        no_hold,
        100,
        1500,
        4,
    ));
    let mut kills = 0;
    while !feed.is_finished() {
        let wait = rand::thread_rng().gen_range(300..1500);
        tokio::time::sleep(Duration::from_millis(wait)).await;
        if feed.is_finished() {
            break;
        }
        ingest.kill9();
        kills += 1;
        ingest.restart().unwrap();
        ingest.wait_ready(Duration::from_secs(60)).await.unwrap();
    }
    let feed = match feed.await {
        Ok(f) => f,
        Err(e) => panic!(
            "the HTTP client failed: {e}\ningest:\n{}\nprojector:\n{}",
            ingest.log_tail(),
            projector.log_tail()
        ),
    };

    let inputs = topics.inputs();
    if let Err(e) = wait_caught_up(&brokers, &group, &inputs, Duration::from_secs(180)) {
        panic!("{e}\n{}", projector.log_tail());
    }
    let applied = projector_applied(&projector.http).await;
    assert!(projector.terminate(Duration::from_secs(30)).unwrap());
    let on_topics = input_event_ids(&brokers, &topics);
    let r = reconcile(&feed, &on_topics);
    let views = digest(&state);
    let (clean_applied, clean) = clean_replay(&brokers, &prefix, &dir.path().join("clean")).await;
    let mismatches = r.lost
        + r.invented
        + r.unacknowledged
        + usize::from(applied as usize != r.distinct)
        + usize::from(clean_applied as usize != r.distinct)
        + usize::from(views != clean);
    println!(
        "ingest kill -9: events={} distinct_sent={} requests={} accepted_requests={} accepted_events={} refused={:?} dropped={} kills={kills} \
         records={} duplicate_records={} distinct_on_topics={} applied={applied} clean_applied={clean_applied} \
         lost={} invented={} unacknowledged={} rows={} digest={:016x} clean_digest={:016x} mismatches={mismatches}",
        events,
        feed.sent.len(),
        feed.requests,
        feed.accepted_requests,
        feed.accepted.len(),
        feed.refused,
        feed.dropped,
        r.records,
        r.records - r.distinct,
        r.distinct,
        r.lost,
        r.invented,
        r.unacknowledged,
        views.0,
        views.1,
        clean.1,
    );
    assert!(kills >= 10, "killed ingest {kills} times");
    assert_eq!(r.lost, 0, "acknowledged events missing from the topics");
    assert_eq!(r.invented, 0, "events on the topics that were never sent");
    assert_eq!(
        r.unacknowledged, 0,
        "every event on the topics was eventually acknowledged"
    );
    assert_eq!(
        applied as usize, r.distinct,
        "each event applied once, retried duplicates ignored"
    );
    assert_eq!(clean_applied as usize, r.distinct);
    assert_eq!(views, clean, "views equal a clean replay");
}

// ---------------------------------------------------------------------------------------------
// 2. kill -9 the reporter while it generates and delivers packets.

const REPORT_TYPES: [&str; 10] = [
    "cso",
    "ciso",
    "board_kpi",
    "soc2_evidence",
    "incident_closure",
    "trial_handoff",
    "pilot_launch",
    "production_readiness",
    "blockers_digest",
    "coverage_findings",
];

/// A report's id and attempt from a mail's `Message-ID` (`<{report id}.{attempt}@{domain}>`).
fn parse_message_id(m: &str) -> Option<(String, i32)> {
    let inner = m.trim().trim_start_matches('<').trim_end_matches('>');
    let (local, _) = inner.rsplit_once('@')?;
    let (id, n) = local.rsplit_once('.')?;
    Some((id.to_owned(), n.parse().ok()?))
}

async fn get_json(client: &reqwest::Client, url: &str, token: &str) -> (u16, Value) {
    match client.get(url).bearer_auth(token).send().await {
        Ok(r) => {
            let s = r.status().as_u16();
            (s, r.json().await.unwrap_or(Value::Null))
        }
        Err(_) => (0, Value::Null),
    }
}

/// Every report of the reporter's listing at `base`, following its pages (`[]` while it does
/// not answer).
async fn all_reports(client: &reqwest::Client, base: &str, token: &str) -> Vec<Value> {
    let mut all = vec![];
    let mut url = format!("{base}?limit=200");
    loop {
        let (status, page) = get_json(client, &url, token).await;
        if status != 200 {
            return vec![];
        }
        all.extend(page["reports"].as_array().cloned().unwrap_or_default());
        match page["next_cursor"].as_str() {
            Some(next) => url = format!("{base}?limit=200&before={next}"),
            None => return all,
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn kill_9_reporter_while_it_delivers_then_no_packet_is_lost_or_delivered_twice() {
    let work = tempfile::tempdir().unwrap();
    // Packets by the hundred: the reporter's per-tenant limits (tests/hostile.rs) lifted.
    let mut p = Pipeline::start_with(work.path(), UNLIMITED_REPORTS)
        .await
        .unwrap();
    p.emit("open").unwrap();
    p.emit("remediate").unwrap();
    // The reporter knows the tenant and its approved recipients once a report goes out.
    let first = p.report("cso").await.unwrap();
    assert_eq!(first["delivery"]["status"], "delivered", "{first:#}");

    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(60))
        .build()
        .unwrap();
    let acked: Arc<Mutex<BTreeMap<String, u16>>> = Arc::default();
    acked.lock().unwrap().insert(
        first["id"].as_str().unwrap().to_owned(),
        201, // delivered before the kills
    );
    let stats: Arc<Mutex<BTreeMap<String, u64>>> = Arc::default();
    let stop = CancellationToken::new();
    let url = format!("{}/v1/tenants/{TENANT}/reports", p.reporter.http);
    let mut posters = Vec::new();
    for w in 0..2 {
        let (client, url, acked, stats, stop) = (
            client.clone(),
            url.clone(),
            Arc::clone(&acked),
            Arc::clone(&stats),
            stop.clone(),
        );
        posters.push(tokio::spawn(async move {
            let mut i = w;
            while !stop.is_cancelled() {
                let ty = REPORT_TYPES[i % REPORT_TYPES.len()];
                i += 1;
                let answer = client
                    .post(&url)
                    .bearer_auth(TENANT_TOKEN)
                    .json(&json!({"type": ty}))
                    .send()
                    .await;
                let key = match answer {
                    Ok(r) => {
                        let status = r.status().as_u16();
                        let body: Value = r.json().await.unwrap_or(Value::Null);
                        match status {
                            201 | 202 => {
                                let id = body["id"].as_str().expect("an id").to_owned();
                                acked.lock().unwrap().insert(id, status);
                            }
                            503 => {}
                            other => panic!("POST reports answered {other}: {body}"),
                        }
                        format!("status_{status}")
                    }
                    Err(_) => "dropped".to_owned(),
                };
                *stats.lock().unwrap().entry(key.clone()).or_default() += 1;
                if key != "status_201" && key != "status_202" {
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
        }));
    }
    let seconds = env_or("AISPM_FAULT_SECONDS", 30) as u64;
    let until = Instant::now() + Duration::from_secs(seconds);
    let mut kills = 0;
    while Instant::now() < until {
        let wait = rand::thread_rng().gen_range(400..1600);
        tokio::time::sleep(Duration::from_millis(wait)).await;
        p.reporter.kill9();
        kills += 1;
        p.reporter.restart().unwrap();
        p.reporter
            .wait_ready(Duration::from_secs(60))
            .await
            .unwrap();
    }
    stop.cancel();
    for h in posters {
        h.await.unwrap();
    }
    // One more kill at rest, then let the reporter finish what is pending.
    p.reporter.kill9();
    kills += 1;
    p.reporter.restart().unwrap();
    p.reporter
        .wait_ready(Duration::from_secs(60))
        .await
        .unwrap();

    let acked = acked.lock().unwrap().clone();
    let base = format!("{}/v1/tenants/{TENANT}/reports", p.reporter.http);
    // Settled: every record delivered (or given up) and every attempt's event acknowledged.
    let deadline = Instant::now() + Duration::from_secs(90);
    let records: Vec<Value> = loop {
        let mut records = Vec::new();
        for r in all_reports(&client, &base, TENANT_TOKEN).await {
            let id = r["id"].as_str().unwrap();
            let (_, full) = get_json(&client, &format!("{base}/{id}"), TENANT_TOKEN).await;
            records.push(full);
        }
        let settled = !records.is_empty()
            && records.iter().all(|r| {
                r["delivery"]["status"] != "retrying"
                    && r["delivery"]["attempts"]
                        .as_array()
                        .is_some_and(|a| a.iter().all(|a| a["published"] == true))
            });
        if settled {
            break records;
        }
        assert!(
            Instant::now() < deadline,
            "deliveries did not settle:\n{}",
            p.reporter.log_tail()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    let by_id: BTreeMap<String, &Value> = records
        .iter()
        .map(|r| (r["id"].as_str().unwrap().to_owned(), r))
        .collect();

    let mut violations: Vec<String> = Vec::new();
    // 1. Every acknowledged report exists and was delivered, in exactly one delivered attempt.
    let mut delivered_attempt: BTreeMap<String, i64> = BTreeMap::new();
    for (id, r) in &by_id {
        let attempts = r["delivery"]["attempts"].as_array().unwrap();
        let delivered: Vec<i64> = attempts
            .iter()
            .filter(|a| a["outcome"] == "delivered")
            .map(|a| a["attempt"].as_i64().unwrap())
            .collect();
        if r["delivery"]["status"] != "delivered" || delivered.len() != 1 {
            violations.push(format!(
                "{id}: status {} with delivered attempts {delivered:?}",
                r["delivery"]["status"]
            ));
        }
        if let Some(n) = delivered.first() {
            delivered_attempt.insert(id.clone(), *n);
        }
    }
    let lost: Vec<&String> = acked.keys().filter(|id| !by_id.contains_key(*id)).collect();
    for id in &lost {
        violations.push(format!("{id}: acknowledged but no record"));
    }

    // 2. Mail: each report reached the mailbox under its delivered attempt's Message-ID, and
    // under no other attempt's.
    let mails = p.smtp.messages();
    let mut per_message: BTreeMap<String, usize> = BTreeMap::new();
    for m in &mails {
        *per_message
            .entry(m["message_id"].as_str().unwrap_or_default().to_owned())
            .or_default() += 1;
    }
    let mut resent_same_message = 0;
    for (mid, count) in &per_message {
        let Some((id, n)) = parse_message_id(mid) else {
            violations.push(format!("a mail with Message-ID {mid:?}"));
            continue;
        };
        match delivered_attempt.get(&id) {
            Some(d) if *d == i64::from(n) => resent_same_message += count - 1,
            Some(d) => violations.push(format!(
                "{id}: mailed as attempt {n}, recorded as delivered by attempt {d}; attempts: {}",
                by_id[&id]["delivery"]["attempts"]
            )),
            None => violations.push(format!("{id}: mailed but no delivered record")),
        }
    }
    for (id, n) in &delivered_attempt {
        let mid_prefix = format!("<{id}.{n}@");
        if !per_message.keys().any(|m| m.starts_with(&mid_prefix)) {
            violations.push(format!("{id}: recorded as delivered but no mail"));
        }
    }

    // 3. Delivery events: one event id per recorded attempt (republished copies allowed), none
    // for attempts that are not recorded.
    let topics = Topics::with_prefix("aispm.");
    let events = read_to_end(
        &p.broker.bootstrap(),
        &[&topics.report_deliveries],
        Duration::from_secs(30),
    )
    .unwrap();
    let codec = Codec::new();
    let mut per_event: BTreeMap<String, usize> = BTreeMap::new();
    for (_, rec) in &events {
        let e: ReportDeliveryEvent = codec.decode(rec.value.as_deref().unwrap()).unwrap();
        *per_event.entry(e.event_id).or_default() += 1;
    }
    let mut recorded_events = BTreeSet::new();
    for r in &records {
        for a in r["delivery"]["attempts"].as_array().unwrap() {
            recorded_events.insert(a["event_id"].as_str().unwrap().to_owned());
        }
    }
    for e in &recorded_events {
        if !per_event.contains_key(e) {
            violations.push(format!("{e}: recorded but never published"));
        }
    }
    for e in per_event.keys() {
        if !recorded_events.contains(e) {
            violations.push(format!("{e}: published but not recorded"));
        }
    }
    let republished: usize = per_event.values().map(|c| c - 1).sum();

    // 4. The projector's report_deliveries view: one row per report, delivered by the recorded
    // attempt, with the recorded packet.
    let deadline = Instant::now() + Duration::from_secs(60);
    let rows = loop {
        let (_, v) = get_json(
            &client,
            &format!("{}/v1/tenants/{TENANT}/report-deliveries", p.projector.http),
            TENANT_TOKEN,
        )
        .await;
        let rows: BTreeMap<String, Value> = v["report_deliveries"]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .into_iter()
            .map(|r| (r["report_id"].as_str().unwrap().to_owned(), r))
            .collect();
        let done = rows.len() == by_id.len()
            && rows.iter().all(|(id, r)| {
                delivered_attempt.get(id) == r["attempt"].as_i64().as_ref()
                    && r["outcome"] == "delivered"
            });
        if done || Instant::now() > deadline {
            break rows;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    for (id, r) in &by_id {
        match rows.get(id) {
            None => violations.push(format!("{id}: no report_deliveries row")),
            Some(row) => {
                if row["outcome"] != "delivered"
                    || row["packet_sha256"] != r["packet"]["sha256"]
                    || delivered_attempt.get(id) != row["attempt"].as_i64().as_ref()
                {
                    violations.push(format!("{id}: view row {row} disagrees with the record"));
                }
            }
        }
    }
    if rows.len() != by_id.len() {
        violations.push(format!(
            "{} view rows for {} records",
            rows.len(),
            by_id.len()
        ));
    }

    // 5. Every recorded packet verifies; packets without a record are from requests that never
    // got an answer.
    let verify = binary("aispm-reporter").unwrap();
    for (id, r) in &by_id {
        let out = std::process::Command::new(&verify)
            .arg("verify")
            .arg(r["packet"]["zip"].as_str().unwrap())
            .args(["--sha256", r["packet"]["sha256"].as_str().unwrap()])
            .arg("--public-key")
            .arg(p.public_key_file())
            .output()
            .unwrap();
        if !out.status.success() {
            violations.push(format!(
                "{id}: packet does not verify: {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ));
        }
    }
    let packets_dir = p.work.join("packets").join(TENANT);
    let mut orphan_packets = 0;
    let mut partial_packets = 0;
    for entry in std::fs::read_dir(&packets_dir).unwrap() {
        let name = entry.unwrap().file_name().to_string_lossy().into_owned();
        if name.starts_with('.') {
            partial_packets += 1;
        } else if let Some(id) = name.strip_suffix(".zip")
            && !by_id.contains_key(id)
        {
            orphan_packets += 1;
        }
    }
    let stats = stats.lock().unwrap().clone();
    println!(
        "reporter kill -9: kills={kills} posts={stats:?} acknowledged={} records={} delivered={} mails={} \
         resent_same_message_id={resent_same_message} delivery_events={} republished_events={republished} view_rows={} \
         orphan_packets={orphan_packets} partial_packets={partial_packets} lost={} mismatches={}",
        acked.len(),
        by_id.len(),
        delivered_attempt.len(),
        mails.len(),
        events.len(),
        rows.len(),
        lost.len(),
        violations.len()
    );
    assert!(kills >= 10, "killed the reporter {kills} times");
    assert!(
        acked.len() >= 10,
        "only {} reports acknowledged",
        acked.len()
    );
    assert_eq!(
        partial_packets, 0,
        "half-written packets are removed at start"
    );
    assert!(
        violations.is_empty(),
        "{} violations:\n{}\nreporter:\n{}",
        violations.len(),
        violations.join("\n"),
        p.reporter.log_tail()
    );
}

// ---------------------------------------------------------------------------------------------
// 3. The broker restarted mid-stream.

/// A blocker without its detection time (which records when it was evaluated).
type BlockerState = BTreeMap<String, (String, Option<String>, Vec<String>, String)>;
/// Readiness per `{tenant}/{stage}`: ready, blocker ids.
type ReadinessState = BTreeMap<String, (bool, Vec<String>)>;

/// The open blockers and the verdicts on the compacted topics (last record of each key).
fn gatekeeper_state(brokers: &str, topics: &Topics) -> (BlockerState, ReadinessState) {
    let codec = Codec::new();
    let blockers = latest_by_key(brokers, &[&topics.blockers], Duration::from_secs(60))
        .unwrap()
        .into_iter()
        .filter_map(|(k, v)| {
            let b: Blocker = codec.decode(&v?).unwrap();
            Some((
                k,
                (b.kind.as_str().to_owned(), b.subject, b.evidence, b.meaning),
            ))
        })
        .collect();
    let readiness = latest_by_key(brokers, &[&topics.readiness], Duration::from_secs(60))
        .unwrap()
        .into_iter()
        .filter_map(|(k, v)| {
            let r: Readiness = codec.decode(&v?).unwrap();
            let mut ids = r.blocker_ids;
            ids.sort();
            Some((k, (r.ready, ids)))
        })
        .collect();
    (blockers, readiness)
}

/// Waits until the gatekeeper state on the topics is the same twice in a row, 2 s apart.
async fn settled_gatekeeper_state(
    brokers: &str,
    topics: &Topics,
) -> (BlockerState, ReadinessState) {
    let mut last = gatekeeper_state(brokers, topics);
    for _ in 0..30 {
        tokio::time::sleep(Duration::from_secs(2)).await;
        let now = gatekeeper_state(brokers, topics);
        if now == last {
            return now;
        }
        last = now;
    }
    panic!("the blockers and readiness topics never settled");
}

/// Copies every record of the input topics under `from` to the same partitions under `to`.
async fn copy_inputs(brokers: &str, from: &Topics, to: &Topics) -> usize {
    let producer: FutureProducer = aispm_tests::kafka::producer(brokers).unwrap();
    let pairs = [
        (&from.decisions, &to.decisions),
        (&from.approvals, &to.approvals),
        (&from.registry, &to.registry),
    ];
    let mut n = 0;
    for (src, dst) in pairs {
        let records = read_to_end(brokers, &[src], Duration::from_secs(60)).unwrap();
        let sends: Vec<_> = records
            .iter()
            .map(|(_, r)| {
                // A faithful copy: key, headers (the principal) and timestamp (the clock the
                // projector judges `occurred_at` by) as well as the payload.
                let mut headers = OwnedHeaders::new();
                for (k, v) in &r.headers {
                    headers = headers.insert(Header {
                        key: k,
                        value: Some(v),
                    });
                }
                let mut rec = FutureRecord::to(dst)
                    .partition(r.partition)
                    .payload(r.value.as_deref().unwrap())
                    .headers(headers);
                if let Some(k) = r.key.as_deref() {
                    rec = rec.key(k);
                }
                if let Some(t) = r.timestamp {
                    rec = rec.timestamp(t);
                }
                producer.send_result(rec).map_err(|(e, _)| e).unwrap()
            })
            .collect();
        for s in sends {
            s.await.unwrap().map_err(|(e, _)| e).unwrap();
        }
        n += records.len();
    }
    n
}

fn gatekeeper_args(brokers: &str, prefix: &str, tokens: &str, group: &str) -> Vec<String> {
    strings(&[
        "--brokers",
        brokers,
        "--topic-prefix",
        prefix,
        "--tokens-file",
        tokens,
        "--group-id",
        group,
        "--evaluation-interval",
        "2s",
    ])
}

#[tokio::test(flavor = "multi_thread")]
async fn broker_restarts_mid_stream_then_every_acknowledged_event_is_reflected_once() {
    // A JVM broker takes seconds to start: more events keep the load on through four outages.
    let events = env_or("AISPM_FAULT_EVENTS", 20_000) * 2;
    pipeline_survives(Broker::start().unwrap(), BrokerFault::Restarts, events).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_cluster_node_killed_under_load_moves_leadership_and_loses_nothing() {
    // Two kills, each until leadership moved and the node caught up again, outlast 20,000
    // events at 800/s.
    let events = env_or("AISPM_FAULT_EVENTS", 20_000) * 2;
    pipeline_survives(Broker::cluster().unwrap(), BrokerFault::KillNodes, events).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_rolling_restart_of_the_cluster_under_load_loses_nothing() {
    // A roll takes longer than two kills: more events keep the load on through all of it.
    let events = env_or("AISPM_FAULT_EVENTS", 20_000) * 2;
    pipeline_survives(
        Broker::cluster().unwrap(),
        BrokerFault::RollingRestart,
        events,
    )
    .await;
}

/// What happens to the brokers while the pipeline is under load.
#[derive(Debug, Clone, Copy)]
enum BrokerFault {
    /// Every node killed (SIGKILL) and started again, four times.
    Restarts,
    /// One node at a time killed (SIGKILL) and started again once the others lead its
    /// partitions, twice.
    KillNodes,
    /// Each node in turn shut down (SIGTERM, controlled shutdown) and started again, waiting
    /// until every partition is fully replicated before the next, as operators roll a cluster.
    RollingRestart,
}

/// Applies `fault` while `feed` runs; a summary of what it did.
async fn inject(
    fault: BrokerFault,
    broker: &mut Broker,
    topics: &Topics,
    feed: &tokio::task::JoinHandle<FeedReport>,
) -> String {
    let mut rng = rand::rngs::StdRng::from_entropy();
    match fault {
        BrokerFault::Restarts => {
            // Down for a blink to longer than the consumers' session timeout (10 s: every
            // group member's session expires and the groups form again).
            let downtimes = [
                Duration::from_millis(200),
                Duration::from_secs(12),
                Duration::from_secs(3),
                Duration::from_millis(500),
            ];
            let mut restarts = 0;
            let mut down_total = Duration::ZERO;
            let mut starts = Vec::new();
            for down in downtimes {
                tokio::time::sleep(Duration::from_millis(rng.gen_range(1000..2500))).await;
                if feed.is_finished() {
                    break;
                }
                broker.stop();
                tokio::time::sleep(down).await;
                let starting = Instant::now();
                if let Err(e) = tokio::task::block_in_place(|| broker.start_again()) {
                    panic!("the broker did not come back: {e}\n{}", broker.log_tail());
                }
                starts.push(starting.elapsed());
                restarts += 1;
                down_total += down;
            }
            assert!(restarts >= 3, "restarted the broker {restarts} times");
            format!("restarts={restarts} downtime={down_total:?} start_times={starts:?}")
        }
        BrokerFault::KillNodes => {
            let names: Vec<&str> = topics
                .inputs()
                .into_iter()
                .chain([topics.views.as_str()])
                .collect();
            let mut kills = Vec::new();
            for _ in 0..2 {
                tokio::time::sleep(Duration::from_millis(rng.gen_range(2000..4000))).await;
                if feed.is_finished() {
                    break;
                }
                // The node that leads the most partitions (a killed node's partitions stay led
                // by the others after it returns, until Kafka rebalances leadership minutes
                // later): the kill that moves the most.
                let leaders = tokio::task::block_in_place(|| broker.leaders(&names)).unwrap();
                let led_by = |i: usize| {
                    leaders
                        .values()
                        .filter(|l| **l == broker.node_id(i))
                        .count()
                };
                let i = (0..broker.size())
                    .max_by_key(|i| (led_by(*i), rng.gen_range(0..1000)))
                    .unwrap();
                let (id, led) = (broker.node_id(i), led_by(i));
                broker.kill_node(i);
                let killed = Instant::now();
                // Leadership moves: no partition keeps the dead node as its leader.
                let moved = loop {
                    let leaders =
                        tokio::task::block_in_place(|| broker.leaders(&names)).unwrap_or_default();
                    if !leaders.is_empty() && leaders.values().all(|l| *l != id && *l >= 0) {
                        break killed.elapsed();
                    }
                    assert!(
                        killed.elapsed() < Duration::from_secs(60),
                        "leadership never moved off node {id}: {leaders:?}"
                    );
                    tokio::time::sleep(Duration::from_millis(100)).await;
                };
                // The cluster serves on two nodes for a while, then the node comes back and
                // catches up before the next fault.
                tokio::time::sleep(Duration::from_secs(6)).await;
                tokio::task::block_in_place(|| {
                    broker.start_node(i)?;
                    broker.wait_fully_replicated(Duration::from_secs(120))
                })
                .unwrap();
                kills.push(format!("node{id}(led={led},moved_in={moved:?})"));
            }
            assert!(
                kills.len() == 2,
                "the load ended before two nodes were killed: {kills:?}"
            );
            format!("kills={}", kills.join(","))
        }
        BrokerFault::RollingRestart => {
            tokio::time::sleep(Duration::from_secs(2)).await;
            let started = Instant::now();
            let mut under_load = 0;
            for i in 0..broker.size() {
                under_load += usize::from(!feed.is_finished());
                tokio::task::block_in_place(|| {
                    broker.shut_down_node(i, Duration::from_secs(60))?;
                    broker.start_node(i)?;
                    broker.wait_fully_replicated(Duration::from_secs(120))
                })
                .unwrap();
            }
            assert!(
                under_load >= 2,
                "only {under_load} nodes went down under load: raise AISPM_FAULT_EVENTS"
            );
            format!(
                "rolled={} under_load={under_load} in {:?}",
                broker.size(),
                started.elapsed()
            )
        }
    }
}

/// Ingest, projector and gatekeeper on `broker`, a real HTTP client posting `events` events
/// while `fault` strikes the brokers; then every acknowledged event must be applied once and
/// the views, blockers and readiness must equal a clean replay of the whole pipeline.
async fn pipeline_survives(mut broker: Broker, fault: BrokerFault, events: usize) {
    let brokers = broker.bootstrap();
    let prefix = random_prefix();
    let rf = broker.replication_factor();
    let topics = create_replicated_contract_topics(&brokers, &prefix, 3, rf)
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let tokens = write_tokens(dir.path());
    let state = dir.path().join("projector");
    let group = format!("proj-{}", random_prefix());
    let gk_group = format!("gk-{}", random_prefix());
    let mut projector = Service::start(
        "aispm-projector",
        &addr(),
        &[
            projector_args(&brokers, &prefix, &state, &group),
            strings(&["--replication-factor", &rf.to_string()]),
        ]
        .concat(),
        dir.path(),
    )
    .unwrap();
    let mut gatekeeper = Service::start(
        "aispm-gatekeeper",
        &addr(),
        &[
            gatekeeper_args(&brokers, &prefix, &tokens, &gk_group),
            strings(&["--replication-factor", &rf.to_string()]),
        ]
        .concat(),
        dir.path(),
    )
    .unwrap();
    let mut ingest = Service::start(
        "aispm-ingest",
        &addr(),
        &strings(&[
            "--brokers",
            &brokers,
            "--tokens-file",
            &tokens,
            "--topic-prefix",
            &prefix,
            "--replication-factor",
            &rf.to_string(),
        ]),
        dir.path(),
    )
    .unwrap();
    for s in [&mut projector, &mut gatekeeper, &mut ingest] {
        s.wait_ready(Duration::from_secs(60)).await.unwrap();
    }

    // The load goes on until the fault is over (see `http_feed`).
    let hold = CancellationToken::new();
    let feed = tokio::spawn(http_feed(
        format!("{}/v1/events", ingest.http),
        LoadGen::keyed(41, 20, 2000),
        events,
        hold.clone(),
        100,
        800,
        4,
    ));
    let injected = inject(fault, &mut broker, &topics, &feed).await;
    hold.cancel();
    let feed = match feed.await {
        Ok(f) => f,
        Err(e) => panic!(
            "the HTTP client failed: {e}\ningest:\n{}\nprojector:\n{}\ngatekeeper:\n{}\nbroker:\n{}{}",
            ingest.log_tail(),
            projector.log_tail(),
            gatekeeper.log_tail(),
            broker.log_tail(),
            keep_logs(dir.path(), &broker)
        ),
    };

    // Every service came back on its own (none exited, each ready again).
    for (name, s) in [
        ("projector", &mut projector),
        ("gatekeeper", &mut gatekeeper),
        ("ingest", &mut ingest),
    ] {
        if let Some(status) = s.wait_exit(Duration::ZERO).await.unwrap() {
            panic!(
                "{name} exited with {status} after a broker restart:\n{}",
                s.log_tail()
            );
        }
        if let Err(e) = s.wait_ready(Duration::from_secs(60)).await {
            panic!("{name} not ready after the broker restarts: {e}");
        }
    }
    let inputs = topics.inputs();
    // On two cores the projector works off the backlog the faults left while three JVMs
    // re-replicate: minutes, under CI's load. How long it took is in the summary line.
    let catching_up = Instant::now();
    if let Err(e) = wait_caught_up(&brokers, &group, &inputs, Duration::from_secs(360)) {
        let metrics = reqwest::get(format!("{}/metrics", projector.http))
            .await
            .and_then(|r| r.error_for_status());
        let metrics = match metrics {
            Ok(r) => r.text().await.unwrap_or_default(),
            Err(e) => e.to_string(),
        };
        let metrics: Vec<&str> = metrics
            .lines()
            .filter(|l| {
                !l.starts_with('#')
                    && (l.contains("lag") || l.contains("publish") || l.contains("applied"))
            })
            .collect();
        panic!(
            "{e}\nprojector metrics:\n{}\n{}{}",
            metrics.join("\n"),
            projector.log_tail(),
            keep_logs(dir.path(), &broker)
        );
    }
    let caught_up_in = catching_up.elapsed();
    if let Err(e) = wait_caught_up(
        &brokers,
        &gk_group,
        &[&topics.views],
        Duration::from_secs(120),
    ) {
        panic!(
            "{e}\n{}{}",
            gatekeeper.log_tail(),
            keep_logs(dir.path(), &broker)
        );
    }
    let applied = projector_applied(&projector.http).await;
    let gk = settled_gatekeeper_state(&brokers, &topics).await;
    assert!(projector.terminate(Duration::from_secs(30)).unwrap());
    assert!(gatekeeper.terminate(Duration::from_secs(30)).unwrap());
    assert!(ingest.terminate(Duration::from_secs(30)).unwrap());
    let on_topics = input_event_ids(&brokers, &topics);
    let r = reconcile(&feed, &on_topics);
    let views = digest(&state);

    // A clean replay of the whole pipeline: the same input records under a fresh prefix,
    // a fresh projector, a fresh gatekeeper.
    let clean_prefix = random_prefix();
    let clean_topics = create_replicated_contract_topics(&brokers, &clean_prefix, 3, rf)
        .await
        .unwrap();
    let copied = copy_inputs(&brokers, &topics, &clean_topics).await;
    let (clean_applied, clean) =
        clean_replay(&brokers, &clean_prefix, &dir.path().join("clean")).await;
    let clean_gk_group = format!("gk-clean-{}", random_prefix());
    let mut clean_gatekeeper = Service::start(
        "aispm-gatekeeper",
        &addr(),
        &gatekeeper_args(&brokers, &clean_prefix, &tokens, &clean_gk_group),
        dir.path(),
    )
    .unwrap();
    clean_gatekeeper
        .wait_ready(Duration::from_secs(60))
        .await
        .unwrap();
    wait_caught_up(
        &brokers,
        &clean_gk_group,
        &[&clean_topics.views],
        Duration::from_secs(120),
    )
    .unwrap();
    let clean_gk = settled_gatekeeper_state(&brokers, &clean_topics).await;

    let blocker_diff =
        gk.0.keys()
            .chain(clean_gk.0.keys())
            .collect::<BTreeSet<_>>()
            .into_iter()
            .filter(|k| gk.0.get(*k) != clean_gk.0.get(*k))
            .count();
    let readiness_diff =
        gk.1.keys()
            .chain(clean_gk.1.keys())
            .collect::<BTreeSet<_>>()
            .into_iter()
            .filter(|k| gk.1.get(*k) != clean_gk.1.get(*k))
            .count();
    let mismatches = r.lost
        + r.invented
        + r.unacknowledged
        + usize::from(applied as usize != r.distinct)
        + usize::from(clean_applied as usize != r.distinct)
        + usize::from(views != clean)
        + blocker_diff
        + readiness_diff;
    println!(
        "broker fault {fault:?}: events={events} {injected} caught_up_in={caught_up_in:?} requests={} accepted_events={} refused={:?} dropped={} \
         records={} duplicate_records={} distinct_on_topics={} applied={applied} clean_applied={clean_applied} copied={copied} \
         lost={} invented={} unacknowledged={} rows={} digest={:016x} clean_digest={:016x} \
         blockers={} clean_blockers={} readiness={} clean_readiness={} blocker_diff={blocker_diff} readiness_diff={readiness_diff} mismatches={mismatches}",
        feed.requests,
        feed.accepted.len(),
        feed.refused,
        feed.dropped,
        r.records,
        r.records - r.distinct,
        r.distinct,
        r.lost,
        r.invented,
        r.unacknowledged,
        views.0,
        views.1,
        clean.1,
        gk.0.len(),
        clean_gk.0.len(),
        gk.1.len(),
        clean_gk.1.len(),
    );
    assert_eq!(r.lost, 0, "acknowledged events missing from the topics");
    assert_eq!(r.invented, 0);
    assert_eq!(r.unacknowledged, 0);
    assert_eq!(applied as usize, r.distinct, "each event applied once");
    assert_eq!(clean_applied as usize, r.distinct);
    assert_eq!(views, clean, "views equal a clean replay");
    assert!(!gk.1.is_empty(), "the gatekeeper published verdicts");
    assert_eq!(gk.0, clean_gk.0, "blockers equal a clean replay");
    assert_eq!(gk.1, clean_gk.1, "readiness equals a clean replay");
}

// ---------------------------------------------------------------------------------------------
// 4. A full disk.

/// A tmpfs mounted on a directory, unmounted when dropped (also when a test fails).
struct Tmpfs {
    dir: PathBuf,
}

impl Tmpfs {
    /// Mounts a tmpfs of `mib` MiB on `dir`; `None` (and a note) where mounting is not allowed.
    fn mount(dir: &Path, mib: u64) -> Option<Tmpfs> {
        std::fs::create_dir_all(dir).unwrap();
        let out = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={mib}m"), "tmpfs"])
            .arg(dir)
            .output();
        match out {
            Ok(o) if o.status.success() => Some(Tmpfs {
                dir: dir.to_owned(),
            }),
            Ok(o) => {
                println!(
                    "SKIPPED: cannot mount a tmpfs (needs root): {}",
                    String::from_utf8_lossy(&o.stderr).trim()
                );
                None
            }
            Err(e) => {
                println!("SKIPPED: cannot run mount: {e}");
                None
            }
        }
    }

    /// Changes the size limit, keeping the contents.
    fn resize(&self, mib: u64) {
        let out = std::process::Command::new("mount")
            .args(["-o", &format!("remount,size={mib}m")])
            .arg(&self.dir)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "remount: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    fn used_bytes(&self) -> u64 {
        aispm_tests::process::dir_bytes(&self.dir)
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let ok = std::process::Command::new("umount")
            .arg(&self.dir)
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            // Still busy (a process holds a file): detach it now, freed when released.
            let _ = std::process::Command::new("umount")
                .arg("-l")
                .arg(&self.dir)
                .status();
        }
    }
}

/// Produces `n` generated events straight to the input topics as fast as the broker takes them.
async fn burst(brokers: &str, topics: &Topics, generator: &mut LoadGen, n: usize) {
    let producer: FutureProducer = aispm_tests::kafka::producer(brokers).unwrap();
    for chunk in 0..n.div_ceil(5000) {
        let records: Vec<_> = (0..5000.min(n - chunk * 5000))
            .map(|_| generator.next_record())
            .collect();
        aispm_tests::kafka::send_all(&producer, topics, &records).await;
    }
}

/// The offsets a consumer group committed to the broker, per input partition.
fn committed_offsets(brokers: &str, group: &str, topics: &[&str]) -> BTreeMap<(String, i32), i64> {
    use rdkafka::TopicPartitionList;
    use rdkafka::consumer::{BaseConsumer, Consumer};
    let kafka = aispm_runtime::kafka::KafkaConfig::local(brokers);
    let c: BaseConsumer = kafka.consumer_config(group).create().unwrap();
    let mut tpl = TopicPartitionList::new();
    for t in topics {
        for p in 0..3 {
            tpl.add_partition(t, p);
        }
    }
    let committed = c.committed_offsets(tpl, Duration::from_secs(10)).unwrap();
    committed
        .elements()
        .iter()
        .filter_map(|e| {
            e.offset()
                .to_raw()
                .filter(|o| *o >= 0)
                .map(|o| ((e.topic().to_owned(), e.partition()), o))
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_service_stopped_while_the_broker_is_away_exits_within_its_grace_period() {
    let dir = tempfile::tempdir().unwrap();
    let mut broker = Broker::start().unwrap();
    let brokers = broker.bootstrap();
    let prefix = random_prefix();
    let topics = create_contract_topics(&brokers, &prefix, 3).await.unwrap();
    let group = format!("proj-{}", random_prefix());
    let mut args = projector_args(&brokers, &prefix, &dir.path().join("projector"), &group);
    args.extend(strings(&["--shutdown-grace", "3s"]));
    let mut projector = Service::start("aispm-projector", &addr(), &args, dir.path()).unwrap();
    projector.wait_ready(Duration::from_secs(60)).await.unwrap();
    // Busy when the broker goes: events applied, view changes on their way out.
    let mut generator = LoadGen::keyed(52, 5, 100);
    burst(&brokers, &topics, &mut generator, 30_000).await;
    broker.stop();

    let started = Instant::now();
    let exited = projector.terminate(Duration::from_secs(20));
    let took = started.elapsed();
    println!("stopped with the broker away: exited after {took:?} (grace 3s): {exited:?}");
    if let Err(e) = exited {
        panic!("{e}\n{}", projector.log_tail());
    }
    assert!(took < Duration::from_secs(10), "{took:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_full_state_disk_stops_the_projector_loudly_and_a_restart_resumes_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let quota_mib = 32;
    let Some(disk) = Tmpfs::mount(&dir.path().join("disk"), quota_mib) else {
        return;
    };
    let broker = Broker::start().unwrap();
    let brokers = broker.bootstrap();
    let prefix = random_prefix();
    let topics = create_contract_topics(&brokers, &prefix, 3).await.unwrap();
    let state = dir.path().join("disk/projector");
    let group = format!("proj-{}", random_prefix());
    let mut projector = Service::start(
        "aispm-projector",
        &addr(),
        &projector_args(&brokers, &prefix, &state, &group),
        dir.path(),
    )
    .unwrap();
    projector.wait_ready(Duration::from_secs(60)).await.unwrap();

    // Far more than fits: 60k events take about 50 MB of WAL and tables (the outbox no longer
    // repeats the rows, so 64 MiB would hold them).
    let events = env_or("AISPM_FAULT_EVENTS", 60_000);
    let mut generator = LoadGen::keyed(51, 30, 3000);
    burst(&brokers, &topics, &mut generator, events).await;

    // The projector stops on its own, with an error that says why.
    let started = Instant::now();
    let status = projector
        .wait_exit(Duration::from_secs(240))
        .await
        .unwrap()
        .unwrap_or_else(|| {
            panic!(
                "the projector still runs on a full disk ({} bytes used):\n{}",
                disk.used_bytes(),
                projector.log_tail()
            )
        });
    let stopped_after = started.elapsed();
    let log = strip_ansi(&projector.log());
    let error_line = log
        .lines()
        .find(|l| l.contains("No space left on device") && l.contains("ERROR"))
        .map(str::to_owned);
    let used = disk.used_bytes();
    let inputs = topics.inputs();
    let committed_at_failure = committed_offsets(&brokers, &group, &inputs);

    // Restarted while the disk is still full, it fails again, loudly.
    projector.restart().unwrap();
    let again = projector.wait_exit(Duration::from_secs(120)).await.unwrap();
    let ready_while_full = again.is_none();

    // The quota is raised: what was stored is intact, and the broker was told no more.
    disk.resize(1024);
    let stored = Store::open(&state, 8 << 20, false)
        .unwrap()
        .offsets()
        .unwrap();
    let committed = committed_offsets(&brokers, &group, &inputs);
    let over_acknowledged: Vec<String> = committed
        .iter()
        .filter(|(tp, c)| **c > stored.get(*tp).copied().unwrap_or(0))
        .map(|((t, p), c)| {
            format!(
                "{t}/{p}: committed {c}, stored {:?}",
                stored.get(&(t.clone(), *p))
            )
        })
        .collect();
    let stored_sum: i64 = stored.values().sum();
    let committed_sum: i64 = committed.values().sum();

    projector.kill9();
    projector.restart().unwrap();
    projector.wait_ready(Duration::from_secs(60)).await.unwrap();
    if let Err(e) = wait_caught_up(&brokers, &group, &inputs, Duration::from_secs(240)) {
        panic!("{e}\n{}", projector.log_tail());
    }
    assert!(projector.terminate(Duration::from_secs(30)).unwrap());
    let views = digest(&state);
    let (clean_applied, clean) = clean_replay(&brokers, &prefix, &dir.path().join("clean")).await;
    let (records, ids) = input_event_ids(&brokers, &topics);
    let mismatches = over_acknowledged.len()
        + usize::from(views != clean)
        + usize::from(clean_applied as usize != ids.len());
    println!(
        "projector disk full: quota_mib={quota_mib} events={events} records={records} distinct={} used_at_failure={used} \
         stopped_after={stopped_after:?} exit={status} error={:?} restart_while_full={} stored_offsets={stored_sum} \
         committed_offsets={committed_sum} committed_at_failure={} over_acknowledged={} rows={} digest={:016x} clean_digest={:016x} mismatches={mismatches}",
        ids.len(),
        error_line
            .as_deref()
            .and_then(|l| l.split_once("error="))
            .map(|(_, e)| e),
        match &again {
            Some(s) => format!("exited {s}"),
            None => "still running".to_owned(),
        },
        committed_at_failure.values().sum::<i64>(),
        over_acknowledged.len(),
        views.0,
        views.1,
        clean.1,
    );
    assert!(
        !status.success(),
        "the projector exits non-zero on a full disk"
    );
    assert!(
        error_line.is_some(),
        "the log names the cause (No space left on device):\n{}",
        projector.log_tail()
    );
    assert!(
        !ready_while_full,
        "restarted on a full disk, the projector must not carry on as if healthy"
    );
    assert!(
        over_acknowledged.is_empty(),
        "offsets committed past what was stored: {over_acknowledged:?}"
    );
    assert_eq!(clean_applied as usize, ids.len());
    assert_eq!(
        views, clean,
        "views after the full disk equal a clean replay"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_full_packet_disk_fails_report_requests_loudly_and_loses_no_delivered_packet() {
    let work = tempfile::tempdir().unwrap();
    let work_path = std::fs::canonicalize(work.path()).unwrap();
    let Some(disk) = Tmpfs::mount(&work_path.join("packets"), 2) else {
        return;
    };
    let mut p = Pipeline::start_with(&work_path, UNLIMITED_REPORTS)
        .await
        .unwrap();
    p.emit("open").unwrap();
    p.emit("remediate").unwrap();
    let client = reqwest::Client::new();
    let url = format!("{}/v1/tenants/{TENANT}/reports", p.reporter.http);
    // Until the disk is full.
    let mut delivered = Vec::new();
    let mut failure: Option<(u16, Value)> = None;
    let first = p.report("soc2_evidence").await.unwrap();
    delivered.push(first["id"].as_str().unwrap().to_owned());
    for i in 0..200 {
        let r = client
            .post(&url)
            .bearer_auth(TENANT_TOKEN)
            .json(&json!({"type": REPORT_TYPES[i % REPORT_TYPES.len()]}))
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        let body: Value = r.json().await.unwrap_or(Value::Null);
        if status == 201 {
            delivered.push(body["id"].as_str().unwrap().to_owned());
        } else {
            failure = Some((status, body));
            break;
        }
    }
    let (status, body) = failure.expect("the packet disk filled up");
    let message = body["message"].as_str().unwrap_or_default().to_owned();
    let used_when_full = disk.used_bytes();
    // Still alive and answering while full.
    assert!(
        p.reporter
            .wait_exit(Duration::ZERO)
            .await
            .unwrap()
            .is_none(),
        "the reporter died on a full packet disk:\n{}",
        p.reporter.log_tail()
    );
    let listed = all_reports(&client, &url, TENANT_TOKEN).await;
    assert!(
        !listed.is_empty(),
        "the listing answers while the disk is full"
    );
    let listed_ids: BTreeSet<String> = listed
        .iter()
        .map(|r| r["id"].as_str().unwrap().to_owned())
        .collect();

    // More room: reports go out again, and after a kill -9 every delivered packet is there.
    disk.resize(64);
    let after = client
        .post(&url)
        .bearer_auth(TENANT_TOKEN)
        .json(&json!({"type": "cso"}))
        .send()
        .await
        .unwrap();
    let after_status = after.status().as_u16();
    let after_body: Value = after.json().await.unwrap_or(Value::Null);
    if after_status == 201 {
        delivered.push(after_body["id"].as_str().unwrap().to_owned());
    }
    p.reporter.kill9();
    p.reporter.restart().unwrap();
    p.reporter
        .wait_ready(Duration::from_secs(60))
        .await
        .unwrap();
    let verify = binary("aispm-reporter").unwrap();
    let mut bad = Vec::new();
    for id in &delivered {
        let (s, r) = get_json(&client, &format!("{url}/{id}"), TENANT_TOKEN).await;
        let ok = s == 200
            && r["delivery"]["status"] == "delivered"
            && std::process::Command::new(&verify)
                .arg("verify")
                .arg(r["packet"]["zip"].as_str().unwrap_or_default())
                .args([
                    "--sha256",
                    r["packet"]["sha256"].as_str().unwrap_or_default(),
                ])
                .arg("--public-key")
                .arg(p.public_key_file())
                .status()
                .unwrap()
                .success();
        if !ok {
            bad.push(format!("{id}: {s} {r}"));
        }
    }
    let leftovers: Vec<String> = std::fs::read_dir(work_path.join("packets").join(TENANT))
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with('.'))
        .collect();
    println!(
        "reporter disk full: quota_mib=2 delivered_before_full={} used_when_full={used_when_full} failed_status={status} \
         message={message:?} listed_while_full={} after_raise_status={after_status} delivered={} unverified={} leftovers={}",
        delivered.len() - usize::from(after_status == 201),
        listed_ids.len(),
        delivered.len(),
        bad.len(),
        leftovers.len(),
    );
    assert_eq!(
        status, 500,
        "a report that cannot be written is refused: {body}"
    );
    assert!(
        message.contains("No space left on device"),
        "the answer says why: {message}"
    );
    assert_eq!(
        listed_ids,
        delivered[..delivered.len() - usize::from(after_status == 201)]
            .iter()
            .cloned()
            .collect::<BTreeSet<_>>(),
        "no record of the report that could not be written"
    );
    assert_eq!(
        after_status, 201,
        "delivers again once there is room: {after_body}"
    );
    assert!(bad.is_empty(), "delivered packets lost or broken: {bad:?}");
    assert!(
        leftovers.is_empty(),
        "partial packets left behind: {leftovers:?}"
    );
}
