//! Connections the proxy makes: to Refold (the pooled HTTP client) and to the shared store.
pub mod pool;
pub mod store;
