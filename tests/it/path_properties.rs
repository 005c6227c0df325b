//! Properties of path normalisation and the route policy, over paths built from a
//! grammar of hostile pieces (dot segments, percent-encodings one to three deep of `.`,
//! `/`, `\`, `%`, controls, UTF-8 and invalid bytes, repeated slashes, random text):
//!
//! - (a) the path forwarded is the path checked: `normalize` is idempotent, its result
//!   gets the same decision as its re-normalised self, and the upstream URI carries it
//!   byte for byte;
//! - (b) no accepted path holds a `.`/`..` segment (also before `;params`), a `/` or `\`
//!   inside a segment, or a control character, after any number of percent-decoding
//!   rounds;
//! - (c) no encoding or case trick lets a token-leaking or org-level route through, even
//!   with an allowlist that would pass every path.
//!
//! The oracles (`refold_oracles`, shared with the fuzz targets) decode and compare
//! independently of `steps::routes`. Inputs the properties once found are pinned by the
//! `found_*` tests at the end.

use std::cell::Cell;
use std::sync::OnceLock;

use http::uri::PathAndQuery;
use http::{Method, Uri};
use proptest::prelude::*;
use proptest::test_runner::{FileFailurePersistence, TestRunner};
use refold_oracles::{decodings, denied_prefix, lenient_reading, segment_flaw, DENIED_PREFIXES};
use refold_proxy::error::ProxyError;
use refold_proxy::steps::routes::{normalize, RoutePolicy, RouteTemplate};
use refold_proxy::steps::upstream::join_uri;

const MAX_PATH: usize = 2048;

/// Cases per property: enough to cover the grammar, quick enough for every CI run.
const CASES: u32 = 10_000;
/// The least share of cases, in percent, that must reach a property's assertions (paths
/// `normalize` accepts): the generator gives about 35 %, and half that is still many
/// standard deviations above what a drifted generator would.
const MIN_ACCEPTED_PERCENT: u32 = 15;
/// The same for request-targets `http` parses and `normalize` accepts (about 31 %).
const MIN_TARGET_PERCENT: u32 = 15;
/// The same for accepted paths under a denied prefix (about 6 %).
const MIN_DENIED_PERCENT: u32 = 3;

/// The methods the properties send, built once.
fn methods() -> &'static [Method] {
    static METHODS: OnceLock<Vec<Method>> = OnceLock::new();
    METHODS.get_or_init(refold_oracles::methods)
}

fn config() -> ProptestConfig {
    ProptestConfig {
        cases: CASES,
        failure_persistence: Some(Box::new(FileFailurePersistence::Direct(
            "proptest-regressions/path_properties.txt",
        ))),
        ..ProptestConfig::default()
    }
}

// ---- decisions and policies ----------------------------------------------------------

fn decision(result: Result<&RouteTemplate, ProxyError>) -> Result<String, &'static str> {
    result.map(ToString::to_string).map_err(|e| e.code())
}

/// The shipped policy: the SDK allowlist.
fn sdk_policy() -> &'static RoutePolicy {
    static POLICY: OnceLock<RoutePolicy> = OnceLock::new();
    POLICY.get_or_init(RoutePolicy::default)
}

/// An allowlist that passes every method on every path of up to 12 segments, so that
/// only the hard deny rules stand between a path and the upstream.
fn permissive() -> &'static RoutePolicy {
    static POLICY: OnceLock<RoutePolicy> = OnceLock::new();
    POLICY.get_or_init(refold_oracles::permissive_policy)
}

// ---- the grammar ----------------------------------------------------------------------

fn push_escape(out: &mut String, byte: u8, upper: bool) {
    if upper {
        out.push_str(&format!("%{byte:02X}"));
    } else {
        out.push_str(&format!("%{byte:02x}"));
    }
}

/// Percent-encodes every byte, then re-encodes `depth - 1` more times. `style` picks, per
/// round, how a `%XY` is hidden again: `%25XY`, `%%3X%3Y` (hex digits encoded) or
/// `%25%3X%3Y`.
fn encode(bytes: &[u8], depth: u8, upper: bool, style: u8) -> String {
    let mut text = String::new();
    for &b in bytes {
        push_escape(&mut text, b, upper);
    }
    for round in 1..depth {
        let mut next = String::new();
        let mut chars = text.as_bytes().iter().copied().peekable();
        while let Some(b) = chars.next() {
            if b != b'%' {
                next.push(char::from(b));
                continue;
            }
            match (style >> (2 * round)) % 3 {
                0 => next.push_str("%25"),
                1 => {
                    next.push('%');
                    for _ in 0..2 {
                        if let Some(d) = chars.next() {
                            push_escape(&mut next, d, upper);
                        }
                    }
                }
                _ => {
                    push_escape(&mut next, b'%', upper);
                    for _ in 0..2 {
                        if let Some(d) = chars.next() {
                            push_escape(&mut next, d, upper);
                        }
                    }
                }
            }
        }
        text = next;
    }
    text
}

/// Bytes worth hiding behind an encoding.
fn payload() -> impl Strategy<Value = Vec<u8>> {
    prop::sample::select(vec![
        b".".to_vec(),
        b"..".to_vec(),
        b"/".to_vec(),
        b"\\".to_vec(),
        b"%".to_vec(),
        b";".to_vec(),
        b"?".to_vec(),
        b"#".to_vec(),
        b"\0".to_vec(),
        b"\t".to_vec(),
        b"\n".to_vec(),
        b"\r".to_vec(),
        b"\x7f".to_vec(),
        "\u{85}".as_bytes().to_vec(),
        "\u{2028}".as_bytes().to_vec(),
        "é".as_bytes().to_vec(),
        "\u{212a}".as_bytes().to_vec(),
        "\u{ff0e}".as_bytes().to_vec(),
        vec![0xff],
        vec![0xc3],
        vec![0xc0, 0xae],
        vec![0xe0, 0x80, 0xae],
        b"a".to_vec(),
        b"-".to_vec(),
        b"k".to_vec(),
    ])
}

fn encoded() -> impl Strategy<Value = String> {
    (payload(), 1u8..=3, any::<bool>(), any::<u8>())
        .prop_map(|(bytes, depth, upper, style)| encode(&bytes, depth, upper, style))
}

fn word() -> impl Strategy<Value = String> {
    prop_oneof![
        prop::sample::select(vec![
            "api",
            "v1",
            "v2",
            "v3",
            "public",
            "f-sdk",
            "org",
            "session",
            "session-token",
            "connect-url",
            "linked-account",
            "workflow",
            "config",
            "slug",
            "integrate",
            "application",
            "hubspot",
            "My%20App",
            "caf%C3%A9",
        ])
        .prop_map(str::to_owned),
        // Regex strategies are slow in debug builds: pick characters instead.
        prop::collection::vec(
            prop::sample::select("ABCZabcekmsxyz0129_~.-".chars().collect::<Vec<_>>()),
            1..=6
        )
        .prop_map(|chars| chars.into_iter().collect()),
    ]
}

fn dots() -> impl Strategy<Value = String> {
    prop::sample::select(vec![
        ".",
        "..",
        "...",
        ".a",
        "a.",
        "..;",
        ".;",
        "..;x=1",
        ".;jsessionid=1",
        "..%3B",
        ". ",
        ".. ",
        "..%20",
        "%2e.",
        ".%2E",
        "\u{ff0e}\u{ff0e}",
    ])
    .prop_map(str::to_owned)
}

fn random_text() -> impl Strategy<Value = String> {
    prop::collection::vec(
        prop_oneof![
            3 => any::<char>(),
            2 => prop::sample::select(vec![
                '%', '.', ';', '\\', '?', '#', ' ', '\0', '\u{7f}', '\u{85}', '\u{212a}', 'k',
                'K', '2', 'e', 'E', 'f', 'F', '5',
            ]),
        ],
        1..6,
    )
    .prop_map(|chars| chars.into_iter().collect())
}

fn segment() -> impl Strategy<Value = String> {
    prop::collection::vec(
        prop_oneof![6 => word(), 3 => dots(), 5 => encoded(), 1 => random_text()],
        1..=3,
    )
    .prop_map(|atoms| atoms.concat())
}

/// A path from the grammar: one or two leading slashes, up to eight segments, single or
/// doubled separators, maybe a trailing slash.
fn grammar_path() -> impl Strategy<Value = String> {
    (
        any::<bool>(),
        prop::collection::vec((segment(), any::<bool>()), 0..7),
        any::<bool>(),
    )
        .prop_map(|(double_lead, segments, trailing)| {
            let mut path = String::from(if double_lead { "//" } else { "/" });
            let last = segments.len();
            for (i, (segment, doubled)) in segments.into_iter().enumerate() {
                path.push_str(&segment);
                if i + 1 < last || trailing {
                    path.push_str(if doubled { "//" } else { "/" });
                }
            }
            path
        })
}

/// A denied route disguised character by character: case, percent-encoding one to three
/// deep, look-alike code points, doubled slashes, then a suffix.
fn disguised_path() -> impl Strategy<Value = String> {
    (
        prop::sample::select(DENIED_PREFIXES.to_vec()),
        // Four bits of trick per character (all zero: the plain prefix), then bits for
        // hex case and nesting style.
        any::<[u64; 3]>(),
        any::<u64>(),
        prop::sample::select(vec![
            "", "/", "/x", "/revoke", ";x=1", ";", "%3Bx", "%3b", "/..;", "/%2e", "s", "-x", "%20",
            ".", "//", "/x/", "%2F", "/;",
        ]),
        any::<bool>(),
        prop::bool::weighted(0.1),
    )
        .prop_map(|(prefix, tricks, bits, suffix, double_lead, ss)| {
            let mut path = String::from(if double_lead { "/" } else { "" });
            for (i, c) in prefix.chars().enumerate() {
                let trick = (tricks[i / 16 % 3] >> (4 * (i % 16))) & 15;
                let upper = (bits >> (i % 64)) & 1 == 1;
                let style = bits.rotate_left(7 * i as u32) as u8;
                match trick {
                    0..=5 => path.push(c),
                    6 | 7 => path.push(c.to_ascii_uppercase()),
                    8 => path.push_str(&encode(c.to_string().as_bytes(), 1, upper, style)),
                    9 => path.push_str(&encode(c.to_string().as_bytes(), 2, upper, style)),
                    10 => path.push_str(&encode(c.to_string().as_bytes(), 3, upper, style)),
                    11 if c == 'k' => path.push('\u{212a}'),
                    11 if c == 's' => path.push('\u{17f}'),
                    12 if c == 'k' => path.push_str(&encode("\u{212a}".as_bytes(), 1, upper, 0)),
                    12 if c == 's' => path.push_str(&encode("\u{17f}".as_bytes(), 1, upper, 0)),
                    12 if c == 'i' => path.push('\u{130}'),
                    13 if c == '/' => path.push_str("//"),
                    14 if c == '/' => path.push_str("/;p/"),
                    _ => path.push(c),
                }
            }
            path.push_str(suffix);
            // Ligatures and sharp s upper-case to two ASCII letters.
            if ss {
                path = path
                    .replacen("ss", "\u{df}", 1)
                    .replacen("st", "\u{fb06}", 1);
            }
            path
        })
}

fn any_path() -> impl Strategy<Value = String> {
    prop_oneof![
        6 => grammar_path(),
        3 => disguised_path(),
        1 => prop::collection::vec(0x20u8..0x7f, 0..40)
            .prop_map(|bytes| format!("/{}", String::from_utf8_lossy(&bytes))),
        1 => prop::collection::vec(any::<char>(), 0..40)
            .prop_map(|chars| format!("/{}", chars.into_iter().collect::<String>())),
    ]
}

// ---- the properties -------------------------------------------------------------------

/// Whether a case reached a property's assertions or was outside what it covers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Case {
    Checked,
    Skipped,
}

/// (a) for one path: everything that must hold if `normalize` accepts it.
fn forwarded_is_checked(raw: &str, policy: &RoutePolicy) -> Result<Case, TestCaseError> {
    let Ok(path) = normalize(raw, MAX_PATH) else {
        return Ok(Case::Skipped);
    };
    let again = normalize(&path, MAX_PATH);
    prop_assert!(
        again.is_ok(),
        "{raw:?} -> {path:?} is refused the second time"
    );
    let again = again.unwrap();
    prop_assert_eq!(&*again, &*path, "normalize is not idempotent on {:?}", raw);
    for method in methods() {
        prop_assert_eq!(
            decision(policy.check(method, &path)),
            decision(policy.check(method, &again)),
            "{} {:?}",
            method,
            raw
        );
    }
    // Only repeated slashes may have changed.
    let mut folded = raw.to_owned();
    while folded.contains("//") {
        folded = folded.replace("//", "/");
    }
    prop_assert_eq!(&*path, folded.as_str());
    Ok(Case::Checked)
}

/// (a), end to end: a request-target hyper could deliver reaches the upstream URI with
/// exactly the checked path, with or without a base path on the upstream.
fn upstream_gets_checked_path(raw: &str) -> Result<Case, TestCaseError> {
    let Ok(target) = PathAndQuery::try_from(raw) else {
        return Ok(Case::Skipped);
    };
    let Ok(path) = normalize(target.path(), MAX_PATH) else {
        return Ok(Case::Skipped);
    };
    for (base, prefix) in [
        ("https://refold.example", ""),
        ("https://refold.example/base/", "/base"),
    ] {
        let base: Uri = base.parse().unwrap();
        let joined = join_uri(&base, &path);
        prop_assert!(joined.is_ok(), "{raw:?}: {path:?} has no upstream URI");
        let joined = joined.unwrap();
        prop_assert_eq!(joined.path(), format!("{prefix}{path}"));
        prop_assert_eq!(joined.query(), None);
    }
    Ok(Case::Checked)
}

/// (b) for one path.
fn nothing_hides(raw: &str) -> Result<Case, TestCaseError> {
    let Ok(path) = normalize(raw, MAX_PATH) else {
        return Ok(Case::Skipped);
    };
    for segment in path.split('/') {
        if let Some(flaw) = segment_flaw(segment) {
            return Err(TestCaseError::fail(format!(
                "{raw:?} accepted as {path:?}: segment {segment:?}: {flaw}"
            )));
        }
    }
    Ok(Case::Checked)
}

/// (c) for one path and one policy.
fn deny_holds(raw: &str) -> Result<Case, TestCaseError> {
    let Ok(path) = normalize(raw, MAX_PATH) else {
        return Ok(Case::Skipped);
    };
    let Some(prefix) = denied_prefix(&path) else {
        return Ok(Case::Skipped);
    };
    for policy in [sdk_policy(), permissive()] {
        for method in methods() {
            prop_assert!(
                policy.check(method, &path).is_err(),
                "{} {:?} (accepted as {:?}) passed, yet it reads as {:?} (under {})",
                method,
                raw,
                path,
                lenient_reading(&path),
                prefix
            );
        }
    }
    Ok(Case::Checked)
}

/// One part of a property: its name, the least share of cases (in percent) that must
/// reach its assertions, and the check.
type Part<'a> = (
    &'a str,
    u32,
    &'a dyn Fn(&str) -> Result<Case, TestCaseError>,
);

/// Runs `parts` of one property over [`CASES`] paths and fails unless each part reached
/// its assertions in at least `min_percent` % of them: the parts skip the paths they do
/// not cover, and a generator that drifted to mostly those would pass checking nothing.
fn run_property(parts: &[Part<'_>]) {
    let checked: Vec<Cell<u32>> = parts.iter().map(|_| Cell::new(0)).collect();
    let mut runner = TestRunner::new(config());
    let result = runner.run(&any_path(), |raw| {
        for ((_, _, part), checked) in parts.iter().zip(&checked) {
            if part(&raw)? == Case::Checked {
                checked.set(checked.get() + 1);
            }
        }
        Ok(())
    });
    if let Err(e) = result {
        panic!("{e}\n{runner}");
    }
    for ((name, min_percent, _), checked) in parts.iter().zip(&checked) {
        let checked = checked.get();
        println!("{name}: {checked} of {CASES} cases checked");
        assert!(
            checked * 100 >= min_percent * CASES,
            "{name}: only {checked} of {CASES} cases reached an assertion (at least \
             {min_percent} % must)"
        );
    }
}

#[test]
fn forwarded_path_is_the_checked_path() {
    run_property(&[
        ("normalize accepted", MIN_ACCEPTED_PERCENT, &|raw| {
            forwarded_is_checked(raw, sdk_policy())
        }),
        (
            "a request-target normalize accepted",
            MIN_TARGET_PERCENT,
            &upstream_gets_checked_path,
        ),
    ]);
}

#[test]
fn accepted_paths_hide_no_dot_segment_separator_or_control() {
    run_property(&[("normalize accepted", MIN_ACCEPTED_PERCENT, &nothing_hides)]);
}

#[test]
fn no_encoding_trick_reaches_a_denied_route() {
    run_property(&[(
        "accepted and under a denied prefix",
        MIN_DENIED_PERCENT,
        &deny_holds,
    )]);
}

#[test]
fn oracles_see_what_they_should() {
    assert_eq!(decodings(b"%25252e").len(), 4);
    assert_eq!(
        segment_flaw("%252e%252E").unwrap(),
        "round 2: dot segment \"..\""
    );
    assert!(segment_flaw("a%2fb").unwrap().contains("separator"));
    assert!(segment_flaw("..;x").unwrap().contains("parameters"));
    assert!(segment_flaw("caf%C3%A9").is_none());
    assert_eq!(
        lenient_reading("/API/v2//Public;x/Session%252DToken/"),
        "/api/v2/public/session-token"
    );
    assert_eq!(
        denied_prefix("/api/v2/public/session-token;a/b"),
        Some("/api/v2/public/session-token")
    );
    assert_eq!(denied_prefix("/api/v2/public/session-tokens"), None);
    assert_eq!(encode(b".", 2, true, 0), "%252E");
    assert_eq!(
        decodings(encode(b".", 3, false, 0b01_01_01).as_bytes())
            .pop()
            .unwrap(),
        b"."
    );
    assert_eq!(
        decodings(encode(b"/", 3, true, 0b10_10_10).as_bytes())
            .pop()
            .unwrap(),
        b"/"
    );
}

/// Regressions the properties found: each input once passed `normalize` and `check`.
#[test]
fn found_dot_segments_with_path_parameters_are_refused() {
    // Servlet-style routers drop `;params` before resolving dot segments, which the deny
    // rules already assume: `..;` is then `..`.
    for raw in [
        "/..;",
        "/api/v1/..;/integrate",
        "/api/v2/f-sdk/slug/..;x=1/config/c",
        "/api/v2/f-sdk/application/.;",
        "/api/v2/f-sdk/application/%2e%2e;",
        "/api/v2/f-sdk/application/%2e%2e%3b",
        "/api/v2/f-sdk/application/%252e%252e%253bx",
    ] {
        assert!(normalize(raw, MAX_PATH).is_err(), "{raw} accepted");
    }
    assert!(normalize("/api/v2/f-sdk/application/a..;b", MAX_PATH).is_ok());
}

#[test]
fn found_unicode_case_tricks_cannot_reach_denied_routes() {
    // KELVIN SIGN lower-cases to `k`; LONG S and SHARP S upper-case to `S` and `SS`.
    let policy = permissive();
    for raw in [
        "/api/v2/public/linked-account",
        "/api/v2/public/lin\u{212a}ed-account",
        "/api/v2/public/lin%E2%84%AAed-account",
        "/api/v2/public/session-to\u{212a}en",
        "/api/v2/public/\u{17f}ession-token",
        "/api/v2/public/se\u{df}ion-token",
        "/api/v2/public/ho\u{fb06}ed-properties",
    ] {
        let path = normalize(raw, MAX_PATH).unwrap();
        assert!(denied_prefix(&path).is_some(), "{raw}");
        for method in methods() {
            assert!(
                policy.check(method, &path).is_err(),
                "{method} {raw} passed"
            );
        }
    }
}
