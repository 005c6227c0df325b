//! TLS: the public listener's certificate (loaded, checked, swapped on reload) and its
//! handshake, the extra CA roots trusted for Refold, and self-signed development
//! certificates (`refold-proxy gen-cert`).
//!
//! The public listener speaks TLS 1.2 and 1.3 only (rustls with the aws-lc-rs provider)
//! and offers ALPN `h2` and `http/1.1`. The handshake runs in the connection's own task
//! under `server.tls.handshake_timeout_ms` (and within `limits.header_read_timeout_ms`
//! of the accept, which the listener enforces around it), so a slow client holds one
//! connection slot for the shorter of the two and never the accept loop. The certificate lives behind a
//! [`CertResolver`]: a reload swaps it for new handshakes while open connections keep
//! the session they have.

use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::PrivateKeyDer;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::server::TlsStream;

use crate::config::{ConfigError, TlsConfig};
use crate::outbound::connector::{parse_certificates, provider, PROTOCOL_VERSIONS};

/// Which file of a certificate/key pair a [`PairError`] is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PairFile {
    Cert,
    Key,
}

/// Why a certificate/key pair cannot be served. Every variant names the file at fault.
#[derive(Debug, thiserror::Error)]
pub enum PairError {
    /// A file could not be read.
    #[error("cannot read {}: {source}", path.display())]
    Read {
        file: PairFile,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// A file is not the PEM it should be, or holds none of what it should.
    #[error("{}: {message}", path.display())]
    Pem {
        file: PairFile,
        path: PathBuf,
        message: String,
    },
    /// The private key is of a kind the provider cannot sign with.
    #[error("{}: unsupported private key: {source}", path.display())]
    Key {
        path: PathBuf,
        #[source]
        source: rustls::Error,
    },
    /// The key is not the certificate's, or the certificate does not parse.
    #[error("{} is not the private key of the certificate in {} ({source})", key.display(), cert.display())]
    Mismatch {
        cert: PathBuf,
        key: PathBuf,
        #[source]
        source: rustls::Error,
    },
}

impl PairError {
    /// The file the error is about.
    pub fn file(&self) -> PairFile {
        match self {
            Self::Read { file, .. } | Self::Pem { file, .. } => *file,
            Self::Key { .. } | Self::Mismatch { .. } => PairFile::Key,
        }
    }
}

/// Loads a certificate chain (end-entity first) and its private key, and checks that the
/// key is the certificate's.
pub fn load_pair(cert_file: &Path, key_file: &Path) -> Result<Arc<CertifiedKey>, PairError> {
    let cert_pem = std::fs::read(cert_file).map_err(|source| PairError::Read {
        file: PairFile::Cert,
        path: cert_file.to_owned(),
        source,
    })?;
    let chain = parse_certificates(&cert_pem).map_err(|message| PairError::Pem {
        file: PairFile::Cert,
        path: cert_file.to_owned(),
        message,
    })?;
    let key_pem = std::fs::read(key_file).map_err(|source| PairError::Read {
        file: PairFile::Key,
        path: key_file.to_owned(),
        source,
    })?;
    let key = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| PairError::Pem {
        file: PairFile::Key,
        path: key_file.to_owned(),
        message: format!("no PEM private key (PKCS#8, PKCS#1 or SEC1): {e}"),
    })?;
    let signing_key = provider()
        .key_provider
        .load_private_key(key)
        .map_err(|source| PairError::Key {
            path: key_file.to_owned(),
            source,
        })?;
    let certified = CertifiedKey::new(chain, signing_key);
    // Strict: a key whose public half cannot be compared is refused too.
    certified
        .keys_match()
        .map_err(|source| PairError::Mismatch {
            cert: cert_file.to_owned(),
            key: key_file.to_owned(),
            source,
        })?;
    Ok(Arc::new(certified))
}

/// The pair `[server.tls]` names, read and checked; the error names the key of the file
/// at fault. Run by `--check-config`, at start-up and on every reload.
pub fn certified_key(config: &TlsConfig) -> Result<Arc<CertifiedKey>, ConfigError> {
    load_pair(&config.cert_file, &config.key_file).map_err(|e| {
        let key = match e.file() {
            PairFile::Cert => "server.tls.cert_file",
            PairFile::Key => "server.tls.key_file",
        };
        ConfigError::invalid(key, e.to_string())
    })
}

/// The certificate new handshakes get; swapped whole on reload.
#[derive(Debug)]
pub struct CertResolver {
    current: RwLock<Arc<CertifiedKey>>,
}

impl CertResolver {
    /// Serves `key` until replaced.
    pub fn new(key: Arc<CertifiedKey>) -> Self {
        Self {
            current: RwLock::new(key),
        }
    }

    /// The certificate served now.
    pub fn current(&self) -> Arc<CertifiedKey> {
        // A poisoned lock still holds a whole `Arc`: keep serving with it.
        Arc::clone(&self.current.read().unwrap_or_else(|p| p.into_inner()))
    }

    /// Serves `key` to handshakes from now on; returns whether it differs from the one
    /// served before.
    pub fn replace(&self, key: Arc<CertifiedKey>) -> bool {
        let mut current = self.current.write().unwrap_or_else(|p| p.into_inner());
        let changed = current.cert != key.cert;
        let previous = std::mem::replace(&mut *current, key);
        drop(current);
        // Outside the lock: connections mid-handshake may still hold the previous one.
        drop(previous);
        changed
    }
}

impl ResolvesServerCert for CertResolver {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current())
    }
}

/// The public listener's TLS side: the rustls acceptor, its certificate and the handshake
/// timeout. Clones share all three, so a reload reaches every connection opened after it.
#[derive(Clone)]
pub struct TlsAcceptor {
    acceptor: tokio_rustls::TlsAcceptor,
    certs: Arc<CertResolver>,
    handshake_timeout_ms: Arc<AtomicU64>,
}

impl std::fmt::Debug for TlsAcceptor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsAcceptor")
            .field("handshake_timeout_ms", &self.handshake_timeout_ms)
            .finish_non_exhaustive()
    }
}

impl TlsAcceptor {
    /// An acceptor serving `config`'s certificate (read from its files): TLS 1.2 and 1.3,
    /// ALPN `h2` and `http/1.1`, no client certificates.
    pub fn new(config: &TlsConfig) -> Result<Self, crate::BoxError> {
        let certs = Arc::new(CertResolver::new(certified_key(config)?));
        let mut server = rustls::ServerConfig::builder_with_provider(provider())
            .with_protocol_versions(PROTOCOL_VERSIONS)?
            .with_no_client_auth()
            .with_cert_resolver(Arc::clone(&certs) as Arc<dyn ResolvesServerCert>);
        server.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(Self {
            acceptor: tokio_rustls::TlsAcceptor::from(Arc::new(server)),
            certs,
            handshake_timeout_ms: Arc::new(AtomicU64::new(millis(config.handshake_timeout))),
        })
    }

    /// Runs the server handshake on `stream` under the handshake timeout. Failures are
    /// the client's (a plain-HTTP request, an old protocol, a timeout): logged at debug.
    pub async fn accept(
        &self,
        stream: TcpStream,
        peer: SocketAddr,
    ) -> Option<TlsStream<TcpStream>> {
        let timeout = Duration::from_millis(self.handshake_timeout_ms.load(Ordering::Relaxed));
        match tokio::time::timeout(timeout, self.acceptor.accept(stream)).await {
            Ok(Ok(stream)) => Some(stream),
            Ok(Err(e)) => {
                tracing::debug!(%peer, error = %e, "TLS handshake failed");
                None
            }
            Err(_) => {
                tracing::debug!(%peer, timeout_ms = timeout.as_millis(), "TLS handshake timed out");
                None
            }
        }
    }

    /// Applies a reloaded `[server.tls]`: `key` (its pair, as [`certified_key`] read it)
    /// to new handshakes, its timeout to new connections. Returns whether the
    /// certificate changed.
    pub fn reload(&self, config: &TlsConfig, key: Arc<CertifiedKey>) -> bool {
        self.handshake_timeout_ms
            .store(millis(config.handshake_timeout), Ordering::Relaxed);
        self.certs.replace(key)
    }

    /// The certificate served now.
    pub fn certificate(&self) -> Arc<CertifiedKey> {
        self.certs.current()
    }
}

fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

/// A public connection: plain TCP, or TLS over it.
#[derive(Debug)]
pub enum ServerStream {
    Plain(TcpStream),
    // Boxed: a TLS session is large, plain connections need not carry its size.
    Tls(Box<TlsStream<TcpStream>>),
}

impl ServerStream {
    /// The protocol agreed over ALPN, if any.
    pub fn alpn_protocol(&self) -> Option<&[u8]> {
        match self {
            Self::Plain(_) => None,
            Self::Tls(tls) => tls.get_ref().1.alpn_protocol(),
        }
    }
}

impl AsyncRead for ServerStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Self::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for ServerStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Self::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Self::Tls(s) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Self::Plain(s) => s.is_write_vectored(),
            Self::Tls(s) => s.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_flush(cx),
            Self::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Self::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

/// A fresh self-signed certificate and its private key, both PEM.
pub struct SelfSigned {
    pub cert_pem: String,
    pub key_pem: String,
}

impl std::fmt::Debug for SelfSigned {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SelfSigned")
            .field("cert_pem", &self.cert_pem)
            .field("key_pem", &"<redacted>")
            .finish()
    }
}

/// Days a generated certificate is valid for (under the 398 days browsers accept).
const SELF_SIGNED_DAYS: i64 = 365;

/// Makes a self-signed server certificate for `hosts` (DNS names, or IP addresses which
/// become IP SANs) with a new ECDSA P-256 key and a random serial, valid from a day ago
/// (clock skew) for a year. For development and trials: nothing trusts it by default.
pub fn self_signed(hosts: &[String]) -> Result<SelfSigned, rcgen::Error> {
    use rcgen::{
        CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
        KeyUsagePurpose, SerialNumber,
    };
    let mut params = CertificateParams::new(hosts.to_vec())?;
    let mut name = DistinguishedName::new();
    name.push(
        DnType::CommonName,
        hosts.first().map_or("refold-proxy", String::as_str),
    );
    params.distinguished_name = name;
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    params.serial_number = Some(SerialNumber::from_slice(&random_serial()?));
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX));
    let day = 86_400;
    let at =
        |secs: i64| time::OffsetDateTime::from_unix_timestamp(secs).map_err(|_| rcgen::Error::Time);
    params.not_before = at(now - day)?;
    params.not_after = at(now + SELF_SIGNED_DAYS * day)?;
    let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
    let cert = params.self_signed(&key)?;
    Ok(SelfSigned {
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
    })
}

/// 16 random bytes, the first below 0x80: a positive serial of full length (RFC 5280
/// §4.1.2.2 allows up to 20 octets).
fn random_serial() -> Result<[u8; 16], rcgen::Error> {
    let mut serial = [0u8; 16];
    provider()
        .secure_random
        .fill(&mut serial)
        .map_err(|_| rcgen::Error::RingUnspecified)?;
    serial[0] = (serial[0] & 0x7f) | 0x01;
    Ok(serial)
}

/// Where [`write_self_signed`] put the pair.
#[derive(Debug, Clone)]
pub struct WrittenPair {
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
}

/// Makes a [`self_signed`] pair for `hosts` and writes it to `dir/cert.pem` and
/// `dir/key.pem` (created with mode 0600 on unix), creating `dir` if needed. Existing
/// files are kept unless `overwrite`; each file is replaced whole (written beside it,
/// then renamed), so a reload never reads half a file.
pub fn write_self_signed(
    hosts: &[String],
    dir: &Path,
    overwrite: bool,
) -> Result<WrittenPair, crate::BoxError> {
    if let Some(bad) = hosts
        .iter()
        .find(|h| rustls::pki_types::ServerName::try_from(h.as_str()).is_err())
    {
        return Err(format!("--host {bad:?} is neither a DNS name nor an IP address").into());
    }
    std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let dir =
        std::fs::canonicalize(dir).map_err(|e| format!("cannot resolve {}: {e}", dir.display()))?;
    let pair = WrittenPair {
        cert_file: dir.join("cert.pem"),
        key_file: dir.join("key.pem"),
    };
    if !overwrite {
        for path in [&pair.cert_file, &pair.key_file] {
            if path.exists() {
                return Err(
                    format!("{} exists; pass --force to replace it", path.display()).into(),
                );
            }
        }
    }
    let generated = self_signed(hosts)?;
    // A reload between the two renames sees a mismatched pair: it is refused, and the
    // running pair keeps serving.
    replace_file(&pair.key_file, generated.key_pem.as_bytes(), true)?;
    replace_file(&pair.cert_file, generated.cert_pem.as_bytes(), false)?;
    Ok(pair)
}

fn replace_file(path: &Path, contents: &[u8], private: bool) -> Result<(), crate::BoxError> {
    use std::io::Write as _;
    let mut staging = path.as_os_str().to_owned();
    staging.push(".tmp");
    let staging = PathBuf::from(staging);
    let _ = std::fs::remove_file(&staging);
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        options.mode(if private { 0o600 } else { 0o644 });
    }
    #[cfg(not(unix))]
    let _ = private;
    let write = |options: &std::fs::OpenOptions| -> io::Result<()> {
        let mut file = options.open(&staging)?;
        file.write_all(contents)?;
        file.sync_all()?;
        std::fs::rename(&staging, path)
    };
    write(&options).map_err(|e| {
        let _ = std::fs::remove_file(&staging);
        format!("cannot write {}: {e}", path.display()).into()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn repo(path: &str) -> PathBuf {
        Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/..")).join(path)
    }

    fn pair(cert: &str, key: &str) -> TlsConfig {
        TlsConfig {
            cert_file: repo(cert),
            key_file: repo(key),
            handshake_timeout: Duration::from_secs(10),
        }
    }

    #[test]
    fn the_dev_pair_loads() {
        let key = certified_key(&pair("certs/localhost.pem", "certs/localhost.key.pem")).unwrap();
        assert_eq!(key.cert.len(), 1);
    }

    #[test]
    fn bad_tls_settings_name_the_key_and_the_file() {
        let cases = [
            (
                pair("certs/missing.pem", "certs/localhost.key.pem"),
                "server.tls.cert_file",
                "missing.pem",
            ),
            (
                pair("certs/localhost.pem", "certs/missing.key.pem"),
                "server.tls.key_file",
                "missing.key.pem",
            ),
            // A key where the certificate should be, and the other way round.
            (
                pair("certs/localhost.key.pem", "certs/localhost.key.pem"),
                "server.tls.cert_file",
                "no PEM certificate",
            ),
            (
                pair("certs/localhost.pem", "certs/localhost.pem"),
                "server.tls.key_file",
                "localhost.pem",
            ),
            // The CA's key is not the localhost certificate's.
            (
                pair("certs/localhost.pem", "certs/dev-ca.key.pem"),
                "server.tls.key_file",
                "is not the private key of the certificate in",
            ),
        ];
        for (config, key, detail) in cases {
            let err = certified_key(&config).unwrap_err().to_string();
            assert!(
                err.contains(key) && err.contains(detail),
                "{config:?} gave {err:?}"
            );
            assert!(!err.contains("PRIVATE"), "{err}");
        }
    }
}
