//! Arbitrary bytes, in arbitrary read sizes, through the framing guard: it never panics,
//! hands on exactly the bytes it read (no more asked of the stream than the reader's
//! buffer holds, none held back, none changed), and when hyper would dispatch each
//! request, the service's `FramingFlags::next` says whether that request carried both
//! `Content-Length` and `Transfer-Encoding`, as an independent reading of the bytes
//! (`hyper_reading`) finds them.

#![no_main]

use std::cell::Cell;
use std::pin::Pin;
use std::task::{Context, Poll};

use libfuzzer_sys::fuzz_target;
use refold_proxy::steps::framing::FramingReader;
use refold_oracles::{hyper_reading, WireReading};
use tokio::io::{AsyncRead, ReadBuf};

/// The client side: the wire handed out in scripted read sizes (0 means "not ready yet").
struct Scripted<'a> {
    wire: &'a [u8],
    sizes: &'a [u8],
    turn: usize,
    seen: &'a Cell<Seen>,
}

/// What the client side saw: how often it was read, and what the last read offered
/// and gave.
#[derive(Clone, Copy, Default)]
struct Seen {
    polls: usize,
    offered: usize,
    gave: usize,
}

impl AsyncRead for Scripted<'_> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let size = self.sizes.get(self.turn % self.sizes.len().max(1)).copied();
        self.turn += 1;
        let polls = self.seen.get().polls + 1;
        self.seen.set(Seen {
            polls,
            offered: buf.remaining(),
            gave: 0,
        });
        let size = match size {
            Some(0) => return Poll::Pending,
            Some(n) => usize::from(n),
            None => usize::MAX,
        };
        let n = size.min(self.wire.len()).min(buf.remaining());
        buf.put_slice(&self.wire[..n]);
        self.wire = &self.wire[n..];
        self.seen.set(Seen {
            gave: n,
            ..self.seen.get()
        });
        Poll::Ready(Ok(()))
    }
}

/// Reads `wire` through the guard as hyper would, with `sizes` as the client's read sizes,
/// `room` bytes free in the reader's buffer and `held` bytes already in it.
fn check(wire: &[u8], reading: &WireReading, sizes: &[u8], room: usize, held: usize) {
    // A script of nothing but "not ready" would never end.
    let sizes = if sizes.iter().all(|s| *s == 0) {
        &[][..]
    } else {
        sizes
    };
    let seen = Cell::new(Seen::default());
    let stream = Scripted {
        wire,
        sizes,
        turn: 0,
        seen: &seen,
    };
    let (mut guard, flags) = FramingReader::new(stream);
    let mut cx = Context::from_waker(std::task::Waker::noop());
    let mut delivered = 0;
    let mut dispatched = 0;
    let mut storage = vec![0xa5u8; held + room];
    loop {
        let mut buf = ReadBuf::new(&mut storage);
        buf.advance(held);
        let polls = seen.get().polls;
        let result = Pin::new(&mut guard).poll_read(&mut cx, &mut buf);
        let inner = seen.get();
        assert_eq!(
            inner.polls,
            polls + 1,
            "one read of the stream per read of the guard"
        );
        assert!(
            inner.offered <= room,
            "asked the stream for {} bytes with room for {room}",
            inner.offered
        );
        match result {
            Poll::Pending => {
                assert_eq!(buf.filled().len(), held, "bytes handed on while pending");
                continue;
            }
            Poll::Ready(Ok(())) => {}
            Poll::Ready(Err(e)) => panic!("the guard made up an error: {e}"),
        }
        let new = &buf.filled()[held..];
        assert_eq!(
            new.len(),
            inner.gave,
            "the guard held bytes back or added some"
        );
        assert_eq!(
            new,
            &wire[delivered..delivered + new.len()],
            "the bytes changed at offset {delivered}"
        );
        assert!(
            buf.filled()[..held].iter().all(|b| *b == 0xa5),
            "bytes already in the buffer changed"
        );
        delivered += new.len();
        // Every request whose head is now complete is dispatched, in order; the service
        // takes its record then.
        while let Some(request) = reading.requests.get(dispatched) {
            if request.head_end > delivered {
                break;
            }
            assert_eq!(
                flags.next(),
                request.conflict,
                "request {dispatched} (head ending at {}): wrong record after {delivered} \
                 bytes; reading {reading:?}",
                request.head_end
            );
            dispatched += 1;
        }
        if new.is_empty() {
            break;
        }
    }
    assert_eq!(delivered, wire.len());
    assert_eq!(dispatched, reading.requests.len());
    if !reading.stopped {
        // Whatever request came next would take the next record: it must not say
        // "conflict" for a head that has not been read.
        assert!(
            !flags.next(),
            "a record left over for no request: {reading:?}"
        );
    }
}

/// Pieces of request streams, spliced in for bytes from 0xc0 on when the first byte's
/// top bit asks for it: whole lines in both endings, so requests form in a few mutations.
const PIECES: &[&[u8]] = &[
    b"GET /a HTTP/1.1\r\n",
    b"GET /a HTTP/1.1\n",
    b"POST /a HTTP/1.1\r\n",
    b"POST /a HTTP/1.0\r\n",
    b"CONNECT a:1 HTTP/1.1\r\n",
    b"host: x\r\n",
    b"host: x\n",
    b"content-length: 4\r\n",
    b"Content-Length: 004\r\n",
    b"content-length: 0\n",
    b"content-length: +4\r\n",
    b"transfer-encoding: chunked\r\n",
    b"Transfer-Encoding: chunked\n",
    b"transfer-encoding: gzip, chunked\r\n",
    b"transfer-encoding: chunked, gzip\r\n",
    b"upgrade: websocket\r\n",
    b"connection: close\r\n",
    b"connection: keep-alive\r\n",
    b"expect: 100-continue\r\n",
    b" folded\r\n",
    b"\r\n",
    b"\n",
    b"0\r\n\r\n",
    b"0\r\nx-t: 1\r\n\r\n",
    b"4\r\nabcd\r\n",
    b"00000000000000000004\r\n",
    b"4;x=1\r\n",
    b"4 \r\n",
    b"abcd",
    b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
];

fuzz_target!(|data: &[u8]| {
    // [mode | n][n read sizes][room][held][wire...]
    let first = data.first().copied().unwrap_or(0);
    let n = usize::from(first % 16);
    let rest = data.get(1..).unwrap_or(&[]);
    let (sizes, rest) = rest.split_at(n.min(rest.len()));
    let room = 1 + usize::from(rest.first().copied().unwrap_or(255)) * 19;
    let held = usize::from(rest.get(1).copied().unwrap_or(0) % 8);
    let raw = rest.get(2..).unwrap_or(&[]);
    let wire = refold_oracles::expand_pieces(raw, PIECES, first & 0x80 != 0);
    let wire: &[u8] = &wire;
    let reading = hyper_reading(wire);
    check(wire, &reading, sizes, room, held);
    // Every split point: one byte per read; and the whole wire in one read.
    check(wire, &reading, &[1], 1 + wire.len(), 0);
    check(wire, &reading, &[], 1 + wire.len(), held);
});
