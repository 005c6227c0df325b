//! Oracles shared by the fuzz targets: independent readings of paths, header names and
//! query keys, written without reusing the proxy's own helpers.

use http::Method;
use refold_proxy::config::RoutesConfig;
use refold_proxy::routes::{RoutePolicy, RouteTemplate};

/// Canonical (decoded, case-folded) prefixes that must never pass, whatever the config.
pub const DENIED_PREFIXES: &[&str] = &[
    "/api/v2/public/session-token",
    "/api/v2/public/connect-url",
    "/api/v2/public/connect-code",
    "/api/v2/public/hosted-properties",
    "/api/v2/public/session",
    "/api/v2/public/webhook",
    "/api/v2/public/webhooks",
    "/api/v2/public/org",
    "/api/v2/org",
    "/api/v2/public/linked-account",
];

/// Methods a caller may send, including ones no template names.
pub fn methods() -> Vec<Method> {
    vec![
        Method::GET,
        Method::POST,
        Method::PUT,
        Method::PATCH,
        Method::DELETE,
        Method::HEAD,
        Method::OPTIONS,
        Method::from_bytes(b"PROPFIND").expect("a valid method"),
    ]
}

/// An allowlist that passes every method on every path of up to 12 segments, so only
/// the hard deny rules stand between a path and the upstream.
pub fn permissive_policy() -> RoutePolicy {
    let mut allow = Vec::new();
    for method in ["GET", "POST", "PUT", "PATCH", "DELETE"] {
        let mut path = String::new();
        for i in 0..12 {
            path.push_str(&format!("/{{p{i}}}"));
            allow.push(RouteTemplate::parse(&format!("{method} {path}")).expect("a template"));
        }
    }
    RoutePolicy::new(&RoutesConfig {
        allow,
        ..RoutesConfig::default()
    })
}

fn hex(n: u8) -> Option<u8> {
    match n {
        b'0'..=b'9' => Some(n - b'0'),
        b'a'..=b'f' => Some(n - b'a' + 10),
        b'A'..=b'F' => Some(n - b'A' + 10),
        _ => None,
    }
}

/// One round of percent-decoding, on bytes (`%` not followed by two hex digits stays).
pub fn decode_once(input: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(input.len());
    let mut i = 0;
    while i < input.len() {
        if input[i] == b'%' && i + 2 < input.len() {
            if let (Some(h), Some(l)) = (hex(input[i + 1]), hex(input[i + 2])) {
                out.push(h << 4 | l);
                i += 3;
                continue;
            }
        }
        out.push(input[i]);
        i += 1;
    }
    out
}

/// The text and every decoding of it, until decoding changes nothing more.
pub fn decodings(text: &[u8]) -> Vec<Vec<u8>> {
    let mut forms = vec![text.to_vec()];
    loop {
        let last = forms.last().expect("never empty");
        let next = decode_once(last);
        if &next == last {
            return forms;
        }
        forms.push(next);
    }
}

/// Why a path segment could mean something else to another parser, if it could.
pub fn segment_flaw(segment: &str) -> Option<String> {
    for (round, form) in decodings(segment.as_bytes()).iter().enumerate() {
        let Ok(text) = std::str::from_utf8(form) else {
            return Some(format!("round {round}: not UTF-8"));
        };
        if text == "." || text == ".." {
            return Some(format!("round {round}: dot segment {text:?}"));
        }
        // The deny rules treat `;...` as path parameters an upstream may drop: a
        // `..;x` segment is then a `..` segment.
        let before_params = text.split(';').next().unwrap_or("");
        if before_params == "." || before_params == ".." {
            return Some(format!(
                "round {round}: dot segment with parameters {text:?}"
            ));
        }
        if text.contains(['/', '\\']) {
            return Some(format!("round {round}: separator inside {text:?}"));
        }
        if text.chars().any(char::is_control) {
            return Some(format!("round {round}: control character in {text:?}"));
        }
    }
    None
}

/// The path as the most lenient upstream router could read it: fully decoded, case
/// folded (Unicode: upper then lower case, so `K` (Kelvin), `ſ` and `ß` count as `k`,
/// `s` and `ss`), path parameters dropped, empty segments folded.
pub fn lenient_reading(path: &str) -> String {
    let decoded = decodings(path.as_bytes()).pop().expect("never empty");
    let text = String::from_utf8_lossy(&decoded)
        .to_uppercase()
        .to_lowercase();
    let mut out = String::new();
    for segment in text.split('/') {
        let segment = segment.split(';').next().unwrap_or("");
        if !segment.is_empty() {
            out.push('/');
            out.push_str(segment);
        }
    }
    out
}

/// The denied prefix a path falls under (at a segment boundary), if any.
pub fn denied_prefix(path: &str) -> Option<&'static str> {
    let reading = lenient_reading(path);
    DENIED_PREFIXES.iter().copied().find(|prefix| {
        reading
            .strip_prefix(prefix)
            .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
    })
}

/// A header name or query key folded for comparison: lower case, `_` as `-`.
pub fn fold_name(name: &[u8]) -> Vec<u8> {
    name.iter()
        .map(|b| match b {
            b'_' => b'-',
            b => b.to_ascii_lowercase(),
        })
        .collect()
}

/// `+` as space, then percent-decoded, as `qs` and `URLSearchParams` decode.
pub fn form_decode(text: &str) -> String {
    String::from_utf8_lossy(&decode_once(text.replace('+', " ").as_bytes())).into_owned()
}

/// The top-level name `qs` (Express's default query parser) gives a decoded key:
/// `a[b]` and `a.b` live under `a`, and a key that opens with a bracket group (`[a]`,
/// `[a][b]`) lives under that group's content.
pub fn qs_root(key: &str) -> &str {
    match key.find('[') {
        Some(0) => match key[1..].find([']', '[']) {
            Some(end) if key.as_bytes()[1 + end] == b']' => &key[1..1 + end],
            _ => key,
        },
        Some(open) => &key[..open],
        None => key,
    }
    .split('.')
    .next()
    .unwrap_or("")
}

/// Whether a raw `key=value` pair is a `linked_account_id` to any query parser the
/// upstream may use; returns its decoded value if so.
pub fn account_param(pair: &str) -> Option<String> {
    let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
    let key = form_decode(key);
    let root = qs_root(&key);
    (fold_name(root.trim().as_bytes()) == b"linked-account-id").then(|| form_decode(value))
}
