//! The shape of the code, as ARCHITECTURE.md describes it: top-level modules import only
//! downwards (no cycle between them), and no source file grows past what one reader can hold.
//!
//! Dependencies are read from the source: every `crate::name` path outside comments, including
//! the names inside `use crate::{a, b::c}` groups, counts as a dependency of the top-level
//! module whose file holds it (tests inside `src/` included: a test that imports upwards ties
//! the modules together just the same).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Longest source file, in lines.
const MAX_LINES: usize = 800;

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let p = e.unwrap().path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

/// The top-level module a file under `src/` belongs to (`None`: lib.rs and main.rs, the roots).
fn top_module(file: &Path) -> Option<String> {
    let rel = file.strip_prefix(src()).ok()?;
    let first = rel.components().next()?.as_os_str().to_str()?;
    let name = first.strip_suffix(".rs").unwrap_or(first);
    (name != "lib" && name != "main").then(|| name.to_string())
}

/// The line without its `//` comment (a `//` inside a string literal is rare enough in `use`
/// paths to be ignored).
fn code_of(line: &str) -> &str {
    match line.find("//") {
        Some(i) => &line[..i],
        None => line,
    }
}

/// The top-level modules named by `crate::` paths in `text`.
fn crate_paths(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut group_depth = 0usize;
    for line in text.lines() {
        let code = code_of(line);
        let mut rest = code;
        while let Some(i) = rest.find("crate::") {
            rest = &rest[i + "crate::".len()..];
            if let Some(group) = rest.strip_prefix('{') {
                // `crate::{a, b::c, d}`: the group may span lines.
                group_depth = 1;
                rest = group;
                names_in_group(&mut rest, &mut group_depth, &mut out);
            } else {
                let name: String = rest
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect();
                if !name.is_empty() {
                    out.insert(name);
                }
            }
        }
        if group_depth > 0 && !code.contains("crate::") {
            let mut rest = code;
            names_in_group(&mut rest, &mut group_depth, &mut out);
        }
    }
    out
}

/// Reads the first-level names of a `use crate::{...}` group from `rest`, tracking nesting.
fn names_in_group(rest: &mut &str, depth: &mut usize, out: &mut BTreeSet<String>) {
    let mut at_item_start = true;
    let mut name = String::new();
    let chars: Vec<char> = rest.chars().collect();
    let mut consumed = 0;
    for c in chars {
        consumed += c.len_utf8();
        match c {
            '{' => {
                *depth += 1;
                at_item_start = false;
            }
            '}' => {
                *depth -= 1;
                if *depth == 0 {
                    break;
                }
            }
            ',' if *depth == 1 => at_item_start = true,
            c if (c.is_ascii_alphanumeric() || c == '_') && *depth == 1 && at_item_start => {
                name.push(c)
            }
            _ => {
                if !name.is_empty() {
                    if name != "self" {
                        out.insert(std::mem::take(&mut name));
                    }
                    name.clear();
                    at_item_start = false;
                }
            }
        }
    }
    if !name.is_empty() && name != "self" {
        out.insert(name);
    }
    *rest = &rest[consumed.min(rest.len())..];
}

/// Top-level module -> the top-level modules it imports.
fn module_graph() -> BTreeMap<String, BTreeSet<String>> {
    let mut files = Vec::new();
    rust_files(&src(), &mut files);
    let modules: BTreeSet<String> = files.iter().filter_map(|f| top_module(f)).collect();
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for f in &files {
        let Some(from) = top_module(f) else { continue };
        let text = std::fs::read_to_string(f).unwrap();
        let deps = graph.entry(from.clone()).or_default();
        for to in crate_paths(&text) {
            if to != from && modules.contains(&to) {
                deps.insert(to);
            }
        }
    }
    graph
}

/// A cycle through `start`, if there is one (depth-first search).
fn cycle_from(graph: &BTreeMap<String, BTreeSet<String>>, start: &str) -> Option<Vec<String>> {
    fn visit(
        graph: &BTreeMap<String, BTreeSet<String>>,
        start: &str,
        node: &str,
        path: &mut Vec<String>,
        seen: &mut BTreeSet<String>,
    ) -> bool {
        for next in graph.get(node).into_iter().flatten() {
            if next == start {
                path.push(next.clone());
                return true;
            }
            if seen.insert(next.clone()) {
                path.push(next.clone());
                if visit(graph, start, next, path, seen) {
                    return true;
                }
                path.pop();
            }
        }
        false
    }
    let mut path = vec![start.to_string()];
    let mut seen = BTreeSet::new();
    visit(graph, start, start, &mut path, &mut seen).then_some(path)
}

#[test]
fn top_level_modules_import_only_downwards() {
    let graph = module_graph();
    assert!(
        graph.len() >= 10,
        "expected the crate's modules, found {graph:?}"
    );
    let cycles: Vec<String> = graph
        .keys()
        .filter_map(|m| cycle_from(&graph, m))
        .map(|c| c.join(" -> "))
        .collect();
    assert!(
        cycles.is_empty(),
        "modules that import each other (ARCHITECTURE.md gives each module the ones it may \
         import):\n{}\n\nthe whole graph:\n{graph:#?}",
        cycles.join("\n")
    );
}

#[test]
fn the_reader_of_use_lines_finds_what_they_import() {
    let text = "use crate::model::Value;\n// use crate::commented::Out;\nuse crate::{\n    config::{self, Settings},\n    device::Device, events,\n};\nlet x = crate::sink::RecordSink::new(); // crate::trailing\n";
    assert_eq!(
        crate_paths(text),
        ["config", "device", "events", "model", "sink"]
            .into_iter()
            .map(String::from)
            .collect()
    );
    // A cycle is found, and only where there is one.
    let mut g: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    g.entry("a".into()).or_default().insert("b".into());
    g.entry("b".into()).or_default().insert("c".into());
    assert_eq!(cycle_from(&g, "a"), None);
    g.entry("c".into()).or_default().insert("a".into());
    assert_eq!(
        cycle_from(&g, "a"),
        Some(vec!["a".into(), "b".into(), "c".into(), "a".into()])
    );
}

#[test]
fn no_source_file_is_longer_than_one_reader_can_hold() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = Vec::new();
    for dir in ["src", "benches"] {
        rust_files(&root.join(dir), &mut files);
    }
    let long: Vec<String> = files
        .iter()
        .filter_map(|f| {
            let n = std::fs::read_to_string(f).unwrap().lines().count();
            (n > MAX_LINES)
                .then(|| format!("{}: {n} lines", f.strip_prefix(root).unwrap().display()))
        })
        .collect();
    assert!(
        long.is_empty(),
        "files over {MAX_LINES} lines (split them along a seam):\n{}",
        long.join("\n")
    );
}
