//! The request path, one module per step. `proxy.rs` calls them in order.
pub mod binding;
pub mod body;
pub mod cors;
pub mod encoding;
pub mod framing;
pub mod guard;
pub mod headers;
pub mod identity;
pub mod ratelimit;
pub mod retry;
pub mod routes;
pub mod tokens;
pub mod upstream;
