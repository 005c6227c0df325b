//! The whole-exchange differential oracle: the requests an upstream received and the
//! responses a client read, split into messages with their own reader (httparse and the
//! framing rules of RFC 9112, not the proxy's codec), normalised where two runs differ by
//! nature, and compared, with the deliberate differences between the two HTTP/1.1 paths
//! named in [`Deliberate`].

use std::fmt;

/// How a message's body is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// No body (a request without framing fields, a response to HEAD, 1xx, 204, 304).
    None,
    /// `Content-Length`.
    Length(u64),
    /// `Transfer-Encoding: chunked`.
    Chunked,
    /// A response body that runs until the connection closes.
    UntilClose,
}

/// One message as read off the wire: start line, fields in order, framing and body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// The request or status line, escaped to ASCII.
    pub start_line: String,
    /// Field names as sent and values, escaped to ASCII (values normalised).
    pub fields: Vec<(String, String)>,
    /// How the body was delimited.
    pub framing: Framing,
    /// The body as it crossed the wire (chunk sizes, extensions and trailers included).
    pub raw_body: Vec<u8>,
    /// The body's content: de-chunked when chunked.
    pub body: Vec<u8>,
    /// The head and the whole body were read.
    pub complete: bool,
}

impl Message {
    /// The value of the first field named `name` (any case).
    pub fn field(&self, name: &str) -> Option<&str> {
        self.fields
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The request method (the start line's first word).
    pub fn method(&self) -> &str {
        self.start_line.split(' ').next().unwrap_or("")
    }
}

impl fmt::Display for Message {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "    {}", self.start_line)?;
        for (name, value) in &self.fields {
            writeln!(f, "    {name}: {}", shortened(value))?;
        }
        writeln!(
            f,
            "    [{:?}, {}] body \"{}\"",
            self.framing,
            if self.complete {
                "complete"
            } else {
                "incomplete"
            },
            shortened(&escaped(&self.body))
        )
    }
}

/// `text`, or its start and length when it is too long to read in a report.
fn shortened(text: &str) -> String {
    const SHOWN: usize = 160;
    match text.get(..SHOWN) {
        Some(start) if text.len() > SHOWN => format!("{start}... ({} bytes)", text.len()),
        _ => text.to_owned(),
    }
}

/// A stream split into messages and what was left that is not one.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stream {
    /// Whole messages, and at the end one that was cut short.
    pub messages: Vec<Message>,
    /// Bytes from where no message could be read (escaped to ASCII).
    pub unreadable: String,
}

impl fmt::Display for Stream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, message) in self.messages.iter().enumerate() {
            writeln!(f, "  #{i}")?;
            write!(f, "{message}")?;
        }
        if !self.unreadable.is_empty() {
            writeln!(f, "  unreadable: \"{}\"", shortened(&self.unreadable))?;
        }
        Ok(())
    }
}

/// What one proxy did with one client connection: the requests its upstream received
/// (in the order they began to arrive, over any number of upstream connections), the
/// responses the client read, and whether the proxy closed the connection.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Exchange {
    /// The forwarded requests.
    pub forwarded: Stream,
    /// The responses to the client.
    pub responses: Stream,
    /// The proxy closed the client connection (rather than going quiet).
    pub closed: bool,
}

impl fmt::Display for Exchange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, " forwarded upstream:")?;
        write!(f, "{}", self.forwarded)?;
        writeln!(f, " answered to the client (closed: {}):", self.closed)?;
        write!(f, "{}", self.responses)
    }
}

/// Fields whose values differ between two runs by nature: generated per request or per
/// second.
pub const VOLATILE_FIELDS: &[&str] = &["date", "x-request-id", "traceparent", "tracestate"];

/// The value a volatile field's value or a [`Normaliser`] substitution becomes.
pub const MASK: &str = "<volatile>";

/// Replaces what differs between two runs by nature: the values of [`VOLATILE_FIELDS`],
/// and given byte strings (an upstream's own address, the session token it minted, the
/// request ids a proxy generated) wherever they occur.
#[derive(Debug, Clone, Default)]
pub struct Normaliser {
    substitutions: Vec<(Vec<u8>, String)>,
}

impl Normaliser {
    /// Replaces every occurrence of `from` by `to`.
    pub fn substitute(mut self, from: impl Into<Vec<u8>>, to: &str) -> Self {
        let from = from.into();
        if !from.is_empty() {
            self.substitutions.push((from, to.to_owned()));
        }
        self
    }

    /// Adds the values of every volatile field of `stream` as substitutions, so a request
    /// id echoed in a body is masked too.
    pub fn learning_from(mut self, stream: &Stream) -> Self {
        for message in &stream.messages {
            for (name, value) in &message.fields {
                if is_volatile(name) && value.len() >= 8 {
                    self = self.substitute(value.as_bytes().to_vec(), MASK);
                }
            }
        }
        self
    }

    fn apply(&self, bytes: &[u8]) -> Vec<u8> {
        let mut out = bytes.to_vec();
        for (from, to) in &self.substitutions {
            out = replace_all(&out, from, to.as_bytes());
        }
        out
    }

    fn apply_str(&self, text: &str) -> String {
        String::from_utf8_lossy(&self.apply(text.as_bytes())).into_owned()
    }

    /// The stream with volatile values masked and the substitutions made.
    pub fn stream(&self, stream: &Stream) -> Stream {
        Stream {
            messages: stream
                .messages
                .iter()
                .map(|m| Message {
                    start_line: self.apply_str(&m.start_line),
                    fields: m
                        .fields
                        .iter()
                        .map(|(name, value)| {
                            let value = if is_volatile(name) {
                                MASK.to_owned()
                            } else {
                                self.apply_str(value)
                            };
                            (name.clone(), value)
                        })
                        .collect(),
                    framing: m.framing,
                    raw_body: self.apply(&m.raw_body),
                    body: self.apply(&m.body),
                    complete: m.complete,
                })
                .collect(),
            unreadable: self.apply_str(&stream.unreadable),
        }
    }
}

fn is_volatile(name: &str) -> bool {
    VOLATILE_FIELDS.iter().any(|v| v.eq_ignore_ascii_case(name))
}

/// `haystack` with every `from` replaced by `to`.
pub(crate) fn replace_all(haystack: &[u8], from: &[u8], to: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(haystack.len());
    let mut i = 0;
    while i < haystack.len() {
        if haystack[i..].starts_with(from) {
            out.extend_from_slice(to);
            i += from.len();
        } else {
            out.push(haystack[i]);
            i += 1;
        }
    }
    out
}

/// Field slots for the oracle's own reading (more than any proxy accepts).
const MAX_FIELDS: usize = 256;

fn escaped(bytes: &[u8]) -> String {
    bytes.escape_ascii().to_string()
}

fn fields_of(headers: &[httparse::Header<'_>]) -> Vec<(String, String)> {
    headers
        .iter()
        .map(|h| (h.name.to_owned(), escaped(h.value)))
        .collect()
}

fn has_chunked(fields: &[(String, String)]) -> bool {
    fields
        .iter()
        .filter(|(n, _)| n.eq_ignore_ascii_case("transfer-encoding"))
        .flat_map(|(_, v)| v.split(','))
        .last()
        .is_some_and(|coding| coding.trim().eq_ignore_ascii_case("chunked"))
}

fn length_of(fields: &[(String, String)]) -> Option<u64> {
    fields
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case("content-length"))
        .and_then(|(_, v)| v.trim().parse().ok())
}

/// A body read from the front of `bytes`: raw, content, bytes used, whole.
struct BodyRead {
    raw: Vec<u8>,
    content: Vec<u8>,
    used: usize,
    complete: bool,
}

fn read_body(bytes: &[u8], framing: Framing) -> BodyRead {
    match framing {
        Framing::None => BodyRead {
            raw: Vec::new(),
            content: Vec::new(),
            used: 0,
            complete: true,
        },
        Framing::Length(n) => {
            let take = usize::try_from(n).unwrap_or(usize::MAX).min(bytes.len());
            BodyRead {
                raw: bytes[..take].to_vec(),
                content: bytes[..take].to_vec(),
                used: take,
                complete: take as u64 == n,
            }
        }
        Framing::UntilClose => BodyRead {
            raw: bytes.to_vec(),
            content: bytes.to_vec(),
            used: bytes.len(),
            complete: true,
        },
        Framing::Chunked => read_chunked(bytes),
    }
}

/// Chunked decoding (RFC 9112 §7.1): sizes in hex, extensions after `;` skipped, then
/// trailer lines up to an empty line. Stops (incomplete) at the first byte it cannot read.
fn read_chunked(bytes: &[u8]) -> BodyRead {
    let mut content = Vec::new();
    let mut at = 0;
    let line_end = |from: usize| {
        bytes[from..]
            .windows(2)
            .position(|w| w == b"\r\n")
            .map(|p| from + p)
    };
    let incomplete = |at: usize, content: Vec<u8>| BodyRead {
        raw: bytes[..at].to_vec(),
        content,
        used: at,
        complete: false,
    };
    loop {
        let Some(end) = line_end(at) else {
            return incomplete(bytes.len(), content);
        };
        let line = &bytes[at..end];
        let digits = line.split(|b| *b == b';').next().unwrap_or_default();
        let Some(size) = std::str::from_utf8(digits)
            .ok()
            .filter(|d| !d.is_empty() && d.bytes().all(|b| b.is_ascii_hexdigit()))
            .and_then(|d| u64::from_str_radix(d, 16).ok())
        else {
            return incomplete(at, content);
        };
        at = end + 2;
        if size == 0 {
            loop {
                let Some(end) = line_end(at) else {
                    return incomplete(bytes.len(), content);
                };
                let empty = end == at;
                at = end + 2;
                if empty {
                    return BodyRead {
                        raw: bytes[..at].to_vec(),
                        content,
                        used: at,
                        complete: true,
                    };
                }
            }
        }
        let size = usize::try_from(size).unwrap_or(usize::MAX);
        if bytes.len() - at < size {
            content.extend_from_slice(&bytes[at..]);
            return incomplete(bytes.len(), content);
        }
        content.extend_from_slice(&bytes[at..at + size]);
        at += size;
        if bytes.len() - at < 2 {
            return incomplete(bytes.len(), content);
        }
        if &bytes[at..at + 2] != b"\r\n" {
            return incomplete(at, content);
        }
        at += 2;
    }
}

/// One request from the front of `bytes`: the message and the bytes it used, or `None`
/// when no request head can be read there.
pub fn read_request(bytes: &[u8]) -> Option<(Message, usize)> {
    let mut slots = [httparse::EMPTY_HEADER; MAX_FIELDS];
    let mut request = httparse::Request::new(&mut slots);
    let head = match request.parse(bytes) {
        Ok(httparse::Status::Complete(head)) => head,
        _ => return None,
    };
    let fields = fields_of(request.headers);
    let framing = if has_chunked(&fields) {
        Framing::Chunked
    } else {
        length_of(&fields).map_or(Framing::None, Framing::Length)
    };
    let start_line = format!(
        "{} {} HTTP/1.{}",
        request.method.unwrap_or_default(),
        request.path.unwrap_or_default(),
        request.version.unwrap_or_default()
    );
    let body = read_body(&bytes[head..], framing);
    Some((
        Message {
            start_line,
            fields,
            framing,
            raw_body: body.raw,
            body: body.content,
            complete: body.complete,
        },
        head + body.used,
    ))
}

/// Splits a connection's request bytes into requests.
pub fn read_requests(mut bytes: &[u8]) -> Stream {
    let mut stream = Stream::default();
    while !bytes.is_empty() {
        let Some((message, used)) = read_request(bytes) else {
            break;
        };
        let complete = message.complete;
        stream.messages.push(message);
        bytes = &bytes[used..];
        if !complete {
            break;
        }
    }
    stream.unreadable = escaped(bytes);
    stream
}

/// The methods of the requests a client's bytes hold, as far as they can be read, so the
/// responses to HEAD are read without a body.
pub fn request_methods(bytes: &[u8]) -> Vec<String> {
    read_requests(bytes)
        .messages
        .iter()
        .map(|m| m.method().to_owned())
        .collect()
}

/// Splits the bytes a client read into responses, the `methods` of its requests in order
/// (a 1xx answers no request of its own).
pub fn read_responses(mut bytes: &[u8], methods: &[String]) -> Stream {
    let mut stream = Stream::default();
    let mut next = 0;
    while !bytes.is_empty() {
        let mut slots = [httparse::EMPTY_HEADER; MAX_FIELDS];
        let mut response = httparse::Response::new(&mut slots);
        let head = match response.parse(bytes) {
            Ok(httparse::Status::Complete(head)) => head,
            _ => break,
        };
        let status = response.code.unwrap_or_default();
        let fields = fields_of(response.headers);
        let head_request = methods.get(next).is_some_and(|m| m == "HEAD");
        let bodiless = (100..200).contains(&status) || status == 204 || status == 304;
        let framing = if bodiless || head_request {
            Framing::None
        } else if has_chunked(&fields) {
            Framing::Chunked
        } else {
            length_of(&fields).map_or(Framing::UntilClose, Framing::Length)
        };
        if !(100..200).contains(&status) {
            next += 1;
        }
        let body = read_body(&bytes[head..], framing);
        stream.messages.push(Message {
            start_line: format!(
                "HTTP/1.{} {} {}",
                response.version.unwrap_or_default(),
                status,
                response.reason.unwrap_or_default()
            ),
            fields,
            framing,
            raw_body: body.raw,
            body: body.content,
            complete: body.complete,
        });
        bytes = &bytes[head + body.used..];
        if !body.complete {
            break;
        }
    }
    stream.unreadable = escaped(bytes);
    stream
}

/// A difference between the two paths that is there on purpose: the comparison passes
/// an exchange that differs only in these ways, and says which it found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Deliberate {
    /// Field names differ in case only. hyper lower-cases every name it writes; the own
    /// path writes the names as the client or upstream spelled them. Field names are
    /// case-insensitive (RFC 9110 §5.1): no recipient may read meaning into the case.
    FieldNameCase,
    /// A chunked body carries the same content (and trailers) in other chunks, or without
    /// the chunk extensions. hyper decodes a chunked body and chunks it again as it reads
    /// it; the own path relays the client's (or upstream's) chunk frames unchanged. Chunk
    /// boundaries and extensions carry no meaning a proxy must keep (RFC 9112 §7.1.1).
    ChunkFrames,
    /// An error status the same on both paths, in other clothes: hyper's own parser
    /// answers a head it refuses with a bare status line (no body), the own path with the
    /// proxy's JSON error envelope (and its request id), as every other refusal of the
    /// proxy is answered.
    RefusalEnvelope,
    /// After a final 4xx answer, whether the connection closes (and the answer says
    /// `connection: close`) may differ: the own path closes after any head it refuses
    /// and after a body it could not finish, and announces it; it keeps a connection
    /// whose refused request's body it could skip (all buffered), where hyper's path may
    /// close. What was forwarded and answered is still compared.
    ConnectionAfterRefusal,
    /// The own path refuses (400, nothing more forwarded, the connection closed) a head
    /// with a line ended by a bare LF, which hyper's parser reads as CRLF: two parsers
    /// that disagree on line ends are a smuggling risk, so the proxy accepts only CRLF.
    /// Judged with the input (see [`bare_lf_refusal`]), not by [`compare`].
    BareLf,
    /// The own path refuses a head (400, or 431 for more fields than hyper's 100) as
    /// soon as the bytes it has make it malformed or too large, where hyper's path waits
    /// for the head's end (or its header read timeout) before it answers. A malformed
    /// prefix stays malformed whatever follows it (httparse reads a head front to back),
    /// and a prefix with too many fields stays too large, so the answer is the same, only
    /// sooner. Judged on the exchanges (see [`early_refusal`]), not by [`compare`].
    EarlyRefusal,
    /// After a 4xx answer to a request whose body the proxy did not need, hyper's path
    /// closed the connection where the own path skipped the body (all of it buffered,
    /// its framing checked to the end) and served the requests after it. Everything
    /// hyper's path forwarded and answered, the own path forwarded and answered first.
    /// Judged on the exchanges (see [`served_after_refusal`]), not by [`compare`].
    ServedAfterRefusal,
    /// A head whose framing the own path refuses where it parses it (a
    /// `Transfer-Encoding` with a `Content-Length`, or other than one plain `chunked`) is
    /// refused there (400) before any other check; hyper's path reads the head and runs
    /// the request path's checks in their order, so another refusal (a disallowed origin,
    /// say) may come first. Both refuse and close, nothing is forwarded; only which
    /// refusal differs. Judged with the input (see [`framing_refused_first`]).
    FramingRefusedFirst,
    /// The own path refuses (400, nothing more forwarded, the connection closed) a chunk
    /// extension holding a control byte or a byte above ASCII, which hyper's chunked
    /// decoder passes over (it takes any byte but LF there): bytes no sender needs, where
    /// parsers are known to disagree. Judged with the input (see
    /// [`chunk_extension_refusal`]).
    ChunkExtension,
}

impl Deliberate {
    /// Why the difference is allowed.
    pub fn why(self) -> &'static str {
        match self {
            Deliberate::FieldNameCase => {
                "field names are case-insensitive; hyper lower-cases them, the own path keeps the sender's case"
            }
            Deliberate::ChunkFrames => {
                "chunk boundaries and extensions carry no meaning; hyper re-chunks, the own path relays frames unchanged"
            }
            Deliberate::RefusalEnvelope => {
                "the same error status; hyper's parser answers bare, the own path in the proxy's JSON envelope"
            }
            Deliberate::ConnectionAfterRefusal => {
                "after a final 4xx, the own path closes (and says so) or keeps the connection by its own rule"
            }
            Deliberate::BareLf => {
                "a head line ended by a bare LF is refused by the own path, read as CRLF by hyper"
            }
            Deliberate::EarlyRefusal => {
                "a malformed head is refused by the own path at once, by hyper's path at the head's end"
            }
            Deliberate::ServedAfterRefusal => {
                "after a 4xx, hyper's path closed; the own path skipped the unread body and went on"
            }
            Deliberate::FramingRefusedFirst => {
                "a framing the own path refuses at the parse is refused before the request path's other checks"
            }
            Deliberate::ChunkExtension => {
                "a chunk extension with a control or non-ASCII byte is refused by the own path, passed over by hyper"
            }
        }
    }

    /// Every deliberate difference [`compare`] sets aside ([`Deliberate::BareLf`] needs
    /// the input: [`bare_lf_refusal`]).
    pub const ALL: [Deliberate; 4] = [
        Deliberate::FieldNameCase,
        Deliberate::ChunkFrames,
        Deliberate::RefusalEnvelope,
        Deliberate::ConnectionAfterRefusal,
    ];

    fn erase(self, exchange: &Exchange) -> Exchange {
        match self {
            Deliberate::RefusalEnvelope => return erase_refusal_envelopes(exchange),
            Deliberate::ConnectionAfterRefusal => return erase_close_after_refusal(exchange),
            Deliberate::BareLf
            | Deliberate::EarlyRefusal
            | Deliberate::ServedAfterRefusal
            | Deliberate::FramingRefusedFirst
            | Deliberate::ChunkExtension => return exchange.clone(),
            Deliberate::FieldNameCase | Deliberate::ChunkFrames => {}
        }
        let stream = |s: &Stream| Stream {
            messages: s
                .messages
                .iter()
                .map(|m| {
                    let mut m = m.clone();
                    match self {
                        Deliberate::FieldNameCase => {
                            for (name, _) in &mut m.fields {
                                *name = name.to_ascii_lowercase();
                            }
                        }
                        Deliberate::ChunkFrames => {
                            if m.framing == Framing::Chunked {
                                m.raw_body.clear();
                            }
                        }
                        Deliberate::RefusalEnvelope
                        | Deliberate::ConnectionAfterRefusal
                        | Deliberate::BareLf
                        | Deliberate::EarlyRefusal
                        | Deliberate::ServedAfterRefusal
                        | Deliberate::FramingRefusedFirst
                        | Deliberate::ChunkExtension => {}
                    }
                    m
                })
                .collect(),
            unreadable: s.unreadable.clone(),
        };
        Exchange {
            forwarded: stream(&exchange.forwarded),
            responses: stream(&exchange.responses),
            closed: exchange.closed,
        }
    }
}

/// The status code of a response message's start line.
fn status(message: &Message) -> Option<u16> {
    message.start_line.get(9..12)?.parse().ok()
}

/// Every 4xx or 5xx answer reduced to its status line: the body and the fields that
/// dress it (its type, length, request id, `connection`) dropped.
fn erase_refusal_envelopes(exchange: &Exchange) -> Exchange {
    let mut erased = exchange.clone();
    for message in &mut erased.responses.messages {
        if status(message).is_some_and(|s| s >= 400) {
            message.fields.retain(|(name, _)| {
                ![
                    "content-type",
                    "content-length",
                    "x-request-id",
                    "connection",
                ]
                .iter()
                .any(|n| name.eq_ignore_ascii_case(n))
            });
            message.raw_body.clear();
            message.body.clear();
            message.framing = Framing::None;
        }
    }
    erased
}

/// After a final 4xx answer: the close, and its announcement, set aside.
fn erase_close_after_refusal(exchange: &Exchange) -> Exchange {
    let mut erased = exchange.clone();
    let Some(last) = erased.responses.messages.last_mut() else {
        return erased;
    };
    if status(last).is_some_and(|s| (400..500).contains(&s)) {
        last.fields.retain(|(name, value)| {
            !(name.eq_ignore_ascii_case("connection") && value.eq_ignore_ascii_case("close"))
        });
        erased.closed = false;
    }
    erased
}

/// Whether `input` has a head line ended by a bare LF and the own path did what it
/// does with one: forwarded and answered what hyper did before it (or nothing), then
/// one 400 and the close ([`Deliberate::BareLf`]).
pub fn bare_lf_refusal(input: &[u8], hyper: &Exchange, fast: &Exchange) -> bool {
    let bare_lf = input
        .iter()
        .enumerate()
        .any(|(i, b)| *b == b'\n' && (i == 0 || input[i - 1] != b'\r'));
    bare_lf && refused_after_the_same(hyper, fast)
}

/// Whether `input` has a chunk extension (after a `;` on a line of the body) holding a
/// byte the own path refuses there, and the own path did what it does with one
/// ([`Deliberate::ChunkExtension`]).
pub fn chunk_extension_refusal(input: &[u8], hyper: &Exchange, fast: &Exchange) -> bool {
    let refused_byte = |b: u8| (b < 0x20 && b != b'\t' && b != b'\r') || b >= 0x7f;
    let odd_extension = input.split(|b| *b == b'\n').any(|line| {
        line.iter()
            .position(|b| *b == b';')
            .is_some_and(|at| line[at..].iter().any(|b| refused_byte(*b)))
    });
    odd_extension && refused_after_the_same(hyper, fast)
}

/// The own path forwarded and answered what hyper's path did before it (or nothing),
/// then answered one 400 and closed.
fn refused_after_the_same(hyper: &Exchange, fast: &Exchange) -> bool {
    let Some((refusal, answered)) = fast.responses.messages.split_last() else {
        return false;
    };
    let before =
        |all: &[Message], part: &[Message]| all.len() >= part.len() && all[..part.len()] == *part;
    fast.closed
        && status(refusal) == Some(400)
        && before(&hyper.responses.messages, answered)
        && before(&hyper.forwarded.messages, &fast.forwarded.messages)
}

/// Whether the own path answered what hyper's did, then refused (400 or 431) and closed
/// where hyper's path still waits, nothing more forwarded ([`Deliberate::EarlyRefusal`]).
pub fn early_refusal(hyper: &Exchange, fast: &Exchange) -> bool {
    let Some((refusal, answered)) = fast.responses.messages.split_last() else {
        return false;
    };
    !hyper.closed
        && fast.closed
        && matches!(status(refusal), Some(400 | 431))
        && hyper.responses.messages == answered
        && hyper.forwarded == fast.forwarded
}

/// Whether hyper's path closed after a 4xx while the own path, having answered and
/// forwarded all hyper's path did, went on with the requests after it
/// ([`Deliberate::ServedAfterRefusal`]).
pub fn served_after_refusal(hyper: &Exchange, fast: &Exchange) -> bool {
    let Some(last) = hyper.responses.messages.last() else {
        return false;
    };
    let starts =
        |all: &[Message], part: &[Message]| all.len() > part.len() && all[..part.len()] == *part;
    let forwarded = &fast.forwarded.messages;
    hyper.closed
        && status(last).is_some_and(|s| (400..500).contains(&s))
        && starts(&fast.responses.messages, &hyper.responses.messages)
        && forwarded.len() >= hyper.forwarded.messages.len()
        && forwarded[..hyper.forwarded.messages.len()] == *hyper.forwarded.messages
}

/// Whether `input` carries a `Transfer-Encoding` field and both paths refused and closed,
/// the own path with 400, after the same answers, nothing more forwarded by either
/// ([`Deliberate::FramingRefusedFirst`]).
pub fn framing_refused_first(input: &[u8], hyper: &Exchange, fast: &Exchange) -> bool {
    const NAME: &[u8] = b"transfer-encoding";
    let coded = input
        .windows(NAME.len())
        .any(|w| w.eq_ignore_ascii_case(NAME));
    let (Some((fast_last, fast_before)), Some((hyper_last, hyper_before))) = (
        fast.responses.messages.split_last(),
        hyper.responses.messages.split_last(),
    ) else {
        return false;
    };
    coded
        && fast.closed
        && hyper.closed
        && status(fast_last) == Some(400)
        && status(hyper_last).is_some_and(|s| (400..500).contains(&s))
        && fast_before == hyper_before
        && fast.forwarded == hyper.forwarded
}

/// The verdict on two exchanges of the same bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Identical.
    Same,
    /// Identical once these deliberate differences are set aside.
    Allowed(Vec<Deliberate>),
    /// A difference no rule allows.
    Diverged,
}

/// Compares what the hyper path and the own path did with the same bytes (both already
/// normalised). A difference is allowed only when setting aside [`Deliberate`]
/// differences, one at a time and then together, makes the two the same.
pub fn compare(hyper: &Exchange, fast: &Exchange) -> Verdict {
    if hyper == fast {
        return Verdict::Same;
    }
    for rule in Deliberate::ALL {
        if rule.erase(hyper) == rule.erase(fast) {
            return Verdict::Allowed(vec![rule]);
        }
    }
    let all = |e: &Exchange| {
        Deliberate::ALL
            .iter()
            .fold(e.clone(), |e, rule| rule.erase(&e))
    };
    if all(hyper) == all(fast) {
        return Verdict::Allowed(Deliberate::ALL.to_vec());
    }
    Verdict::Diverged
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exchange(forwarded: &[u8], responses: &[u8], methods: &[&str]) -> Exchange {
        let methods: Vec<String> = methods.iter().map(|m| (*m).to_owned()).collect();
        Exchange {
            forwarded: read_requests(forwarded),
            responses: read_responses(responses, &methods),
            closed: false,
        }
    }

    #[test]
    fn requests_are_split_by_their_framing() {
        let stream = read_requests(
            b"POST /a HTTP/1.1\r\ncontent-length: 3\r\n\r\nabcGET /b HTTP/1.1\r\n\r\n\
              POST /c HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n2;x=y\r\nhi\r\n0\r\nt: 1\r\n\r\n\
              POST /d HTTP/1.1\r\ncontent-length: 9\r\n\r\nabc",
        );
        let lines: Vec<_> = stream.messages.iter().map(|m| &m.start_line).collect();
        assert_eq!(
            lines,
            [
                "POST /a HTTP/1.1",
                "GET /b HTTP/1.1",
                "POST /c HTTP/1.1",
                "POST /d HTTP/1.1"
            ]
        );
        assert_eq!(stream.messages[0].body, b"abc");
        assert_eq!(stream.messages[2].framing, Framing::Chunked);
        assert_eq!(stream.messages[2].body, b"hi");
        assert_eq!(
            stream.messages[2].raw_body,
            b"2;x=y\r\nhi\r\n0\r\nt: 1\r\n\r\n"
        );
        assert!(stream.messages[2].complete);
        assert!(!stream.messages[3].complete);
        assert_eq!(stream.unreadable, "");
    }

    #[test]
    fn an_unreadable_rest_is_kept() {
        let stream = read_requests(b"GET / HTTP/1.1\r\n\r\n\x00garbage");
        assert_eq!(stream.messages.len(), 1);
        assert_eq!(stream.unreadable, "\\x00garbage");
        let stream = read_requests(b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n");
        assert!(!stream.messages[0].complete);
        assert_eq!(stream.unreadable, "zz\\r\\n");
    }

    #[test]
    fn responses_to_head_and_1xx_have_no_body() {
        let bytes = b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\n\
                      HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok";
        let stream = read_responses(bytes, &["HEAD".into(), "GET".into()]);
        assert_eq!(stream.messages.len(), 3);
        assert_eq!(stream.messages[1].framing, Framing::None);
        assert_eq!(stream.messages[2].body, b"ok");
        let stream = read_responses(b"HTTP/1.0 200 OK\r\n\r\nuntil close", &[]);
        assert_eq!(stream.messages[0].framing, Framing::UntilClose);
        assert_eq!(stream.messages[0].body, b"until close");
    }

    #[test]
    fn volatile_values_and_substitutions_are_masked() {
        let a = exchange(
            b"GET / HTTP/1.1\r\nhost: 127.0.0.1:1111\r\nx-request-id: aaaaaaaaaaaa\r\nauthorization: Bearer tok-a\r\n\r\n",
            b"HTTP/1.1 500 x\r\ndate: Mon\r\nx-request-id: rid-aaaaaaaa\r\ncontent-length: 12\r\n\r\nrid-aaaaaaaa",
            &["GET"],
        );
        let b = exchange(
            b"GET / HTTP/1.1\r\nhost: 127.0.0.1:2222\r\nx-request-id: bbbbbbbbbbbb\r\nauthorization: Bearer tok-b\r\n\r\n",
            b"HTTP/1.1 500 x\r\ndate: Tue\r\nx-request-id: rid-bbbbbbbb\r\ncontent-length: 12\r\n\r\nrid-bbbbbbbb",
            &["GET"],
        );
        let normalise = |e: &Exchange, port: &str, token: &str| {
            let n = Normaliser::default()
                .substitute(format!("127.0.0.1:{port}"), "<upstream>")
                .substitute(token, "<token>")
                .learning_from(&e.responses);
            Exchange {
                forwarded: n.stream(&e.forwarded),
                responses: n.stream(&e.responses),
                closed: e.closed,
            }
        };
        assert_ne!(a, b);
        assert_eq!(
            compare(
                &normalise(&a, "1111", "tok-a"),
                &normalise(&b, "2222", "tok-b")
            ),
            Verdict::Same
        );
        // A masked field's value is masked, not its presence.
        let c = exchange(b"GET / HTTP/1.1\r\nhost: 127.0.0.1:2222\r\n\r\n", b"", &[]);
        assert_eq!(
            compare(
                &normalise(&a, "1111", "tok-a"),
                &normalise(&c, "2222", "tok-b")
            ),
            Verdict::Diverged
        );
    }

    #[test]
    fn field_name_case_is_a_deliberate_difference() {
        let hyper = exchange(b"GET / HTTP/1.1\r\nx-thing: 1\r\n\r\n", b"", &[]);
        let fast = exchange(b"GET / HTTP/1.1\r\nX-Thing: 1\r\n\r\n", b"", &[]);
        assert_eq!(
            compare(&hyper, &fast),
            Verdict::Allowed(vec![Deliberate::FieldNameCase])
        );
        let other_value = exchange(b"GET / HTTP/1.1\r\nX-Thing: 2\r\n\r\n", b"", &[]);
        assert_eq!(compare(&hyper, &other_value), Verdict::Diverged);
    }

    #[test]
    fn chunk_frames_are_a_deliberate_difference_but_content_is_not() {
        let head = b"POST / HTTP/1.1\r\ntransfer-encoding: chunked\r\n\r\n".to_vec();
        let with = |body: &[u8]| exchange(&[head.as_slice(), body].concat(), b"", &[]);
        let hyper = with(b"6\r\nabcdef\r\n0\r\n\r\n");
        let fast = with(b"2;ext=1\r\nab\r\n4\r\ncdef\r\n0\r\n\r\n");
        assert_eq!(
            compare(&hyper, &fast),
            Verdict::Allowed(vec![Deliberate::ChunkFrames])
        );
        assert_eq!(
            compare(&hyper, &with(b"6\r\nabcdeX\r\n0\r\n\r\n")),
            Verdict::Diverged
        );
        // Content-Length and chunked framing of the same content are not the same.
        let length = exchange(
            b"POST / HTTP/1.1\r\ntransfer-encoding: chunked\r\ncontent-length: 6\r\n\r\nabcdef",
            b"",
            &[],
        );
        assert_eq!(compare(&hyper, &length), Verdict::Diverged);
    }

    #[test]
    fn both_rules_together_and_closing_counts() {
        let hyper = exchange(
            b"POST / HTTP/1.1\r\ntransfer-encoding: chunked\r\n\r\n1\r\na\r\n0\r\n\r\n",
            b"",
            &[],
        );
        let fast = exchange(
            b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n01\r\na\r\n0\r\n\r\n",
            b"",
            &[],
        );
        assert_eq!(
            compare(&hyper, &fast),
            Verdict::Allowed(Deliberate::ALL.to_vec())
        );
        let closed = Exchange {
            closed: true,
            ..hyper.clone()
        };
        assert_eq!(compare(&hyper, &closed), Verdict::Diverged);
        for rule in Deliberate::ALL {
            assert!(!rule.why().is_empty());
        }
    }

    const ENVELOPE: &[u8] = b"HTTP/1.1 400 Bad Request\r\ncontent-type: application/json\r\n\
        x-request-id: <volatile>\r\nconnection: close\r\ncontent-length: 2\r\n\r\n{}";

    #[test]
    fn a_refusal_in_the_envelope_is_a_deliberate_difference_of_the_same_status_only() {
        let bare = exchange(
            b"",
            b"HTTP/1.1 400 Bad Request\r\nconnection: close\r\ncontent-length: 0\r\n\r\n",
            &["POST"],
        );
        let fast = exchange(b"", ENVELOPE, &["POST"]);
        assert_eq!(
            compare(&bare, &fast),
            Verdict::Allowed(vec![Deliberate::RefusalEnvelope])
        );
        let other_status = exchange(
            b"",
            b"HTTP/1.1 431 Too Large\r\nconnection: close\r\ncontent-length: 0\r\n\r\n",
            &["POST"],
        );
        assert_eq!(compare(&other_status, &fast), Verdict::Diverged);
        // A success is never dressed down.
        let ok = |body: &[u8]| {
            exchange(
                b"",
                &[
                    b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n".as_slice(),
                    body,
                ]
                .concat(),
                &["GET"],
            )
        };
        assert_eq!(compare(&ok(b"{}"), &ok(b"[]")), Verdict::Diverged);
    }

    #[test]
    fn the_close_after_a_final_4xx_is_a_deliberate_difference_and_only_there() {
        let answer = |close: &str| {
            format!("HTTP/1.1 404 Not Found\r\n{close}content-length: 2\r\n\r\n{{}}").into_bytes()
        };
        let kept = exchange(b"", &answer(""), &["GET"]);
        let mut closed = exchange(b"", &answer("connection: close\r\n"), &["GET"]);
        closed.closed = true;
        assert_eq!(
            compare(&kept, &closed),
            Verdict::Allowed(vec![Deliberate::ConnectionAfterRefusal])
        );
        // After a success, a close is a difference.
        let ok = exchange(
            b"",
            b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n",
            &["GET"],
        );
        let mut ok_closed = ok.clone();
        ok_closed.closed = true;
        assert_eq!(compare(&ok, &ok_closed), Verdict::Diverged);
    }

    #[test]
    fn a_bare_lf_refusal_needs_the_bare_lf_and_the_same_answers_before_it() {
        let served = exchange(
            b"GET /a HTTP/1.1\r\n\r\nGET /b HTTP/1.1\r\n\r\n",
            b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\nHTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n",
            &["GET", "GET"],
        );
        let mut refused_second = exchange(
            b"GET /a HTTP/1.1\r\n\r\n",
            &[
                b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n".as_slice(),
                ENVELOPE,
            ]
            .concat(),
            &["GET", "GET"],
        );
        refused_second.closed = true;
        let input = b"GET /a HTTP/1.1\r\n\r\nGET /b HTTP/1.1\nhost: x\r\n\r\n";
        assert!(bare_lf_refusal(input, &served, &refused_second));
        // Without a bare LF in the input, the same answers are a divergence.
        let crlf = b"GET /a HTTP/1.1\r\n\r\nGET /b HTTP/1.1\r\nhost: x\r\n\r\n";
        assert!(!bare_lf_refusal(crlf, &served, &refused_second));
        // Nor may the own path forward what hyper did not.
        let mut forwarded_more = refused_second;
        forwarded_more.forwarded = read_requests(b"GET /c HTTP/1.1\r\n\r\n");
        assert!(!bare_lf_refusal(input, &served, &forwarded_more));
    }

    #[test]
    fn an_early_refusal_is_hypers_answers_then_a_400_where_hyper_waits() {
        let ok = b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n".as_slice();
        let waiting = exchange(b"GET /a HTTP/1.1\r\n\r\n", ok, &["GET"]);
        let mut refused = exchange(
            b"GET /a HTTP/1.1\r\n\r\n",
            &[ok, ENVELOPE].concat(),
            &["GET", "GET"],
        );
        refused.closed = true;
        assert!(early_refusal(&waiting, &refused));
        // Too many fields (431) is refused early too; no other status is.
        let answered_with = |refusal: &[u8]| {
            let mut e = exchange(
                b"GET /a HTTP/1.1\r\n\r\n",
                &[ok, refusal].concat(),
                &["GET", "GET"],
            );
            e.closed = true;
            e
        };
        let too_large = b"HTTP/1.1 431 Too Large\r\ncontent-length: 0\r\n\r\n".as_slice();
        assert!(early_refusal(&waiting, &answered_with(too_large)));
        let not_found = b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n\r\n".as_slice();
        assert!(!early_refusal(&waiting, &answered_with(not_found)));
        // hyper's path closing (it refused too, or timed out) is not this difference.
        let mut hyper_closed = waiting.clone();
        hyper_closed.closed = true;
        assert!(!early_refusal(&hyper_closed, &refused));
        // Nor is a refusal where hyper's path answered something else.
        let other = exchange(
            b"GET /a HTTP/1.1\r\n\r\n",
            &[ok, ok].concat(),
            &["GET", "GET"],
        );
        assert!(!early_refusal(&other, &refused));
        // Nor one after forwarding what hyper's path did not.
        let mut forwarded_more = refused;
        forwarded_more.forwarded = read_requests(b"GET /a HTTP/1.1\r\n\r\nGET /b HTTP/1.1\r\n\r\n");
        assert!(!early_refusal(&waiting, &forwarded_more));
    }

    #[test]
    fn serving_on_after_a_refusal_hyper_closed_on_needs_hypers_answers_first() {
        let refused = b"HTTP/1.1 400 Bad Request\r\ncontent-length: 2\r\n\r\n{}".as_slice();
        let ok = b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n".as_slice();
        let mut hyper = exchange(b"", refused, &["POST", "GET"]);
        hyper.closed = true;
        let fast = exchange(
            b"GET /b HTTP/1.1\r\n\r\n",
            &[refused, ok].concat(),
            &["POST", "GET"],
        );
        assert!(served_after_refusal(&hyper, &fast));
        // Not when hyper's path went on too (then the two must agree).
        let mut open = hyper.clone();
        open.closed = false;
        assert!(!served_after_refusal(&open, &fast));
        // Not after a success.
        let mut after_ok = exchange(b"", ok, &["GET", "GET"]);
        after_ok.closed = true;
        assert!(!served_after_refusal(
            &after_ok,
            &exchange(b"", &[ok, ok].concat(), &["GET", "GET"])
        ));
        // Not when the own path answered the refused request otherwise.
        let other = exchange(b"", &[ok, ok].concat(), &["POST", "GET"]);
        assert!(!served_after_refusal(&hyper, &other));
    }

    #[test]
    fn a_framing_refused_first_needs_a_coding_and_both_paths_refusing() {
        let refused = |status: &str| {
            let mut e = exchange(
                b"",
                format!("HTTP/1.1 {status}\r\ncontent-length: 0\r\n\r\n").as_bytes(),
                &["POST"],
            );
            e.closed = true;
            e
        };
        let input = b"POST / HTTP/1.1\r\nOrigin: x\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n";
        let (forbidden, malformed) = (refused("403 Forbidden"), refused("400 Bad Request"));
        assert!(framing_refused_first(input, &forbidden, &malformed));
        // Without a coding in the input there is nothing the parse refuses first.
        assert!(!framing_refused_first(
            b"POST / HTTP/1.1\r\n\r\n",
            &forbidden,
            &malformed
        ));
        // hyper's path serving it is no refusal on both.
        assert!(!framing_refused_first(
            input,
            &refused("200 OK"),
            &malformed
        ));
        // The own path must refuse with 400.
        assert!(!framing_refused_first(
            input,
            &forbidden,
            &refused("404 Not Found")
        ));
    }

    #[test]
    fn a_chunk_extension_refusal_needs_the_odd_byte_in_an_extension() {
        let served = exchange(
            b"POST / HTTP/1.1\r\ncontent-length: 1\r\n\r\na",
            b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n",
            &["POST"],
        );
        let mut refused = exchange(b"", ENVELOPE, &["POST"]);
        refused.closed = true;
        let with = |extension: &[u8]| {
            [
                b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n1;".as_slice(),
                extension,
                b"\r\na\r\n0\r\n\r\n",
            ]
            .concat()
        };
        assert!(chunk_extension_refusal(
            &with(b"n\x00e=v"),
            &served,
            &refused
        ));
        assert!(chunk_extension_refusal(
            &with(b"caf\xc3\xa9"),
            &served,
            &refused
        ));
        assert!(!chunk_extension_refusal(
            &with(b"name=value"),
            &served,
            &refused
        ));
    }
}
