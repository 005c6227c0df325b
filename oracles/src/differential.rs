//! The whole-exchange differential run: two proxies built from one config but for
//! `server.http1_fast_path` (off: hyper serves HTTP/1.1; on: the proxy's own loop), each
//! in front of its own [`RecordingUpstream`]; the same client bytes go to a fresh
//! connection of each, and what each forwarded and answered is compared.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use refold_proxy::config::Config;
use refold_proxy::process::server::{serve, ServeOptions};
use refold_proxy::proxy::Proxy;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;

use crate::exchange::{
    bare_lf_refusal, chunk_extension_refusal, compare, early_refusal, framing_refused_first,
    read_requests, read_responses, replace_all, request_methods, served_after_refusal, Deliberate,
    Exchange, Normaliser, Stream, Verdict,
};
use crate::upstream::RecordingUpstream;

/// The placeholder in an input that stands for a valid `Authorization` value.
pub const AUTH_PLACEHOLDER: &[u8] = b"@AUTH@";
/// The placeholder for a second caller's valid `Authorization` value.
pub const AUTH2_PLACEHOLDER: &[u8] = b"@AUTH2@";

const API_KEY: &str = "differential-api-key";
const JWT_SECRET: &str = "differential-signing-secret-0123456789abcdef";

/// A config for both proxies, `{upstream}` standing for the upstream's URL and
/// `{fast_path}` for `true`/`false`. Rate limits never interfere, and heads get longer
/// than a run's quiet period to arrive.
pub const BASE_CONFIG: &str = "\
[server]
listen = \"127.0.0.1:0\"
http1_fast_path = {fast_path}

[upstream]
base_url = \"{upstream}\"
api_key_env = \"DIFF_API_KEY\"

[identity]
hs_secret_env = \"DIFF_JWT_SECRET\"

[limits]
per_account_rps = 1000000.0
per_account_burst = 1000000
header_read_timeout_ms = 10000
";

/// How long a run waits for more bytes from a proxy before it takes the exchange as
/// finished, first and when checking a difference again.
const QUIET: Duration = Duration::from_millis(40);
const QUIET_RECHECK: Duration = Duration::from_millis(400);
/// The longest one side of one run may take.
const RUN_LIMIT: Duration = Duration::from_secs(5);

struct Side {
    addr: std::net::SocketAddr,
    upstream: RecordingUpstream,
    _stop: oneshot::Sender<()>,
}

/// The two proxies and their upstreams, serving on the runtime they were started on.
pub struct Pair {
    hyper: Side,
    fast: Side,
    auth: Vec<u8>,
    auth2: Vec<u8>,
}

/// A divergence: both exchanges, normalised, and the input.
#[derive(Debug, Clone)]
pub struct Divergence {
    /// The bytes sent to each proxy (placeholders substituted).
    pub input: Vec<u8>,
    /// What the hyper path did.
    pub hyper: Exchange,
    /// What the own path did.
    pub fast: Exchange,
}

impl std::fmt::Display for Divergence {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "the two HTTP/1.1 paths differ on input {:?}",
            self.input.escape_ascii().to_string()
        )?;
        writeln!(f, "--- server.http1_fast_path = false (hyper):")?;
        write!(f, "{}", self.hyper)?;
        writeln!(f, "--- server.http1_fast_path = true:")?;
        write!(f, "{}", self.fast)
    }
}

/// Two exchanges that agree: the verdict and what the hyper path did.
#[derive(Debug, Clone)]
pub struct Agreed {
    /// [`Verdict::Same`] or the deliberate differences set aside.
    pub verdict: Verdict,
    /// What the hyper path did (normalised).
    pub hyper: Exchange,
}

/// A valid app JWT for `account`, signed with the secret both proxies trust.
fn app_jwt(account: &str) -> Result<String, String> {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_err(|e| e.to_string())?
        .as_secs();
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &serde_json::json!({ "sub": account, "iat": now, "exp": now + 7 * 24 * 3600 }),
        &jsonwebtoken::EncodingKey::from_secret(JWT_SECRET.as_bytes()),
    )
    .map_err(|e| e.to_string())
}

async fn start_side(label: &str, fast_path: bool, tables: &str) -> Result<Side, String> {
    let upstream = RecordingUpstream::start(label)
        .await
        .map_err(|e| e.to_string())?;
    let toml = format!(
        "{}\n{tables}\n",
        BASE_CONFIG
            .replace("{fast_path}", &fast_path.to_string())
            .replace("{upstream}", &format!("http://{}", upstream.addr()))
    );
    let config = Config::from_toml(&toml, Path::new("."), |name| match name {
        "DIFF_API_KEY" => Some(API_KEY.to_owned()),
        "DIFF_JWT_SECRET" => Some(JWT_SECRET.to_owned()),
        _ => None,
    })
    .map_err(|e| format!("config rejected: {e}\n{toml}"))?;
    let proxy = Arc::new(Proxy::new(&config).await.map_err(|e| e.to_string())?);
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .map_err(|e| e.to_string())?;
    let addr = listener.local_addr().map_err(|e| e.to_string())?;
    let options = ServeOptions::from_config(&config).map_err(|e| e.to_string())?;
    let (stop, stopped) = oneshot::channel::<()>();
    tokio::spawn(serve(listener, proxy, options, async {
        let _ = stopped.await;
    }));
    Ok(Side {
        addr,
        upstream,
        _stop: stop,
    })
}

impl Pair {
    /// Starts both proxies with [`BASE_CONFIG`] and `tables` (whole extra TOML tables,
    /// e.g. `[routes]`) on the current runtime.
    pub async fn start(tables: &str) -> Result<Self, String> {
        Self::start_each(tables, tables).await
    }

    /// Starts the proxies with different extra tables: only for showing that a run
    /// notices when the two proxies differ.
    pub async fn start_each(hyper_tables: &str, fast_tables: &str) -> Result<Self, String> {
        Ok(Self {
            hyper: start_side("hyper", false, hyper_tables).await?,
            fast: start_side("fast", true, fast_tables).await?,
            auth: format!("Bearer {}", app_jwt("acct-diff-1")?).into_bytes(),
            auth2: format!("Bearer {}", app_jwt("acct-diff-2")?).into_bytes(),
        })
    }

    /// What differs between the sides by nature: both upstreams' addresses and session
    /// tokens, masked on both sides (an input may well hold one of them).
    fn masks(&self) -> Normaliser {
        [&self.hyper, &self.fast]
            .iter()
            .fold(Normaliser::default(), |n, side| {
                n.substitute(side.upstream.addr().to_string(), "<upstream>")
                    .substitute(side.upstream.session_token(), "<session token>")
            })
    }

    /// The addresses of the hyper side's and the own path's upstreams.
    pub fn upstreams(&self) -> [std::net::SocketAddr; 2] {
        [self.hyper.upstream.addr(), self.fast.upstream.addr()]
    }

    /// `input` with its placeholders replaced by valid `Authorization` values.
    pub fn substitute(&self, input: &[u8]) -> Vec<u8> {
        let out = replace_all(input, AUTH2_PLACEHOLDER, &self.auth2);
        replace_all(&out, AUTH_PLACEHOLDER, &self.auth)
    }

    /// Sends `input` (placeholders substituted) to both proxies and compares. A
    /// difference is checked again with a longer quiet period before it counts, so a slow
    /// machine does not pass for a divergence.
    pub async fn check(&self, input: &[u8]) -> Result<Agreed, Box<Divergence>> {
        let input = self.substitute(input);
        let mut quiet = QUIET;
        loop {
            let (hyper, fast) = tokio::join!(
                exchange(&self.hyper, &input, quiet, self.masks()),
                exchange(&self.fast, &input, quiet, self.masks())
            );
            match compare(&hyper, &fast) {
                Verdict::Diverged if bare_lf_refusal(&input, &hyper, &fast) => {
                    return Ok(Agreed {
                        verdict: Verdict::Allowed(vec![Deliberate::BareLf]),
                        hyper,
                    });
                }
                Verdict::Diverged if chunk_extension_refusal(&input, &hyper, &fast) => {
                    return Ok(Agreed {
                        verdict: Verdict::Allowed(vec![Deliberate::ChunkExtension]),
                        hyper,
                    });
                }
                Verdict::Diverged if framing_refused_first(&input, &hyper, &fast) => {
                    return Ok(Agreed {
                        verdict: Verdict::Allowed(vec![Deliberate::FramingRefusedFirst]),
                        hyper,
                    });
                }
                Verdict::Diverged if served_after_refusal(&hyper, &fast) => {
                    return Ok(Agreed {
                        verdict: Verdict::Allowed(vec![Deliberate::ServedAfterRefusal]),
                        hyper,
                    });
                }
                // Judged after the longer quiet period: hyper's path must still be waiting.
                Verdict::Diverged if quiet >= QUIET_RECHECK && early_refusal(&hyper, &fast) => {
                    return Ok(Agreed {
                        verdict: Verdict::Allowed(vec![Deliberate::EarlyRefusal]),
                        hyper,
                    });
                }
                Verdict::Diverged if quiet < QUIET_RECHECK => quiet = QUIET_RECHECK,
                Verdict::Diverged => {
                    return Err(Box::new(Divergence { input, hyper, fast }));
                }
                verdict => return Ok(Agreed { verdict, hyper }),
            }
        }
    }
}

/// One run on one side: a fresh connection, `input` written (the write side left open,
/// as a client waiting for its answers leaves it), the answers read until the proxy
/// closes or says nothing for `quiet`; then the upstream's record, normalised by `masks`
/// and the volatile values found.
async fn exchange(side: &Side, input: &[u8], quiet: Duration, masks: Normaliser) -> Exchange {
    // Whatever an earlier run left behind is not this run's.
    side.upstream.settle(quiet).await;
    let _ = side.upstream.take();
    let (read, closed) = match tokio::time::timeout(RUN_LIMIT, talk(side, input, quiet)).await {
        Ok(Ok(result)) => result,
        Ok(Err(e)) => (format!("<connect failed: {e}>").into_bytes(), true),
        Err(_) => (b"<run limit reached>".to_vec(), false),
    };
    side.upstream.settle(quiet * 4).await;
    let mut forwarded = Stream::default();
    for recorded in side.upstream.take() {
        let stream = read_requests(&recorded.bytes);
        forwarded.messages.extend(stream.messages);
        forwarded.unreadable.push_str(&stream.unreadable);
    }
    let responses = read_responses(&read, &request_methods(input));
    let normaliser = masks.learning_from(&responses).learning_from(&forwarded);
    Exchange {
        forwarded: normaliser.stream(&forwarded),
        responses: normaliser.stream(&responses),
        closed,
    }
}

/// Writes `input` and reads until close or `quiet`: the bytes read and whether the proxy
/// closed.
async fn talk(side: &Side, input: &[u8], quiet: Duration) -> std::io::Result<(Vec<u8>, bool)> {
    let stream = TcpStream::connect(side.addr).await?;
    stream.set_nodelay(true)?;
    let (mut reader, mut writer) = stream.into_split();
    let input = input.to_vec();
    // A proxy may stop reading (and close) before the input is all written.
    let writing = tokio::spawn(async move {
        let _ = writer.write_all(&input).await;
        writer
    });
    let mut read = Vec::new();
    let mut buf = vec![0u8; 16 * 1024];
    let closed = loop {
        match tokio::time::timeout(quiet, reader.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => break true,
            Ok(Ok(n)) => read.extend_from_slice(&buf[..n]),
            Err(_) if writing.is_finished() => break false,
            Err(_) => {}
        }
    };
    writing.abort();
    Ok((read, closed))
}

/// The targets the seeds use: `(GET target, POST target)`. Both proxies allow the first
/// three pairs by default (a target with `chunk` in it gets a chunked answer upstream);
/// the last pair is denied.
const SEED_TARGETS: [(&str, &str); 4] = [
    ("/api/v2/public/workflow", "/api/v2/public/workflow"),
    (
        "/api/v2/f-sdk/application/chunked-app",
        "/api/v2/public/workflow/chunk-wf/execute",
    ),
    (
        "/api/v2/public/workflow?page=2&q=a%20b",
        "/api/v2/public/workflow/wf-1/execute?debug=1",
    ),
    ("/api/v2/org/basics", "/api/v2/public/session-token"),
];

/// The seed inputs of the differential run, named: valid requests (GET, HEAD, POST with
/// `Content-Length` and chunked bodies), pipelined and keep-alive sequences, and the
/// smuggling and edge shapes (CL+TE, TE.CL, duplicate lengths, obsolete folding, bare LF,
/// bad chunk sizes, `Expect`, `Upgrade`, HTTP/1.0, absolute-form, oversized heads, cut
/// short heads and bodies), each over every target pair, with and without `Host`.
pub fn seeds() -> Vec<(String, Vec<u8>)> {
    let mut seeds = Vec::new();
    for (t, (get, post)) in SEED_TARGETS.iter().enumerate() {
        for host in ["Host: api.example.test\r\n", ""] {
            let with_host = if host.is_empty() { "nohost" } else { "host" };
            for (shape, bytes) in shapes(get, post, host) {
                seeds.push((format!("{shape}-t{t}-{with_host}"), bytes.into_bytes()));
            }
        }
    }
    seeds
}

fn shapes(get: &str, post: &str, host: &str) -> Vec<(&'static str, String)> {
    let auth = "Authorization: @AUTH@\r\n";
    let get_req = |extra: &str| format!("GET {get} HTTP/1.1\r\n{host}{auth}{extra}\r\n");
    let post_req = |extra: &str, body: &str| {
        format!("POST {post} HTTP/1.1\r\n{host}{auth}Content-Type: application/json\r\n{extra}\r\n{body}")
    };
    let cl = |body: &str| post_req(&format!("Content-Length: {}\r\n", body.len()), body);
    let chunked = |body: &str| post_req("Transfer-Encoding: chunked\r\n", body);
    let long = "a".repeat(9000);
    let many: String = (0..120).map(|i| format!("X-Field-{i}: {i}\r\n")).collect();
    vec![
        ("get", get_req("")),
        ("get-close", get_req("Connection: close\r\n")),
        ("get-no-auth", format!("GET {get} HTTP/1.1\r\n{host}\r\n")),
        ("get-bad-auth", format!("GET {get} HTTP/1.1\r\n{host}Authorization: Bearer not.a.jwt\r\n\r\n")),
        ("get-second-account", format!("GET {get} HTTP/1.1\r\n{host}Authorization: @AUTH2@\r\n\r\n")),
        ("head", format!("HEAD {get} HTTP/1.1\r\n{host}{auth}\r\n")),
        ("options-preflight", format!("OPTIONS {get} HTTP/1.1\r\n{host}Origin: https://app.example.test\r\nAccess-Control-Request-Method: GET\r\n\r\n")),
        ("post-cl", cl("{\"a\":1}")),
        ("post-cl-empty", cl("")),
        ("post-chunked", chunked("7\r\n{\"a\":1}\r\n0\r\n\r\n")),
        ("post-chunked-ext-trailer", chunked("3;name=value\r\n{\"a\r\n4\r\n\":1}\r\n0\r\nX-Trailer: t\r\n\r\n")),
        ("pipelined-gets", format!("{}{}", get_req(""), get_req(""))),
        ("pipelined-post-get", format!("{}{}", cl("{}"), get_req(""))),
        ("pipelined-chunked-get", format!("{}{}", chunked("2\r\n{}\r\n0\r\n\r\n"), get_req(""))),
        ("keep-alive-three", format!("{}{}{}", get_req(""), cl("{\"n\":2}"), get_req("Connection: close\r\n"))),
        ("close-then-more", format!("{}{}", get_req("Connection: close\r\n"), get_req(""))),
        ("two-accounts", format!("{}GET {get} HTTP/1.1\r\n{host}Authorization: @AUTH2@\r\n\r\n", get_req(""))),
        ("cl-te", post_req("Content-Length: 4\r\nTransfer-Encoding: chunked\r\n", "0\r\n\r\n")),
        ("te-cl", post_req("Transfer-Encoding: chunked\r\nContent-Length: 30\r\n", "0\r\n\r\nGET /smuggled HTTP/1.1\r\n\r\n")),
        ("te-not-last", post_req("Transfer-Encoding: chunked, identity\r\n", "0\r\n\r\n")),
        ("te-twice", post_req("Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n", "0\r\n\r\n")),
        ("te-obfuscated", post_req("Transfer-Encoding : chunked\r\n", "0\r\n\r\n")),
        ("cl-duplicate-same", post_req("Content-Length: 2\r\nContent-Length: 2\r\n", "{}")),
        ("cl-duplicate-differ", post_req("Content-Length: 2\r\nContent-Length: 3\r\n", "{}x")),
        ("cl-list", post_req("Content-Length: 2, 2\r\n", "{}")),
        ("cl-plus", post_req("Content-Length: +2\r\n", "{}")),
        ("cl-short-body", post_req("Content-Length: 20\r\n", "{}")),
        ("obs-fold", get_req("X-Folded: a\r\n b\r\n")),
        ("bare-lf", format!("GET {get} HTTP/1.1\n{host}{auth}\n")),
        ("bare-lf-field", get_req("X-Thing: a\nX-Other: b\r\n")),
        ("chunk-size-bad", chunked("zz\r\n{}\r\n0\r\n\r\n")),
        ("chunk-size-negative", chunked("-2\r\n{}\r\n0\r\n\r\n")),
        ("chunk-size-huge", chunked("ffffffffffffffffff\r\n{}\r\n0\r\n\r\n")),
        ("chunk-missing-crlf", chunked("2\r\n{}0\r\n\r\n")),
        ("chunk-cut-short", chunked("10\r\n{}")),
        ("expect-continue", post_req("Expect: 100-continue\r\nContent-Length: 2\r\n", "{}")),
        ("expect-other", post_req("Expect: something\r\nContent-Length: 2\r\n", "{}")),
        ("upgrade-websocket", get_req("Connection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n")),
        ("upgrade-h2c", get_req("Connection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQAAP__\r\n")),
        ("http10", format!("GET {get} HTTP/1.0\r\n{host}{auth}\r\n")),
        ("http10-keep-alive", format!("GET {get} HTTP/1.0\r\n{host}{auth}Connection: keep-alive\r\n\r\nGET {get} HTTP/1.0\r\n{host}{auth}\r\n")),
        ("absolute-form", format!("GET http://api.example.test{get} HTTP/1.1\r\n{host}{auth}\r\n")),
        ("connect", format!("CONNECT api.example.test:443 HTTP/1.1\r\n{host}{auth}\r\n")),
        ("asterisk", format!("OPTIONS * HTTP/1.1\r\n{host}\r\n")),
        ("huge-field", get_req(&format!("X-Long: {long}\r\n"))),
        ("many-fields", get_req(&many)),
        ("cut-head", format!("GET {get} HTTP/1.1\r\n{host}{auth}X-Part")),
        ("hop-by-hop", get_req("Connection: X-Drop\r\nX-Drop: 1\r\nKeep-Alive: timeout=5\r\nProxy-Authorization: x\r\n")),
        ("credentials-from-client", get_req("X-Api-Key: stolen\r\nX_Api_Key: stolen\r\nCookie: a=b\r\n")),
        ("forwarding-fields", get_req("X-Forwarded-For: 10.0.0.1\r\nForwarded: for=10.0.0.1\r\nX-Real-IP: 10.0.0.1\r\n")),
        ("account-in-query", format!("GET {get}{}linked_account_id=other HTTP/1.1\r\n{host}{auth}\r\n", if get.contains('?') { "&" } else { "?" })),
        ("mixed-case-fields", get_req("x-MiXeD: Value\r\nACCEPT: */*\r\n")),
        ("h2-preface", "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_owned()),
        ("garbage", "\x16\x03\x01\x00\x05hello".to_owned()),
    ]
}
