//! CSV tables (RFC 4180, CRLF line endings) for auditors and spreadsheets, written with the
//! `csv` crate from typed rows: a table's header is its row type's field names, so a column
//! and its value are named once.
//!
//! Text cells go through [`Text`] (and [`List`]), which neutralises a leading `=`, `+`, `-` or
//! `@` so a spreadsheet never evaluates a cell as a formula; numbers and booleans are written
//! as they are.

use aispm_schemas::Timestamp;
use serde::{Serialize, Serializer};
use std::fmt::Display;

/// Text that a spreadsheet shows as text: a leading `=`, `+`, `-` or `@` gets a `'` before it.
#[derive(Debug, Default)]
pub struct Text<T>(pub T);

impl<T: Display> Serialize for Text<T> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let v = self.0.to_string();
        if v.starts_with(['=', '+', '-', '@']) {
            s.serialize_str(&format!("'{v}"))
        } else {
            s.serialize_str(&v)
        }
    }
}

/// An optional text: empty when absent.
pub fn opt(x: Option<&str>) -> Text<&str> {
    Text(x.unwrap_or_default())
}

/// A list in one cell, its items joined by `;` (guarded as [`Text`]).
#[derive(Debug)]
pub struct List<I>(pub I);

impl<I> Default for List<I>
where
    I: Default,
{
    fn default() -> Self {
        List(I::default())
    }
}

impl<I> Serialize for List<I>
where
    I: Clone + IntoIterator,
    I::Item: Display,
{
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let joined: Vec<String> = self.0.clone().into_iter().map(|x| x.to_string()).collect();
        Text(joined.join(";")).serialize(s)
    }
}

/// A time in RFC 3339; empty when absent.
#[derive(Debug, Default)]
pub struct Time(pub Option<Timestamp>);

impl Serialize for Time {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0.map(Timestamp::to_rfc3339).unwrap_or_default())
    }
}

/// A CSV document of `rows`: the header (the row type's field names), then a line a row. A
/// table without rows still has its header (taken from `R::default()`).
pub fn table<R: Serialize + Default>(rows: impl IntoIterator<Item = R>) -> csv::Result<Vec<u8>> {
    let writer = || {
        csv::WriterBuilder::new()
            .terminator(csv::Terminator::CRLF)
            .from_writer(Vec::new())
    };
    let mut w = writer();
    let mut empty = true;
    for r in rows {
        w.serialize(r)?;
        empty = false;
    }
    if empty {
        // The header alone: a default row written behind it is cut off.
        let mut h = writer();
        h.serialize(R::default())?;
        let bytes = h.into_inner().map_err(|e| e.into_error())?;
        let end = bytes
            .windows(2)
            .position(|w| w == b"\r\n")
            .map_or(bytes.len(), |i| i + 2);
        return Ok(bytes[..end].to_vec());
    }
    w.into_inner().map_err(|e| csv::Error::from(e.into_error()))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[derive(Default, Serialize)]
    struct Row<'a> {
        a: Text<&'a str>,
        b: Text<&'a str>,
        n: i64,
        tags: List<&'a [&'a str]>,
        at: Time,
    }

    #[test]
    fn quoting_and_formula_guard() {
        let rows = [
            Row {
                a: Text("plain"),
                b: Text("x,y"),
                n: -3,
                tags: List(&["p", "=q"]),
                at: Time(None),
            },
            Row {
                a: Text("=cmd()"),
                b: Text("say \"hi\"\nbye"),
                n: 4,
                tags: List(&[]),
                at: Time(Some(Timestamp(0))),
            },
        ];
        let t = String::from_utf8(table(rows).unwrap()).unwrap();
        assert_eq!(
            t,
            "a,b,n,tags,at\r\nplain,\"x,y\",-3,p;=q,\r\n'=cmd(),\"say \"\"hi\"\"\nbye\",4,,1970-01-01T00:00:00.000Z\r\n"
        );
    }

    #[test]
    fn a_list_starting_with_a_formula_is_guarded() {
        let t = table([Row {
            tags: List(&["@SUM(A1)", "b"]),
            ..Row::default()
        }])
        .unwrap();
        assert!(String::from_utf8(t).unwrap().contains(",'@SUM(A1);b,"));
    }

    #[test]
    fn an_empty_table_keeps_its_header() {
        let t = table(Vec::<Row<'_>>::new()).unwrap();
        assert_eq!(String::from_utf8(t).unwrap(), "a,b,n,tags,at\r\n");
    }
}
