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
//! The one diagram of it; [`proxy`] is the only file that knows this order.
//!
//! ```text
//! process::listener ─► process::server (TLS, watchdog)
//!   ─► process::fast (HTTP/1.1: heads parsed once by wire, bodies read in place, responses
//!      written; what it does not frame ─► hyper) or hyper (h2; HTTP/1 with the fast path
//!      off, behind the framing reader)
//!   ─► Proxy::handle
//!        cors        a page of another origin is refused; preflights answered here
//!     ─► limits      requests in flight (429)
//!     ─► framing     Content-Length with Transfer-Encoding (hyper's path), head size, declared length
//!     ─► routes      mount path, normalised path, allowlist (token-leaking routes never pass)
//!     ─► identity    the app JWT verified, the linked account derived (401)
//!     ─► binding     a query or header may name only the caller's own account (403)
//!     ─► ratelimit   the account's requests in flight and its bucket (memory or Redis)
//!     ─► tokens      in-process cache ─► shared store ─► one mint under a lease, refresh ahead
//!     ─► headers     credentials and hop-by-hop stripped, the session token set
//!     ─► body        size limit, read-ahead (kept whole for the retry, or streamed), body binding
//!     ─► upstream    forwarded over outbound::client (h1: the pool on outbound::h1 and wire;
//!                    h2: hyper-util's client, as Refold chose)
//!     ─► guard       the response scanned for the session token and API key, decoded/compressed
//!     ─► retry       INVALID_TOKEN: the token dropped everywhere, re-minted, the request sent once more
//!     ─► headers     response hop-by-hop and Set-Cookie stripped ─► cors headers added
//! ```
//!
//! ## The module map
//!
//! Layers, each using only those below it (`proxy/tests/layers.rs` fails otherwise, and on
//! any circle of modules):
//!
//! ```text
//! base (config, error, secret, clock, telemetry, wire) ◄─ outbound ◄─ steps ◄─ proxy ◄─ process
//! ```
//!
//! - [`config`]: the file and the values in it, one module per table (`config/`), the
//!   range, URL and secret checks in `config/check.rs`. Values only: the steps parse.
//! - [`error`]: [`error::ProxyError`], its status and Refold-shaped JSON body.
//! - [`secret`]: values that never print themselves; keyed account fingerprints.
//! - [`clock`]: the one clock every step tells time by (tests move it).
//! - [`telemetry`]: `metrics` (the Prometheus registry), `access` (the access log) and
//!   `traces` (OpenTelemetry spans over OTLP/HTTP, off without an endpoint).
//! - [`wire`]: the HTTP/1.1 codec of both legs, pure (no I/O): `head` (a request head
//!   parsed into slices of the read buffer, its framing decided, smuggling shapes
//!   refused, what it does not frame declined to hyper), `chunked` (chunked framing
//!   validated byte by byte), `decode` (a body taken out of its framing as it arrives),
//!   `write` (an upstream request head, framed as hyper's client frames it) and
//!   `response` (an upstream response head).
//! - [`outbound`]: connections the proxy makes. `connector` (rustls client, trust roots),
//!   `protocol` (HTTP/1.1 or h2, as Refold chose), `pool` (the forwarding pool) on `h1`
//!   (one HTTP/1.1 connection spoken with the wire codec),
//!   `client` (the clients forwarding, minting and JWKS share), `store` (Redis/Valkey, and
//!   the sealing of values at rest).
//! - [`steps`]: one module per step of the request path above: `cors`, `framing`,
//!   `routes`, `identity/` (JWT, keys, JWKS, verified cache), `binding`, `ratelimit/`
//!   (local and shared buckets), `tokens/` (cache, shared store, mint, pacer, breaker),
//!   `headers`, `body/` (read-ahead, idle timeout), `upstream`, `guard` and `encoding`
//!   (the codings it reads and writes), `retry`.
//! - [`proxy`]: the steps, in order; built once from config, swapped whole on reload.
//! - [`process`]: `listener` (the one accept loop: the public listener, the admin listener
//!   and the stand-in Refold API use it), `connection` and `watchdog` (per-connection
//!   limits and deadlines), `tls` (the server side), `fast` (the HTTP/1.1 connection
//!   loop, `server.http1_fast_path`), `server` (start, serve, drain),
//!   `admin` (`/healthz`, `/readyz`, `/metrics`, evict), `reload` (SIGHUP).
//!
//! Beside this crate: `mock/` (the stand-in Refold API), `oracles/` (independent readings
//! the fuzz targets and property tests check the steps against), `tools/` (the soak), and
//! the `refold-proxy` command at the workspace root.

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
pub mod wire;

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
