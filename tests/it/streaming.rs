//! Bodies stream through the proxy both ways without being buffered.
//!
//! Its own test binary, so the process's peak memory reflects this test alone.

use crate::support::{app_jwt, Harness};
use bytes::Bytes;
use futures_util::StreamExt;

const CHUNK: usize = 64 * 1024;
const CHUNKS: usize = 1024; // 64 MiB

fn peak_rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

fn chunk(i: usize) -> Bytes {
    Bytes::from(vec![(i % 251) as u8; CHUNK])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sixty_four_megabytes_pass_both_ways_while_memory_stays_flat() {
    let h = Harness::builder()
        .accounts(["alice"])
        .limits("max_body_bytes = 134217728")
        .start()
        .await;
    // Warm up: mint, pools, allocator.
    assert_eq!(
        h.get_as("alice", "/api/v2/public/workflow").await.status(),
        200
    );
    let before = peak_rss_kib();

    let body = reqwest::Body::wrap_stream(futures_util::stream::iter(
        (0..CHUNKS).map(|i| Ok::<_, std::io::Error>(chunk(i))),
    ));
    let response = h
        .client
        .post(h.url("/api/v2/public/workflow/echo/execute"))
        .bearer_auth(app_jwt("alice"))
        .header("content-type", "application/octet-stream")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);

    // Compare the echo byte for byte without holding it.
    let mut stream = response.bytes_stream();
    let mut offset = 0usize;
    while let Some(piece) = stream.next().await {
        let piece = piece.unwrap();
        for (k, byte) in piece.iter().enumerate() {
            let expected = (((offset + k) / CHUNK) % 251) as u8;
            assert_eq!(*byte, expected, "byte {}", offset + k);
        }
        offset += piece.len();
    }
    assert_eq!(offset, CHUNK * CHUNKS);

    let grown_mib = (peak_rss_kib() - before) / 1024;
    // Buffering either direction would hold 64 MiB at once.
    assert!(grown_mib < 24, "peak memory grew by {grown_mib} MiB");
    let recorded = h
        .mock
        .requests()
        .into_iter()
        .find(|r| r.path.ends_with("/echo/execute"))
        .unwrap();
    assert_eq!(recorded.body_len, (CHUNK * CHUNKS) as u64);
}
