//! A real `redis-server` of a test's own: on a free loopback port, with no persistence,
//! stopped by PID (or killed, and started again on the same port, to test an outage).

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The sealing keys the binary gets in `STORE_KEYS_ENV` (`id:base64`, first seals).
pub(crate) const STORE_KEYS: &str = "k1:AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";
/// The variable `redis_tables` names for them.
pub(crate) const STORE_KEYS_ENV: &str = "REFOLD_PROXY_TEST_STORE_KEYS";
/// The variable `redis_tables` names for the server's URL.
pub(crate) const REDIS_URL_ENV: &str = "REFOLD_PROXY_TEST_REDIS_URL";

/// A running `redis-server`. Stopped when dropped.
pub(crate) struct RedisServer {
    child: Option<Child>,
    port: u16,
}

impl RedisServer {
    /// Starts a server on a free loopback port and waits until it answers `PING`.
    pub(crate) fn start() -> Self {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut server = Self { child: None, port };
        server.restart();
        server
    }

    /// `redis://127.0.0.1:PORT`.
    pub(crate) fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Kills the server at once (SIGKILL): an outage, with every key lost.
    pub(crate) fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the server again on the same port (empty: nothing persists).
    pub(crate) fn restart(&mut self) {
        self.kill();
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string()])
            .args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .args(["--protected-mode", "no", "--loglevel", "warning"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server is installed (.ci/run installs it)");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.command(&["PING"]).as_deref() != Some("PONG") {
            assert!(
                Instant::now() < deadline,
                "redis-server did not answer PING"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Runs one command with `redis-cli` and returns its raw output, trimmed (`None` if
    /// the server did not answer).
    pub(crate) fn command(&self, args: &[&str]) -> Option<String> {
        let out = Command::new("redis-cli")
            .args(["-h", "127.0.0.1", "-p", &self.port.to_string(), "--raw"])
            .args(args)
            .output()
            .ok()?;
        let text = String::from_utf8_lossy(&out.stdout).trim().to_owned();
        (out.status.success() && !text.starts_with("Could not connect")).then_some(text)
    }

    /// Every key and its raw value, as bytes (strings only; other types by their name).
    pub(crate) fn dump(&self) -> Vec<(String, Vec<u8>)> {
        let keys = self.command(&["--scan"]).unwrap_or_default();
        keys.lines()
            .filter(|k| !k.is_empty())
            .map(|key| {
                let out = Command::new("redis-cli")
                    .args(["-h", "127.0.0.1", "-p", &self.port.to_string(), "--raw"])
                    .args(["GET", key])
                    .output()
                    .map(|o| o.stdout)
                    .unwrap_or_default();
                let value = out.strip_suffix(b"\n").map(<[u8]>::to_vec).unwrap_or(out);
                (key.to_owned(), value)
            })
            .collect()
    }

    /// A `[redis]` table for this server (the test sets `tokens.store = "redis"`), for a proxy
    /// given `REDIS_URL_ENV` and `STORE_KEYS_ENV` (see [`RedisServer::env`]).
    pub(crate) fn tables(&self) -> String {
        format!(
            "[redis]\nurl_env = \"{REDIS_URL_ENV}\"\nencryption_keys_env = \"{STORE_KEYS_ENV}\"\n"
        )
    }

    /// The environment a proxy needs for [`RedisServer::tables`].
    pub(crate) fn env(&self) -> [(&'static str, String); 2] {
        [
            (REDIS_URL_ENV, self.url()),
            (STORE_KEYS_ENV, STORE_KEYS.to_owned()),
        ]
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}
