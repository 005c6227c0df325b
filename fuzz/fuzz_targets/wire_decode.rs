//! The response body decoder on arbitrary bytes after a head, for each framing, fed in
//! arbitrary pieces: every split gives the same data, ending at the same byte (or failing
//! alike) as the whole; a chunked body ends where the chunked relay says it ends, and its
//! data is the relay's data bytes; a sized body's data is its prefix.

#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use refold_proxy::wire::chunked::{ChunkedRelay, Limits, Relay};
use refold_proxy::wire::decode::{BodyDecoder, DecodeError, Decoded};
use refold_proxy::wire::response::Framing;

/// The data, and how it ended: the bytes left after the body, or the failure.
type Outcome = (Vec<u8>, Result<usize, DecodeError>);

fn decode(framing: Framing, body: &[u8], cuts: &[u8]) -> Outcome {
    let mut decoder = BodyDecoder::new(framing, Limits::default());
    let mut buf = BytesMut::new();
    let mut data = Vec::new();
    let mut at = 0;
    let mut sizes = cuts.iter().map(|c| usize::from(*c).max(1)).cycle();
    loop {
        loop {
            match decoder.decode(&mut buf) {
                Decoded::Data(bytes) => {
                    assert!(!bytes.is_empty());
                    data.extend_from_slice(&bytes);
                }
                Decoded::More => break,
                Decoded::End => return (data, Ok(buf.len() + body.len() - at)),
                Decoded::Failed(why) => return (data, Err(why)),
            }
        }
        if at == body.len() {
            return match decoder.closed() {
                Decoded::End => (data, Ok(0)),
                Decoded::Failed(why) => (data, Err(why)),
                other => panic!("closed gave {other:?}"),
            };
        }
        let size = if cuts.is_empty() {
            body.len()
        } else {
            sizes.next().unwrap_or(1)
        };
        let end = (at + size).min(body.len());
        buf.extend_from_slice(&body[at..end]);
        at = end;
    }
}

/// Pieces of chunked bodies, spliced in for bytes from 0xc0 on.
const PIECES: &[&[u8]] = &[
    b"\r\n",
    b"5\r\nhello\r\n",
    b"0\r\n\r\n",
    b"0\r\nx-t: 1\r\n\r\n",
    b";a=b",
    b"000000000000000",
    b"fffffffffffffff",
    b" \t",
    b"x-t: 1\r\n",
    b"\n",
    b"\r",
    b"a",
];

fuzz_target!(|data: &[u8]| {
    let (first, cuts, body) = refold_oracles::cuts_and_body(data, PIECES);
    let body: &[u8] = &body;
    let length = u64::from(first & 0x3f);
    for framing in [
        Framing::Chunked,
        Framing::Length(length.max(1)),
        Framing::UntilClose,
        Framing::Empty,
    ] {
        let whole = decode(framing, body, &[]);
        assert_eq!(decode(framing, body, cuts), whole, "{framing:?} split {cuts:?}");
        assert_eq!(decode(framing, body, &[1]), whole, "{framing:?} byte by byte");
        match framing {
            Framing::Chunked => {
                let mut relay = ChunkedRelay::new(Limits::default());
                match (relay.feed(body), &whole) {
                    (Relay::End(end), (data, Ok(left))) => {
                        assert_eq!(end + left, body.len());
                        assert_eq!(relay.data_bytes(), data.len() as u64);
                    }
                    (Relay::Refused(_), (_, Err(DecodeError::Chunk(_)))) => {}
                    (Relay::Forward(_), (_, Err(DecodeError::Incomplete))) => {}
                    (relayed, decoded) => panic!("relay {relayed:?}, decoder {decoded:?}"),
                }
            }
            Framing::Length(n) => {
                let n = usize::try_from(n).unwrap_or(usize::MAX);
                if body.len() >= n {
                    assert_eq!(whole, (body[..n].to_vec(), Ok(body.len() - n)));
                } else {
                    assert_eq!(whole, (body.to_vec(), Err(DecodeError::Incomplete)));
                }
            }
            Framing::UntilClose => assert_eq!(whole, (body.to_vec(), Ok(0))),
            Framing::Empty => assert_eq!(whole, (Vec::new(), Ok(body.len()))),
        }
    }
});
