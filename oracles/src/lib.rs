//! Oracles shared by the fuzz targets and the property tests: independent readings of paths, header names, query
//! keys and HTTP/1 request framing, written without reusing the proxy's own helpers; and
//! the whole-exchange differential of the two HTTP/1.1 paths ([`differential`]).

pub mod differential;
pub mod exchange;
pub mod upstream;

use http::Method;
use refold_proxy::config::RoutesConfig;
use refold_proxy::steps::routes::RoutePolicy;

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
            allow.push(format!("{method} {path}"));
        }
    }
    RoutePolicy::new(&RoutesConfig {
        allow,
        ..RoutesConfig::default()
    })
    .expect("templates")
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
            let shown = String::from_utf8_lossy(form);
            return Some(format!("round {round}: not UTF-8: {shown:?}"));
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

/// One request as hyper 1's HTTP/1 server frames it: where its head ends on the wire
/// and whether the head carried both `Content-Length` and `Transfer-Encoding`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FramedRequest {
    /// Offset just past the head's last byte.
    pub head_end: usize,
    /// Both framing fields present (hyper hides this from the service).
    pub conflict: bool,
}

/// The requests hyper dispatches from a byte stream, in order, and whether it stops
/// reading HTTP/1 after the last of them (an error, a connection that closes, HTTP/2)
/// rather than running out of bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WireReading {
    /// Every request hyper would hand to the service.
    pub requests: Vec<FramedRequest>,
    /// Hyper reads no further request from the connection after the last one.
    pub stopped: bool,
}

/// HTTP/2's connection preface, which hyper-util's auto builder looks for first.
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// hyper's default limit on header fields (and on trailer fields).
const MAX_FIELDS: usize = 100;

/// A comma-separated field value holds `token` (hyper's `Connection` reading): visible
/// ASCII only, items trimmed, any case.
fn has_token(value: &[u8], token: &str) -> bool {
    visible(value)
        && value
            .split(|b| *b == b',')
            .any(|item| item.trim_ascii().eq_ignore_ascii_case(token.as_bytes()))
}

/// What `HeaderValue::to_str` accepts: tab and visible ASCII.
fn visible(value: &[u8]) -> bool {
    value
        .iter()
        .all(|b| *b == b'\t' || (0x20..0x7f).contains(b))
}

/// A decimal length as hyper reads one: ASCII digits only, no sign, no overflow.
fn decimal(value: &[u8]) -> Option<u64> {
    if value.is_empty() {
        return None;
    }
    value.iter().try_fold(0u64, |n, b| {
        b.is_ascii_digit()
            .then(|| n.checked_mul(10)?.checked_add(u64::from(b - b'0')))
            .flatten()
    })
}

/// How a request's body is framed after its head, as hyper decides it.
enum Body {
    Length(u64),
    Chunked,
}

/// The end of a chunked body starting at `at`, walked byte by byte the way hyper's
/// chunked decoder does (size digits, optional blanks, `;extensions` without a bare LF,
/// CRLF; data then CRLF; after the last chunk, trailer lines ending in CRLF and a blank
/// line). `Err(())` where hyper refuses the body, `Ok(None)` when the bytes run out.
#[allow(clippy::result_unit_err)]
fn chunked_end(wire: &[u8], mut at: usize) -> Result<Option<usize>, ()> {
    let byte = |i: usize| wire.get(i).copied();
    loop {
        // The size line.
        let mut size: u64 = 0;
        let mut digits = 0;
        loop {
            let Some(b) = byte(at) else { return Ok(None) };
            let digit = match b {
                b'0'..=b'9' => b - b'0',
                b'a'..=b'f' => b - b'a' + 10,
                b'A'..=b'F' => b - b'A' + 10,
                _ => break,
            };
            size = size.checked_mul(16).ok_or(())? + u64::from(digit);
            digits += 1;
            at += 1;
        }
        if digits == 0 {
            return Err(());
        }
        while matches!(byte(at), Some(b' ' | b'\t')) {
            at += 1;
        }
        if byte(at) == Some(b';') {
            loop {
                match byte(at) {
                    None => return Ok(None),
                    Some(b'\r') => break,
                    Some(b'\n') => return Err(()),
                    Some(_) => at += 1,
                }
            }
        }
        match (byte(at), byte(at + 1)) {
            (None, _) | (Some(b'\r'), None) => return Ok(None),
            (Some(b'\r'), Some(b'\n')) => at += 2,
            _ => return Err(()),
        }
        if size > 0 {
            let end = u64::try_from(at)
                .ok()
                .and_then(|at| at.checked_add(size))
                .ok_or(())?;
            if end.saturating_add(2) > wire.len() as u64 {
                // Data, or its CRLF, not all there; a wrong byte in what is there
                // is still an error.
                let tail = usize::try_from(end).map_or(&[][..], |e| wire.get(e..).unwrap_or(&[]));
                if !b"\r\n".starts_with(tail) {
                    return Err(());
                }
                return Ok(None);
            }
            at = usize::try_from(end).map_err(|_| ())?;
            if &wire[at..at + 2] != b"\r\n" {
                return Err(());
            }
            at += 2;
            continue;
        }
        // Trailers: lines up to CR, which must be followed by LF; a blank line ends them.
        let start = at;
        let mut count = 0;
        loop {
            match (byte(at), byte(at + 1)) {
                (None, _) | (Some(b'\r'), None) => return Ok(None),
                (Some(b'\r'), Some(b'\n')) => {
                    at += 2;
                    break;
                }
                (Some(b'\r'), Some(_)) => return Err(()),
                _ => {}
            }
            loop {
                match (byte(at), byte(at + 1)) {
                    (None, _) | (Some(b'\r'), None) => return Ok(None),
                    (Some(b'\r'), Some(b'\n')) => {
                        at += 2;
                        break;
                    }
                    (Some(b'\r'), Some(_)) => return Err(()),
                    _ => at += 1,
                }
            }
            if count >= MAX_FIELDS {
                return Err(());
            }
            count += 1;
        }
        if count > 0 {
            let mut fields = vec![httparse::EMPTY_HEADER; count];
            if !matches!(
                httparse::parse_headers(&wire[start..at], &mut fields),
                Ok(httparse::Status::Complete(_))
            ) {
                return Err(());
            }
        }
        return Ok(Some(at));
    }
}

/// Reads `wire` as hyper 1's HTTP/1 server does (httparse with its default settings and
/// 100 fields, hyper's rules for `Content-Length`, `Transfer-Encoding` and `Connection`,
/// its chunked decoder), without the proxy's framing code. An upgrade or CONNECT request
/// is an ordinary request here: the proxy forwards neither CONNECT nor `Upgrade`, so it
/// never answers 101 or a 2xx to CONNECT, and hyper goes on reading HTTP/1 after it.
pub fn hyper_reading(wire: &[u8]) -> WireReading {
    let mut requests = Vec::new();
    let prefix = wire.len().min(H2_PREFACE.len());
    if prefix > 0 && wire[..prefix] == H2_PREFACE[..prefix] {
        return WireReading {
            requests,
            stopped: true,
        };
    }
    let done = |requests, stopped| WireReading { requests, stopped };
    let mut at = 0;
    while at < wire.len() {
        let mut fields = [httparse::EMPTY_HEADER; MAX_FIELDS];
        let mut request = httparse::Request::new(&mut fields);
        let len = match request.parse(&wire[at..]) {
            Ok(httparse::Status::Complete(len)) => len,
            Ok(httparse::Status::Partial) => return done(requests, false),
            Err(_) => return done(requests, true),
        };
        let (Some(method), Some(path), Some(version)) =
            (request.method, request.path, request.version)
        else {
            return done(requests, true);
        };
        if http::Method::from_bytes(method.as_bytes()).is_err()
            || http::Uri::try_from(path).is_err()
        {
            return done(requests, true);
        }
        let http11 = version == 1;
        let mut keep_alive = http11;
        let mut saw_close = false;
        let (mut is_te, mut is_te_chunked, mut is_cl) = (false, false, false);
        let mut length: Option<u64> = None;
        for field in request.headers.iter() {
            let name = field.name.to_ascii_lowercase();
            match name.as_str() {
                "transfer-encoding" => {
                    if !http11 {
                        return done(requests, true);
                    }
                    is_te = true;
                    length = None;
                    is_te_chunked = visible(field.value)
                        && field
                            .value
                            .rsplit(|b| *b == b',')
                            .next()
                            .is_some_and(|t| t.trim_ascii().eq_ignore_ascii_case(b"chunked"));
                }
                "content-length" => {
                    is_cl = true;
                    if is_te {
                        continue;
                    }
                    let Some(n) = decimal(field.value) else {
                        return done(requests, true);
                    };
                    if length.is_some_and(|prev| prev != n) {
                        return done(requests, true);
                    }
                    length = Some(n);
                }
                "connection" => {
                    if saw_close || has_token(field.value, "close") {
                        saw_close = true;
                        keep_alive = false;
                    } else if !keep_alive {
                        keep_alive = has_token(field.value, "keep-alive");
                    }
                }
                _ => {}
            }
        }
        let body = if is_te {
            if !is_te_chunked {
                return done(requests, true);
            }
            Body::Chunked
        } else {
            let n = length.unwrap_or(0);
            if n > u64::MAX - 2 {
                return done(requests, true);
            }
            Body::Length(n)
        };
        if is_te && is_cl {
            keep_alive = false;
        }
        at += len;
        requests.push(FramedRequest {
            head_end: at,
            conflict: is_te && is_cl,
        });
        if !keep_alive {
            return done(requests, true);
        }
        match body {
            Body::Length(n) => {
                let Some(end) = usize::try_from(n).ok().and_then(|n| at.checked_add(n)) else {
                    return done(requests, false);
                };
                at = end;
            }
            Body::Chunked => match chunked_end(wire, at) {
                Ok(Some(end)) => at = end,
                Ok(None) => return done(requests, false),
                Err(()) => return done(requests, true),
            },
        }
    }
    done(requests, false)
}

/// A body-splitting fuzz input taken apart: its first byte (its low three bits count the
/// cut points that follow it, its top bit asks for [`expand_pieces`]), the cut points,
/// and the body after them.
pub fn cuts_and_body<'a>(
    data: &'a [u8],
    pieces: &[&[u8]],
) -> (u8, &'a [u8], std::borrow::Cow<'a, [u8]>) {
    let first = data.first().copied().unwrap_or(0);
    let n = usize::from(first % 8);
    let rest = data.get(1..).unwrap_or(&[]);
    let (cuts, raw) = rest.split_at(n.min(rest.len()));
    (first, cuts, expand_pieces(raw, pieces, first & 0x80 != 0))
}

/// A fuzz input's wire bytes: `raw` as it is, or, when `expand`, with every byte from
/// `0xc0` on standing for the piece of `pieces` it indexes (a byte past the list stays
/// itself), so the fuzzer reaches whole field lines and chunk frames in a few bytes.
pub fn expand_pieces<'a>(
    raw: &'a [u8],
    pieces: &[&[u8]],
    expand: bool,
) -> std::borrow::Cow<'a, [u8]> {
    if !expand {
        return std::borrow::Cow::Borrowed(raw);
    }
    raw.iter()
        .flat_map(|b| match pieces.get(usize::from(b.wrapping_sub(0xc0))) {
            Some(piece) if *b >= 0xc0 => *piece,
            _ => std::slice::from_ref(b),
        })
        .copied()
        .collect()
}
