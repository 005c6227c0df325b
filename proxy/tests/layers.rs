//! The crate's layering, checked from its sources: every `crate::` path a module names
//! must point to its own layer or one below, and no two modules may name each other,
//! directly or around a circle.
//!
//! ```text
//! base (config, error, secret, clock, keyed_hash, telemetry, wire) ← outbound ← steps ← proxy ← process
//! ```
//!
//! A module is a top-level file or folder of `src/` (`config`, `proxy`), or one level
//! below for the four folders that group modules (`steps::tokens`, `process::admin`).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// The folders whose children are modules of their own.
const GROUPS: [&str; 4] = ["steps", "process", "outbound", "telemetry"];

/// A module's layer: it may name only modules of its layer or below.
fn layer(module: &str) -> usize {
    match module.split("::").next().unwrap_or(module) {
        "outbound" => 1,
        "steps" => 2,
        "proxy" => 3,
        "process" => 4,
        // config, error, secret, clock, keyed_hash, telemetry, wire: the base.
        _ => 0,
    }
}

fn sources(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("src is readable") {
        let path = entry.expect("entry").path();
        if path.is_dir() {
            sources(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The module a source file belongs to (`None` for the crate root).
fn module_of(src: &Path, file: &Path) -> Option<String> {
    let relative = file.strip_prefix(src).ok()?.with_extension("");
    let parts: Vec<String> = relative
        .components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect();
    match parts.as_slice() {
        [root] if root == "lib" => None,
        [group, child, ..] if GROUPS.contains(&group.as_str()) => Some(format!("{group}::{child}")),
        [first, ..] => Some(first.clone()),
        [] => None,
    }
}

/// The module a `crate::` path names, from the text after `crate::`.
fn module_named(path: &str) -> Option<String> {
    let mut segments = path
        .split("::")
        .map(|s| s.trim_matches(|c: char| !(c.is_alphanumeric() || c == '_')));
    let first = segments.next().filter(|s| !s.is_empty())?;
    if !first.starts_with(|c: char| c.is_ascii_lowercase()) {
        // `crate::BoxError`, `crate::full_body`: the crate root, the base.
        return None;
    }
    if GROUPS.contains(&first) {
        let child = segments.next().filter(|s| !s.is_empty())?;
        return Some(format!("{first}::{child}"));
    }
    Some(first.to_owned())
}

/// Every module each module names, from the code (comments and doc comments skipped),
/// with `use crate::{a, b::c}` groups read as the paths they list.
fn imports(src: &Path) -> BTreeMap<String, BTreeSet<String>> {
    let mut files = Vec::new();
    sources(src, &mut files);
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for file in files {
        let Some(from) = module_of(src, &file) else {
            continue;
        };
        let text = std::fs::read_to_string(&file).expect("source is readable");
        let code: String = text
            .lines()
            .filter(|line| !line.trim_start().starts_with("//"))
            .collect::<Vec<_>>()
            .join("\n");
        let targets = graph.entry(from.clone()).or_default();
        for (at, _) in code.match_indices("crate::") {
            let rest = &code[at + "crate::".len()..];
            let named: Vec<String> = if let Some(group) = rest.strip_prefix('{') {
                let end = group.find('}').unwrap_or(group.len());
                group[..end].split(',').filter_map(module_named).collect()
            } else {
                let end = rest
                    .find(|c: char| !(c.is_alphanumeric() || c == '_' || c == ':'))
                    .unwrap_or(rest.len());
                module_named(&rest[..end]).into_iter().collect()
            };
            for to in named {
                if to != from {
                    targets.insert(to);
                }
            }
        }
    }
    graph
}

fn crate_src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

#[test]
fn no_module_names_a_module_of_a_higher_layer() {
    let graph = imports(&crate_src());
    assert!(graph.len() > 20, "the sources were read: {graph:?}");
    let upward: Vec<String> = graph
        .iter()
        .flat_map(|(from, targets)| {
            targets
                .iter()
                .filter(|to| layer(to) > layer(from))
                .map(move |to| format!("{from} -> {to}"))
        })
        .collect();
    assert!(upward.is_empty(), "imports that run back up: {upward:#?}");
}

#[test]
fn no_two_modules_name_each_other_even_around_a_circle() {
    let graph = imports(&crate_src());
    let circles = circles(&graph);
    assert!(circles.is_empty(), "import circles: {circles:#?}");
}

/// The strongly connected components of more than one module (Tarjan).
fn circles(graph: &BTreeMap<String, BTreeSet<String>>) -> Vec<Vec<String>> {
    struct Walk<'a> {
        graph: &'a BTreeMap<String, BTreeSet<String>>,
        index: BTreeMap<&'a str, usize>,
        low: BTreeMap<&'a str, usize>,
        stack: Vec<&'a str>,
        on_stack: BTreeSet<&'a str>,
        found: Vec<Vec<String>>,
    }
    impl<'a> Walk<'a> {
        fn visit(&mut self, node: &'a str) {
            let n = self.index.len();
            self.index.insert(node, n);
            self.low.insert(node, n);
            self.stack.push(node);
            self.on_stack.insert(node);
            for next in self.graph.get(node).into_iter().flatten() {
                let next = next.as_str();
                if !self.index.contains_key(next) {
                    self.visit(next);
                    let low = self.low[node].min(self.low[next]);
                    self.low.insert(node, low);
                } else if self.on_stack.contains(next) {
                    let low = self.low[node].min(self.index[next]);
                    self.low.insert(node, low);
                }
            }
            if self.low[node] == self.index[node] {
                let mut component = Vec::new();
                while let Some(top) = self.stack.pop() {
                    self.on_stack.remove(top);
                    component.push(top.to_owned());
                    if top == node {
                        break;
                    }
                }
                if component.len() > 1 {
                    component.sort();
                    self.found.push(component);
                }
            }
        }
    }
    let mut walk = Walk {
        graph,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        on_stack: BTreeSet::new(),
        found: Vec::new(),
    };
    for node in graph.keys() {
        if !walk.index.contains_key(node.as_str()) {
            walk.visit(node);
        }
    }
    walk.found
}

#[test]
fn the_checks_see_a_circle_and_an_upward_import() {
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut add = |from: &str, to: &str| {
        graph.entry(from.into()).or_default().insert(to.into());
    };
    add("process::admin", "process::server");
    add("process::server", "process::admin");
    add("steps::upstream", "steps::tokens");
    assert_eq!(
        circles(&graph),
        [vec![
            "process::admin".to_owned(),
            "process::server".to_owned()
        ]]
    );
    assert!(layer("steps::upstream") > layer("outbound::pool"));
    assert!(layer("process::tls") > layer("steps::upstream"));
    assert_eq!(
        module_named("steps::tokens::Token").as_deref(),
        Some("steps::tokens")
    );
    assert_eq!(module_named("config::Store").as_deref(), Some("config"));
    assert_eq!(module_named("BoxError"), None);
    assert_eq!(
        module_of(Path::new("/s"), Path::new("/s/steps/tokens/cache.rs")).as_deref(),
        Some("steps::tokens")
    );
    assert_eq!(
        module_of(Path::new("/s"), Path::new("/s/config/redis.rs")).as_deref(),
        Some("config")
    );
}
