//! The probe client: raw paths sent exactly as written (no URL normalisation, so `%2e`,
//! `./` and `//` reach the proxy as an attacker would send them), every answer kept for
//! the checks that look across all of them (error envelope, leaked secrets).

use std::sync::Mutex;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, Method, Request, Uri};
use http_body_util::BodyExt;
use refold_proxy::outbound::client::{describe_client_error, pooled_client, HttpClient};
use refold_proxy::outbound::connector::{https_connector_trusting, parse_certificates};
use refold_proxy::{full_body, BoxError};

/// How long one probe may take, connect to last body byte.
const PROBE_TIMEOUT: Duration = Duration::from_secs(20);

/// The most of a body kept for the checks: error envelopes and leaks are in the first part.
const MAX_KEPT_BODY: usize = 256 * 1024;

/// One answer the deployment gave.
#[derive(Debug, Clone)]
pub(crate) struct Answer {
    /// What was asked, for reasons (`GET /api/...`): never a credential.
    pub(crate) what: String,
    pub(crate) status: u16,
    pub(crate) headers: HeaderMap,
    pub(crate) body: Bytes,
}

impl Answer {
    /// Whether the request was refused by the client-error range (not served, not a
    /// server failure).
    pub(crate) fn refused(&self) -> bool {
        (400..500).contains(&self.status)
    }
}

/// One request to send.
pub(crate) struct Ask<'a> {
    pub(crate) method: Method,
    /// Path (and query) below the base URL's path, sent byte for byte.
    pub(crate) path: &'a str,
    pub(crate) headers: Vec<(&'static str, String)>,
    pub(crate) body: Option<Bytes>,
}

impl<'a> Ask<'a> {
    pub(crate) fn get(path: &'a str) -> Self {
        Self {
            method: Method::GET,
            path,
            headers: Vec::new(),
            body: None,
        }
    }

    /// Adds a header (repeat a name to send it twice).
    pub(crate) fn header(mut self, name: &'static str, value: impl Into<String>) -> Self {
        self.headers.push((name, value.into()));
        self
    }

    pub(crate) fn bearer(self, jwt: &str) -> Self {
        self.header("authorization", format!("Bearer {jwt}"))
    }
}

/// The deployment under test and every answer it gave.
pub(crate) struct Probe {
    client: HttpClient,
    /// `scheme://authority`.
    origin: String,
    /// The base URL's path without its trailing `/` (`""` at the root).
    prefix: String,
    answers: Mutex<Vec<Answer>>,
}

impl Probe {
    /// A client for `base_url`, trusting the webpki roots plus the CA certificates in
    /// `ca_pem` (a PEM file's contents).
    pub(crate) fn new(base_url: &Uri, ca_pem: Option<&[u8]>) -> Result<Self, BoxError> {
        let (Some(scheme), Some(authority)) = (base_url.scheme_str(), base_url.authority()) else {
            return Err("--url must be an absolute http:// or https:// URL".into());
        };
        if scheme != "http" && scheme != "https" {
            return Err("--url must be an http:// or https:// URL".into());
        }
        let roots = match ca_pem {
            Some(pem) => parse_certificates(pem).map_err(|e| format!("--ca-file: {e}"))?,
            None => Vec::new(),
        };
        let connector = https_connector_trusting(Duration::from_secs(10), &roots)?;
        Ok(Self {
            client: pooled_client(connector, Duration::from_secs(30), 4),
            origin: format!("{scheme}://{authority}"),
            prefix: base_url.path().trim_end_matches('/').to_owned(),
            answers: Mutex::new(Vec::new()),
        })
    }

    /// Sends `ask` and records the answer; an error says why nothing came back.
    pub(crate) async fn send(&self, ask: Ask<'_>) -> Result<Answer, String> {
        let what = format!("{} {}", ask.method, ask.path);
        let uri: Uri = format!("{}{}{}", self.origin, self.prefix, ask.path)
            .parse()
            .map_err(|e| format!("{what}: not a valid request target: {e}"))?;
        let mut request = Request::builder().method(ask.method).uri(uri);
        if let Some(headers) = request.headers_mut() {
            for (name, value) in &ask.headers {
                let value = HeaderValue::from_str(value)
                    .map_err(|_| format!("{what}: a header value is not valid"))?;
                headers.append(HeaderName::from_static(name), value);
            }
        }
        let request = request
            .body(full_body(ask.body.unwrap_or_default()))
            .map_err(|e| format!("{what}: {e}"))?;
        let exchange = async {
            let response = self
                .client
                .request(request)
                .await
                .map_err(|e| describe_client_error(&e))?;
            let (parts, body) = response.into_parts();
            let body = http_body_util::Limited::new(body, MAX_KEPT_BODY)
                .collect()
                .await
                .map(http_body_util::Collected::to_bytes)
                .unwrap_or_default();
            Ok::<_, String>((parts, body))
        };
        let (parts, body) = tokio::time::timeout(PROBE_TIMEOUT, exchange)
            .await
            .map_err(|_| format!("{what}: no answer within {}s", PROBE_TIMEOUT.as_secs()))?
            .map_err(|e| format!("{what}: {e}"))?;
        let answer = Answer {
            what,
            status: parts.status.as_u16(),
            headers: parts.headers,
            body,
        };
        if let Ok(mut answers) = self.answers.lock() {
            answers.push(answer.clone());
        }
        Ok(answer)
    }

    /// Every answer so far.
    pub(crate) fn answers(&self) -> Vec<Answer> {
        self.answers.lock().map(|a| a.clone()).unwrap_or_default()
    }
}
