//! An upstream response head read from the front of a buffer: parsed once with
//! `httparse` into slices of that buffer, its body framing decided from the request's
//! method, the shapes a proxy must not relay refused.
//!
//! [`parse_response`] answers one of three things:
//! - [`Parse::Incomplete`]: no empty line yet; read more (within the head limit).
//! - [`Parse::Refused`]: a head the proxy will not relay; the caller answers 502 and
//!   drops the upstream connection (its framing can no longer be trusted).
//! - [`Parse::Parsed`]: status, version, reason and fields as slices of the buffer, the
//!   body's [`Framing`] (RFC 9112 §6.3), where the head ends, whether the connection may
//!   be reused, and whether the head is an interim (1xx) one to skip past.
//!
//! ## Where it differs from hyper, on purpose
//!
//! The rules are hyper 1's HTTP/1 client rules (httparse's default parser settings,
//! `Client::decoder`, the keep-alive reading of `Client::parse`), with these refusals
//! where hyper relays:
//! - a bare LF ending any line of the head (httparse takes it as CRLF);
//! - `Content-Length` together with `Transfer-Encoding` (hyper reads the body as chunked);
//! - a `Content-Length` that is not only ASCII digits, a comma list among them (hyper
//!   accepts `5, 5`), or differing lengths; checked on every response, also on those
//!   that have no body (HEAD, 1xx, 204, 304), where hyper ignores them;
//! - more than [`HEADER_SLOTS`] fields (hyper allows 100), or a head longer than
//!   [`Limits::max_head_bytes`];
//! - `101 Switching Protocols`, and a 2xx to `CONNECT` (hyper upgrades; this path never
//!   asks to upgrade, so an upstream that does is not followed).
//!
//! An interim 1xx head is returned (hyper skips it itself) with [`ResponseHead::interim`]
//! set, so the caller reads on to the final response. Obsolete line folding and a status
//! outside 100–999 are refused as hyper refuses them; a `Transfer-Encoding` on an
//! HTTP/1.0 response is refused as hyper refuses it.

use std::mem::MaybeUninit;

use super::head::{
    digits, has_bare_lf, has_close_token, last_coding_is_chunked, visible, Headers, Limits,
    HEADER_SLOTS, MAX_CONTENT_LENGTH,
};

/// Why a response head is refused: the proxy answers 502 and drops the connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// More than [`Limits::max_head_bytes`] without the head's end.
    HeadTooLarge,
    /// More fields than [`HEADER_SLOTS`].
    TooManyFields,
    /// A line of the head ends in LF without CR before it.
    BareLf,
    /// A field line starts with a space or tab (obsolete line folding).
    ObsFold,
    /// httparse refuses the head (a byte out of place in the status line or a field, or
    /// a status below 100).
    Malformed(&'static str),
    /// A `Content-Length` that is not only ASCII digits, or too large.
    InvalidContentLength,
    /// Several `Content-Length` values that differ.
    ConflictingContentLength,
    /// Both `Content-Length` and `Transfer-Encoding`.
    LengthWithTransferEncoding,
    /// A `Transfer-Encoding` on an HTTP/1.0 response.
    TransferEncodingOnHttp10,
    /// `101 Switching Protocols`, or a 2xx to `CONNECT`: the connection would change
    /// protocol.
    Upgrade,
}

/// How the response's body is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// No body: a response to HEAD, a 1xx, 204 or 304, or `Content-Length: 0`.
    Empty,
    /// Exactly this many bytes (more than zero) follow the head.
    Length(u64),
    /// A chunked body follows the head (see [`super::chunked`]).
    Chunked,
    /// The body runs until the upstream closes the connection (no length and no
    /// chunked coding last).
    UntilClose,
}

impl From<super::head::Framing> for Framing {
    /// A request body's framing, as a body decoder reads it.
    fn from(framing: super::head::Framing) -> Self {
        match framing {
            super::head::Framing::Empty => Self::Empty,
            super::head::Framing::Length(n) => Self::Length(n),
            super::head::Framing::Chunked => Self::Chunked,
        }
    }
}

/// A parsed response head: slices of the buffer it was read from.
#[derive(Clone, Copy)]
pub struct ResponseHead<'b> {
    /// The status code, 100 to 999.
    pub status: u16,
    /// The minor version: 0 (HTTP/1.0) or 1 (HTTP/1.1).
    pub version: u8,
    /// The reason phrase as sent (empty if missing or not UTF-8, as httparse gives it).
    pub reason: &'b str,
    /// The header fields.
    pub headers: Headers<'b>,
    /// A 1xx head (not 101): the final response follows it on the same connection.
    pub interim: bool,
}

impl std::fmt::Debug for ResponseHead<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResponseHead")
            .field("status", &self.status)
            .field("version", &self.version)
            .field("reason", &self.reason)
            .field("headers", &self.headers)
            .field("interim", &self.interim)
            .finish()
    }
}

/// What [`parse_response`] found at the front of a buffer.
// `Parsed` holds the field slots inline, as the request side does: no allocation.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, Copy)]
pub enum Parse<'b> {
    /// The head is not complete yet.
    Incomplete,
    /// The head is refused (see [`Refusal`]).
    Refused(Refusal),
    /// The head, parsed.
    Parsed {
        /// Status, version, reason and fields.
        head: ResponseHead<'b>,
        /// How the body after the head is delimited.
        framing: Framing,
        /// The head's length in the buffer, its empty line included.
        head_len: usize,
        /// Whether the connection may carry another request after this response
        /// (hyper's client reading; never for [`Framing::UntilClose`]).
        keep_alive: bool,
    },
}

/// Reads the response head at the front of `buf`, the answer to a request with
/// `method` (which decides whether a body may follow); see the module docs.
pub fn parse_response<'b>(buf: &'b [u8], method: &str, limits: Limits) -> Parse<'b> {
    let mut slots = [const { MaybeUninit::<httparse::Header<'b>>::uninit() }; HEADER_SLOTS];
    let mut response = httparse::Response::new(&mut []);
    let parsed = httparse::ParserConfig::default().parse_response_with_uninit_headers(
        &mut response,
        buf,
        &mut slots,
    );
    let head_len = match parsed {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) if buf.len() > limits.max_head_bytes => {
            return Parse::Refused(Refusal::HeadTooLarge)
        }
        Ok(httparse::Status::Partial) => return Parse::Incomplete,
        Err(e) => return Parse::Refused(failed(buf, e)),
    };
    let (Some(status), Some(version), Some(reason)) =
        (response.code, response.version, response.reason)
    else {
        return Parse::Refused(Refusal::Malformed("incomplete status line"));
    };
    let headers = Headers::from_parsed(response.headers);
    match check(buf, head_len, limits, method, status, version, &headers) {
        Ok((framing, keep_alive)) => Parse::Parsed {
            head: ResponseHead {
                status,
                version,
                reason,
                headers,
                interim: (100..200).contains(&status),
            },
            framing,
            head_len,
            keep_alive,
        },
        Err(why) => Parse::Refused(why),
    }
}

/// A head's checks once httparse has read it whole: the framing and whether the
/// connection may be reused, or why the head is refused.
fn check(
    buf: &[u8],
    head_len: usize,
    limits: Limits,
    method: &str,
    status: u16,
    version: u8,
    headers: &Headers<'_>,
) -> Result<(Framing, bool), Refusal> {
    if head_len > limits.max_head_bytes {
        return Err(Refusal::HeadTooLarge);
    }
    if has_bare_lf(&buf[..head_len]) {
        return Err(Refusal::BareLf);
    }
    if !(100..=999).contains(&status) {
        return Err(Refusal::Malformed("status outside 100-999"));
    }
    if status == 101 || (method == "CONNECT" && (200..300).contains(&status)) {
        return Err(Refusal::Upgrade);
    }
    let mut length: Option<u64> = None;
    let mut last_encoding: Option<&[u8]> = None;
    let mut keep_alive = version == 1;
    let mut close = false;
    for field in headers.iter() {
        let name = field.name.as_bytes();
        if name.eq_ignore_ascii_case(b"content-length") {
            let Some(n) = digits(field.value).filter(|n| *n <= MAX_CONTENT_LENGTH) else {
                return Err(Refusal::InvalidContentLength);
            };
            if length.is_some_and(|prev| prev != n) {
                return Err(Refusal::ConflictingContentLength);
            }
            length = Some(n);
        } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
            last_encoding = Some(field.value);
        } else if name.eq_ignore_ascii_case(b"connection") {
            // As hyper: once a field asks to close, a later `keep-alive` does not undo
            // it; HTTP/1.0 is kept alive only when a field asks for it.
            if close || has_close_token(field.value) {
                close = true;
                keep_alive = false;
            } else if !keep_alive {
                keep_alive = has_keep_alive_token(field.value);
            }
        }
    }
    if length.is_some() && last_encoding.is_some() {
        return Err(Refusal::LengthWithTransferEncoding);
    }
    if version == 0 && last_encoding.is_some() {
        return Err(Refusal::TransferEncodingOnHttp10);
    }
    let no_body = method == "HEAD" || matches!(status, 100..=199 | 204 | 304);
    let framing = match (no_body, last_encoding, length) {
        (true, _, _) | (false, None, Some(0)) => Framing::Empty,
        (false, Some(coding), _) if last_coding_is_chunked(coding) => Framing::Chunked,
        (false, Some(_), _) | (false, None, None) => Framing::UntilClose,
        (false, None, Some(n)) => Framing::Length(n),
    };
    let keep_alive = keep_alive && framing != Framing::UntilClose;
    Ok((framing, keep_alive))
}

/// The refusal for a head httparse refused.
fn failed(buf: &[u8], error: httparse::Error) -> Refusal {
    match error {
        httparse::Error::TooManyHeaders => Refusal::TooManyFields,
        // A field line starting with a blank is where httparse stops at a name; the
        // error path only, so the search costs nothing on good heads.
        httparse::Error::HeaderName
            if memchr::memmem::find(buf, b"\n ").is_some()
                || memchr::memmem::find(buf, b"\n\t").is_some() =>
        {
            Refusal::ObsFold
        }
        httparse::Error::HeaderName => Refusal::Malformed("invalid header name"),
        httparse::Error::HeaderValue => Refusal::Malformed("invalid header value"),
        httparse::Error::NewLine => Refusal::Malformed("invalid line ending"),
        httparse::Error::Status => Refusal::Malformed("invalid status"),
        httparse::Error::Token | httparse::Error::Version => {
            Refusal::Malformed("invalid status line")
        }
    }
}

/// hyper's `connection_keep_alive`: visible ASCII, and a `keep-alive` item in the list.
fn has_keep_alive_token(value: &[u8]) -> bool {
    visible(value)
        && value
            .split(|b| *b == b',')
            .any(|item| item.trim_ascii().eq_ignore_ascii_case(b"keep-alive"))
}

#[cfg(test)]
mod tests;
