//! The fast path's request head parser against an independent reading of the same bytes:
//! httparse with hyper's settings (100 fields) and hyper 1's server rules for method,
//! target, `Content-Length`, `Transfer-Encoding`, `Connection`, `Upgrade`, `Expect`,
//! cross-checked with the shared `hyper_reading` oracle for where the head ends.
//!
//! For every input, `wire::head::parse_request` either reads what hyper reads (same
//! method, target, version, fields in order, framing, head length, `close`), or waits
//! exactly when hyper waits, or refuses or declines for a reason the bytes bear out:
//! the deliberate differences listed in the module docs of `wire::head` (bare LF,
//! `Content-Length` with `Transfer-Encoding`, a `Transfer-Encoding` other than one plain
//! `chunked`, the head limit) and its declines. A refusal hyper would not make, other
//! than those, is a divergence.

#![no_main]

use libfuzzer_sys::fuzz_target;
use refold_oracles::hyper_reading;
use refold_proxy::wire::head::{
    parse_request, Decline, Framing, Limits, Parse, Refusal, HEADER_SLOTS,
};

const LIMITS: Limits = Limits {
    max_head_bytes: 8 * 1024,
};

/// A request head as hyper 1 reads it.
struct Reading<'b> {
    method: &'b str,
    target: &'b str,
    version: u8,
    fields: Vec<(&'b str, &'b [u8])>,
    head_len: usize,
    framing: Framing,
    /// Both `Content-Length` and `Transfer-Encoding` (hyper reads it as chunked).
    conflict: bool,
    close: bool,
}

/// What hyper makes of the front of the buffer.
enum Hyper<'b> {
    Incomplete,
    Refused,
    Read(Reading<'b>),
}

fn visible(value: &[u8]) -> bool {
    value
        .iter()
        .all(|b| *b == b'\t' || (0x20..0x7f).contains(b))
}

fn has_token(value: &[u8], token: &[u8]) -> bool {
    visible(value)
        && value
            .split(|b| *b == b',')
            .any(|item| item.trim_ascii().eq_ignore_ascii_case(token))
}

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

/// hyper's `Server::parse`, restated.
fn hyper(buf: &[u8]) -> Hyper<'_> {
    let mut slots = [httparse::EMPTY_HEADER; 100];
    let mut request = httparse::Request::new(&mut slots);
    let head_len = match request.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Hyper::Incomplete,
        Err(_) => return Hyper::Refused,
    };
    let (Some(method), Some(target), Some(version)) =
        (request.method, request.path, request.version)
    else {
        return Hyper::Refused;
    };
    if http::Method::from_bytes(method.as_bytes()).is_err() || target.len() > 65534 {
        return Hyper::Refused;
    }
    if http::Uri::try_from(target).is_err() {
        return Hyper::Refused;
    }
    let http11 = version == 1;
    let mut close = false;
    let (mut is_te, mut te_chunked, mut is_cl) = (false, false, false);
    let mut length: Option<u64> = None;
    let mut fields = Vec::new();
    for field in request.headers.iter() {
        fields.push((field.name, field.value));
        match field.name.to_ascii_lowercase().as_str() {
            "transfer-encoding" => {
                if !http11 {
                    return Hyper::Refused;
                }
                is_te = true;
                length = None;
                te_chunked = visible(field.value)
                    && field
                        .value
                        .rsplit(|b| *b == b',')
                        .next()
                        .is_some_and(|c| c.trim_ascii().eq_ignore_ascii_case(b"chunked"));
            }
            "content-length" => {
                is_cl = true;
                if is_te {
                    continue;
                }
                let Some(n) = decimal(field.value) else {
                    return Hyper::Refused;
                };
                if length.is_some_and(|prev| prev != n) {
                    return Hyper::Refused;
                }
                length = Some(n);
            }
            "connection" => close |= has_token(field.value, b"close"),
            _ => {}
        }
    }
    if is_te && !te_chunked {
        return Hyper::Refused;
    }
    let framing = match (is_te, length) {
        (true, _) => Framing::Chunked,
        (false, None | Some(0)) => Framing::Empty,
        (false, Some(n)) if n > u64::MAX - 2 => return Hyper::Refused,
        (false, Some(n)) => Framing::Length(n),
    };
    Hyper::Read(Reading {
        method,
        target,
        version,
        fields,
        head_len,
        framing,
        conflict: is_te && is_cl,
        close,
    })
}

fn has_bare_lf(head: &[u8]) -> bool {
    head.iter()
        .enumerate()
        .any(|(i, b)| *b == b'\n' && (i == 0 || head[i - 1] != b'\r'))
}

fn field_named<'a>(r: &'a Reading<'_>, name: &str) -> impl Iterator<Item = &'a [u8]> + 'a {
    let name = name.to_owned();
    r.fields
        .iter()
        .filter(move |(n, _)| n.eq_ignore_ascii_case(&name))
        .map(|(_, v)| *v)
}

/// A target the fast path frames itself: a path, kept whole by hyper's `Uri`.
fn plain_target(target: &str) -> bool {
    target.starts_with('/')
        && target.bytes().all(|b| (0x21..0x7f).contains(&b) && b != b'#')
        && http::Uri::try_from(target)
            .ok()
            .and_then(|u| u.path_and_query().map(|pq| pq.as_str() == target))
            .unwrap_or(false)
}

fn check(buf: &[u8]) {
    let wire = parse_request(buf, LIMITS);
    let reading = hyper(buf);
    // The shared oracle agrees with this restatement on where the first head ends.
    let shared = hyper_reading(buf);
    if let Hyper::Read(r) = &reading {
        if !buf.starts_with(b"PRI * HTTP/2.0") {
            let first = shared.requests.first().map(|q| (q.head_end, q.conflict));
            assert_eq!(first, Some((r.head_len, r.conflict)), "the oracles disagree");
        }
    }
    match (wire, &reading) {
        (Parse::Parsed { head, framing, head_len }, Hyper::Read(r)) => {
            assert_eq!(head.method, r.method);
            assert_eq!(head.target, r.target);
            assert_eq!(head.version, r.version);
            assert_eq!(head_len, r.head_len);
            assert_eq!(framing, r.framing);
            assert_eq!(head.close, r.close);
            assert!(!r.conflict, "both framing fields passed");
            let fields: Vec<(&str, &[u8])> =
                head.headers.iter().map(|f| (f.name, f.value)).collect();
            assert_eq!(fields, r.fields);
            assert!(plain_target(head.target), "a target hyper reads apart");
            assert!(!has_bare_lf(&buf[..head_len]));
        }
        (Parse::Parsed { .. }, _) => panic!("parsed what hyper does not read whole"),
        (Parse::Incomplete, Hyper::Incomplete) => assert!(buf.len() <= LIMITS.max_head_bytes),
        (Parse::Incomplete, _) => panic!("waits where hyper does not"),
        // More than hyper's 100 fields: hyper refuses it too.
        (Parse::Refused(Refusal::HeadTooLarge), Hyper::Refused) => {}
        (Parse::Refused(Refusal::HeadTooLarge), _) => {
            let len = match &reading {
                Hyper::Read(r) => r.head_len,
                _ => buf.len(),
            };
            assert!(len > LIMITS.max_head_bytes, "too large at {len}");
        }
        // hyper refuses these too, or waits for bytes whose refusal is certain.
        (Parse::Refused(_), Hyper::Refused) => {}
        (Parse::Refused(why), Hyper::Incomplete) => {
            panic!("refused ({why:?}) where hyper waits for more")
        }
        (Parse::Refused(why), Hyper::Read(r)) => match why {
            Refusal::BareLf => assert!(has_bare_lf(&buf[..r.head_len])),
            Refusal::LengthWithTransferEncoding => assert!(r.conflict),
            // hyper reads no `Content-Length` after a `Transfer-Encoding`; the head is
            // refused for carrying both either way, whichever length check comes first.
            Refusal::InvalidContentLength | Refusal::ConflictingContentLength
                if r.conflict => {}
            Refusal::NotChunked | Refusal::UnsupportedTransferEncoding => {
                let encodings: Vec<&[u8]> = field_named(r, "transfer-encoding").collect();
                assert!(
                    encodings.len() > 1
                        || encodings
                            .first()
                            .is_some_and(|v| !v.eq_ignore_ascii_case(b"chunked")),
                    "{why:?} for {encodings:?}"
                );
            }
            other => panic!("refused ({other:?}) a head hyper reads"),
        },
        // Declined: hyper serves it, as with the fast path off. The reason must hold
        // where hyper reads the head.
        (Parse::Declined(_), Hyper::Refused | Hyper::Incomplete) => {}
        (Parse::Declined(why), Hyper::Read(r)) => match why {
            Decline::TooManyFields => assert!(r.fields.len() > HEADER_SLOTS),
            Decline::Version => assert_eq!(r.version, 0),
            Decline::Connect => assert_eq!(r.method, "CONNECT"),
            Decline::Target => assert!(!plain_target(r.target)),
            Decline::Upgrade => assert!(field_named(r, "upgrade").next().is_some()),
            Decline::Expect => assert!(field_named(r, "expect").next().is_some()),
        },
    }
}

/// Pieces of request heads, spliced in for bytes from 0xc0 on when the first byte's top
/// bit asks for it, so whole heads form in a few mutations.
const PIECES: &[&[u8]] = &[
    b"GET /a HTTP/1.1\r\n",
    b"POST /a?b=c HTTP/1.1\r\n",
    b"GET /a HTTP/1.1\n",
    b"GET /a HTTP/1.0\r\n",
    b"CONNECT a:1 HTTP/1.1\r\n",
    b"GET http://a/b HTTP/1.1\r\n",
    b"OPTIONS * HTTP/1.1\r\n",
    b"GET /a#f HTTP/1.1\r\n",
    b"host: x\r\n",
    b"host: x\n",
    b"content-length: 4\r\n",
    b"Content-Length: 004\r\n",
    b"content-length: 0\r\n",
    b"content-length: +4\r\n",
    b"content-length: 4, 4\r\n",
    b"transfer-encoding: chunked\r\n",
    b"Transfer-Encoding: CHUNKED\r\n",
    b"transfer-encoding: gzip, chunked\r\n",
    b"transfer-encoding: chunked, gzip\r\n",
    b"transfer-encoding: chunked ,\r\n",
    b"upgrade: websocket\r\n",
    b"expect: 100-continue\r\n",
    b"connection: close\r\n",
    b"connection: keep-alive, close\r\n",
    b" folded\r\n",
    b"x-a: \x80\xff\r\n",
    b"x-a:\t1 \r\n",
    b"\r\n",
    b"\n",
    b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
];

fuzz_target!(|data: &[u8]| {
    let first = data.first().copied().unwrap_or(0);
    let raw = data.get(1..).unwrap_or(&[]);
    let buf = refold_oracles::expand_pieces(raw, PIECES, first & 0x80 != 0);
    let buf: &[u8] = &buf;
    check(buf);
    // Every prefix: what the parser says before the head is whole.
    if buf.len() <= 512 {
        for cut in 0..buf.len() {
            check(&buf[..cut]);
        }
    }
});
