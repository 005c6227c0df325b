//! refold-proxy

pub mod mock;
