//! Shared by the fuzz targets: seed corpora generated from the current code (so they follow
//! the schemas' fingerprints and the scenario as they change), and the HTTP request the
//! `http_ingest` target builds from a fuzz input.
//!
//! Seeds are written when `AISPM_FUZZ_SEED_DIR` is set, from each target's `init` (which libFuzzer
//! runs before it reads its corpus directories); `scripts/fuzz.sh` sets it and passes the
//! directory as a second corpus.

use aispm_tools::load::LoadGen;
use aispm_tools::scenario::{self, Phase};
use aispm_schemas::codec::{encode_confluent, encode_single_object};
use aispm_schemas::*;
use serde_json::{Value, json};
use std::path::PathBuf;

#[allow(dead_code, unreachable_pub, clippy::all)]
#[path = "../../schemas/tests/strategies/mod.rs"]
mod strategies;

pub mod http;

/// The environment variable naming the directory seeds are written to.
pub const SEED_DIR_ENV: &str = "AISPM_FUZZ_SEED_DIR";

/// The Confluent schema-registry ids the `avro_decode` target's codec knows: one per record
/// type, and the historical DecisionEvent v1 schema.
pub const CONFLUENT_IDS: [(u32, &str); 8] = [
    (1, "DecisionEvent"),
    (2, "ApprovalEvent"),
    (3, "RegistryEvent"),
    (4, "ReportDeliveryEvent"),
    (5, "ViewChange"),
    (6, "Blocker"),
    (7, "Readiness"),
    (8, "DecisionEvent v1"),
];

/// The codec every `avro_decode` run uses: single-object encoding always, Confluent framing for
/// [`CONFLUENT_IDS`].
pub fn fuzz_codec() -> Codec {
    let codec = Codec::new();
    codec.use_schema_id::<DecisionEvent>(1);
    codec.use_schema_id::<ApprovalEvent>(2);
    codec.use_schema_id::<RegistryEvent>(3);
    codec.use_schema_id::<ReportDeliveryEvent>(4);
    codec.use_schema_id::<ViewChange>(5);
    codec.use_schema_id::<Blocker>(6);
    codec.use_schema_id::<Readiness>(7);
    codec
        .register_schema_id(8, codec::DECISION_EVENT_V1.json)
        .expect("the v1 schema parses");
    codec
}

/// Writes `seeds` to `$AISPM_FUZZ_SEED_DIR` (nothing when it is unset), one file per seed named
/// by a hash of its content.
pub fn write_seeds(seeds: impl IntoIterator<Item = Vec<u8>>) {
    let Some(dir) = std::env::var_os(SEED_DIR_ENV).map(PathBuf::from) else {
        return;
    };
    std::fs::create_dir_all(&dir).expect("creates the seed directory");
    let mut n = 0;
    for seed in seeds {
        let path = dir.join(format!("seed-{:016x}", fnv1a(&seed)));
        std::fs::write(&path, &seed).expect("writes a seed");
        n += 1;
    }
    eprintln!("aispm-fuzz: wrote {n} seeds to {}", dir.display());
}

fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// The demo scenario (both phases) for `acme`, and random load for three other tenants.
pub fn seed_events() -> Vec<InputEvent> {
    let at = Timestamp(1_763_719_200_000);
    let mut events = scenario::demo("acme", Phase::All, at);
    events.extend(LoadGen::new(3, 7, "fuzz").batch(40));
    events
}

/// Well-formed but hostile JSON items: each names something the contract refuses.
pub fn hostile_json() -> Vec<Value> {
    let base = seed_events()
        .into_iter()
        .find(|e| e.kind() == "decision")
        .expect("the scenario has decisions")
        .to_json();
    let with = |field: &str, v: Value| {
        let mut e = base.clone();
        e[field] = v;
        e
    };
    let mut deep = json!("x");
    for _ in 0..64 {
        deep = json!({ "a": [deep] });
    }
    vec![
        with("risk", json!("apocalyptic")),
        with("occurred_at", json!("1970-01-01T00:00:00Z")),
        with("occurred_at", json!("2999-01-01T00:00:00Z")),
        with("occurred_at", json!(i64::MAX)),
        with("occurred_at", json!(-62_135_596_800_001_i64)),
        with("agent_id", json!("a".repeat(300))),
        with("tenant_id", json!("acme\u{0}globex")),
        with("tenant_id", json!("unknown-tenant")),
        with("event_id", Value::Null),
        with("type", json!("gossip")),
        with("data_classes", deep),
        with("target", json!("\u{202e}\u{feff}é")),
    ]
}

/// Seeds for `json_event`: every event alone, the scenario as an array and as NDJSON, and the
/// hostile items.
pub fn json_seeds() -> Vec<Vec<u8>> {
    let events: Vec<Value> = seed_events().iter().map(InputEvent::to_json).collect();
    let mut seeds: Vec<Vec<u8>> = events.iter().map(|e| e.to_string().into_bytes()).collect();
    seeds.push(Value::Array(events[..8].to_vec()).to_string().into_bytes());
    seeds.push(ndjson(&events[..8]).into_bytes());
    // Past http_ingest's 8 KiB body limit (and under -max_len), so that 413 is seeded and
    // libFuzzer's length limit starts above it.
    let mut n = 8;
    while n < events.len() && ndjson(&events[..n]).len() < 9 * 1024 {
        n += 1;
    }
    seeds.push(Value::Array(events[..n].to_vec()).to_string().into_bytes());
    seeds.push(ndjson(&events[..n]).into_bytes());
    // More items than json_event's and http_ingest's limits.
    seeds.push(format!("[{}{{}}]", "{},".repeat(100)).into_bytes());
    seeds.push("{}\n".repeat(101).into_bytes());
    seeds.extend(hostile_json().iter().map(|e| e.to_string().into_bytes()));
    seeds.push(b"[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]".to_vec());
    seeds
}

/// One line per event.
pub fn ndjson(events: &[Value]) -> String {
    events.iter().map(|e| format!("{e}\n")).collect()
}

/// Seeds for `http_ingest`: the JSON seeds as bodies of a default request (`POST /v1/events`,
/// the `acme` token, `application/json`, exact `Content-Length`), and some with other shapes.
pub fn http_seeds() -> Vec<Vec<u8>> {
    let events: Vec<Value> = seed_events().iter().map(InputEvent::to_json).collect();
    let mut seeds: Vec<Vec<u8>> = json_seeds()
        .into_iter()
        .map(|body| http::Shape::default().encode(&body))
        .collect();
    let nd = ndjson(&events[..6]).into_bytes();
    for ct in [http::CT_NDJSON, http::CT_JSONL] {
        let shape = http::Shape {
            content_type: ct,
            ..http::Shape::default()
        };
        seeds.push(shape.encode(&nd));
    }
    let one = events[0].to_string().into_bytes();
    for shape in [
        http::Shape {
            auth: http::AUTH_MISSING,
            ..http::Shape::default()
        },
        http::Shape {
            auth: http::AUTH_OPERATOR,
            ..http::Shape::default()
        },
        http::Shape {
            auth: http::AUTH_OTHER_TENANT,
            ..http::Shape::default()
        },
        http::Shape {
            length: http::LENGTH_MISSING,
            chunk: 7,
            ..http::Shape::default()
        },
        http::Shape {
            method: http::METHOD_GET,
            ..http::Shape::default()
        },
        http::Shape {
            content_type: http::CT_TEXT,
            ..http::Shape::default()
        },
    ] {
        seeds.push(shape.encode(&one));
    }
    seeds
}

/// Seeds for `avro_decode`: every seed event, and values of every record type drawn from the
/// schema tests' strategies, in both framings; and DecisionEvents written with the v1 schema.
pub fn avro_seeds() -> Vec<Vec<u8>> {
    use proptest::strategy::{Strategy, ValueTree};
    use proptest::test_runner::TestRunner;

    fn both<T: Record>(id: u32, v: &T, out: &mut Vec<Vec<u8>>) {
        out.push(encode_single_object(v).expect("encodes"));
        out.push(encode_confluent(id, v).expect("encodes"));
    }
    fn draw<T: Record + std::fmt::Debug>(
        runner: &mut TestRunner,
        strategy: impl Strategy<Value = T>,
        id: u32,
        n: usize,
        out: &mut Vec<Vec<u8>>,
    ) {
        for _ in 0..n {
            let v = strategy.new_tree(runner).expect("draws").current();
            both(id, &v, out);
        }
    }

    let mut out = Vec::new();
    for e in seed_events() {
        match &e {
            InputEvent::Decision(d) => {
                both(1, d, &mut out);
                let datum = v1_datum(d);
                let mut single = vec![0xC3, 0x01];
                single.extend_from_slice(&codec::DECISION_EVENT_V1.fingerprint.to_le_bytes());
                single.extend_from_slice(&datum);
                out.push(single);
                let mut confluent = vec![0, 0, 0, 0, 8];
                confluent.extend_from_slice(&datum);
                out.push(confluent);
            }
            InputEvent::Approval(a) => both(2, a, &mut out),
            InputEvent::Registry(r) => both(3, r, &mut out),
        }
    }
    let mut runner = TestRunner::deterministic();
    draw(&mut runner, strategies::decision(), 1, 10, &mut out);
    draw(&mut runner, strategies::approval(), 2, 10, &mut out);
    draw(&mut runner, strategies::registry(), 3, 10, &mut out);
    draw(&mut runner, strategies::delivery(), 4, 20, &mut out);
    draw(&mut runner, strategies::view_change(), 5, 60, &mut out);
    draw(&mut runner, strategies::blocker(), 6, 20, &mut out);
    draw(&mut runner, strategies::readiness(), 7, 10, &mut out);
    out
}

/// A DecisionEvent's datum as a producer on the v1 schema (before data_classes, approval_id
/// and evidence) writes it.
fn v1_datum(d: &DecisionEvent) -> Vec<u8> {
    use aispm_schemas::avro::ToAvro;
    let apache_avro::types::Value::Record(fields) = d.to_avro() else {
        unreachable!("a record")
    };
    let v1 = &codec::DECISION_EVENT_V1.schema;
    let apache_avro::Schema::Record(schema) = v1 else {
        unreachable!("a record schema")
    };
    let kept: Vec<_> = fields
        .into_iter()
        .filter(|(name, _)| schema.fields.iter().any(|f| &f.name == name))
        .collect();
    apache_avro::to_avro_datum(v1, apache_avro::types::Value::Record(kept)).expect("a v1 record")
}
