//! The Node.js side of the SDK and browser tests: their packages, installed on demand.

use std::path::Path;

/// Installs a Node test folder's packages with `npm ci` unless `packages` are all there.
pub(crate) fn npm_install(dir: &Path, packages: &[&str]) {
    let installed = packages.iter().all(|package| {
        dir.join("node_modules")
            .join(package)
            .join("package.json")
            .exists()
    });
    if installed {
        return;
    }
    let status = std::process::Command::new("npm")
        .args(["ci", "--no-audit", "--no-fund"])
        .current_dir(dir)
        .status()
        .expect("npm is needed for the Node tests (install Node.js and npm)");
    assert!(status.success(), "npm ci failed in {}", dir.display());
}
