//! Per-account rate limits and the in-flight cap, over real sockets.

use std::time::Duration;

use crate::support::{assert_error, Harness};
use futures_util::future::join_all;

const PATH: &str = "/api/v2/public/workflow";

fn forwarded_for(h: &Harness, account: &str) -> usize {
    h.mock
        .requests()
        .iter()
        .filter(|r| r.path == PATH && r.linked_account_id.as_deref() == Some(account))
        .count()
}

// Paused time: the burst takes no time, so nothing refills during it, and the refill is
// the one second the test advances. Safe over real sockets because the advance stays
// below the listener's header-read timeout (10 s), which would close idle keep-alives.
#[tokio::test(start_paused = true)]
async fn a_burst_is_cut_at_its_size_other_accounts_are_unaffected_and_buckets_refill() {
    let h = Harness::builder()
        .accounts(["noisy", "quiet"])
        .limits("per_account_rps = 2.0\nper_account_burst = 5")
        .start()
        .await;
    let mut statuses = Vec::new();
    for _ in 0..8 {
        statuses.push(h.get_as("noisy", PATH).await);
    }
    let ok = statuses.iter().filter(|r| r.status() == 200).count();
    assert_eq!(ok, 5, "the burst is 5");
    for response in statuses.into_iter().filter(|r| r.status() != 200) {
        let retry_after: u64 = response.headers()["retry-after"]
            .to_str()
            .unwrap()
            .parse()
            .unwrap();
        assert!((1..=2).contains(&retry_after));
        assert_error(response, 429, "RATE_LIMITED").await;
    }
    assert_eq!(
        forwarded_for(&h, "noisy"),
        5,
        "refused requests were forwarded"
    );
    // Another account has its own bucket.
    assert_eq!(h.get_as("quiet", PATH).await.status(), 200);

    // One second at 2/s refills two requests, not more.
    tokio::time::advance(Duration::from_secs(1)).await;
    assert_eq!(h.get_as("noisy", PATH).await.status(), 200);
    assert_eq!(h.get_as("noisy", PATH).await.status(), 200);
    assert_eq!(h.get_as("noisy", PATH).await.status(), 429);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_beyond_max_in_flight_are_429() {
    let h = Harness::builder()
        .accounts(["alice"])
        .limits("max_in_flight = 2")
        .start()
        .await;
    assert_eq!(h.get_as("alice", PATH).await.status(), 200);
    h.mock.faults().set_api_latency(Duration::from_millis(500));
    let responses = join_all((0..6).map(|_| h.get_as("alice", PATH))).await;
    let ok = responses.iter().filter(|r| r.status() == 200).count();
    assert_eq!(ok, 2, "two slots");
    for response in responses.into_iter().filter(|r| r.status() != 200) {
        assert_error(response, 429, "RATE_LIMITED").await;
    }
}
