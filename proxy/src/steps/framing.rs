//! Request framing guard for HTTP/1 connections.
//!
//! hyper resolves a request carrying both `Content-Length` and `Transfer-Encoding` the
//! RFC 9112 way (the body is read as chunked, `Content-Length` is dropped, the connection
//! closes after the answer) and hides the conflict from the application. The proxy must
//! refuse such a request before anything is forwarded, so this wrapper watches the bytes
//! on their way to hyper (changing none, holding none back, so hyper's own header timeout
//! still runs): it follows HTTP/1 message framing (heads, `Content-Length` bodies, chunked
//! bodies with trailers) and, for each request head, records whether it carried both
//! fields before hyper can see the end of that head. The service takes one record per
//! request ([`FramingFlags::next`]) and the proxy answers a conflict with 400. It frames as
//! hyper does (a head ends at its first empty line, CRLF or bare LF; lengths compare as
//! numbers); upgrade and CONNECT requests are framed like any other, as the proxy forwards
//! neither and so never switches protocols. At the first byte it cannot frame with
//! certainty (HTTP/2, a malformed head) it stops watching for the rest of the connection,
//! leaving it to hyper's own checks.

use std::collections::VecDeque;
use std::mem::MaybeUninit;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{ready, Context, Poll};

use http::header::{self, HeaderMap};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::error::ProxyError;

/// Marks a request whose head carried both `Content-Length` and `Transfer-Encoding`
/// (a request extension, set by the server from [`FramingFlags`]).
#[derive(Debug, Clone, Copy)]
pub struct FramingConflict;

/// One record per request head seen on an HTTP/1 connection, oldest first.
#[derive(Debug, Clone, Default)]
pub struct FramingFlags(Arc<Mutex<VecDeque<bool>>>);

impl FramingFlags {
    fn push(&self, conflict: bool) {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push_back(conflict);
    }

    /// Whether the next request on the connection carried both framing fields.
    pub fn next(&self) -> bool {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .pop_front()
            .unwrap_or(false)
    }
}

/// Longest head or chunk line the guard frames; past it, hyper's limits decide.
const MAX_LINE: usize = 256 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Head,
    Body(u64),
    ChunkSize,
    ChunkData(u64),
    ChunkDataEnd,
    Trailers,
    Passthrough,
}

/// Wraps a connection's byte stream; see the module docs.
#[derive(Debug)]
pub struct FramingReader<S> {
    inner: S,
    state: State,
    /// The part of a request head read so far, when a head spans reads.
    head: Vec<u8>,
    /// The part of a chunk-size or trailer line (or of a chunk's CRLF) read so far.
    line: Vec<u8>,
    flags: FramingFlags,
}

impl<S> FramingReader<S> {
    /// Guards `inner`, which starts with a request head (or the HTTP/2 preface); the
    /// flags are the service's side.
    pub fn new(inner: S) -> (Self, FramingFlags) {
        let flags = FramingFlags::default();
        let guard = Self {
            inner,
            state: State::Head,
            head: Vec::new(),
            line: Vec::new(),
            flags: flags.clone(),
        };
        (guard, flags)
    }

    fn step_aside(&mut self) {
        self.state = State::Passthrough;
        self.head = Vec::new();
        self.line = Vec::new();
    }

    /// Follows the framing through `data`, the next bytes of the stream (already in
    /// hyper's buffer: nothing is copied but a head or line split across reads).
    fn observe(&mut self, mut data: &[u8]) {
        while !data.is_empty() {
            match self.state {
                State::Passthrough => return,
                State::Body(n) | State::ChunkData(n) => {
                    let k = usize::try_from(n).unwrap_or(usize::MAX).min(data.len());
                    data = &data[k..];
                    let left = n - k as u64;
                    self.state = match (self.state, left) {
                        (State::Body(_), 0) => State::Head,
                        (State::Body(_), left) => State::Body(left),
                        (_, 0) => State::ChunkDataEnd,
                        (_, left) => State::ChunkData(left),
                    };
                }
                State::ChunkDataEnd => {
                    let k = (2 - self.line.len()).min(data.len());
                    self.line.extend_from_slice(&data[..k]);
                    data = &data[k..];
                    if self.line.len() < 2 {
                        return;
                    }
                    if self.line != b"\r\n" {
                        self.step_aside();
                        return;
                    }
                    self.line.clear();
                    self.state = State::ChunkSize;
                }
                State::ChunkSize | State::Trailers => {
                    // A line ends at CRLF; a bare LF is part of it (and spoils a size).
                    let Some(lf) = memchr::memchr(b'\n', data) else {
                        self.line.extend_from_slice(data);
                        if self.line.len() > MAX_LINE {
                            self.step_aside();
                        }
                        return;
                    };
                    self.line.extend_from_slice(&data[..=lf]);
                    data = &data[lf + 1..];
                    if !self.line.ends_with(b"\r\n") {
                        if self.line.len() > MAX_LINE {
                            self.step_aside();
                            return;
                        }
                        continue;
                    }
                    let line = &self.line[..self.line.len() - 2];
                    let next = if self.state == State::Trailers {
                        if line.is_empty() {
                            State::Head
                        } else {
                            State::Trailers
                        }
                    } else {
                        match chunk_size(line) {
                            Some(0) => State::Trailers,
                            Some(size) => State::ChunkData(size),
                            None => {
                                self.step_aside();
                                return;
                            }
                        }
                    };
                    self.line.clear();
                    self.state = next;
                }
                State::Head => {
                    // Blank lines between requests are allowed (RFC 9112 §2.2).
                    if self.head.is_empty() && data.starts_with(b"\r\n") {
                        data = &data[2..];
                        continue;
                    }
                    let taken = if self.head.is_empty() {
                        // The usual case: the whole head in this read, read where it lies.
                        match end_of_head(data, 0) {
                            Some(end) => {
                                self.head_complete(&data[..end]);
                                end
                            }
                            None => {
                                self.head.extend_from_slice(data);
                                data.len()
                            }
                        }
                    } else {
                        let seen = self.head.len();
                        // The empty line may have begun in the last two bytes read.
                        let from = seen.saturating_sub(2);
                        let k = data.len().min(MAX_LINE + 1);
                        self.head.extend_from_slice(&data[..k]);
                        match end_of_head(&self.head, from) {
                            Some(end) => {
                                let head = std::mem::take(&mut self.head);
                                self.head_complete(&head[..end]);
                                self.head = head;
                                self.head.clear();
                                end - seen
                            }
                            None => k,
                        }
                    };
                    data = &data[taken..];
                    if self.head.len() > MAX_LINE {
                        self.step_aside();
                        return;
                    }
                }
            }
        }
    }

    /// Reads a whole request head: records its flag (before hyper can see the head's
    /// end) and moves to its body, or stops watching if it cannot be framed.
    fn head_complete(&mut self, head: &[u8]) {
        match inspect_head(head) {
            Some((next, conflict)) => {
                self.flags.push(conflict);
                self.state = next;
            }
            None => self.state = State::Passthrough,
        }
    }
}

/// The state after a request head, and whether it carries both framing fields; `None`
/// when the head cannot be framed with certainty.
fn inspect_head(head: &[u8]) -> Option<(State, bool)> {
    if plainly_bodiless(head) {
        return Some((State::Head, false));
    }
    parse_head(head)
}

/// Whether `head` can be read without a parse as an HTTP/1.x request with no body and no
/// conflict: its request line ends in ` HTTP/1.1` or ` HTTP/1.0` and is not `CONNECT`,
/// and no header line (after CRLF or a bare LF, as httparse accepts either) starts with
/// whitespace or, in any case, with `content-length`, `transfer-encoding` or `upgrade`.
/// No parser can find a framing or upgrade field in such a head. A head it refuses is
/// parsed ([`parse_head`]), which is what most requests with a body get. A malformed head
/// it lets through is refused by hyper, which then closes the connection.
fn plainly_bodiless(head: &[u8]) -> bool {
    let Some(first) = memchr::memchr(b'\n', head) else {
        return false;
    };
    let request_line = head[..first].strip_suffix(b"\r").unwrap_or(&head[..first]);
    if !(request_line.ends_with(b" HTTP/1.1") || request_line.ends_with(b" HTTP/1.0"))
        || request_line.starts_with(b"CONNECT ")
    {
        return false;
    }
    let starts_with = |line: &[u8], name: &[u8]| {
        line.get(..name.len())
            .is_some_and(|start| start.eq_ignore_ascii_case(name))
    };
    let mut rest = &head[first + 1..];
    while !rest.is_empty() {
        if matches!(rest[0], b' ' | b'\t')
            || starts_with(rest, b"content-length")
            || starts_with(rest, b"transfer-encoding")
            || starts_with(rest, b"upgrade")
        {
            return false;
        }
        match memchr::memchr(b'\n', rest) {
            Some(lf) => rest = &rest[lf + 1..],
            None => break,
        }
    }
    true
}

/// [`inspect_head`] by a full parse of the head.
fn parse_head(head: &[u8]) -> Option<(State, bool)> {
    // Uninitialised slots: nothing to clear per head. More than hyper accepts (100).
    let mut headers = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; 128];
    let mut request = httparse::Request::new(&mut []);
    match request.parse_with_uninit_headers(head, &mut headers) {
        Ok(httparse::Status::Complete(n)) if n == head.len() => {}
        _ => return None,
    }
    let mut lengths = Vec::new();
    let mut encodings = Vec::new();
    for header in request.headers.iter() {
        if header.name.eq_ignore_ascii_case("content-length") {
            lengths.push(header.value);
        } else if header.name.eq_ignore_ascii_case("transfer-encoding") {
            encodings.push(header.value);
        }
    }
    if !lengths.is_empty() && !encodings.is_empty() {
        return Some((State::Passthrough, true));
    }
    if let Some(last) = encodings.last() {
        let chunked = last
            .rsplit(|b| *b == b',')
            .next()
            .is_some_and(|t| t.trim_ascii().eq_ignore_ascii_case(b"chunked"));
        return chunked.then_some((State::ChunkSize, false));
    }
    // Compared as numbers, as hyper compares them: `3` and `003` are one length.
    let mut length = None;
    for value in lengths {
        let n: u64 = std::str::from_utf8(value).ok()?.trim().parse().ok()?;
        if length.is_some_and(|l| l != n) {
            return None;
        }
        length = Some(n);
    }
    match length {
        None | Some(0) => Some((State::Head, false)),
        Some(n) => Some((State::Body(n), false)),
    }
}

/// A chunk-size line's size (hex digits, optional `;extensions`).
fn chunk_size(line: &[u8]) -> Option<u64> {
    let digits = line.split(|b| *b == b';').next()?.trim_ascii();
    // Leading zeros take no room in the 16 digits a u64 holds; hyper reads any number.
    let significant = match digits.iter().position(|b| *b != b'0') {
        Some(i) => &digits[i..],
        None => &digits[digits.len().saturating_sub(1)..],
    };
    if digits.is_empty() || significant.len() > 16 {
        return None;
    }
    u64::from_str_radix(std::str::from_utf8(significant).ok()?, 16).ok()
}

/// Where a head ends (just past the empty line closing it), for a head whose end was not
/// before `from`: at the first line after the request line that is empty, ended by CRLF
/// or a bare LF, as httparse (so hyper) reads it. Empty lines before the request line
/// are skipped, as httparse skips them.
fn end_of_head(head: &[u8], from: usize) -> Option<usize> {
    let mut start = 0;
    loop {
        match &head[start..] {
            [b'\r', b'\n', ..] => start += 2,
            [b'\n', ..] => start += 1,
            _ => break,
        }
    }
    let from = from.max(start);
    memchr::memchr_iter(b'\n', head.get(from..)?).find_map(|lf| {
        let next = from + lf + 1;
        match head.get(next..)? {
            [b'\n', ..] => Some(next + 1),
            [b'\r', b'\n', ..] => Some(next + 2),
            _ => None,
        }
    })
}

impl<S: AsyncRead + Unpin> AsyncRead for FramingReader<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = &mut *self;
        if this.state == State::Passthrough {
            return Pin::new(&mut this.inner).poll_read(cx, buf);
        }
        // Straight into hyper's buffer; the new bytes are framed before hyper sees them.
        let before = buf.filled().len();
        ready!(Pin::new(&mut this.inner).poll_read(cx, buf))?;
        this.observe(&buf.filled()[before..]);
        Poll::Ready(Ok(()))
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for FramingReader<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

/// Refuses request framings that a proxy and a server may read differently (request
/// smuggling): `Content-Length` together with `Transfer-Encoding`, several differing
/// `Content-Length`s, or a `Transfer-Encoding` other than plain `chunked`.
pub fn check_framing(headers: &HeaderMap) -> Result<(), ProxyError> {
    let lengths = headers.get_all(header::CONTENT_LENGTH);
    let encodings = headers.get_all(header::TRANSFER_ENCODING);
    let mut lengths = lengths.iter();
    let mut encodings = encodings.iter().peekable();
    let first_length = lengths.next();
    if first_length.is_some() && encodings.peek().is_some() {
        return Err(ProxyError::MalformedRequest(
            "content-length with transfer-encoding",
        ));
    }
    if first_length.is_some_and(|first| lengths.any(|other| other != first)) {
        return Err(ProxyError::MalformedRequest("conflicting content-length"));
    }
    if encodings.next().is_some_and(|first| {
        encodings.next().is_some() || !first.as_bytes().eq_ignore_ascii_case(b"chunked")
    }) {
        return Err(ProxyError::MalformedRequest(
            "unsupported transfer-encoding",
        ));
    }
    Ok(())
}

/// The size of a request head's header fields, as counted against `max_header_bytes`.
pub fn head_size(headers: &HeaderMap) -> usize {
    headers
        .iter()
        .map(|(name, value)| name.as_str().len() + value.len() + 4)
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    /// A stream that hands out `step` bytes per read.
    struct Trickle<'a> {
        wire: &'a [u8],
        step: usize,
    }

    impl AsyncRead for Trickle<'_> {
        fn poll_read(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
            buf: &mut ReadBuf<'_>,
        ) -> Poll<std::io::Result<()>> {
            let n = self.step.min(self.wire.len()).min(buf.remaining());
            buf.put_slice(&self.wire[..n]);
            self.wire = &self.wire[n..];
            Poll::Ready(Ok(()))
        }
    }

    /// Reads `wire` through the guard in pieces of `step` bytes; returns what hyper would
    /// read and the per-request records.
    fn frame(wire: &[u8], step: usize) -> (Vec<u8>, Vec<bool>) {
        let (guard, flags) = FramingReader::new(Trickle { wire, step });
        let mut seen = Vec::new();
        let mut reader = guard;
        let waker = std::task::Waker::noop();
        let mut cx = Context::from_waker(waker);
        loop {
            let mut chunk = [0u8; 4096];
            let mut buf = ReadBuf::new(&mut chunk);
            match Pin::new(&mut reader).poll_read(&mut cx, &mut buf) {
                Poll::Ready(Ok(())) if buf.filled().is_empty() => break,
                Poll::Ready(Ok(())) => seen.extend_from_slice(buf.filled()),
                other => panic!("unexpected {other:?}"),
            }
        }
        let records = flags.0.lock().unwrap().iter().copied().collect();
        (seen, records)
    }

    #[test]
    fn the_unparsed_reading_agrees_with_the_parse() {
        // Heads taken without a parse: the parse finds no body and no conflict in them
        // (or refuses them outright, and hyper with it).
        let plain: [&[u8]; 4] = [
            b"GET /a HTTP/1.1\r\nhost: x\r\n\r\n",
            b"GET /a HTTP/1.0\r\n\r\n",
            b"GET /a HTTP/1.1\nhost: x\ncontent-type: a/b\n\n",
            b"DELETE /a HTTP/1.1\r\nconnection: keep-alive\r\nx-upgrade: 1\r\n\r\n",
        ];
        for head in plain {
            assert!(plainly_bodiless(head), "{}", String::from_utf8_lossy(head));
            assert_eq!(parse_head(head), Some((State::Head, false)));
        }
        // Heads that must be parsed.
        let parsed: [&[u8]; 9] = [
            b"POST /a HTTP/1.1\r\nContent-Length: 5\r\n\r\n",
            b"POST /a HTTP/1.1\r\nhost: x\nTRANSFER-ENCODING: chunked\r\n\r\n",
            b"POST /a HTTP/1.1\r\ntransfer-encoding : chunked\r\n\r\n",
            b"GET /a HTTP/1.1\r\nUpgrade: websocket\r\n\r\n",
            b"GET /a HTTP/1.1\r\nx: 1\r\n transfer-encoding: chunked\r\n\r\n",
            b"CONNECT a:443 HTTP/1.1\r\n\r\n",
            b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
            b"GET /a\r\n\r\n",
            b"GET /a HTTP/1.1",
        ];
        for head in parsed {
            assert!(!plainly_bodiless(head), "{}", String::from_utf8_lossy(head));
        }
    }

    #[test]
    fn heads_built_from_any_lines_read_alike_parsed_or_not() {
        use proptest::prelude::*;
        let line = prop::sample::select(vec![
            "host: x",
            "Content-Length: 5",
            "content-length: 0",
            "Transfer-Encoding: chunked",
            "transfer-Encoding: gzip, chunked",
            "Upgrade: h2c",
            "upgrade-insecure-requests: 1",
            " transfer-encoding: chunked",
            "\tcontent-length: 3",
            "x-content-length: 4",
            "Content-Type: application/json",
            "accept: */*",
        ]);
        let ending = prop::sample::select(vec!["\r\n", "\n"]);
        let request_line = prop::sample::select(vec![
            "GET /a HTTP/1.1",
            "POST /a HTTP/1.0",
            "CONNECT a:1 HTTP/1.1",
            "GET /a HTTP/2.0",
        ]);
        let head = (request_line, prop::collection::vec((line, ending), 0..6)).prop_map(
            |(first, lines)| {
                let mut head = format!("{first}\r\n");
                for (line, ending) in lines {
                    head.push_str(line);
                    head.push_str(ending);
                }
                head.push_str("\r\n");
                head
            },
        );
        // Only bodiless heads reach the assertions, about one in eight of the generated
        // ones: enough cases that at least 5 % doing so is many deviations from chance.
        const CASES: u32 = 2048;
        let bodiless = std::cell::Cell::new(0u32);
        let mut runner = proptest::test_runner::TestRunner::new(ProptestConfig {
            cases: CASES,
            source_file: Some(file!()),
            ..ProptestConfig::default()
        });
        let result = runner.run(&head, |head| {
            if plainly_bodiless(head.as_bytes()) {
                bodiless.set(bodiless.get() + 1);
                let parsed = parse_head(head.as_bytes());
                prop_assert!(
                    matches!(parsed, Some((State::Head, false)) | None),
                    "{head:?} parsed as {parsed:?}"
                );
                let trimmed = head.to_ascii_lowercase();
                prop_assert!(!trimmed.contains("\ncontent-length"));
                prop_assert!(!trimmed.contains("\ntransfer-encoding"));
            }
            Ok(())
        });
        if let Err(e) = result {
            panic!("{e}\n{runner}");
        }
        let bodiless = bodiless.get();
        assert!(
            bodiless * 20 >= CASES,
            "only {bodiless} of {CASES} heads were plainly bodiless and checked"
        );
    }

    #[test]
    fn ordinary_traffic_passes_byte_for_byte_in_any_split() {
        let wire: &[u8] = b"GET /a HTTP/1.1\r\nhost: x\r\n\r\n\
            POST /b HTTP/1.1\r\ncontent-length: 5\r\n\r\nhello\
            \r\nPOST /c HTTP/1.1\r\ntransfer-encoding: chunked\r\n\r\n5;ext=1\r\nhe\r\nl\r\n0\r\nx-t: 1\r\n\r\n\
            GET /d HTTP/1.1\r\n\r\n";
        for step in [1, 2, 3, 7, 64, wire.len()] {
            let (seen, records) = frame(wire, step);
            assert_eq!(seen, wire, "step {step}");
            assert_eq!(records, [false, false, false, false], "step {step}");
        }
    }

    #[test]
    fn a_head_with_both_fields_is_recorded_wherever_it_comes() {
        for second in [
            b"POST /x HTTP/1.1\r\ncontent-length: 4\r\ntransfer-encoding: chunked\r\n\r\n0\r\n\r\n"
                .as_slice(),
            b"POST /x HTTP/1.1\r\nTransfer-Encoding: chunked\r\nContent-Length: 4\r\n\r\n0\r\n\r\n"
                .as_slice(),
        ] {
            let mut wire = b"POST /a HTTP/1.1\r\ncontent-length: 3\r\n\r\nabc".to_vec();
            wire.extend_from_slice(second);
            for step in [1, 5, wire.len()] {
                let (seen, records) = frame(&wire, step);
                assert_eq!(seen, wire, "the bytes are never changed");
                assert_eq!(records, [false, true], "step {step}");
            }
        }
    }

    #[test]
    fn body_bytes_that_look_like_a_head_are_not_read_as_one() {
        let body =
            b"POST /evil HTTP/1.1\r\ncontent-length: 1\r\ntransfer-encoding: chunked\r\n\r\n";
        let mut wire =
            format!("POST /a HTTP/1.1\r\ncontent-length: {}\r\n\r\n", body.len()).into_bytes();
        wire.extend_from_slice(body);
        let (seen, records) = frame(&wire, 3);
        assert_eq!(seen, wire);
        assert_eq!(records, [false]);
    }

    /// A request with both framing fields, for the tests that put one behind another.
    const CONFLICT: &[u8] =
        b"POST /x HTTP/1.1\r\ncontent-length: 4\r\ntransfer-encoding: chunked\r\n\r\n0\r\n\r\n";

    /// Frames `first` then [`CONFLICT`] in several splits: hyper dispatches both, so the
    /// records must be `[false, true]`.
    fn assert_conflict_found_after(first: &[u8]) {
        let mut wire = first.to_vec();
        wire.extend_from_slice(CONFLICT);
        for step in [1, 2, 5, wire.len()] {
            let (seen, records) = frame(&wire, step);
            assert_eq!(seen, wire, "the bytes are never changed");
            assert_eq!(
                records,
                [false, true],
                "step {step}: {:?}",
                String::from_utf8_lossy(&wire)
            );
        }
    }

    #[test]
    fn found_heads_ended_by_a_bare_lf_end_where_hyper_ends_them() {
        // httparse, so hyper, ends a head at the first empty line, LF or CRLF.
        for first in [
            b"GET /a HTTP/1.1\nhost: x\n\n".as_slice(),
            b"GET /a HTTP/1.1\r\nhost: x\n\r\n",
            b"GET /a HTTP/1.1\r\nhost: x\r\n\n",
            b"GET /a HTTP/1.1\n\n",
            b"\nGET /a HTTP/1.1\r\n\r\n",
            b"\r\n\nGET /a HTTP/1.1\n\r\n",
        ] {
            assert_conflict_found_after(first);
        }
        let bare = b"POST /x HTTP/1.1\ncontent-length: 4\ntransfer-encoding: chunked\n\n0\r\n\r\n";
        for step in [1, 3, bare.len()] {
            assert_eq!(
                frame(bare, step),
                (bare.to_vec(), vec![true]),
                "step {step}"
            );
        }
    }

    #[test]
    fn found_equal_lengths_spelled_apart_frame_the_body() {
        // hyper compares the numbers: `3` and `003` are one length.
        assert_conflict_found_after(
            b"POST /a HTTP/1.1\r\ncontent-length: 3\r\ncontent-length: 003\r\n\r\nabc",
        );
    }

    #[test]
    fn found_chunk_sizes_with_many_leading_zeros_are_framed() {
        // hyper reads any number of hex digits while the value fits in 64 bits.
        assert_conflict_found_after(
            b"POST /a HTTP/1.1\r\ntransfer-encoding: chunked\r\n\r\n\
              00000000000000000003\r\nabc\r\n0\r\n\r\n",
        );
    }

    #[test]
    fn found_upgrade_and_connect_requests_do_not_end_the_watch() {
        // The proxy forwards neither, so it never switches protocols: hyper answers them
        // and reads the next request on the connection.
        assert_conflict_found_after(b"GET /a HTTP/1.1\r\nupgrade: websocket\r\n\r\n");
        assert_conflict_found_after(b"CONNECT a:443 HTTP/1.1\r\n\r\n");
        let both = b"POST /x HTTP/1.1\r\nupgrade: x\r\ncontent-length: 4\r\n\
            transfer-encoding: chunked\r\n\r\n0\r\n\r\n";
        assert_eq!(frame(both, 1), (both.to_vec(), vec![true]));
    }

    #[test]
    fn http2_and_unframeable_input_pass_through_unwatched() {
        let preface = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x12";
        assert_eq!(frame(preface, 1), (preface.to_vec(), vec![]));
        let junk = b"\x16\x03\x01 not http at all\r\n\r\ncontent-length: 1\r\ntransfer-encoding: chunked\r\n\r\n";
        assert_eq!(frame(junk, 4), (junk.to_vec(), vec![]));
    }

    #[test]
    fn smuggling_shapes_are_refused() {
        let mut h = HeaderMap::new();
        h.insert(header::CONTENT_LENGTH, HeaderValue::from_static("5"));
        assert!(check_framing(&h).is_ok());
        h.insert(
            header::TRANSFER_ENCODING,
            HeaderValue::from_static("chunked"),
        );
        assert!(check_framing(&h).is_err());
        let mut h = HeaderMap::new();
        h.append(header::CONTENT_LENGTH, HeaderValue::from_static("5"));
        h.append(header::CONTENT_LENGTH, HeaderValue::from_static("6"));
        assert!(check_framing(&h).is_err());
        let mut h = HeaderMap::new();
        h.insert(
            header::TRANSFER_ENCODING,
            HeaderValue::from_static("gzip, chunked"),
        );
        assert!(check_framing(&h).is_err());
        // Equal repeated lengths pass; a plain `chunked` passes, twice it does not.
        let mut h = HeaderMap::new();
        h.append(header::CONTENT_LENGTH, HeaderValue::from_static("5"));
        h.append(header::CONTENT_LENGTH, HeaderValue::from_static("5"));
        assert!(check_framing(&h).is_ok());
        let mut h = HeaderMap::new();
        h.append(
            header::TRANSFER_ENCODING,
            HeaderValue::from_static("Chunked"),
        );
        assert!(check_framing(&h).is_ok());
        h.append(
            header::TRANSFER_ENCODING,
            HeaderValue::from_static("chunked"),
        );
        assert!(check_framing(&h).is_err());
        assert!(check_framing(&HeaderMap::new()).is_ok());
    }
}
