//! Connections the proxy makes: HTTP clients (to Refold: the forwarding pool and the
//! multiplexing client; to identity providers for JWKS) and the shared store.
pub mod client;
pub mod connector;
pub mod h1;
pub mod pool;
pub mod protocol;
pub mod store;
