//! Response heads: each framing rule and refusal by name, keep-alive as hyper's client
//! reads it, and the property that a head split anywhere reads as incomplete until it is
//! whole.

use super::*;
use proptest::prelude::*;

const LIMITS: Limits = Limits {
    max_head_bytes: 8 * 1024,
};

fn parse<'b>(buf: &'b [u8], method: &str) -> Parse<'b> {
    parse_response(buf, method, LIMITS)
}

fn refused(buf: &[u8]) -> Option<Refusal> {
    match parse(buf, "GET") {
        Parse::Refused(why) => Some(why),
        _ => None,
    }
}

/// The framing and keep-alive of a response to `method`.
fn read(buf: &[u8], method: &str) -> Option<(Framing, bool)> {
    match parse(buf, method) {
        Parse::Parsed {
            framing,
            keep_alive,
            ..
        } => Some((framing, keep_alive)),
        _ => None,
    }
}

/// An HTTP/1.1 200 head with `fields` (each ending in CRLF).
fn ok(fields: &str) -> Vec<u8> {
    format!("HTTP/1.1 200 OK\r\n{fields}\r\n").into_bytes()
}

#[test]
fn a_plain_response_is_parsed_into_slices_of_the_buffer() {
    let wire = b"HTTP/1.1 404 Not Here\r\nContent-Length: 3\r\nX-A:  one \r\n\r\nabc";
    let Parse::Parsed {
        head,
        framing,
        head_len,
        keep_alive,
    } = parse(wire, "GET")
    else {
        panic!("{:?}", parse(wire, "GET"));
    };
    assert_eq!(head.status, 404);
    assert_eq!(head.version, 1);
    assert_eq!(head.reason, "Not Here");
    assert!(!head.interim);
    assert_eq!(framing, Framing::Length(3));
    assert!(keep_alive);
    assert_eq!(&wire[head_len..], b"abc", "the body is left");
    let fields: Vec<(&str, &[u8])> = head.headers.iter().map(|f| (f.name, f.value)).collect();
    assert_eq!(
        fields,
        [("Content-Length", b"3".as_slice()), ("X-A", b"one")]
    );
    assert!(wire.as_ptr_range().contains(&head.reason.as_ptr()));
}

#[test]
fn a_head_without_its_empty_line_is_incomplete() {
    for wire in [
        &b""[..],
        b"HTTP/1.",
        b"HTTP/1.1 200 OK\r\n",
        b"HTTP/1.1 200 OK\r\ncontent-length: 1\r\n",
        b"HTTP/1.1 200 OK\r\n\r",
    ] {
        assert!(matches!(parse(wire, "GET"), Parse::Incomplete), "{wire:?}");
    }
}

#[test]
fn length_chunked_and_close_delimited_frame_the_body() {
    let get = |fields: &str| read(&ok(fields), "GET").map(|(framing, _)| framing);
    assert_eq!(get("content-length: 12\r\n"), Some(Framing::Length(12)));
    assert_eq!(get("content-length: 0\r\n"), Some(Framing::Empty));
    assert_eq!(
        get("content-length: 5\r\nContent-Length: 005\r\n"),
        Some(Framing::Length(5))
    );
    assert_eq!(
        get("Transfer-Encoding: CHUNKED\r\n"),
        Some(Framing::Chunked)
    );
    // The last coding decides, as RFC 9112 §6.3 and hyper's client read it.
    assert_eq!(
        get("transfer-encoding: gzip, chunked\r\n"),
        Some(Framing::Chunked)
    );
    assert_eq!(
        get("transfer-encoding: chunked\r\ntransfer-encoding: gzip\r\n"),
        Some(Framing::UntilClose)
    );
    assert_eq!(
        get("transfer-encoding: chunked, gzip\r\n"),
        Some(Framing::UntilClose)
    );
    assert_eq!(get(""), Some(Framing::UntilClose));
}

#[test]
fn head_requests_1xx_204_and_304_have_no_body() {
    let head = ok("content-length: 10\r\n");
    assert_eq!(read(&head, "HEAD"), Some((Framing::Empty, true)));
    assert_eq!(
        read(&ok("transfer-encoding: chunked\r\n"), "HEAD"),
        Some((Framing::Empty, true))
    );
    for status in ["204 No Content", "304 Not Modified", "103 Early Hints"] {
        let wire = format!("HTTP/1.1 {status}\r\ncontent-length: 10\r\n\r\n");
        assert_eq!(
            read(wire.as_bytes(), "GET"),
            Some((Framing::Empty, true)),
            "{status}"
        );
    }
    // Without any length, no body is not "until close": the connection stays.
    assert_eq!(
        read(b"HTTP/1.1 204 No Content\r\n\r\n", "GET"),
        Some((Framing::Empty, true))
    );
}

#[test]
fn an_interim_response_is_flagged_so_the_final_one_can_follow() {
    let wire = b"HTTP/1.1 103 Early Hints\r\nlink: </a>\r\n\r\nHTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n";
    let Parse::Parsed { head, head_len, .. } = parse(wire, "GET") else {
        panic!("{:?}", parse(wire, "GET"));
    };
    assert!(head.interim);
    assert_eq!(head.status, 103);
    let Parse::Parsed { head, framing, .. } = parse(&wire[head_len..], "GET") else {
        panic!("the final response");
    };
    assert!(!head.interim);
    assert_eq!((head.status, framing), (200, Framing::Empty));
}

#[test]
fn switching_protocols_and_a_connect_tunnel_are_refused() {
    assert_eq!(
        refused(b"HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\n\r\n"),
        Some(Refusal::Upgrade)
    );
    assert!(matches!(
        parse(&ok(""), "CONNECT"),
        Parse::Refused(Refusal::Upgrade)
    ));
    // A refused CONNECT is an ordinary response.
    assert!(matches!(
        parse(
            b"HTTP/1.1 403 Forbidden\r\ncontent-length: 0\r\n\r\n",
            "CONNECT"
        ),
        Parse::Parsed { .. }
    ));
}

#[test]
fn content_length_with_transfer_encoding_is_refused() {
    for fields in [
        "content-length: 5\r\ntransfer-encoding: chunked\r\n",
        "Transfer-Encoding: chunked\r\nContent-Length: 5\r\n",
        "content-length: 5\r\ntransfer-encoding: gzip\r\n",
    ] {
        assert_eq!(
            refused(&ok(fields)),
            Some(Refusal::LengthWithTransferEncoding),
            "{fields}"
        );
    }
    // Also where no body may follow: a proxy does not relay a head that lies.
    let wire =
        b"HTTP/1.1 304 Not Modified\r\ncontent-length: 5\r\ntransfer-encoding: chunked\r\n\r\n";
    assert_eq!(refused(wire), Some(Refusal::LengthWithTransferEncoding));
}

#[test]
fn differing_or_non_digit_lengths_are_refused() {
    assert_eq!(
        refused(&ok("content-length: 5\r\ncontent-length: 6\r\n")),
        Some(Refusal::ConflictingContentLength)
    );
    for value in [
        "",
        "+5",
        "-1",
        "5 5",
        "5, 5",
        "0x10",
        "1e3",
        "18446744073709551614",
        "99999999999999999999",
    ] {
        assert_eq!(
            refused(&ok(&format!("content-length: {value}\r\n"))),
            Some(Refusal::InvalidContentLength),
            "{value:?}"
        );
    }
    assert_eq!(
        read(&ok("content-length: 18446744073709551613\r\n"), "GET"),
        Some((Framing::Length(u64::MAX - 2), true))
    );
}

#[test]
fn a_transfer_encoding_on_http10_is_refused() {
    assert_eq!(
        refused(b"HTTP/1.0 200 OK\r\ntransfer-encoding: chunked\r\n\r\n"),
        Some(Refusal::TransferEncodingOnHttp10)
    );
}

#[test]
fn a_bare_lf_ending_a_line_is_refused() {
    for wire in [
        &b"HTTP/1.1 200 OK\ncontent-length: 0\r\n\r\n"[..],
        b"HTTP/1.1 200 OK\r\ncontent-length: 0\n\r\n",
        b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\n",
        b"HTTP/1.1 200 OK\n\n",
    ] {
        assert_eq!(refused(wire), Some(Refusal::BareLf), "{wire:?}");
    }
    // A bare LF in the body after the head is the body's business.
    assert!(matches!(
        parse(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n\n\n", "GET"),
        Parse::Parsed { .. }
    ));
}

#[test]
fn obsolete_line_folding_is_refused() {
    for wire in [
        &b"HTTP/1.1 200 OK\r\nx-a: one\r\n two\r\ncontent-length: 0\r\n\r\n"[..],
        b"HTTP/1.1 200 OK\r\nx-a: one\r\n\ttwo\r\n\r\n",
    ] {
        assert_eq!(refused(wire), Some(Refusal::ObsFold), "{wire:?}");
    }
}

#[test]
fn a_status_outside_100_to_999_or_a_malformed_line_is_refused() {
    for wire in [
        &b"HTTP/1.1 099 Low\r\n\r\n"[..],
        b"HTTP/1.1 000 Zero\r\n\r\n",
        b"HTTP/1.1 1000 Long\r\n\r\n",
        b"HTTP/1.1 20 Short\r\n\r\n",
        b"HTTP/1.1 2x0 X\r\n\r\n",
        b"HTTP/2.0 200 OK\r\n\r\n",
        b"ICY 200 OK\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nbad name: x\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nx-a: \x01\r\n\r\n",
    ] {
        assert!(
            matches!(refused(wire), Some(Refusal::Malformed(_))),
            "{wire:?}: {:?}",
            parse(wire, "GET")
        );
    }
    assert_eq!(
        read(b"HTTP/1.1 999 Odd\r\ncontent-length: 0\r\n\r\n", "GET"),
        Some((Framing::Empty, true))
    );
}

#[test]
fn a_head_beyond_the_limits_is_refused() {
    let mut long = ok(&format!(
        "x-long: {}\r\n",
        "a".repeat(LIMITS.max_head_bytes)
    ));
    assert_eq!(refused(&long), Some(Refusal::HeadTooLarge), "whole");
    long.truncate(LIMITS.max_head_bytes + 1);
    assert_eq!(refused(&long), Some(Refusal::HeadTooLarge), "no end yet");
    long.truncate(LIMITS.max_head_bytes);
    assert!(matches!(parse(&long, "GET"), Parse::Incomplete));

    let fields = |n: usize| (0..n).map(|i| format!("x-{i}: v\r\n")).collect::<String>();
    assert!(matches!(
        parse(&ok(&fields(HEADER_SLOTS)), "GET"),
        Parse::Parsed { .. }
    ));
    assert_eq!(
        refused(&ok(&fields(HEADER_SLOTS + 1))),
        Some(Refusal::TooManyFields)
    );
    // Refused once the field after the last slot is read, before the head ends: no end
    // can save it.
    let mut open = ok(&fields(HEADER_SLOTS + 1));
    open.truncate(open.len() - 2);
    assert_eq!(refused(&open), Some(Refusal::TooManyFields));
}

#[test]
fn keep_alive_is_read_as_hyper_reads_it() {
    let cases: [(&[u8], bool); 9] = [
        (b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n", true),
        (b"HTTP/1.1 200 OK\r\nconnection: close\r\ncontent-length: 0\r\n\r\n", false),
        (b"HTTP/1.1 200 OK\r\nConnection: Keep-Alive, CLOSE\r\ncontent-length: 0\r\n\r\n", false),
        (b"HTTP/1.1 200 OK\r\nconnection: close\r\nconnection: keep-alive\r\ncontent-length: 0\r\n\r\n", false),
        (b"HTTP/1.0 200 OK\r\ncontent-length: 0\r\n\r\n", false),
        (b"HTTP/1.0 200 OK\r\nconnection: keep-alive\r\ncontent-length: 0\r\n\r\n", true),
        (b"HTTP/1.0 200 OK\r\nconnection: keep-alive\r\nconnection: close\r\ncontent-length: 0\r\n\r\n", false),
        // A body delimited by the close never leaves the connection reusable.
        (b"HTTP/1.1 200 OK\r\n\r\n", false),
        (b"HTTP/1.0 200 OK\r\nconnection: keep-alive\r\n\r\n", false),
    ];
    for (wire, keep_alive) in cases {
        assert_eq!(
            read(wire, "GET").map(|(_, k)| k),
            Some(keep_alive),
            "{:?}",
            String::from_utf8_lossy(wire)
        );
    }
}

#[test]
fn debug_output_leaves_out_values() {
    let wire = b"HTTP/1.1 200 OK\r\nset-cookie: session=s3cret\r\ncontent-length: 0\r\n\r\n";
    let shown = format!("{:?}", parse(wire, "GET"));
    assert!(shown.contains("set-cookie"), "{shown}");
    assert!(!shown.contains("s3cret"), "{shown}");
}

/// A valid response head (status line and fields from a varied set, framing fields
/// among them, in mixed case), then what follows it (a body or the next response).
fn valid_head() -> impl Strategy<Value = (Vec<u8>, Vec<u8>)> {
    let status = prop::sample::select(vec![
        "HTTP/1.1 200 OK",
        "HTTP/1.1 103 Early Hints",
        "HTTP/1.1 204 No Content",
        "HTTP/1.1 304 Not Modified",
        "HTTP/1.1 404 ",
        "HTTP/1.1 500",
        "HTTP/1.0 200 OK",
        "HTTP/1.1 200 caf\u{e9}",
    ]);
    let field = prop::sample::select(vec![
        "Content-Length: 7",
        "content-length: 0",
        "Transfer-Encoding: chunked",
        "connection: close",
        "Connection: keep-alive",
        "content-type: application/json",
        "x-long: a value with spaces, and commas",
        "X-Empty:",
        "set-cookie: a=b; c=d",
        "x-utf8: caf\u{e9}",
    ]);
    let follow = prop::sample::select(vec!["", "HTTP/1.1 200 OK\r\n\r\n", "abcdefg", "\r\n"]);
    (status, prop::collection::vec(field, 0..12), follow).prop_map(|(status, fields, follow)| {
        let mut head = format!("{status}\r\n");
        for f in fields {
            head.push_str(f);
            head.push_str("\r\n");
        }
        head.push_str("\r\n");
        (head.into_bytes(), follow.as_bytes().to_vec())
    })
}

/// A comparable summary of a parse.
fn summary(parse: &Parse<'_>) -> String {
    match parse {
        Parse::Parsed {
            head,
            framing,
            head_len,
            keep_alive,
        } => format!(
            "{} {} {:?} {:?} {} {framing:?} {head_len} {keep_alive}",
            head.status,
            head.version,
            head.reason,
            head.headers
                .iter()
                .map(|f| (f.name, f.value))
                .collect::<Vec<_>>(),
            head.interim,
        ),
        other => format!("{other:?}"),
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn a_head_split_anywhere_is_incomplete_until_whole(
        (head, follow) in valid_head(),
        method in prop::sample::select(vec!["GET", "HEAD", "POST"]),
    ) {
        let mut wire = head.clone();
        wire.extend_from_slice(&follow);
        let whole = parse(&wire, method);
        prop_assert!(
            !matches!(whole, Parse::Incomplete),
            "{:?}", String::from_utf8_lossy(&wire)
        );
        if let Parse::Parsed { head_len, .. } = whole {
            prop_assert_eq!(head_len, head.len());
        }
        for cut in 0..head.len() {
            let prefix = parse(&wire[..cut], method);
            prop_assert!(
                matches!(prefix, Parse::Incomplete),
                "cut at {} of {:?}: {:?}", cut, String::from_utf8_lossy(&wire), prefix
            );
        }
        for cut in head.len()..=wire.len() {
            prop_assert_eq!(summary(&parse(&wire[..cut], method)), summary(&whole));
        }
    }

    #[test]
    fn any_bytes_read_alike_whole_or_cut(bytes in prop::collection::vec(
        prop::sample::select(b"HTTP/1.1 200 OK\r\n: xcontent-length5transfer-encodingchunked\t".to_vec()),
        0..120,
    )) {
        // Whatever a prefix says that is not "incomplete", the whole says too.
        let whole = summary(&parse(&bytes, "GET"));
        for cut in 0..=bytes.len() {
            let prefix = parse(&bytes[..cut], "GET");
            match prefix {
                Parse::Incomplete => {}
                Parse::Parsed { head_len, .. } => {
                    prop_assert_eq!(summary(&parse(&bytes[..head_len], "GET")), whole.clone());
                    prop_assert_eq!(summary(&prefix), whole.clone());
                }
                _ => prop_assert_eq!(summary(&prefix), whole.clone()),
            }
        }
    }
}
