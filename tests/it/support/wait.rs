//! Waiting on what a test cannot await directly.

use std::time::Duration;

/// Waits (polling, at most 10 s) until `done` holds; panics naming `what` otherwise.
pub(crate) async fn eventually(what: &str, mut done: impl FnMut() -> bool) {
    for _ in 0..500 {
        if done() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("timed out waiting for {what}");
}
