//! CORS in a real browser: headless Chromium runs the published frontend SDK
//! (`@cobaltio/cobalt-js@8.0.0`) cross-origin against the proxy.
//!
//! The test serves `tests/browser/index.html` (and the SDK's `cobalt.js`) from two local
//! origins, starts the stand-in upstream and a proxy whose `[cors]` allows exactly one of
//! them, and runs `tests/browser/browser.test.mjs` (playwright-core driving Debian's
//! `/usr/bin/chromium`). From the allowed origin every SDK call, preflights included,
//! succeeds; from the other the browser blocks them all. The stand-in's record then shows
//! the allowed calls carried the session token the proxy injected, and that nothing of the
//! disallowed origin's account reached it.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::support::{app_jwt, assert_error, Harness};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

/// The linked account of the page on the allowed origin.
const ALLOWED: &str = "browser-allowed";
/// The linked account of the page on the disallowed origin: nothing of it may reach Refold.
const BLOCKED: &str = "browser-blocked";
/// Debian's Chromium, the browser playwright-core drives.
const CHROMIUM: &str = "/usr/bin/chromium";

/// A tiny static HTTP server for the test page, on an origin of its own.
struct PageServer {
    /// `http://127.0.0.1:<port>`.
    origin: String,
    /// The paths it answered, in order.
    served: Arc<Mutex<Vec<String>>>,
    task: JoinHandle<()>,
}

impl PageServer {
    async fn start(dir: &Path) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let origin = format!("http://{}", listener.local_addr().unwrap());
        let served = Arc::new(Mutex::new(Vec::new()));
        let files = Arc::new(PageFiles::load(dir));
        let task = tokio::spawn({
            let served = Arc::clone(&served);
            async move {
                while let Ok((stream, _)) = listener.accept().await {
                    let served = Arc::clone(&served);
                    let files = Arc::clone(&files);
                    tokio::spawn(async move {
                        // A connection that breaks only fails the page load, which the
                        // Node script reports.
                        let _ = serve_one(stream, &files, &served).await;
                    });
                }
            }
        });
        PageServer {
            origin,
            served,
            task,
        }
    }

    fn served(&self) -> Vec<String> {
        self.served.lock().unwrap().clone()
    }
}

impl Drop for PageServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// What the page servers serve: the page and the SDK's published file.
struct PageFiles {
    page: Vec<u8>,
    sdk: Vec<u8>,
}

impl PageFiles {
    fn load(dir: &Path) -> Self {
        let read = |path: PathBuf| {
            std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        };
        PageFiles {
            page: read(dir.join("index.html")),
            sdk: read(dir.join("node_modules/@cobaltio/cobalt-js/cobalt.js")),
        }
    }
}

/// Answers one request (HTTP/1.1, `Connection: close`) from `files`.
async fn serve_one(
    mut stream: TcpStream,
    files: &PageFiles,
    served: &Mutex<Vec<String>>,
) -> std::io::Result<()> {
    let mut head = Vec::new();
    let mut buf = [0u8; 4096];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = tokio::time::timeout(Duration::from_secs(10), stream.read(&mut buf))
            .await
            .map_err(|_| std::io::ErrorKind::TimedOut)??;
        if n == 0 || head.len() > 64 * 1024 {
            return Ok(());
        }
        head.extend_from_slice(&buf[..n]);
    }
    let head = String::from_utf8_lossy(&head);
    let mut request_line = head.lines().next().unwrap_or_default().split(' ');
    let method = request_line.next().unwrap_or_default();
    let target = request_line.next().unwrap_or_default();
    let path = target.split(['?', '#']).next().unwrap_or_default();
    served.lock().unwrap().push(path.to_owned());
    let (status, content_type, body): (&str, &str, &[u8]) = match (method, path) {
        ("GET", "/" | "/index.html") => ("200 OK", "text/html; charset=utf-8", &files.page),
        ("GET", "/cobalt.js") => ("200 OK", "text/javascript; charset=utf-8", &files.sdk),
        _ => ("404 Not Found", "text/plain; charset=utf-8", b"not found"),
    };
    let response_head = format!(
        "HTTP/1.1 {status}\r\ncontent-type: {content_type}\r\ncontent-length: {}\r\n\
         cache-control: no-store\r\nconnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(response_head.as_bytes()).await?;
    stream.write_all(body).await?;
    stream.shutdown().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sdk_works_cross_origin_from_an_allowed_origin_only() {
    assert!(
        Path::new(CHROMIUM).exists(),
        "the browser test needs Chromium at {CHROMIUM} (Debian: apt-get install chromium)"
    );
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/browser");
    crate::support::npm_install(&dir, &["playwright-core", "@cobaltio/cobalt-js"]);

    let allowed = PageServer::start(&dir).await;
    let blocked = PageServer::start(&dir).await;
    let h = Harness::builder()
        .accounts([ALLOWED, BLOCKED])
        .tables(&format!(
            "[cors]\nallowed_origins = [\"{}\"]\nmax_age_s = 600\nallow_credentials = false",
            allowed.origin
        ))
        .start()
        .await;
    let base_url = format!("http://{}", h.proxy_addr);
    let allowed_jwt = app_jwt(ALLOWED);
    let blocked_jwt = app_jwt(BLOCKED);

    let node = tokio::process::Command::new("node")
        .args(["--test-reporter=spec", "browser.test.mjs"])
        .current_dir(&dir)
        .env("PROXY_BASE_URL", &base_url)
        .env("ALLOWED_ORIGIN", &allowed.origin)
        .env("BLOCKED_ORIGIN", &blocked.origin)
        .env("ALLOWED_JWT", &allowed_jwt)
        .env("BLOCKED_JWT", &blocked_jwt)
        .env("CHROMIUM", CHROMIUM)
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(Duration::from_secs(300), node)
        .await
        .expect("the browser test finishes within 5 minutes")
        .expect("node is needed for the browser test");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "browser test failed:\n{stdout}\n{stderr}"
    );
    assert!(stdout.contains("pass 2"), "{stdout}");
    println!("{stdout}");

    // The page really came from both origins, SDK file included.
    for server in [&allowed, &blocked] {
        let served = server.served();
        assert!(
            served.iter().any(|p| p == "/index.html") && served.iter().any(|p| p == "/cobalt.js"),
            "{}: {served:?}",
            server.origin
        );
    }

    // The allowed origin's calls reached the stand-in in order, each with the session token
    // the proxy injected in place of the app's JWT (the proxy's own 401 reached nothing).
    let session = format!("Bearer {}", h.mock.current_token(ALLOWED).unwrap());
    let record = h.mock.requests();
    let api: Vec<_> = record
        .iter()
        .filter(|r| r.path != "/api/v2/public/session-token")
        .collect();
    let calls: Vec<_> = api
        .iter()
        .map(|r| format!("{} {}", r.method, r.path))
        .collect();
    assert_eq!(
        calls,
        [
            "GET /api/v2/f-sdk/application",
            "GET /api/v2/f-sdk/application/freshdesk",
            "GET /api/v2/f-sdk/application/freshdesk",
            "POST /api/v2/app/freshdesk/save",
            "POST /api/v2/f-sdk/config",
            "POST /api/v2/public/workflow/echo/execute",
        ]
    );
    for r in &api {
        assert_eq!(
            r.headers["authorization"],
            session.as_str(),
            "{} {}",
            r.method,
            r.path
        );
        assert_eq!(r.linked_account_id.as_deref(), Some(ALLOWED));
    }
    let execute = api.last().unwrap();
    assert_eq!(execute.headers["slug"], "");
    assert_eq!(execute.headers["sync_execution"], "true");
    assert_eq!(h.mock.mints_for(ALLOWED), 1, "one mint served the page");

    // Nothing of the disallowed origin reached the stand-in: no call, no mint, and neither
    // app JWT anywhere in what it received.
    assert_eq!(h.mock.mints_for(BLOCKED), 0);
    assert!(h.mock.current_token(BLOCKED).is_none());
    for r in &record {
        let raw = format!(
            "{:?} {:?} {}",
            r.query,
            r.headers,
            String::from_utf8_lossy(&r.body)
        );
        assert!(
            !raw.contains(BLOCKED),
            "{} {} came from the disallowed origin's account",
            r.method,
            r.path
        );
        assert!(
            !raw.contains(&allowed_jwt) && !raw.contains(&blocked_jwt),
            "{} {} carried an app JWT",
            r.method,
            r.path
        );
    }

    // The proxy refuses the disallowed origin itself, whatever a client does with the answer:
    // its preflight and an actual request with a valid JWT get 403 and no CORS headers.
    let preflight = h
        .client
        .request(reqwest::Method::OPTIONS, h.url("/api/v2/f-sdk/application"))
        .header("origin", &blocked.origin)
        .header("access-control-request-method", "GET")
        .header("access-control-request-headers", "authorization")
        .send()
        .await
        .unwrap();
    assert!(preflight
        .headers()
        .get("access-control-allow-origin")
        .is_none());
    assert_error(preflight, 403, "CORS_ORIGIN_NOT_ALLOWED").await;
    let actual = h
        .client
        .get(h.url("/api/v2/f-sdk/application"))
        .header("origin", &blocked.origin)
        .bearer_auth(&blocked_jwt)
        .send()
        .await
        .unwrap();
    assert!(actual
        .headers()
        .get("access-control-allow-origin")
        .is_none());
    assert_error(actual, 403, "CORS_ORIGIN_NOT_ALLOWED").await;
    assert_eq!(h.mock.requests().len(), record.len(), "nothing forwarded");
    assert_eq!(h.mock.mints_for(BLOCKED), 0);

    h.stop().await;
}
