//! fastavro (Python), given only the published `.avsc` files, decodes what Rust encodes and
//! re-encodes it to identical bytes; Rust decodes what fastavro encodes and re-encodes it to
//! identical bytes. Needs `python3` with `fastavro` (the test script installs it); set
//! `AISPM_PYTHON` to choose the interpreter.

mod strategies;

use aispm_schemas::codec::encode_single_object;
use aispm_schemas::*;
use proptest::strategy::{Strategy, ValueTree};
use proptest::test_runner::{Config, RngAlgorithm, TestRng, TestRunner};
use std::io::Write;
use std::path::Path;
use std::process::Command;
use strategies::*;

fn samples<S: Strategy>(runner: &mut TestRunner, s: S, n: usize) -> Vec<S::Value> {
    (0..n)
        .map(|_| s.new_tree(runner).expect("generates").current())
        .collect()
}

fn line<T: Record>(file: &str, v: &T) -> String {
    let hex = hex(&encode_single_object(v).expect("encodes"));
    format!("{{\"file\":\"{file}\",\"hex\":\"{hex}\"}}\n")
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex"))
        .collect()
}

/// Decodes fastavro's bytes as `T` and checks Rust writes exactly the same bytes back.
fn same_bytes<T: Record>(bytes: &[u8]) -> T {
    let v: T = Codec::new()
        .decode(bytes)
        .unwrap_or_else(|e| panic!("Rust cannot decode fastavro's {}: {e}", T::published().name));
    assert_eq!(
        encode_single_object(&v).expect("encodes"),
        bytes,
        "{} bytes differ",
        T::published().name
    );
    v
}

#[test]
fn fastavro_reads_and_writes_the_published_schemas() {
    let dir = tempfile::tempdir().expect("tempdir");
    let rust_out = dir.path().join("rust.jsonl");
    let py_out = dir.path().join("python.jsonl");
    let mut runner = TestRunner::new_with_rng(
        Config::default(),
        TestRng::from_seed(RngAlgorithm::ChaCha, &[7; 32]),
    );
    let mut out = String::new();
    for v in samples(&mut runner, decision(), 50) {
        out += &line("decision_event.avsc", &v);
    }
    for v in samples(&mut runner, approval(), 50) {
        out += &line("approval_event.avsc", &v);
    }
    for v in samples(&mut runner, registry(), 50) {
        out += &line("registry_event.avsc", &v);
    }
    for v in samples(&mut runner, delivery(), 50) {
        out += &line("report_delivery_event.avsc", &v);
    }
    for v in samples(&mut runner, view_change(), 100) {
        out += &line("view_change.avsc", &v);
    }
    for v in samples(&mut runner, blocker(), 30) {
        out += &line("blocker.avsc", &v);
    }
    for v in samples(&mut runner, readiness(), 30) {
        out += &line("readiness.avsc", &v);
    }
    std::fs::File::create(&rust_out)
        .and_then(|mut f| f.write_all(out.as_bytes()))
        .expect("writes samples");

    let avro_dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("avro");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fastavro_interop.py");
    let python = std::env::var("AISPM_PYTHON").unwrap_or_else(|_| "python3".into());
    let output = Command::new(&python)
        .arg(&script)
        .arg(&avro_dir)
        .arg(&rust_out)
        .arg(&py_out)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {python}: {e}"));
    assert!(
        output.status.success(),
        "fastavro side failed:\n{}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    println!("{}", String::from_utf8_lossy(&output.stdout));

    let written = std::fs::read_to_string(&py_out).expect("python output");
    let mut decoded = 0;
    for l in written.lines() {
        let v: serde_json::Value = serde_json::from_str(l).expect("json line");
        let bytes = unhex(v["hex"].as_str().expect("hex"));
        match v["file"].as_str().expect("file") {
            "decision_event.avsc" => {
                let d: DecisionEvent = same_bytes(&bytes);
                assert_eq!(
                    (d.event_id.as_str(), d.mode, d.risk),
                    ("py-d-1", Mode::Shadow, Risk::Critical)
                );
                assert_eq!(d.data_classes, ["pii", "secret"]);
                assert_eq!(d.evidence.expect("evidence").sha256, "ab".repeat(32));
            }
            "approval_event.avsc" => {
                let a: ApprovalEvent = same_bytes(&bytes);
                assert_eq!(a.kind, ApprovalKind::RiskAccepted);
                assert_eq!(
                    a.expires_at,
                    Some(Timestamp(1_763_719_200_000 + 86_400_000))
                );
            }
            "registry_event.avsc" => {
                let r: RegistryEvent = same_bytes(&bytes);
                assert!(r.asset.is_some() != r.validation.is_some());
                if let Some(a) = r.asset {
                    assert_eq!(
                        a.attributes.get("region").map(String::as_str),
                        Some("eu-west-1")
                    );
                }
            }
            "report_delivery_event.avsc" => {
                let d: ReportDeliveryEvent = same_bytes(&bytes);
                assert_eq!(d.outcome, DeliveryOutcome::Delivered);
            }
            "view_change.avsc" => {
                let c: ViewChange = same_bytes(&bytes);
                let Some(ViewRow::Finding(f)) = c.row else {
                    panic!("expected a finding row")
                };
                assert_eq!(f.rule_id, "AISPM-MCP-001");
            }
            "blocker.avsc" => {
                let b: Blocker = same_bytes(&bytes);
                assert_eq!(b.kind, BlockerKind::EvidenceStale);
            }
            "readiness.avsc" => {
                let r: Readiness = same_bytes(&bytes);
                assert!(!r.ready);
            }
            other => panic!("unexpected file {other}"),
        }
        decoded += 1;
    }
    assert_eq!(decoded, 8);
}
