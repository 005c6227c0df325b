//! What the proxy reports: metrics and the access log.
pub mod access;
pub mod metrics;
