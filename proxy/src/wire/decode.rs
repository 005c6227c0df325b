//! A response body taken out of its framing as its bytes arrive: the data of a
//! `Content-Length` body, of each chunk of a chunked one (sizes, extensions, CRLFs and
//! trailers checked by [`super::chunked::ChunkedRelay`] and dropped), or everything up to
//! the close. Each call hands out the data already buffered, split off the buffer without
//! a copy; nothing waits for the whole body.

use bytes::{Buf, Bytes, BytesMut};

use super::chunked::{ChunkRefusal, ChunkedRelay, Limits, Relay};
use super::response::Framing;

/// Why a body cannot be read to its end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DecodeError {
    /// The connection closed before the body's end.
    Incomplete,
    /// The chunked framing is refused.
    Chunk(ChunkRefusal),
}

/// What [`BodyDecoder::decode`] found in the buffer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decoded {
    /// Body data (never empty).
    Data(Bytes),
    /// Nothing more in the buffer: read on.
    More,
    /// The body has ended; what is left in the buffer is not its.
    End,
    /// The body cannot be read on.
    Failed(DecodeError),
}

/// The decoding state of one response body.
#[derive(Debug, Clone)]
pub enum BodyDecoder {
    /// This many bytes are left.
    Length(u64),
    /// A chunked body, its framing so far.
    Chunked(ChunkedRelay),
    /// Everything until the connection closes.
    UntilClose,
    /// At the end.
    Done,
}

impl BodyDecoder {
    /// The decoder for a body framed as `framing`.
    pub fn new(framing: Framing, limits: Limits) -> Self {
        match framing {
            Framing::Empty | Framing::Length(0) => Self::Done,
            Framing::Length(n) => Self::Length(n),
            Framing::Chunked => Self::Chunked(ChunkedRelay::new(limits)),
            Framing::UntilClose => Self::UntilClose,
        }
    }

    /// Whether the body has ended.
    pub fn is_done(&self) -> bool {
        matches!(self, Self::Done)
    }

    /// The bytes left, when the framing says so.
    pub fn remaining(&self) -> Option<u64> {
        match self {
            Self::Length(n) => Some(*n),
            Self::Done => Some(0),
            Self::Chunked(_) | Self::UntilClose => None,
        }
    }

    /// Takes the next data out of `buf` (see [`Decoded`]).
    pub fn decode(&mut self, buf: &mut BytesMut) -> Decoded {
        match self {
            Self::Done => Decoded::End,
            Self::Length(_) | Self::UntilClose if buf.is_empty() => Decoded::More,
            Self::Length(left) => {
                let n = usize::try_from(*left).unwrap_or(usize::MAX).min(buf.len());
                *left -= n as u64;
                if *left == 0 {
                    *self = Self::Done;
                }
                Decoded::Data(buf.split_to(n).freeze())
            }
            Self::UntilClose => Decoded::Data(buf.split().freeze()),
            Self::Chunked(relay) => loop {
                if buf.is_empty() {
                    return Decoded::More;
                }
                let left = relay.data_left();
                if left > 0 {
                    let n = usize::try_from(left).unwrap_or(usize::MAX).min(buf.len());
                    // Data bytes: the relay only counts them.
                    let _ = relay.feed(&buf[..n]);
                    return Decoded::Data(buf.split_to(n).freeze());
                }
                match relay.feed_framing(buf) {
                    Relay::Forward(n) => buf.advance(n),
                    Relay::End(n) => {
                        buf.advance(n);
                        *self = Self::Done;
                        return Decoded::End;
                    }
                    Relay::Refused(why) => return Decoded::Failed(DecodeError::Chunk(why)),
                }
            },
        }
    }

    /// The connection closed with `decode` wanting more: the end of a body that runs
    /// until the close, a cut body otherwise.
    pub fn closed(&mut self) -> Decoded {
        match self {
            Self::UntilClose | Self::Done => {
                *self = Self::Done;
                Decoded::End
            }
            Self::Length(_) | Self::Chunked(_) => Decoded::Failed(DecodeError::Incomplete),
        }
    }
}

#[cfg(test)]
mod tests;
