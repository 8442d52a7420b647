//! Decoding DecisionEvents through `apache_avro`'s `Value` tree against the direct reader.
//!
//! `cargo bench -p aispm-schemas --bench decode [-- RECORDS [ROUNDS]]` prints one JSON object:
//! the best and median ns/record of each path over the rounds, on the same framed records.

use aispm_schemas::codec::{decode_datum_via_value, encode_single_object, read_datum};
use aispm_schemas::*;
use std::hint::black_box;
use std::time::Instant;

/// A plausible decision, varied by `i`: some optional fields set, some arrays filled.
fn decision(i: usize) -> DecisionEvent {
    let some = |k: usize, s: String| i.is_multiple_of(k).then_some(s);
    DecisionEvent {
        event_id: format!("evt-{i:08}"),
        tenant_id: format!("tenant-{}", i % 7),
        occurred_at: Timestamp(1_763_719_200_000 + i as i64 * 37),
        source: "gateway-eu-1".into(),
        agent_id: format!("agent-{}", i % 50),
        actor: format!("user-{}@example.com", i % 300),
        environment: Environment::ALL[i % Environment::ALL.len()],
        action_kind: ActionKind::ALL[i % ActionKind::ALL.len()],
        target: format!("/srv/repos/project-{}/src/module_{}.rs", i % 40, i % 13),
        repo: some(2, format!("github.com/acme/project-{}", i % 40)),
        workflow: some(3, "ci/build".into()),
        mcp_server: some(4, "github-mcp".into()),
        mcp_tool: some(4, "create_pull_request".into()),
        model_endpoint: some(5, "https://models.example.com/v1/chat".into()),
        control_id: some(2, format!("CTRL-{:03}", i % 90)),
        policy_id: some(2, "policy-default".into()),
        mode: Mode::ALL[i % 2],
        verdict: Verdict::ALL[i % Verdict::ALL.len()],
        risk: Risk::ALL[i % Risk::ALL.len()],
        data_classes: ["pii", "secret", "phi"][..i % 4]
            .iter()
            .map(|s| (*s).into())
            .collect(),
        synthetic: i.is_multiple_of(10),
        approval_id: some(6, format!("apr-{i:08}")),
        api_key_id: None,
        scopes_used: vec![],
        evidence: i.is_multiple_of(3).then(|| Evidence {
            evidence_id: format!("ev-{i:08}"),
            sha256: "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08".into(),
            uri: format!("s3://evidence/acme/{i:08}.json"),
            signature: Some("bXkgc2lnbmF0dXJlIGJ5dGVzIGluIGJhc2U2NA==".into()),
            key_id: Some("trust-root-1".into()),
        }),
    }
}

/// Runs `decode` over every record `rounds` times; the best and median ns/record.
fn time(rounds: usize, records: &[Vec<u8>], decode: impl Fn(&[u8]) -> DecisionEvent) -> (f64, f64) {
    let mut per_record: Vec<f64> = (0..rounds)
        .map(|_| {
            let start = Instant::now();
            for bytes in records {
                black_box(decode(black_box(bytes)));
            }
            start.elapsed().as_nanos() as f64 / records.len() as f64
        })
        .collect();
    per_record.sort_by(f64::total_cmp);
    (per_record[0], per_record[per_record.len() / 2])
}

fn main() {
    // `cargo bench` passes `--bench`; numbers are ours.
    let mut numbers = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse::<usize>().ok());
    let n = numbers.next().unwrap_or(200_000);
    let rounds = numbers.next().unwrap_or(5).max(1);

    let records: Vec<Vec<u8>> = (0..n)
        .map(|i| encode_single_object(&decision(i)).expect("encodes"))
        .collect();
    let bytes: usize = records.iter().map(Vec::len).sum();
    let codec = Codec::new();
    // Both paths decode the same records to the same values.
    for bytes in records.iter().take(1000) {
        assert_eq!(
            read_datum::<DecisionEvent>(&bytes[10..]),
            decode_datum_via_value::<DecisionEvent>(&bytes[10..])
        );
    }

    let value = time(rounds, &records, |b| {
        decode_datum_via_value::<DecisionEvent>(&b[10..]).expect("decodes")
    });
    let direct = time(rounds, &records, |b| {
        read_datum::<DecisionEvent>(&b[10..]).expect("decodes")
    });
    let codec_decode = time(rounds, &records, |b| {
        codec.decode::<DecisionEvent>(b).expect("decodes")
    });
    println!(
        "{}",
        serde_json::json!({
            "bench": "decode_decision_event",
            "records": n,
            "rounds": rounds,
            "mean_record_bytes": bytes as f64 / n as f64,
            "value_path_ns_per_record": {"best": value.0, "median": value.1},
            "direct_ns_per_record": {"best": direct.0, "median": direct.1},
            "codec_decode_ns_per_record": {"best": codec_decode.0, "median": codec_decode.1},
            "speedup_median": value.1 / direct.1,
        })
    );
}
