//! Traces: the real binary exports its spans over OTLP/HTTP to a receiver in the test,
//! takes the caller's `traceparent` as the request span's parent, passes the upstream
//! span's to the stand-in Refold, never puts a secret in a span, flushes on SIGTERM, and
//! does none of it when no endpoint is set.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{any_value, KeyValue};
use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
use opentelemetry_proto::tonic::trace::v1::Span;
use prost::Message;
use refold_mock::{MockConfig, MockUpstream};

use crate::support::process::{base_config, ProxyProcess, FINGERPRINT_KEY, FINGERPRINT_KEY_ENV};
use crate::support::{app_jwt, API_KEY};

const ACCOUNT: &str = "acct-traced-7f3e91";
const PATH: &str = "/api/v2/public/workflow";
/// The caller's trace and span (W3C trace context, lower-case hex).
const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const CALLER_SPAN: &str = "00f067aa0ba902b7";
const TRACESTATE: &str = "vendor=opaque-value";
const SERVICE: &str = "refold-proxy-under-test";

/// An OTLP/HTTP receiver on `127.0.0.1:0`: keeps every export's raw body.
struct Receiver {
    addr: SocketAddr,
    bodies: Arc<Mutex<Vec<Bytes>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Receiver {
    async fn start() -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let bodies = Arc::new(Mutex::new(Vec::new()));
        let sink = Arc::clone(&bodies);
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let sink = Arc::clone(&sink);
                tokio::spawn(async move {
                    let service =
                        service_fn(move |request: hyper::Request<hyper::body::Incoming>| {
                            let sink = Arc::clone(&sink);
                            async move {
                                let path = request.uri().path().to_owned();
                                let body = request.into_body().collect().await?.to_bytes();
                                if path == "/v1/traces" {
                                    sink.lock().unwrap().push(body);
                                }
                                let mut response = hyper::Response::new(Full::new(Bytes::new()));
                                response.headers_mut().insert(
                                    http::header::CONTENT_TYPE,
                                    http::HeaderValue::from_static("application/x-protobuf"),
                                );
                                Ok::<_, hyper::Error>(response)
                            }
                        });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Self { addr, bodies, task }
    }

    fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn bodies(&self) -> Vec<Bytes> {
        self.bodies.lock().unwrap().clone()
    }

    fn exports(&self) -> Vec<ExportTraceServiceRequest> {
        self.bodies()
            .iter()
            .map(|body| ExportTraceServiceRequest::decode(body.as_ref()).unwrap())
            .collect()
    }

    /// Every span exported so far, with its resource's `service.name`.
    fn spans(&self) -> Vec<(Option<String>, Span)> {
        let mut spans = Vec::new();
        for export in self.exports() {
            for resource in export.resource_spans {
                let service = resource
                    .resource
                    .as_ref()
                    .and_then(|r| string_attr(&r.attributes, "service.name"));
                for scope in resource.scope_spans {
                    for span in scope.spans {
                        spans.push((service.clone(), span));
                    }
                }
            }
        }
        spans
    }

    /// Waits (at most 30 s) until the spans exported include one named `name`.
    async fn wait_for_span(&self, name: &str) -> Vec<(Option<String>, Span)> {
        for _ in 0..300 {
            let spans = self.spans();
            if spans.iter().any(|(_, s)| s.name == name) {
                return spans;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("no span named {name:?} arrived: {:#?}", self.spans());
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn string_attr(attributes: &[KeyValue], key: &str) -> Option<String> {
    attributes
        .iter()
        .find(|kv| kv.key == key)
        .and_then(|kv| kv.value.as_ref())
        .and_then(|v| match &v.value {
            Some(any_value::Value::StringValue(s)) => Some(s.clone()),
            Some(any_value::Value::IntValue(i)) => Some(i.to_string()),
            _ => None,
        })
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The stand-in with `ACCOUNT` linked, recording requests.
async fn upstream() -> (SocketAddr, MockUpstream) {
    MockUpstream::spawn(
        MockConfig {
            api_key: API_KEY.into(),
            accounts: vec![ACCOUNT.into()],
            ..MockConfig::default()
        }
        .without_rate_limits(),
    )
    .await
    .unwrap()
}

fn config(mock: SocketAddr) -> String {
    format!(
        "{}[identity]\nhs_secret_env = \"APP_JWT_SECRET\"\n",
        base_config(&format!("http://{mock}")).replacen(
            "[server]\n",
            &format!("[server]\nfingerprint_key_env = \"{FINGERPRINT_KEY_ENV}\"\n"),
            1
        )
    )
}

/// One request as `ACCOUNT` carrying the caller's trace context.
async fn traced_get(addr: SocketAddr) -> reqwest::Response {
    reqwest::Client::new()
        .get(format!("http://{addr}{PATH}"))
        .bearer_auth(app_jwt(ACCOUNT))
        .header("traceparent", format!("00-{TRACE_ID}-{CALLER_SPAN}-01"))
        .header("tracestate", TRACESTATE)
        .send()
        .await
        .unwrap()
}

fn otel_env(receiver: &Receiver, delay_ms: u64) -> Vec<(&'static str, String)> {
    vec![
        ("OTEL_EXPORTER_OTLP_ENDPOINT", receiver.endpoint()),
        ("OTEL_SERVICE_NAME", SERVICE.to_owned()),
        ("OTEL_BSP_SCHEDULE_DELAY", delay_ms.to_string()),
    ]
}

#[tokio::test]
async fn a_request_span_continues_the_callers_trace_and_parents_its_steps() {
    let receiver = Receiver::start().await;
    let (mock_addr, mock) = upstream().await;
    let mut proxy =
        ProxyProcess::spawn_with_env(&config(mock_addr), &otel_env(&receiver, 100)).await;
    let addr = proxy.serving().await;

    let response = traced_get(addr).await;
    assert_eq!(response.status(), 200);
    let spans = receiver.wait_for_span("guard").await;
    let by_name: HashMap<&str, &Span> = spans.iter().map(|(_, s)| (s.name.as_str(), s)).collect();

    let request = spans
        .iter()
        .map(|(_, s)| s)
        .find(|s| s.kind == SpanKind::Server as i32)
        .unwrap_or_else(|| panic!("no server span: {spans:#?}"));
    assert_eq!(hex(&request.trace_id), TRACE_ID);
    assert_eq!(hex(&request.parent_span_id), CALLER_SPAN);
    assert_eq!(request.name, format!("GET {PATH}"));
    assert_eq!(
        string_attr(&request.attributes, "http.request.method").as_deref(),
        Some("GET")
    );
    assert_eq!(
        string_attr(&request.attributes, "http.route").as_deref(),
        Some(PATH)
    );
    assert_eq!(
        string_attr(&request.attributes, "http.response.status_code").as_deref(),
        Some("200")
    );
    let fingerprint = refold_proxy::secret::FingerprintKey::new(
        &refold_proxy::secret::Secret::new(FINGERPRINT_KEY),
    )
    .of(ACCOUNT.as_bytes())
    .to_string();
    assert_eq!(
        string_attr(&request.attributes, "refold.account").as_deref(),
        Some(fingerprint.as_str())
    );
    assert!(spans
        .iter()
        .all(|(service, _)| service.as_deref() == Some(SERVICE)));

    for step in ["identity", "token", "upstream", "guard"] {
        let span = by_name
            .get(step)
            .unwrap_or_else(|| panic!("no {step} span: {spans:#?}"));
        assert_eq!(span.trace_id, request.trace_id, "{step}");
        assert_eq!(span.parent_span_id, request.span_id, "{step}'s parent");
    }
    // The first request for the account mints its session token, under the token step.
    let mint = by_name.get("mint").expect("no mint span");
    assert_eq!(mint.parent_span_id, by_name["token"].span_id);
    let upstream_span = by_name["upstream"];
    assert_eq!(upstream_span.kind, SpanKind::Client as i32);

    // Refold saw the caller's trace, with the upstream span as the parent, and the state.
    let forwarded = mock
        .requests()
        .into_iter()
        .find(|r| r.path == PATH)
        .expect("the request reached the stand-in");
    let traceparents: Vec<_> = forwarded.headers.get_all("traceparent").iter().collect();
    assert_eq!(
        traceparents,
        [format!("00-{TRACE_ID}-{}-01", hex(&upstream_span.span_id)).as_str()]
    );
    let tracestates: Vec<_> = forwarded.headers.get_all("tracestate").iter().collect();
    assert_eq!(tracestates, [TRACESTATE]);

    // No secret in any byte exported, decoded or not.
    let token = mock.current_token(ACCOUNT).expect("a minted token");
    let jwt = app_jwt(ACCOUNT);
    for body in receiver.bodies() {
        for secret in [API_KEY, token.as_str(), ACCOUNT, jwt.as_str()] {
            assert!(
                !body.windows(secret.len()).any(|w| w == secret.as_bytes()),
                "an export holds a secret"
            );
        }
    }
    let decoded = format!("{:?}", receiver.exports());
    for secret in [API_KEY, token.as_str(), ACCOUNT, jwt.as_str()] {
        assert!(!decoded.contains(secret), "an attribute holds a secret");
    }
    assert!(decoded.contains(&fingerprint));

    proxy.signal("TERM");
    assert!(proxy.exit_status().await.success());
}

#[tokio::test]
async fn sigterm_exports_the_spans_of_the_last_requests() {
    let receiver = Receiver::start().await;
    let (mock_addr, _mock) = upstream().await;
    // Ten minutes between scheduled exports: only the shutdown's flush sends these spans.
    let mut proxy =
        ProxyProcess::spawn_with_env(&config(mock_addr), &otel_env(&receiver, 600_000)).await;
    let addr = proxy.serving().await;
    assert_eq!(traced_get(addr).await.status(), 200);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(receiver.spans().is_empty(), "exported before shutdown");

    proxy.signal("TERM");
    assert!(proxy.exit_status().await.success());
    let spans = receiver.spans();
    let request = spans
        .iter()
        .find(|(_, s)| s.kind == SpanKind::Server as i32)
        .unwrap_or_else(|| panic!("the request span was not flushed: {spans:#?}"));
    assert_eq!(hex(&request.1.trace_id), TRACE_ID);
}

#[tokio::test]
async fn without_an_endpoint_nothing_is_exported_and_trace_headers_pass_as_sent() {
    let receiver = Receiver::start().await;
    let (mock_addr, mock) = upstream().await;
    // Everything but the endpoint: tracing stays off.
    let env = [
        ("OTEL_SERVICE_NAME", SERVICE.to_owned()),
        ("OTEL_BSP_SCHEDULE_DELAY", "50".to_owned()),
    ];
    let mut proxy = ProxyProcess::spawn_with_env(&config(mock_addr), &env).await;
    let addr = proxy.serving().await;
    assert_eq!(traced_get(addr).await.status(), 200);

    let forwarded = mock
        .requests()
        .into_iter()
        .find(|r| r.path == PATH)
        .expect("the request reached the stand-in");
    let traceparents: Vec<_> = forwarded.headers.get_all("traceparent").iter().collect();
    assert_eq!(
        traceparents,
        [format!("00-{TRACE_ID}-{CALLER_SPAN}-01").as_str()]
    );
    let tracestates: Vec<_> = forwarded.headers.get_all("tracestate").iter().collect();
    assert_eq!(tracestates, [TRACESTATE]);

    proxy.signal("TERM");
    assert!(proxy.exit_status().await.success());
    assert!(receiver.bodies().is_empty());
}

/// `OTEL_TRACES_SAMPLER` is honoured, and with the default (parent-based) sampler so is
/// a caller that chose not to sample: nothing is exported, yet Refold still gets the
/// caller's trace id, marked not sampled, so the trace stays whole downstream.
#[tokio::test]
async fn the_sampler_and_the_callers_sampling_decision_are_honoured() {
    // The sampler turned off by its variable: a traced request exports nothing.
    let receiver = Receiver::start().await;
    let (mock_addr, _mock) = upstream().await;
    let mut env = otel_env(&receiver, 50);
    env.push(("OTEL_TRACES_SAMPLER", "always_off".to_owned()));
    let mut proxy = ProxyProcess::spawn_with_env(&config(mock_addr), &env).await;
    let addr = proxy.serving().await;
    assert_eq!(traced_get(addr).await.status(), 200);
    proxy.signal("TERM");
    assert!(proxy.exit_status().await.success());
    assert!(receiver.spans().is_empty(), "{:#?}", receiver.spans());

    // The default sampler follows the caller's flags: `00` means not sampled.
    let receiver = Receiver::start().await;
    let (mock_addr, mock) = upstream().await;
    let mut proxy =
        ProxyProcess::spawn_with_env(&config(mock_addr), &otel_env(&receiver, 50)).await;
    let addr = proxy.serving().await;
    let response = reqwest::Client::new()
        .get(format!("http://{addr}{PATH}"))
        .bearer_auth(app_jwt(ACCOUNT))
        .header("traceparent", format!("00-{TRACE_ID}-{CALLER_SPAN}-00"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    proxy.signal("TERM");
    assert!(proxy.exit_status().await.success());
    assert!(receiver.spans().is_empty(), "{:#?}", receiver.spans());
    let forwarded = mock
        .requests()
        .into_iter()
        .find(|r| r.path == PATH)
        .expect("the request reached the stand-in");
    let traceparent = forwarded
        .headers
        .get("traceparent")
        .and_then(|v| v.to_str().ok())
        .expect("Refold gets a traceparent")
        .to_owned();
    let parts: Vec<&str> = traceparent.split('-').collect();
    assert_eq!(parts.len(), 4, "{traceparent}");
    assert_eq!(parts[1], TRACE_ID, "{traceparent}");
    assert_eq!(
        parts[3], "00",
        "not sampled downstream either: {traceparent}"
    );
}
