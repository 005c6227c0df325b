//! The whole-exchange differential over the seed corpus: two proxies, one with
//! `server.http1_fast_path` on and one with it off, each in front of a recording upstream,
//! get the same bytes on a fresh connection; what they forward and answer must be the
//! same but for the deliberate differences the oracle names (`refold_oracles::exchange`).

use refold_oracles::differential::{seeds, Pair};
use refold_oracles::exchange::Verdict;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seeds_are_forwarded_and_answered_alike_by_both_paths() {
    let pair = Pair::start("").await.unwrap();
    let seeds = seeds();
    assert!(seeds.len() >= 200, "{} seeds", seeds.len());
    let mut divergences = Vec::new();
    let mut answered = std::collections::BTreeMap::new();
    for (name, input) in &seeds {
        match pair.check(input).await {
            Ok(agreed) => {
                assert_ne!(agreed.verdict, Verdict::Diverged);
                answered.insert(name.clone(), agreed.hyper);
            }
            Err(divergence) => divergences.push(format!("seed {name}: {divergence}")),
        }
    }
    assert!(
        divergences.is_empty(),
        "{} of {} seeds diverge; the first:\n{}",
        divergences.len(),
        seeds.len(),
        divergences[..divergences.len().min(3)].join("\n\n")
    );
    if std::env::var_os("DIFF_SHOW").is_some() {
        for (name, exchange) in &answered {
            eprintln!("=== {name}\n{exchange}");
        }
    }
    // The runs reached the upstream, and the proxies' refusals stayed at the proxies.
    let get = &answered["get-t0-host"];
    assert_eq!(get.forwarded.messages.len(), 1, "{get}");
    assert_eq!(
        get.forwarded.messages[0].field("authorization"),
        Some("Bearer <session token>"),
        "{get}"
    );
    assert!(
        get.responses.messages[0]
            .start_line
            .starts_with("HTTP/1.1 200"),
        "{get}"
    );
    let pipelined = &answered["keep-alive-three-t1-host"];
    assert_eq!(pipelined.forwarded.messages.len(), 3, "{pipelined}");
    assert_eq!(pipelined.responses.messages.len(), 3, "{pipelined}");
    let smuggled = &answered["te-cl-t0-host"];
    assert!(smuggled.forwarded.messages.is_empty(), "{smuggled}");
    assert!(
        smuggled.responses.messages[0]
            .start_line
            .starts_with("HTTP/1.1 400"),
        "{smuggled}"
    );
}

/// Found by the fuzz target: an input that holds one upstream's address (or session token)
/// differs from the other side's only by that side's nature, so both are masked on both.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_input_holding_an_upstreams_address_is_no_divergence() {
    let pair = Pair::start("").await.unwrap();
    for upstream in pair.upstreams() {
        let input = format!(
            "POST /api/v2/public/workflow HTTP/1.1\r\nHost: a\r\nAuthorization: @AUTH@\r\n\
             Content-Type: app{upstream}lication/json\r\nContent-Length: 2\r\n\r\n{{}}"
        );
        let agreed = pair.check(input.as_bytes()).await.unwrap();
        let forwarded = &agreed.hyper.forwarded.messages;
        assert_eq!(forwarded.len(), 1, "{}", agreed.hyper);
        assert_eq!(
            forwarded[0].field("content-type"),
            Some("app<upstream>lication/json")
        );
    }
}

/// The run is worth something only if it notices a difference: two proxies that differ
/// in what they answer a browser (CORS) must be reported.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_difference_between_the_proxies_is_reported() {
    let pair = Pair::start_each(
        "",
        "[cors]\nallowed_origins = [\"https://app.example.test\"]\n",
    )
    .await
    .unwrap();
    let preflight = b"OPTIONS /api/v2/public/workflow HTTP/1.1\r\nHost: a\r\nOrigin: https://app.example.test\r\nAccess-Control-Request-Method: GET\r\n\r\n";
    let divergence = pair.check(preflight).await.unwrap_err();
    let report = divergence.to_string();
    assert!(report.contains("http1_fast_path = true"), "{report}");
    assert_ne!(divergence.hyper.responses, divergence.fast.responses);
}

/// Found by the fuzz target once the fast path served: a head malformed before its end
/// (a field line that is no field) is refused by the fast path at once, while hyper's
/// path waits for the end. The oracle allows it only as that difference.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_head_malformed_before_its_end_is_refused_early_by_the_fast_path() {
    let pair = Pair::start("").await.unwrap();
    let input =
        b"GET /api/v2/public/workflow?page=2&q=a%20b HTTP/1.1\r\nHost: api.example.test\r\n\
                  Aut/execute HTTP/1.1\r\nhorization: @AUTH@\r\nX-Part";
    let agreed = pair.check(input).await.unwrap();
    assert_eq!(
        agreed.verdict,
        Verdict::Allowed(vec![refold_oracles::exchange::Deliberate::EarlyRefusal])
    );
    // hyper's path had answered nothing yet, and nothing reached Refold on either.
    assert!(
        agreed.hyper.responses.messages.is_empty(),
        "{}",
        agreed.hyper
    );
    assert!(
        agreed.hyper.forwarded.messages.is_empty(),
        "{}",
        agreed.hyper
    );
    // The same with more fields than hyper's 100 before the head's end: 431 at once.
    let mut many =
        b"GET /api/v2/public/workflow HTTP/1.1\r\nHost: a\r\nAuthorization: @AUTH@\r\n".to_vec();
    for i in 0..120 {
        many.extend_from_slice(format!("X-Field-{i}: {i}\r\n").as_bytes());
    }
    let agreed = pair.check(&many).await.unwrap();
    assert_eq!(
        agreed.verdict,
        Verdict::Allowed(vec![refold_oracles::exchange::Deliberate::EarlyRefusal])
    );
}

/// Found by the fuzz target once the fast path served: a request refused before its
/// chunked body (with a trailer) was needed, then a pipelined request. hyper's path
/// closes after the refusal; the fast path skips the buffered body and serves the next.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_served_after_a_refused_ones_skipped_body_is_that_difference_only() {
    let pair = Pair::start("").await.unwrap();
    let input = b"POST /api/v2/public/workflow HTTP/1.1\r\nHost: a\r\nAuthorization: @AUTH@\r\n\
                  Authorization: @AUTH@\r\nTransfer-Encoding: chunked\r\n\r\n\
                  3;name=value\r\n{\"a\r\n4\r\n\":1}\r\n0\r\nX-Trailer: t\r\n\r\n\
                  GET /api/v2/public/workflow?after=1 HTTP/1.1\r\nHost: a\r\nAuthorization: @AUTH@\r\n\r\n";
    let agreed = pair.check(input).await.unwrap();
    assert_eq!(
        agreed.verdict,
        Verdict::Allowed(vec![
            refold_oracles::exchange::Deliberate::ServedAfterRefusal
        ])
    );
    // Refused for its two credentials, and nothing of it reached Refold on either path.
    let first = &agreed.hyper.responses.messages[0];
    assert!(
        first.start_line.starts_with("HTTP/1.1 400"),
        "{}",
        agreed.hyper
    );
    assert!(
        agreed
            .hyper
            .forwarded
            .messages
            .iter()
            .all(|m| !m.start_line.starts_with("POST")),
        "{}",
        agreed.hyper
    );
}

/// Found by the fuzz target once the fast path served: after a refused request, a head
/// whose version is no HTTP version. Handed to hyper, it went unanswered for a while on
/// the fast path where hyper's path answered 400 at once; the fast path now refuses such
/// a version itself (400 in the envelope), keeping hand-offs for HTTP/1.0 and the HTTP/2
/// preface.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_head_with_no_http_version_after_a_refused_request_is_refused_on_both_paths() {
    let pair = Pair::start("").await.unwrap();
    let input = b"GET /api/v2/public/workflow HTTP/1.1\r\nAuthorization: @AUTH@\r\n\
                  Authorization: @AUTH@\r\n\r\n\
                  aaaaPOST /ion: @Ai/v2/publiection: close\r\n\raaaa\naaaa";
    let agreed = pair.check(input).await.unwrap();
    assert_eq!(
        agreed.verdict,
        Verdict::Allowed(vec![refold_oracles::exchange::Deliberate::RefusalEnvelope])
    );
    assert!(agreed.hyper.closed, "{}", agreed.hyper);
    assert!(
        agreed.hyper.forwarded.messages.is_empty(),
        "{}",
        agreed.hyper
    );
}

/// Found by the fuzz target once the fast path served: both framing fields and an origin
/// the proxy does not allow. hyper's path runs the origin check first (403); the fast
/// path refuses the framing where it parses it (400). Both refuse and close.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_framing_with_a_refused_origin_is_that_difference_only() {
    let pair = Pair::start("").await.unwrap();
    let input = b"POST /api/v2/public/workflow HTTP/1.1\r\nOrigin: https://elsewhere.test\r\n\
                  Content-Type: application/json\r\nContent-Length: 3\r\n\
                  Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n";
    let agreed = pair.check(input).await.unwrap();
    assert_eq!(
        agreed.verdict,
        Verdict::Allowed(vec![
            refold_oracles::exchange::Deliberate::FramingRefusedFirst
        ])
    );
    assert!(
        agreed.hyper.forwarded.messages.is_empty(),
        "{}",
        agreed.hyper
    );
}

/// Found by the fuzz target once the fast path served: a NUL byte in a chunk extension,
/// which hyper's decoder passes over and the fast path refuses (400, nothing forwarded).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_control_byte_in_a_chunk_extension_is_refused_by_the_fast_path_only() {
    let pair = Pair::start("").await.unwrap();
    let input = b"POST /api/v2/public/workflow HTTP/1.1\r\nAuthorization: @AUTH@\r\n\
                  Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n\
                  3;nam\x00e=value\r\n{\"a\r\n4\r\n\":1}\r\n0\r\n\r\n";
    let agreed = pair.check(input).await.unwrap();
    assert_eq!(
        agreed.verdict,
        Verdict::Allowed(vec![refold_oracles::exchange::Deliberate::ChunkExtension])
    );
    // hyper's path forwarded it; the fast path forwarded nothing (the oracle checked).
    assert_eq!(agreed.hyper.forwarded.messages.len(), 1, "{}", agreed.hyper);
}
