//! # refold-proxy
//!
//! An authenticating reverse proxy for the Refold API. A browser app points the Refold
//! frontend SDK at the proxy and passes **its own** user JWT where the SDK expects a
//! session token. The proxy verifies that JWT, finds the caller's linked account, looks
//! up or mints that account's Refold session token with the API key, injects it, strips
//! everything the client must not control, and forwards. The browser never holds the
//! API key or the session token, and no caller can act as another linked account.
//!
//! ## The request path
//!
//! ```text
//! client ─► server (TLS, h1/h2) ─► Proxy::handle
//!             mount ─► routes ─► identity ─► tokens ─► headers ─► upstream ─► response headers
//!                       │          │            │          │            │
//!                       │          │            │          │            └ pooled client, streamed bodies
//!                       │          │            │          └ strip credentials + hop-by-hop, set Bearer
//!                       │          │            └ cache or single-flight mint, refresh ahead
//!                       │          └ verify the app JWT, derive the linked account
//!                       └ token-leaking routes never pass
//! ```
//!
//! ## Modules
//! - [`config`]: the file schema and its validation into [`config::Config`].
//! - [`error`]: [`error::ProxyError`], its status and Refold-shaped JSON body.
//! - [`server`]: accept loop, HTTP/1.1 + h2c, graceful drain; `run` starts and stops it all.
//! - `watchdog`: each public connection's first-request and idle deadlines.
//! - [`tls`]: HTTPS on the public listener (certificate reload), upstream CA roots, gen-cert.
//! - [`admin`]: `/healthz`, `/readyz`, `/metrics` and token eviction on their own listener.
//! - [`metrics`]: the Prometheus registry and every metric the proxy reports.
//! - [`reload`]: SIGHUP re-reads the config and swaps the proxy, keeping the token cache.
//! - [`proxy`]: the request path, in order.
//! - [`routes`], [`identity`], [`tokens`], [`headers`], [`upstream`]: one step each.
//! - [`guard`]: the response guard; [`encoding`]: the content codings it reads and writes.
//! - [`secret`]: values that never print themselves.

pub mod clock;
pub mod config;
pub mod error;
mod keyed_hash;
pub mod outbound;
pub mod process;
pub mod proxy;
pub mod secret;
pub mod steps;
pub mod telemetry;

use bytes::Bytes;
use http_body_util::BodyExt;

/// A boxed error, as bodies and clients report them.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The body type of everything the proxy sends: streamed from the other side, or its own.
pub type ProxyBody = http_body_util::combinators::UnsyncBoxBody<Bytes, BoxError>;

/// A complete in-memory body.
pub fn full_body(bytes: impl Into<Bytes>) -> ProxyBody {
    http_body_util::Full::new(bytes.into())
        .map_err(|never| match never {})
        .boxed_unsync()
}
