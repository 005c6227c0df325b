//! The command line: `--check-config`, `sign-jwt`, `gen-cert` and `demo`, run as the real
//! binary.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use tokio::io::AsyncBufReadExt;

use crate::support::Harness;

const BIN: &str = env!("CARGO_BIN_EXE_refold-proxy");
const SECRET: &str = "cli-test-signing-secret-0123456789abcdef";

fn command() -> Command {
    let mut c = Command::new(BIN);
    c.env("REFOLD_API_KEY", "pk_cli_test_key")
        .env("APP_JWT_SECRET", SECRET)
        .env("RUST_LOG", "warn");
    c
}

fn write_config(name: &str, text: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("refold-proxy-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

#[test]
fn the_shipped_config_validates() {
    let shipped = Path::new(env!("CARGO_MANIFEST_DIR")).join("proxy.toml");
    let out = command()
        .arg("--check-config")
        .arg(&shipped)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("https://app.refold.ai"), "{stdout}");
}

#[test]
fn bad_configs_fail_naming_the_key() {
    let cases = [
        (
            "unknown-key.toml",
            "[server]\nlisten = \"0.0.0.0:8080\"\nlisen = 1\n",
            "lisen",
        ),
        (
            "bad-address.toml",
            "[server]\nlisten = \"localhost-8080\"\n",
            "server.listen",
        ),
        (
            "missing-secret.toml",
            "[upstream]\napi_key_env = \"REFOLD_KEY_NOT_SET\"\n",
            "REFOLD_KEY_NOT_SET",
        ),
        (
            "bad-url.toml",
            "[upstream]\nbase_url = \"app.refold.ai\"\n",
            "upstream.base_url",
        ),
        (
            "bad-alg.toml",
            "[identity]\nalgorithms = [\"none\"]\n",
            "identity.algorithms",
        ),
    ];
    for (name, text, needle) in cases {
        let path = write_config(name, text);
        let out = command().arg("--check-config").arg(&path).output().unwrap();
        assert!(!out.status.success(), "{name} passed");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(needle), "{name}: {stderr}");
        assert!(!stderr.contains("pk_cli_test_key") && !stderr.contains(SECRET));
    }
}

#[test]
fn check_config_refuses_what_the_steps_cannot_parse() {
    let certs = Path::new(env!("CARGO_MANIFEST_DIR")).join("certs");
    let cases = [
        (
            "bad-origin.toml",
            "[cors]\nallowed_origins = [\"not an origin\"]\n".to_owned(),
            "cors.allowed_origins",
        ),
        (
            "bad-route.toml",
            "[routes]\nallow = [\"FETCH /x\"]\n".to_owned(),
            "routes.allow",
        ),
        (
            "bad-ca.toml",
            format!(
                "[upstream]\nca_file = \"{}\"\n",
                certs.join("dev-ca.key.pem").display()
            ),
            "upstream.ca_file",
        ),
        (
            "bad-pair.toml",
            format!(
                "[server.tls]\ncert_file = \"{}\"\nkey_file = \"{}\"\n",
                certs.join("localhost.pem").display(),
                certs.join("dev-ca.key.pem").display()
            ),
            "server.tls.key_file",
        ),
    ];
    for (name, text, needle) in cases {
        let path = write_config(name, &text);
        let out = command().arg("--check-config").arg(&path).output().unwrap();
        assert!(!out.status.success(), "{name} passed");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(needle), "{name}: {stderr}");
        assert!(!stderr.contains("PRIVATE"), "{name}: {stderr}");
    }
}

#[test]
fn check_config_warns_about_routes_that_can_never_pass() {
    let path = write_config(
        "warn.toml",
        "[routes]\nallow = [\"POST /api/v2/public/session-token\"]\n",
    );
    let out = command().arg("--check-config").arg(&path).output().unwrap();
    assert!(out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("warning") && stderr.contains("session-token"),
        "{stderr}"
    );
}

#[test]
fn sign_jwt_signs_with_the_configured_secret() {
    let path = write_config(
        "sign.toml",
        "[identity]\nissuer = \"https://auth.example\"\n",
    );
    let out = command()
        .args(["--config"])
        .arg(&path)
        .args(["sign-jwt", "--sub", "user-42", "--ttl", "30m"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let token = String::from_utf8(out.stdout).unwrap();
    let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::HS256);
    validation.set_issuer(&["https://auth.example"]);
    let data = jsonwebtoken::decode::<serde_json::Value>(
        token.trim(),
        &jsonwebtoken::DecodingKey::from_secret(SECRET.as_bytes()),
        &validation,
    )
    .unwrap();
    assert_eq!(data.claims["sub"], "user-42");
    let ttl = data.claims["exp"].as_u64().unwrap() - data.claims["iat"].as_u64().unwrap();
    assert_eq!(ttl, 1800);
}

fn gen_cert(out: &Path, extra: &[&str]) -> std::process::Output {
    command()
        .args([
            "gen-cert",
            "--host",
            "localhost",
            "--host",
            "127.0.0.1",
            "--host",
            "::1",
        ])
        .arg("--out")
        .arg(out)
        .args(extra)
        .output()
        .unwrap()
}

/// Verifies `cert` as a server certificate for `name`, trusting `cert` itself.
fn verify_for(
    cert: &rustls::pki_types::CertificateDer<'static>,
    name: &str,
) -> Result<(), rustls::Error> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(cert.clone()).unwrap();
    let provider = std::sync::Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let verifier =
        rustls::client::WebPkiServerVerifier::builder_with_provider(roots.into(), provider)
            .build()
            .unwrap();
    rustls::client::danger::ServerCertVerifier::verify_server_cert(
        verifier.as_ref(),
        cert,
        &[],
        &rustls::pki_types::ServerName::try_from(name.to_owned()).unwrap(),
        &[],
        rustls::pki_types::UnixTime::now(),
    )
    .map(|_| ())
}

#[test]
fn gen_cert_writes_a_self_signed_pair_and_the_config_to_paste() {
    use rustls::pki_types::pem::PemObject;
    let dir = std::env::temp_dir().join(format!("refold-proxy-gen-cert-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let out = gen_cert(&dir.join("first"), &[]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8(out.stdout).unwrap();
    let (cert_file, key_file) = (dir.join("first/cert.pem"), dir.join("first/key.pem"));

    // A certificate for every --host: DNS names and IP addresses; not for others.
    let cert = rustls::pki_types::CertificateDer::from_pem_file(&cert_file).unwrap();
    for name in ["localhost", "127.0.0.1", "::1"] {
        verify_for(&cert, name).unwrap_or_else(|e| panic!("{name}: {e}"));
    }
    assert!(verify_for(&cert, "example.com").is_err());
    assert!(verify_for(&cert, "10.0.0.1").is_err());
    // The key is readable by its owner only.
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(&key_file).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "{mode:o}");
    }

    // The printed snippet is a config that passes --check-config with this pair.
    let snippet = &stdout[stdout.find("[server.tls]").expect(&stdout)..];
    assert!(
        snippet.contains(&key_file.display().to_string()),
        "{stdout}"
    );
    let config = write_config("gen-cert.toml", snippet);
    let check = command()
        .arg("--check-config")
        .arg(&config)
        .output()
        .unwrap();
    assert!(
        check.status.success(),
        "{}",
        String::from_utf8_lossy(&check.stderr)
    );
    assert!(String::from_utf8_lossy(&check.stdout).contains("with TLS"));

    // Existing files are kept unless --force; each run makes a new key and serial.
    let again = gen_cert(&dir.join("first"), &[]);
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("--force"));
    assert_eq!(
        rustls::pki_types::CertificateDer::from_pem_file(&cert_file).unwrap(),
        cert
    );
    let forced = gen_cert(&dir.join("first"), &["--force"]);
    assert!(
        forced.status.success(),
        "{}",
        String::from_utf8_lossy(&forced.stderr)
    );
    let new = rustls::pki_types::CertificateDer::from_pem_file(&cert_file).unwrap();
    assert_ne!(new, cert);
    let check = command()
        .arg("--check-config")
        .arg(&config)
        .output()
        .unwrap();
    assert!(
        check.status.success(),
        "{}",
        String::from_utf8_lossy(&check.stderr)
    );

    // A host that is no name is refused before anything is written.
    let bad = command()
        .args(["gen-cert", "--host", "not a name!", "--out"])
        .arg(dir.join("bad"))
        .output()
        .unwrap();
    assert!(!bad.status.success());
    assert!(
        String::from_utf8_lossy(&bad.stderr).contains("not a name!"),
        "{}",
        String::from_utf8_lossy(&bad.stderr)
    );
    assert!(!dir.join("bad/cert.pem").exists());
    // No --host: refused by the argument parser.
    let none = command()
        .args(["gen-cert", "--out"])
        .arg(dir.join("none"))
        .output()
        .unwrap();
    assert!(!none.status.success());
    assert!(!dir.join("none/cert.pem").exists());
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn check_config_names_a_mismatched_tls_pair() {
    let certs = Path::new(env!("CARGO_MANIFEST_DIR")).join("certs");
    let path = write_config(
        "mismatch.toml",
        &format!(
            "[server.tls]\ncert_file = \"{}\"\nkey_file = \"{}\"\n",
            certs.join("localhost.pem").display(),
            certs.join("dev-ca.key.pem").display()
        ),
    );
    let out = command().arg("--check-config").arg(&path).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("server.tls.key_file") && stderr.contains("dev-ca.key.pem"),
        "{stderr}"
    );
}

/// The demo binary on free ports, and its banner (every line up to "Ctrl-C to stop.").
async fn start_demo() -> (tokio::process::Child, Vec<String>) {
    start_demo_with(&[]).await
}

/// `start_demo` with more arguments to `demo`.
async fn start_demo_with(extra: &[&str]) -> (tokio::process::Child, Vec<String>) {
    let mut child = tokio::process::Command::new(BIN)
        .args(["demo", "--listen", "127.0.0.1:0"])
        .args(extra)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = tokio::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let banner = tokio::time::timeout(Duration::from_secs(30), async {
        let mut banner = Vec::new();
        while let Some(line) = lines.next_line().await.unwrap() {
            let last = line.contains("Ctrl-C to stop");
            banner.push(line);
            if last {
                return banner;
            }
        }
        panic!("demo exited before the end of its banner: {banner:?}");
    })
    .await
    .expect("demo printed no whole banner in time");
    (child, banner)
}

/// The banner's `curl` line whose URL ends with `path_end`, split into URL and JWT.
fn banner_curl<'a>(banner: &'a [String], path_end: &str) -> (&'a str, Option<&'a str>) {
    let line = banner
        .iter()
        .filter(|line| line.trim_start().starts_with("curl "))
        .find(|line| {
            line.split_whitespace()
                .any(|w| is_url(w) && w.ends_with(path_end))
        })
        .unwrap_or_else(|| panic!("no curl line for {path_end} in {banner:#?}"));
    let url = line.split_whitespace().find(|w| is_url(w)).unwrap();
    let jwt = line
        .split("Bearer ")
        .nth(1)
        .map(|rest| rest.trim_end_matches('\''));
    (url, jwt)
}

fn is_url(word: &str) -> bool {
    word.starts_with("http://") || word.starts_with("https://")
}

#[tokio::test]
async fn demo_prints_a_curl_that_works() {
    let (mut child, banner) = start_demo().await;
    // curl -s URL -H 'authorization: Bearer JWT'
    let (url, jwt) = banner_curl(&banner, "/application");
    let response = reqwest::Client::new()
        .get(url)
        .header("authorization", format!("Bearer {}", jwt.unwrap()))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let body: serde_json::Value = response.json().await.unwrap();
    // The stand-in's catalogue, reached through the proxy: both applications.
    let slugs: Vec<&str> = body
        .as_array()
        .unwrap_or_else(|| panic!("the catalogue is an array: {body}"))
        .iter()
        .map(|app| app["slug"].as_str().unwrap())
        .collect();
    assert_eq!(slugs, ["freshdesk", "hubspot"], "{body}");
    child.kill().await.unwrap();
}

#[tokio::test]
async fn demo_banner_names_an_admin_listener_with_metrics_and_readiness() {
    let (mut child, banner) = start_demo().await;
    let client = reqwest::Client::new();
    // A request through the proxy first, so the metrics have a request to count.
    let (url, jwt) = banner_curl(&banner, "/application");
    let response = client
        .get(url)
        .header("authorization", format!("Bearer {}", jwt.unwrap()))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);

    let (metrics_url, _) = banner_curl(&banner, "/metrics");
    let response = client.get(metrics_url).send().await.unwrap();
    assert_eq!(response.status(), 200, "{metrics_url}");
    let text = response.text().await.unwrap();
    assert!(text.contains("# TYPE"), "{text}");
    assert!(!text.contains("tk_demo_api_key"), "{text}");

    let (readyz_url, _) = banner_curl(&banner, "/readyz");
    let response = client.get(readyz_url).send().await.unwrap();
    assert_eq!(response.status(), 200, "{readyz_url}");
    child.kill().await.unwrap();
}

#[test]
fn sign_jwt_needs_only_the_identity_secret_and_names_it() {
    // The upstream's key variable is not set: signing does not use it.
    let path = write_config(
        "sign-only-identity.toml",
        "[upstream]\napi_key_env = \"REFOLD_KEY_NOT_SET_FOR_SIGNING\"\n\
         [identity]\nhs_secret_env = \"CLI_TEST_SIGNING_SECRET\"\n",
    );
    let out = command()
        .env_remove("REFOLD_API_KEY")
        .env_remove("APP_JWT_SECRET")
        .env("CLI_TEST_SIGNING_SECRET", SECRET)
        .arg("--config")
        .arg(&path)
        .args(["sign-jwt", "--sub", "user-7"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("CLI_TEST_SIGNING_SECRET"), "{stderr}");
    assert!(!stderr.contains(SECRET), "{stderr}");
    let token = String::from_utf8(out.stdout).unwrap();
    let data = jsonwebtoken::decode::<serde_json::Value>(
        token.trim(),
        &jsonwebtoken::DecodingKey::from_secret(SECRET.as_bytes()),
        &jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::HS256),
    )
    .unwrap();
    assert_eq!(data.claims["sub"], "user-7");
}

#[tokio::test]
async fn sign_jwt_demo_gives_a_token_the_demo_accepts() {
    // No config file and no secrets in the environment: --demo needs neither.
    let out = Command::new(BIN)
        .env_remove("REFOLD_API_KEY")
        .env_remove("APP_JWT_SECRET")
        .env("RUST_LOG", "warn")
        .args(["--config", "no-such-file.toml"])
        .args(["sign-jwt", "--demo", "--sub", "demo-user"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("demo"), "{stderr}");
    let token = String::from_utf8(out.stdout).unwrap();

    let (mut child, banner) = start_demo().await;
    let (url, _) = banner_curl(&banner, "/application");
    let response = reqwest::Client::new()
        .get(url)
        .header("authorization", format!("Bearer {}", token.trim()))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    child.kill().await.unwrap();
}

#[test]
fn check_config_refuses_unverified_identity_and_plain_http_to_other_hosts() {
    const RS: &str = "[identity]\nalgorithms = [\"RS256\"]\n";
    const BOTH: &str = "issuer = \"https://auth.example\"\naudience = \"refold\"\n";
    let refused = [
        (
            "jwks-no-audience.toml",
            format!(
                "{RS}jwks_url = \"https://auth.example/jwks\"\nissuer = \"https://auth.example\"\n"
            ),
            "identity.audience",
        ),
        (
            "jwks-plain-http.toml",
            format!("{RS}{BOTH}jwks_url = \"http://auth.example/jwks\"\n"),
            "identity.jwks_url",
        ),
        (
            "upstream-plain-http.toml",
            "[upstream]\nbase_url = \"http://refold.internal:8080\"\n".to_owned(),
            "upstream.base_url",
        ),
    ];
    for (name, text, key) in &refused {
        let path = write_config(name, text);
        let out = command().arg("--check-config").arg(&path).output().unwrap();
        assert!(!out.status.success(), "{name} passed");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(key), "{name}: {stderr}");
    }
    // Each passes with its explicit opt-in, and --check-config says what was opted into.
    let opted = [
        (
            "jwks-no-audience-opted.toml",
            format!("{}allow_missing_issuer_audience = true\n", refused[0].1),
            "identity.allow_missing_issuer_audience",
        ),
        (
            "jwks-plain-http-opted.toml",
            format!("{}allow_insecure_jwks_url = true\n", refused[1].1),
            "identity.allow_insecure_jwks_url",
        ),
        (
            "upstream-plain-http-opted.toml",
            format!("{}allow_insecure_http = true\n", refused[2].1),
            "upstream.allow_insecure_http",
        ),
    ];
    for (name, text, key) in opted {
        let path = write_config(name, &text);
        let out = command().arg("--check-config").arg(&path).output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{name}: {stderr}");
        assert!(
            stderr.contains("warning") && stderr.contains(key),
            "{name}: {stderr}"
        );
    }
}

/// The first log line the proxy writes to a stderr that is a pipe, not a terminal.
async fn first_log_line(format: Option<&str>) -> String {
    let config = write_config(
        &format!("logs-{}.toml", format.unwrap_or("default")),
        "[server]\nlisten = \"127.0.0.1:0\"\n[admin]\nlisten = \"127.0.0.1:0\"\n\
         [upstream]\nbase_url = \"http://127.0.0.1:9\"\n",
    );
    let mut command = tokio::process::Command::new(BIN);
    command.arg("--config").arg(&config);
    if let Some(format) = format {
        command.args(["--log-format", format]);
    }
    let mut child = command
        .env("REFOLD_API_KEY", "pk_cli_test_key")
        .env("APP_JWT_SECRET", SECRET)
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = tokio::io::BufReader::new(child.stderr.take().unwrap()).lines();
    tokio::time::timeout(Duration::from_secs(30), lines.next_line())
        .await
        .expect("a log line in time")
        .unwrap()
        .expect("the proxy logged before exiting")
}

#[tokio::test]
async fn logs_to_a_pipe_are_json_by_default_and_never_carry_colour_codes() {
    let line = first_log_line(None).await;
    let event: serde_json::Value =
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("not JSON ({e}): {line:?}"));
    assert!(event["level"].is_string(), "{event}");
    let pretty = first_log_line(Some("pretty")).await;
    assert!(
        !pretty.contains('\u{1b}'),
        "escape codes in a pipe: {pretty:?}"
    );
    assert!(pretty.contains("INFO"), "{pretty:?}");
}

/// `--key` signs with a private key of each type the proxy verifies; the proxy given the
/// public half (and the issuer and audience the config names) accepts the token.
#[tokio::test]
async fn sign_jwt_signs_with_a_private_key_the_proxy_verifies() {
    let keys = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/keys");
    for (name, alg) in [("rs256", "RS256"), ("es256", "ES256"), ("ed25519", "EdDSA")] {
        let identity = format!(
            "algorithms = [\"{alg}\"]\npublic_key_file = {}\n\
             issuer = \"https://auth.example\"\naudience = \"refold-proxy\"\n",
            toml::Value::String(keys.join(format!("{name}.pub.pem")).display().to_string())
        );
        let path = write_config(
            &format!("sign-{name}.toml"),
            &format!("[identity]\n{identity}"),
        );
        let out = command()
            .env_remove("APP_JWT_SECRET")
            .arg("--config")
            .arg(&path)
            .args(["sign-jwt", "--sub", "key-user", "--key"])
            .arg(keys.join(format!("{name}.key.pem")))
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{name}: {stderr}");
        assert!(
            stderr.contains(alg),
            "{name}: the algorithm is named: {stderr}"
        );
        assert!(!stderr.contains("warning"), "{name}: {stderr}");
        let token = String::from_utf8(out.stdout).unwrap();
        let header = jsonwebtoken::decode_header(token.trim()).unwrap();
        assert_eq!(format!("{:?}", header.alg), alg);

        let h = Harness::builder()
            .accounts(["key-user"])
            .identity(&identity)
            .start()
            .await;
        let response = h
            .client
            .get(h.url("/api/v2/f-sdk/application"))
            .bearer_auth(token.trim())
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "{name}");
        h.stop().await;
    }
}

/// A key whose public half the config does not hold, or an algorithm the config does not
/// allow, still signs (the token may be meant for another deployment) but says the proxy
/// at this config would refuse it; a key that cannot sign the asked algorithm is an error.
#[test]
fn sign_jwt_with_a_key_warns_when_this_config_would_refuse_the_token() {
    let keys = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/keys");
    let identity = format!(
        "[identity]\nalgorithms = [\"RS256\"]\npublic_key_file = {}\nallow_missing_issuer_audience = true\n",
        toml::Value::String(keys.join("rs256.pub.pem").display().to_string())
    );
    let path = write_config("sign-warn.toml", &identity);
    let sign = |key: &str, extra: &[&str]| {
        command()
            .env_remove("APP_JWT_SECRET")
            .arg("--config")
            .arg(&path)
            .args(["sign-jwt", "--sub", "u", "--key"])
            .arg(keys.join(key))
            .args(extra)
            .output()
            .unwrap()
    };
    let other = sign("rs256-other.key.pem", &[]);
    let stderr = String::from_utf8_lossy(&other.stderr);
    assert!(other.status.success(), "{stderr}");
    assert!(
        stderr.contains("warning") && stderr.contains("identity.public_key_file"),
        "{stderr}"
    );
    let es = sign("es256.key.pem", &[]);
    let stderr = String::from_utf8_lossy(&es.stderr);
    assert!(es.status.success(), "{stderr}");
    assert!(
        stderr.contains("warning") && stderr.contains("identity.algorithms"),
        "{stderr}"
    );
    let mismatch = sign("es256.key.pem", &["--alg", "RS256"]);
    let stderr = String::from_utf8_lossy(&mismatch.stderr);
    assert!(!mismatch.status.success());
    assert!(stderr.contains("cannot sign RS256"), "{stderr}");
    assert!(mismatch.stdout.is_empty());
    // The private key never reaches the output.
    let pem = std::fs::read_to_string(keys.join("es256.key.pem")).unwrap();
    let body = pem.lines().nth(1).unwrap();
    assert!(!stderr.contains(body));
}

/// `demo --tls` serves HTTPS with a fresh self-signed pair whose certificate the banner
/// names for curl's `--cacert`; the banner's request works over TLS trusting only it.
#[tokio::test]
async fn demo_tls_serves_https_with_a_fresh_certificate_the_banner_names() {
    use http_body_util::BodyExt;
    use rustls::pki_types::pem::PemObject;

    let (mut child, banner) = start_demo_with(&["--tls"]).await;
    let line = banner
        .iter()
        .find(|line| line.trim_start().starts_with("curl ") && line.contains("/application"))
        .unwrap_or_else(|| panic!("no curl line in {banner:#?}"));
    let words: Vec<&str> = line.split_whitespace().collect();
    let cacert = words[words.iter().position(|w| *w == "--cacert").unwrap() + 1];
    let (url, jwt) = banner_curl(&banner, "/application");
    let url: http::Uri = url.parse().unwrap();
    assert_eq!(url.scheme_str(), Some("https"), "{line}");

    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls::pki_types::CertificateDer::pem_file_iter(cacert).unwrap() {
        roots.add(cert.unwrap()).unwrap();
    }
    let provider = std::sync::Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let host = url.host().unwrap().to_owned();
    let tcp = tokio::net::TcpStream::connect((host.as_str(), url.port_u16().unwrap()))
        .await
        .unwrap();
    let tls = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config))
        .connect(rustls::pki_types::ServerName::try_from(host).unwrap(), tcp)
        .await
        .expect("the certificate the banner names verifies the demo's listener");
    let (mut send, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tls))
        .await
        .unwrap();
    tokio::spawn(conn);
    let request = http::Request::get(url.path())
        .header("host", url.authority().unwrap().as_str())
        .header("authorization", format!("Bearer {}", jwt.unwrap()))
        .body(http_body_util::Empty::<bytes::Bytes>::new())
        .unwrap();
    let response = send.send_request(request).await.unwrap();
    assert_eq!(response.status(), 200);
    let body = response.into_body().collect().await.unwrap().to_bytes();
    assert!(String::from_utf8_lossy(&body).contains("hubspot"));
    // The pair is the demo's alone: a clean stop removes it.
    let pid = child.id().unwrap().to_string();
    assert!(std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap()
        .success());
    let status = tokio::time::timeout(Duration::from_secs(20), child.wait())
        .await
        .expect("the demo stops on SIGTERM")
        .unwrap();
    assert!(status.success(), "{status}");
    assert!(!Path::new(cacert).exists(), "{cacert} is left behind");
}

/// A directory of its own for a test's config and secret files.
fn scratch_dir(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("refold-proxy-cli-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[tokio::test]
async fn a_proxy_runs_with_its_secrets_only_in_files() {
    use crate::support::process::{ProxyProcess, ADMIN_TOKEN};
    use crate::support::{app_jwt, API_KEY, SECRET as JWT_SECRET};
    let (mock, _upstream) = crate::support::stand_in_with(&["alice"]).await;
    let dir = scratch_dir("file-secrets");
    // As Kubernetes and Docker write them: one trailing newline.
    for (name, value) in [
        ("api-key", API_KEY),
        ("jwt-secret", JWT_SECRET),
        ("admin-token", ADMIN_TOKEN),
    ] {
        std::fs::write(dir.join(name), format!("{value}\n")).unwrap();
    }
    let file = |name: &str| dir.join(name).display().to_string();
    let toml = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\n\
         [admin]\nlisten = \"127.0.0.1:0\"\nadmin_token_file = \"{}\"\n\
         [upstream]\nbase_url = \"http://{mock}\"\napi_key_file = \"{}\"\n\
         [identity]\nhs_secret_file = \"{}\"\n",
        file("admin-token"),
        file("api-key"),
        file("jwt-secret"),
    );
    // The variables the `*_env` defaults name hold wrong values: only the files are right.
    let mut proxy = ProxyProcess::spawn_with_env(
        &toml,
        &[
            ("REFOLD_API_KEY", "tk_wrong_key".into()),
            (
                "APP_JWT_SECRET",
                "wrong-secret-wrong-secret-wrong-secret".into(),
            ),
        ],
    )
    .await;
    let addr = proxy.serving().await;
    let ok = reqwest::Client::new()
        .get(format!("http://{addr}/api/v2/public/workflow"))
        .bearer_auth(app_jwt("alice"))
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), 200);
    let evict = reqwest::Client::new()
        .post(proxy.admin_url("/tokens/alice/evict"))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap();
    assert!(evict.status().is_success(), "{}", evict.status());
    let logs = format!("{:?}", proxy.logs());
    for secret in [API_KEY, JWT_SECRET, ADMIN_TOKEN] {
        assert!(!logs.contains(secret), "{logs}");
    }
    proxy.kill().await;
}

#[test]
fn secret_files_are_checked_and_never_quoted() {
    let dir = scratch_dir("secret-file-checks");
    std::fs::write(dir.join("empty"), "\n").unwrap();
    std::fs::write(dir.join("short"), "tiny-admin-secret\n").unwrap();
    let cases = [
        (
            "both.toml",
            "[upstream]\napi_key_env = \"REFOLD_API_KEY\"\napi_key_file = \"empty\"\n",
            vec!["upstream.api_key_env", "upstream.api_key_file"],
        ),
        (
            "empty.toml",
            "[upstream]\napi_key_file = \"empty\"\n",
            vec!["upstream.api_key_file", "is empty"],
        ),
        (
            "missing.toml",
            "[identity]\nhs_secret_file = \"no-such-file\"\n",
            vec!["identity.hs_secret_file", "no-such-file"],
        ),
        (
            "short.toml",
            "[admin]\nadmin_token_file = \"short\"\n",
            vec!["admin.admin_token_file", "shorter than 32"],
        ),
    ];
    for (name, text, needles) in cases {
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        let out = command().arg("--check-config").arg(&path).output().unwrap();
        assert!(!out.status.success(), "{name} passed");
        let stderr = String::from_utf8_lossy(&out.stderr);
        for needle in needles {
            assert!(stderr.contains(needle), "{name}: {stderr}");
        }
        assert!(!stderr.contains("tiny-admin"), "{stderr}");
    }
}

#[test]
fn environment_overrides_reach_the_checked_config_and_name_their_variable() {
    let path = write_config("override.toml", "[server]\nlisten = \"0.0.0.0:8080\"\n");
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    let out = command()
        .arg("--check-config")
        .arg(&path)
        .env("REFOLD_PROXY__SERVER__LISTEN", "127.0.0.1:8443")
        .env(
            "REFOLD_PROXY__SERVER__TLS__CERT_FILE",
            repo.join("certs/localhost.pem"),
        )
        .env(
            "REFOLD_PROXY__SERVER__TLS__KEY_FILE",
            repo.join("certs/localhost.key.pem"),
        )
        .env("REFOLD_PROXY__UPSTREAM__BASE_URL", "http://127.0.0.1:9")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("listen 127.0.0.1:8443 with TLS") && stdout.contains("http://127.0.0.1:9"),
        "{stdout}"
    );
    for (var, value, needle) in [
        (
            "REFOLD_PROXY__SERVER__LISEN",
            "1",
            "REFOLD_PROXY__SERVER__LISEN",
        ),
        ("REFOLD_PROXY__NOPE__KEY", "1", "REFOLD_PROXY__NOPE__KEY"),
        (
            "REFOLD_PROXY__SERVER__LISTEN__PORT",
            "1",
            "REFOLD_PROXY__SERVER__LISTEN__PORT",
        ),
        (
            "REFOLD_PROXY__CORS__ALLOWED_ORIGINS",
            "[\"https://a.example\", \"not an origin\"]",
            "cors.allowed_origins",
        ),
    ] {
        let out = command()
            .arg("--check-config")
            .arg(&path)
            .env(var, value)
            .output()
            .unwrap();
        assert!(!out.status.success(), "{var} passed");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(needle), "{var}: {stderr}");
    }
    // A single underscore is a secret's variable, not an override.
    let out = command()
        .arg("--check-config")
        .arg(&path)
        .env("REFOLD_PROXY_NOT_AN_OVERRIDE", "1")
        .output()
        .unwrap();
    assert!(out.status.success());
}

#[test]
fn print_config_shows_the_effective_config_without_secrets() {
    let dir = scratch_dir("print-config");
    let api_key = "pk_printed_never_0123456789";
    std::fs::write(dir.join("api-key"), api_key).unwrap();
    let path = dir.join("proxy.toml");
    std::fs::write(
        &path,
        "[upstream]\napi_key_file = \"api-key\"\n[admin]\nadmin_token_env = \"PRINT_ADMIN\"\n",
    )
    .unwrap();
    let admin_secret = "admin-secret-that-is-never-printed-0123";
    let out = command()
        .arg("--check-config")
        .arg(&path)
        .arg("--print-config")
        .env("PRINT_ADMIN", admin_secret)
        .env(
            "REFOLD_PROXY__CORS__ALLOWED_ORIGINS",
            "[\"https://a.example\",\"https://b.example\"]",
        )
        .env("REFOLD_PROXY__LIMITS__PER_ACCOUNT_IN_FLIGHT", "7")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let printed = String::from_utf8(out.stdout).unwrap();
    for secret in [api_key, admin_secret, SECRET, "pk_cli_test_key"] {
        assert!(!printed.contains(secret), "{printed}");
    }
    let table: toml::Table = printed.parse().unwrap();
    assert_eq!(
        table["limits"]["per_account_in_flight"].as_integer(),
        Some(7)
    );
    assert_eq!(
        table["cors"]["allowed_origins"].as_array().unwrap().len(),
        2
    );
    // Defaults are shown, and the names of the secrets' sources.
    assert_eq!(table["server"]["listen"].as_str(), Some("0.0.0.0:8080"));
    assert_eq!(table["upstream"]["api_key_file"].as_str(), Some("api-key"));
    assert_eq!(
        table["admin"]["admin_token_env"].as_str(),
        Some("PRINT_ADMIN")
    );
    assert_eq!(
        table["identity"]["hs_secret_env"].as_str(),
        Some("APP_JWT_SECRET")
    );
    // With --check-config the config is checked first: a missing secret prints nothing.
    let out = command()
        .arg("--check-config")
        .arg(&path)
        .arg("--print-config")
        .output()
        .unwrap();
    assert!(!out.status.success() && out.stdout.is_empty());
    assert!(String::from_utf8_lossy(&out.stderr).contains("PRINT_ADMIN"));
    // What it prints checks as it stands, without the overrides.
    let again = dir.join("printed.toml");
    std::fs::write(&again, &printed).unwrap();
    let out = command()
        .arg("--check-config")
        .arg(&again)
        .env("PRINT_ADMIN", admin_secret)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test]
async fn without_a_config_file_the_environment_is_the_config() {
    use crate::support::{app_jwt, API_KEY, SECRET as JWT_SECRET};
    let (mock, _upstream) = crate::support::stand_in_with(&["alice"]).await;
    let dir = scratch_dir("no-config-file");
    let mut child = tokio::process::Command::new(BIN)
        .current_dir(&dir)
        .args(["--log-format", "json"])
        .env("REFOLD_API_KEY", API_KEY)
        .env("APP_JWT_SECRET", JWT_SECRET)
        .env("RUST_LOG", "info")
        .env("REFOLD_PROXY__SERVER__LISTEN", "127.0.0.1:0")
        .env("REFOLD_PROXY__ADMIN__LISTEN", "127.0.0.1:0")
        .env("REFOLD_PROXY__UPSTREAM__BASE_URL", format!("http://{mock}"))
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = tokio::io::BufReader::new(child.stderr.take().unwrap()).lines();
    let mut said_so = false;
    let addr = tokio::time::timeout(Duration::from_secs(30), async {
        while let Some(line) = lines.next_line().await.unwrap() {
            let event: serde_json::Value = serde_json::from_str(&line).unwrap_or_default();
            said_so |= line.contains("no config file");
            if let Some(listen) = event["fields"]["listen"].as_str() {
                return listen.parse::<std::net::SocketAddr>().unwrap();
            }
        }
        panic!("the proxy exited without serving");
    })
    .await
    .unwrap();
    assert!(
        said_so,
        "no log line says the config came from the environment"
    );
    let ok = reqwest::Client::new()
        .get(format!("http://{addr}/api/v2/public/workflow"))
        .bearer_auth(app_jwt("alice"))
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), 200);
    // SIGHUP reloads from the same place (the secrets re-read), not the default action.
    let pid = child.id().unwrap().to_string();
    let sent = Command::new("kill").args(["-HUP", &pid]).status().unwrap();
    assert!(sent.success());
    tokio::time::timeout(Duration::from_secs(30), async {
        while let Some(line) = lines.next_line().await.unwrap() {
            if line.contains("config reloaded") {
                return;
            }
        }
        panic!("the proxy exited on SIGHUP");
    })
    .await
    .unwrap();
    child.kill().await.unwrap();
    // A config file asked for by name must exist.
    let out = command()
        .current_dir(&dir)
        .args(["--config", "missing.toml"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("missing.toml"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
