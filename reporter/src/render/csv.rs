//! CSV tables (RFC 4180) for auditors and spreadsheets.

/// Quotes a field when it holds a comma, a quote or a line break; neutralises a leading
/// `=`, `+`, `-` or `@` so a spreadsheet never evaluates a cell as a formula.
pub fn field(s: &str) -> String {
    let s = if s.starts_with(['=', '+', '-', '@']) {
        format!("'{s}")
    } else {
        s.to_owned()
    };
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s
    }
}

/// A CSV document: a header row, then rows, CRLF line endings.
pub fn table(headers: &[&str], rows: impl IntoIterator<Item = Vec<String>>) -> Vec<u8> {
    let mut out = String::new();
    let line = |cells: &mut dyn Iterator<Item = String>, out: &mut String| {
        let v: Vec<String> = cells.map(|c| field(&c)).collect();
        out.push_str(&v.join(","));
        out.push_str("\r\n");
    };
    line(&mut headers.iter().map(|h| (*h).to_owned()), &mut out);
    for r in rows {
        line(&mut r.into_iter(), &mut out);
    }
    out.into_bytes()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn quoting_and_formula_guard() {
        assert_eq!(field("plain"), "plain");
        assert_eq!(field("a,b"), "\"a,b\"");
        assert_eq!(field("say \"hi\""), "\"say \"\"hi\"\"\"");
        assert_eq!(field("=cmd()"), "'=cmd()");
        let t = table(&["a", "b"], [vec!["1".into(), "x,y".into()]]);
        assert_eq!(String::from_utf8(t).unwrap(), "a,b\r\n1,\"x,y\"\r\n");
    }
}
