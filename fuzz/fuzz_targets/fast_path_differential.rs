//! The whole-exchange differential of the two HTTP/1.1 paths: the same bytes go to a
//! fresh connection of a proxy with `server.http1_fast_path` off (hyper) and of one with
//! it on, each in front of its own recording upstream; what each upstream received and
//! what each client read (split into messages, normalised: request ids, dates, the
//! upstream's address, the session token) must be the same, but for the deliberate
//! differences `refold_oracles::exchange::Deliberate` names. Anything else panics with
//! both exchanges printed.
//!
//! `@AUTH@` and `@AUTH2@` in an input stand for two callers' valid `Authorization`
//! values. An input whose first byte is `0x01` has its bytes from `0xc0` on expanded to
//! the pieces below (request lines, framing fields, chunk frames), so the fuzzer builds
//! whole requests in a few bytes.
//!
//! The proxies, their upstreams and the tokio runtime they run on start once, on the
//! first input, and serve every input after it.

#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use refold_oracles::differential::Pair;
use refold_oracles::expand_pieces;
use tokio::runtime::Runtime;
use tokio::signal::unix::{signal, Signal, SignalKind};

/// Inputs longer than this are cut: the heads and bodies that matter fit.
const MAX_INPUT: usize = 64 * 1024;

const PIECES: &[&[u8]] = &[
    b"GET /api/v2/public/workflow HTTP/1.1\r\n",
    b"POST /api/v2/public/workflow HTTP/1.1\r\n",
    b"POST /api/v2/public/workflow/chunk-wf/execute HTTP/1.1\r\n",
    b"HEAD /api/v2/f-sdk/application/chunked-app HTTP/1.1\r\n",
    b"Authorization: @AUTH@\r\n",
    b"Authorization: @AUTH2@\r\n",
    b"Host: api.example.test\r\n",
    b"Content-Length: ",
    b"Transfer-Encoding: chunked\r\n",
    b"Connection: close\r\n",
    b"Connection: keep-alive\r\n",
    b"Expect: 100-continue\r\n",
    b"Upgrade: websocket\r\n",
    b"\r\n",
    b"0\r\n\r\n",
    b"5\r\nhello\r\n",
    b" HTTP/1.0\r\n",
    b"\n",
];

fn pair() -> &'static (Runtime, Pair, Signal) {
    static PAIR: OnceLock<(Runtime, Pair, Signal)> = OnceLock::new();
    PAIR.get_or_init(|| {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("a tokio runtime");
        // libFuzzer's `main` is not Rust's, so SIGPIPE keeps its default action and a
        // write to a connection the peer closed would end the run; with a handler of its
        // own the write fails with EPIPE instead, as it does in a Rust program.
        let sigpipe = {
            let _entered = runtime.enter();
            signal(SignalKind::pipe()).expect("a SIGPIPE handler")
        };
        let pair = runtime
            .block_on(Pair::start(""))
            .unwrap_or_else(|e| panic!("the proxies did not start: {e}"));
        (runtime, pair, sigpipe)
    })
}

fuzz_target!(|data: &[u8]| {
    let (expand, raw) = match data.split_first() {
        Some((0x01, rest)) => (true, rest),
        _ => (false, data),
    };
    let input = expand_pieces(raw, PIECES, expand);
    let input = &input[..input.len().min(MAX_INPUT)];
    if input.is_empty() {
        return;
    }
    let (runtime, pair, _) = pair();
    if let Err(divergence) = runtime.block_on(pair.check(input)) {
        panic!("{divergence}");
    }
});
