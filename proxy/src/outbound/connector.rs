//! The client side of TLS and the connector every HTTP client of the proxy dials with:
//! rustls with the aws-lc-rs provider, TLS 1.2 and 1.3, the webpki roots (plus, for
//! Refold, `upstream.ca_file`), HTTP/2 when the server offers it over ALPN, HTTP/1.1
//! otherwise. The provider and the protocol versions are the public listener's too.

use std::sync::Arc;
use std::time::Duration;

use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::CertificateDer;

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
