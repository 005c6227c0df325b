//! Request heads: each refusal and decline by name, the parsed slices, and the property
//! that a head split anywhere reads as incomplete until it is whole.

use super::*;
use proptest::prelude::*;

const LIMITS: Limits = Limits {
    max_head_bytes: 8 * 1024,
};

fn parse(buf: &[u8]) -> Parse<'_> {
    parse_request(buf, LIMITS)
}

fn refused(buf: &[u8]) -> Option<Refusal> {
    match parse(buf) {
        Parse::Refused(why) => Some(why),
        _ => None,
    }
}

fn declined(buf: &[u8]) -> Option<Decline> {
    match parse(buf) {
        Parse::Declined(why) => Some(why),
        _ => None,
    }
}

fn framing(buf: &[u8]) -> Option<Framing> {
    match parse(buf) {
        Parse::Parsed { framing, .. } => Some(framing),
        _ => None,
    }
}

/// A POST head with `fields` (each ending in CRLF) between the host and the empty line.
fn post(fields: &str) -> Vec<u8> {
    format!("POST /a HTTP/1.1\r\nhost: x\r\n{fields}\r\n").into_bytes()
}

#[test]
fn a_plain_request_is_parsed_into_slices_of_the_buffer() {
    let wire = b"GET /api/v2/x?y=1 HTTP/1.1\r\nHost: x\r\nX-A:  one \r\nx-a: two\r\n\r\nGET /next";
    let Parse::Parsed {
        head,
        framing,
        head_len,
    } = parse(wire)
    else {
        panic!("{:?}", parse(wire));
    };
    assert_eq!(head.method, "GET");
    assert_eq!(head.target, "/api/v2/x?y=1");
    assert_eq!(head.version, 1);
    assert_eq!(framing, Framing::Empty);
    assert_eq!(
        &wire[head_len..],
        b"GET /next",
        "the pipelined request is left"
    );
    let fields: Vec<(&str, &[u8])> = head.headers.iter().map(|f| (f.name, f.value)).collect();
    assert_eq!(
        fields,
        [("Host", b"x".as_slice()), ("X-A", b"one"), ("x-a", b"two")]
    );
    assert_eq!(head.headers.get("x-A"), Some(b"one".as_slice()));
    assert_eq!(head.headers.get_all("X-a").count(), 2);
    assert_eq!(head.headers.field_bytes(), (4 + 1 + 4) + (3 + 3 + 4) * 2);
    assert!(!head.close);
    // The slices point into the buffer: nothing was copied.
    assert!(wire.as_ptr_range().contains(&head.target.as_ptr()));
    // What hyper's `Uri` keeps as it is passes: `"{}|` in a path, `` ` `` in a query.
    let wire = b"GET /a/{\"b\"}|c?d=`e`&f=/g? HTTP/1.1\r\n\r\n";
    assert!(
        matches!(parse(wire), Parse::Parsed { .. }),
        "{:?}",
        parse(wire)
    );
}

#[test]
fn a_head_without_its_empty_line_is_incomplete() {
    for wire in [
        &b""[..],
        b"GET",
        b"GET /a HTTP/1.1\r\n",
        b"GET /a HTTP/1.1\r\nhost: x\r\n",
        b"GET /a HTTP/1.1\r\nhost: x\r\n\r",
    ] {
        assert!(matches!(parse(wire), Parse::Incomplete), "{wire:?}");
    }
}

#[test]
fn lengths_and_chunked_frame_the_body() {
    assert_eq!(
        framing(&post("content-length: 12\r\n")),
        Some(Framing::Length(12))
    );
    assert_eq!(
        framing(&post("content-length: 0\r\n")),
        Some(Framing::Empty)
    );
    assert_eq!(
        framing(&post("Transfer-Encoding: CHUNKED\r\n")),
        Some(Framing::Chunked)
    );
    assert_eq!(framing(&post("")), Some(Framing::Empty));
}

#[test]
fn equal_content_lengths_are_one_length_as_hyper_reads_them() {
    // hyper compares the numbers and keeps the first field: `5` and `005` are one length.
    assert_eq!(
        framing(&post("content-length: 5\r\ncontent-length: 005\r\n")),
        Some(Framing::Length(5))
    );
}

#[test]
fn a_bare_lf_ending_a_line_is_refused() {
    for wire in [
        &b"GET /a HTTP/1.1\nhost: x\r\n\r\n"[..],
        b"GET /a HTTP/1.1\r\nhost: x\n\r\n",
        b"GET /a HTTP/1.1\r\nhost: x\r\n\n",
        b"GET /a HTTP/1.1\n\n",
        b"\nGET /a HTTP/1.1\r\n\r\n",
    ] {
        assert_eq!(refused(wire), Some(Refusal::BareLf), "{wire:?}");
    }
    // A bare LF in the body after the head is the body's business.
    assert!(matches!(
        parse(b"POST /a HTTP/1.1\r\ncontent-length: 2\r\n\r\n\n\n"),
        Parse::Parsed { .. }
    ));
}

#[test]
fn obsolete_line_folding_is_refused() {
    for wire in [
        &b"GET /a HTTP/1.1\r\nx-a: 1\r\n folded\r\n\r\n"[..],
        b"GET /a HTTP/1.1\r\nx-a: 1\r\n\tfolded\r\n\r\n",
    ] {
        assert_eq!(refused(wire), Some(Refusal::ObsFold), "{wire:?}");
    }
}

#[test]
fn content_length_with_transfer_encoding_is_refused() {
    for fields in [
        "content-length: 4\r\ntransfer-encoding: chunked\r\n",
        "Transfer-Encoding: chunked\r\nContent-Length: 3\r\n",
    ] {
        assert_eq!(
            refused(&post(fields)),
            Some(Refusal::LengthWithTransferEncoding),
            "{fields:?}"
        );
    }
}

#[test]
fn differing_content_lengths_are_refused() {
    assert_eq!(
        refused(&post("content-length: 4\r\ncontent-length: 5\r\n")),
        Some(Refusal::ConflictingContentLength)
    );
}

#[test]
fn a_content_length_that_is_not_only_digits_is_refused() {
    for value in [
        "+4",
        "-1",
        "4 4",
        "0x4",
        "4,4",
        "",
        "4.0",
        "18446744073709551614",
        "99999999999999999999",
    ] {
        let wire = post(&format!("content-length: {value}\r\n"));
        assert_eq!(
            refused(&wire),
            Some(Refusal::InvalidContentLength),
            "{value:?}"
        );
    }
    // The largest length hyper takes.
    assert_eq!(
        framing(&post("content-length: 18446744073709551613\r\n")),
        Some(Framing::Length(u64::MAX - 2))
    );
}

#[test]
fn a_transfer_encoding_whose_last_coding_is_not_chunked_is_refused() {
    for value in [
        "gzip",
        "chunked, gzip",
        "identity",
        "xchunked",
        "chunked;q=1",
    ] {
        let wire = post(&format!("transfer-encoding: {value}\r\n"));
        assert_eq!(refused(&wire), Some(Refusal::NotChunked), "{value:?}");
    }
}

#[test]
fn other_codings_before_chunked_and_repeated_encodings_are_refused() {
    for fields in [
        "transfer-encoding: gzip, chunked\r\n",
        "transfer-encoding: chunked, chunked\r\n",
        "transfer-encoding: chunked\r\ntransfer-encoding: chunked\r\n",
    ] {
        assert_eq!(
            refused(&post(fields)),
            Some(Refusal::UnsupportedTransferEncoding),
            "{fields:?}"
        );
    }
    assert_eq!(
        refused(&post(
            "transfer-encoding: chunked\r\ntransfer-encoding: identity\r\n"
        )),
        Some(Refusal::NotChunked)
    );
}

#[test]
fn a_head_beyond_the_limit_is_refused() {
    let limits = Limits { max_head_bytes: 64 };
    let long = format!("GET /a HTTP/1.1\r\nx-pad: {}\r\n\r\n", "p".repeat(60));
    assert!(matches!(
        parse_request(long.as_bytes(), limits),
        Parse::Refused(Refusal::HeadTooLarge)
    ));
    // Without its end too, as soon as the bytes pass the limit.
    assert!(matches!(
        parse_request(&long.as_bytes()[..65], limits),
        Parse::Refused(Refusal::HeadTooLarge)
    ));
    assert!(matches!(
        parse_request(&long.as_bytes()[..64], limits),
        Parse::Incomplete
    ));
    // A head of exactly the limit passes.
    let exact = format!("GET /a HTTP/1.1\r\nx-pad: {}\r\n\r\n", "p".repeat(36));
    assert_eq!(exact.len(), 64);
    assert!(matches!(
        parse_request(exact.as_bytes(), limits),
        Parse::Parsed { head_len: 64, .. }
    ));
    assert_eq!(Refusal::HeadTooLarge.error().status().as_u16(), 431);
}

#[test]
fn a_malformed_request_line_or_field_is_refused() {
    for wire in [
        &b"GET  /a HTTP/1.1\r\n\r\n"[..],
        b"G(T /a HTTP/1.1\r\n\r\n",
        b"GET /a HTTP/1.1\r\nx a: 1\r\n\r\n",
        b"GET /a HTTP/1.1\r\n: 1\r\n\r\n",
        b"GET /a HTTP/1.1\r\nx-a: \x01\r\n\r\n",
        b"GET /a HTTP/1.1\rx\r\n\r\n",
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03",
    ] {
        assert!(
            matches!(refused(wire), Some(Refusal::Malformed(_))),
            "{wire:?}: {:?}",
            parse(wire)
        );
    }
    assert_eq!(
        Refusal::Malformed("invalid header name")
            .error()
            .status()
            .as_u16(),
        400
    );
}

#[test]
fn connect_upgrade_expect_and_http10_are_declined() {
    assert_eq!(
        declined(b"CONNECT a:443 HTTP/1.1\r\nhost: a:443\r\n\r\n"),
        Some(Decline::Connect)
    );
    assert_eq!(
        declined(&post("Upgrade: websocket\r\nconnection: upgrade\r\n")),
        Some(Decline::Upgrade)
    );
    assert_eq!(
        declined(&post("expect: 100-continue\r\ncontent-length: 1\r\n")),
        Some(Decline::Expect)
    );
    assert_eq!(
        declined(&post("Expect: something-else\r\n")),
        Some(Decline::Expect)
    );
    assert_eq!(declined(b"GET /a HTTP/1.0\r\n\r\n"), Some(Decline::Version));
    // HTTP/1.0 with Transfer-Encoding, which hyper refuses: hyper answers it.
    assert_eq!(
        declined(b"POST /a HTTP/1.0\r\ntransfer-encoding: chunked\r\n\r\n"),
        Some(Decline::Version)
    );
}

#[test]
fn the_http2_preface_is_declined() {
    assert_eq!(
        declined(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"),
        Some(Decline::Version)
    );
    // Still only part of it: declined too (hyper waits for the rest).
    assert_eq!(declined(b"PRI * HTTP/2.0\r\n"), Some(Decline::Version));
}

#[test]
fn another_version_httparse_does_not_read_is_refused_as_hyper_refuses_it() {
    // hyper answers these 400 itself; the fast path answers them in the proxy's envelope
    // rather than hand hyper a connection it will only refuse.
    for head in [
        &b"GET / HTTP/2.0\r\n\r\n"[..],
        b"GET / HTTP/0.9\r\n\r\n",
        b"aaaaPOST /ion: @Ai/v2/publiection: close\r\n",
    ] {
        assert!(
            matches!(
                parse_request(head, LIMITS),
                Parse::Refused(Refusal::Malformed(_))
            ),
            "{:?}",
            String::from_utf8_lossy(head)
        );
    }
}

#[test]
fn targets_other_than_a_plain_path_are_declined() {
    for target in [
        "http://x/a",
        "*",
        "x:443",
        "/a#frag",
        "/caf\u{e9}",
        "a/b",
        "/a<b",
        "/a`b",
        "/a?q=\"x\"",
    ] {
        let wire = format!("GET {target} HTTP/1.1\r\nhost: x\r\n\r\n");
        assert_eq!(
            declined(wire.as_bytes()),
            Some(Decline::Target),
            "{target:?}"
        );
    }
}

#[test]
fn more_fields_than_slots_are_declined() {
    let fields = |n: usize| (0..n).map(|i| format!("x-{i}: v\r\n")).collect::<String>();
    assert_eq!(
        declined(&post(&fields(HEADER_SLOTS))),
        Some(Decline::TooManyFields),
        "the host field makes one more"
    );
    let wire = post(&fields(HEADER_SLOTS - 1));
    let Parse::Parsed { head, .. } = parse(&wire) else {
        panic!("64 fields fit");
    };
    assert_eq!(head.headers.len(), HEADER_SLOTS);
    // Past the slots, the head is still read whole and its framing checked first.
    let wire = post(&format!(
        "{}content-length: 1\r\ntransfer-encoding: chunked\r\n",
        fields(70)
    ));
    assert_eq!(refused(&wire), Some(Refusal::LengthWithTransferEncoding));
    let wire = post(&fields(80));
    assert!(matches!(parse(&wire[..wire.len() - 2]), Parse::Incomplete));
    // Past hyper's 100, refused as hyper refuses it.
    assert_eq!(refused(&post(&fields(100))), Some(Refusal::HeadTooLarge));
}

#[test]
fn a_refusal_wins_over_a_decline() {
    // Declined heads go to hyper: none may carry a framing the proxy refuses.
    for wire in [
        post("upgrade: h2c\r\ncontent-length: 1\r\ntransfer-encoding: chunked\r\n"),
        post("expect: 100-continue\r\ncontent-length: 1\r\ncontent-length: 2\r\n"),
        b"CONNECT a:1 HTTP/1.1\r\ntransfer-encoding: gzip, chunked\r\n\r\n".to_vec(),
        b"GET http://a/ HTTP/1.1\r\ncontent-length: 1\r\ntransfer-encoding: chunked\r\n\r\n"
            .to_vec(),
        b"GET /a HTTP/1.0\nhost: x\r\n\r\n".to_vec(),
    ] {
        assert!(
            matches!(parse(&wire), Parse::Refused(_)),
            "{:?}: {:?}",
            String::from_utf8_lossy(&wire),
            parse(&wire)
        );
    }
}

#[test]
fn connection_close_is_read_as_hyper_reads_it() {
    let close = |fields: &str| match parse(&post(fields)) {
        Parse::Parsed { head, .. } => head.close,
        other => panic!("{other:?}"),
    };
    assert!(close("connection: close\r\n"));
    assert!(close("Connection: keep-alive, Close\r\n"));
    assert!(close("connection: close\r\nconnection: keep-alive\r\n"));
    assert!(!close("connection: keep-alive\r\n"));
    assert!(!close("connection: closed\r\n"));
    assert!(!close(""));
}

#[test]
fn debug_output_leaves_out_values_and_the_target() {
    let wire = b"GET /a?token=s3cret HTTP/1.1\r\nauthorization: Bearer s3cret\r\n\r\n";
    let shown = format!("{:?}", parse(wire));
    assert!(shown.contains("authorization"), "{shown}");
    assert!(!shown.contains("s3cret"), "{shown}");
}

/// A valid head: a method, an origin-form target, fields from a varied set (framing
/// fields among them, in mixed case), then what follows it (a body or the next request).
fn valid_head() -> impl Strategy<Value = (Vec<u8>, Vec<u8>)> {
    let method = prop::sample::select(vec!["GET", "POST", "PUT", "DELETE", "PROPFIND"]);
    let target = "/[a-zA-Z0-9._~%/-]{0,24}(\\?[a-z0-9=&%+]{0,16})?";
    let field = prop::sample::select(vec![
        "host: x",
        "Content-Length: 7",
        "accept: */*",
        "authorization: Bearer abc.def",
        "Transfer-Encoding: chunked",
        "connection: close",
        "x-long: a value with spaces, and commas",
        "X-Empty:",
        "cookie: a=b; c=d",
        "x-utf8: caf\u{e9}",
    ]);
    let follow = prop::sample::select(vec!["", "GET / HTTP/1.1\r\n\r\n", "abcdefg", "\r\n"]);
    (method, target, prop::collection::vec(field, 0..12), follow).prop_map(
        |(method, target, fields, follow)| {
            let mut head = format!("{method} {target} HTTP/1.1\r\n");
            for f in fields {
                head.push_str(f);
                head.push_str("\r\n");
            }
            head.push_str("\r\n");
            (head.into_bytes(), follow.as_bytes().to_vec())
        },
    )
}

/// A comparable summary of a parse.
fn summary(parse: &Parse<'_>) -> String {
    match parse {
        Parse::Parsed {
            head,
            framing,
            head_len,
        } => format!(
            "{} {} {:?} {framing:?} {head_len} {}",
            head.method,
            head.target,
            head.headers
                .iter()
                .map(|f| (f.name, f.value))
                .collect::<Vec<_>>(),
            head.close
        ),
        other => format!("{other:?}"),
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn a_head_split_anywhere_is_incomplete_until_whole((head, follow) in valid_head()) {
        let mut wire = head.clone();
        wire.extend_from_slice(&follow);
        let whole = parse(&wire);
        prop_assert!(
            !matches!(whole, Parse::Incomplete),
            "{:?}", String::from_utf8_lossy(&wire)
        );
        if let Parse::Parsed { head_len, .. } = whole {
            prop_assert_eq!(head_len, head.len());
        }
        for cut in 0..head.len() {
            let prefix = parse(&wire[..cut]);
            prop_assert!(
                matches!(prefix, Parse::Incomplete),
                "cut at {} of {:?}: {:?}", cut, String::from_utf8_lossy(&wire), prefix
            );
        }
        for cut in head.len()..=wire.len() {
            prop_assert_eq!(summary(&parse(&wire[..cut])), summary(&whole));
        }
    }

    #[test]
    fn any_bytes_read_alike_whole_or_cut(bytes in prop::collection::vec(
        prop::sample::select(b"GET /a HTTP/1.1\r\n: xcontent-length5transfer-encodingchunked\t".to_vec()),
        0..120,
    )) {
        // Whatever a prefix says that is not "incomplete", the whole says too.
        let whole = summary(&parse(&bytes));
        for cut in 0..=bytes.len() {
            let prefix = parse(&bytes[..cut]);
            match prefix {
                Parse::Incomplete => {}
                Parse::Parsed { head_len, .. } => {
                    prop_assert_eq!(summary(&parse(&bytes[..head_len])), whole.clone());
                    prop_assert_eq!(summary(&prefix), whole.clone());
                }
                _ => prop_assert_eq!(summary(&prefix), whole.clone()),
            }
        }
    }
}
