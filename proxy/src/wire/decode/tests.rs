//! The body decoder: each framing by example, and the property that a body split anywhere
//! gives the same data, ending at the same byte, as the body whole.

use super::*;
use proptest::prelude::*;

/// What decoding `wire` fed in pieces cut at `cuts` gives: the data, and the bytes left
/// after the end (or the failure, or `None` when it wants more at the close).
fn decode_cut(
    framing: Framing,
    wire: &[u8],
    cuts: &[usize],
) -> (Vec<u8>, Result<usize, DecodeError>) {
    let mut decoder = BodyDecoder::new(framing, Limits::default());
    let mut buf = BytesMut::new();
    let mut data = Vec::new();
    let mut from = 0;
    for &to in cuts.iter().chain(std::iter::once(&wire.len())) {
        buf.extend_from_slice(&wire[from..to.max(from)]);
        from = to.max(from);
        loop {
            match decoder.decode(&mut buf) {
                Decoded::Data(bytes) => {
                    assert!(!bytes.is_empty(), "no empty data");
                    data.extend_from_slice(&bytes);
                }
                Decoded::More => break,
                Decoded::End => {
                    let left = buf.len() + (wire.len() - from);
                    return (data, Ok(left));
                }
                Decoded::Failed(why) => return (data, Err(why)),
            }
        }
    }
    match decoder.closed() {
        Decoded::End => (data, Ok(0)),
        Decoded::Failed(why) => (data, Err(why)),
        other => panic!("closed gave {other:?}"),
    }
}

fn decode(framing: Framing, wire: &[u8]) -> (Vec<u8>, Result<usize, DecodeError>) {
    decode_cut(framing, wire, &[])
}

#[test]
fn a_length_body_ends_at_its_length() {
    assert_eq!(
        decode(Framing::Length(5), b"helloHTTP"),
        (b"hello".to_vec(), Ok(4))
    );
    assert_eq!(
        decode(Framing::Length(5), b"hel"),
        (b"hel".to_vec(), Err(DecodeError::Incomplete))
    );
    assert_eq!(decode(Framing::Empty, b"x"), (Vec::new(), Ok(1)));
    assert!(BodyDecoder::new(Framing::Length(0), Limits::default()).is_done());
}

#[test]
fn a_close_delimited_body_ends_at_the_close() {
    assert_eq!(
        decode(Framing::UntilClose, b"all of it"),
        (b"all of it".to_vec(), Ok(0))
    );
    assert_eq!(decode(Framing::UntilClose, b""), (Vec::new(), Ok(0)));
}

#[test]
fn a_chunked_body_gives_its_data_without_framing_or_trailers() {
    let wire = b"5;ext=1\r\nhello\r\n1\r\n \r\n6\r\nworld!\r\n0\r\nx-t: 1\r\n\r\nHTTP";
    assert_eq!(
        decode(Framing::Chunked, wire),
        (b"hello world!".to_vec(), Ok(4))
    );
}

#[test]
fn a_refused_or_cut_chunk_fails() {
    assert_eq!(
        decode(Framing::Chunked, b"5\r\nhelloXX0\r\n\r\n").1,
        Err(DecodeError::Chunk(ChunkRefusal::MissingCrlf))
    );
    assert_eq!(
        decode(Framing::Chunked, b"zz\r\n").1,
        Err(DecodeError::Chunk(ChunkRefusal::InvalidSize))
    );
    assert_eq!(
        decode(Framing::Chunked, b"5\r\nhel").1,
        Err(DecodeError::Incomplete)
    );
    assert_eq!(
        decode(Framing::Chunked, b"0\r\n").1,
        Err(DecodeError::Incomplete)
    );
}

/// A chunked body of `chunks` with trailers, and its data.
fn chunked(chunks: &[Vec<u8>], trailers: bool) -> (Vec<u8>, Vec<u8>) {
    let mut wire = Vec::new();
    let mut data = Vec::new();
    for chunk in chunks {
        wire.extend_from_slice(format!("{:x};e=1\r\n", chunk.len()).as_bytes());
        wire.extend_from_slice(chunk);
        wire.extend_from_slice(b"\r\n");
        data.extend_from_slice(chunk);
    }
    wire.extend_from_slice(b"0\r\n");
    if trailers {
        wire.extend_from_slice(b"x-sum: abc\r\n");
    }
    wire.extend_from_slice(b"\r\n");
    (wire, data)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]

    #[test]
    fn a_chunked_body_split_anywhere_decodes_alike(
        chunks in prop::collection::vec(prop::collection::vec(any::<u8>(), 1..30), 0..5),
        trailers in any::<bool>(),
        next in prop::sample::select(vec![&b""[..], b"HTTP/1.1 200 OK\r\n", b"0\r\n\r\n"]),
    ) {
        let (body, data) = chunked(&chunks, trailers);
        let mut wire = body.clone();
        wire.extend_from_slice(next);
        let whole = (data, Ok(next.len()));
        prop_assert_eq!(&decode(Framing::Chunked, &wire), &whole);
        for cut in 0..=wire.len() {
            prop_assert_eq!(&decode_cut(Framing::Chunked, &wire, &[cut]), &whole, "cut {}", cut);
        }
        let every: Vec<usize> = (1..wire.len()).collect();
        prop_assert_eq!(&decode_cut(Framing::Chunked, &wire, &every), &whole);
        // Cut short, it is incomplete at the close.
        prop_assert_eq!(decode(Framing::Chunked, &body[..body.len() - 1]).1, Err(DecodeError::Incomplete));
    }

    #[test]
    fn a_corrupted_chunked_body_fails_alike_at_any_split(
        chunks in prop::collection::vec(prop::collection::vec(any::<u8>(), 1..30), 1..5),
        at in any::<usize>(),
        byte in any::<u8>(),
    ) {
        let (body, _) = chunked(&chunks, true);
        let mut wire = body;
        let at = at % wire.len();
        wire[at] = byte;
        let whole = decode(Framing::Chunked, &wire);
        for cut in 0..=wire.len() {
            prop_assert_eq!(&decode_cut(Framing::Chunked, &wire, &[cut]), &whole, "cut {}", cut);
        }
    }

    #[test]
    fn a_length_body_split_anywhere_decodes_alike(
        body in prop::collection::vec(any::<u8>(), 1..60),
        extra in prop::collection::vec(any::<u8>(), 0..8),
    ) {
        let mut wire = body.clone();
        wire.extend_from_slice(&extra);
        let framing = Framing::Length(body.len() as u64);
        let whole = (body.clone(), Ok(extra.len()));
        for cut in 0..=wire.len() {
            prop_assert_eq!(&decode_cut(framing, &wire, &[cut]), &whole, "cut {}", cut);
        }
        prop_assert_eq!(decode(framing, &body[..body.len() - 1]).1, Err(DecodeError::Incomplete));
    }
}
