//! The whole pipeline as the demo runs it: ingest → projector → gatekeeper → reporter → SMTP →
//! delivery audit → projector → gatekeeper. Every production blocker of the scenario opens,
//! remediation clears all but what aispm's validators must prove: the connector probe reads the
//! live system (refused with a revoked credential, then passing), the isolation probe proves
//! tenant isolation, and a real delivery proves the report provider and makes the tenant ready.

use aispm_schemas::readiness::Blocker;
use aispm_schemas::topics::dlq_headers;
use aispm_schemas::{Codec, Timestamp, Topics};
use aispm_tests::broker::tool;
use aispm_tests::demo::{CONNECTOR, CONNECTOR_CREDENTIAL, Pipeline, blocker_kinds};
use aispm_tests::kafka::{produce, producer, read_all};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

#[tokio::test(flavor = "multi_thread")]
async fn the_demo_scenario_goes_from_every_blocker_to_ready() {
    let work = tempfile::tempdir().unwrap();
    let p = Pipeline::start(work.path()).await.unwrap();

    p.emit("open").unwrap();
    let all_kinds = [
        "break_glass_unreviewed",
        "control_missing",
        "critical_finding_unowned",
        "evidence_stale",
        "exception_expired",
        "finding_overdue",
        "missing_live_connector_evidence",
        "report_delivery_unverified",
        "runtime_workflow_synthetic_only",
        "tenant_isolation_not_proven",
    ];
    let open = p
        .readiness_until(Duration::from_secs(120), |v| blocker_kinds(v) == all_kinds)
        .await
        .unwrap_or_else(|e| {
            panic!(
                "{e}\nprojector:\n{}\ngatekeeper:\n{}",
                p.projector.log_tail(),
                p.gatekeeper.log_tail()
            )
        });
    assert_eq!(open["ready_for_aispm_production"], false);
    for b in open["blockers"].as_array().unwrap() {
        assert!(
            !b["meaning"].as_str().unwrap().is_empty()
                && !b["resolution"].as_str().unwrap().is_empty()
        );
    }
    // Every blocker drills down to ids behind it (except the absence-of-evidence kinds).
    let with_evidence = open["blockers"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|b| !b["evidence"].as_array().unwrap().is_empty())
        .count();
    assert!(with_evidence >= 6, "blockers name their evidence: {open:#}");

    let before_remediation = Timestamp::now();
    p.emit("remediate").unwrap();
    // The team's remediation leaves what only aispm's own validators can prove.
    p.readiness_until(Duration::from_secs(120), |v| {
        blocker_kinds(v)
            == [
                "missing_live_connector_evidence",
                "report_delivery_unverified",
                "tenant_isolation_not_proven",
            ]
    })
    .await
    .unwrap_or_else(|e| panic!("{e}\nprojector:\n{}", p.projector.log_tail()));

    // The connector probe with a revoked credential: the live system refuses, the failure is
    // posted signed, and the blocker names the connector and the answer.
    let (passed, summary) = p.validate_connector("SSWS revoked-token").unwrap();
    assert!(!passed, "{summary:#}");
    assert_eq!(summary["status"], 401, "{summary:#}");
    let failing = p
        .readiness_until(Duration::from_secs(120), |v| {
            v["blockers"].as_array().unwrap().iter().any(|b| {
                b["kind"] == "missing_live_connector_evidence"
                    && b["meaning"].as_str().unwrap().contains("answered 401")
            })
        })
        .await
        .unwrap();
    let blocker = failing["blockers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|b| b["kind"] == "missing_live_connector_evidence")
        .unwrap();
    assert_eq!(blocker["subject"], CONNECTOR, "{blocker:#}");
    // With the connector's real credential it reads the live system, and signs a pass.
    let (passed, summary) = p.validate_connector(CONNECTOR_CREDENTIAL).unwrap();
    assert!(passed, "{summary:#}");
    assert_eq!(summary["event_ids"].as_array().unwrap().len(), 2);
    // The transcript, which the signature covers, names the header but never its value.
    let transcript_path = summary["transcript"]
        .as_str()
        .unwrap()
        .trim_start_matches("file://");
    let transcript = std::fs::read_to_string(transcript_path).unwrap();
    assert!(transcript.contains("authorization"), "{transcript}");
    assert!(!transcript.contains("demo-okta-api-token"), "{transcript}");
    assert!(!transcript.contains("revoked-token"), "{transcript}");
    p.readiness_until(Duration::from_secs(120), |v| {
        blocker_kinds(v) == ["report_delivery_unverified", "tenant_isolation_not_proven"]
    })
    .await
    .unwrap_or_else(|e| panic!("{e}\nprojector:\n{}", p.projector.log_tail()));

    // The isolation probe tries every cross-tenant read, and signs a pass.
    let (passed, summary) = p.validate_isolation().await.unwrap();
    assert!(passed, "{summary:#}");
    assert!(summary["requests"].as_u64().unwrap() >= 50, "{summary:#}");
    p.readiness_until(Duration::from_secs(120), |v| {
        blocker_kinds(v) == ["report_delivery_unverified"]
    })
    .await
    .unwrap_or_else(|e| panic!("{e}\nprojector:\n{}", p.projector.log_tail()));

    let report = p.report("production_readiness").await.unwrap();
    assert_eq!(report["delivery"]["status"], "delivered", "{report:#}");
    assert_eq!(report["delivery"]["approved_recipients"], true);
    let (ok, out) = p.verify(report["packet"]["zip"].as_str().unwrap()).unwrap();
    assert!(ok, "{out}");
    // Debian's minisign verifies the same archive against the same pinned key.
    let (ok, out) = p
        .minisign_verify(report["packet"]["zip"].as_str().unwrap())
        .expect("Debian's minisign (scripts/setup.sh installs it)");
    assert!(ok, "{out}");
    let mails = p.smtp.messages();
    assert_eq!(mails.len(), 1, "one mail");
    assert_eq!(
        mails[0]["attachments"][0]["sha256"], report["packet"]["sha256"],
        "the mailed packet is the recorded one"
    );

    let ready = p
        .readiness_until(Duration::from_secs(120), |v| v["ready"] == true)
        .await
        .unwrap_or_else(|e| {
            panic!(
                "{e}\nreporter:\n{}\ngatekeeper:\n{}",
                p.reporter.log_tail(),
                p.gatekeeper.log_tail()
            )
        });
    assert_eq!(ready["ready_for_aispm_production"], true);
    assert_eq!(ready["blockers"].as_array().unwrap().len(), 0);

    // Readiness as of past instants, from the projector's replay of the events that occurred
    // by then, judged by the gatekeeper's rules at that instant. Now: the live verdict.
    // A tenant starts one replay per `TENANT_GAP` (10 s): a second instant is answered 429
    // with Retry-After, and a client waits and asks again.
    let as_of = |at: Timestamp| {
        let p = &p;
        async move {
            let path = format!("/v1/tenants/acme/readiness?stage=production&as_of={at}");
            let deadline = Instant::now() + Duration::from_secs(60);
            loop {
                match p.get(&p.gatekeeper.http, &path).await {
                    Ok(v) => break v,
                    Err(e) if e.to_string().contains("429") && Instant::now() < deadline => {
                        tokio::time::sleep(Duration::from_secs(1)).await;
                    }
                    Err(e) => panic!("{e}"),
                }
            }
        }
    };
    let now = as_of(Timestamp::now()).await;
    assert_eq!(now["ready_for_aispm_production"], true, "{now:#}");
    assert_eq!(now["as_of"]["after"], 0, "{now:#}");
    // The remediation's events are dated from ten minutes before they were sent (event time
    // decides): as of a minute before that, none of them had occurred, nor any validation or
    // delivery.
    let at = before_remediation.minus(Duration::from_secs(11 * 60));
    let then = as_of(at).await;
    assert_eq!(then["ready_for_aispm_production"], false, "{then:#}");
    assert_eq!(then["evaluated_at"], at.to_string());
    assert_eq!(then["as_of"]["at"], at.to_string());
    assert!(then["as_of"]["events"].as_u64() > Some(0), "{then:#}");
    assert!(then["as_of"]["after"].as_u64() > Some(0), "{then:#}");
    let kinds = blocker_kinds(&then);
    for kind in [
        "missing_live_connector_evidence",
        "report_delivery_unverified",
        "tenant_isolation_not_proven",
    ] {
        assert!(kinds.iter().any(|k| k == kind), "{kind}: {then:#}");
    }

    // A production readiness packet as of that instant (the quarterly archive's kind): signed
    // and delivered now, its verdicts, findings and clock rules as they stood then, and the
    // replay it came from stated. The reporter waits out the projector's turn itself.
    let archive = p
        .report_with(serde_json::json!({"type": "production_readiness", "as_of": at.to_string()}))
        .await
        .unwrap_or_else(|e| panic!("{e}\nreporter:\n{}", p.reporter.log_tail()));
    assert_eq!(archive["as_of"], at.to_string(), "{archive:#}");
    assert!(
        archive["headline"]
            .as_str()
            .unwrap()
            .starts_with(&format!("As of {at}: Production not ready")),
        "{archive:#}"
    );
    let (ok, out) = p
        .verify(archive["packet"]["zip"].as_str().unwrap())
        .unwrap();
    assert!(ok, "{out}");
    let dir = std::path::Path::new(archive["packet"]["dir"].as_str().unwrap());
    let doc: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("report.json")).unwrap()).unwrap();
    assert_eq!(doc["as_of"]["at"], at.to_string(), "{:#}", doc["as_of"]);
    assert_eq!(doc["as_of"]["events"], then["as_of"]["events"]);
    assert_ne!(doc["generated_at"], doc["as_of"]["at"]);
    let production = doc["readiness"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["stage"] == "production")
        .unwrap();
    assert_eq!(production["ready"], false, "{production:#}");
    let mut packet_kinds: Vec<String> = production["blockers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["kind"].as_str().unwrap().to_owned())
        .collect();
    packet_kinds.sort();
    packet_kinds.dedup();
    assert_eq!(
        packet_kinds, kinds,
        "the packet's blockers are the gatekeeper's as of then"
    );
    // An instant in the future is refused before anything is read.
    let refused = reqwest::Client::new()
        .post(format!("{}/v1/tenants/acme/reports", p.reporter.http))
        .bearer_auth(aispm_tests::demo::TENANT_TOKEN)
        .json(&serde_json::json!({"type": "production_readiness", "as_of": Timestamp::now().plus(Duration::from_secs(3600)).to_string()}))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 400);

    // The delivery proved the report provider it reached, in both stages the reporter serves:
    // signed by the validator key, asserted by the reporter, the SMTP transcript as evidence.
    let deadline = Instant::now() + Duration::from_secs(60);
    let providers = loop {
        let v = p
            .get(&p.projector.http, "/v1/tenants/acme/validations")
            .await
            .unwrap();
        let rows: Vec<serde_json::Value> = v
            .as_array()
            .or(v["validations"].as_array())
            .cloned()
            .unwrap_or_default()
            .into_iter()
            .filter(|r| r["check_kind"] == "report_provider" && r["result"] == "pass")
            .collect();
        if rows.len() >= 2 || Instant::now() > deadline {
            break rows;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    let mut environments: Vec<&str> = providers
        .iter()
        .map(|r| r["environment"].as_str().unwrap())
        .collect();
    environments.sort();
    assert_eq!(environments, ["production", "trial"], "{providers:#?}");
    for r in &providers {
        assert_eq!(r["subject"], "acme-smtp", "{r:#}");
        assert_eq!(r["signature_state"], "verified", "{r:#}");
        assert_eq!(r["asserted_by"], "aispm-reporter", "{r:#}");
    }

    // Downstream sees every production blocker resolved: the last record of each key is a tombstone.
    let records = read_all(
        &p.broker.bootstrap(),
        "aispm.blockers.v1",
        usize::MAX,
        Duration::from_secs(5),
    )
    .unwrap();
    let mut last: BTreeMap<String, Option<Vec<u8>>> = BTreeMap::new();
    for r in records {
        last.insert(String::from_utf8(r.key.unwrap()).unwrap(), r.value);
    }
    let production: Vec<_> = last
        .iter()
        .filter(|(k, _)| k.starts_with("acme/production/"))
        .collect();
    assert!(
        production.len() >= 10,
        "every production blocker was published: {:?}",
        last.keys()
    );
    for (key, value) in production {
        if let Some(v) = value {
            let b: Blocker = Codec::new().decode(v).unwrap();
            panic!("{key} is still open on the topic: {b:?}");
        }
    }
}

/// The projector's lag per partition of the input topics, from its `/metrics`.
async fn metric_lag(p: &Pipeline) -> BTreeMap<(String, i32), i64> {
    metric_by_partition(p, "aispm_projector_consumer_lag_messages").await
}

/// A projector gauge labelled by topic and partition, from its `/metrics`.
async fn metric_by_partition(p: &Pipeline, name: &str) -> BTreeMap<(String, i32), i64> {
    let text = reqwest::get(format!("{}/metrics", p.projector.http))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let mut out = BTreeMap::new();
    for line in text.lines() {
        let Some(rest) = line
            .strip_prefix(name)
            .and_then(|rest| rest.strip_prefix('{'))
        else {
            continue;
        };
        let (labels, value) = rest.split_once("} ").unwrap();
        let label = |name: &str| {
            labels
                .split(',')
                .find_map(|l| l.strip_prefix(&format!("{name}=\"")))
                .map(|v| v.trim_end_matches('"').to_owned())
                .unwrap()
        };
        out.insert(
            (label("topic"), label("partition").parse().unwrap()),
            value.trim().parse().unwrap(),
        );
    }
    out
}

/// `kafka-consumer-groups --describe`: (topic, partition) → (current offset, log end, lag).
fn group_offsets(bootstrap: &str, group: &str) -> BTreeMap<(String, i32), (i64, i64, i64)> {
    let out = tool(
        "kafka-consumer-groups",
        &[
            "--bootstrap-server",
            bootstrap,
            "--describe",
            "--group",
            group,
        ],
    )
    .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let mut rows = BTreeMap::new();
    for line in text.lines() {
        // GROUP TOPIC PARTITION CURRENT-OFFSET LOG-END-OFFSET LAG CONSUMER-ID HOST CLIENT-ID
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.len() < 6 || f[0] != group {
            continue;
        }
        let n = |s: &str| s.parse::<i64>().unwrap_or(-1);
        rows.insert(
            (f[1].to_owned(), f[2].parse().unwrap()),
            (n(f[3]), n(f[4]), n(f[5])),
        );
    }
    rows
}

/// Apache Kafka's own tools, as an operator would use them, see what aispm made: every topic
/// with the cleanup and retention the contract names, the projector's consumer group with the
/// lag its metrics export, and a dead letter's headers naming its origin and error.
#[tokio::test(flavor = "multi_thread")]
async fn kafka_tools_see_the_topics_groups_and_dead_letters_aispm_made() {
    let work = tempfile::tempdir().unwrap();
    let p = Pipeline::start(work.path()).await.unwrap();
    let bootstrap = p.broker.bootstrap();
    p.emit("open").unwrap();

    // Topics: created by the services at start, each with its policy.
    let topics = Topics::with_prefix("aispm.");
    let mut policies: Vec<(&str, &str)> = topics
        .inputs()
        .into_iter()
        .map(|t| (t, "retention.ms=-1"))
        .collect();
    policies.push((&topics.dlq, "retention.ms=-1"));
    for t in [&topics.views, &topics.blockers, &topics.readiness] {
        policies.push((t, "cleanup.policy=compact"));
    }
    for (topic, expected) in &policies {
        let out = tool(
            "kafka-configs",
            &[
                "--bootstrap-server",
                &bootstrap,
                "--describe",
                "--entity-type",
                "topics",
                "--entity-name",
                topic,
            ],
        )
        .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            text.contains(expected),
            "kafka-configs shows {topic} without {expected}:\n{text}"
        );
        let described = tool(
            "kafka-topics",
            &[
                "--bootstrap-server",
                &bootstrap,
                "--describe",
                "--topic",
                topic,
            ],
        )
        .unwrap();
        let described = String::from_utf8_lossy(&described.stdout);
        assert!(
            described.contains("PartitionCount: 3"),
            "{topic} has the --partitions the services were given:\n{described}"
        );
    }

    // A record that is not an event: the projector dead-letters it, and the console consumer
    // reads the headers that say where it came from and why.
    let producer = producer(&bootstrap).unwrap();
    produce(&producer, &topics.decisions, "acme", b"not an event")
        .await
        .unwrap();
    let out = tool(
        "kafka-console-consumer",
        &[
            "--bootstrap-server",
            &bootstrap,
            "--topic",
            &topics.dlq,
            "--from-beginning",
            "--max-messages",
            "1",
            "--timeout-ms",
            "60000",
            "--property",
            "print.headers=true",
            "--property",
            "print.key=true",
        ],
    )
    .unwrap();
    let line = String::from_utf8_lossy(&out.stdout);
    for expected in [
        format!("{}:{}", dlq_headers::SOURCE_TOPIC, topics.decisions),
        format!("{}:decode", dlq_headers::STAGE),
        format!("{}:projector", dlq_headers::SERVICE),
        format!("{}:", dlq_headers::REASON),
        format!("{}:", dlq_headers::ERROR),
        "\tacme\tnot an event".to_owned(),
    ] {
        assert!(line.contains(&expected), "no {expected} in:\n{line}");
    }

    // The projector's group: the committed offsets kafka-consumer-groups reads are the ones
    // aispm stored, and its lag is the lag aispm exports, partition by partition.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let kafka = group_offsets(&bootstrap, "aispm-projector");
        let ours = metric_lag(&p).await;
        // A partition nothing was ever written to has no committed offset ("-"): there is no
        // lag to compare, only an end of 0 to check.
        let theirs: BTreeMap<(String, i32), i64> = kafka
            .iter()
            .filter(|(_, (cur, _, _))| *cur >= 0)
            .map(|(tp, (_, _, lag))| (tp.clone(), *lag))
            .collect();
        let settled = !theirs.is_empty()
            && kafka
                .values()
                .all(|(cur, end, _)| if *cur >= 0 { cur == end } else { *end == 0 })
            && kafka.values().map(|(_, end, _)| end).sum::<i64>() > 0;
        // Once the group stands at the ends, every record applied is durable: nothing is left
        // for a crash to replay, partition by partition.
        let unflushed = metric_by_partition(&p, "aispm_projector_unflushed_records").await;
        let durable = theirs.keys().all(|tp| unflushed.get(tp) == Some(&0));
        if settled && durable && theirs.iter().all(|(tp, lag)| ours.get(tp) == Some(lag)) {
            let consumed: i64 = kafka.values().map(|(cur, _, _)| (*cur).max(0)).sum();
            println!(
                "kafka-consumer-groups: {} partitions, {consumed} records consumed, lag 0 as aispm_projector_consumer_lag_messages says",
                kafka.len()
            );
            break;
        }
        assert!(
            Instant::now() < deadline,
            "kafka-consumer-groups and aispm disagree or never settle:\nkafka: {kafka:?}\naispm: {ours:?}\nunflushed: {unflushed:?}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}
