//! The fast path's chunked relay against hyper's chunked decoder (as `hyper_reading`
//! walks it), on arbitrary bytes after a chunked request head, fed in arbitrary pieces.
//!
//! Where the relay says the body ends, hyper ends it there too (the next request starts
//! at the same byte); where the relay wants more, hyper does; where the relay refuses a
//! byte hyper would take (still in the body after it), the refusal is one of the
//! documented stricter rules (an extension byte, a trailer line, a line or trailer
//! limit), never a size or a CRLF.
//! Any split gives the same answer as the whole.

#![no_main]

use libfuzzer_sys::fuzz_target;
use refold_oracles::hyper_reading;
use refold_proxy::wire::chunked::{ChunkRefusal, ChunkedRelay, Limits, Relay};

const HEAD: &[u8] = b"POST /a HTTP/1.1\r\ntransfer-encoding: chunked\r\n\r\n";
const NEXT: &[u8] = b"GET /next HTTP/1.1\r\n\r\n";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    End(usize),
    Refused(ChunkRefusal, u64),
    More,
}

fn relay(body: &[u8], cuts: &[u8]) -> Outcome {
    relay_with(&mut ChunkedRelay::new(Limits::default()), body, cuts)
}

fn relay_with(relay: &mut ChunkedRelay, body: &[u8], cuts: &[u8]) -> Outcome {
    let mut at = 0;
    let mut sizes = cuts.iter().map(|c| usize::from(*c)).cycle();
    while at < body.len() {
        let size = if cuts.is_empty() {
            body.len()
        } else {
            sizes.next().unwrap_or(1).max(1)
        };
        let piece = &body[at..(at + size).min(body.len())];
        match relay.feed(piece) {
            Relay::Forward(n) => {
                assert_eq!(n, piece.len());
                at += n;
            }
            Relay::End(n) => return Outcome::End(at + n),
            Relay::Refused(why) => return Outcome::Refused(why, relay.position()),
        }
    }
    Outcome::More
}

/// Pieces of chunked bodies, spliced in for bytes from 0xc0 on.
const PIECES: &[&[u8]] = &[
    b"\r\n",
    b"5\r\nhello\r\n",
    b"0\r\n\r\n",
    b"0\r\nx-t: 1\r\n\r\n",
    b";a=b",
    b"0000000000000000",
    b"ffffffffffffffff",
    b" \t",
    b"x-t: 1\r\n",
    b"\n",
    b"\r",
    b"a",
];

fuzz_target!(|data: &[u8]| {
    let (_, cuts, body) = refold_oracles::cuts_and_body(data, PIECES);
    let body: &[u8] = &body;
    let mut state = ChunkedRelay::new(Limits::default());
    let whole = relay_with(&mut state, body, &[]);
    assert_eq!(relay(body, cuts), whole, "split {cuts:?}");
    assert_eq!(relay(body, &[1]), whole, "one byte at a time");
    match whole {
        Outcome::End(end) => {
            // hyper ends the body at the same byte: the request after it is read there.
            let mut wire = HEAD.to_vec();
            wire.extend_from_slice(&body[..end]);
            wire.extend_from_slice(NEXT);
            let reading = hyper_reading(&wire);
            let ends: Vec<usize> = reading.requests.iter().map(|r| r.head_end).collect();
            assert_eq!(
                ends,
                [HEAD.len(), wire.len()],
                "hyper frames the body apart: {reading:?}"
            );
        }
        Outcome::More => {
            let mut wire = HEAD.to_vec();
            wire.extend_from_slice(body);
            let reading = hyper_reading(&wire);
            assert_eq!(reading.requests.len(), 1, "{reading:?}");
            // The oracle walks offsets in a u64: a chunk ending past u64::MAX (a size
            // near it) is an error to it, while hyper, like the relay, counts down.
            let oracle_overflows = state.data_left() > u64::MAX - wire.len() as u64;
            assert!(
                !reading.stopped || oracle_overflows,
                "hyper refuses what the relay waits on"
            );
        }
        Outcome::Refused(why, at) => {
            // Does hyper take the byte the relay refused? Then it is still in the body
            // after it (one request, not stopped).
            let at = usize::try_from(at).unwrap_or(usize::MAX);
            let mut wire = HEAD.to_vec();
            wire.extend_from_slice(&body[..=at]);
            let reading = hyper_reading(&wire);
            if reading.requests.len() == 1 && !reading.stopped {
                // Stricter than hyper only where documented.
                match why {
                    ChunkRefusal::BadExtension => {
                        let b = body[at];
                        assert!((b < 0x20 && b != b'\t') || b >= 0x7f, "extension byte {b:#x}");
                    }
                    ChunkRefusal::BadTrailer
                    | ChunkRefusal::LineTooLong
                    | ChunkRefusal::TrailersTooLarge => {}
                    other => panic!("refused ({other:?} at {at}) a byte hyper takes: {reading:?}"),
                }
            }
        }
    }
});
