//! TLS on both sides: HTTPS on the public listener (HTTP/1.1 and HTTP/2 by ALPN, TLS 1.2
//! and 1.3 only, the handshake under a timeout in the connection's task, the certificate
//! swapped on SIGHUP), and `upstream.ca_file` for a Refold behind a private CA.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use crate::support::process::{base_config, ProxyProcess};
use crate::support::{app_jwt, assert_error, Harness, API_KEY};
use bytes::Bytes;
use http::{Request, StatusCode, Version};
use http_body_util::{BodyExt, Empty};
use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo};
use refold_mock::{MockConfig, MockUpstream};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::{ClientConfig, ProtocolVersion, RootCertStore, SupportedProtocolVersion};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

/// An SDK route the stand-in answers with 200.
const APPS: &str = "/api/v2/f-sdk/application";

fn certs_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("certs")
}

fn toml_path(path: &Path) -> String {
    toml::Value::String(path.display().to_string()).to_string()
}

/// A `[server.tls]` table for `cert` and `key`.
fn tls_table(cert: &Path, key: &Path, extra: &str) -> String {
    format!(
        "[server.tls]\ncert_file = {}\nkey_file = {}\n{extra}",
        toml_path(cert),
        toml_path(key)
    )
}

/// A proxy serving HTTPS with the development `localhost` certificate.
async fn https_proxy(extra: &str) -> Harness {
    let certs = certs_dir();
    Harness::builder()
        .accounts(["alice"])
        .server(&tls_table(
            &certs.join("localhost.pem"),
            &certs.join("localhost.key.pem"),
            extra,
        ))
        .start()
        .await
}

fn certificates(pem: &Path) -> Vec<CertificateDer<'static>> {
    CertificateDer::pem_file_iter(pem)
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap()
}

/// A client trusting the certificates in `roots` (PEM files).
fn client_config(
    roots: &[&Path],
    versions: &[&'static SupportedProtocolVersion],
    alpn: &[&[u8]],
) -> Arc<ClientConfig> {
    let mut store = RootCertStore::empty();
    for pem in roots {
        for cert in certificates(pem) {
            store.add(cert).unwrap();
        }
    }
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut config = ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(versions)
        .unwrap()
        .with_root_certificates(store)
        .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Arc::new(config)
}

/// A client trusting the development CA, offering both versions and both protocols.
fn dev_client() -> Arc<ClientConfig> {
    client_config(
        &[&certs_dir().join("dev-ca.pem")],
        rustls::ALL_VERSIONS,
        &[b"h2", b"http/1.1"],
    )
}

async fn tls_connect(addr: SocketAddr, config: Arc<ClientConfig>) -> TlsStream<TcpStream> {
    let tcp = TcpStream::connect(addr).await.unwrap();
    tokio_rustls::TlsConnector::from(config)
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
        .unwrap()
}

/// One HTTP/1.1 or HTTP/2 connection over TLS, as ALPN decided.
enum Conn {
    H1(http1::SendRequest<Empty<Bytes>>),
    H2(http2::SendRequest<Empty<Bytes>>),
}

impl Conn {
    async fn open(stream: TlsStream<TcpStream>) -> Self {
        let h2 = stream.get_ref().1.alpn_protocol() == Some(b"h2");
        let io = TokioIo::new(stream);
        if h2 {
            let (send, conn) = http2::handshake(TokioExecutor::new(), io).await.unwrap();
            tokio::spawn(conn);
            Self::H2(send)
        } else {
            let (send, conn) = http1::handshake(io).await.unwrap();
            tokio::spawn(conn);
            Self::H1(send)
        }
    }

    /// GET `path` as `account`; the status, the response's version and its body.
    async fn get(&mut self, path: &str, account: &str) -> (StatusCode, Version, Bytes) {
        let request = Request::get(format!("https://localhost{path}"))
            .header("authorization", format!("Bearer {}", app_jwt(account)));
        let response = match self {
            Self::H1(send) => {
                send.ready().await.unwrap();
                // Origin form, with Host, as an HTTP/1.1 client sends it.
                let request = request
                    .uri(path)
                    .header("host", "localhost")
                    .body(Empty::new())
                    .unwrap();
                send.send_request(request).await.unwrap()
            }
            Self::H2(send) => {
                send.ready().await.unwrap();
                send.send_request(request.body(Empty::new()).unwrap())
                    .await
                    .unwrap()
            }
        };
        let (status, version) = (response.status(), response.version());
        let body = response.into_body().collect().await.unwrap().to_bytes();
        (status, version, body)
    }
}

/// Checks the stand-in received `path` with alice's session token injected, and the
/// scheme the caller spoke to the proxy in `x-forwarded-proto`.
fn assert_forwarded_with_token(mock: &MockUpstream, path: &str, proto: &str) {
    let session = mock.current_token("alice").expect("a token was minted");
    let requests = mock.requests();
    let forwarded = requests
        .iter()
        .rev()
        .find(|r| r.path == path)
        .expect("the request reached the stand-in");
    assert_eq!(
        forwarded.headers["authorization"],
        format!("Bearer {session}").as_str()
    );
    assert_eq!(forwarded.linked_account_id.as_deref(), Some("alice"));
    assert_eq!(forwarded.headers["x-forwarded-proto"], proto);
}

#[tokio::test]
async fn https_over_http1_reaches_the_stand_in_with_the_session_token() {
    let h = https_proxy("").await;
    let config = client_config(
        &[&certs_dir().join("dev-ca.pem")],
        rustls::ALL_VERSIONS,
        &[b"http/1.1"],
    );
    let stream = tls_connect(h.proxy_addr, config).await;
    assert_eq!(stream.get_ref().1.alpn_protocol(), Some(&b"http/1.1"[..]));
    let mut conn = Conn::open(stream).await;
    let (status, version, body) = conn.get(APPS, "alice").await;
    assert_eq!(status, 200, "{body:?}");
    assert_eq!(version, Version::HTTP_11);
    assert_forwarded_with_token(&h.mock, APPS, "https");
    // Keep-alive: a second request on the same connection.
    assert_eq!(conn.get(APPS, "alice").await.0, 200);
    h.stop().await;
}

#[tokio::test]
async fn https_over_http2_reaches_the_stand_in_with_the_session_token() {
    let h = https_proxy("").await;
    let stream = tls_connect(h.proxy_addr, dev_client()).await;
    // The server prefers what the client lists first; h2 here.
    assert_eq!(stream.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    let mut conn = Conn::open(stream).await;
    let (status, version, body) = conn.get(APPS, "alice").await;
    assert_eq!(status, 200, "{body:?}");
    assert_eq!(version, Version::HTTP_2);
    assert_forwarded_with_token(&h.mock, APPS, "https");

    // The proxy's own errors come back over TLS too.
    let request = Request::get(format!("https://localhost{APPS}"))
        .body(Empty::<Bytes>::new())
        .unwrap();
    let Conn::H2(send) = &mut conn else {
        unreachable!()
    };
    let response = send.send_request(request).await.unwrap();
    assert_eq!(response.status(), 401);
    h.stop().await;
}

#[tokio::test]
async fn tls_12_only_and_tls_13_only_clients_are_both_served() {
    let h = https_proxy("").await;
    let ca = certs_dir().join("dev-ca.pem");
    for (version, expected) in [
        (&rustls::version::TLS12, ProtocolVersion::TLSv1_2),
        (&rustls::version::TLS13, ProtocolVersion::TLSv1_3),
    ] {
        let config = client_config(&[&ca], &[version], &[b"h2", b"http/1.1"]);
        let stream = tls_connect(h.proxy_addr, config).await;
        assert_eq!(stream.get_ref().1.protocol_version(), Some(expected));
        let (status, _, _) = Conn::open(stream).await.get(APPS, "alice").await;
        assert_eq!(status, 200, "{expected:?}");
    }
    h.stop().await;
}

/// A TLS 1.0/1.1-style ClientHello: `legacy_version` as given, no supported_versions
/// extension, suites a TLS 1.0 server could pick; with `sigalgs`, the
/// signature_algorithms extension that some clients send even when capped below 1.2.
fn legacy_client_hello(version: [u8; 2], sigalgs: bool) -> Vec<u8> {
    let mut body = Vec::new();
    body.extend_from_slice(&version); // client_version
    body.extend_from_slice(&[0x5a; 32]); // random
    body.push(0); // session_id
    let suites: &[u8] = &[
        0xc0, 0x09, // ECDHE_ECDSA_WITH_AES_128_CBC_SHA
        0xc0, 0x13, // ECDHE_RSA_WITH_AES_128_CBC_SHA
        0x00, 0x2f, // RSA_WITH_AES_128_CBC_SHA
        0xc0, 0x2b, // ECDHE_ECDSA_WITH_AES_128_GCM_SHA256
    ];
    body.extend_from_slice(&u16::try_from(suites.len()).unwrap().to_be_bytes());
    body.extend_from_slice(suites);
    body.extend_from_slice(&[1, 0]); // compression: null
    let mut extensions = vec![
        0x00, 0x0a, 0x00, 0x06, 0x00, 0x04, 0x00, 0x17, 0x00, 0x1d, // supported_groups
        0x00, 0x0b, 0x00, 0x02, 0x01, 0x00, // ec_point_formats: uncompressed
    ];
    if sigalgs {
        // ecdsa_secp256r1_sha256, rsa_pss_rsae_sha256
        extensions.extend_from_slice(&[0x00, 0x0d, 0x00, 0x06, 0x00, 0x04, 0x04, 0x03, 0x08, 0x04]);
    }
    body.extend_from_slice(&u16::try_from(extensions.len()).unwrap().to_be_bytes());
    body.extend_from_slice(&extensions);

    let mut handshake = vec![0x01]; // client_hello
    handshake.extend_from_slice(&u32::try_from(body.len()).unwrap().to_be_bytes()[1..]);
    handshake.extend_from_slice(&body);
    let mut record = vec![0x16, 0x03, 0x01]; // handshake record, TLS 1.0 framing
    record.extend_from_slice(&u16::try_from(handshake.len()).unwrap().to_be_bytes());
    record.extend_from_slice(&handshake);
    record
}

#[tokio::test]
async fn clients_offering_only_tls_10_or_11_are_refused() {
    const HANDSHAKE_FAILURE: u8 = 40;
    const PROTOCOL_VERSION: u8 = 70;
    let h = https_proxy("").await;
    for version in [[0x03, 0x01], [0x03, 0x02]] {
        // A true TLS 1.0/1.1 hello lacks signature_algorithms, which is checked first.
        for (sigalgs, alert) in [(false, HANDSHAKE_FAILURE), (true, PROTOCOL_VERSION)] {
            let mut tcp = TcpStream::connect(h.proxy_addr).await.unwrap();
            tcp.write_all(&legacy_client_hello(version, sigalgs))
                .await
                .unwrap();
            let answer = read_until_closed(&mut tcp).await;
            // One alert record (type 21, two bytes): fatal (2) and its description. No
            // ServerHello, nothing else.
            let case = format!("{version:?}, signature_algorithms: {sigalgs}");
            assert_eq!(answer.len(), 7, "{case}: {answer:?}");
            assert_eq!(answer[0], 21, "{case}: not an alert: {answer:?}");
            assert_eq!(&answer[3..7], &[0, 2, 2, alert], "{case}: {answer:?}");
        }
    }
    // The listener still serves.
    let stream = tls_connect(h.proxy_addr, dev_client()).await;
    assert_eq!(Conn::open(stream).await.get(APPS, "alice").await.0, 200);
    h.stop().await;
}

/// Everything the server sends until it closes the connection (within 10 s).
async fn read_until_closed(tcp: &mut TcpStream) -> Vec<u8> {
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), tcp.read_to_end(&mut answer))
        .await
        .expect("the server closes the connection")
        .unwrap();
    answer
}

#[tokio::test]
async fn cleartext_http_to_the_https_listener_gets_no_answer() {
    let h = https_proxy("").await;
    let mut tcp = TcpStream::connect(h.proxy_addr).await.unwrap();
    tcp.write_all(b"GET / HTTP/1.1\r\nhost: localhost\r\n\r\n")
        .await
        .unwrap();
    let answer = read_until_closed(&mut tcp).await;
    assert!(!answer.starts_with(b"HTTP/"), "{answer:?}");
    h.stop().await;
}

#[tokio::test]
async fn a_slow_handshake_blocks_no_one_and_is_cut_after_the_timeout() {
    const TIMEOUT: Duration = Duration::from_millis(1500);
    let h = https_proxy(&format!("handshake_timeout_ms = {}", TIMEOUT.as_millis())).await;
    // Clients that start a handshake and never finish it: one sends half a record
    // header, the others nothing at all.
    let started = Instant::now();
    let mut slow = Vec::new();
    for i in 0..4 {
        let mut tcp = TcpStream::connect(h.proxy_addr).await.unwrap();
        if i == 0 {
            tcp.write_all(&[0x16, 0x03, 0x01]).await.unwrap();
        }
        slow.push(tcp);
    }
    // Meanwhile others are served at once.
    for _ in 0..3 {
        let stream = tls_connect(h.proxy_addr, dev_client()).await;
        assert_eq!(Conn::open(stream).await.get(APPS, "alice").await.0, 200);
    }
    assert!(
        started.elapsed() < TIMEOUT,
        "served only after {:?}: the slow handshakes held the others up",
        started.elapsed()
    );
    // Then the slow ones are cut, not before the timeout.
    for mut tcp in slow {
        let mut rest = Vec::new();
        let read = tokio::time::timeout(Duration::from_secs(15), tcp.read_to_end(&mut rest))
            .await
            .expect("a stalled handshake is cut");
        // A close (EOF) or a reset: either way, gone.
        if read.is_ok() {
            assert!(rest.is_empty() || rest[0] == 21, "{rest:?}");
        }
        assert!(
            started.elapsed() >= TIMEOUT - Duration::from_millis(100),
            "cut after {:?}",
            started.elapsed()
        );
    }
    h.stop().await;
}

#[tokio::test]
async fn tls_connections_silent_after_the_handshake_do_not_starve_a_client() {
    let certs = certs_dir();
    let h = Harness::builder()
        .accounts(["alice"])
        .server(&tls_table(
            &certs.join("localhost.pem"),
            &certs.join("localhost.key.pem"),
            "",
        ))
        .limits("max_connections = 3\nheader_read_timeout_ms = 500")
        .start()
        .await;
    // Every slot taken: a handshake done over ALPN h2, one done without ALPN (protocol
    // detection), and one never started (the first-request timeout is shorter than the
    // handshake timeout); then nothing.
    let no_alpn = client_config(&[&certs.join("dev-ca.pem")], rustls::ALL_VERSIONS, &[]);
    let mut idle = vec![
        tls_connect(h.proxy_addr, dev_client()).await,
        tls_connect(h.proxy_addr, no_alpn).await,
    ];
    let mut silent = TcpStream::connect(h.proxy_addr).await.unwrap();
    let served = tokio::time::timeout(Duration::from_millis(1500), async {
        let stream = tls_connect(h.proxy_addr, dev_client()).await;
        Conn::open(stream).await.get(APPS, "alice").await.0
    })
    .await
    .expect("a client is served within the first-request timeout + 1 s");
    assert_eq!(served, 200);
    for tls in &mut idle {
        let mut rest = Vec::new();
        let read = tokio::time::timeout(Duration::from_secs(2), tls.read_to_end(&mut rest))
            .await
            .expect("an idle TLS connection is closed");
        // Cut without a close_notify (nothing was ever asked on it), or closed cleanly.
        if let Err(e) = read {
            assert!(
                matches!(
                    e.kind(),
                    std::io::ErrorKind::UnexpectedEof | std::io::ErrorKind::ConnectionReset
                ),
                "{e}"
            );
        }
    }
    read_until_closed(&mut silent).await;
    let text = h.proxy.metrics().encode();
    let line = "refold_proxy_connection_timeouts_total{reason=\"first_request\"} 3";
    assert!(text.lines().any(|l| l == line), "{line:?} missing:\n{text}");
    h.stop().await;
}

/// The stand-in behind a TLS front using `certs/localhost.pem` (signed by the
/// development CA): each connection's TLS is terminated and its bytes relayed to the
/// stand-in, as a self-hosted Refold behind a private CA would look.
struct TlsFront {
    addr: SocketAddr,
    backend: Arc<OnceLock<SocketAddr>>,
    handshake_errors: Arc<Mutex<Vec<rustls::Error>>>,
}

impl TlsFront {
    async fn start() -> Self {
        Self::start_with(&[b"h2", b"http/1.1"], usize::MAX).await
    }

    /// A front offering `alpn` that completes the first `handshakes` TLS handshakes and
    /// leaves every later one hanging (the connection open, no answer).
    async fn start_with(alpn: &[&[u8]], handshakes: usize) -> Self {
        let certs = certs_dir();
        let chain = certificates(&certs.join("localhost.pem"));
        let key = PrivateKeyDer::from_pem_file(certs.join("localhost.key.pem")).unwrap();
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .unwrap();
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let accepted = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let backend = Arc::new(OnceLock::<SocketAddr>::new());
        let handshake_errors = Arc::new(Mutex::new(Vec::new()));
        let (to, errors) = (Arc::clone(&backend), Arc::clone(&handshake_errors));
        tokio::spawn(async move {
            loop {
                let (tcp, _) = listener.accept().await.unwrap();
                let (acceptor, to, errors) =
                    (acceptor.clone(), Arc::clone(&to), Arc::clone(&errors));
                let n = accepted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                tokio::spawn(async move {
                    if n >= handshakes {
                        // Held open, never answered.
                        let _held = tcp;
                        std::future::pending::<()>().await;
                        return;
                    }
                    match acceptor.accept(tcp).await {
                        Ok(mut tls) => {
                            let mut plain = TcpStream::connect(to.get().unwrap()).await.unwrap();
                            let _ = tokio::io::copy_bidirectional(&mut tls, &mut plain).await;
                        }
                        Err(e) => {
                            let cause = e
                                .into_inner()
                                .and_then(|inner| inner.downcast::<rustls::Error>().ok());
                            if let Some(cause) = cause {
                                errors.lock().unwrap().push(*cause);
                            }
                        }
                    }
                });
            }
        });
        Self {
            addr,
            backend,
            handshake_errors,
        }
    }

    fn url(&self) -> String {
        format!("https://127.0.0.1:{}", self.addr.port())
    }
}

#[tokio::test]
async fn an_upstream_behind_a_private_ca_is_reached_with_ca_file() {
    let front = TlsFront::start().await;
    let h = Harness::builder()
        .accounts(["alice"])
        .upstream_url(&front.url())
        .upstream(&format!(
            "ca_file = {}",
            toml_path(&certs_dir().join("dev-ca.pem"))
        ))
        .start()
        .await;
    front.backend.set(h.mock_addr).unwrap();
    let response = h.get_as("alice", APPS).await;
    assert_eq!(response.status(), 200);
    assert_forwarded_with_token(&h.mock, APPS, "http");
    assert!(front.handshake_errors.lock().unwrap().is_empty());
    h.stop().await;
}

#[tokio::test]
async fn a_request_that_finds_no_idle_connection_takes_one_released_while_it_connects() {
    // HTTP/1.1 over TLS: forwarding uses the pool. Handshakes: the mint's connection,
    // then the pool's first; every later handshake hangs.
    let front = TlsFront::start_with(&[b"http/1.1"], 2).await;
    let h = Harness::builder()
        .accounts(["alice"])
        .upstream_url(&front.url())
        .upstream(&format!(
            "ca_file = {}\ntimeout_ms = 3000",
            toml_path(&certs_dir().join("dev-ca.pem"))
        ))
        .start()
        .await;
    front.backend.set(h.mock_addr).unwrap();
    assert_eq!(h.get_as("alice", APPS).await.status(), 200);
    // One request holds the pooled connection for 300 ms; a second finds none idle.
    // Its own connect never completes: it is served on the first one's connection when
    // that is released, not failed with 504 when the upstream timeout runs out.
    h.mock.faults().set_api_latency(Duration::from_millis(300));
    let (first, second) = tokio::join!(h.get_as("alice", APPS), async {
        tokio::time::sleep(Duration::from_millis(100)).await;
        h.get_as("alice", APPS).await
    });
    assert_eq!(first.status(), 200);
    assert_eq!(second.status(), 200);
    assert_eq!(
        h.mock.requests().iter().filter(|r| r.path == APPS).count(),
        3
    );
    h.stop().await;
}

#[tokio::test]
async fn without_ca_file_an_upstream_behind_a_private_ca_is_refused() {
    let front = TlsFront::start().await;
    let h = Harness::builder()
        .accounts(["alice"])
        .upstream_url(&front.url())
        .start()
        .await;
    front.backend.set(h.mock_addr).unwrap();
    // The mint, the first call to Refold, cannot verify Refold's certificate.
    assert_error(
        h.get_as("alice", APPS).await,
        503,
        "TOKEN_SERVICE_UNAVAILABLE",
    )
    .await;
    assert!(h.mock.requests().is_empty(), "nothing got through");
    // The proxy refused the certificate: an unknown issuer.
    let errors = front.handshake_errors.lock().unwrap().clone();
    assert!(
        errors.contains(&rustls::Error::AlertReceived(
            rustls::AlertDescription::UnknownCA
        )),
        "{errors:?}"
    );
    h.stop().await;
}

/// The serial number of a DER certificate (Certificate, tbsCertificate, [0] version,
/// serialNumber).
fn serial(der: &[u8]) -> Vec<u8> {
    // (tag, header length, content length) of the DER element at the start of `der`.
    fn element(der: &[u8]) -> (u8, usize, usize) {
        let first = der[1];
        if first < 0x80 {
            return (der[0], 2, usize::from(first));
        }
        let n = usize::from(first & 0x7f);
        let len = der[2..2 + n]
            .iter()
            .fold(0, |len, b| (len << 8) | usize::from(*b));
        (der[0], 2 + n, len)
    }
    let (_, header, _) = element(der);
    let tbs = &der[header..];
    let (_, header, _) = element(tbs);
    let mut fields = &tbs[header..];
    let (tag, header, len) = element(fields);
    if tag == 0xa0 {
        fields = &fields[header + len..];
    }
    let (tag, header, len) = element(fields);
    assert_eq!(tag, 0x02, "serialNumber is an INTEGER");
    fields[header..header + len].to_vec()
}

/// Runs `refold-proxy gen-cert` for localhost into `dir`; the certificate's DER.
fn gen_cert(dir: &Path) -> CertificateDer<'static> {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_refold-proxy"))
        .args([
            "gen-cert",
            "--host",
            "localhost",
            "--host",
            "127.0.0.1",
            "--out",
        ])
        .arg(dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    certificates(&dir.join("cert.pem")).remove(0)
}

fn peer_certificate(stream: &TlsStream<TcpStream>) -> CertificateDer<'static> {
    stream.get_ref().1.peer_certificates().unwrap()[0]
        .clone()
        .into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_swaps_the_certificate_and_keeps_open_connections() {
    let dir = std::env::temp_dir().join(format!("refold-proxy-tls-reload-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let (a, b, c, live) = (
        dir.join("a"),
        dir.join("b"),
        dir.join("c"),
        dir.join("live"),
    );
    let cert_a = gen_cert(&a);
    let cert_b = gen_cert(&b);
    gen_cert(&c);
    assert_ne!(serial(&cert_a), serial(&cert_b));
    std::fs::create_dir_all(&live).unwrap();
    let install = |cert: &Path, key: &Path| {
        std::fs::copy(cert, live.join("cert.pem")).unwrap();
        std::fs::copy(key, live.join("key.pem")).unwrap();
    };
    install(&a.join("cert.pem"), &a.join("key.pem"));

    let (mock_addr, mock) = MockUpstream::spawn(MockConfig {
        api_key: API_KEY.into(),
        accounts: vec!["alice".into()],
        ..MockConfig::default()
    })
    .await
    .unwrap();
    let config = format!(
        "{}{}",
        base_config(&format!("http://{mock_addr}")),
        tls_table(&live.join("cert.pem"), &live.join("key.pem"), "")
    );
    let (mut proxy, addr) = ProxyProcess::start(&config).await;
    // A new client config per connection: a resumed session would show the
    // certificate of the session it resumes, not the one served now.
    let trust_both = || {
        client_config(
            &[&a.join("cert.pem"), &b.join("cert.pem")],
            rustls::ALL_VERSIONS,
            &[b"http/1.1"],
        )
    };

    // A keep-alive connection opened on A.
    let before = tls_connect(addr, trust_both()).await;
    assert_eq!(peer_certificate(&before), cert_a);
    let mut kept = Conn::open(before).await;
    assert_eq!(kept.get(APPS, "alice").await.0, 200);

    // B replaces A on disk; SIGHUP.
    install(&b.join("cert.pem"), &b.join("key.pem"));
    proxy.signal("HUP");
    proxy.wait_for_message("config reloaded", 1).await;
    proxy.wait_for_message("TLS certificate reloaded", 1).await;
    let after = tls_connect(addr, trust_both()).await;
    let served = peer_certificate(&after);
    assert_eq!(served, cert_b);
    assert_eq!(serial(&served), serial(&cert_b), "the new serial is served");
    assert_eq!(Conn::open(after).await.get(APPS, "alice").await.0, 200);
    // The connection opened before the reload goes on.
    assert_eq!(kept.get(APPS, "alice").await.0, 200);

    // A mismatched pair (C's certificate, B's key) is refused; B keeps serving.
    std::fs::copy(c.join("cert.pem"), live.join("cert.pem")).unwrap();
    proxy.signal("HUP");
    let refused = proxy
        .wait_for_message("config reload refused: keeping the running config", 1)
        .await;
    assert_eq!(refused["level"], "ERROR");
    assert_eq!(refused["fields"]["key"], "server.tls.key_file");
    let error = refused["fields"]["error"].as_str().unwrap();
    assert!(
        error.contains(&live.join("key.pem").display().to_string()),
        "{error}"
    );
    let still = tls_connect(addr, trust_both()).await;
    assert_eq!(peer_certificate(&still), cert_b);
    // An unreadable key file is refused the same way.
    std::fs::copy(b.join("cert.pem"), live.join("cert.pem")).unwrap();
    std::fs::remove_file(live.join("key.pem")).unwrap();
    proxy.signal("HUP");
    proxy
        .wait_for_message("config reload refused: keeping the running config", 2)
        .await;
    assert_eq!(
        peer_certificate(&tls_connect(addr, trust_both()).await),
        cert_b
    );
    assert_eq!(kept.get(APPS, "alice").await.0, 200);
    assert_eq!(proxy.count_logs("TLS certificate reloaded"), 1);
    // The reload kept the token cache.
    assert_eq!(mock.mint_count(), 1);

    proxy.signal("TERM");
    assert!(proxy.exit_status().await.success());
    let _ = std::fs::remove_dir_all(&dir);
}
