//! Content codings: reading the ones Refold may answer in (gzip, deflate, br, stacked),
//! bounded against decompression bombs, and writing the one a client prefers (br or gzip).
//!
//! Both directions work chunk by chunk on `std::io::Write` codecs (flate2, brotli), so a
//! body is decoded, scanned and re-encoded as it streams, without an async reader stack.
//! Decoded output goes to a sink that refuses to grow past its limit, so a bomb stops as
//! soon as it crosses the limit rather than after it has been inflated.

use std::io::{self, Write};

use bytes::Bytes;
use http::header::{ACCEPT_ENCODING, CONTENT_ENCODING};
use http::{HeaderMap, HeaderValue};

/// Input handed to a decoder at once: deflate expands at most ~1032x, so one piece never
/// inflates to more than a few megabytes before the sink's limit is checked again.
const DECODE_PIECE: usize = 4096;
/// gzip level for answers compressed on the fly: fast, most of the ratio on JSON.
const GZIP_LEVEL: u32 = 5;
/// brotli quality for answers compressed on the fly (11 is for static assets).
const BROTLI_QUALITY: u32 = 4;
/// brotli window (log2): 4 MiB, the usual choice for HTTP.
const BROTLI_WINDOW: u32 = 22;
/// The smallest brotli window brotli allows (log2): 1 KiB.
const BROTLI_MIN_WINDOW: u32 = 10;
/// brotli's internal buffer.
const BROTLI_BUFFER: usize = 4096;

/// A content coding the proxy reads (all three) or writes (gzip and br).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Coding {
    /// RFC 1952 gzip (also spelled `x-gzip`).
    Gzip,
    /// RFC 1950 zlib, which HTTP calls `deflate`.
    Deflate,
    /// RFC 7932 brotli.
    Br,
}

impl Coding {
    /// The `Content-Encoding` token.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Gzip => "gzip",
            Self::Deflate => "deflate",
            Self::Br => "br",
        }
    }
}

/// Why a body could not be decoded for the scan.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    /// `Content-Encoding` names a coding the proxy cannot read.
    #[error("unsupported content coding")]
    Unsupported,
    /// The decoded body grew past the limit (a decompression bomb, or just too big).
    #[error("decoded body larger than {0} bytes")]
    TooLarge(u64),
    /// The bytes are not what the coding says.
    #[error("corrupt compressed body")]
    Corrupt(#[source] io::Error),
}

/// The codings of `Content-Encoding`, in the order they were applied (`identity` left out).
pub fn content_codings(headers: &HeaderMap) -> Result<Vec<Coding>, DecodeError> {
    let mut codings = Vec::new();
    for value in headers.get_all(CONTENT_ENCODING) {
        let value = value.to_str().map_err(|_| DecodeError::Unsupported)?;
        for token in value.split(',').map(str::trim).filter(|t| !t.is_empty()) {
            let coding = if token.eq_ignore_ascii_case("identity") {
                continue;
            } else if token.eq_ignore_ascii_case("gzip") || token.eq_ignore_ascii_case("x-gzip") {
                Coding::Gzip
            } else if token.eq_ignore_ascii_case("deflate") {
                Coding::Deflate
            } else if token.eq_ignore_ascii_case("br") {
                Coding::Br
            } else {
                return Err(DecodeError::Unsupported);
            };
            codings.push(coding);
        }
    }
    Ok(codings)
}

/// The coding to compress an answer with for a client that sent `headers`: br when it
/// accepts br at least as much as gzip, else gzip, else none. q-values are honoured
/// (`q=0` refuses a coding), `*` stands for codings not named, `x-gzip` for gzip.
pub fn preferred(headers: &HeaderMap) -> Option<Coding> {
    preferred_in(headers.get_all(ACCEPT_ENCODING))
}

/// A client's `Accept-Encoding`, kept as it came and read only when an answer is large
/// enough to compress: most answers are not, and the parse would cost every request.
#[derive(Debug, Clone, Default)]
pub struct AcceptEncoding(Option<HeaderValue>);

impl AcceptEncoding {
    /// What `headers` accept (several `Accept-Encoding` lines are joined, as one list).
    pub fn of(headers: &HeaderMap) -> Self {
        let mut values = headers.get_all(ACCEPT_ENCODING).iter();
        let Some(first) = values.next() else {
            return Self(None);
        };
        let Some(second) = values.next() else {
            return Self(Some(first.clone()));
        };
        let mut joined = first.as_bytes().to_vec();
        for value in std::iter::once(second).chain(values) {
            joined.extend_from_slice(b", ");
            joined.extend_from_slice(value.as_bytes());
        }
        Self(HeaderValue::from_bytes(&joined).ok())
    }

    /// The coding to compress with, as [`preferred`] chooses it.
    pub fn preferred(&self) -> Option<Coding> {
        preferred_in(self.0.iter())
    }
}

fn preferred_in<'a>(values: impl IntoIterator<Item = &'a HeaderValue>) -> Option<Coding> {
    let (mut gzip, mut br, mut star) = (None, None, None);
    for value in values {
        let Ok(value) = value.to_str() else { continue };
        for item in value.split(',') {
            let mut parts = item.split(';');
            let name = parts.next().unwrap_or("").trim();
            let q = parts
                .filter_map(|p| p.trim().strip_prefix("q=").or(p.trim().strip_prefix("Q=")))
                .find_map(|q| q.trim().parse::<f32>().ok())
                .unwrap_or(1.0);
            let slot = if name.eq_ignore_ascii_case("gzip") || name.eq_ignore_ascii_case("x-gzip") {
                &mut gzip
            } else if name.eq_ignore_ascii_case("br") {
                &mut br
            } else if name == "*" {
                &mut star
            } else {
                continue;
            };
            *slot = Some(q);
        }
    }
    let gzip = gzip.or(star).unwrap_or(0.0);
    let br = br.or(star).unwrap_or(0.0);
    if br > 0.0 && br >= gzip {
        Some(Coding::Br)
    } else if gzip > 0.0 {
        Some(Coding::Gzip)
    } else {
        None
    }
}

/// Where decoded bytes land: refuses to grow past `limit` in all.
struct Sink {
    out: Vec<u8>,
    total: u64,
    limit: u64,
    over: bool,
}

impl Write for Sink {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.total += buf.len() as u64;
        if self.total > self.limit {
            self.over = true;
            return Err(io::Error::other("decoded body over the limit"));
        }
        self.out.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// One layer of a stack of decoders; the innermost is the sink.
enum Stage {
    Sink(Sink),
    Gzip(Box<flate2::write::GzDecoder<Stage>>),
    Deflate(Box<flate2::write::ZlibDecoder<Stage>>),
    Br(Box<brotli::DecompressorWriter<Stage>>),
}

impl Stage {
    fn sink(&mut self) -> &mut Sink {
        match self {
            Self::Sink(sink) => sink,
            Self::Gzip(d) => d.get_mut().sink(),
            Self::Deflate(d) => d.get_mut().sink(),
            Self::Br(d) => d.get_mut().sink(),
        }
    }

    /// Ends every layer, outermost first, so each hands its last bytes to the next.
    fn finish(&mut self) -> io::Result<()> {
        match self {
            Self::Sink(_) => Ok(()),
            Self::Gzip(d) => {
                d.try_finish()?;
                d.get_mut().finish()
            }
            Self::Deflate(d) => {
                d.try_finish()?;
                d.get_mut().finish()
            }
            Self::Br(d) => {
                d.close()?;
                d.get_mut().finish()
            }
        }
    }
}

impl Write for Stage {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Self::Sink(sink) => sink.write(buf),
            Self::Gzip(d) => d.write(buf),
            Self::Deflate(d) => d.write(buf),
            Self::Br(d) => d.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Self::Sink(sink) => sink.flush(),
            Self::Gzip(d) => d.flush(),
            Self::Deflate(d) => d.flush(),
            Self::Br(d) => d.flush(),
        }
    }
}

/// Decodes a body compressed with a stack of codings, chunk by chunk, refusing to produce
/// more than a limit in all.
pub struct Decoder {
    stage: Stage,
    limit: u64,
    /// Whether any input came: an empty body (a HEAD answer, a 204) decodes to nothing.
    started: bool,
}

impl std::fmt::Debug for Decoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Decoder")
            .field("limit", &self.limit)
            .finish_non_exhaustive()
    }
}

impl Decoder {
    /// A decoder for `codings` as `Content-Encoding` lists them (applied left to right),
    /// producing at most `limit` bytes.
    pub fn new(codings: &[Coding], limit: u64) -> Self {
        let sink = Stage::Sink(Sink {
            out: Vec::new(),
            total: 0,
            limit,
            over: false,
        });
        // The last coding applied is the first to undo: it wraps all the others.
        let stage = codings.iter().fold(sink, |inner, coding| match coding {
            Coding::Gzip => Stage::Gzip(Box::new(flate2::write::GzDecoder::new(inner))),
            Coding::Deflate => Stage::Deflate(Box::new(flate2::write::ZlibDecoder::new(inner))),
            Coding::Br => Stage::Br(Box::new(brotli::DecompressorWriter::new(
                inner,
                BROTLI_BUFFER,
            ))),
        });
        Self {
            stage,
            limit,
            started: false,
        }
    }

    /// The plain bytes `chunk` yields (possibly none yet).
    pub fn decode(&mut self, chunk: &[u8]) -> Result<Bytes, DecodeError> {
        if chunk.is_empty() {
            return Ok(Bytes::new());
        }
        self.started = true;
        let written = chunk
            .chunks(DECODE_PIECE)
            .try_for_each(|piece| self.stage.write_all(piece))
            .and_then(|()| self.stage.flush());
        self.settle(written)
    }

    /// The last plain bytes, once the compressed body has ended; an error if it ended early.
    pub fn finish(&mut self) -> Result<Bytes, DecodeError> {
        if !self.started {
            return Ok(Bytes::new());
        }
        let finished = self.stage.finish();
        self.settle(finished)
    }

    fn settle(&mut self, result: io::Result<()>) -> Result<Bytes, DecodeError> {
        let sink = self.stage.sink();
        match result {
            Ok(()) => Ok(Bytes::from(std::mem::take(&mut sink.out))),
            Err(_) if sink.over => Err(DecodeError::TooLarge(self.limit)),
            Err(e) => Err(DecodeError::Corrupt(e)),
        }
    }
}

/// Compresses a body toward the client, chunk by chunk.
pub struct Encoder {
    kind: Option<EncoderKind>,
}

enum EncoderKind {
    Gzip(flate2::write::GzEncoder<Vec<u8>>),
    Br(Box<brotli::CompressorWriter<Vec<u8>>>),
}

impl std::fmt::Debug for Encoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Encoder").finish_non_exhaustive()
    }
}

impl Encoder {
    /// An encoder writing `coding` (deflate is never chosen for clients: gzip is used).
    pub fn new(coding: Coding) -> Self {
        Self::with_window(coding, BROTLI_WINDOW)
    }

    /// An encoder whose brotli window is `2^window` bytes: a body known to be smaller
    /// needs no larger one, and brotli sets up its match tables for the whole window.
    fn with_window(coding: Coding, window: u32) -> Self {
        let kind = match coding {
            Coding::Br => EncoderKind::Br(Box::new(brotli::CompressorWriter::new(
                Vec::new(),
                BROTLI_BUFFER,
                BROTLI_QUALITY,
                window,
            ))),
            Coding::Gzip | Coding::Deflate => EncoderKind::Gzip(flate2::write::GzEncoder::new(
                Vec::new(),
                flate2::Compression::new(GZIP_LEVEL),
            )),
        };
        Self { kind: Some(kind) }
    }

    /// The compressed bytes for `chunk`, flushed so a streaming body keeps streaming.
    pub fn encode(&mut self, chunk: &[u8]) -> io::Result<Bytes> {
        self.write(chunk, true)
    }

    /// The compressed bytes for `chunk`, as much as the codec has ready (no flush: the
    /// best ratio when the whole body is at hand).
    pub fn encode_unflushed(&mut self, chunk: &[u8]) -> io::Result<Bytes> {
        self.write(chunk, false)
    }

    fn write(&mut self, chunk: &[u8], flush: bool) -> io::Result<Bytes> {
        let out = match self.kind.as_mut() {
            None => return Err(io::Error::other("encoder already finished")),
            Some(EncoderKind::Gzip(gz)) => {
                gz.write_all(chunk)?;
                if flush {
                    gz.flush()?;
                }
                gz.get_mut()
            }
            Some(EncoderKind::Br(br)) => {
                br.write_all(chunk)?;
                if flush {
                    br.flush()?;
                }
                br.get_mut()
            }
        };
        Ok(Bytes::from(std::mem::take(out)))
    }

    /// The end of the compressed stream.
    pub fn finish(&mut self) -> io::Result<Bytes> {
        match self.kind.take() {
            None => Ok(Bytes::new()),
            Some(EncoderKind::Gzip(gz)) => gz.finish().map(Bytes::from),
            Some(EncoderKind::Br(br)) => Ok(Bytes::from(br.into_inner())),
        }
    }

    /// `body` compressed whole.
    pub fn compress(coding: Coding, body: &[u8]) -> io::Result<Bytes> {
        let mut encoder = Self::with_window(coding, window_for(body.len()));
        let head = encoder.encode_unflushed(body)?;
        let tail = encoder.finish()?;
        if head.is_empty() {
            return Ok(tail);
        }
        let mut whole = Vec::with_capacity(head.len() + tail.len());
        whole.extend_from_slice(&head);
        whole.extend_from_slice(&tail);
        Ok(Bytes::from(whole))
    }
}

/// The brotli window (log2) for a body of `len` bytes: just large enough to hold it,
/// between brotli's smallest and the streaming window.
fn window_for(len: usize) -> u32 {
    let bits = usize::BITS - len.saturating_sub(1).leading_zeros();
    bits.clamp(BROTLI_MIN_WINDOW, BROTLI_WINDOW)
}

#[cfg(test)]
mod tests {
    use std::io::Read;

    use http::HeaderValue;

    use super::*;

    fn headers(name: http::HeaderName, values: &[&'static str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for v in values {
            h.append(name.clone(), HeaderValue::from_static(v));
        }
        h
    }

    fn decode_all(codings: &[Coding], body: &[u8], limit: u64) -> Result<Vec<u8>, DecodeError> {
        let mut decoder = Decoder::new(codings, limit);
        let mut out = Vec::new();
        for chunk in body.chunks(7) {
            out.extend_from_slice(&decoder.decode(chunk)?);
        }
        out.extend_from_slice(&decoder.finish()?);
        Ok(out)
    }

    #[test]
    fn content_codings_are_listed_in_order_and_unknown_ones_refused() {
        let of = |v: &[&'static str]| content_codings(&headers(CONTENT_ENCODING, v));
        assert_eq!(of(&[]).unwrap(), vec![]);
        assert_eq!(of(&["identity"]).unwrap(), vec![]);
        assert_eq!(of(&["GZIP"]).unwrap(), vec![Coding::Gzip]);
        assert_eq!(
            of(&["gzip, br", "x-gzip"]).unwrap(),
            vec![Coding::Gzip, Coding::Br, Coding::Gzip]
        );
        assert!(matches!(of(&["compress"]), Err(DecodeError::Unsupported)));
        assert!(matches!(of(&["gzip, zstd"]), Err(DecodeError::Unsupported)));
    }

    #[test]
    fn a_kept_accept_encoding_chooses_as_the_headers_do() {
        let lists: [&[&'static str]; 7] = [
            &[],
            &["gzip, deflate, br"],
            &["br;q=0", "gzip; q=0.1"],
            &["gzip;q=0", "br"],
            &["*;q=0.5", "br;q=0"],
            &["deflate", "identity"],
            &["x-gzip", "*;q=0"],
        ];
        for list in lists {
            let h = headers(ACCEPT_ENCODING, list);
            assert_eq!(
                AcceptEncoding::of(&h).preferred(),
                preferred(&h),
                "{list:?}"
            );
        }
        assert_eq!(
            AcceptEncoding::of(&headers(ACCEPT_ENCODING, &["br;q=0", "gzip"])).preferred(),
            Some(Coding::Gzip)
        );
    }

    #[test]
    fn the_client_preference_follows_q_values_and_favours_br() {
        let of = |v: &[&'static str]| preferred(&headers(ACCEPT_ENCODING, v));
        assert_eq!(of(&[]), None);
        assert_eq!(of(&["gzip, deflate, br"]), Some(Coding::Br));
        assert_eq!(of(&["gzip"]), Some(Coding::Gzip));
        assert_eq!(of(&["gzip;q=1.0, br;q=0.5"]), Some(Coding::Gzip));
        assert_eq!(of(&["br;q=0", "gzip; q=0.1"]), Some(Coding::Gzip));
        assert_eq!(of(&["*"]), Some(Coding::Br));
        assert_eq!(of(&["*;q=0.5, br;q=0"]), Some(Coding::Gzip));
        assert_eq!(of(&["gzip;q=0, br;q=0"]), None);
        assert_eq!(of(&["deflate, identity"]), None);
        assert_eq!(of(&["x-gzip"]), Some(Coding::Gzip));
    }

    #[test]
    fn stacked_codings_decode_back_to_the_plain_bytes() {
        let plain = b"{\"a\":\"plain json\"}".repeat(200);
        let gz = Encoder::compress(Coding::Gzip, &plain).unwrap();
        let gz_br = Encoder::compress(Coding::Br, &gz).unwrap();
        let decoded = decode_all(&[Coding::Gzip, Coding::Br], &gz_br, 1 << 20).unwrap();
        assert_eq!(decoded, plain);
        let mut zlib = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::fast());
        zlib.write_all(&plain).unwrap();
        let zlib = zlib.finish().unwrap();
        assert_eq!(
            decode_all(&[Coding::Deflate], &zlib, 1 << 20).unwrap(),
            plain
        );
        // Nothing in, nothing out, even for a coding with a header.
        assert!(decode_all(&[Coding::Gzip], b"", 10).unwrap().is_empty());
    }

    #[test]
    fn a_bomb_stops_at_the_limit_and_garbage_is_corrupt() {
        let bomb = Encoder::compress(Coding::Gzip, &vec![b'a'; 4 << 20]).unwrap();
        assert!(bomb.len() < 64 << 10);
        assert!(matches!(
            decode_all(&[Coding::Gzip], &bomb, 1 << 20),
            Err(DecodeError::TooLarge(_))
        ));
        assert_eq!(
            decode_all(&[Coding::Gzip], &bomb, 4 << 20).unwrap().len(),
            4 << 20
        );
        assert!(matches!(
            decode_all(&[Coding::Gzip], b"not gzip at all, no", 1 << 20),
            Err(DecodeError::Corrupt(_))
        ));
        // Cut short: the end never came.
        assert!(decode_all(&[Coding::Gzip], &bomb[..bomb.len() / 2], 8 << 20).is_err());
    }

    #[test]
    fn streaming_encoders_produce_what_standard_decoders_read() {
        let plain = b"{\"k\":\"v\"}".repeat(1000);
        for coding in [Coding::Gzip, Coding::Br] {
            let mut encoder = Encoder::new(coding);
            let mut wire = Vec::new();
            for chunk in plain.chunks(1000) {
                wire.extend_from_slice(&encoder.encode(chunk).unwrap());
            }
            wire.extend_from_slice(&encoder.finish().unwrap());
            let mut back = Vec::new();
            match coding {
                Coding::Gzip => flate2::read::GzDecoder::new(wire.as_slice())
                    .read_to_end(&mut back)
                    .unwrap(),
                _ => brotli::Decompressor::new(wire.as_slice(), 4096)
                    .read_to_end(&mut back)
                    .unwrap(),
            };
            assert_eq!(back, plain, "{coding:?}");
        }
    }

    #[test]
    fn whole_bodies_round_trip_with_a_window_fitted_to_their_size() {
        assert_eq!(window_for(0), BROTLI_MIN_WINDOW);
        assert_eq!(window_for(1024), 10);
        assert_eq!(window_for(1025), 11);
        assert_eq!(window_for(64 * 1024), 16);
        assert_eq!(window_for(usize::MAX), BROTLI_WINDOW);
        // Sizes at and around each power of two, so every window size is read back.
        let sizes = (9..=17).flat_map(|bits: u32| {
            let p = 1usize << bits;
            [p - 1, p, p + 1]
        });
        for len in sizes {
            let plain: Vec<u8> = (0..len)
                .map(|i| b"{\"k\":\"v\",}"[i % 10] ^ (i / 97) as u8)
                .collect();
            let wire = Encoder::compress(Coding::Br, &plain).unwrap();
            let mut back = Vec::new();
            brotli::Decompressor::new(wire.as_ref(), 4096)
                .read_to_end(&mut back)
                .unwrap();
            assert_eq!(back, plain, "{len} bytes");
        }
    }
}
