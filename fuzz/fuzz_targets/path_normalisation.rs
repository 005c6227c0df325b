//! Arbitrary bytes as a request path: `normalize` and `RoutePolicy::check` never panic,
//! and every accepted path keeps the invariants of `tests/it/path_properties.rs`.

#![no_main]

use std::sync::OnceLock;

use http::uri::PathAndQuery;
use http::Uri;
use libfuzzer_sys::fuzz_target;
use refold_proxy::steps::routes::{normalize, RoutePolicy};
use refold_proxy::steps::upstream::join_uri;
use refold_oracles::{denied_prefix, lenient_reading, methods, permissive_policy, segment_flaw};

const MAX_PATH: usize = 2048;

struct Policies {
    default: RoutePolicy,
    permissive: RoutePolicy,
    base: Uri,
}

fn policies() -> &'static Policies {
    static POLICIES: OnceLock<Policies> = OnceLock::new();
    POLICIES.get_or_init(|| Policies {
        default: RoutePolicy::default(),
        permissive: permissive_policy(),
        base: Uri::from_static("https://refold.example/base"),
    })
}

fn decision(
    result: Result<&refold_proxy::steps::routes::RouteTemplate, refold_proxy::error::ProxyError>,
) -> Result<String, &'static str> {
    result.map(ToString::to_string).map_err(|e| e.code())
}

fn check_path(raw: &str) {
    let p = policies();
    let Ok(path) = normalize(raw, MAX_PATH) else {
        return;
    };
    // (a) idempotent, same decision, only repeated slashes changed.
    let again = normalize(&path, MAX_PATH)
        .unwrap_or_else(|e| panic!("{raw:?} -> {path:?} refused the second time: {e}"));
    assert_eq!(again, path, "not idempotent on {raw:?}");
    let mut folded = raw.to_owned();
    while folded.contains("//") {
        folded = folded.replace("//", "/");
    }
    assert_eq!(path, folded, "{raw:?} changed beyond folding slashes");
    // (b) nothing hides behind any depth of encoding.
    for segment in path.split('/') {
        if let Some(flaw) = segment_flaw(segment) {
            panic!("{raw:?} accepted as {path:?}: segment {segment:?}: {flaw}");
        }
    }
    // (c) no denied route passes, even when the allowlist would pass everything.
    let denied = denied_prefix(&path);
    for method in methods() {
        for policy in [&p.default, &p.permissive] {
            let first = decision(policy.check(&method, &path));
            assert_eq!(first, decision(policy.check(&method, &again)));
            if let (Some(prefix), Ok(template)) = (denied, &first) {
                panic!(
                    "{method} {raw:?} passed as {template}, yet reads as {:?} (under {prefix})",
                    lenient_reading(&path)
                );
            }
        }
    }
}

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        check_path(text);
        // A tiny limit must refuse, never panic.
        let _ = normalize(text, 8);
    } else {
        check_path(&String::from_utf8_lossy(data));
    }
    // As hyper would deliver it: the request-target parsed by `http`, the path checked,
    // and the upstream URI carrying exactly that path.
    let Ok(target) = PathAndQuery::try_from(data) else {
        return;
    };
    check_path(target.path());
    if let Ok(path) = normalize(target.path(), MAX_PATH) {
        let joined = join_uri(&policies().base, &path)
            .unwrap_or_else(|e| panic!("{path:?} has no upstream URI: {e}"));
        assert_eq!(joined.path(), format!("/base{path}"));
    }
});
