//! Arbitrary bytes as a request body: `InputEvent::from_json` on the whole input, and the ingest
//! body parser (`aispm_ingest::body::parse`: one object, an array, NDJSON, CloudEvents single and
//! batched, OTLP traces as JSON and as protobuf) in every format,
//! plus the `Content-Type` parser and the enum parsers the read APIs' query parameters use. Never a panic; and every event the parser accepts must
//! re-parse from its JSON form to itself, encode to Avro (ingest answers 503 otherwise) and
//! decode back to itself.
#![no_main]

use aispm_fuzz::{json_seeds, write_seeds};
use aispm_ingest::body::{self, Format};
use aispm_ingest::otlp::Encoding;
use aispm_ingest::publish;
use aispm_schemas::*;
use libfuzzer_sys::fuzz_target;
use serde_json::Value;
use std::sync::LazyLock;

/// The ingest default is 10 000; lower, so the limit is reachable within `-max_len`.
const MAX_EVENTS: usize = 100;

static CODEC: LazyLock<Codec> = LazyLock::new(Codec::new);

fn accepted(event: &InputEvent) {
    let json = event.to_json();
    let again = InputEvent::from_json(json.clone())
        .unwrap_or_else(|e| panic!("an accepted event's JSON {json} is refused: {e:?}"));
    assert_eq!(&again, event, "from_json(to_json(event)) differs");
    let encoded = publish::encode(&CODEC, std::slice::from_ref(event))
        .unwrap_or_else(|e| panic!("an accepted event does not encode: {e}; {json}"));
    assert_eq!(encoded.len(), 1);
    assert_eq!(encoded[0].tenant_id, event.tenant_id());
    let decoded = match event {
        InputEvent::Decision(_) => CODEC
            .decode::<DecisionEvent>(&encoded[0].payload)
            .map(InputEvent::Decision),
        InputEvent::Approval(_) => CODEC
            .decode::<ApprovalEvent>(&encoded[0].payload)
            .map(InputEvent::Approval),
        InputEvent::Registry(_) => CODEC
            .decode::<RegistryEvent>(&encoded[0].payload)
            .map(InputEvent::Registry),
    }
    .unwrap_or_else(|e| panic!("an accepted event's Avro does not decode: {e}; {json}"));
    assert_eq!(&decoded, event, "Avro round trip differs");
}

fuzz_target!(
    init: {
        write_seeds(json_seeds());
        LazyLock::force(&CODEC);
    },
    |bytes: &[u8]| {
        if let Ok(value) = serde_json::from_slice::<Value>(bytes)
            && let Ok(event) = InputEvent::from_json(value)
        {
            accepted(&event);
        }
        for format in [
            Format::Json,
            Format::Ndjson,
            Format::CloudEvent,
            Format::CloudEventBatch,
            Format::Otlp(Encoding::Json),
            Format::Otlp(Encoding::Protobuf),
        ] {
            // OTLP spans without a tenant fall to the token's only tenant.
            if let Ok(parsed) = body::parse_with(bytes, format, MAX_EVENTS, Timestamp(i64::MAX), Some("acme")) {
                assert!(parsed.items() > 0 || !parsed.ignored.is_empty(), "an empty body parsed");
                assert!(parsed.items() <= MAX_EVENTS, "more items than the limit");
                assert_eq!(parsed.valid(), parsed.events.len());
                // Every rejected item has an error, up to the cap on errors kept.
                assert!(parsed.errors.len() >= parsed.rejected.min(body::MAX_KEPT_ERRORS));
                assert!(parsed.errors.len() <= body::MAX_KEPT_ERRORS);
                for event in &parsed.events {
                    assert!(
                        parsed.tenants.contains(event.tenant_id()),
                        "an event's tenant escaped the authorization set"
                    );
                    accepted(event);
                }
                for g in &parsed.generated {
                    assert!(parsed.events.iter().any(|e| e.event_id() == g.event_id));
                }
            }
        }
        if let Ok(s) = std::str::from_utf8(bytes) {
            let _ = Format::from_content_type(Some(s));
            // The query parameters of the read APIs end in these parsers (projector `kind`,
            // `status`, `severity`; gatekeeper `stage`): axum's `Query` gives them the string.
            let _ = s.parse::<CoverageKind>();
            let _ = s.parse::<FindingStatus>();
            let _ = s.parse::<Risk>();
            let _ = s.parse::<Stage>();
        }
    }
);
