//! refold-proxy
