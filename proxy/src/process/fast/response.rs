//! A response written to an HTTP/1.1 client: the head into a reused buffer, then the
//! body framed by its length or chunked, as hyper's server frames it (its
//! `Server::encode`), so a client sees the same framing from either path:
//! - a body that ends at once: `content-length: 0` (kept as sent for `HEAD`);
//! - a `Content-Length` field, or an exact size: that length;
//! - a `Transfer-Encoding` field, or an unknown size: chunked;
//! - no body bytes for `HEAD`, 1xx, 204 and 304, whatever the fields say;
//! - a `date` field unless the response has one; `connection: close` on the last
//!   response of a connection.
//!
//! Small bodies go out with their head in one write: frames already there are gathered
//! into the buffer, and it is written when the body has nothing more at once.

use std::future::poll_fn;
use std::io::{self, Write as _};
use std::pin::Pin;
use std::task::Poll;

use bytes::Bytes;
use http::header::{CONNECTION, CONTENT_LENGTH, DATE, TRANSFER_ENCODING};
use http::{Method, Response, StatusCode};
use http_body::Body;
use tokio::io::{AsyncWrite, AsyncWriteExt};

use crate::{BoxError, ProxyBody};

/// Bytes gathered before the buffer is written even though the body has more at once.
const GATHER_LIMIT: usize = 64 * 1024;

/// How the body after the head is framed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Framing {
    /// No body bytes (or none may be sent).
    Empty,
    /// Exactly this many bytes.
    Length(u64),
    Chunked,
}

/// Why a response could not be written whole.
#[derive(Debug, thiserror::Error)]
pub(super) enum WriteError {
    /// The client went away.
    #[error("writing to the client failed: {0}")]
    Io(#[from] io::Error),
    /// The body failed, or gave other than its length: the client saw a broken response.
    #[error("the response body failed: {0}")]
    Body(BoxError),
}

/// Writes `response` to the request with `method`, `close` saying whether it is the
/// connection's last. `out` is the connection's reused buffer.
pub(super) async fn write_response<W: AsyncWrite + Unpin>(
    writer: &mut W,
    out: &mut Vec<u8>,
    response: Response<ProxyBody>,
    method: &Method,
    close: bool,
) -> Result<(), WriteError> {
    let (parts, mut body) = response.into_parts();
    out.clear();
    let framing = write_head(out, parts.status, &parts.headers, &body, method, close);
    match framing {
        Framing::Empty => {
            writer.write_all(out).await?;
            writer.flush().await?;
            Ok(())
        }
        Framing::Length(length) => write_body(writer, out, &mut body, Some(length)).await,
        Framing::Chunked => write_body(writer, out, &mut body, None).await,
    }
}

/// The status line and fields; returns the body's framing.
fn write_head(
    out: &mut Vec<u8>,
    status: StatusCode,
    headers: &http::HeaderMap,
    body: &ProxyBody,
    method: &Method,
    close: bool,
) -> Framing {
    if status == StatusCode::OK {
        out.extend_from_slice(b"HTTP/1.1 200 OK\r\n");
    } else {
        out.extend_from_slice(b"HTTP/1.1 ");
        out.extend_from_slice(status.as_str().as_bytes());
        out.push(b' ');
        out.extend_from_slice(status.canonical_reason().unwrap_or("<none>").as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    let head = *method == Method::HEAD;
    let bodiless = status.is_informational()
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED;
    let ends_at_once = body.is_end_stream();
    let mut framing = None;
    let mut wrote_connection = false;
    let mut wrote_date = false;
    for (name, value) in headers {
        if *name == CONTENT_LENGTH {
            if framing.is_some() {
                continue;
            }
            if ends_at_once && !head {
                // An empty body's length is written below, as 0.
                continue;
            }
            let length = std::str::from_utf8(value.as_bytes())
                .ok()
                .and_then(|v| v.trim().parse::<u64>().ok());
            match length {
                Some(length) => framing = Some(Framing::Length(length)),
                None => continue,
            }
        } else if *name == TRANSFER_ENCODING {
            if head || bodiless || framing.is_some() {
                continue;
            }
            framing = Some(Framing::Chunked);
            let value = value.as_bytes();
            out.extend_from_slice(b"transfer-encoding: ");
            out.extend_from_slice(value);
            if !crate::wire::head::last_coding_is_chunked(value) {
                out.extend_from_slice(b", chunked");
            }
            out.extend_from_slice(b"\r\n");
            continue;
        } else if *name == CONNECTION {
            wrote_connection = true;
        } else if *name == DATE {
            wrote_date = true;
        }
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    // Where hyper writes it: after the response's own fields, before the framing's.
    if close && !wrote_connection {
        out.extend_from_slice(b"connection: close\r\n");
    }
    let framing = match framing {
        Some(framing) => framing,
        None if ends_at_once => {
            if !head && !bodiless {
                out.extend_from_slice(b"content-length: 0\r\n");
            }
            Framing::Empty
        }
        None => match body.size_hint().exact() {
            Some(length) => {
                if !bodiless {
                    // Writing into a Vec cannot fail.
                    let _ = write!(out, "content-length: {length}\r\n");
                }
                Framing::Length(length)
            }
            None if head || bodiless => Framing::Empty,
            None => {
                out.extend_from_slice(b"transfer-encoding: chunked\r\n");
                Framing::Chunked
            }
        },
    };
    if !wrote_date {
        out.extend_from_slice(b"date: ");
        super::date::extend(out);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"\r\n");
    if head || bodiless {
        Framing::Empty
    } else {
        framing
    }
}

/// The body after its head (in `out`, not yet written): `length` bytes exactly, or
/// chunked when `None`.
async fn write_body<W: AsyncWrite + Unpin>(
    writer: &mut W,
    out: &mut Vec<u8>,
    body: &mut ProxyBody,
    length: Option<u64>,
) -> Result<(), WriteError> {
    let mut left = length;
    loop {
        // A frame at once joins the buffer; a body that must wait has the buffer written first.
        let ready = poll_fn(|cx| match Pin::new(&mut *body).poll_frame(cx) {
            Poll::Ready(frame) => Poll::Ready(Some(frame)),
            Poll::Pending => Poll::Ready(None),
        })
        .await;
        let frame = match ready {
            Some(frame) => frame,
            None => {
                if !out.is_empty() {
                    writer.write_all(out).await?;
                    writer.flush().await?;
                    out.clear();
                }
                poll_fn(|cx| Pin::new(&mut *body).poll_frame(cx)).await
            }
        };
        match frame {
            None => break,
            Some(Err(e)) => return Err(WriteError::Body(e)),
            Some(Ok(frame)) => {
                let Ok(data) = frame.into_data() else {
                    // Trailers: not sent (hyper sends them only when the client asked).
                    continue;
                };
                append(out, &data, &mut left)?;
            }
        }
        if out.len() >= GATHER_LIMIT {
            writer.write_all(out).await?;
            out.clear();
        }
    }
    match left {
        Some(0) => {}
        Some(_) => {
            return Err(WriteError::Body(
                "response body shorter than its content-length".into(),
            ))
        }
        None => out.extend_from_slice(b"0\r\n\r\n"),
    }
    if !out.is_empty() {
        writer.write_all(out).await?;
    }
    writer.flush().await?;
    out.clear();
    Ok(())
}

/// One data frame into `out`: as it is within a length (`left` bytes still due), or as
/// a chunk.
fn append(out: &mut Vec<u8>, data: &Bytes, left: &mut Option<u64>) -> Result<(), WriteError> {
    if data.is_empty() {
        return Ok(());
    }
    match left {
        Some(left) => {
            let n = data.len() as u64;
            if n > *left {
                return Err(WriteError::Body(
                    "response body longer than its content-length".into(),
                ));
            }
            *left -= n;
            out.extend_from_slice(data);
        }
        None => {
            let _ = write!(out, "{:x}\r\n", data.len());
            out.extend_from_slice(data);
            out.extend_from_slice(b"\r\n");
        }
    }
    Ok(())
}
