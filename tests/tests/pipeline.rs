//! The whole pipeline as the demo runs it: ingest → projector → gatekeeper → reporter → SMTP →
//! delivery audit → projector → gatekeeper. Every production blocker of the scenario opens,
//! remediation clears all but report delivery, and a real delivery makes the tenant ready.

use aispm_schemas::Codec;
use aispm_schemas::readiness::Blocker;
use aispm_tests::demo::{Pipeline, blocker_kinds};
use aispm_tests::kafka::read_all;
use std::collections::BTreeMap;
use std::time::Duration;

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

    p.emit("remediate").unwrap();
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
