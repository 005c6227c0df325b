//! An upstream HTTP/1.1 request head written into a reused buffer, its body framing
//! decided as hyper 1's HTTP/1 client decides it (`Client::set_length`), so Refold reads
//! the same head whichever client wrote it.
//!
//! The head is the request line (method, origin-form target, `HTTP/1.1`), `Host`, then
//! every field of the [`HeaderMap`] in its order, with the framing fields adjusted:
//! - a body that has ended before it starts ([`BodyKind::Empty`]): no body; a
//!   `Transfer-Encoding` is dropped, a `Content-Length` kept as given;
//! - a `Transfer-Encoding`: chunked (`, chunked` appended to its last value when that is
//!   not already the last coding), any `Content-Length` dropped;
//! - a valid `Content-Length` (every value the same number): that length;
//! - a body of unknown length: none for `GET`, `HEAD` and `CONNECT` (as hyper assumes),
//!   chunked for the rest (`transfer-encoding: chunked` added, an invalid
//!   `Content-Length` dropped);
//! - a body of known length: `content-length` set to it.
//!
//! A `Host` in the map is not written: the pool's own goes first.

use http::header::{CONTENT_LENGTH, HOST, TRAILER, TRANSFER_ENCODING};
use http::{HeaderMap, HeaderName};

/// What the request body says of itself before its first frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyKind {
    /// It is at its end already (`is_end_stream`).
    Empty,
    /// Exactly this many bytes (an exact size hint).
    Known(u64),
    /// Its length is not known.
    Unknown,
}

/// How the body after the head is framed on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyFraming {
    /// No body is sent.
    None,
    /// Exactly this many bytes, as they come.
    Length(u64),
    /// Chunks as frames arrive, `0\r\n\r\n` at the end.
    Chunked,
}

/// Appends the request head to `dst` and says how the body is to be framed; see the
/// module docs.
pub fn write_request_head(
    dst: &mut Vec<u8>,
    method: &str,
    path_and_query: &str,
    host: &[u8],
    headers: &HeaderMap,
    body: BodyKind,
) -> BodyFraming {
    dst.reserve(64 + path_and_query.len() + headers.len() * 32);
    dst.extend_from_slice(method.as_bytes());
    dst.push(b' ');
    dst.extend_from_slice(path_and_query.as_bytes());
    dst.extend_from_slice(b" HTTP/1.1\r\nhost: ");
    dst.extend_from_slice(host);
    dst.extend_from_slice(b"\r\n");

    let has_te = headers.contains_key(TRANSFER_ENCODING);
    let length = content_length(headers);
    // What the fields say, and which of them are written as they are.
    let (framing, keep_te, keep_cl, add_te, set_cl) = match body {
        BodyKind::Empty => (BodyFraming::None, false, true, false, None),
        _ if has_te => (BodyFraming::Chunked, true, false, false, None),
        _ => match (length, body) {
            (Some(n), _) => (BodyFraming::Length(n), false, true, false, None),
            (None, BodyKind::Unknown) if matches!(method, "GET" | "HEAD" | "CONNECT") => {
                (BodyFraming::None, false, true, false, None)
            }
            (None, BodyKind::Unknown) => (BodyFraming::Chunked, false, false, true, None),
            (None, BodyKind::Known(n)) => (BodyFraming::Length(n), false, false, false, Some(n)),
            (None, BodyKind::Empty) => (BodyFraming::None, false, true, false, None),
        },
    };
    let last_te = if keep_te {
        headers.get_all(TRANSFER_ENCODING).iter().count()
    } else {
        0
    };
    let mut te_seen = 0;
    for (name, value) in headers {
        if name == HOST
            || (name == TRANSFER_ENCODING && !keep_te)
            || (name == CONTENT_LENGTH && !keep_cl)
        {
            continue;
        }
        dst.extend_from_slice(name.as_str().as_bytes());
        dst.extend_from_slice(b": ");
        dst.extend_from_slice(value.as_bytes());
        if name == TRANSFER_ENCODING {
            te_seen += 1;
            if te_seen == last_te && !last_coding_is_chunked(value.as_bytes()) {
                dst.extend_from_slice(b", chunked");
            }
        }
        dst.extend_from_slice(b"\r\n");
    }
    if add_te {
        dst.extend_from_slice(b"transfer-encoding: chunked\r\n");
    }
    if let Some(n) = set_cl {
        dst.extend_from_slice(b"content-length: ");
        dst.extend_from_slice(itoa_u64(n, &mut [0; 20]));
        dst.extend_from_slice(b"\r\n");
    }
    dst.extend_from_slice(b"\r\n");
    framing
}

/// The size line that opens a chunk of `len` bytes (hex, CRLF), as hyper writes it.
pub fn write_chunk_size(dst: &mut Vec<u8>, len: usize) {
    let mut digits = [0u8; 16];
    let mut at = digits.len();
    let mut n = len;
    loop {
        at -= 1;
        digits[at] = b"0123456789ABCDEF"[n & 0xf];
        n >>= 4;
        if n == 0 {
            break;
        }
    }
    dst.extend_from_slice(&digits[at..]);
    dst.extend_from_slice(b"\r\n");
}

/// The end of a chunked body: the last chunk, the trailer fields the request's
/// `Trailer` field announced (hyper sends no others), and the empty line.
pub fn write_chunked_end(dst: &mut Vec<u8>, announced: &HeaderMap, trailers: Option<&HeaderMap>) {
    dst.extend_from_slice(b"0\r\n");
    if let Some(trailers) = trailers {
        let allowed: Vec<HeaderName> = announced
            .get_all(TRAILER)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
            .collect();
        for (name, value) in trailers {
            if allowed.contains(name) {
                dst.extend_from_slice(name.as_str().as_bytes());
                dst.extend_from_slice(b": ");
                dst.extend_from_slice(value.as_bytes());
                dst.extend_from_slice(b"\r\n");
            }
        }
    }
    dst.extend_from_slice(b"\r\n");
}

/// Whether a request's fields ask that the connection close after it.
pub fn asks_close(headers: &HeaderMap) -> bool {
    headers
        .get_all(http::header::CONNECTION)
        .iter()
        .any(|v| super::head::has_close_token(v.as_bytes()))
}

/// hyper's `content_length_parse_all`: every value (comma lists too) the same number.
fn content_length(headers: &HeaderMap) -> Option<u64> {
    let mut length = None;
    for value in headers.get_all(CONTENT_LENGTH) {
        for item in value.as_bytes().split(|b| *b == b',') {
            let n = super::head::digits(item.trim_ascii())?;
            if length.is_some_and(|prev| prev != n) {
                return None;
            }
            length = Some(n);
        }
    }
    length
}

/// hyper's `is_chunked_`: text, and the last coding `chunked`.
fn last_coding_is_chunked(value: &[u8]) -> bool {
    super::head::last_coding_is_chunked(value)
}

/// `n` in decimal, in `buf`.
fn itoa_u64(mut n: u64, buf: &mut [u8; 20]) -> &[u8] {
    let mut at = buf.len();
    loop {
        at -= 1;
        buf[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    &buf[at..]
}

#[cfg(test)]
mod tests;
