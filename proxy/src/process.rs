//! The process: listeners and their accept loop, TLS, the admin listener, reloads.
pub mod admin;
pub mod connection;
pub(crate) mod fast;
pub mod listener;
pub mod reload;
pub mod server;
pub mod tls;
pub mod watchdog;
