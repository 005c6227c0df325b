//! What the integration tests share, one module per concern: the in-process proxy and
//! stand-in (`harness`), app JWTs and signing keys (`jwt`), a JWKS server (`jwks`), the
//! built binary as a child process (`process`), a Redis server of a test's own (`redis`),
//! captured logs (`logs`), the Node.js packages (`node`), polling (`wait`) and raw HTTP/1
//! over a bare socket (`wire`).

pub(crate) mod harness;
pub(crate) mod jwks;
pub(crate) mod jwt;
pub(crate) mod logs;
pub(crate) mod node;
pub(crate) mod process;
pub(crate) mod redis;
pub(crate) mod wait;
pub(crate) mod wire;

pub(crate) use harness::{assert_error, stand_in_with, Harness, HarnessBuilder, API_KEY};
pub(crate) use jwks::JwksServer;
pub(crate) use jwt::{app_jwt, now, sign_with, TestKey, SECRET};
pub(crate) use logs::CapturedLogs;
pub(crate) use node::npm_install;
pub(crate) use wait::eventually;
