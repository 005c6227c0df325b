//! What the proxy reports: metrics, the access log and traces.
pub mod access;
pub mod metrics;
pub mod traces;
