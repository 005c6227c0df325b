//! `refold-proxy healthcheck`: one GET against the admin listener, for a container image
//! with no shell and no curl (the Dockerfile's `HEALTHCHECK`). Exit 0 on a 2xx, 1
//! otherwise, with one line on stderr saying why (main prints the error).

use std::time::Duration;

use hyper::{Request, Uri};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use refold_proxy::outbound::client::describe_client_error;
use refold_proxy::BoxError;

/// The admin listener's liveness endpoint in the shipped config (`admin.listen`).
pub(crate) const DEFAULT_URL: &str = "http://127.0.0.1:9901/healthz";

/// GETs `url` within `timeout`: `Ok` on a 2xx, otherwise why not.
pub(crate) fn run(url: &str, timeout: &str) -> Result<(), BoxError> {
    match check(url, timeout) {
        Ok(status) if status.is_success() => Ok(()),
        Ok(status) => Err(format!("healthcheck: {url} answered {status}").into()),
        Err(why) => Err(format!("healthcheck: {url}: {why}").into()),
    }
}

fn check(url: &str, timeout: &str) -> Result<hyper::StatusCode, String> {
    let timeout: Duration = refold_proxy::config::parse_duration(timeout)?;
    let uri: Uri = url.parse().map_err(|e| format!("not a URL: {e}"))?;
    // The admin listener is cleartext HTTP/1.1; TLS here would need the cert it lacks.
    if uri.scheme_str() != Some("http") {
        return Err("only http:// URLs (the admin listener is cleartext)".to_owned());
    }
    // One thread: a probe runs every few seconds and must stay cheap.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("no runtime: {e}"))?;
    runtime.block_on(async {
        let client: Client<_, String> = Client::builder(TokioExecutor::new()).build_http();
        let request = Request::get(uri)
            .header(hyper::header::USER_AGENT, "refold-proxy-healthcheck")
            .body(String::new())
            .map_err(|e| e.to_string())?;
        match tokio::time::timeout(timeout, client.request(request)).await {
            Ok(Ok(response)) => Ok(response.status()),
            Ok(Err(e)) => Err(describe_client_error(&e)),
            Err(_) => Err(format!("no answer within {timeout:?}")),
        }
    })
}
