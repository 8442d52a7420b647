//! The house rules that a reader of the code can check by eye, checked here so they stay true:
//! no module of a crate imports, through others, a module that imports it (a cycle makes the
//! order in which a newcomer must read the code undefined).
//!
//! A module is a crate's top-level module (`src/render/tables.rs` belongs to `render`); an
//! arrow is any `crate::{module}` path in its code (comments and doc links left out).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

const CRATES: [&str; 10] = [
    "schemas",
    "runtime",
    "ingest",
    "projector",
    "gatekeeper",
    "reporter",
    "validate",
    "console",
    "tools",
    "tests",
];

fn sources(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let p = e.path();
        if p.is_dir() {
            sources(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// The top-level module a source file belongs to (`None` for the crate root).
fn module_of(src: &Path, file: &Path) -> Option<String> {
    let rel = file.strip_prefix(src).ok()?;
    let first = rel.components().next()?.as_os_str().to_str()?;
    let name = first.strip_suffix(".rs").unwrap_or(first);
    (!matches!(name, "lib" | "main" | "bin")).then(|| name.to_owned())
}

/// Every `crate::{name}` the code (not its comments) names.
fn arrows(code: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for line in code.lines() {
        let line = line.trim_start();
        if line.starts_with("//") {
            continue;
        }
        let line = line.split(" //").next().unwrap_or(line);
        let mut rest = line;
        while let Some(i) = rest.find("crate::") {
            let after = &rest[i + "crate::".len()..];
            let name: String = after
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            if name.is_empty() {
                // `use crate::{a, b}`: each name in the braces.
                if let Some(group) = after.strip_prefix('{') {
                    let group = group.split('}').next().unwrap_or(group);
                    for part in group.split(',') {
                        let n: String = part
                            .trim()
                            .chars()
                            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                            .collect();
                        if !n.is_empty() {
                            out.insert(n);
                        }
                    }
                }
            } else {
                out.insert(name);
            }
            rest = after;
        }
    }
    out
}

/// A cycle in `graph`, if there is one, as the modules along it.
fn cycle(graph: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
    fn visit(
        n: &str,
        graph: &BTreeMap<String, BTreeSet<String>>,
        path: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if let Some(i) = path.iter().position(|p| p == n) {
            let mut c = path[i..].to_vec();
            c.push(n.to_owned());
            return Some(c);
        }
        if done.contains(n) {
            return None;
        }
        path.push(n.to_owned());
        for m in graph.get(n).into_iter().flatten() {
            if let Some(c) = visit(m, graph, path, done) {
                return Some(c);
            }
        }
        path.pop();
        done.insert(n.to_owned());
        None
    }
    let mut done = BTreeSet::new();
    graph
        .keys()
        .find_map(|n| visit(n, graph, &mut Vec::new(), &mut done))
}

#[test]
fn no_crate_has_a_module_cycle() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut found = Vec::new();
    for krate in CRATES {
        let src = root.join(krate).join("src");
        let mut files = Vec::new();
        sources(&src, &mut files);
        assert!(!files.is_empty(), "no sources under {}", src.display());
        let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for f in &files {
            let Some(from) = module_of(&src, f) else {
                continue;
            };
            let code = std::fs::read_to_string(f).unwrap();
            // Unit tests may reach anywhere in their crate.
            let code = code.split("#[cfg(test)]").next().unwrap_or(&code);
            let to = arrows(code);
            let entry = graph.entry(from.clone()).or_default();
            entry.extend(to.into_iter().filter(|m| *m != from));
        }
        // Only arrows to modules of this crate (not `crate::Result`, `crate::Error`…).
        let modules: BTreeSet<String> = graph.keys().cloned().collect();
        for to in graph.values_mut() {
            to.retain(|m| modules.contains(m));
        }
        if let Some(c) = cycle(&graph) {
            found.push(format!("{krate}: {}", c.join(" -> ")));
        }
    }
    assert!(found.is_empty(), "module cycles: {found:#?}");
}

#[test]
fn the_cycle_finder_finds_a_cycle_and_only_one() {
    let g = |edges: &[(&str, &str)]| {
        let mut m: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for (a, b) in edges {
            m.entry((*a).into()).or_default().insert((*b).into());
            m.entry((*b).into()).or_default();
        }
        m
    };
    assert_eq!(
        cycle(&g(&[
            ("api", "center"),
            ("center", "cadence"),
            ("cadence", "center")
        ])),
        Some(vec!["center".into(), "cadence".into(), "center".into()])
    );
    assert_eq!(cycle(&g(&[("api", "center"), ("center", "store")])), None);
    assert_eq!(
        arrows(
            "use crate::{api, store::Store};\n// crate::nope\nlet x = crate::rows::load(); // crate::no"
        ),
        ["api", "rows", "store"].map(String::from).into()
    );
}
