//! A request head read from the front of a buffer: parsed once with `httparse` into
//! slices of that buffer, its body framing decided, the smuggling shapes refused.
//!
//! [`parse_request`] answers one of four things:
//! - [`Parse::Incomplete`]: no empty line yet; read more (within the head limit).
//! - [`Parse::Refused`]: a head no reading may accept; the caller answers 400 (or 431)
//!   and closes the connection.
//! - [`Parse::Declined`]: a head this codec does not frame itself (CONNECT, `Upgrade`,
//!   `Expect`, HTTP/1.0, a request-target other than origin-form, more fields than
//!   [`HEADER_SLOTS`]): the caller hands the connection, with the bytes already read,
//!   to hyper, which serves it as when the fast path is off. Only a head that passed
//!   every refusal is declined: handing hyper a framing the proxy refuses would undo
//!   the refusal.
//! - [`Parse::Parsed`]: method, target, version and fields as slices of the buffer, the
//!   body's [`Framing`], and where the head ends.
//!
//! ## Where it differs from hyper, on purpose
//!
//! The rules are hyper 1's HTTP/1 server rules (httparse's default parser settings; a
//! `Content-Length` is ASCII digits only, at most `u64::MAX - 2`; lengths repeated with
//! the same numeric value are one length, as hyper reads them), with these refusals
//! where hyper accepts, and the later checks of the proxy's framing guard moved here:
//! - a bare LF ending any line of the head (hyper, through httparse, takes it as CRLF);
//! - `Content-Length` together with `Transfer-Encoding` (hyper reads the body as chunked
//!   and drops the length; the proxy refuses it, as its framing guard did);
//! - a `Transfer-Encoding` other than one field whose value is `chunked` (hyper accepts
//!   `gzip, chunked`, several fields, or codings in any case ending in `chunked`; the
//!   proxy refused all but a plain `chunked` in `steps::framing::check_framing`);
//! - a head longer than [`Limits::max_head_bytes`] (hyper's own limit is its read buffer);
//! - a `Content-Length` after a `Transfer-Encoding` is still checked (hyper skips it), so
//!   such a head may be refused for its length rather than for carrying both fields.
//!
//! Repeated equal lengths: [`Headers`] lists every field as sent, while hyper keeps only
//! the first `Content-Length` field; whoever writes the head upstream sends one.
//! More than hyper's 100 fields is refused with 431, as hyper refuses it.
//!
//! And these declines (hyper then parses, answers or refuses as it would): a target with a `#` or a byte outside the
//! ASCII `http::Uri` keeps (hyper's `Uri` drops a fragment, checks UTF-8 above ASCII,
//! refuses `<`, `>`, `` ` `` in a path and `"` in a query), a target longer than hyper's
//! 65,534 bytes, every `Expect` (not only `100-continue`), every `Upgrade` (also on
//! HTTP/1.0, where hyper ignores it), HTTP/1.0, the HTTP/2 preface. Another version
//! httparse does not read is refused (400), as hyper refuses it. Obsolete line folding is refused, as
//! httparse refuses it in requests; it is named apart so the refusal says why.

use std::mem::MaybeUninit;

use crate::error::ProxyError;

/// Header fields one head may carry; one more and the head is declined (hyper allows 100).
pub const HEADER_SLOTS: usize = 64;

/// hyper's default limit on a head's fields; more is refused (431), as hyper refuses it.
const HYPER_MAX_FIELDS: usize = 100;

/// hyper's longest request-target (`MAX_URI_LEN`); longer ones are left to it.
const MAX_TARGET_BYTES: usize = (u16::MAX - 1) as usize;

/// hyper's longest body length (`DecodedLength::MAX_LEN`): two values above are its markers.
pub(super) const MAX_CONTENT_LENGTH: u64 = u64::MAX - 2;

/// The limits a head is read within.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// The most bytes a whole head may take, request line and empty line included;
    /// more without the head's end is [`Refusal::HeadTooLarge`].
    pub max_head_bytes: usize,
}

/// Why a head is refused: the connection cannot go on, whoever reads it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// More than [`Limits::max_head_bytes`] without the head's end, or more fields than
    /// hyper's 100 (431).
    HeadTooLarge,
    /// A line of the head ends in LF without CR before it.
    BareLf,
    /// A field line starts with a space or tab (obsolete line folding).
    ObsFold,
    /// httparse refuses the head (a byte out of place in the request line or a field).
    Malformed(&'static str),
    /// A `Content-Length` that is not only ASCII digits, or too large.
    InvalidContentLength,
    /// Several `Content-Length` fields with different values.
    ConflictingContentLength,
    /// Both `Content-Length` and `Transfer-Encoding`.
    LengthWithTransferEncoding,
    /// A `Transfer-Encoding` whose last coding is not `chunked`.
    NotChunked,
    /// A `Transfer-Encoding` other than one plain `chunked` (other codings, repeats).
    UnsupportedTransferEncoding,
}

impl Refusal {
    /// The error the proxy answers this refusal with.
    pub fn error(self) -> ProxyError {
        ProxyError::MalformedRequest(match self {
            Self::HeadTooLarge => return ProxyError::HeadersTooLarge,
            Self::BareLf => "bare LF in the request head",
            Self::ObsFold => "obsolete line folding",
            Self::Malformed(why) => why,
            Self::InvalidContentLength => "invalid content-length",
            Self::ConflictingContentLength => "conflicting content-length",
            Self::LengthWithTransferEncoding => "content-length with transfer-encoding",
            Self::NotChunked | Self::UnsupportedTransferEncoding => "unsupported transfer-encoding",
        })
    }
}

/// Why a head is left to hyper rather than framed here.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decline {
    /// More header fields than [`HEADER_SLOTS`] (up to hyper's 100; the framing checked).
    TooManyFields,
    /// Not HTTP/1.1: HTTP/1.0, or the HTTP/2 preface.
    Version,
    /// A `CONNECT` request.
    Connect,
    /// A request-target that is not a plain origin-form path (absolute-form, `*`, a
    /// fragment, bytes outside visible ASCII, longer than hyper allows).
    Target,
    /// An `Upgrade` field.
    Upgrade,
    /// An `Expect` field (`100-continue` or another expectation).
    Expect,
}

/// How the request's body is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// No body: no framing field, or `Content-Length: 0`.
    Empty,
    /// Exactly this many bytes (more than zero) follow the head.
    Length(u64),
    /// A chunked body follows the head (see [`super::chunked`]).
    Chunked,
}

/// One header field, as sent: the name's case kept, the value without its surrounding
/// blanks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Field<'b> {
    /// The field name (a token: httparse checked it).
    pub name: &'b str,
    /// The field value, trimmed by httparse; bytes 0x80 and above may occur.
    pub value: &'b [u8],
}

const NO_FIELD: Field<'static> = Field {
    name: "",
    value: b"",
};

/// A head's fields, in order, in a fixed array of [`HEADER_SLOTS`] (no allocation).
#[derive(Clone, Copy)]
pub struct Headers<'b> {
    fields: [Field<'b>; HEADER_SLOTS],
    len: usize,
}

impl<'b> Headers<'b> {
    /// The fields httparse read (at most [`HEADER_SLOTS`]: its slots were that many).
    pub(super) fn from_parsed(parsed: &[httparse::Header<'b>]) -> Self {
        let mut headers = Headers {
            fields: [NO_FIELD; HEADER_SLOTS],
            len: parsed.len().min(HEADER_SLOTS),
        };
        for (slot, field) in headers.fields.iter_mut().zip(parsed) {
            *slot = Field {
                name: field.name,
                value: field.value,
            };
        }
        headers
    }

    /// Every field, in the order sent.
    pub fn iter(&self) -> impl Iterator<Item = &Field<'b>> + '_ {
        self.fields[..self.len].iter()
    }

    /// How many fields the head has.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the head has no fields.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The first value of the field `name` (any case).
    pub fn get(&self, name: &str) -> Option<&'b [u8]> {
        self.get_all(name).next()
    }

    /// Every value of the field `name` (any case), in order.
    pub fn get_all<'s>(&'s self, name: &'s str) -> impl Iterator<Item = &'b [u8]> + 's {
        self.iter()
            .filter(move |f| f.name.eq_ignore_ascii_case(name))
            .map(|f| f.value)
    }

    /// The fields' size as the proxy counts it against `limits.max_header_bytes` (name,
    /// value and four bytes each, as `steps::framing::head_size` counts a `HeaderMap`).
    pub fn field_bytes(&self) -> usize {
        self.iter().map(|f| f.name.len() + f.value.len() + 4).sum()
    }
}

impl std::fmt::Debug for Headers<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Names only: values may hold credentials.
        f.debug_list()
            .entries(self.iter().map(|field| field.name))
            .finish()
    }
}

/// A parsed request head: slices of the buffer it was read from.
#[derive(Clone, Copy)]
pub struct RequestHead<'b> {
    /// The method token, as sent (any token httparse accepts).
    pub method: &'b str,
    /// The origin-form request-target (`/path?query`), as sent.
    pub target: &'b str,
    /// The minor version: always 1 (HTTP/1.1); HTTP/1.0 is declined.
    pub version: u8,
    /// The header fields.
    pub headers: Headers<'b>,
    /// A `Connection` field asks to close after this exchange (hyper's reading: a
    /// `close` token in any `Connection` field of visible ASCII).
    pub close: bool,
}

impl std::fmt::Debug for RequestHead<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // No target: its query may name an account or carry a token.
        f.debug_struct("RequestHead")
            .field("method", &self.method)
            .field("version", &self.version)
            .field("headers", &self.headers)
            .field("close", &self.close)
            .finish_non_exhaustive()
    }
}

/// What [`parse_request`] found at the front of a buffer.
// `Parsed` holds the field slots inline (2 KiB, as hyper keeps its own on the stack):
// boxing them would allocate for every request.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, Copy)]
pub enum Parse<'b> {
    /// The head is not complete yet.
    Incomplete,
    /// The head is refused (see [`Refusal`]).
    Refused(Refusal),
    /// The head is for hyper (see [`Decline`]).
    Declined(Decline),
    /// The head, parsed.
    Parsed {
        /// Method, target, version and fields.
        head: RequestHead<'b>,
        /// How the body after the head is delimited.
        framing: Framing,
        /// The head's length in the buffer, its empty line included: the body (or the
        /// next request) starts there.
        head_len: usize,
    },
}

/// Reads the request head at the front of `buf` (the body, or pipelined requests, may
/// follow it in `buf`); see the module docs.
pub fn parse_request<'b>(buf: &'b [u8], limits: Limits) -> Parse<'b> {
    let mut slots = [const { MaybeUninit::<httparse::Header<'b>>::uninit() }; HEADER_SLOTS];
    let mut request = httparse::Request::new(&mut []);
    let head_len = match request.parse_with_uninit_headers(buf, &mut slots) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) if buf.len() > limits.max_head_bytes => {
            return Parse::Refused(Refusal::HeadTooLarge)
        }
        Ok(httparse::Status::Partial) => return Parse::Incomplete,
        Err(httparse::Error::TooManyHeaders) => return too_many_fields(buf, limits),
        Err(e) => return failed(buf, e),
    };
    let (Some(method), Some(target), Some(version)) =
        (request.method, request.path, request.version)
    else {
        return Parse::Refused(Refusal::Malformed("incomplete request line"));
    };
    let headers = Headers::from_parsed(request.headers);
    let checked = check(
        buf,
        head_len,
        limits,
        method,
        target,
        version,
        headers.iter(),
    );
    match checked {
        Ok((framing, close)) => Parse::Parsed {
            head: RequestHead {
                method,
                target,
                version,
                headers,
                close,
            },
            framing,
            head_len,
        },
        Err(Stop::Refused(why)) => Parse::Refused(why),
        Err(Stop::Declined(why)) => Parse::Declined(why),
    }
}

/// A head's checks once httparse has read it whole: first every refusal (so no head is
/// declined to hyper with a framing the proxy refuses), then every decline; the framing
/// and whether the head asks to close when neither applies.
fn check<'f, 'b: 'f>(
    buf: &[u8],
    head_len: usize,
    limits: Limits,
    method: &str,
    target: &str,
    version: u8,
    fields: impl Iterator<Item = &'f Field<'b>>,
) -> Result<(Framing, bool), Stop> {
    let refuse = |why| Err(Stop::Refused(why));
    if head_len > limits.max_head_bytes {
        return refuse(Refusal::HeadTooLarge);
    }
    if has_bare_lf(&buf[..head_len]) {
        return refuse(Refusal::BareLf);
    }
    let mut length: Option<u64> = None;
    let mut encodings = 0usize;
    let mut chunked = false;
    let mut close = false;
    let mut declined = None;
    for field in fields {
        let name = field.name.as_bytes();
        if name.eq_ignore_ascii_case(b"content-length") {
            let Some(n) = digits(field.value).filter(|n| *n <= MAX_CONTENT_LENGTH) else {
                return refuse(Refusal::InvalidContentLength);
            };
            if length.is_some_and(|prev| prev != n) {
                return refuse(Refusal::ConflictingContentLength);
            }
            length = Some(n);
        } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
            encodings += 1;
            chunked = last_coding_is_chunked(field.value);
            if !chunked {
                return refuse(Refusal::NotChunked);
            }
            if encodings > 1 || !field.value.eq_ignore_ascii_case(b"chunked") {
                return refuse(Refusal::UnsupportedTransferEncoding);
            }
        } else if name.eq_ignore_ascii_case(b"connection") {
            close |= has_close_token(field.value);
        } else if name.eq_ignore_ascii_case(b"upgrade") {
            declined = declined.or(Some(Decline::Upgrade));
        } else if name.eq_ignore_ascii_case(b"expect") {
            declined = declined.or(Some(Decline::Expect));
        }
    }
    let framing = match (length, chunked) {
        (Some(_), true) => return refuse(Refusal::LengthWithTransferEncoding),
        (None, true) => Framing::Chunked,
        (None | Some(0), false) => Framing::Empty,
        (Some(n), false) => Framing::Length(n),
    };
    let declined = if version != 1 {
        Some(Decline::Version)
    } else if method == "CONNECT" {
        Some(Decline::Connect)
    } else if !origin_form(target) {
        Some(Decline::Target)
    } else {
        declined
    };
    match declined {
        Some(why) => Err(Stop::Declined(why)),
        None => Ok((framing, close)),
    }
}

/// Why [`check`] stops a head.
enum Stop {
    Refused(Refusal),
    Declined(Decline),
}

/// A head with more fields than [`HEADER_SLOTS`]: read again with room for hyper's 100
/// (the one allocation, off the common path) so its framing is checked before hyper is
/// given it; more than 100 is refused as hyper refuses it (431).
#[cold]
fn too_many_fields(buf: &[u8], limits: Limits) -> Parse<'_> {
    let mut slots = vec![httparse::EMPTY_HEADER; HYPER_MAX_FIELDS];
    let mut request = httparse::Request::new(&mut slots);
    let head_len = match request.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) if buf.len() > limits.max_head_bytes => {
            return Parse::Refused(Refusal::HeadTooLarge)
        }
        Ok(httparse::Status::Partial) => return Parse::Incomplete,
        Err(httparse::Error::TooManyHeaders) => return Parse::Refused(Refusal::HeadTooLarge),
        Err(e) => return failed(buf, e),
    };
    let (Some(method), Some(target), Some(version)) =
        (request.method, request.path, request.version)
    else {
        return Parse::Refused(Refusal::Malformed("incomplete request line"));
    };
    let fields: Vec<Field<'_>> = request
        .headers
        .iter()
        .map(|f| Field {
            name: f.name,
            value: f.value,
        })
        .collect();
    match check(
        buf,
        head_len,
        limits,
        method,
        target,
        version,
        fields.iter(),
    ) {
        Ok(_) | Err(Stop::Declined(_)) => Parse::Declined(Decline::TooManyFields),
        Err(Stop::Refused(why)) => Parse::Refused(why),
    }
}

/// The answer for a head httparse refused.
fn failed(buf: &[u8], error: httparse::Error) -> Parse<'_> {
    match error {
        httparse::Error::TooManyHeaders => Parse::Refused(Refusal::HeadTooLarge),
        // HTTP/2 with prior knowledge is hyper's; any other version hyper refuses (400),
        // so it is refused here rather than handed over only to be refused.
        httparse::Error::Version if could_be_h2_preface(buf) => Parse::Declined(Decline::Version),
        httparse::Error::Version => Parse::Refused(Refusal::Malformed("unsupported HTTP version")),
        // A field line starting with a blank is where httparse stops at a name; the
        // error path only, so the search costs nothing on good heads.
        httparse::Error::HeaderName
            if memchr::memmem::find(buf, b"\n ").is_some()
                || memchr::memmem::find(buf, b"\n\t").is_some() =>
        {
            Parse::Refused(Refusal::ObsFold)
        }
        httparse::Error::HeaderName => Parse::Refused(Refusal::Malformed("invalid header name")),
        httparse::Error::HeaderValue => Parse::Refused(Refusal::Malformed("invalid header value")),
        httparse::Error::NewLine => Parse::Refused(Refusal::Malformed("invalid line ending")),
        httparse::Error::Token => Parse::Refused(Refusal::Malformed("invalid request line")),
        httparse::Error::Status => Parse::Refused(Refusal::Malformed("invalid request line")),
    }
}

/// Whether `buf` is the HTTP/2 connection preface, or the start of it.
fn could_be_h2_preface(buf: &[u8]) -> bool {
    const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
    let n = buf.len().min(PREFACE.len());
    buf[..n] == PREFACE[..n]
}

/// Whether a line of `head` ends in a LF with no CR before it.
pub(super) fn has_bare_lf(head: &[u8]) -> bool {
    memchr::memchr_iter(b'\n', head).any(|i| i == 0 || head[i - 1] != b'\r')
}

/// A plain origin-form target: `/`, then only the ASCII bytes `http::Uri` keeps as they
/// are in a path (then, after `?`, in a query), within hyper's length. A fragment, a
/// byte hyper refuses, or one above ASCII declines the head instead.
fn origin_form(target: &str) -> bool {
    let bytes = target.as_bytes();
    if bytes.first() != Some(&b'/') || bytes.len() > MAX_TARGET_BYTES {
        return false;
    }
    let (path, query) = match memchr::memchr(b'?', bytes) {
        Some(q) => (&bytes[..q], &bytes[q + 1..]),
        None => (bytes, &[][..]),
    };
    path.iter().all(|b| PATH_BYTES[usize::from(*b)])
        && query.iter().all(|b| QUERY_BYTES[usize::from(*b)])
}

/// The bytes `http::Uri` (1.x) takes as they are in a path: the WHATWG path set, and
/// `"`, `{`, `}`.
const PATH_BYTES: [bool; 256] = byte_set(false);

/// The bytes `http::Uri` (1.x) takes as they are in a query (`?` among them).
const QUERY_BYTES: [bool; 256] = byte_set(true);

const fn byte_set(query: bool) -> [bool; 256] {
    let mut set = [false; 256];
    let mut i = 0;
    while i < 256 {
        let b = i as u8;
        set[i] = if query {
            matches!(b, 0x21 | 0x24..=0x3B | 0x3D | 0x3F..=0x7E)
        } else {
            matches!(b, 0x21 | 0x24..=0x3B | 0x3D | 0x40..=0x5F | 0x61..=0x7A | 0x7C | 0x7E)
                || matches!(b, b'"' | b'{' | b'}')
        };
        i += 1;
    }
    set
}

/// A decimal number as hyper reads a `Content-Length`: ASCII digits only, at least one.
pub(super) fn digits(value: &[u8]) -> Option<u64> {
    if value.is_empty() {
        return None;
    }
    value.iter().try_fold(0u64, |n, b| {
        let digit = b.is_ascii_digit().then(|| u64::from(b - b'0'))?;
        n.checked_mul(10)?.checked_add(digit)
    })
}

/// hyper's `is_chunked_`: visible ASCII, and the last comma-separated coding `chunked`.
pub(crate) fn last_coding_is_chunked(value: &[u8]) -> bool {
    visible(value)
        && value
            .rsplit(|b| *b == b',')
            .next()
            .is_some_and(|coding| coding.trim_ascii().eq_ignore_ascii_case(b"chunked"))
}

/// hyper's `connection_close`: visible ASCII, and a `close` item in the list.
pub(super) fn has_close_token(value: &[u8]) -> bool {
    visible(value)
        && value
            .split(|b| *b == b',')
            .any(|item| item.trim_ascii().eq_ignore_ascii_case(b"close"))
}

/// What `HeaderValue::to_str` accepts: tab and visible ASCII.
pub(super) fn visible(value: &[u8]) -> bool {
    value
        .iter()
        .all(|b| *b == b'\t' || (0x20..0x7f).contains(b))
}

#[cfg(test)]
mod tests;
