//! The chunked relay: each refusal by name, and the properties that a body split
//! anywhere is accepted (or refused) exactly as whole, ending exactly at its end.

use super::*;
use proptest::prelude::*;

/// The relay's verdict on a whole stream fed in pieces: where the body ended, or the
/// refusal and its offset, or how much it took while still wanting more.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    End(usize),
    Refused(ChunkRefusal, u64),
    More(usize),
}

/// Feeds `wire` cut at `cuts` (ascending offsets) and checks each answer's shape.
fn relay_cut(wire: &[u8], cuts: &[usize], limits: Limits) -> Outcome {
    let mut relay = ChunkedRelay::new(limits);
    let mut taken = 0;
    let mut from = 0;
    for &to in cuts.iter().chain(std::iter::once(&wire.len())) {
        let piece = &wire[from..to.max(from)];
        from = to.max(from);
        match relay.feed(piece) {
            Relay::Forward(n) => {
                assert_eq!(n, piece.len(), "a forward takes the whole piece");
                taken += n;
            }
            Relay::End(n) => {
                assert!(n <= piece.len());
                assert!(relay.is_done());
                assert_eq!(relay.feed(b"more"), Relay::End(0), "nothing after the end");
                return Outcome::End(taken + n);
            }
            Relay::Refused(why) => {
                let at = relay.position();
                assert!(
                    (taken..taken + piece.len()).contains(&(at as usize)),
                    "refused in the piece"
                );
                assert_eq!(
                    relay.feed(b"0\r\n\r\n"),
                    Relay::Refused(why),
                    "refused for good"
                );
                return Outcome::Refused(why, relay.position());
            }
        }
    }
    Outcome::More(taken)
}

fn relay(wire: &[u8]) -> Outcome {
    relay_cut(wire, &[], Limits::default())
}

fn refusal(wire: &[u8]) -> Option<ChunkRefusal> {
    match relay(wire) {
        Outcome::Refused(why, _) => Some(why),
        _ => None,
    }
}

#[test]
fn a_body_ends_after_its_trailers_and_leaves_the_next_request() {
    let body = b"5;name=value\r\nhello\r\n0000A \r\n0123456789\r\n0\r\nx-t: 1\r\nX-U:\r\n\r\n";
    let mut wire = body.to_vec();
    wire.extend_from_slice(b"GET / HTTP/1.1\r\n\r\n");
    assert_eq!(relay(&wire), Outcome::End(body.len()));
    let mut r = ChunkedRelay::new(Limits::default());
    r.feed(body);
    assert_eq!(r.data_bytes(), 15);
    assert_eq!(relay(b"0\r\n\r\n"), Outcome::End(5));
    assert_eq!(relay(b"5\r\nhel"), Outcome::More(6));
    let mut r = ChunkedRelay::new(Limits::default());
    r.feed(b"5\r\nhel");
    assert_eq!(r.data_left(), 2);
    r.feed(b"lo\r");
    assert_eq!(r.data_left(), 0);
}

#[test]
fn a_chunk_size_that_is_not_hex_is_refused() {
    for wire in [
        &b"zz\r\nabc\r\n0\r\n\r\n"[..],
        b"\r\n",
        b" 5\r\nhello\r\n",
        b"5 5\r\nhello\r\n",
        b"-5\r\nhello\r\n",
        b"0x5\r\nhello\r\n",
        b"5\r\nhello\r\nq\r\n",
        b"5\nhello\r\n0\r\n\r\n",
    ] {
        assert_eq!(refusal(wire), Some(ChunkRefusal::InvalidSize), "{wire:?}");
    }
    assert_eq!(
        relay(b"5\r\nhello\r\nq"),
        Outcome::Refused(ChunkRefusal::InvalidSize, 10),
        "refused at the offending byte"
    );
}

#[test]
fn a_chunk_size_beyond_64_bits_is_refused() {
    assert_eq!(
        refusal(b"10000000000000000\r\n"),
        Some(ChunkRefusal::SizeOverflow)
    );
    // Leading zeros take no room: hyper reads any number of them.
    assert_eq!(
        relay(b"00000000000000000000000000001\r\na\r\n0\r\n\r\n"),
        Outcome::End(39)
    );
    assert_eq!(relay(b"ffffffffffffffff\r\n"), Outcome::More(18));
}

#[test]
fn a_missing_crlf_is_refused() {
    for wire in [
        &b"5\r\rhello"[..],
        b"5\r\nhelloX\r\n0\r\n\r\n",
        b"5\r\nhello\r0\r\n\r\n",
        b"5\r\nhello\n0\r\n\r\n",
        b"0\r\n\rx",
    ] {
        assert_eq!(refusal(wire), Some(ChunkRefusal::MissingCrlf), "{wire:?}");
    }
}

#[test]
fn a_bad_extension_is_refused() {
    for wire in [
        &b"5;a\nb\r\nhello\r\n"[..],
        b"5;a=\x01\r\nhello\r\n",
        b"5;caf\xc3\xa9\r\nhello\r\n",
        b"5;\x7f\r\nhello\r\n",
    ] {
        assert_eq!(refusal(wire), Some(ChunkRefusal::BadExtension), "{wire:?}");
    }
}

#[test]
fn an_oversized_size_line_is_refused() {
    let limits = Limits {
        max_line_bytes: 16,
        ..Limits::default()
    };
    let fits = b"5;abcdefghijklmn\r\nhello\r\n0\r\n\r\n";
    assert_eq!(relay_cut(fits, &[], limits), Outcome::End(fits.len()));
    assert_eq!(
        relay_cut(b"5;abcdefghijklmno\r\nhello\r\n", &[], limits),
        Outcome::Refused(ChunkRefusal::LineTooLong, 16)
    );
    // Leading zeros count too: a line of nothing but zeros never ends otherwise.
    assert_eq!(
        relay_cut(&[b'0'; 100], &[], limits),
        Outcome::Refused(ChunkRefusal::LineTooLong, 16)
    );
}

#[test]
fn a_bad_trailer_is_refused() {
    for wire in [
        &b"0\r\nx-t: 1\nx-u: 2\r\n\r\n"[..],
        b"0\r\nx-t: 1\r\n folded\r\n\r\n",
        b"0\r\n: no name\r\n\r\n",
        b"0\r\nx t: 1\r\n\r\n",
        b"0\r\nno-colon\r\n\r\n",
        b"0\r\nx-t: \x01\r\n\r\n",
        b"0\r\nx-t: 1\r\r\n",
        b"0\r\n\n",
    ] {
        assert_eq!(refusal(wire), Some(ChunkRefusal::BadTrailer), "{wire:?}");
    }
}

#[test]
fn oversized_trailers_are_refused() {
    let limits = Limits {
        max_trailer_bytes: 20,
        max_trailer_fields: 2,
        ..Limits::default()
    };
    let fits = b"0\r\na: 1\r\nb: 2\r\n\r\n";
    assert_eq!(relay_cut(fits, &[], limits), Outcome::End(fits.len()));
    assert_eq!(
        relay_cut(b"0\r\na: 1\r\nb: 2\r\nc: 3\r\n\r\n", &[], limits),
        Outcome::Refused(ChunkRefusal::TrailersTooLarge, 15),
        "the third field"
    );
    assert_eq!(
        relay_cut(b"0\r\nx: 123456789012345678\r\n\r\n", &[], limits),
        Outcome::Refused(ChunkRefusal::TrailersTooLarge, 23)
    );
}

/// A valid chunked body from its parts, and the offsets where its CRLFs after data are.
fn valid_body() -> impl Strategy<Value = (Vec<u8>, Vec<usize>)> {
    let extension = prop::sample::select(vec![
        "",
        ";a",
        ";a=b",
        " ;name=\"quoted value\"",
        "\t;x=1;y=2",
        ";e=\"\\\"\"",
    ]);
    let chunk = (
        prop::collection::vec(any::<u8>(), 1..40),
        extension.clone(),
        0usize..3,
        any::<bool>(),
    );
    let trailer = prop::sample::select(vec![
        "x-trailer: 1",
        "Digest: sha-256=abc",
        "x-empty:",
        "x-spaced:  a  b ",
        "x-obs: caf\u{e9}",
    ]);
    (
        prop::collection::vec(chunk, 0..6),
        extension,
        prop::collection::vec(trailer, 0..3),
    )
        .prop_map(|(chunks, last_extension, trailers)| {
            let mut body = Vec::new();
            let mut data_ends = Vec::new();
            for (data, ext, zeros, upper) in chunks {
                let size = format!("{}{:x}", "0".repeat(zeros), data.len());
                let size = if upper { size.to_uppercase() } else { size };
                body.extend_from_slice(format!("{size}{ext}\r\n").as_bytes());
                body.extend_from_slice(&data);
                data_ends.push(body.len());
                body.extend_from_slice(b"\r\n");
            }
            body.extend_from_slice(format!("0{last_extension}\r\n").as_bytes());
            for t in trailers {
                body.extend_from_slice(t.as_bytes());
                body.extend_from_slice(b"\r\n");
            }
            body.extend_from_slice(b"\r\n");
            (body, data_ends)
        })
}

fn follow() -> impl Strategy<Value = Vec<u8>> {
    prop::sample::select(vec![
        b"".to_vec(),
        b"GET / HTTP/1.1\r\n\r\n".to_vec(),
        b"0\r\n\r\n".to_vec(),
        b"\r\n".to_vec(),
    ])
}

/// Random cut points within `len`, ascending.
fn cuts(len: usize, seeds: &[usize]) -> Vec<usize> {
    let mut cuts: Vec<usize> = seeds.iter().map(|s| s % (len + 1)).collect();
    cuts.sort_unstable();
    cuts
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn a_valid_body_split_anywhere_ends_exactly_at_its_end(
        (body, _) in valid_body(),
        next in follow(),
        seeds in prop::collection::vec(any::<usize>(), 0..12),
    ) {
        let mut wire = body.clone();
        wire.extend_from_slice(&next);
        let limits = Limits::default();
        prop_assert_eq!(relay_cut(&wire, &[], limits), Outcome::End(body.len()));
        for cut in 0..=wire.len() {
            prop_assert_eq!(relay_cut(&wire, &[cut], limits), Outcome::End(body.len()), "cut {}", cut);
        }
        prop_assert_eq!(relay_cut(&wire, &cuts(wire.len(), &seeds), limits), Outcome::End(body.len()));
        // One byte at a time.
        let every: Vec<usize> = (1..wire.len()).collect();
        prop_assert_eq!(relay_cut(&wire, &every, limits), Outcome::End(body.len()));
        // Short of its end, it wants more and has taken every byte.
        prop_assert_eq!(relay_cut(&body[..body.len() - 1], &[], limits), Outcome::More(body.len() - 1));
    }

    #[test]
    fn a_corrupted_body_is_refused_alike_at_any_split(
        (body, data_ends) in valid_body(),
        next in follow(),
        at in any::<usize>(),
        byte in any::<u8>(),
        seeds in prop::collection::vec(any::<usize>(), 0..12),
    ) {
        let mut wire = body.clone();
        wire.extend_from_slice(&next);
        let at = at % body.len();
        wire[at] = byte;
        let limits = Limits::default();
        let whole = relay_cut(&wire, &[], limits);
        for cut in 0..=wire.len() {
            prop_assert_eq!(relay_cut(&wire, &[cut], limits), whole, "cut {}", cut);
        }
        prop_assert_eq!(relay_cut(&wire, &cuts(wire.len(), &seeds), limits), whole);
        // A CRLF after chunk data that is no longer CRLF is always refused there.
        if let Some(end) = data_ends.iter().find(|e| **e == at || **e + 1 == at) {
            if wire[at] != body[at] {
                prop_assert_eq!(whole, Outcome::Refused(ChunkRefusal::MissingCrlf, at as u64), "data end {}", end);
            }
        }
    }
}
