//! The integration tests, one binary: each module is one area of the proxy, tested over
//! real sockets on `127.0.0.1:0` against the stand-in Refold (or the built binary), and
//! `support` is what they share. One binary links the dependencies once instead of once
//! per file.

#![allow(clippy::unwrap_used, reason = "a panic is a test failure")]

mod support;

mod access_log;
mod admin;
mod browser;
mod cli;
mod cors;
mod deploy;
mod differential;
mod edge_connections;
mod edge_guard;
mod edge_limits;
mod end_to_end;
mod faults;
mod http1_paths;
mod identity;
mod jwks;
mod lifecycle;
mod metrics;
mod path_properties;
mod ratelimit;
mod reload;
mod replicas;
mod sdk;
mod security;
mod selftest;
mod shared_limits;
mod shutdown;
mod streaming;
mod tls;
mod token_store;
mod tokens;
mod tracing;
mod upstream;
