//! Schema fingerprints: the Parsing Canonical Form and CRC-64-AVRO (the Rabin fingerprint the
//! Avro specification defines for single-object encoding).
//!
//! The canonical form is computed here from the schema's JSON, following the specification's
//! transformation rules, because `apache-avro` 0.21 keeps logical-type primitives as
//! `{"type":"long"}` where the specification (and Java, fastavro) reduce them to `"long"`, which
//! changes the fingerprint of every schema with a timestamp.

use serde_json::{Map, Value};

/// The schema's fingerprint: CRC-64-AVRO of its Parsing Canonical Form.
pub fn schema_fingerprint(schema_json: &str) -> Result<u64, String> {
    Ok(crc64_avro(parsing_canonical_form(schema_json)?.as_bytes()))
}

/// The Parsing Canonical Form of a schema given as JSON text.
pub fn parsing_canonical_form(schema_json: &str) -> Result<String, String> {
    let value: Value = serde_json::from_str(schema_json).map_err(|e| e.to_string())?;
    let mut out = String::new();
    canonical(&value, None, &mut out)?;
    Ok(out)
}

const PRIMITIVES: [&str; 8] = [
    "null", "boolean", "int", "long", "float", "double", "bytes", "string",
];

fn full_name(name: &str, namespace: Option<&str>) -> String {
    match namespace {
        Some(ns) if !name.contains('.') && !ns.is_empty() && !PRIMITIVES.contains(&name) => {
            format!("{ns}.{name}")
        }
        _ => name.to_owned(),
    }
}

fn push_str(out: &mut String, s: &str) {
    out.push_str(&Value::String(s.to_owned()).to_string());
}

fn canonical(v: &Value, namespace: Option<&str>, out: &mut String) -> Result<(), String> {
    match v {
        Value::String(name) => push_str(out, &full_name(name, namespace)),
        Value::Array(branches) => {
            out.push('[');
            for (i, b) in branches.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                canonical(b, namespace, out)?;
            }
            out.push(']');
        }
        Value::Object(m) => canonical_object(m, namespace, out)?,
        other => return Err(format!("not a schema: {other}")),
    }
    Ok(())
}

fn canonical_object(
    m: &Map<String, Value>,
    namespace: Option<&str>,
    out: &mut String,
) -> Result<(), String> {
    let ty = m.get("type").ok_or("schema object without type")?;
    let Value::String(ty) = ty else {
        // {"type": <schema>} is that schema.
        return canonical(ty, namespace, out);
    };
    match ty.as_str() {
        "record" | "error" | "enum" | "fixed" => {
            let name = m
                .get("name")
                .and_then(Value::as_str)
                .ok_or("named type without name")?;
            let own_ns = if name.contains('.') {
                name.rsplit_once('.').map(|(ns, _)| ns)
            } else {
                m.get("namespace").and_then(Value::as_str).or(namespace)
            };
            out.push_str("{\"name\":");
            push_str(out, &full_name(name, own_ns));
            out.push_str(",\"type\":");
            push_str(out, if ty == "error" { "record" } else { ty });
            if let Some(Value::Array(fields)) = m.get("fields") {
                out.push_str(",\"fields\":[");
                for (i, f) in fields.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    let fname = f
                        .get("name")
                        .and_then(Value::as_str)
                        .ok_or("field without name")?;
                    out.push_str("{\"name\":");
                    push_str(out, fname);
                    out.push_str(",\"type\":");
                    canonical(f.get("type").ok_or("field without type")?, own_ns, out)?;
                    out.push('}');
                }
                out.push(']');
            }
            if let Some(Value::Array(symbols)) = m.get("symbols") {
                out.push_str(",\"symbols\":");
                out.push_str(&Value::Array(symbols.clone()).to_string());
            }
            if let Some(size) = m.get("size") {
                out.push_str(",\"size\":");
                out.push_str(&size.to_string());
            }
            out.push('}');
        }
        "array" => {
            out.push_str("{\"type\":\"array\",\"items\":");
            canonical(m.get("items").ok_or("array without items")?, namespace, out)?;
            out.push('}');
        }
        "map" => {
            out.push_str("{\"type\":\"map\",\"values\":");
            canonical(m.get("values").ok_or("map without values")?, namespace, out)?;
            out.push('}');
        }
        // A primitive, possibly with a logical type: its simple form.
        primitive => push_str(out, &full_name(primitive, namespace)),
    }
    Ok(())
}

const EMPTY: u64 = 0xc15d_213a_a4d7_a795;

const TABLE: [u64; 256] = {
    let mut table = [0u64; 256];
    let mut i = 0;
    while i < 256 {
        let mut fp = i as u64;
        let mut j = 0;
        while j < 8 {
            fp = (fp >> 1) ^ (EMPTY & (0u64.wrapping_sub(fp & 1)));
            j += 1;
        }
        table[i] = fp;
        i += 1;
    }
    table
};

/// The CRC-64-AVRO fingerprint of `bytes` (normally a schema's Parsing Canonical Form).
pub fn crc64_avro(bytes: &[u8]) -> u64 {
    let mut fp = EMPTY;
    for &b in bytes {
        fp = (fp >> 8) ^ TABLE[((fp ^ u64::from(b)) & 0xff) as usize];
    }
    fp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_the_specification_vectors() {
        // Fingerprints of primitive schemas as listed by the Avro reference implementation's tests.
        assert_eq!(crc64_avro(br#""int""#) as i64, 8247732601305521295);
        assert_eq!(crc64_avro(br#""string""#) as i64, -8142146995180207161);
        assert_eq!(crc64_avro(br#""null""#) as i64, 7195948357588979594);
    }

    #[test]
    fn canonical_form_follows_the_specification() {
        let schema = r#"{"type":"record","name":"R","namespace":"n","doc":"x","fields":[
            {"name":"t","type":{"type":"long","logicalType":"timestamp-millis"},"doc":"d"},
            {"name":"e","type":{"type":"enum","name":"E","symbols":["a","b"],"default":"a"}},
            {"name":"o","type":["null","E"],"default":null},
            {"name":"m","type":{"type":"map","values":{"type":"string"}}}]}"#;
        assert_eq!(
            parsing_canonical_form(schema).unwrap(),
            r#"{"name":"n.R","type":"record","fields":[{"name":"t","type":"long"},{"name":"e","type":{"name":"n.E","type":"enum","symbols":["a","b"]}},{"name":"o","type":["null","n.E"]},{"name":"m","type":{"type":"map","values":"string"}}]}"#
        );
    }
}
