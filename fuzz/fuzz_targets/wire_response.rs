//! The fast path's response head parser against an independent reading of the same
//! bytes: httparse with hyper's settings (100 fields) and hyper 1's client rules
//! (`Client::parse` for the status and keep-alive, `Client::decoder` for the framing).
//!
//! For every input and request method, `wire::response::parse_response` either reads
//! what hyper reads (same status, version, reason, fields in order, framing, head length,
//! keep-alive), or waits exactly when hyper waits, or refuses for a reason the bytes bear
//! out: the deliberate differences listed in the module docs of `wire::response` (bare
//! LF, `Content-Length` with `Transfer-Encoding`, lengths checked on bodiless responses
//! too, comma lists of lengths, more than its field slots, the head limit, a 2xx to
//! `CONNECT`). A refusal hyper would not make, other than those, is a divergence.

#![no_main]

use libfuzzer_sys::fuzz_target;
use refold_proxy::wire::head::{Limits, HEADER_SLOTS};
use refold_proxy::wire::response::{parse_response, Framing, Parse, Refusal};

const LIMITS: Limits = Limits {
    max_head_bytes: 8 * 1024,
};

const METHODS: [&str; 4] = ["GET", "HEAD", "POST", "CONNECT"];

/// A response head as hyper 1's client reads it.
struct Reading<'b> {
    status: u16,
    version: u8,
    reason: &'b str,
    fields: Vec<(&'b str, &'b [u8])>,
    head_len: usize,
    framing: Framing,
    keep_alive: bool,
    /// Both `Content-Length` and `Transfer-Encoding` (hyper reads the encoding).
    conflict: bool,
}

/// What hyper makes of the front of the buffer.
enum Hyper<'b> {
    Incomplete,
    Refused,
    /// 101, or a 2xx to CONNECT: hyper hands the connection over.
    Upgrade,
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

/// hyper's `content_length_parse_all`: every comma-separated item of every field, equal.
fn lengths(values: &[&[u8]]) -> Option<u64> {
    let mut length = None;
    for value in values {
        if !visible(value) {
            return None;
        }
        for item in value.split(|b| *b == b',') {
            let n = decimal(item.trim_ascii())?;
            if length.is_some_and(|prev| prev != n) {
                return None;
            }
            length = Some(n);
        }
    }
    length
}

/// hyper's `Client::parse` and `Client::decoder`, restated (an interim 1xx is read as a
/// head of its own with no body, where hyper skips it and reads on).
fn hyper<'b>(buf: &'b [u8], method: &str) -> Hyper<'b> {
    let mut slots = [httparse::EMPTY_HEADER; 100];
    let mut response = httparse::Response::new(&mut slots);
    let head_len = match response.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Hyper::Incomplete,
        Err(_) => return Hyper::Refused,
    };
    let (Some(status), Some(version), Some(reason)) =
        (response.code, response.version, response.reason)
    else {
        return Hyper::Refused;
    };
    if http::StatusCode::from_u16(status).is_err() {
        return Hyper::Refused;
    }
    let mut keep_alive = version == 1;
    let mut saw_close = false;
    let mut fields = Vec::new();
    for field in response.headers.iter() {
        fields.push((field.name, field.value));
        if field.name.eq_ignore_ascii_case("connection") {
            if saw_close || has_token(field.value, b"close") {
                saw_close = true;
                keep_alive = false;
            } else if !keep_alive {
                keep_alive = has_token(field.value, b"keep-alive");
            }
        }
    }
    let named = |name: &str| -> Vec<&'b [u8]> {
        fields
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| *v)
            .collect()
    };
    let encodings = named("transfer-encoding");
    let length_fields = named("content-length");
    let conflict = !encodings.is_empty() && !length_fields.is_empty();
    let framing = match status {
        101 => return Hyper::Upgrade,
        100..=199 | 204 | 304 => Framing::Empty,
        _ if method == "HEAD" => Framing::Empty,
        200..=299 if method == "CONNECT" => return Hyper::Upgrade,
        _ if !encodings.is_empty() => {
            if version == 0 {
                return Hyper::Refused;
            }
            let last = encodings[encodings.len() - 1];
            let chunked = visible(last)
                && last
                    .rsplit(|b| *b == b',')
                    .next()
                    .is_some_and(|c| c.trim_ascii().eq_ignore_ascii_case(b"chunked"));
            if chunked {
                Framing::Chunked
            } else {
                Framing::UntilClose
            }
        }
        _ if !length_fields.is_empty() => match lengths(&length_fields) {
            Some(n) if n > u64::MAX - 2 => return Hyper::Refused,
            Some(0) => Framing::Empty,
            Some(n) => Framing::Length(n),
            None => return Hyper::Refused,
        },
        _ => Framing::UntilClose,
    };
    Hyper::Read(Reading {
        status,
        version,
        reason,
        fields,
        head_len,
        framing,
        keep_alive,
        conflict,
    })
}

fn has_bare_lf(head: &[u8]) -> bool {
    head.iter()
        .enumerate()
        .any(|(i, b)| *b == b'\n' && (i == 0 || head[i - 1] != b'\r'))
}

fn field_named<'a>(r: &'a Reading<'_>, name: &str) -> Vec<&'a [u8]> {
    r.fields
        .iter()
        .filter(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| *v)
        .collect()
}

fn check(buf: &[u8], method: &str) {
    let wire = parse_response(buf, method, LIMITS);
    let reading = hyper(buf, method);
    match (wire, &reading) {
        (
            Parse::Parsed {
                head,
                framing,
                head_len,
                keep_alive,
            },
            Hyper::Read(r),
        ) => {
            assert_eq!(head.status, r.status);
            assert_eq!(head.version, r.version);
            assert_eq!(head.reason, r.reason);
            assert_eq!(head_len, r.head_len);
            assert_eq!(framing, r.framing);
            // Deliberate: a close-delimited body never leaves the connection reusable.
            assert_eq!(keep_alive, r.keep_alive && r.framing != Framing::UntilClose);
            assert_eq!(head.interim, (100..200).contains(&r.status));
            assert!(!r.conflict, "both framing fields passed");
            let fields: Vec<(&str, &[u8])> =
                head.headers.iter().map(|f| (f.name, f.value)).collect();
            assert_eq!(fields, r.fields);
            assert!(!has_bare_lf(&buf[..head_len]));
        }
        (Parse::Parsed { .. }, _) => panic!("parsed what hyper does not read as relayable"),
        (Parse::Incomplete, Hyper::Incomplete) => assert!(buf.len() <= LIMITS.max_head_bytes),
        (Parse::Incomplete, _) => panic!("waits where hyper does not"),
        (Parse::Refused(Refusal::HeadTooLarge), _) => {
            let len = match &reading {
                Hyper::Read(r) => r.head_len,
                _ => buf.len(),
            };
            assert!(len > LIMITS.max_head_bytes, "too large at {len}");
        }
        // The field after the last slot is read: whatever follows, the head has more
        // fields than the codec keeps (hyper waits, and reads up to 100).
        (Parse::Refused(Refusal::TooManyFields), Hyper::Incomplete) => {
            let mut slots = [httparse::EMPTY_HEADER; HEADER_SLOTS];
            let cut = httparse::Response::new(&mut slots).parse(buf);
            assert_eq!(cut, Err(httparse::Error::TooManyHeaders));
        }
        (Parse::Refused(why), Hyper::Incomplete) => {
            panic!("refused ({why:?}) where hyper waits for more")
        }
        // hyper refuses these too (or, for 101, hands the connection over).
        (Parse::Refused(_), Hyper::Refused | Hyper::Upgrade) => {}
        (Parse::Refused(why), Hyper::Read(r)) => match why {
            Refusal::BareLf => assert!(has_bare_lf(&buf[..r.head_len])),
            Refusal::TooManyFields => assert!(r.fields.len() > HEADER_SLOTS),
            Refusal::LengthWithTransferEncoding => assert!(r.conflict),
            // Checked on every response: hyper reads no length on a bodiless one, none
            // after an encoding, and takes a comma list of equal lengths.
            Refusal::InvalidContentLength => {
                let values = field_named(r, "content-length");
                assert!(
                    r.framing == Framing::Empty
                        || r.conflict
                        || values.iter().any(|v| decimal(v).is_none()),
                    "{values:?}"
                );
            }
            Refusal::ConflictingContentLength => {
                let values = field_named(r, "content-length");
                assert!(r.framing == Framing::Empty || r.conflict, "{values:?}");
            }
            Refusal::TransferEncodingOnHttp10 => {
                assert_eq!(r.version, 0);
                assert!(r.framing == Framing::Empty);
            }
            Refusal::Upgrade => {
                assert!(method == "CONNECT" && (200..300).contains(&r.status));
            }
            other => panic!("refused ({other:?}) a head hyper reads"),
        },
    }
}

/// Pieces of response heads, spliced in for bytes from 0xc0 on when the first byte's
/// top bit asks for it, so whole heads form in a few mutations.
const PIECES: &[&[u8]] = &[
    b"HTTP/1.1 200 OK\r\n",
    b"HTTP/1.0 200 OK\r\n",
    b"HTTP/1.1 204 No Content\r\n",
    b"HTTP/1.1 304 Not Modified\r\n",
    b"HTTP/1.1 103 Early Hints\r\n",
    b"HTTP/1.1 101 Switching Protocols\r\n",
    b"HTTP/1.1 099 Low\r\n",
    b"HTTP/1.1 500\r\n",
    b"HTTP/1.1 200 OK\n",
    b"content-length: 4\r\n",
    b"Content-Length: 004\r\n",
    b"content-length: 0\r\n",
    b"content-length: +4\r\n",
    b"content-length: 4, 4\r\n",
    b"content-length: 5\r\n",
    b"transfer-encoding: chunked\r\n",
    b"Transfer-Encoding: CHUNKED\r\n",
    b"transfer-encoding: gzip, chunked\r\n",
    b"transfer-encoding: chunked, gzip\r\n",
    b"transfer-encoding: gzip\r\n",
    b"connection: close\r\n",
    b"connection: keep-alive\r\n",
    b"Connection: Keep-Alive, close\r\n",
    b"upgrade: websocket\r\n",
    b" folded\r\n",
    b"x-a: \x80\xff\r\n",
    b"x-a:\t1 \r\n",
    b"\r\n",
    b"\n",
];

fuzz_target!(|data: &[u8]| {
    let first = data.first().copied().unwrap_or(0);
    let method = METHODS[usize::from(first & 0x03)];
    let raw = data.get(1..).unwrap_or(&[]);
    let buf = refold_oracles::expand_pieces(raw, PIECES, first & 0x80 != 0);
    let buf: &[u8] = &buf;
    check(buf, method);
    // Every prefix: what the parser says before the head is whole.
    if buf.len() <= 512 {
        for cut in 0..buf.len() {
            check(&buf[..cut], method);
        }
    }
});
