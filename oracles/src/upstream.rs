//! A recording upstream on `127.0.0.1:0`: it answers a proxy's session-token mints, and
//! keeps the raw bytes of every other request it receives, in the order they began to
//! arrive over all its connections, answering each whole one with a fixed response.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::exchange::{read_request, Message};

/// The session token every mint of a [`RecordingUpstream`] hands out (an unsigned JWT
/// shape the proxy can read an `exp` from); see [`RecordingUpstream::session_token`].
const TOKEN_HEADER: &str = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9";
/// `{"org_id":"org","linked_account_id":"acct","iat":1700000000,"exp":4102444800}`
const TOKEN_CLAIMS: &str = "eyJvcmdfaWQiOiJvcmciLCJsaW5rZWRfYWNjb3VudF9pZCI6ImFjY3QiLCJpYXQiOjE3MDAwMDAwMDAsImV4cCI6NDEwMjQ0NDgwMH0";

/// The mint's path.
const MINT_PATH: &str = "/api/v2/public/session-token";

/// The body of every fixed response.
pub const RESPONSE_BODY: &str = "{\"ok\":true,\"from\":\"recording upstream\"}";

#[derive(Debug)]
struct Entry {
    connection: u64,
    bytes: Vec<u8>,
    complete: bool,
    open: bool,
}

#[derive(Debug, Default)]
struct Log {
    entries: Vec<Entry>,
    connections: u64,
}

/// The raw bytes of one request the upstream received.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recorded {
    /// Head and body as received.
    pub bytes: Vec<u8>,
    /// The whole request arrived (and was answered).
    pub complete: bool,
}

/// A running recording upstream (stops with the runtime it was started on).
#[derive(Debug, Clone)]
pub struct RecordingUpstream {
    addr: SocketAddr,
    label: String,
    log: Arc<Mutex<Log>>,
}

impl RecordingUpstream {
    /// Binds `127.0.0.1:0` and serves on the current runtime. `label` goes into the
    /// session token, so two upstreams mint different ones.
    pub async fn start(label: &str) -> std::io::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let upstream = Self {
            addr: listener.local_addr()?,
            label: label.to_owned(),
            log: Arc::default(),
        };
        let serving = upstream.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let _ = stream.set_nodelay(true);
                tokio::spawn(serving.clone().connection(stream));
            }
        });
        Ok(upstream)
    }

    /// Where it listens.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The session token its mints hand out.
    pub fn session_token(&self) -> String {
        format!("{TOKEN_HEADER}.{TOKEN_CLAIMS}.sig-{}", self.label)
    }

    fn log(&self) -> std::sync::MutexGuard<'_, Log> {
        self.log.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The requests received since the last call, in the order they began to arrive.
    pub fn take(&self) -> Vec<Recorded> {
        self.log()
            .entries
            .drain(..)
            .map(|e| Recorded {
                bytes: e.bytes,
                complete: e.complete,
            })
            .collect()
    }

    /// Waits up to `limit` until no request is half-received on a connection still open
    /// (a proxy that gave up on a request closes its upstream connection).
    pub async fn settle(&self, limit: Duration) {
        let deadline = tokio::time::Instant::now() + limit;
        while tokio::time::Instant::now() < deadline {
            if !self.log().entries.iter().any(|e| !e.complete && e.open) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }

    async fn connection(self, mut stream: TcpStream) {
        let id = {
            let mut log = self.log();
            log.connections += 1;
            log.connections
        };
        // The request being received on this connection: its bytes so far, and the index
        // of its log entry once it is one (mints are answered, never logged).
        let mut pending: Vec<u8> = Vec::new();
        let mut buf = vec![0u8; 16 * 1024];
        loop {
            let n = match stream.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            pending.extend_from_slice(&buf[..n]);
            loop {
                let whole = read_request(&pending).filter(|(m, _)| m.complete);
                let Some((message, used)) = whole else {
                    self.record_partial(id, &pending);
                    break;
                };
                let rest = pending.split_off(used);
                let request = std::mem::replace(&mut pending, rest);
                let answer = if is_mint(&message) {
                    self.forget_partial(id);
                    self.mint_response()
                } else {
                    self.record_whole(id, request);
                    fixed_response(&message)
                };
                if stream.write_all(&answer).await.is_err() {
                    self.closed(id);
                    return;
                }
                if pending.is_empty() {
                    break;
                }
            }
        }
        self.closed(id);
    }

    fn open_entry(log: &mut Log, id: u64) -> Option<&mut Entry> {
        log.entries
            .iter_mut()
            .find(|e| e.connection == id && !e.complete && e.open)
    }

    fn record_partial(&self, id: u64, bytes: &[u8]) {
        if bytes.is_empty() || looks_like_mint(bytes) {
            return;
        }
        let mut log = self.log();
        match Self::open_entry(&mut log, id) {
            Some(entry) => entry.bytes = bytes.to_vec(),
            None => log.entries.push(Entry {
                connection: id,
                bytes: bytes.to_vec(),
                complete: false,
                open: true,
            }),
        }
    }

    fn forget_partial(&self, id: u64) {
        self.log()
            .entries
            .retain(|e| e.connection != id || e.complete || !e.open);
    }

    fn record_whole(&self, id: u64, bytes: Vec<u8>) {
        let mut log = self.log();
        match Self::open_entry(&mut log, id) {
            Some(entry) => {
                entry.bytes = bytes;
                entry.complete = true;
            }
            None => log.entries.push(Entry {
                connection: id,
                bytes,
                complete: true,
                open: true,
            }),
        }
    }

    fn closed(&self, id: u64) {
        for entry in self.log().entries.iter_mut() {
            if entry.connection == id {
                entry.open = false;
            }
        }
    }

    fn mint_response(&self) -> Vec<u8> {
        let body = format!(
            "{{\"token\":\"{}\",\"expires_in\":86400}}",
            self.session_token()
        );
        format!(
            "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
            body.len()
        )
        .into_bytes()
    }
}

fn is_mint(message: &Message) -> bool {
    message.method() == "POST"
        && message
            .start_line
            .split(' ')
            .nth(1)
            .is_some_and(|target| target.split('?').next() == Some(MINT_PATH))
        && message.field("x-api-key").is_some()
}

fn looks_like_mint(bytes: &[u8]) -> bool {
    bytes.starts_with(format!("POST {MINT_PATH}").as_bytes())
}

/// The answer to a forwarded request: a chunked body when its target mentions `chunk`,
/// a `Content-Length` one otherwise (none to HEAD).
pub fn fixed_response(request: &Message) -> Vec<u8> {
    let chunked = request.start_line.contains("chunk");
    let head_only = request.method() == "HEAD";
    let mut out =
        b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\nx-upstream: recording\r\n".to_vec();
    if chunked {
        out.extend_from_slice(b"transfer-encoding: chunked\r\n\r\n");
        if !head_only {
            let (a, b) = RESPONSE_BODY.split_at(7);
            for part in [a, b] {
                out.extend_from_slice(format!("{:x}\r\n{part}\r\n", part.len()).as_bytes());
            }
            out.extend_from_slice(b"0\r\n\r\n");
        }
    } else {
        out.extend_from_slice(
            format!("content-length: {}\r\n\r\n", RESPONSE_BODY.len()).as_bytes(),
        );
        if !head_only {
            out.extend_from_slice(RESPONSE_BODY.as_bytes());
        }
    }
    out
}
