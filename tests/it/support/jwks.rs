//! A JSON Web Key Set server the identity tests point the proxy at.

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::TcpListener;

use super::jwt::TestKey;

/// A JSON Web Key Set server on `127.0.0.1:0`. It counts the requests it gets, serves a
/// set the test can swap, and can be taken down (it then drops every request unanswered).
pub(crate) struct JwksServer {
    pub(crate) addr: SocketAddr,
    state: Arc<JwksServerState>,
    task: tokio::task::JoinHandle<()>,
}

struct JwksServerState {
    body: std::sync::Mutex<bytes::Bytes>,
    fetches: std::sync::atomic::AtomicUsize,
    down: std::sync::atomic::AtomicBool,
}

impl JwksServer {
    /// Serves a set of `keys`' public halves.
    pub(crate) async fn start(keys: &[&TestKey]) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(JwksServerState {
            body: std::sync::Mutex::new(jwks_body(keys)),
            fetches: std::sync::atomic::AtomicUsize::new(0),
            down: std::sync::atomic::AtomicBool::new(false),
        });
        let shared = Arc::clone(&state);
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let state = Arc::clone(&shared);
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |_request| {
                        let state = Arc::clone(&state);
                        async move {
                            state
                                .fetches
                                .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                            if state.down.load(std::sync::atomic::Ordering::SeqCst) {
                                return Err(std::io::Error::other("JWKS server is down"));
                            }
                            let body = state.body.lock().unwrap().clone();
                            Ok(http::Response::builder()
                                .header("content-type", "application/json")
                                .body(http_body_util::Full::new(body))
                                .unwrap())
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Self { addr, state, task }
    }

    /// The URL of the set.
    pub(crate) fn url(&self) -> String {
        format!("http://{}/.well-known/jwks.json", self.addr)
    }

    /// How many requests (answered or not) the server has received.
    pub(crate) fn fetches(&self) -> usize {
        self.state.fetches.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Serves `keys` from now on.
    pub(crate) fn serve(&self, keys: &[&TestKey]) {
        *self.state.body.lock().unwrap() = jwks_body(keys);
    }

    /// Takes the server down (`true`) or brings it back.
    pub(crate) fn set_down(&self, down: bool) {
        self.state
            .down
            .store(down, std::sync::atomic::Ordering::SeqCst);
    }
}

impl Drop for JwksServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn jwks_body(keys: &[&TestKey]) -> bytes::Bytes {
    let keys: Vec<_> = keys.iter().map(|k| k.jwk()).collect();
    serde_json::json!({ "keys": keys }).to_string().into()
}
