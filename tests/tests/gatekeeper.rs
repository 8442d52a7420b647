//! The gatekeeper end to end: the real `aispm-gatekeeper` binary against a real broker (Apache Kafka).
//! The projector is driven by hand: these tests produce `ViewChange` records onto the views
//! topic exactly as docs/views.md says the projector does (key `{tenant}/{view}/{row key}`,
//! partition by the tenant's murmur2), and read what the gatekeeper publishes.
//!
//! Build the binary first: `cargo build -p aispm-gatekeeper`.

use aispm_runtime::kafka::KafkaConfig;
use aispm_schemas::views::*;
use aispm_schemas::{Blocker, Codec, Environment, Readiness, Risk, Timestamp, Topics, ViewChange};
use aispm_tests::Broker;
use aispm_tests::broker::free_port;
use aispm_tests::kafka::{create_contract_topics, producer, random_prefix};
use aispm_tests::process::Service;
use aispm_tests::rows::*;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Message, Offset, TopicPartitionList};
use serde_json::{Value, json};
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::{Duration, Instant};

const PARTITIONS: i32 = 3;
const H: i64 = 3_600_000;
const ACME_TOKEN: &str = "acme-secret";
const GLOBEX_TOKEN: &str = "globex-secret";
const OPS_TOKEN: &str = "ops-secret";

// ---------------------------------------------------------------------------------------------
// Producing view rows the way the projector does.

fn partition_of(tenant: &str) -> i32 {
    aispm_runtime::kafka::partition_for(tenant.as_bytes(), PARTITIONS)
}

struct Views {
    producer: FutureProducer,
    topic: String,
    n: u64,
}

impl Views {
    fn new(brokers: &str, topics: &Topics) -> Views {
        Views {
            producer: producer(brokers).unwrap(),
            topic: topics.views.clone(),
            n: 0,
        }
    }

    async fn upsert(&mut self, tenant: &str, key: &str, row: ViewRow) {
        self.send(tenant, row.view(), key, Some(row)).await;
    }

    async fn delete(&mut self, tenant: &str, view: ViewName, key: &str) {
        self.send(tenant, view, key, None).await;
    }

    async fn send(&mut self, tenant: &str, view: ViewName, key: &str, row: Option<ViewRow>) {
        self.n += 1;
        let change = ViewChange::new(
            tenant,
            view,
            key,
            row,
            Timestamp::now(),
            format!("cause-{}", self.n),
        );
        let bytes = Codec::new().encode(&change).unwrap();
        self.producer
            .send(
                FutureRecord::to(&self.topic)
                    .key(&change.record_key())
                    .partition(partition_of(tenant))
                    .payload(&bytes),
                Duration::from_secs(30),
            )
            .await
            .map_err(|(e, _)| e)
            .unwrap();
    }
}

/// Every row of a tenant with nothing in the way of production.
async fn seed_ready(v: &mut Views, tenant: &str) {
    for p in ["file", "command", "git", "mcp"] {
        v.upsert(tenant, &format!("action_path/{p}"), action_path(p, 10, 2))
            .await;
    }
    v.upsert(
        tenant,
        "connector_live/jira",
        validation("connector_live", Some("jira"), "pass"),
    )
    .await;
    v.upsert(
        tenant,
        "tenant_isolation/-",
        validation("tenant_isolation", None, "pass"),
    )
    .await;
    // Trial and pilot read their own environments' validations and evidence.
    for env in [Environment::Trial, Environment::Pilot] {
        for (key, row) in [
            (
                format!("connector_live/{env}/jira"),
                validation("connector_live", Some("jira"), "pass"),
            ),
            (
                format!("tenant_isolation/{env}/-"),
                validation("tenant_isolation", None, "pass"),
            ),
            (format!("ev-1-{env}"), evidence("ev-1", Timestamp::now())),
        ] {
            v.upsert(tenant, &key, in_env(row, env)).await;
        }
    }
    v.upsert(tenant, "rep-1", delivery()).await;
    v.upsert(
        tenant,
        "ctl-shell",
        control("ctl-shell", ControlState::Enforced),
    )
    .await;
    v.upsert(tenant, "ev-1", evidence("ev-1", Timestamp::now()))
        .await;
}

// ---------------------------------------------------------------------------------------------
// Reading the gatekeeper's topics.

#[derive(Debug, Clone, PartialEq)]
struct Rec {
    partition: i32,
    offset: i64,
    key: String,
    value: Option<Vec<u8>>,
}

/// Every record of `topic`, read to its end (the partition EOF; no group, nothing committed).
fn snapshot(brokers: &str, topic: &str) -> Vec<Rec> {
    let kafka = KafkaConfig::local(brokers);
    let mut config = kafka.consumer_config("gk-test-snapshot");
    config.set("enable.partition.eof", "true");
    let c: BaseConsumer = config.create().unwrap();
    let mut tpl = TopicPartitionList::new();
    for p in 0..PARTITIONS {
        tpl.add_partition_offset(topic, p, Offset::Beginning)
            .unwrap();
    }
    c.assign(&tpl).unwrap();
    let mut pending: BTreeSet<i32> = (0..PARTITIONS).collect();
    let mut out = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while !pending.is_empty() {
        assert!(Instant::now() < deadline, "{topic} not read to its end");
        match c.poll(Duration::from_millis(100)) {
            Some(Ok(m)) => out.push(Rec {
                partition: m.partition(),
                offset: m.offset(),
                key: String::from_utf8(m.key().unwrap_or_default().to_vec()).unwrap(),
                value: m.payload().map(<[u8]>::to_vec),
            }),
            Some(Err(KafkaError::PartitionEOF(p))) => {
                pending.remove(&p);
            }
            Some(Err(e)) => panic!("reading {topic}: {e}"),
            None => {}
        }
    }
    out.sort_by_key(|r| (r.partition, r.offset));
    out
}

async fn snapshot_async(brokers: &str, topic: &str) -> Vec<Rec> {
    let (b, t) = (brokers.to_owned(), topic.to_owned());
    tokio::task::spawn_blocking(move || snapshot(&b, &t))
        .await
        .unwrap()
}

/// The latest value per key (compaction's view of the topic).
fn latest(records: &[Rec]) -> BTreeMap<String, Option<Vec<u8>>> {
    records
        .iter()
        .map(|r| (r.key.clone(), r.value.clone()))
        .collect()
}

/// Waits until `check` holds for the topic's records.
async fn wait_for(
    brokers: &str,
    topic: &str,
    what: &str,
    timeout: Duration,
    check: impl Fn(&[Rec]) -> bool,
) -> Vec<Rec> {
    let deadline = Instant::now() + timeout;
    loop {
        let recs = snapshot_async(brokers, topic).await;
        if check(&recs) {
            return recs;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
}

fn readiness_of(recs: &[Rec], key: &str) -> Option<Readiness> {
    latest(recs)
        .get(key)
        .cloned()
        .flatten()
        .map(|v| Codec::new().decode::<Readiness>(&v).unwrap())
}

/// Waits until the production verdicts of `tenant`, in the order they were published, pass
/// through each of `seq` (sorted blocker ids) in turn, and returns the verdicts that matched.
/// Unlike [`wait_production`] this sees a verdict that held only for a moment, such as
/// readiness on evidence that is fresh for a few seconds.
async fn wait_production_history(
    brokers: &str,
    topics: &Topics,
    tenant: &str,
    seq: &[&BTreeSet<String>],
) -> Vec<Readiness> {
    let key = format!("{tenant}/production");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let recs = snapshot_async(brokers, &topics.readiness).await;
        let verdicts: Vec<Readiness> = recs
            .iter()
            .filter(|r| r.key == key)
            .filter_map(|r| r.value.as_ref())
            .map(|v| Codec::new().decode::<Readiness>(v).unwrap())
            .collect();
        let mut matched = Vec::new();
        for v in &verdicts {
            let Some(want) = seq.get(matched.len()) else {
                break;
            };
            if v.blocker_ids.iter().eq(want.iter()) && v.ready == want.is_empty() {
                matched.push(v.clone());
            }
        }
        if matched.len() == seq.len() {
            return matched;
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {key} to pass through {seq:?}; its verdicts are {verdicts:?}"
        );
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
}

/// Waits until the production verdict of `tenant` lists exactly `ids` (sorted).
async fn wait_production(brokers: &str, topics: &Topics, tenant: &str, ids: &BTreeSet<String>) {
    let key = format!("{tenant}/production");
    let want: Vec<String> = ids.iter().cloned().collect();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let recs = snapshot_async(brokers, &topics.readiness).await;
        let got = readiness_of(&recs, &key);
        if got
            .as_ref()
            .is_some_and(|r| r.blocker_ids == want && r.ready == want.is_empty())
        {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {key} = {want:?}; it is {got:?}"
        );
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
}

// ---------------------------------------------------------------------------------------------
// Running the gatekeeper.

fn tokens_file(dir: &Path) -> std::path::PathBuf {
    let p = dir.join("tokens.toml");
    std::fs::write(
        &p,
        format!(
            "[[tokens]]\ntoken = \"{ACME_TOKEN}\"\ntenants = [\"acme\"]\nscopes = [\"read\", \"emit\", \"approve\", \"register\", \"validate\", \"admin\", \"reports\"]\n\n\
             [[tokens]]\ntoken = \"{GLOBEX_TOKEN}\"\ntenants = [\"globex\"]\nscopes = [\"read\", \"emit\", \"approve\", \"register\", \"validate\", \"admin\", \"reports\"]\n\n\
             [[tokens]]\ntoken = \"{OPS_TOKEN}\"\ntenants = [\"*\"]\nscopes = [\"read\", \"emit\", \"approve\", \"register\", \"validate\", \"admin\", \"reports\"]\nname = \"ops\"\n"
        ),
    )
    .unwrap();
    p
}

async fn start_gatekeeper(broker: &Broker, prefix: &str, dir: &Path, extra: &[&str]) -> Service {
    let addr = format!("127.0.0.1:{}", free_port());
    let mut args: Vec<String> = [
        "--brokers",
        &broker.bootstrap(),
        "--topic-prefix",
        prefix,
        "--partitions",
        &PARTITIONS.to_string(),
        "--group-id",
        &format!("gk-{prefix}"),
        "--tokens-file",
        tokens_file(dir).to_str().unwrap(),
    ]
    .iter()
    .map(|s| (*s).to_owned())
    .collect();
    args.extend(extra.iter().map(|s| (*s).to_owned()));
    let mut gk = Service::start("aispm-gatekeeper", &addr, &args, dir).unwrap();
    gk.wait_ready(Duration::from_secs(60)).await.unwrap();
    gk
}

async fn get(gk: &Service, path: &str, token: Option<&str>) -> (u16, Value) {
    let mut req = reqwest::Client::new().get(format!("{}{path}", gk.http));
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    let r = req.send().await.unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

/// A client nobody here wrote: confluent-kafka reads the topic, fastavro decodes the values with
/// only the published `blocker.avsc`.
const PY_CONSUMER: &str = r#"
import io, json, sys, time
import fastavro
from confluent_kafka import Consumer
from fastavro.schema import fingerprint, load_schema, to_parsing_canonical_form

brokers, topic, avsc, expected = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
schema = load_schema(avsc)
fp = bytes.fromhex(fingerprint(to_parsing_canonical_form(schema), "CRC-64-AVRO"))
c = Consumer({"bootstrap.servers": brokers, "group.id": "py-" + topic,
              "auto.offset.reset": "earliest", "enable.auto.commit": False})
c.subscribe([topic])
out = []
deadline = time.time() + 60
while len(out) < expected and time.time() < deadline:
    m = c.poll(0.5)
    if m is None:
        continue
    if m.error():
        raise SystemExit(str(m.error()))
    v = m.value()
    rec = None
    if v is not None:
        assert v[:2] == b"\xc3\x01", "single-object encoding"
        assert v[2:10] == fp, "writer fingerprint is the published schema's"
        rec = fastavro.schemaless_reader(io.BytesIO(v[10:]), schema, None)
        rec["detected_at"] = round(rec["detected_at"].timestamp() * 1000)
    out.append({"key": m.key().decode(), "partition": m.partition(), "offset": m.offset(), "value": rec})
c.close()
for o in out:
    print(json.dumps(o))
"#;

fn blocker_json(b: &Blocker) -> Value {
    json!({
        "tenant_id": b.tenant_id, "stage": b.stage.as_str(), "blocker_id": b.blocker_id,
        "kind": b.kind.as_str(), "meaning": b.meaning, "resolution": b.resolution,
        "subject": b.subject, "evidence": b.evidence, "detected_at": b.detected_at.0,
    })
}

// ---------------------------------------------------------------------------------------------

/// Production blockers of the scenario, by blocker id, and the stages each applies to.
fn scenario_blockers() -> Vec<(&'static str, &'static [&'static str])> {
    const ALL: &[&str] = &["trial", "pilot", "production"];
    const PILOT: &[&str] = &["pilot", "production"];
    const PROD: &[&str] = &["production"];
    vec![
        ("missing_live_connector_evidence", ALL),
        ("tenant_isolation_not_proven", ALL),
        ("report_delivery_unverified", PROD),
        ("runtime_workflow_synthetic_only/file", PILOT),
        ("runtime_workflow_synthetic_only/command", PILOT),
        ("runtime_workflow_synthetic_only/git", PILOT),
        ("runtime_workflow_synthetic_only/mcp", PILOT),
        // Old evidence: stale for production's 24 h, fresh for pilot's 7 days.
        ("evidence_stale", PROD),
        ("critical_finding_unowned/crit-1", PILOT),
        ("finding_overdue/high-1", PROD),
        ("exception_expired/x-1", PROD),
        ("control_missing/ctl-shell", PILOT),
        ("break_glass_unreviewed/bg-1", PILOT),
    ]
}

#[tokio::test(flavor = "multi_thread")]
async fn production_blockers_resolve_one_by_one_with_a_tombstone_each() {
    let broker = Broker::start().unwrap();
    let brokers = broker.bootstrap();
    let prefix = random_prefix();
    let topics = create_contract_topics(&brokers, &prefix, PARTITIONS)
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut v = Views::new(&brokers, &topics);
    let t = "acme";
    let now = Timestamp::now();

    // A tenant with every production blocker, already in the views.
    for p in ["file", "command", "git", "mcp"] {
        v.upsert(t, &format!("action_path/{p}"), action_path(p, 2, 2))
            .await;
    }
    v.upsert(t, "ev-old", evidence("ev-old", Timestamp(now.0 - 48 * H)))
        .await;
    // The same age in trial and pilot: stale for production only.
    for env in [Environment::Trial, Environment::Pilot] {
        let row = in_env(evidence("ev-old", Timestamp(now.0 - 48 * H)), env);
        v.upsert(t, &format!("ev-old-{env}"), row).await;
    }
    v.upsert(
        t,
        "crit-1",
        ViewRow::Finding(finding(
            "crit-1",
            Risk::Critical,
            None,
            None,
            FindingStatus::Open,
        )),
    )
    .await;
    v.upsert(
        t,
        "high-1",
        ViewRow::Finding(finding(
            "high-1",
            Risk::High,
            Some("bob"),
            Some(Timestamp(now.0 - H)),
            FindingStatus::Open,
        )),
    )
    .await;
    let mut med = finding(
        "med-1",
        Risk::Medium,
        Some("bob"),
        None,
        FindingStatus::Open,
    );
    med.exception_id = Some("x-1".into());
    med.exception_expires_at = Some(Timestamp(now.0 - H));
    v.upsert(t, "med-1", ViewRow::Finding(med.clone())).await;
    let mut x1 = exception(
        "x-1",
        ExceptionKind::Exception,
        Timestamp(now.0 - 10 * 24 * H),
    );
    x1.finding_id = Some("med-1".into());
    x1.expires_at = Some(Timestamp(now.0 - H));
    v.upsert(t, "x-1", ViewRow::Exception(x1)).await;
    v.upsert(t, "ctl-shell", control("ctl-shell", ControlState::Shadowed))
        .await;
    let bg = exception("bg-1", ExceptionKind::BreakGlass, Timestamp(now.0 - 48 * H));
    v.upsert(t, "bg-1", ViewRow::Exception(bg.clone())).await;

    // The gatekeeper starts on these views: it replays them and evaluates the tenant once.
    let mut gk = start_gatekeeper(
        &broker,
        &prefix,
        dir.path(),
        &[
            "--evaluation-interval",
            "1s",
            // No static membership: after the kill -9 below, the broker expires the dead
            // member's session and the restarted instance gets the partitions back.
        ],
    )
    .await;
    let expected = scenario_blockers();
    let mut open: BTreeSet<String> = expected.iter().map(|(id, _)| (*id).to_owned()).collect();
    wait_production(&brokers, &topics, t, &open).await;

    // The API tells the same story, in the brief's shape.
    let (status, body) = get(
        &gk,
        "/v1/tenants/acme/readiness?stage=production",
        Some(ACME_TOKEN),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["ready"], false);
    assert_eq!(body["ready_for_aispm_production"], false);
    assert_eq!(body["blockers"].as_array().unwrap().len(), 13);
    let overdue = body["blockers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|b| b["id"] == "finding_overdue/high-1")
        .unwrap();
    assert_eq!(overdue["kind"], "finding_overdue");
    assert_eq!(overdue["evidence"], json!(["high-1", "d-high-1"]));
    assert!(overdue["meaning"].as_str().unwrap().contains("was due at"));
    assert!(!overdue["resolution"].as_str().unwrap().is_empty());
    let (_, pilot) = get(
        &gk,
        "/v1/tenants/acme/readiness?stage=pilot",
        Some(ACME_TOKEN),
    )
    .await;
    assert_eq!(pilot["ready_for_aispm_pilot"], false);
    assert_eq!(pilot["blockers"].as_array().unwrap().len(), 9);

    // Resolve them one by one; each resolution tombstones its blocker on every stage.
    let steps: Vec<(&str, ViewName, &str, Option<ViewRow>)> = vec![
        (
            "missing_live_connector_evidence",
            ViewName::Validations,
            "connector_live/jira",
            Some(validation("connector_live", Some("jira"), "pass")),
        ),
        (
            "tenant_isolation_not_proven",
            ViewName::Validations,
            "tenant_isolation/-",
            Some(validation("tenant_isolation", None, "pass")),
        ),
        (
            "report_delivery_unverified",
            ViewName::ReportDeliveries,
            "rep-1",
            Some(delivery()),
        ),
        (
            "runtime_workflow_synthetic_only/file",
            ViewName::Coverage,
            "action_path/file",
            Some(action_path("file", 3, 2)),
        ),
        (
            "runtime_workflow_synthetic_only/command",
            ViewName::Coverage,
            "action_path/command",
            Some(action_path("command", 3, 2)),
        ),
        (
            "runtime_workflow_synthetic_only/git",
            ViewName::Coverage,
            "action_path/git",
            Some(action_path("git", 3, 2)),
        ),
        (
            "runtime_workflow_synthetic_only/mcp",
            ViewName::Coverage,
            "action_path/mcp",
            Some(action_path("mcp", 3, 2)),
        ),
        (
            "evidence_stale",
            ViewName::Evidence,
            "ev-new",
            Some(evidence("ev-new", Timestamp::now())),
        ),
        (
            "critical_finding_unowned/crit-1",
            ViewName::Findings,
            "crit-1",
            Some(ViewRow::Finding(finding(
                "crit-1",
                Risk::Critical,
                Some("dana"),
                Some(Timestamp(now.0 + 7 * 24 * H)),
                FindingStatus::Open,
            ))),
        ),
        (
            "finding_overdue/high-1",
            ViewName::Findings,
            "high-1",
            Some(ViewRow::Finding(finding(
                "high-1",
                Risk::High,
                Some("bob"),
                Some(Timestamp(now.0 - H)),
                FindingStatus::Closed,
            ))),
        ),
        ("exception_expired/x-1", ViewName::Findings, "med-1", None),
        (
            "control_missing/ctl-shell",
            ViewName::Controls,
            "ctl-shell",
            Some(control("ctl-shell", ControlState::Enforced)),
        ),
        (
            "break_glass_unreviewed/bg-1",
            ViewName::Exceptions,
            "bg-1",
            Some(ViewRow::Exception(ExceptionRow {
                asserted_by: None,
                reviewed_at: Some(Timestamp::now()),
                reviewed_by: Some("ciso".into()),
                ..bg.clone()
            })),
        ),
    ];
    for (i, (blocker, view, key, row)) in steps.into_iter().enumerate() {
        // Validations and evidence belong to one environment: the other stages get their own.
        if let Some(row @ (ViewRow::Validation(_) | ViewRow::Evidence(_))) = &row {
            for env in [Environment::Trial, Environment::Pilot] {
                let own = in_env(row.clone(), env);
                let own_key = match &own {
                    ViewRow::Evidence(e) => e.evidence_id.clone(),
                    _ => format!("{key}/{env}"),
                };
                v.upsert(t, &own_key, own).await;
            }
        }
        match row {
            Some(row) => v.upsert(t, key, row).await,
            None => v.delete(t, view, key).await,
        }
        open.remove(blocker);
        let stages = expected.iter().find(|(id, _)| *id == blocker).unwrap().1;
        let keys: Vec<String> = stages
            .iter()
            .map(|s| format!("{t}/{s}/{blocker}"))
            .collect();
        wait_for(
            &brokers,
            &topics.blockers,
            &format!("tombstones for {blocker}"),
            Duration::from_secs(30),
            |recs| {
                let l = latest(recs);
                keys.iter().all(|k| matches!(l.get(k), Some(None)))
            },
        )
        .await;
        wait_production(&brokers, &topics, t, &open).await;

        if i == 6 {
            // Kill -9 mid-way: after the restart the gatekeeper replays the views, reads its own
            // records back, and publishes nothing new, not even after several sweeps.
            let before_b = snapshot_async(&brokers, &topics.blockers).await;
            let before_r = snapshot_async(&brokers, &topics.readiness).await;
            gk.kill9();
            gk.restart().unwrap();
            gk.wait_ready(Duration::from_secs(60)).await.unwrap();
            // The killed member keeps its partitions until its session times out; wait until
            // the new instance owns the tenant again (it replayed the views and judged it).
            let deadline = Instant::now() + Duration::from_secs(60);
            let body = loop {
                let (status, body) = get(
                    &gk,
                    "/v1/tenants/acme/readiness?stage=production",
                    Some(ACME_TOKEN),
                )
                .await;
                if status == 200 {
                    break body;
                }
                assert!(
                    Instant::now() < deadline,
                    "the restarted gatekeeper never took acme over ({status} {body}):\n{}",
                    gk.log_tail()
                );
                tokio::time::sleep(Duration::from_millis(200)).await;
            };
            assert_eq!(body["blockers"].as_array().unwrap().len(), open.len());
            // Three sweeps later (counted on its metrics; acme is its one tenant), still
            // nothing new on either topic.
            let sweeps = r#"aispm_gatekeeper_evaluations_total{trigger="sweep"}"#;
            let from = gk.sample(sweeps).await;
            let deadline = Instant::now() + Duration::from_secs(30);
            while gk.sample(sweeps).await < from + 3.0 {
                assert!(
                    Instant::now() < deadline,
                    "fewer than 3 sweeps in 30 s:\n{}",
                    gk.log_tail()
                );
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            assert_eq!(
                snapshot_async(&brokers, &topics.blockers).await,
                before_b,
                "blockers changed after the restart"
            );
            assert_eq!(
                snapshot_async(&brokers, &topics.readiness).await,
                before_r,
                "readiness changed after the restart"
            );
        }
    }

    // Ready everywhere.
    let recs = snapshot_async(&brokers, &topics.readiness).await;
    for stage in ["trial", "pilot", "production"] {
        let r = readiness_of(&recs, &format!("{t}/{stage}")).unwrap();
        assert!(r.ready && r.blocker_ids.is_empty(), "{stage}: {r:?}");
    }
    let (_, body) = get(&gk, "/v1/tenants/acme/readiness", Some(ACME_TOKEN)).await;
    assert_eq!(body["ready_for_aispm_production"], true);
    assert_eq!(body["blockers"], json!([]));

    // A downstream consumer (rdkafka) sees exactly one record per blocker and stage, then its
    // tombstone, and nothing else.
    let records = snapshot_async(&brokers, &topics.blockers).await;
    let mut per_key: BTreeMap<String, Vec<Option<Blocker>>> = BTreeMap::new();
    for r in &records {
        assert_eq!(
            r.partition,
            partition_of(t),
            "a tenant's blockers share its partition"
        );
        per_key.entry(r.key.clone()).or_default().push(
            r.value
                .as_ref()
                .map(|v| Codec::new().decode::<Blocker>(v).unwrap()),
        );
    }
    let mut want_keys = BTreeSet::new();
    for (id, stages) in &expected {
        for s in *stages {
            want_keys.insert(format!("{t}/{s}/{id}"));
        }
    }
    assert_eq!(per_key.keys().cloned().collect::<BTreeSet<_>>(), want_keys);
    for (key, seq) in &per_key {
        assert_eq!(seq.len(), 2, "{key}: {seq:?}");
        let b = seq[0]
            .as_ref()
            .unwrap_or_else(|| panic!("{key} starts with a blocker"));
        assert_eq!(b.key(), *key);
        assert!(key.ends_with(&format!("/{}", b.blocker_id)));
        assert!(b.blocker_id.starts_with(b.kind.as_str()));
        assert!(!b.meaning.is_empty() && !b.resolution.is_empty());
        assert!(seq[1].is_none(), "{key} ends with a tombstone");
    }
    assert_eq!(records.len(), 2 * want_keys.len());

    // Python's confluent-kafka + fastavro, from the published .avsc alone, sees the same.
    let avsc = Path::new(env!("CARGO_MANIFEST_DIR")).join("../schemas/avro/blocker.avsc");
    let script = dir.path().join("consume_blockers.py");
    std::fs::write(&script, PY_CONSUMER).unwrap();
    let out = std::process::Command::new(aispm_tests::process::venv_python())
        .arg(&script)
        .args([
            &brokers,
            &topics.blockers,
            avsc.to_str().unwrap(),
            &records.len().to_string(),
        ])
        .output()
        .expect("python runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let py: Vec<Value> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(py.len(), records.len());
    for p in &py {
        let r = records
            .iter()
            .find(|r| i64::from(r.partition) == p["partition"] && r.offset == p["offset"])
            .unwrap();
        assert_eq!(p["key"], r.key.as_str());
        let rust = r.value.as_ref().map_or(Value::Null, |v| {
            blocker_json(&Codec::new().decode::<Blocker>(v).unwrap())
        });
        assert_eq!(p["value"], rust, "{}", r.key);
    }
    gk.terminate(Duration::from_secs(20)).unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_ready_tenant_falls_back_to_unready_when_its_evidence_goes_stale() {
    let broker = Broker::start().unwrap();
    let brokers = broker.bootstrap();
    let prefix = random_prefix();
    let topics = create_contract_topics(&brokers, &prefix, PARTITIONS)
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let gk = start_gatekeeper(
        &broker,
        &prefix,
        dir.path(),
        &[
            "--production-evidence-freshness",
            "8s",
            "--evaluation-interval",
            "1h",
        ],
    )
    .await;
    let mut v = Views::new(&brokers, &topics);
    seed_ready(&mut v, "globex").await;
    seed_ready(&mut v, "acme").await;
    // The evidence is fresh for 8 s (long enough that a loaded machine still publishes the
    // ready verdict first; tests/clock.rs checks the exact instant with a manual clock), so
    // each verdict below may hold only briefly: the test reads the verdicts' history.
    let none = BTreeSet::new();
    let stale: BTreeSet<String> = ["evidence_stale".to_owned()].into();

    // No event arrives; the clock alone makes the evidence stale (the sweep is an hour away).
    let verdicts = wait_production_history(&brokers, &topics, "globex", &[&none, &stale]).await;
    let took = verdicts[1].evaluated_at.0 - verdicts[0].evaluated_at.0;
    assert!((0..15_000).contains(&took), "stale after {took} ms");
    // acme's evidence, recorded a moment later, goes stale too (the listing and the metrics
    // below count both tenants).
    wait_production_history(&brokers, &topics, "acme", &[&none, &stale]).await;
    let recs = snapshot_async(&brokers, &topics.blockers).await;
    let b = latest(&recs)
        .get("globex/production/evidence_stale")
        .cloned()
        .flatten()
        .map(|v| Codec::new().decode::<Blocker>(&v).unwrap())
        .expect("an evidence_stale blocker");
    assert_eq!(b.evidence, ["ev-1"]);
    assert!(
        b.meaning.contains("production freshness window of 8s"),
        "{}",
        b.meaning
    );
    // Pilot and trial windows are days long: still ready.
    let r = snapshot_async(&brokers, &topics.readiness).await;
    assert!(readiness_of(&r, "globex/pilot").unwrap().ready);

    // Tenant-scoped tokens, operator listing.
    let (status, body) = get(
        &gk,
        "/v1/tenants/globex/readiness?stage=production",
        Some(GLOBEX_TOKEN),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(body["ready_for_aispm_production"], false);
    assert_eq!(body["blockers"][0]["kind"], "evidence_stale");
    assert_eq!(
        get(&gk, "/v1/tenants/globex/readiness", Some(ACME_TOKEN))
            .await
            .0,
        403
    );
    assert_eq!(get(&gk, "/v1/tenants/globex/readiness", None).await.0, 401);
    assert_eq!(
        get(
            &gk,
            "/v1/tenants/globex/readiness?stage=beta",
            Some(GLOBEX_TOKEN)
        )
        .await
        .0,
        400
    );
    assert_eq!(get(&gk, "/v1/readiness", Some(GLOBEX_TOKEN)).await.0, 403);
    let (status, all) = get(&gk, "/v1/readiness?stage=production", Some(OPS_TOKEN)).await;
    assert_eq!(status, 200);
    assert_eq!(all["tenants"], 2);
    assert_eq!(
        all["summary"]["production"],
        json!({"ready": 0, "unready": 2})
    );
    let metrics = reqwest::get(format!("{}/metrics", gk.http))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains(
            "aispm_gatekeeper_blockers_open{kind=\"evidence_stale\",stage=\"production\"} 2"
        ),
        "{metrics}"
    );
    assert!(metrics.contains("aispm_gatekeeper_evaluations_total{trigger=\"clock\"}"));
    assert!(
        metrics
            .contains("aispm_gatekeeper_auth_denied_total{reason=\"wrong_tenant\",scope=\"\"} 1")
    );

    // Fresh evidence resolves it: tombstone, and ready again.
    v.upsert("globex", "ev-2", evidence("ev-2", Timestamp::now()))
        .await;
    // (ev-2 goes stale 8 s later in turn, so the blocker may be back by the time we look.)
    wait_for(
        &brokers,
        &topics.blockers,
        "the evidence_stale tombstone",
        Duration::from_secs(30),
        |recs| {
            recs.iter()
                .any(|r| r.key == "globex/production/evidence_stale" && r.value.is_none())
        },
    )
    .await;
    wait_production_history(&brokers, &topics, "globex", &[&none, &stale, &none]).await;

    // A record that is not a ViewChange is dead-lettered; the gatekeeper carries on.
    v.producer
        .send(
            FutureRecord::to(&topics.views)
                .key("globex/findings/x")
                .partition(partition_of("globex"))
                .payload(&b"not avro"[..]),
            Duration::from_secs(30),
        )
        .await
        .map_err(|(e, _)| e)
        .unwrap();
    let dlq = wait_for(
        &brokers,
        &topics.dlq,
        "a dead letter",
        Duration::from_secs(30),
        |recs| !recs.is_empty(),
    )
    .await;
    assert_eq!(dlq[0].key, "globex/findings/x");
    assert_eq!(dlq[0].value.as_deref(), Some(&b"not avro"[..]));
    v.upsert("globex", "ev-3", evidence("ev-3", Timestamp::now()))
        .await;
    let (status, _) = get(&gk, "/v1/tenants/globex/readiness", Some(GLOBEX_TOKEN)).await;
    assert_eq!(status, 200);
}

/// The same fall from ready to stale, on a clock the test moves: the gatekeeper runs in this
/// process on a `ManualClock`, so the verdict changes when the test moves the clock past the
/// window and carries the clock's time, however long the machine takes (no race with a 4 s
/// window, no sleep for time to pass).
#[tokio::test(flavor = "multi_thread")]
async fn evidence_goes_stale_exactly_when_the_clock_passes_the_window() {
    use aispm_runtime::clock::{Clock, ManualClock};
    let broker = Broker::start().unwrap();
    let brokers = broker.bootstrap();
    let prefix = random_prefix();
    let topics = create_contract_topics(&brokers, &prefix, PARTITIONS)
        .await
        .unwrap();
    // A minute ahead of the wall clock that dates the seeded evidence (`seed_ready`), so that
    // evidence seeded within that minute goes stale between the two moves below.
    let clock = ManualClock::new(Timestamp::now().plus(Duration::from_secs(60)));
    let mut config = aispm_gatekeeper::Config::local(&brokers);
    config.common.topic_prefix = prefix.clone();
    config.common.partitions = PARTITIONS;
    config.group_id = format!("gk-{prefix}");
    config.windows.clock.production_evidence_freshness = Duration::from_secs(3600);
    config.windows.evaluation_interval = Duration::from_secs(3600);
    let stop = tokio_util::sync::CancellationToken::new();
    let gk = tokio::spawn(aispm_gatekeeper::run_with_clock(
        config,
        clock.clone(),
        stop.clone(),
    ));
    let mut v = Views::new(&brokers, &topics);
    seed_ready(&mut v, "globex").await;
    wait_production(&brokers, &topics, "globex", &BTreeSet::new()).await;

    // A minute short of the window, then past it: the clock alone makes the evidence stale,
    // and only at the second move (a verdict judged at the first would carry its time).
    clock.advance(Duration::from_secs(3540));
    clock.advance(Duration::from_secs(61));
    let none = BTreeSet::new();
    let stale: BTreeSet<String> = ["evidence_stale".to_owned()].into();
    let verdicts = wait_production_history(&brokers, &topics, "globex", &[&none, &stale]).await;
    assert_eq!(
        verdicts[1].evaluated_at,
        clock.now(),
        "judged at the clock's time"
    );
    stop.cancel();
    gk.await.unwrap().unwrap();
}
