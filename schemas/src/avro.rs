//! Mapping between the contract's Rust types and Avro values.
//!
//! Every type on the wire implements [`ToAvro`] and [`FromAvro`]. Records and enums get them from
//! the [`avro_record!`](crate::avro_record) and [`avro_enum!`](crate::avro_enum) macros, so a type's
//! field list is written once, in schema order.
//!
//! Encoding writes Avro's binary form directly ([`ToAvro::write_avro`]), without building an
//! `apache_avro::types::Value` tree: the projector encodes a view change per changed row, and the
//! tree (allocated, validated, walked, freed) was the largest cost of its apply path. The bytes
//! are the same as `apache_avro`'s for the published schema (a property test checks every type).
//!
//! Decoding a datum written with the type's own published schema (the common case) reads the
//! bytes straight into the type too ([`FromAvro::read_avro`] over an [`AvroReader`]); a datum
//! written with another schema goes through `apache_avro`'s `Value` tree and schema resolution
//! ([`FromAvro::from_avro`]). The direct reader accepts exactly what `apache_avro` accepts for the
//! published schema and decodes it to the same value, except that it refuses non-canonical varints
//! (a zero final byte, or bits beyond 64) that `apache_avro` reads leniently; a property test in
//! `tests/direct_read.rs` compares both on valid and mutated datums of every record type.

use crate::error::DecodeError;
use crate::time::Timestamp;
use apache_avro::types::Value;
use std::collections::BTreeMap;

/// Largest single allocation the decoder makes for one string, byte array or collection.
pub const MAX_ALLOCATION_BYTES: usize = 4 * 1024 * 1024;

/// Converts a value to its Avro form under the current (reader) schema.
pub trait ToAvro {
    fn to_avro(&self) -> Value;

    /// Appends the value's Avro binary encoding (the same bytes `apache_avro` writes for
    /// [`to_avro`](ToAvro::to_avro) under the published schema).
    fn write_avro(&self, out: &mut Vec<u8>);

    /// Appends an optional field `["null", T]`. Types that are unions themselves override it.
    fn write_avro_option(opt: Option<&Self>, out: &mut Vec<u8>)
    where
        Self: Sized,
    {
        match opt {
            None => write_long(0, out),
            Some(v) => {
                write_long(1, out);
                v.write_avro(out);
            }
        }
    }

    /// The value of an optional field `["null", T]`. Types that are unions themselves override it.
    fn to_avro_option(opt: Option<&Self>) -> Value
    where
        Self: Sized,
    {
        match opt {
            None => Value::Union(0, Box::new(Value::Null)),
            Some(v) => Value::Union(1, Box::new(v.to_avro())),
        }
    }
}

/// Builds a value from its Avro form, resolved to the current (reader) schema.
pub trait FromAvro: Sized {
    fn from_avro(value: Value) -> Result<Self, DecodeError>;

    fn from_avro_option(value: Value) -> Result<Option<Self>, DecodeError> {
        match value {
            Value::Null => Ok(None),
            Value::Union(_, inner) if matches!(*inner, Value::Null) => Ok(None),
            Value::Union(_, inner) => Self::from_avro(*inner).map(Some),
            other => Self::from_avro(other).map(Some),
        }
    }

    /// Reads the value's Avro binary encoding under the published schema (what
    /// [`ToAvro::write_avro`] writes), without building a `Value` tree.
    fn read_avro(r: &mut AvroReader<'_>) -> Result<Self, DecodeError>;

    /// Reads an optional field `["null", T]`. Types that are unions themselves override it.
    fn read_avro_option(r: &mut AvroReader<'_>) -> Result<Option<Self>, DecodeError> {
        match r.union_index(2)? {
            0 => Ok(None),
            _ => Self::read_avro(r).map(Some),
        }
    }
}

/// Avro's `long` (and `int`): zig-zag, then a little-endian base-128 varint.
pub fn write_long(v: i64, out: &mut Vec<u8>) {
    let mut z = ((v << 1) ^ (v >> 63)) as u64;
    while z >= 0x80 {
        out.push((z as u8) | 0x80);
        z >>= 7;
    }
    out.push(z as u8);
}

/// Avro's `string` (and `bytes`): the length as a `long`, then the bytes.
pub fn write_bytes(b: &[u8], out: &mut Vec<u8>) {
    write_long(b.len() as i64, out);
    out.extend_from_slice(b);
}

/// An Avro array: one block of `len` items written by `items`, then the empty block.
fn write_array(len: usize, out: &mut Vec<u8>, items: impl FnOnce(&mut Vec<u8>)) {
    if len > 0 {
        write_long(len as i64, out);
        items(out);
    }
    out.push(0);
}

/// A cursor over one Avro datum in binary encoding, for [`FromAvro::read_avro`].
///
/// Hostile input is an error, never a panic or an unbounded allocation: a declared length or item
/// count is checked against [`MAX_ALLOCATION_BYTES`] (as
/// `apache_avro` checks it) and against the bytes that remain before anything is allocated.
#[derive(Debug)]
pub struct AvroReader<'a> {
    rest: &'a [u8],
}

/// The error for input that ends before the value does.
const ENDS_INSIDE: DecodeError = DecodeError::Truncated("the datum ends inside a field");

impl<'a> AvroReader<'a> {
    pub fn new(datum: &'a [u8]) -> Self {
        AvroReader { rest: datum }
    }

    /// The bytes not read yet.
    pub fn remaining(&self) -> usize {
        self.rest.len()
    }

    /// Ends the datum: every byte must have been read.
    pub fn finish(self) -> Result<(), DecodeError> {
        match self.rest.len() {
            0 => Ok(()),
            n => Err(DecodeError::Trailing(n)),
        }
    }

    /// A `long` (also `int`, enum and union indexes, lengths and block counts): a little-endian
    /// base-128 varint of at most 10 bytes, then zig-zag. Only the shortest encoding is accepted.
    #[inline]
    pub fn long(&mut self) -> Result<i64, DecodeError> {
        let mut z: u64 = 0;
        for (i, &b) in self.rest.iter().enumerate().take(10) {
            z |= u64::from(b & 0x7F) << (7 * i);
            if b & 0x80 == 0 {
                if i > 0 && b == 0 {
                    return Err(DecodeError::Datum(
                        "overlong varint (a shorter encoding exists)".into(),
                    ));
                }
                if i == 9 && b > 1 {
                    return Err(DecodeError::Datum("varint overflows 64 bits".into()));
                }
                self.rest = &self.rest[i + 1..];
                return Ok(((z >> 1) as i64) ^ -((z & 1) as i64));
            }
        }
        if self.rest.len() >= 10 {
            Err(DecodeError::Datum("varint overflows 64 bits".into()))
        } else {
            Err(ENDS_INSIDE)
        }
    }

    /// An `int`: a `long` that fits 32 bits.
    pub fn int(&mut self) -> Result<i32, DecodeError> {
        let v = self.long()?;
        i32::try_from(v).map_err(|_| DecodeError::Datum(format!("int {v} overflows 32 bits")))
    }

    /// A `boolean`: one byte, 0 or 1.
    pub fn boolean(&mut self) -> Result<bool, DecodeError> {
        let (&b, rest) = self.rest.split_first().ok_or(ENDS_INSIDE)?;
        self.rest = rest;
        match b {
            0 => Ok(false),
            1 => Ok(true),
            other => Err(DecodeError::Datum(format!(
                "boolean byte 0x{other:02x} is neither 0 nor 1"
            ))),
        }
    }

    /// A `string`: a length, then that many bytes of UTF-8.
    #[inline]
    pub fn str(&mut self) -> Result<&'a str, DecodeError> {
        let len = self.long()?;
        let len = usize::try_from(len)
            .map_err(|_| DecodeError::Datum(format!("negative string length {len}")))?;
        if len > MAX_ALLOCATION_BYTES {
            return Err(DecodeError::Datum(format!(
                "a string of {len} bytes exceeds the {} byte limit",
                MAX_ALLOCATION_BYTES
            )));
        }
        if len > self.rest.len() {
            return Err(DecodeError::Truncated(
                "a string is longer than the bytes that remain",
            ));
        }
        let (bytes, rest) = self.rest.split_at(len);
        self.rest = rest;
        std::str::from_utf8(bytes)
            .map_err(|e| DecodeError::Datum(format!("string is not UTF-8: {e}")))
    }

    /// A `string`, owned.
    pub fn string(&mut self) -> Result<String, DecodeError> {
        self.str().map(str::to_owned)
    }

    /// An enum symbol: its index into `symbols` (every symbol in schema order).
    pub fn symbol<E: Copy>(&mut self, symbols: &[E], name: &str) -> Result<E, DecodeError> {
        let i = self.long()?;
        usize::try_from(i)
            .ok()
            .and_then(|at| symbols.get(at))
            .copied()
            .ok_or_else(|| {
                DecodeError::Datum(format!(
                    "enum {name} has no symbol {i} (it has {})",
                    symbols.len()
                ))
            })
    }

    /// A union's branch index, below `branches`.
    pub fn union_index(&mut self, branches: usize) -> Result<usize, DecodeError> {
        let i = self.long()?;
        usize::try_from(i)
            .ok()
            .filter(|at| *at < branches)
            .ok_or_else(|| {
                DecodeError::Datum(format!("union has no branch {i} (it has {branches})"))
            })
    }

    /// The item count of the next block of an array (or map); 0 ends it. A negative count is
    /// followed by the block's size in bytes, which is read and not needed.
    ///
    /// Every item type in the contract takes at least one byte, so a count above the bytes that
    /// remain is an error here, before the caller reserves room for the items.
    pub fn block_len(&mut self) -> Result<usize, DecodeError> {
        let count = self.long()?;
        let count = if count < 0 {
            let _size = self.long()?;
            count
                .checked_neg()
                .ok_or_else(|| DecodeError::Datum("block count overflows".into()))?
        } else {
            count
        };
        // Non-negative here.
        let count = usize::try_from(count).unwrap_or(usize::MAX);
        if count > MAX_ALLOCATION_BYTES {
            return Err(DecodeError::Datum(format!(
                "a block of {count} items exceeds the {} item limit",
                MAX_ALLOCATION_BYTES
            )));
        }
        if count > self.rest.len() {
            return Err(DecodeError::Truncated(
                "a block declares more items than bytes remain",
            ));
        }
        Ok(count)
    }

    /// An array, each item read by `item`.
    pub fn array<T>(
        &mut self,
        mut item: impl FnMut(&mut Self) -> Result<T, DecodeError>,
    ) -> Result<Vec<T>, DecodeError> {
        let mut items = Vec::new();
        loop {
            let n = self.block_len()?;
            if n == 0 {
                return Ok(items);
            }
            items.reserve(n);
            for _ in 0..n {
                items.push(item(self)?);
            }
        }
    }
}

/// Reads one field of a record, naming it in the error.
#[inline]
pub fn read_field<T: FromAvro>(
    r: &mut AvroReader<'_>,
    record: &'static str,
    field: &'static str,
) -> Result<T, DecodeError> {
    T::read_avro(r).map_err(|e| e.within(record, field))
}

pub(crate) fn mismatch(expected: &'static str, got: &Value) -> DecodeError {
    DecodeError::Shape(format!("expected {expected}, found {}", value_kind(got)))
}

fn value_kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Boolean(_) => "boolean",
        Value::Int(_) => "int",
        Value::Long(_) => "long",
        Value::String(_) => "string",
        Value::Enum(..) => "enum",
        Value::Union(..) => "union",
        Value::Array(_) => "array",
        Value::Map(_) => "map",
        Value::Record(_) => "record",
        Value::TimestampMillis(_) => "timestamp-millis",
        _ => "another type",
    }
}

impl ToAvro for String {
    fn to_avro(&self) -> Value {
        Value::String(self.clone())
    }
    fn write_avro(&self, out: &mut Vec<u8>) {
        write_bytes(self.as_bytes(), out);
    }
}
impl FromAvro for String {
    fn from_avro(value: Value) -> Result<Self, DecodeError> {
        match value {
            Value::String(s) => Ok(s),
            other => Err(mismatch("string", &other)),
        }
    }
    fn read_avro(r: &mut AvroReader<'_>) -> Result<Self, DecodeError> {
        r.string()
    }
}

impl ToAvro for bool {
    fn to_avro(&self) -> Value {
        Value::Boolean(*self)
    }
    fn write_avro(&self, out: &mut Vec<u8>) {
        out.push(u8::from(*self));
    }
}
impl FromAvro for bool {
    fn from_avro(value: Value) -> Result<Self, DecodeError> {
        match value {
            Value::Boolean(b) => Ok(b),
            other => Err(mismatch("boolean", &other)),
        }
    }
    fn read_avro(r: &mut AvroReader<'_>) -> Result<Self, DecodeError> {
        r.boolean()
    }
}

impl ToAvro for i64 {
    fn to_avro(&self) -> Value {
        Value::Long(*self)
    }
    fn write_avro(&self, out: &mut Vec<u8>) {
        write_long(*self, out);
    }
}
impl FromAvro for i64 {
    fn from_avro(value: Value) -> Result<Self, DecodeError> {
        match value {
            Value::Long(v) | Value::TimestampMillis(v) => Ok(v),
            Value::Int(v) => Ok(i64::from(v)),
            other => Err(mismatch("long", &other)),
        }
    }
    fn read_avro(r: &mut AvroReader<'_>) -> Result<Self, DecodeError> {
        r.long()
    }
}

impl ToAvro for i32 {
    fn to_avro(&self) -> Value {
        Value::Int(*self)
    }
    fn write_avro(&self, out: &mut Vec<u8>) {
        write_long(i64::from(*self), out);
    }
}
impl FromAvro for i32 {
    fn from_avro(value: Value) -> Result<Self, DecodeError> {
        match value {
            Value::Int(v) => Ok(v),
            other => Err(mismatch("int", &other)),
        }
    }
    fn read_avro(r: &mut AvroReader<'_>) -> Result<Self, DecodeError> {
        r.int()
    }
}

impl ToAvro for Timestamp {
    fn to_avro(&self) -> Value {
        Value::TimestampMillis(self.0)
    }
    fn write_avro(&self, out: &mut Vec<u8>) {
        write_long(self.0, out);
    }
}
impl FromAvro for Timestamp {
    fn from_avro(value: Value) -> Result<Self, DecodeError> {
        match value {
            Value::TimestampMillis(v) | Value::Long(v) => Ok(Timestamp(v)),
            other => Err(mismatch("timestamp-millis", &other)),
        }
    }
    fn read_avro(r: &mut AvroReader<'_>) -> Result<Self, DecodeError> {
        r.long().map(Timestamp)
    }
}

impl<T: ToAvro> ToAvro for Option<T> {
    fn to_avro(&self) -> Value {
        T::to_avro_option(self.as_ref())
    }
    fn write_avro(&self, out: &mut Vec<u8>) {
        T::write_avro_option(self.as_ref(), out);
    }
}
impl<T: FromAvro> FromAvro for Option<T> {
    fn from_avro(value: Value) -> Result<Self, DecodeError> {
        T::from_avro_option(value)
    }
    fn read_avro(r: &mut AvroReader<'_>) -> Result<Self, DecodeError> {
        T::read_avro_option(r)
    }
}

impl<T: ToAvro> ToAvro for Vec<T> {
    fn to_avro(&self) -> Value {
        Value::Array(self.iter().map(ToAvro::to_avro).collect())
    }
    fn write_avro(&self, out: &mut Vec<u8>) {
        write_array(self.len(), out, |out| {
            for item in self {
                item.write_avro(out);
            }
        });
    }
}
impl<T: FromAvro> FromAvro for Vec<T> {
    fn from_avro(value: Value) -> Result<Self, DecodeError> {
        match value {
            Value::Array(items) => items.into_iter().map(T::from_avro).collect(),
            other => Err(mismatch("array", &other)),
        }
    }
    fn read_avro(r: &mut AvroReader<'_>) -> Result<Self, DecodeError> {
        r.array(T::read_avro)
    }
}

/// String maps travel as arrays of `{key, value}` records sorted by key: an Avro map's entry order
/// is unspecified, and the same value must always encode to the same bytes.
impl ToAvro for BTreeMap<String, String> {
    fn to_avro(&self) -> Value {
        Value::Array(
            self.iter()
                .map(|(k, v)| {
                    Value::Record(vec![
                        ("key".to_owned(), Value::String(k.clone())),
                        ("value".to_owned(), Value::String(v.clone())),
                    ])
                })
                .collect(),
        )
    }
    fn write_avro(&self, out: &mut Vec<u8>) {
        write_array(self.len(), out, |out| {
            for (k, v) in self {
                write_bytes(k.as_bytes(), out);
                write_bytes(v.as_bytes(), out);
            }
        });
    }
}
impl FromAvro for BTreeMap<String, String> {
    fn from_avro(value: Value) -> Result<Self, DecodeError> {
        match value {
            Value::Array(items) => items
                .into_iter()
                .map(|item| {
                    let mut f = RecordFields::new(item, "Attribute")?;
                    Ok((f.take("key")?, f.take("value")?))
                })
                .collect(),
            other => Err(mismatch("array", &other)),
        }
    }
    fn read_avro(r: &mut AvroReader<'_>) -> Result<Self, DecodeError> {
        let mut map = BTreeMap::new();
        loop {
            let n = r.block_len()?;
            if n == 0 {
                return Ok(map);
            }
            for _ in 0..n {
                // Later duplicates win, as when collecting the `Value` form.
                let key = read_field(r, "Attribute", "key")?;
                let value = read_field(r, "Attribute", "value")?;
                map.insert(key, value);
            }
        }
    }
}

/// The fields of a decoded record, taken out one by one by name.
#[derive(Debug)]
pub struct RecordFields {
    record: &'static str,
    fields: Vec<(String, Value)>,
}

impl RecordFields {
    pub fn new(value: Value, record: &'static str) -> Result<Self, DecodeError> {
        match value {
            Value::Record(fields) => Ok(RecordFields { record, fields }),
            other => Err(mismatch("record", &other)),
        }
    }

    pub fn take<T: FromAvro>(&mut self, name: &'static str) -> Result<T, DecodeError> {
        let at = self
            .fields
            .iter()
            .position(|(n, _)| n == name)
            .ok_or_else(|| DecodeError::Shape(format!("{}.{name} is missing", self.record)))?;
        let (_, value) = self.fields.swap_remove(at);
        T::from_avro(value).map_err(|e| e.within(self.record, name))
    }
}

/// Declares a closed set of symbols: a Rust enum that is an Avro enum on the wire and a lower-case
/// string in JSON. Symbols are listed in schema order.
#[macro_export]
macro_rules! avro_enum {
    ($(#[$meta:meta])* $name:ident { $($(#[$vmeta:meta])* $variant:ident = $symbol:literal),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
        pub enum $name {
            $($(#[$vmeta])* #[serde(rename = $symbol)] $variant),+
        }

        impl $name {
            /// Every symbol, in schema order.
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            /// The Avro symbol (also the JSON string).
            pub fn as_str(self) -> &'static str {
                match self { $($name::$variant => $symbol),+ }
            }

            /// The variant for an Avro symbol.
            pub fn from_symbol(symbol: &str) -> Option<Self> {
                match symbol { $($symbol => Some($name::$variant),)+ _ => None }
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl std::str::FromStr for $name {
            type Err = String;
            fn from_str(s: &str) -> Result<Self, String> {
                Self::from_symbol(s).ok_or_else(|| {
                    let all: Vec<&str> = Self::ALL.iter().map(|v| v.as_str()).collect();
                    format!("unknown {} '{s}' (expected one of: {})", stringify!($name), all.join(", "))
                })
            }
        }

        impl $crate::avro::ToAvro for $name {
            fn to_avro(&self) -> apache_avro::types::Value {
                apache_avro::types::Value::Enum(*self as u32, self.as_str().to_owned())
            }
            fn write_avro(&self, out: &mut Vec<u8>) {
                $crate::avro::write_long(*self as i64, out);
            }
        }

        impl $crate::avro::FromAvro for $name {
            fn from_avro(value: apache_avro::types::Value) -> Result<Self, $crate::DecodeError> {
                match value {
                    apache_avro::types::Value::Enum(_, s) | apache_avro::types::Value::String(s) => {
                        s.parse().map_err($crate::DecodeError::Shape)
                    }
                    other => Err($crate::avro::mismatch("enum", &other)),
                }
            }
            fn read_avro(r: &mut $crate::avro::AvroReader<'_>) -> Result<Self, $crate::DecodeError> {
                r.symbol(Self::ALL, stringify!($name))
            }
        }
    };
}

/// Implements [`ToAvro`] and [`FromAvro`] for a struct whose fields are listed in schema order.
#[macro_export]
macro_rules! avro_record {
    ($ty:ident { $($field:ident),+ $(,)? }) => {
        impl $crate::avro::ToAvro for $ty {
            fn to_avro(&self) -> apache_avro::types::Value {
                apache_avro::types::Value::Record(vec![
                    $((stringify!($field).to_owned(), $crate::avro::ToAvro::to_avro(&self.$field))),+
                ])
            }
            fn write_avro(&self, out: &mut Vec<u8>) {
                $($crate::avro::ToAvro::write_avro(&self.$field, out);)+
            }
        }

        impl $crate::avro::FromAvro for $ty {
            fn from_avro(value: apache_avro::types::Value) -> Result<Self, $crate::DecodeError> {
                let mut fields = $crate::avro::RecordFields::new(value, stringify!($ty))?;
                Ok($ty { $($field: fields.take(stringify!($field))?),+ })
            }
            fn read_avro(r: &mut $crate::avro::AvroReader<'_>) -> Result<Self, $crate::DecodeError> {
                // Struct expressions evaluate their fields in the order written: schema order.
                Ok($ty { $($field: $crate::avro::read_field(r, stringify!($ty), stringify!($field))?),+ })
            }
        }
    };
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::readiness::{Readiness, Stage};
    use MAX_ALLOCATION_BYTES;

    fn long(bytes: &[u8]) -> Result<i64, DecodeError> {
        let mut r = AvroReader::new(bytes);
        let v = r.long()?;
        r.finish()?;
        Ok(v)
    }

    fn is_malformed<T: std::fmt::Debug>(r: Result<T, DecodeError>, what: &str) {
        match r {
            Err(DecodeError::Datum(msg)) => assert!(msg.contains(what), "{msg}"),
            other => panic!("expected a malformed datum ({what}), got {other:?}"),
        }
    }

    #[test]
    fn longs_read_back_what_write_long_writes() {
        for v in [
            0,
            1,
            -1,
            63,
            -64,
            64,
            -65,
            i64::from(i32::MAX),
            i64::from(i32::MIN),
            i64::MAX,
            i64::MIN,
            i64::MAX - 1,
            i64::MIN + 1,
        ] {
            let mut out = Vec::new();
            write_long(v, &mut out);
            assert_eq!(long(&out), Ok(v), "{out:02x?}");
        }
    }

    #[test]
    fn non_canonical_and_overflowing_varints_are_refused() {
        // Zero with a redundant continuation byte; 1 the same way.
        is_malformed(long(&[0x80, 0x00]), "overlong");
        is_malformed(long(&[0x82, 0x80, 0x00]), "overlong");
        // Ten bytes whose last one carries bits beyond 64, and eleven bytes.
        let mut ten = vec![0xFF; 9];
        ten.push(0x02);
        is_malformed(long(&ten), "overflows");
        is_malformed(long(&[0xFF; 11]), "overflows");
        is_malformed(long(&[0xFF; 10]), "overflows");
        // Cut inside the varint.
        assert!(matches!(long(&[0xFF; 9]), Err(DecodeError::Truncated(_))));
        assert!(matches!(long(&[]), Err(DecodeError::Truncated(_))));
    }

    #[test]
    fn ints_must_fit_32_bits() {
        let mut out = Vec::new();
        write_long(i64::from(i32::MAX) + 1, &mut out);
        is_malformed(AvroReader::new(&out).int(), "overflows 32 bits");
        out.clear();
        write_long(i64::from(i32::MIN), &mut out);
        assert_eq!(AvroReader::new(&out).int(), Ok(i32::MIN));
    }

    #[test]
    fn booleans_are_exactly_0_or_1() {
        assert_eq!(AvroReader::new(&[0]).boolean(), Ok(false));
        assert_eq!(AvroReader::new(&[1]).boolean(), Ok(true));
        is_malformed(AvroReader::new(&[2]).boolean(), "neither 0 nor 1");
        assert!(matches!(
            AvroReader::new(&[]).boolean(),
            Err(DecodeError::Truncated(_))
        ));
    }

    #[test]
    fn strings_are_bounded_utf8() {
        assert_eq!(AvroReader::new(&[0x04, b'h', b'i']).str(), Ok("hi"));
        is_malformed(AvroReader::new(&[0x04, 0xC3, 0x28]).str(), "UTF-8");
        is_malformed(AvroReader::new(&[0x03]).str(), "negative");
        assert!(matches!(
            AvroReader::new(&[0x06, b'h', b'i']).str(),
            Err(DecodeError::Truncated(_))
        ));
        let mut huge = Vec::new();
        write_long(MAX_ALLOCATION_BYTES as i64 + 1, &mut huge);
        is_malformed(AvroReader::new(&huge).str(), "limit");
    }

    #[test]
    fn enum_indexes_out_of_range_name_the_enum() {
        assert_eq!(
            AvroReader::new(&[0x04]).symbol(Stage::ALL, "Stage"),
            Ok(Stage::Production)
        );
        is_malformed(
            AvroReader::new(&[0x06]).symbol(Stage::ALL, "Stage"),
            "enum Stage has no symbol 3",
        );
        is_malformed(
            AvroReader::new(&[0x01]).symbol(Stage::ALL, "Stage"),
            "no symbol -1",
        );
    }

    #[test]
    fn union_indexes_out_of_range_are_refused() {
        assert_eq!(AvroReader::new(&[0x02]).union_index(2), Ok(1));
        is_malformed(AvroReader::new(&[0x04]).union_index(2), "no branch 2");
        is_malformed(AvroReader::new(&[0x01]).union_index(2), "no branch -1");
    }

    #[test]
    fn arrays_read_every_block_including_negative_counts_with_sizes() {
        // Block of 1 ("a"), block of -2 with its byte size 4 ("b", "c"), end.
        let bytes = [0x02, 0x02, b'a', 0x03, 0x08, 0x02, b'b', 0x02, b'c', 0x00];
        let mut r = AvroReader::new(&bytes);
        assert_eq!(
            Vec::<String>::read_avro(&mut r),
            Ok(vec!["a".to_owned(), "b".to_owned(), "c".to_owned()])
        );
        assert_eq!(r.finish(), Ok(()));
    }

    #[test]
    fn block_counts_beyond_the_input_are_refused_before_allocating() {
        // 1000 items declared, 3 bytes follow.
        let mut bytes = Vec::new();
        write_long(1000, &mut bytes);
        bytes.extend_from_slice(&[0, 0, 0]);
        assert!(matches!(
            Vec::<String>::read_avro(&mut AvroReader::new(&bytes)),
            Err(DecodeError::Truncated(_))
        ));
        // A negative count of i64::MIN has no positive counterpart.
        let mut bytes = Vec::new();
        write_long(i64::MIN, &mut bytes);
        write_long(0, &mut bytes);
        is_malformed(
            Vec::<String>::read_avro(&mut AvroReader::new(&bytes)),
            "overflows",
        );
        // More than the allocation limit, however many bytes follow.
        let mut bytes = Vec::new();
        write_long(-(MAX_ALLOCATION_BYTES as i64) - 1, &mut bytes);
        write_long(1, &mut bytes);
        is_malformed(
            Vec::<String>::read_avro(&mut AvroReader::new(&bytes)),
            "limit",
        );
    }

    #[test]
    fn errors_name_the_record_and_field() {
        // Readiness: tenant "t", stage pilot, ready = 7.
        let bytes = [0x02, b't', 0x02, 0x07];
        match Readiness::read_avro(&mut AvroReader::new(&bytes)) {
            Err(DecodeError::Datum(msg)) => {
                assert!(msg.starts_with("Readiness.ready: "), "{msg}");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn string_maps_read_attribute_records_and_later_duplicates_win() {
        let bytes = [0x04, 0x02, b'k', 0x02, b'1', 0x02, b'k', 0x02, b'2', 0x00];
        let map = BTreeMap::<String, String>::read_avro(&mut AvroReader::new(&bytes)).unwrap();
        assert_eq!(map.get("k").map(String::as_str), Some("2"));
        assert_eq!(map.len(), 1);
    }
}
