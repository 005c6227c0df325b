//! The layering the crate's folders promise, checked on the source: base (config, error,
//! secret, telemetry) ← outbound ← steps ← proxy ← process, and one accept loop below
//! both listeners (admin never reaches into the public server).

use std::path::{Path, PathBuf};

/// Every `.rs` file under `dir` (relative to the crate's `src/`), with its text.
fn sources(dir: &str) -> Vec<(PathBuf, String)> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src").join(dir);
    let mut found = Vec::new();
    let mut pending = vec![root];
    while let Some(path) = pending.pop() {
        if path.is_dir() {
            for entry in std::fs::read_dir(&path).unwrap() {
                pending.push(entry.unwrap().path());
            }
        } else if path.extension().is_some_and(|ext| ext == "rs") {
            let text = std::fs::read_to_string(&path).unwrap();
            found.push((path, text));
        }
    }
    assert!(!found.is_empty(), "no sources under {dir}");
    found
}

/// The files (and lines) under `dir` that name any of the `forbidden` paths.
fn offenders(dir: &str, forbidden: &[&str]) -> Vec<String> {
    let mut out = Vec::new();
    for (path, text) in sources(dir) {
        for (n, line) in text.lines().enumerate() {
            let code = line.trim_start();
            if code.starts_with("//") {
                continue;
            }
            if forbidden.iter().any(|f| code.contains(f)) {
                out.push(format!("{}:{}: {}", path.display(), n + 1, code));
            }
        }
    }
    out
}

#[test]
fn outbound_imports_no_step_proxy_or_process() {
    let found = offenders(
        "outbound",
        &["crate::steps", "crate::proxy", "crate::process"],
    );
    assert!(
        found.is_empty(),
        "outbound reaches up:\n{}",
        found.join("\n")
    );
}

#[test]
fn steps_import_no_process() {
    let found = offenders("steps", &["crate::process"]);
    assert!(found.is_empty(), "steps reach up:\n{}", found.join("\n"));
}

/// `forbidden` module names, as `crate::<folder>::<name>` or `super::<name>` paths.
fn paths(folder: &str, forbidden: &[&str]) -> Vec<String> {
    forbidden
        .iter()
        .flat_map(|name| [format!("{folder}::{name}"), format!("super::{name}")])
        .collect()
}

/// Checks each file of `folder` against the modules it must not import.
fn check_folder(folder: &str, rules: &[(&str, &[&str])]) {
    let mut found = Vec::new();
    for (file, forbidden) in rules {
        let forbidden = paths(folder, forbidden);
        let forbidden: Vec<&str> = forbidden.iter().map(String::as_str).collect();
        found.extend(offenders(&format!("{folder}/{file}"), &forbidden));
    }
    assert!(
        found.is_empty(),
        "import cycle in {folder}:\n{}",
        found.join("\n")
    );
}

#[test]
fn process_files_import_only_those_below_them() {
    // watchdog, tls, connection ← listener ← admin, reload ← server.
    const ABOVE_LISTENER: &[&str] = &["listener", "admin", "reload", "server"];
    check_folder(
        "process",
        &[
            ("watchdog.rs", ABOVE_LISTENER),
            ("tls.rs", ABOVE_LISTENER),
            ("connection.rs", ABOVE_LISTENER),
            ("listener.rs", &["admin", "reload", "server"]),
            ("admin.rs", &["reload", "server"]),
            ("reload.rs", &["admin", "server"]),
        ],
    );
}

#[test]
fn outbound_files_import_only_those_below_them() {
    // connector, protocol ← pool ← client; the store stands alone.
    const ALL: &[&str] = &["connector", "protocol", "pool", "client", "store"];
    check_folder(
        "outbound",
        &[
            ("connector.rs", ALL),
            ("protocol.rs", ALL),
            ("pool.rs", &["pool", "client", "store"]),
            ("client.rs", &["client", "store"]),
            ("store.rs", &["connector", "protocol", "pool", "client"]),
        ],
    );
}
