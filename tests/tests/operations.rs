//! Operations end to end: the four service binaries against Apache Kafka, scraped by a real
//! Prometheus server (Debian's `/usr/bin/prometheus`) that also evaluates
//! `compose/prometheus/alerts.yml`. The demo scenario goes in through ingest's HTTP API; the
//! assertions read Prometheus's HTTP query API: events applied per topic, consumer lag back to
//! zero, blockers open by kind and stage (cross-checked with the gatekeeper's readiness API),
//! readiness by stage, dead letters, and the alert rules' states. It also checks that every
//! metric name the Grafana dashboard and the alert rules use is one the services export, and
//! that the exported names follow `aispm_<service>_<noun>_<unit>`.

use aispm_tests::Broker;
use aispm_tests::broker::free_port;
use aispm_tests::demo;
use aispm_tests::kafka::{create_contract_topics, produce, producer, random_prefix};
use aispm_tests::process::{Service, binary};
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The demo's tokens: a tenant token with every scope, and an operator that reads every tenant.
const ACME: &str = demo::TENANT_TOKEN;
const OPERATOR: &str = demo::OPERATOR_TOKEN;
/// The gatekeeper's trial freshness window here: short, so that the remediation's fresh
/// evidence goes stale during the test and trial readiness regresses.
const TRIAL_FRESHNESS_SECS: u64 = 45;
const SERVICES: [&str; 4] = ["ingest", "projector", "gatekeeper", "reporter"];

fn compose_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../compose")
}

/// A Prometheus server on 127.0.0.1; killed when dropped.
struct Prometheus {
    child: Child,
    url: String,
    log: PathBuf,
}

impl Prometheus {
    fn start(dir: &Path, targets: &[(&str, &str)]) -> Prometheus {
        let bin =
            std::env::var("AISPM_PROMETHEUS").unwrap_or_else(|_| "/usr/bin/prometheus".into());
        let rules = compose_dir().join("prometheus/alerts.yml");
        let mut config = format!(
            "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n  evaluation_interval: 1s\n\
             rule_files:\n  - {}\nscrape_configs:\n",
            rules.canonicalize().unwrap().display()
        );
        for (job, addr) in targets {
            config.push_str(&format!(
                "  - job_name: {job}\n    static_configs:\n      - targets: [\"{addr}\"]\n"
            ));
        }
        let config_file = dir.join("prometheus.yml");
        std::fs::write(&config_file, config).unwrap();
        let addr = format!("127.0.0.1:{}", free_port());
        let log = dir.join("prometheus.log");
        let out = std::fs::File::create(&log).unwrap();
        let child = Command::new(&bin)
            .arg(format!("--config.file={}", config_file.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("tsdb").display()
            ))
            .arg(format!("--web.listen-address={addr}"))
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .unwrap_or_else(|e| panic!("starting {bin} (apt-get install prometheus): {e}"));
        Prometheus {
            child,
            url: format!("http://{addr}"),
            log,
        }
    }

    async fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(r) = reqwest::get(format!("{}/-/ready", self.url)).await
                && r.status().is_success()
            {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "Prometheus not ready:\n{}",
                std::fs::read_to_string(&self.log).unwrap_or_default()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    async fn api(&self, path: &str, query: &[(&str, &str)]) -> Value {
        let r: Value = reqwest::Client::new()
            .get(format!("{}{path}", self.url))
            .query(query)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(r["status"], "success", "{path} {query:?}: {r}");
        r["data"].clone()
    }

    /// An instant query: every series as (labels, value).
    async fn query(&self, q: &str) -> Vec<(BTreeMap<String, String>, f64)> {
        let data = self.api("/api/v1/query", &[("query", q)]).await;
        data["result"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| {
                let labels = s["metric"]
                    .as_object()
                    .unwrap()
                    .iter()
                    .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_owned()))
                    .collect();
                let v = s["value"][1].as_str().unwrap().parse().unwrap();
                (labels, v)
            })
            .collect()
    }

    /// The single value of a query that aggregates to one series (`None` when empty).
    async fn scalar(&self, q: &str) -> Option<f64> {
        let r = self.query(q).await;
        assert!(r.len() <= 1, "{q} returned {} series", r.len());
        r.first().map(|(_, v)| *v)
    }

    /// Waits until `q` has the single value `want`.
    async fn wait_value(&self, q: &str, want: f64, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            let got = self.scalar(q).await;
            if got == Some(want) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{q}: wanted {want}, Prometheus has {got:?} after {timeout:?}"
            );
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }

    /// The alerting rules by name, from `/api/v1/rules`.
    async fn alert_rules(&self) -> BTreeMap<String, Value> {
        let data = self.api("/api/v1/rules", &[("type", "alert")]).await;
        let mut out = BTreeMap::new();
        for g in data["groups"].as_array().unwrap() {
            for r in g["rules"].as_array().unwrap() {
                out.insert(r["name"].as_str().unwrap().to_owned(), r.clone());
            }
        }
        out
    }

    /// Waits until the alert `name` is pending or firing with `labels` among its alerts.
    async fn wait_alert(&self, name: &str, labels: &[(&str, &str)], timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            let rules = self.alert_rules().await;
            let rule = rules.get(name).unwrap_or_else(|| panic!("no rule {name}"));
            assert_eq!(rule["health"], "ok", "{name}: {rule}");
            let active = rule["alerts"].as_array().unwrap().iter().any(|a| {
                matches!(a["state"].as_str(), Some("pending" | "firing"))
                    && labels.iter().all(|(k, v)| a["labels"][*k] == *v)
            });
            if active {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "alert {name} {labels:?} not active after {timeout:?}: {rule}"
            );
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Metric names in a scrape (`_bucket`, `_sum`, `_count` samples included), with their types.
fn exported(text: &str) -> (BTreeSet<String>, BTreeMap<String, String>) {
    let mut names = BTreeSet::new();
    let mut types = BTreeMap::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let mut it = rest.split_whitespace();
            if let (Some(n), Some(t)) = (it.next(), it.next()) {
                types.insert(n.to_owned(), t.to_owned());
            }
        } else if !line.starts_with('#') && !line.is_empty() {
            let end = line.find(['{', ' ']).unwrap_or(line.len());
            names.insert(line[..end].to_owned());
        }
    }
    (names, types)
}

/// The metric names a dashboard or rules file refers to.
fn referenced(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for prefix in ["aispm_", "process_"] {
        let mut rest = text;
        while let Some(i) = rest.find(prefix) {
            let before = rest[..i].chars().next_back();
            let tail = &rest[i..];
            let end = tail
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(tail.len());
            if !before.is_some_and(|c| c.is_ascii_alphanumeric() || c == '_') {
                out.insert(tail[..end].to_owned());
            }
            rest = &tail[end..];
        }
    }
    out
}

/// A JSON answer, or `None` for any status but 2xx (e.g. 503 while `/readyz` fails).
async fn get_json(url: &str, token: &str) -> Option<Value> {
    let r = reqwest::Client::new()
        .get(url)
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    if !r.status().is_success() {
        return None;
    }
    Some(r.json().await.unwrap())
}

/// Blockers by (stage, kind) from the gatekeeper's readiness API, for the tenant `acme`
/// (`None` until the gatekeeper knows the tenant).
/// Open blockers by (stage, kind) over every tenant, from the operator's listing (what the
/// gatekeeper's metrics sum).
async fn api_blockers(gatekeeper: &str) -> Option<BTreeMap<(String, String), f64>> {
    let v = get_json(&format!("{gatekeeper}/v1/readiness"), OPERATOR).await?;
    let mut out = BTreeMap::new();
    for r in v["readiness"].as_array()? {
        let stage = r["stage"].as_str()?.to_owned();
        for b in r["blockers"].as_array()? {
            let kind = b["kind"].as_str()?.to_owned();
            *out.entry((stage.clone(), kind)).or_insert(0.0) += 1.0;
        }
    }
    Some(out)
}

/// The demo tenant's open blockers by (stage, kind), with its own token.
async fn acme_blockers(gatekeeper: &str) -> Option<BTreeMap<(String, String), f64>> {
    let mut out = BTreeMap::new();
    for stage in ["trial", "pilot", "production"] {
        let v = get_json(
            &format!("{gatekeeper}/v1/tenants/acme/readiness?stage={stage}"),
            ACME,
        )
        .await?;
        for b in v["blockers"].as_array().unwrap() {
            let kind = b["kind"].as_str().unwrap().to_owned();
            *out.entry((stage.to_owned(), kind)).or_insert(0.0) += 1.0;
        }
    }
    Some(out)
}

/// Blockers by (stage, kind) as Prometheus sees them.
async fn prom_blockers(prom: &Prometheus) -> BTreeMap<(String, String), f64> {
    prom.query("sum by (stage, kind) (aispm_gatekeeper_blockers_open) > 0")
        .await
        .into_iter()
        .map(|(l, v)| ((l["stage"].clone(), l["kind"].clone()), v))
        .collect()
}

/// Waits until Prometheus and the readiness API agree on the open blockers and `check` holds.
async fn wait_blockers(
    prom: &Prometheus,
    gatekeeper: &str,
    check: impl Fn(&BTreeMap<(String, String), f64>) -> bool,
) -> BTreeMap<(String, String), f64> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let api = api_blockers(gatekeeper).await;
        let seen = prom_blockers(prom).await;
        if api.as_ref() == Some(&seen) && check(&seen) {
            return seen;
        }
        assert!(
            Instant::now() < deadline,
            "blockers: readiness API {api:?}, Prometheus {seen:?}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Events of the demo phase by type, from `aispm-ingest emit --to stdout`.
fn demo_events(phase: &str) -> BTreeMap<String, f64> {
    let out = Command::new(binary("aispm-ingest").unwrap())
        .args(["emit", "--to", "stdout", "--phase", phase])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut by_type = BTreeMap::new();
    for line in String::from_utf8(out.stdout).unwrap().lines() {
        let v: Value = serde_json::from_str(line).unwrap();
        *by_type
            .entry(v["type"].as_str().unwrap().to_owned())
            .or_insert(0.0) += 1.0;
    }
    by_type
}

/// Unix seconds as RFC 3339 (UTC), for `emit --at`.
fn rfc3339(secs: u64) -> String {
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Howard Hinnant's civil_from_days.
    let z = i64::try_from(days).unwrap() + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// How long before the phase's `--at` its newest evidence is dated (the remediation's events
/// lead up to `at`).
fn newest_evidence_before_at(phase: &str) -> u64 {
    let at = 1_735_689_600; // 2025-01-01T00:00:00Z
    let out = Command::new(binary("aispm-ingest").unwrap())
        .args([
            "emit",
            "--to",
            "stdout",
            "--phase",
            phase,
            "--at",
            &rfc3339(at),
        ])
        .output()
        .unwrap();
    assert!(out.status.success());
    let mut newest = String::new();
    for line in String::from_utf8(out.stdout).unwrap().lines() {
        let v: Value = serde_json::from_str(line).unwrap();
        let evidence = !v["evidence"].is_null() || !v["validation"]["evidence"].is_null();
        let t = v["occurred_at"].as_str().unwrap();
        if evidence && t > newest.as_str() {
            newest = t.to_owned();
        }
    }
    // Same day and hour as `at` minus up to an hour: compare minutes and seconds only.
    assert!(newest.starts_with("2024-12-31T23:"), "{newest}");
    let mins: u64 = newest[14..16].parse().unwrap();
    let secs: u64 = newest[17..19].parse().unwrap();
    3600 - (mins * 60 + secs)
}

fn emit(phase: &str, ingest: &str, at: u64) {
    let at = rfc3339(at);
    let out = Command::new(binary("aispm-ingest").unwrap())
        .args([
            "emit", "--phase", phase, "--url", ingest, "--token", ACME, "--at", &at,
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "emit {phase}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_sees_lag_events_blockers_and_alerts() {
    let broker = Broker::start().unwrap();
    let brokers = broker.bootstrap();
    let prefix = random_prefix();
    let topics = create_contract_topics(&brokers, &prefix, 3).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let tokens = dir.path().join("tokens.toml");
    std::fs::write(&tokens, demo::tokens_toml()).unwrap();
    let common: Vec<String> = [
        "--brokers",
        &brokers,
        "--topic-prefix",
        &prefix,
        "--partitions",
        "3",
        "--tokens-file",
        tokens.to_str().unwrap(),
        // Statistics (lag, brokers up) every second instead of every five.
        "--kafka-option",
        "statistics.interval.ms=1000",
    ]
    .iter()
    .map(|s| (*s).to_owned())
    .collect();
    let with = |extra: &[String]| -> Vec<String> { common.iter().chain(extra).cloned().collect() };
    let state = |name: &str| -> Vec<String> {
        vec![
            "--state-dir".into(),
            dir.path().join(name).display().to_string(),
        ]
    };
    let addrs: Vec<String> = SERVICES
        .iter()
        .map(|_| format!("127.0.0.1:{}", free_port()))
        .collect();
    let mut ingest = Service::start("aispm-ingest", &addrs[0], &with(&[]), dir.path()).unwrap();
    let mut projector = Service::start(
        "aispm-projector",
        &addrs[1],
        &with(&state("projector")),
        dir.path(),
    )
    .unwrap();
    let mut gatekeeper = Service::start(
        "aispm-gatekeeper",
        &addrs[2],
        &with(&[
            "--trial-evidence-freshness".into(),
            format!("{TRIAL_FRESHNESS_SECS}s"),
            "--evaluation-interval".into(),
            "2s".into(),
        ]),
        dir.path(),
    )
    .unwrap();
    let mut reporter_args = state("reporter");
    reporter_args.extend(["--schedule".into(), "none".into()]);
    let mut reporter = Service::start(
        "aispm-reporter",
        &addrs[3],
        &with(&reporter_args),
        dir.path(),
    )
    .unwrap();
    for s in [&mut ingest, &mut projector, &mut gatekeeper, &mut reporter] {
        s.wait_ready(Duration::from_secs(90)).await.unwrap();
    }

    let targets: Vec<(String, String)> = SERVICES
        .iter()
        .zip(&addrs)
        .map(|(s, a)| (format!("aispm-{s}"), a.clone()))
        .collect();
    let target_refs: Vec<(&str, &str)> = targets
        .iter()
        .map(|(j, a)| (j.as_str(), a.as_str()))
        .collect();
    let prom = Prometheus::start(dir.path(), &target_refs);
    prom.wait_ready().await;
    prom.wait_value(r#"sum(up{job=~"aispm-.+"})"#, 4.0, Duration::from_secs(30))
        .await;

    // Readiness includes a connected broker, now from librdkafka's statistics: one Kafka node, and
    // librdkafka's always-UP internal broker is not counted.
    for svc in ["projector", "gatekeeper", "reporter"] {
        prom.wait_value(
            &format!(r#"max(aispm_{svc}_kafka_brokers_up{{client="consumer"}})"#),
            1.0,
            Duration::from_secs(30),
        )
        .await;
    }
    for s in [&projector, &gatekeeper, &reporter] {
        let v = get_json(&format!("{}/readyz", s.http), ACME).await.unwrap();
        assert_eq!(v["conditions"]["broker"]["ok"], true, "{v}");
    }

    // The demo's open phase over HTTP, and one record nobody can decode on the registry topic
    // (projector and reporter read it) and on the views topic (gatekeeper and reporter).
    emit("open", &ingest.http, unix_now());
    let p = producer(&brokers).unwrap();
    produce(&p, &topics.registry, "acme", b"not an avro record")
        .await
        .unwrap();
    produce(&p, &topics.views, "acme", b"not an avro record either")
        .await
        .unwrap();

    // Every blocker kind is open for production; Prometheus agrees with the readiness API.
    let open = wait_blockers(&prom, &gatekeeper.http, |b| {
        b.keys().filter(|(stage, _)| stage == "production").count() == 10
    })
    .await;
    assert!(
        open.contains_key(&("trial".into(), "evidence_stale".into())),
        "{open:?}"
    );
    // The operator token reads every tenant's verdict (the AispmReadinessRegressed
    // runbook starts there); a tenant token does not.
    let all = get_json(
        &format!("{}/v1/readiness?stage=production", gatekeeper.http),
        OPERATOR,
    )
    .await
    .expect("the operator token reads /v1/readiness");
    assert!(all.to_string().contains("\"acme\""), "{all}");
    assert!(
        get_json(&format!("{}/v1/readiness", gatekeeper.http), ACME)
            .await
            .is_none()
    );
    prom.wait_value(
        r#"sum(aispm_gatekeeper_tenants{stage="production",verdict="unready"})"#,
        1.0,
        Duration::from_secs(30),
    )
    .await;

    // Remediation, then the connector and isolation probes, clear everything but
    // report_delivery_unverified
    // (production only); trial becomes ready. Pilot stays blocked: the demo tenant runs no
    // pilot deployment, and stages read their own facts.
    // Dated so that its newest evidence is from now: trial evidence is fresh for
    // TRIAL_FRESHNESS_SECS, then goes stale.
    let remediated_at = Instant::now();
    emit(
        "remediate",
        &ingest.http,
        unix_now() + newest_evidence_before_at("remediate"),
    );
    let (passed, probe) = demo::isolation_probe(
        &reqwest::Client::new(),
        dir.path(),
        [
            &ingest.http,
            &projector.http,
            &gatekeeper.http,
            &reporter.http,
        ],
        "production,trial",
    )
    .await
    .unwrap();
    assert!(passed, "{probe:#}");
    let live = demo::LiveSystem::start().unwrap();
    let (passed, connector) = demo::connector_probe(
        dir.path(),
        &ingest.http,
        &live.url,
        demo::CONNECTOR_CREDENTIAL,
    )
    .unwrap();
    assert!(passed, "{connector:#}");
    // What the probes posted: the connector's result per environment; the other tenant's
    // validator key, and per tenant its canary's registration and retirement and one result
    // per environment.
    let probe_events = connector["event_ids"].as_array().unwrap().len() as f64
        + 1.0
        + probe["tenants"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| 2.0 + t["event_ids"].as_array().unwrap().len() as f64)
            .sum::<f64>();
    let not_pilot = |b: &BTreeMap<(String, String), f64>| {
        b.iter()
            .filter(|((stage, _), _)| stage != "pilot")
            .map(|(k, v)| (k.clone(), *v))
            .collect::<BTreeMap<_, _>>()
    };
    // The probe's second tenant has blockers of its own from here on: the demo tenant's are
    // read with its token, and Prometheus is compared with the operator's listing.
    let deadline = Instant::now() + Duration::from_secs(30);
    let fixed = loop {
        let b = not_pilot(&acme_blockers(&gatekeeper.http).await.unwrap_or_default());
        if !b.is_empty()
            && b.keys()
                .all(|(_, kind)| kind == "report_delivery_unverified")
        {
            break b;
        }
        assert!(Instant::now() < deadline, "acme's blockers: {b:?}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    wait_blockers(&prom, &gatekeeper.http, |_| true).await;
    assert_eq!(
        fixed,
        BTreeMap::from([(
            (
                "production".to_owned(),
                "report_delivery_unverified".to_owned()
            ),
            1.0
        )])
    );
    prom.wait_value(
        r#"sum(aispm_gatekeeper_tenants{stage="trial",verdict="ready"})"#,
        1.0,
        Duration::from_secs(30),
    )
    .await;
    assert!(
        remediated_at.elapsed() < Duration::from_secs(TRIAL_FRESHNESS_SECS - 5),
        "the remediation took too long to observe before its evidence goes stale"
    );

    // A report: the reporter's metrics, and a delivery event the projector applies.
    let r = reqwest::Client::new()
        .post(format!("{}/v1/tenants/acme/reports", reporter.http))
        .bearer_auth(ACME)
        .json(&serde_json::json!({"type": "cso"}))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "report: {}", r.status());
    prom.wait_value(
        "sum(aispm_reporter_reports_generated_total)",
        1.0,
        Duration::from_secs(30),
    )
    .await;

    // Events applied: exactly the demo's events per input topic, and the delivery events the
    // reporter published; ingest accepted all of them.
    let mut want = demo_events("open");
    for (k, v) in demo_events("remediate") {
        *want.entry(k).or_insert(0.0) += v;
    }
    *want.entry("registry".to_owned()).or_insert(0.0) += probe_events;
    let total: f64 = want.values().sum();
    for (kind, topic) in [
        ("decision", &topics.decisions),
        ("approval", &topics.approvals),
        ("registry", &topics.registry),
    ] {
        prom.wait_value(
            &format!(r#"sum(aispm_projector_events_total{{topic="{topic}",outcome="applied"}})"#),
            want[kind],
            Duration::from_secs(30),
        )
        .await;
    }
    prom.wait_value(
        r#"sum(aispm_ingest_events_total{outcome="accepted"})"#,
        total,
        Duration::from_secs(10),
    )
    .await;
    // The delivery event is published after the report request returns: wait for a scrape
    // that has it.
    prom.wait_value(
        "sum(aispm_reporter_delivery_events_published_total) >= bool 1",
        1.0,
        Duration::from_secs(30),
    )
    .await;
    let delivered = prom
        .scalar("sum(aispm_reporter_delivery_events_published_total)")
        .await
        .unwrap_or(0.0);
    prom.wait_value(
        &format!(
            r#"sum(aispm_projector_events_total{{topic="{}",outcome="applied"}})"#,
            topics.report_deliveries
        ),
        delivered,
        Duration::from_secs(30),
    )
    .await;

    // Dead letters by service, topic and reason; the alert sees the new series.
    prom.wait_value(
        &format!(
            r#"sum(aispm_projector_dead_letters_total{{topic="{}"}})"#,
            topics.registry
        ),
        1.0,
        Duration::from_secs(30),
    )
    .await;
    prom.wait_value(
        &format!(
            r#"sum(aispm_projector_events_total{{topic="{}",outcome="dead_lettered"}})"#,
            topics.registry
        ),
        1.0,
        Duration::from_secs(10),
    )
    .await;
    for (svc, topic) in [
        ("gatekeeper", &topics.views),
        ("reporter", &topics.views),
        ("reporter", &topics.registry),
    ] {
        let deadline = Instant::now() + Duration::from_secs(30);
        while prom
            .scalar(&format!(
                r#"sum(aispm_{svc}_dead_letters_total{{topic="{topic}"}})"#
            ))
            .await
            .unwrap_or(0.0)
            < 1.0
        {
            assert!(
                Instant::now() < deadline,
                "no {svc} dead letter from {topic}"
            );
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
    for job in ["aispm-projector", "aispm-gatekeeper", "aispm-reporter"] {
        prom.wait_alert("AispmDeadLetters", &[("job", job)], Duration::from_secs(30))
            .await;
    }

    // Consumer lag per topic-partition, from the statistics callback, back to zero for every
    // consumer: the projector and gatekeeper commit, the reporter does not (position-based).
    for svc in ["projector", "gatekeeper", "reporter"] {
        prom.wait_value(
            &format!("sum(aispm_{svc}_consumer_lag_messages)"),
            0.0,
            Duration::from_secs(30),
        )
        .await;
        let series = prom
            .query(&format!("aispm_{svc}_consumer_lag_messages"))
            .await;
        assert!(!series.is_empty(), "{svc} exports no lag");
        assert!(series.iter().all(|(l, _)| l.contains_key("partition")));
    }
    prom.wait_value(
        "sum(aispm_projector_consumer_assigned_partitions)",
        12.0,
        Duration::from_secs(10),
    )
    .await;
    prom.wait_value(
        "sum(aispm_gatekeeper_consumer_assigned_partitions)",
        3.0,
        Duration::from_secs(10),
    )
    .await;

    // Every metric the dashboard and the alert rules use is exported, and the exported names
    // follow the house rules.
    let mut names = BTreeSet::from(["up".to_owned()]);
    for (svc, addr) in SERVICES.iter().zip(&addrs) {
        let text = reqwest::get(format!("http://{addr}/metrics"))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        let (n, types) = exported(&text);
        for (name, kind) in &types {
            if name.starts_with("process_") || name == "aispm_build_info" {
                continue;
            }
            assert!(
                name.starts_with(&format!("aispm_{svc}_")),
                "{name} is not aispm_{svc}_*"
            );
            if kind == "counter" {
                assert!(
                    name.ends_with("_total"),
                    "counter {name} must end in _total"
                );
            }
        }
        assert!(text.contains(&format!("aispm_build_info{{service=\"{svc}\"")));
        for p in [
            "process_resident_memory_bytes",
            "process_cpu_seconds_total",
            "process_open_fds",
            // The projector's and the gatekeeper's malloc is jemalloc, which reports its own
            // statistics.
            &if ["projector", "gatekeeper"].contains(svc) {
                format!("aispm_{svc}_jemalloc_bytes")
            } else {
                format!("aispm_{svc}_malloc_heap_bytes")
            },
        ] {
            assert!(n.contains(p), "{svc} does not export {p}");
        }
        assert!(
            !text.contains("tenant_id=") && !text.contains("tenant="),
            "{svc} has a tenant label:\n{text}"
        );
        names.extend(n);
    }
    let dashboard =
        std::fs::read_to_string(compose_dir().join("grafana/dashboards/aispm.json")).unwrap();
    let alerts = std::fs::read_to_string(compose_dir().join("prometheus/alerts.yml")).unwrap();
    let used: BTreeSet<String> = referenced(&dashboard)
        .into_iter()
        .chain(referenced(&alerts))
        .collect();
    assert!(used.len() > 30, "too few metric names found: {used:?}");
    let missing: Vec<&String> = used.iter().filter(|n| !names.contains(*n)).collect();
    assert!(
        missing.is_empty(),
        "the dashboard or alert rules use metrics no service exports: {missing:?}"
    );
    // Every dashboard query evaluates in Prometheus.
    let dash: Value = serde_json::from_str(&dashboard).unwrap();
    for panel in dash["panels"].as_array().unwrap() {
        for t in panel["targets"].as_array().into_iter().flatten() {
            let expr = t["expr"]
                .as_str()
                .unwrap()
                .replace("$__rate_interval", "1m");
            prom.api("/api/v1/query", &[("query", &expr)]).await;
        }
    }

    // The trial evidence goes stale: the blocker opens, trial readiness regresses, and both
    // alerts go pending. (For both tenants: the probe's trial result for the second one is
    // evidence of the same age.)
    prom.wait_value(
        r#"sum(aispm_gatekeeper_blockers_open{stage="trial",kind="evidence_stale"})"#,
        2.0,
        Duration::from_secs(TRIAL_FRESHNESS_SECS + 30),
    )
    .await;
    prom.wait_value(
        r#"sum(aispm_gatekeeper_tenants{stage="trial",verdict="ready"})"#,
        0.0,
        Duration::from_secs(10),
    )
    .await;
    prom.wait_alert(
        "AispmEvidenceStale",
        &[("stage", "trial")],
        Duration::from_secs(15),
    )
    .await;
    prom.wait_alert(
        "AispmReadinessRegressed",
        &[("stage", "trial")],
        Duration::from_secs(15),
    )
    .await;

    // A service dies: AispmServiceDown goes pending for it, and only for it.
    reporter.kill9();
    prom.wait_alert(
        "AispmServiceDown",
        &[("job", "aispm-reporter")],
        Duration::from_secs(20),
    )
    .await;

    // Every rule parsed, evaluates without error, and the healthy ones stay quiet.
    let rules = prom.alert_rules().await;
    assert_eq!(rules.len(), 9, "{:?}", rules.keys());
    for (name, r) in &rules {
        assert_eq!(r["health"], "ok", "{name}: {r}");
        assert_ne!(r["lastEvaluation"], "0001-01-01T00:00:00Z", "{name}: {r}");
    }
    for quiet in [
        "AispmKafkaUnreachable",
        "AispmConsumerLagGrowing",
        "AispmProjectorStalled",
        "AispmConsumerRebalancing",
        "AispmNoDecisionsApplied",
    ] {
        assert_eq!(
            rules[quiet]["state"], "inactive",
            "{quiet}: {}",
            rules[quiet]
        );
    }
    let down: Vec<&Value> = rules["AispmServiceDown"]["alerts"]
        .as_array()
        .unwrap()
        .iter()
        .collect();
    assert_eq!(down.len(), 1, "{down:?}");
    drop(broker);
}

#[test]
fn rfc3339_formats_utc() {
    assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
    assert_eq!(rfc3339(1_735_689_600), "2025-01-01T00:00:00Z");
    assert_eq!(rfc3339(951_825_599), "2000-02-29T11:59:59Z");
}

#[test]
fn referenced_names_are_found() {
    let text = r#"{"expr": "sum(rate(aispm_projector_events_total{x=\"y\"}[5m])) / process_open_fds"} not_aispm_x"#;
    assert_eq!(
        referenced(text),
        BTreeSet::from([
            "aispm_projector_events_total".to_owned(),
            "process_open_fds".to_owned()
        ])
    );
    let (names, types) =
        exported("# TYPE a_total counter\na_total{k=\"v\"} 1\nb_bucket{le=\"1\"} 2\nc 3\n");
    assert_eq!(
        names,
        BTreeSet::from(["a_total".into(), "b_bucket".into(), "c".into()])
    );
    assert_eq!(types["a_total"], "counter");
}
