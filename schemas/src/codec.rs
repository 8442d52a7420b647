//! The wire codec: Avro single-object encoding by default, Confluent framing when a schema
//! registry id is known; decoding accepts both and resolves the writer schema to the reader's.
//!
//! A datum written with the reader type's own schema (same fingerprint) is read straight into the
//! type ([`read_datum`]); any other known writer schema goes through `apache_avro`'s `Value` tree
//! and schema resolution.

use crate::avro::{AvroReader, FromAvro, ToAvro};
use crate::error::{DecodeError, EncodeError};
use crate::fingerprint::schema_fingerprint;
use apache_avro::Schema;
use std::collections::HashMap;
use std::sync::{Arc, LazyLock, RwLock};

/// The two bytes that open Avro single-object encoding.
pub const SINGLE_OBJECT_MAGIC: [u8; 2] = [0xC3, 0x01];
/// The byte that opens Confluent schema-registry framing.
pub const CONFLUENT_MAGIC: u8 = 0x00;
/// Zig-zag varint 63: an index no union in the contract has.
const TRUNCATION_SENTINEL: [u8; 1] = [0x7E];
pub use crate::avro::MAX_ALLOCATION_BYTES;

/// A published schema: its text, the parsed form and its CRC-64-AVRO fingerprint.
#[derive(Debug)]
pub struct Published {
    pub name: &'static str,
    pub file: &'static str,
    pub json: &'static str,
    pub schema: Schema,
    pub fingerprint: u64,
}

impl Published {
    fn parse(name: &'static str, file: &'static str, json: &'static str) -> Self {
        // The schemas are compiled in and covered by tests; a parse failure is a build defect.
        let schema = Schema::parse_str(json)
            .unwrap_or_else(|e| panic!("published schema {file} does not parse: {e}"));
        let fingerprint = schema_fingerprint(json)
            .unwrap_or_else(|e| panic!("published schema {file} has no canonical form: {e}"));
        Published {
            name,
            file,
            json,
            schema,
            fingerprint,
        }
    }
}

macro_rules! published {
    ($($ident:ident => $name:literal, $file:literal;)+) => {
        $(
            #[doc = concat!("`", $file, "`")]
            pub static $ident: LazyLock<Published> =
                LazyLock::new(|| Published::parse($name, $file, include_str!(concat!("../avro/", $file))));
        )+
        /// Every schema a decoder knows, current and historical.
        fn all_published() -> Vec<&'static Published> {
            vec![$(&*$ident),+]
        }
    };
}

published! {
    DECISION_EVENT => "DecisionEvent", "decision_event.avsc";
    APPROVAL_EVENT => "ApprovalEvent", "approval_event.avsc";
    REGISTRY_EVENT => "RegistryEvent", "registry_event.avsc";
    REPORT_DELIVERY_EVENT => "ReportDeliveryEvent", "report_delivery_event.avsc";
    VIEW_CHANGE => "ViewChange", "view_change.avsc";
    BLOCKER => "Blocker", "blocker.avsc";
    READINESS => "Readiness", "readiness.avsc";
    DECISION_EVENT_V1 => "DecisionEvent", "v1/decision_event.avsc";
    DECISION_EVENT_V2 => "DecisionEvent", "v2/decision_event.avsc";
    VIEW_CHANGE_V1 => "ViewChange", "v1/view_change.avsc";
    VIEW_CHANGE_V2 => "ViewChange", "v2/view_change.avsc";
    VIEW_CHANGE_V3 => "ViewChange", "v3/view_change.avsc";
    VIEW_CHANGE_V4 => "ViewChange", "v4/view_change.avsc";
    REGISTRY_EVENT_V1 => "RegistryEvent", "v1/registry_event.avsc";
}

/// Writer schemas by fingerprint.
static WRITERS: LazyLock<HashMap<u64, &'static Published>> = LazyLock::new(|| {
    apache_avro::util::max_allocation_bytes(MAX_ALLOCATION_BYTES);
    all_published()
        .into_iter()
        .map(|p| (p.fingerprint, p))
        .collect()
});

/// A contract type with a published (current) schema.
pub trait Record: ToAvro + FromAvro {
    fn published() -> &'static Published;
}

macro_rules! record {
    ($($ty:ty => $schema:ident),+ $(,)?) => {
        $(impl Record for $ty {
            fn published() -> &'static Published {
                &$schema
            }
        })+
    };
}

record! {
    crate::events::DecisionEvent => DECISION_EVENT,
    crate::events::ApprovalEvent => APPROVAL_EVENT,
    crate::events::RegistryEvent => REGISTRY_EVENT,
    crate::events::ReportDeliveryEvent => REPORT_DELIVERY_EVENT,
    crate::views::ViewChange => VIEW_CHANGE,
    crate::readiness::Blocker => BLOCKER,
    crate::readiness::Readiness => READINESS,
}

/// Encodes and decodes contract records. Cheap to clone; clones share the schema-id tables.
#[derive(Debug, Clone, Default)]
pub struct Codec {
    registry: Arc<RwLock<RegistryIds>>,
}

#[derive(Debug, Default)]
struct RegistryIds {
    /// Writer schemas and their fingerprints by schema-registry id (for Confluent framing).
    by_id: HashMap<u32, (Arc<Schema>, u64)>,
    /// The id to frame each record type with when encoding (by record name).
    write_id: HashMap<&'static str, u32>,
}

impl Codec {
    /// A codec without a schema registry: writes single-object encoding.
    pub fn new() -> Self {
        Self::default()
    }

    /// Teaches the codec a schema-registry id, so Confluent-framed records with it decode.
    pub fn register_schema_id(&self, id: u32, schema_json: &str) -> Result<(), String> {
        let schema = Schema::parse_str(schema_json).map_err(|e| e.to_string())?;
        let fingerprint = schema_fingerprint(schema_json)?;
        self.write_lock()
            .by_id
            .insert(id, (Arc::new(schema), fingerprint));
        Ok(())
    }

    /// Frames records of type `T` with Confluent framing and `id` from now on.
    pub fn use_schema_id<T: Record>(&self, id: u32) {
        let mut ids = self.write_lock();
        let published = T::published();
        ids.by_id.insert(
            id,
            (Arc::new(published.schema.clone()), published.fingerprint),
        );
        ids.write_id.insert(T::published().name, id);
    }

    fn write_lock(&self) -> std::sync::RwLockWriteGuard<'_, RegistryIds> {
        self.registry
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn read_lock(&self) -> std::sync::RwLockReadGuard<'_, RegistryIds> {
        self.registry
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Encodes with Confluent framing if an id is known for `T`, else single-object encoding.
    pub fn encode<T: Record>(&self, value: &T) -> Result<Vec<u8>, EncodeError> {
        let id = self.read_lock().write_id.get(T::published().name).copied();
        match id {
            Some(id) => encode_confluent(id, value),
            None => encode_single_object(value),
        }
    }

    /// Decodes either framing into `T`, resolving the writer schema to `T`'s schema.
    pub fn decode<T: Record>(&self, bytes: &[u8]) -> Result<T, DecodeError> {
        let reader = T::published();
        match bytes {
            [] => Err(DecodeError::Empty),
            [0xC3, 0x01, rest @ ..] => {
                let (fp, datum) = rest.split_first_chunk::<8>().ok_or(DecodeError::Truncated(
                    "single-object header needs 10 bytes",
                ))?;
                let fp = u64::from_le_bytes(*fp);
                if fp == reader.fingerprint {
                    return read_datum(datum);
                }
                let writer = WRITERS
                    .get(&fp)
                    .ok_or(DecodeError::UnknownFingerprint(fp))?;
                decode_datum(&writer.schema, false, reader, datum)
            }
            [CONFLUENT_MAGIC, rest @ ..] => {
                let (id, datum) = rest
                    .split_first_chunk::<4>()
                    .ok_or(DecodeError::Truncated("Confluent header needs 5 bytes"))?;
                let id = u32::from_be_bytes(*id);
                let (writer, fp) = self
                    .read_lock()
                    .by_id
                    .get(&id)
                    .cloned()
                    .ok_or(DecodeError::UnknownSchemaId(id))?;
                if fp == reader.fingerprint {
                    return read_datum(datum);
                }
                decode_datum(&writer, false, reader, datum)
            }
            [first, ..] => Err(DecodeError::Framing(*first)),
        }
    }
}

/// Avro single-object encoding: `C3 01`, the writer schema's fingerprint (little-endian), the datum.
pub fn encode_single_object<T: Record>(value: &T) -> Result<Vec<u8>, EncodeError> {
    let published = T::published();
    exact_bytes(|out| {
        out.extend_from_slice(&SINGLE_OBJECT_MAGIC);
        out.extend_from_slice(&published.fingerprint.to_le_bytes());
        value.write_avro(out);
        Ok(())
    })
}

/// Confluent framing: `00`, the schema id (big-endian), the datum.
pub fn encode_confluent<T: Record>(id: u32, value: &T) -> Result<Vec<u8>, EncodeError> {
    exact_bytes(|out| {
        out.push(CONFLUENT_MAGIC);
        out.extend_from_slice(&id.to_be_bytes());
        value.write_avro(out);
        Ok(())
    })
}

/// What `write` writes, in a vector of exactly its length (or its error). It writes into a
/// scratch buffer kept per thread, so an encoding grows no vector by doubling: the projector
/// holds a batch's encoded view changes and OCSF records until they are published (tens of
/// thousands of them), and a doubled vector is on average a quarter empty, besides the copies
/// made as it grows.
pub fn exact_bytes<E>(write: impl FnOnce(&mut Vec<u8>) -> Result<(), E>) -> Result<Vec<u8>, E> {
    /// A scratch buffer larger than this is dropped after use rather than kept.
    const KEEP: usize = 1 << 20;
    thread_local! {
        static SCRATCH: std::cell::Cell<Vec<u8>> = const { std::cell::Cell::new(Vec::new()) };
    }
    // Taken out of the cell while in use: a nested call (none today) gets a fresh buffer.
    let mut scratch = SCRATCH.take();
    scratch.clear();
    let written = write(&mut scratch);
    let out = written.map(|()| scratch.as_slice().to_vec());
    if scratch.capacity() <= KEEP {
        SCRATCH.set(scratch);
    }
    out
}

/// The datum as `apache_avro` writes it from the value's `Value` form, validated against the
/// published schema: the reference the direct encoder is tested against.
pub fn write_datum_via_value<T: Record>(value: &T) -> Result<Vec<u8>, EncodeError> {
    let published = T::published();
    let fail = |reason: String| EncodeError {
        record: published.name,
        reason,
    };
    let mut writer = apache_avro::GenericSingleObjectWriter::new_with_capacity_and_header_builder(
        &published.schema,
        256,
        CutHeader,
    )
    .map_err(|e| fail(e.to_string()))?;
    let mut out = Vec::new();
    writer
        .write_value_ref(&value.to_avro(), &mut out)
        .map_err(|e| fail(e.to_string()))?;
    out.drain(..CUT_HEADER.len());
    Ok(out)
}

/// Reads a datum written with `T`'s published schema straight into `T`, without a `Value` tree.
/// Bytes after the datum are an error, as on the `Value` path.
pub fn read_datum<T: FromAvro>(datum: &[u8]) -> Result<T, DecodeError> {
    let mut reader = AvroReader::new(datum);
    let value = T::read_avro(&mut reader)?;
    reader.finish()?;
    Ok(value)
}

/// The datum as `apache_avro` reads it under `T`'s published schema (a `Value` tree, then
/// [`FromAvro::from_avro`]): the reference the direct reader is tested and fuzzed against.
pub fn decode_datum_via_value<T: Record>(datum: &[u8]) -> Result<T, DecodeError> {
    let published = T::published();
    decode_datum(&published.schema, true, published, datum)
}

/// The writer needs a 10-to-20-byte header; `write_datum` removes it again.
const CUT_HEADER: [u8; 10] = [0xC3, 0x01, 0, 0, 0, 0, 0, 0, 0, 0];
struct CutHeader;
impl apache_avro::headers::HeaderBuilder for CutHeader {
    fn build_header(&self) -> Vec<u8> {
        CUT_HEADER.to_vec()
    }
}

fn decode_datum<T: FromAvro>(
    writer: &Schema,
    same_schema: bool,
    reader: &Published,
    datum: &[u8],
) -> Result<T, DecodeError> {
    LazyLock::force(&WRITERS); // sets the allocation limit before the first decode
    // apache-avro reads a union index at end of input as null, so a record cut inside its
    // trailing optional fields would decode. A sentinel after the datum, which is not a valid
    // union index, makes truncation an error: a whole datum leaves exactly the sentinel unread.
    let mut input = std::io::Read::chain(datum, &TRUNCATION_SENTINEL[..]);
    let value = apache_avro::from_avro_datum(writer, &mut input, None)
        .map_err(|e| DecodeError::Datum(e.to_string()))?;
    let (rest, sentinel) = input.into_inner();
    if !rest.is_empty() {
        return Err(DecodeError::Trailing(rest.len()));
    }
    if sentinel.is_empty() {
        return Err(DecodeError::Truncated("the datum ends inside a field"));
    }
    let value = if same_schema {
        value
    } else {
        value
            .resolve(&reader.schema)
            .map_err(|e| DecodeError::Incompatible {
                reader: reader.name,
                reason: e.to_string(),
            })?
    };
    T::from_avro(value)
}

/// Every published schema (current and historical), for tools and tests.
pub fn published_schemas() -> Vec<&'static Published> {
    all_published()
}
