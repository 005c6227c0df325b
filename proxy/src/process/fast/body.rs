//! What the HTTP/1.1 loop has read of a connection ([`Inbound`]: the read half, the
//! bytes read but not yet used, and where the current request's body is in its framing)
//! and that body as the request path reads it ([`FastBody`]). The framing is decoded by
//! [`BodyDecoder`] (shared with the upstream client): the body's bytes are slices of the
//! read buffer, never copied.
//!
//! The body and the loop share the [`Inbound`] (the body is read while the request runs;
//! the next head after it): each takes the lock for one poll, never across an await.
//! The decoder lives in the inbound, not in the body, so the loop can finish a body the
//! request path left unread (refused before it was needed): what of it is already
//! buffered is skipped, as hyper skips it, and the connection goes on; a body not all
//! there, or broken, closes the connection after the response, so its bytes are never
//! taken for a head.

use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll};

use bytes::{Bytes, BytesMut};
use http_body::{Body, Frame, SizeHint};

use super::io::ReadSide;
use crate::wire::chunked::Limits as ChunkLimits;
use crate::wire::decode::{BodyDecoder, DecodeError, Decoded};
use crate::wire::head::Framing;

/// How much the read buffer grows by when it is full.
const READ_CHUNK: usize = 8 * 1024;

/// The read half of a connection, the bytes read from it that nobody has used yet, and
/// the current request's body.
#[derive(Debug)]
pub(super) struct Inbound {
    /// `None` once the connection has been handed to hyper.
    pub(super) reader: Option<ReadSide>,
    pub(super) buf: BytesMut,
    /// The peer closed its side (or the read failed): no more bytes will come.
    pub(super) eof: bool,
    /// The current request's number on the connection.
    number: u64,
    /// Its body's framing so far; `None` once the body broke.
    body: Option<BodyDecoder>,
}

/// An [`Inbound`] shared by the loop and the body being read.
pub(super) type SharedInbound = Arc<Mutex<Inbound>>;

impl Inbound {
    pub(super) fn new(reader: ReadSide, buf: BytesMut) -> SharedInbound {
        Arc::new(Mutex::new(Self {
            reader: Some(reader),
            buf,
            eof: false,
            number: 0,
            body: Some(BodyDecoder::Done),
        }))
    }

    /// Reads what the socket has into the buffer: `Ready(n)` bytes read, 0 at the end
    /// of the stream (or a failed read: the connection cannot go on either way).
    pub(super) fn poll_fill(&mut self, cx: &mut Context<'_>) -> Poll<usize> {
        fill(&mut self.reader, &mut self.buf, &mut self.eof, cx)
    }

    /// Request `number`'s body follows the head just taken off the buffer.
    pub(super) fn begin(&mut self, number: u64, framing: Framing, limits: ChunkLimits) {
        self.number = number;
        self.body = Some(BodyDecoder::new(framing.into(), limits));
    }

    /// Finishes the current body with what is already buffered (none of it is used):
    /// whether it has ended, so the bytes after it are the next request's.
    pub(super) fn skip_body(&mut self) -> bool {
        let Some(body) = self.body.as_mut() else {
            return false;
        };
        loop {
            match body.decode(&mut self.buf) {
                Decoded::Data(_) => {}
                Decoded::End => return true,
                Decoded::More => return false,
                Decoded::Failed(_) => {
                    self.body = None;
                    return false;
                }
            }
        }
    }
}

/// [`Inbound::poll_fill`] on the inbound's parts, so a caller may hold its decoder.
fn fill(
    reader: &mut Option<ReadSide>,
    buf: &mut BytesMut,
    eof: &mut bool,
    cx: &mut Context<'_>,
) -> Poll<usize> {
    let (false, Some(reader)) = (*eof, reader.as_mut()) else {
        return Poll::Ready(0);
    };
    if buf.capacity() - buf.len() < READ_CHUNK / 2 {
        buf.reserve(READ_CHUNK);
    }
    match tokio_util::io::poll_read_buf(Pin::new(reader), cx, buf) {
        Poll::Pending => Poll::Pending,
        Poll::Ready(Ok(n)) => {
            if n == 0 {
                *eof = true;
            }
            Poll::Ready(n)
        }
        Poll::Ready(Err(e)) => {
            tracing::debug!(error = %e, "reading a public connection failed");
            *eof = true;
            Poll::Ready(0)
        }
    }
}

/// The lock, whatever a panicking holder left (the buffer is still whole bytes).
pub(super) fn lock(inbound: &SharedInbound) -> MutexGuard<'_, Inbound> {
    inbound.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A request body as the connection delimits it.
#[derive(Debug)]
pub(crate) struct FastBody {
    inbound: SharedInbound,
    /// The request's number on its connection: a body outlived by its request reads
    /// nothing of the next one's.
    number: u64,
    /// What is known of the bytes left: exactly this many, or `None` (chunked).
    remaining: Option<u64>,
    /// Read to its end, or broken: nothing more comes.
    over: bool,
}

/// Why a request body stopped before its end.
#[derive(Debug, thiserror::Error)]
pub(crate) enum BodyError {
    #[error("the connection closed before the request body's end")]
    Closed,
    #[error("chunked request body refused: {0}")]
    Chunk(&'static str),
}

impl From<BodyError> for io::Error {
    fn from(e: BodyError) -> Self {
        let kind = match e {
            BodyError::Closed => io::ErrorKind::UnexpectedEof,
            BodyError::Chunk(_) => io::ErrorKind::InvalidData,
        };
        io::Error::new(kind, e)
    }
}

impl FastBody {
    /// The body of request `number` (begun on the inbound), framed by `framing`.
    pub(super) fn new(inbound: SharedInbound, number: u64, framing: Framing) -> Self {
        let remaining = match framing {
            Framing::Empty => Some(0),
            Framing::Length(n) => Some(n),
            Framing::Chunked => None,
        };
        Self {
            inbound,
            number,
            remaining,
            over: remaining == Some(0),
        }
    }

    fn poll_data(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Bytes, BodyError>>> {
        if self.over {
            return Poll::Ready(None);
        }
        let mut guard = lock(&self.inbound);
        let Inbound {
            reader,
            buf,
            eof,
            number,
            body,
        } = &mut *guard;
        let decoder = match body.as_mut() {
            Some(decoder) if *number == self.number => decoder,
            _ => {
                self.over = true;
                return Poll::Ready(Some(Err(BodyError::Closed)));
            }
        };
        let failed = loop {
            match decoder.decode(buf) {
                Decoded::Data(data) => {
                    self.remaining = decoder.remaining();
                    return Poll::Ready(Some(Ok(data)));
                }
                Decoded::End => {
                    self.over = true;
                    self.remaining = Some(0);
                    return Poll::Ready(None);
                }
                Decoded::Failed(DecodeError::Chunk(why)) => break BodyError::Chunk(why.reason()),
                Decoded::Failed(DecodeError::Incomplete) => break BodyError::Closed,
                Decoded::More => match fill(reader, buf, eof, cx) {
                    Poll::Pending => return Poll::Pending,
                    Poll::Ready(0) => break BodyError::Closed,
                    Poll::Ready(_) => {}
                },
            }
        };
        *body = None;
        self.over = true;
        Poll::Ready(Some(Err(failed)))
    }
}

impl Body for FastBody {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        match self.get_mut().poll_data(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Ready(Some(Ok(data))) => Poll::Ready(Some(Ok(Frame::data(data)))),
            Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(e.into()))),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.over || self.remaining == Some(0)
    }

    fn size_hint(&self) -> SizeHint {
        match self.remaining {
            Some(n) => SizeHint::with_exact(n),
            None => SizeHint::default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;
    use tokio::io::AsyncWriteExt;
    use tokio::net::{TcpListener, TcpStream};

    use super::*;

    /// What reading one body off a socket gave: its data (or the error), the bytes
    /// after it (already buffered or still on the socket), and whether the inbound saw
    /// the body end.
    #[derive(Debug, PartialEq, Eq)]
    struct Read {
        data: Result<Vec<u8>, io::ErrorKind>,
        after: Vec<u8>,
        finished: bool,
    }

    /// Writes `wire` to a socket in pieces cut at `cuts`, and reads one body framed by
    /// `framing` off the other end, as request number 7 of its connection.
    fn read_body(wire: &[u8], cuts: &[usize], framing: Framing) -> Read {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async {
            let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
            let mut client = TcpStream::connect(listener.local_addr().unwrap())
                .await
                .unwrap();
            client.set_nodelay(true).unwrap();
            let (server, _) = listener.accept().await.unwrap();
            let (reader, _writer) = server.into_split();
            let inbound = Inbound::new(ReadSide::Plain(reader), BytesMut::new());
            let mut pieces = Vec::new();
            let mut at = 0;
            for &cut in cuts {
                let cut = cut.clamp(at, wire.len());
                pieces.push(wire[at..cut].to_vec());
                at = cut;
            }
            pieces.push(wire[at..].to_vec());
            let writer = tokio::spawn(async move {
                for piece in pieces {
                    client.write_all(&piece).await.unwrap();
                    client.flush().await.unwrap();
                    // Apart: the reader sees each piece on its own when it can.
                    tokio::task::yield_now().await;
                }
                client.shutdown().await.unwrap();
            });
            lock(&inbound).begin(7, framing, ChunkLimits::default());
            let mut body = FastBody::new(Arc::clone(&inbound), 7, framing);
            let mut data = Vec::new();
            let data = loop {
                match std::future::poll_fn(|cx| Pin::new(&mut body).poll_frame(cx)).await {
                    None => break Ok(data),
                    Some(Ok(frame)) => data.extend_from_slice(frame.data_ref().unwrap()),
                    Some(Err(e)) => break Err(e.kind()),
                }
            };
            writer.await.unwrap();
            let finished = lock(&inbound).skip_body();
            while std::future::poll_fn(|cx| lock(&inbound).poll_fill(cx)).await > 0 {}
            let after = lock(&inbound).buf.split().to_vec();
            Read {
                data,
                after,
                finished,
            }
        })
    }

    /// A chunked body of `chunks` (extensions from a fixed set) and its data.
    fn chunked(chunks: &[(Vec<u8>, usize)], trailers: bool) -> (Vec<u8>, Vec<u8>) {
        const EXTENSIONS: [&str; 3] = ["", ";a=b", " ;q=\"x y\""];
        let mut wire = Vec::new();
        let mut data = Vec::new();
        for (chunk, ext) in chunks {
            wire.extend_from_slice(
                format!("{:X}{}\r\n", chunk.len(), EXTENSIONS[ext % 3]).as_bytes(),
            );
            wire.extend_from_slice(chunk);
            wire.extend_from_slice(b"\r\n");
            data.extend_from_slice(chunk);
        }
        wire.extend_from_slice(b"0\r\n");
        if trailers {
            wire.extend_from_slice(b"x-trailer: 1\r\n");
        }
        wire.extend_from_slice(b"\r\n");
        (wire, data)
    }

    const NEXT: &[u8] = b"GET /next HTTP/1.1\r\nhost: x\r\n\r\n";

    proptest! {
        #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

        #[test]
        fn a_chunked_body_split_anywhere_gives_its_data_and_leaves_the_next_request(
            chunks in prop::collection::vec((prop::collection::vec(any::<u8>(), 1..300), 0usize..3), 0..6),
            trailers in any::<bool>(),
            cuts in prop::collection::vec(any::<prop::sample::Index>(), 0..8),
        ) {
            let (mut wire, data) = chunked(&chunks, trailers);
            wire.extend_from_slice(NEXT);
            let mut cuts: Vec<usize> = cuts.iter().map(|i| i.index(wire.len() + 1)).collect();
            cuts.sort_unstable();
            let read = read_body(&wire, &cuts, Framing::Chunked);
            prop_assert_eq!(read, Read { data: Ok(data), after: NEXT.to_vec(), finished: true });
        }

        #[test]
        fn a_length_body_split_anywhere_gives_its_bytes_and_leaves_the_next_request(
            body in prop::collection::vec(any::<u8>(), 1..2000),
            cuts in prop::collection::vec(any::<prop::sample::Index>(), 0..8),
        ) {
            let mut wire = body.clone();
            wire.extend_from_slice(NEXT);
            let mut cuts: Vec<usize> = cuts.iter().map(|i| i.index(wire.len() + 1)).collect();
            cuts.sort_unstable();
            let read = read_body(&wire, &cuts, Framing::Length(body.len() as u64));
            prop_assert_eq!(read, Read { data: Ok(body), after: NEXT.to_vec(), finished: true });
        }
    }

    #[test]
    fn a_body_cut_short_or_misframed_is_an_error_and_never_finished() {
        let short = read_body(b"0123", &[2], Framing::Length(10));
        assert_eq!(short.data, Err(io::ErrorKind::UnexpectedEof));
        assert!(!short.finished);
        let bad_size = read_body(b"5\r\nhello\r\nzz\r\n", &[], Framing::Chunked);
        assert_eq!(bad_size.data, Err(io::ErrorKind::InvalidData));
        assert!(!bad_size.finished);
        let unterminated = read_body(b"5\r\nhello\r\n", &[4], Framing::Chunked);
        assert_eq!(unterminated.data, Err(io::ErrorKind::UnexpectedEof));
        assert!(!unterminated.finished);
    }
}
