//! A chunked request body relayed as it arrives: validated byte by byte (sizes,
//! extensions, CRLFs, trailers) and passed on unchanged, framing bytes included, so the
//! upstream reads the very chunks the client sent and nothing is re-chunked or copied.
//!
//! [`ChunkedRelay::feed`] takes whatever slice the socket gave and says how much of it
//! belongs to the body: all of it ([`Relay::Forward`]), the first `n` bytes, after which
//! the body (trailers and final CRLF included) has ended and the rest is the next
//! request ([`Relay::End`]), or that the body is refused ([`Relay::Refused`]). The state
//! lives in the relay, not in a buffer, so any split of the body gives the same answer.
//! On a refusal some of the body may already be forwarded: the caller drops both
//! connections, as hyper's path does when a body fails mid-way.
//!
//! The grammar is hyper's chunked decoder's (hex digits, any number of leading zeros,
//! blanks before `;` or the CR, trailers as header fields), stricter in three places:
//! an extension may hold only tab and visible ASCII or space (hyper takes any byte but
//! LF); a trailer line must end in CRLF and be a field httparse would read (no bare LF,
//! no folding); each size line and the trailer section are held to [`Limits`].

/// The limits a chunked body's framing is held to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Longest chunk-size line (digits, blanks, extensions), CRLF not counted.
    pub max_line_bytes: usize,
    /// Most bytes in the trailer section, its final CRLF included.
    pub max_trailer_bytes: usize,
    /// Most trailer fields (hyper's default limit on fields: 100).
    pub max_trailer_fields: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_line_bytes: 4096,
            max_trailer_bytes: 16 * 1024,
            max_trailer_fields: 100,
        }
    }
}

/// Why a chunked body is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChunkRefusal {
    /// A chunk size missing or with a byte that is not a hex digit where one must be.
    InvalidSize,
    /// A chunk size beyond 64 bits.
    SizeOverflow,
    /// A chunk extension with a control byte (a bare LF among them) or non-ASCII.
    BadExtension,
    /// A chunk-size line longer than [`Limits::max_line_bytes`].
    LineTooLong,
    /// A CR not followed by LF, or chunk data not followed by CRLF.
    MissingCrlf,
    /// A trailer line that is not a header field ended by CRLF.
    BadTrailer,
    /// Trailers beyond [`Limits::max_trailer_bytes`] or [`Limits::max_trailer_fields`].
    TrailersTooLarge,
}

impl ChunkRefusal {
    /// What the proxy says when it can still answer (the body was refused early).
    pub fn reason(self) -> &'static str {
        match self {
            Self::InvalidSize => "invalid chunk size",
            Self::SizeOverflow => "chunk size too large",
            Self::BadExtension => "invalid chunk extension",
            Self::LineTooLong => "chunk size line too long",
            Self::MissingCrlf => "missing CRLF in chunked body",
            Self::BadTrailer => "invalid trailer",
            Self::TrailersTooLarge => "trailers too large",
        }
    }
}

/// What [`ChunkedRelay::feed`] says about a slice.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Relay {
    /// The whole slice is body: pass it on, and feed the next bytes read.
    Forward(usize),
    /// The first `n` bytes of the slice end the body: pass them on; what follows them
    /// is not the body's.
    End(usize),
    /// The body is refused at byte [`ChunkedRelay::position`] of it.
    Refused(ChunkRefusal),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// In a chunk-size's hex digits (none yet when `digits` is 0).
    Size,
    /// Blanks after the size.
    SizeBlank,
    /// In a chunk extension, up to the CR.
    Extension,
    /// After the size line's CR.
    SizeLf,
    /// This many data bytes left in the chunk.
    Data(u64),
    /// After a chunk's data: its CR, then its LF.
    DataCr,
    DataLf,
    /// At the start of a trailer line (or of the final empty line).
    TrailerStart,
    TrailerName,
    TrailerValue,
    TrailerLf,
    /// After the final empty line's CR.
    EndLf,
    Done,
    Failed(ChunkRefusal),
}

/// The relay of one chunked body; see the module docs.
#[derive(Debug, Clone)]
pub struct ChunkedRelay {
    limits: Limits,
    state: State,
    size: u64,
    digits: usize,
    line: usize,
    trailer_bytes: usize,
    trailer_fields: usize,
    position: u64,
    data: u64,
}

impl ChunkedRelay {
    /// A relay at the start of a chunked body.
    pub fn new(limits: Limits) -> Self {
        Self {
            limits,
            state: State::Size,
            size: 0,
            digits: 0,
            line: 0,
            trailer_bytes: 0,
            trailer_fields: 0,
            position: 0,
            data: 0,
        }
    }

    /// The body's bytes accepted so far (framing included); at a refusal, the offset of
    /// the byte refused.
    pub fn position(&self) -> u64 {
        self.position
    }

    /// The chunk data bytes seen so far (framing not counted), for a body size limit.
    pub fn data_bytes(&self) -> u64 {
        self.data
    }

    /// The data bytes left in the chunk being read (0 outside chunk data): how much the
    /// caller may pass on without looking at it.
    pub fn data_left(&self) -> u64 {
        match self.state {
            State::Data(left) => left,
            _ => 0,
        }
    }

    /// Whether the body has ended.
    pub fn is_done(&self) -> bool {
        self.state == State::Done
    }

    /// Reads the next bytes of the stream; see [`Relay`]. After the end it answers
    /// `End(0)`, after a refusal the same refusal.
    pub fn feed(&mut self, input: &[u8]) -> Relay {
        self.advance(input, true)
    }

    /// Reads framing bytes only, for a caller that decodes the body rather than relays
    /// it: stops where chunk data begins ([`Self::data_left`] is then above 0), so the
    /// caller takes the data itself and feeds it with [`Self::feed`]. Answers as `feed`
    /// does, `Forward(n)` with `n` the framing bytes read (fewer than the slice when data
    /// begins).
    pub fn feed_framing(&mut self, input: &[u8]) -> Relay {
        self.advance(input, false)
    }

    /// [`Self::feed`] (`through_data`: chunk data is passed over too) or
    /// [`Self::feed_framing`] (it stops where chunk data begins).
    fn advance(&mut self, input: &[u8], through_data: bool) -> Relay {
        let mut at = 0;
        while at < input.len() {
            match self.state {
                State::Done => return Relay::End(at),
                State::Failed(why) => return Relay::Refused(why),
                State::Data(_) if !through_data => return Relay::Forward(at),
                State::Data(left) => {
                    let k = usize::try_from(left)
                        .unwrap_or(usize::MAX)
                        .min(input.len() - at);
                    at += k;
                    self.position += k as u64;
                    self.data += k as u64;
                    let left = left - k as u64;
                    self.state = if left == 0 {
                        State::DataCr
                    } else {
                        State::Data(left)
                    };
                }
                _ => {
                    let next = self.step(input[at]);
                    self.state = next;
                    if let State::Failed(why) = next {
                        return Relay::Refused(why);
                    }
                    at += 1;
                    self.position += 1;
                }
            }
        }
        match self.state {
            State::Done => Relay::End(at),
            State::Failed(why) => Relay::Refused(why),
            _ => Relay::Forward(at),
        }
    }

    /// The state after `byte` in any state but data, done or failed.
    fn step(&mut self, byte: u8) -> State {
        use ChunkRefusal as R;
        let fail = State::Failed;
        match self.state {
            State::Size | State::SizeBlank | State::Extension if byte != b'\r' => {
                self.line += 1;
                if self.line > self.limits.max_line_bytes {
                    return fail(R::LineTooLong);
                }
            }
            State::TrailerStart
            | State::TrailerName
            | State::TrailerValue
            | State::TrailerLf
            | State::EndLf => {
                self.trailer_bytes += 1;
                if self.trailer_bytes > self.limits.max_trailer_bytes {
                    return fail(R::TrailersTooLarge);
                }
            }
            _ => {}
        }
        match self.state {
            State::Size => match (hex(byte), byte) {
                (Some(digit), _) => {
                    let Some(size) = self.size.checked_mul(16) else {
                        return fail(R::SizeOverflow);
                    };
                    self.size = size | u64::from(digit);
                    self.digits += 1;
                    State::Size
                }
                (None, _) if self.digits == 0 => fail(R::InvalidSize),
                (None, b' ' | b'\t') => State::SizeBlank,
                (None, b';') => State::Extension,
                (None, b'\r') => State::SizeLf,
                (None, _) => fail(R::InvalidSize),
            },
            State::SizeBlank => match byte {
                b' ' | b'\t' => State::SizeBlank,
                b';' => State::Extension,
                b'\r' => State::SizeLf,
                _ => fail(R::InvalidSize),
            },
            State::Extension => match byte {
                b'\r' => State::SizeLf,
                b'\t' | 0x20..=0x7e => State::Extension,
                _ => fail(R::BadExtension),
            },
            State::SizeLf => match byte {
                b'\n' => {
                    let size = std::mem::take(&mut self.size);
                    self.digits = 0;
                    self.line = 0;
                    if size == 0 {
                        State::TrailerStart
                    } else {
                        State::Data(size)
                    }
                }
                _ => fail(R::MissingCrlf),
            },
            State::DataCr => match byte {
                b'\r' => State::DataLf,
                _ => fail(R::MissingCrlf),
            },
            State::DataLf => match byte {
                b'\n' => State::Size,
                _ => fail(R::MissingCrlf),
            },
            State::TrailerStart => match byte {
                b'\r' => State::EndLf,
                _ if tchar(byte) => {
                    self.trailer_fields += 1;
                    if self.trailer_fields > self.limits.max_trailer_fields {
                        return fail(R::TrailersTooLarge);
                    }
                    State::TrailerName
                }
                _ => fail(R::BadTrailer),
            },
            State::TrailerName => match byte {
                b':' => State::TrailerValue,
                _ if tchar(byte) => State::TrailerName,
                _ => fail(R::BadTrailer),
            },
            State::TrailerValue => match byte {
                b'\r' => State::TrailerLf,
                b'\t' | 0x20..=0x7e | 0x80..=0xff => State::TrailerValue,
                _ => fail(R::BadTrailer),
            },
            State::TrailerLf => match byte {
                b'\n' => State::TrailerStart,
                _ => fail(R::BadTrailer),
            },
            State::EndLf => match byte {
                b'\n' => State::Done,
                _ => fail(R::MissingCrlf),
            },
            State::Data(_) | State::Done | State::Failed(_) => self.state,
        }
    }
}

fn hex(byte: u8) -> Option<u8> {
    match byte {
        b'0'..=b'9' => Some(byte - b'0'),
        b'a'..=b'f' => Some(byte - b'a' + 10),
        b'A'..=b'F' => Some(byte - b'A' + 10),
        _ => None,
    }
}

/// A token character (RFC 9110 §5.6.2), what httparse takes in a field name.
fn tchar(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&byte)
}

#[cfg(test)]
mod tests;
