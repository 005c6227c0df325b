//! The client side of TLS and the connector every HTTP client of the proxy dials with:
//! rustls with the aws-lc-rs provider, TLS 1.2 and 1.3, the webpki roots (plus, for
//! Refold, `upstream.ca_file`), HTTP/2 when the server offers it over ALPN, HTTP/1.1
//! otherwise. The provider and the protocol versions are the public listener's too.

use std::sync::Arc;
use std::time::Duration;

use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;

use crate::config::{ConfigError, PemFile};

/// The protocol versions both sides of the proxy speak: TLS 1.2 and 1.3, nothing older.
pub static PROTOCOL_VERSIONS: &[&rustls::SupportedProtocolVersion] =
    &[&rustls::version::TLS13, &rustls::version::TLS12];

/// The crypto provider of every TLS connection the proxy makes or accepts.
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

/// The rustls client configuration: [`provider`], [`PROTOCOL_VERSIONS`], the webpki
/// roots plus `extra_roots`, no client certificate.
pub fn client_tls(
    extra_roots: &[CertificateDer<'static>],
) -> Result<rustls::ClientConfig, rustls::Error> {
    let mut roots =
        rustls::RootCertStore::from_iter(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    for root in extra_roots {
        roots.add(root.clone())?;
    }
    Ok(rustls::ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(PROTOCOL_VERSIONS)?
        .with_root_certificates(roots)
        .with_no_client_auth())
}

/// A connector for `http://` and `https://` ([`client_tls`] with the webpki roots;
/// HTTP/2 when the server offers it over ALPN).
pub fn https_connector(
    connect_timeout: Duration,
) -> Result<HttpsConnector<HttpConnector>, rustls::Error> {
    https_connector_trusting(connect_timeout, &[])
}

/// [`https_connector`] that also trusts the CA certificates `extra_roots`.
pub fn https_connector_trusting(
    connect_timeout: Duration,
    extra_roots: &[CertificateDer<'static>],
) -> Result<HttpsConnector<HttpConnector>, rustls::Error> {
    let mut http = HttpConnector::new();
    http.enforce_http(false);
    http.set_nodelay(true);
    http.set_connect_timeout(Some(connect_timeout));
    http.set_keepalive(Some(Duration::from_secs(60)));
    Ok(hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(client_tls(extra_roots)?)
        .https_or_http()
        .enable_http1()
        .enable_http2()
        .wrap_connector(http))
}

/// The certificates of a PEM file (at least one), or why not.
pub fn parse_certificates(pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("not a PEM certificate file: {e}"))?;
    if certs.is_empty() {
        return Err("holds no PEM certificate (-----BEGIN CERTIFICATE-----)".into());
    }
    Ok(certs)
}

/// The CA certificates of `upstream.ca_file` (one or more), each checked to be usable
/// as a trust anchor; the error names the key and the file.
pub fn trust_anchors(ca: &PemFile) -> Result<Vec<CertificateDer<'static>>, ConfigError> {
    const KEY: &str = "upstream.ca_file";
    let path = ca.path.display();
    let certs = parse_certificates(&ca.pem)
        .map_err(|e| ConfigError::invalid(KEY, format!("{path}: {e}")))?;
    let mut store = rustls::RootCertStore::empty();
    for (i, cert) in certs.iter().enumerate() {
        store.add(cert.clone()).map_err(|e| {
            ConfigError::invalid(
                KEY,
                format!(
                    "{path}: certificate {} is not a usable CA certificate: {e}",
                    i + 1
                ),
            )
        })?;
    }
    Ok(certs)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    fn repo(path: &str) -> PathBuf {
        PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/..")).join(path)
    }

    #[test]
    fn upstream_ca_file_adds_trust_anchors() {
        let read = |path: &str| PemFile {
            path: repo(path),
            pem: std::fs::read(repo(path)).unwrap(),
        };
        assert_eq!(trust_anchors(&read("certs/dev-ca.pem")).unwrap().len(), 1);
        let err = trust_anchors(&read("certs/dev-ca.key.pem"))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("upstream.ca_file") && err.contains("no PEM certificate"),
            "{err}"
        );
        assert!(
            err.contains("dev-ca.key.pem") && !err.contains("PRIVATE"),
            "{err}"
        );
    }
}
