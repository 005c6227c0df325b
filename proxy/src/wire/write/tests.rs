//! The request head writer: the bytes written for each body shape, against what hyper 1's
//! HTTP/1 client writes for the same request.

use http::header::{CONNECTION, CONTENT_LENGTH, TRAILER, TRANSFER_ENCODING};
use http::{HeaderMap, HeaderValue};

use super::*;

fn head(method: &str, headers: &HeaderMap, body: BodyKind) -> (String, BodyFraming) {
    let mut dst = Vec::new();
    let framing = write_request_head(&mut dst, method, "/api?x=1", b"refold:8080", headers, body);
    (String::from_utf8(dst).unwrap(), framing)
}

fn map(fields: &[(&'static str, &'static str)]) -> HeaderMap {
    let mut map = HeaderMap::new();
    for (name, value) in fields {
        map.append(*name, HeaderValue::from_static(value));
    }
    map
}

#[test]
fn an_empty_body_sends_no_framing_and_drops_transfer_encoding() {
    let fields = map(&[
        ("accept", "*/*"),
        ("transfer-encoding", "chunked"),
        ("host", "x"),
    ]);
    let (text, framing) = head("POST", &fields, BodyKind::Empty);
    assert_eq!(
        text,
        "POST /api?x=1 HTTP/1.1\r\nhost: refold:8080\r\naccept: */*\r\n\r\n"
    );
    assert_eq!(framing, BodyFraming::None);
    let fields = map(&[("content-length", "0")]);
    let (text, _) = head("POST", &fields, BodyKind::Empty);
    assert!(text.ends_with("content-length: 0\r\n\r\n"), "{text}");
}

#[test]
fn a_known_length_sets_content_length() {
    let (text, framing) = head("POST", &HeaderMap::new(), BodyKind::Known(12));
    assert_eq!(
        text,
        "POST /api?x=1 HTTP/1.1\r\nhost: refold:8080\r\ncontent-length: 12\r\n\r\n"
    );
    assert_eq!(framing, BodyFraming::Length(12));
}

#[test]
fn a_content_length_field_wins_over_an_unknown_body() {
    let fields = map(&[("content-length", "7")]);
    let (text, framing) = head("PUT", &fields, BodyKind::Unknown);
    assert!(text.contains("content-length: 7\r\n"), "{text}");
    assert!(!text.contains("transfer-encoding"), "{text}");
    assert_eq!(framing, BodyFraming::Length(7));
}

#[test]
fn an_unknown_body_is_chunked_except_for_get_head_and_connect() {
    let (text, framing) = head("POST", &map(&[("content-length", "x")]), BodyKind::Unknown);
    assert!(
        text.ends_with("transfer-encoding: chunked\r\n\r\n"),
        "{text}"
    );
    assert!(!text.contains(CONTENT_LENGTH.as_str()), "{text}");
    assert_eq!(framing, BodyFraming::Chunked);
    for method in ["GET", "HEAD", "CONNECT"] {
        let (text, framing) = head(method, &HeaderMap::new(), BodyKind::Unknown);
        assert_eq!(framing, BodyFraming::None, "{method}");
        assert!(!text.contains("transfer-encoding"), "{text}");
    }
}

#[test]
fn a_transfer_encoding_is_kept_made_chunked_and_drops_content_length() {
    let fields = map(&[("transfer-encoding", "gzip"), ("content-length", "5")]);
    let (text, framing) = head("POST", &fields, BodyKind::Known(5));
    assert!(
        text.contains("transfer-encoding: gzip, chunked\r\n"),
        "{text}"
    );
    assert!(!text.contains("content-length"), "{text}");
    assert_eq!(framing, BodyFraming::Chunked);
    let fields = map(&[(TRANSFER_ENCODING.as_str(), "chunked")]);
    let (text, _) = head("POST", &fields, BodyKind::Unknown);
    assert_eq!(text.matches("chunked").count(), 1, "{text}");
}

#[test]
fn fields_keep_their_order_and_repeats() {
    let fields = map(&[("x-a", "1"), ("x-b", "2"), ("x-a", "3")]);
    let (text, _) = head("GET", &fields, BodyKind::Empty);
    assert_eq!(
        text,
        "GET /api?x=1 HTTP/1.1\r\nhost: refold:8080\r\nx-a: 1\r\nx-a: 3\r\nx-b: 2\r\n\r\n"
    );
}

#[test]
fn chunk_sizes_are_upper_hex() {
    for (len, text) in [
        (0, "0\r\n"),
        (10, "A\r\n"),
        (255, "FF\r\n"),
        (4096, "1000\r\n"),
    ] {
        let mut dst = Vec::new();
        write_chunk_size(&mut dst, len);
        assert_eq!(dst, text.as_bytes());
    }
}

#[test]
fn only_announced_trailers_are_sent() {
    let announced = map(&[(TRAILER.as_str(), "x-sum, x-other")]);
    let trailers = map(&[("x-sum", "abc"), ("x-secret", "no")]);
    let mut dst = Vec::new();
    write_chunked_end(&mut dst, &announced, Some(&trailers));
    assert_eq!(dst, b"0\r\nx-sum: abc\r\n\r\n");
    let mut dst = Vec::new();
    write_chunked_end(&mut dst, &HeaderMap::new(), Some(&trailers));
    assert_eq!(dst, b"0\r\n\r\n");
}

#[test]
fn a_close_field_is_seen() {
    assert!(asks_close(&map(&[(
        CONNECTION.as_str(),
        "keep-alive, Close"
    )])));
    assert!(!asks_close(&map(&[(CONNECTION.as_str(), "keep-alive")])));
}
