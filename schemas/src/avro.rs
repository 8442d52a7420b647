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

use crate::error::DecodeError;
use crate::time::Timestamp;
use apache_avro::types::Value;
use std::collections::BTreeMap;

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
        }
    };
}
