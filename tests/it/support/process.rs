//! The real `refold-proxy` binary, run on a config file of its own, with its JSON log
//! captured so tests can wait on what it reports and send it signals.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::Value;
use tokio::io::AsyncBufReadExt;

use super::{API_KEY, SECRET};

const BIN: &str = env!("CARGO_BIN_EXE_refold-proxy");

/// The admin bearer secret the binary gets in `ADMIN_TOKEN_ENV`.
pub(crate) const ADMIN_TOKEN: &str = "admin-secret-for-the-integration-tests-0123";
/// The variable `base_config` names for it.
pub(crate) const ADMIN_TOKEN_ENV: &str = "REFOLD_PROXY_TEST_ADMIN_TOKEN";

/// The account-fingerprint key the binary gets in `FINGERPRINT_KEY_ENV` (used when a
/// test's config names that variable in `server.fingerprint_key_env`).
pub(crate) const FINGERPRINT_KEY: &str = "fingerprint-key-for-the-integration-tests-0123";
/// The variable that holds it.
pub(crate) const FINGERPRINT_KEY_ENV: &str = "REFOLD_PROXY_TEST_FINGERPRINT_KEY";

/// `[server]`, `[admin]` (evict enabled) and `[upstream]` tables with both listeners on
/// `127.0.0.1:0`; tests append the other tables.
pub(crate) fn base_config(base_url: &str) -> String {
    format!(
        "[server]\nlisten = \"127.0.0.1:0\"\nshutdown_grace_s = 20\n\
         [admin]\nlisten = \"127.0.0.1:0\"\nadmin_token_env = \"{ADMIN_TOKEN_ENV}\"\n\
         [upstream]\nbase_url = \"{base_url}\"\n"
    )
}

/// A running `refold-proxy --config FILE`.
pub(crate) struct ProxyProcess {
    child: tokio::process::Child,
    dir: PathBuf,
    /// The config file: rewrite it, then send SIGHUP.
    pub(crate) config: PathBuf,
    /// The admin listener (up from the first moment).
    pub(crate) admin_addr: SocketAddr,
    logs: Arc<Mutex<Vec<Value>>>,
    /// The log pipe is closed and every line read.
    log_closed: Arc<AtomicBool>,
}

impl ProxyProcess {
    /// Starts the binary on `toml` and returns once the admin listener is up (the proxy
    /// itself may still be starting: see [`ProxyProcess::serving`]).
    pub(crate) async fn spawn(toml: &str) -> Self {
        Self::spawn_with_env(toml, &[]).await
    }

    /// [`ProxyProcess::spawn`] with more environment variables (e.g. the secrets a config
    /// names), set after the usual ones so they can also replace them.
    pub(crate) async fn spawn_with_env(toml: &str, env: &[(&str, String)]) -> Self {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "refold-proxy-test-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let config = dir.join("proxy.toml");
        std::fs::write(&config, toml).unwrap();
        let mut child = tokio::process::Command::new(BIN)
            .arg("--config")
            .arg(&config)
            .args(["--log-format", "json"])
            .env("REFOLD_API_KEY", API_KEY)
            .env("APP_JWT_SECRET", SECRET)
            .env(ADMIN_TOKEN_ENV, ADMIN_TOKEN)
            .env(FINGERPRINT_KEY_ENV, FINGERPRINT_KEY)
            .env("RUST_LOG", "info")
            // Tracing is off unless a test turns it on, whatever the test's environment says.
            .env_remove("OTEL_EXPORTER_OTLP_ENDPOINT")
            .env_remove("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
            .envs(env.iter().map(|(name, value)| (name, value)))
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let mut lines = tokio::io::BufReader::new(child.stderr.take().unwrap()).lines();
        let logs = Arc::new(Mutex::new(Vec::new()));
        let log_closed = Arc::new(AtomicBool::new(false));
        let (sink, closed) = (Arc::clone(&logs), Arc::clone(&log_closed));
        // Read the whole log, so the child never blocks on a full pipe.
        tokio::spawn(async move {
            while let Ok(Some(line)) = lines.next_line().await {
                let event = serde_json::from_str(&line).unwrap_or(Value::String(line));
                sink.lock().unwrap().push(event);
            }
            closed.store(true, Ordering::SeqCst);
        });
        let mut process = Self {
            child,
            dir,
            config,
            admin_addr: SocketAddr::from(([0, 0, 0, 0], 0)),
            logs,
            log_closed,
        };
        let up = process
            .wait_for_log("the admin listener", |e| {
                e["fields"]["admin_listen"].is_string()
            })
            .await;
        process.admin_addr = up["fields"]["admin_listen"]
            .as_str()
            .unwrap()
            .parse()
            .unwrap();
        process
    }

    /// Starts the binary on `toml` and returns once the proxy serves.
    pub(crate) async fn start(toml: &str) -> (Self, SocketAddr) {
        let mut process = Self::spawn(toml).await;
        let addr = process.serving().await;
        (process, addr)
    }

    /// Waits until the proxy serves; its public address.
    pub(crate) async fn serving(&mut self) -> SocketAddr {
        let event = self
            .wait_for_log("the public listener", |e| e["fields"]["listen"].is_string())
            .await;
        event["fields"]["listen"].as_str().unwrap().parse().unwrap()
    }

    /// The admin URL for `path`.
    pub(crate) fn admin_url(&self, path: &str) -> String {
        format!("http://{}{path}", self.admin_addr)
    }

    /// Sends `signal` (`HUP`, `TERM`, `INT`) to the process.
    pub(crate) fn signal(&self, signal: &str) {
        let pid = self.child.id().unwrap().to_string();
        let sent = std::process::Command::new("kill")
            .args([format!("-{signal}").as_str(), &pid])
            .status()
            .unwrap();
        assert!(sent.success(), "kill -{signal} {pid}");
    }

    /// Kills the process at once (SIGKILL: no drain, no cleanup, as a crash or an OOM
    /// kill would) and waits until it is gone.
    pub(crate) async fn kill(&mut self) {
        self.signal("KILL");
        self.exit_status().await;
    }

    /// Every log event so far (JSON objects; other lines as strings).
    pub(crate) fn logs(&self) -> Vec<Value> {
        self.logs.lock().unwrap().clone()
    }

    /// How many log events so far have `message`.
    pub(crate) fn count_logs(&self, message: &str) -> usize {
        self.logs()
            .iter()
            .filter(|e| e["fields"]["message"] == message)
            .count()
    }

    /// Waits (at most 30 s) for a log event matching `matches`; returns the first.
    pub(crate) async fn wait_for_log(&self, what: &str, matches: impl Fn(&Value) -> bool) -> Value {
        for _ in 0..1500 {
            // Read before searching: once closed, the search has seen every line.
            let closed = self.log_closed.load(Ordering::SeqCst);
            if let Some(event) = self.logs().into_iter().find(|e| matches(e)) {
                return event;
            }
            if closed {
                panic!(
                    "the proxy closed its log without logging {what}:\n{:#?}",
                    self.logs()
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("the proxy did not log {what}:\n{:#?}", self.logs());
    }

    /// Waits (at most 30 s) for the `n`th log event with `message`.
    pub(crate) async fn wait_for_message(&self, message: &str, n: usize) -> Value {
        for _ in 0..1500 {
            let found: Vec<Value> = self
                .logs()
                .into_iter()
                .filter(|e| e["fields"]["message"] == message)
                .collect();
            if let Some(event) = found.get(n - 1) {
                return event.clone();
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!(
            "the proxy did not log {message:?} {n} time(s):\n{:#?}",
            self.logs()
        );
    }

    /// Waits for the process to exit (a hang guard of 30 s, beyond any grace period the
    /// tests configure).
    pub(crate) async fn exit_status(&mut self) -> ExitStatus {
        tokio::time::timeout(Duration::from_secs(30), self.child.wait())
            .await
            .expect("the proxy did not exit")
            .unwrap()
    }
}

impl Drop for ProxyProcess {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
