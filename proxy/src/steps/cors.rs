//! CORS: which browser origins may call the proxy, preflight answers, and the headers
//! every response to an allowed origin carries.
//!
//! Allowed origins are exact (`https://app.example.com`) or one-label wildcards
//! (`https://*.example.com` matches `https://eu.example.com`, not `https://a.b.example.com`
//! nor `https://example.com`). A request with a disallowed `Origin` is refused before
//! anything else happens, so no browser page of another site can drive the proxy.
//! The proxy owns CORS: whatever `Access-Control-*` headers Refold sends are dropped.

use std::time::Duration;

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Response, StatusCode};

use crate::config::{ConfigError, CorsConfig};
use crate::{full_body, ProxyBody};

/// Request headers the Refold SDKs send, allowed in preflights.
const ALLOWED_HEADERS: &str = "authorization, content-type, slug, sync_execution, \
     disable_field_options, config_id, connection_id, x-request-id";
const ALLOWED_METHODS: &str = "GET, POST, PUT, PATCH, DELETE";
const EXPOSED_HEADERS: &str = "retry-after, x-request-id";

/// One allowed origin, parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OriginPattern {
    /// `scheme://host[:port]`, lower case.
    Exact(String),
    /// `scheme://*.rest`: `prefix` is `scheme://`, `suffix` is `.rest`.
    Wildcard { prefix: String, suffix: String },
}

impl OriginPattern {
    /// Parses `https://app.example.com` or `https://*.example.com[:port]`.
    pub fn parse(text: &str) -> Result<Self, String> {
        let lower = text.trim().to_ascii_lowercase();
        let (scheme, rest) = lower
            .split_once("://")
            .ok_or_else(|| format!("{text:?} is not an origin like https://app.example.com"))?;
        if scheme != "https" && scheme != "http" {
            return Err(format!("{text:?} must use http or https"));
        }
        if rest.is_empty() || rest.contains('/') || rest.contains('?') || rest.contains('#') {
            return Err(format!(
                "{text:?} must be scheme://host[:port] with no path"
            ));
        }
        let valid = |s: &str| {
            s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-.:[]".contains(&b))
        };
        match rest.strip_prefix("*.") {
            Some(suffix) if !suffix.is_empty() && valid(suffix) && !suffix.contains('*') => {
                Ok(Self::Wildcard {
                    prefix: format!("{scheme}://"),
                    suffix: format!(".{suffix}"),
                })
            }
            Some(_) => Err(format!("{text:?} is not a valid wildcard origin")),
            None if valid(rest) => Ok(Self::Exact(lower)),
            None => Err(format!("{text:?} is not a valid origin")),
        }
    }

    fn matches(&self, origin: &str) -> bool {
        match self {
            Self::Exact(exact) => origin.eq_ignore_ascii_case(exact),
            Self::Wildcard { prefix, suffix } => {
                let origin = origin.to_ascii_lowercase();
                origin
                    .strip_prefix(prefix.as_str())
                    .and_then(|rest| rest.strip_suffix(suffix.as_str()))
                    .is_some_and(|label| {
                        !label.is_empty()
                            && label
                                .bytes()
                                .all(|b| b.is_ascii_alphanumeric() || b == b'-')
                    })
            }
        }
    }
}

/// Why a cross-origin request was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OriginNotAllowed;

/// The CORS policy.
#[derive(Debug, Clone)]
pub struct Cors {
    allowed: Vec<OriginPattern>,
    max_age: HeaderValue,
    allow_credentials: bool,
}

impl Cors {
    /// A policy allowing `allowed` origins.
    pub fn new(allowed: Vec<OriginPattern>, max_age: Duration, allow_credentials: bool) -> Self {
        Self {
            allowed,
            max_age: HeaderValue::from(max_age.as_secs()),
            allow_credentials,
        }
    }

    /// The policy `[cors]` asks for; an origin that does not parse is refused naming
    /// `cors.allowed_origins`.
    pub fn from_config(config: &CorsConfig) -> Result<Self, ConfigError> {
        let allowed = config
            .allowed_origins
            .iter()
            .map(|o| {
                OriginPattern::parse(o).map_err(|e| ConfigError::invalid("cors.allowed_origins", e))
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self::new(allowed, config.max_age, config.allow_credentials))
    }

    /// The request's origin if it is allowed; `None` for requests without `Origin`
    /// (not from a browser page of another origin); an error for a disallowed one.
    pub fn check(&self, headers: &HeaderMap) -> Result<Option<HeaderValue>, OriginNotAllowed> {
        let mut origins = headers.get_all(header::ORIGIN).iter();
        let Some(origin) = origins.next() else {
            // No Origin, but the browser says another site caused this request (a link,
            // a form, an image): never SDK traffic, and with a cookie credential it would
            // be cross-site request forgery.
            let cross_site = headers
                .get("sec-fetch-site")
                .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"cross-site"));
            return if cross_site {
                Err(OriginNotAllowed)
            } else {
                Ok(None)
            };
        };
        if origins.next().is_some() {
            return Err(OriginNotAllowed);
        }
        let allowed = origin
            .to_str()
            .is_ok_and(|o| self.allowed.iter().any(|p| p.matches(o)));
        if allowed {
            Ok(Some(origin.clone()))
        } else {
            Err(OriginNotAllowed)
        }
    }

    /// Whether a request is a CORS preflight.
    pub fn is_preflight(method: &Method, headers: &HeaderMap) -> bool {
        method == Method::OPTIONS
            && headers.contains_key(header::ORIGIN)
            && headers.contains_key(header::ACCESS_CONTROL_REQUEST_METHOD)
    }

    /// The answer to a preflight from an allowed origin.
    pub fn preflight(&self, origin: &HeaderValue) -> Response<ProxyBody> {
        let mut response = Response::new(full_body(""));
        *response.status_mut() = StatusCode::NO_CONTENT;
        let headers = response.headers_mut();
        self.decorate(origin, headers);
        headers.insert(
            header::ACCESS_CONTROL_ALLOW_METHODS,
            HeaderValue::from_static(ALLOWED_METHODS),
        );
        headers.insert(
            header::ACCESS_CONTROL_ALLOW_HEADERS,
            HeaderValue::from_static(ALLOWED_HEADERS),
        );
        headers.insert(header::ACCESS_CONTROL_MAX_AGE, self.max_age.clone());
        headers.append(
            header::VARY,
            HeaderValue::from_static(
                "access-control-request-method, access-control-request-headers",
            ),
        );
        response
    }

    /// Adds the CORS headers for an allowed origin, replacing any the upstream sent.
    pub fn decorate(&self, origin: &HeaderValue, headers: &mut HeaderMap) {
        remove_cors_headers(headers);
        headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin.clone());
        headers.insert(
            header::ACCESS_CONTROL_EXPOSE_HEADERS,
            HeaderValue::from_static(EXPOSED_HEADERS),
        );
        if self.allow_credentials {
            headers.insert(
                header::ACCESS_CONTROL_ALLOW_CREDENTIALS,
                HeaderValue::from_static("true"),
            );
        }
        headers.append(header::VARY, HeaderValue::from_static("origin"));
    }
}

/// Drops `Access-Control-*` response headers (the proxy, not Refold, decides CORS).
pub fn remove_cors_headers(headers: &mut HeaderMap) {
    let doomed: Vec<HeaderName> = headers
        .keys()
        .filter(|name| name.as_str().starts_with("access-control-"))
        .cloned()
        .collect();
    for name in doomed {
        headers.remove(name);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cors(origins: &[&str]) -> Cors {
        Cors::new(
            origins
                .iter()
                .map(|o| OriginPattern::parse(o).unwrap())
                .collect(),
            Duration::from_secs(600),
            false,
        )
    }

    #[test]
    fn the_config_builds_the_policy_and_bad_origins_name_the_key() {
        let config = CorsConfig {
            allowed_origins: vec!["https://app.example".into()],
            max_age: Duration::from_secs(120),
            allow_credentials: false,
        };
        let policy = Cors::from_config(&config).unwrap();
        assert!(matches!(
            policy.check(&with_origin("https://app.example")),
            Ok(Some(_))
        ));
        assert!(policy.check(&with_origin("https://evil.example")).is_err());
        let bad = CorsConfig {
            allowed_origins: vec!["https://app.example".into(), "not an origin".into()],
            ..config
        };
        let err = Cors::from_config(&bad).unwrap_err().to_string();
        assert!(err.contains("cors.allowed_origins"), "{err}");
    }

    fn with_origin(origin: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::ORIGIN, HeaderValue::from_str(origin).unwrap());
        h
    }

    #[test]
    fn exact_and_wildcard_origins() {
        let c = cors(&["https://app.example.com", "https://*.tenant.example"]);
        assert!(c.check(&HeaderMap::new()).unwrap().is_none());
        assert!(c
            .check(&with_origin("https://app.example.com"))
            .unwrap()
            .is_some());
        assert!(c
            .check(&with_origin("https://APP.example.com"))
            .unwrap()
            .is_some());
        assert!(c
            .check(&with_origin("https://eu.tenant.example"))
            .unwrap()
            .is_some());
        for bad in [
            "https://app.example.com.evil.com",
            "http://app.example.com",
            "https://tenant.example",
            "https://a.b.tenant.example",
            "https://evil.com/.tenant.example",
            "null",
            "https://app.example.com:8443",
        ] {
            assert!(c.check(&with_origin(bad)).is_err(), "{bad} allowed");
        }
    }

    #[test]
    fn cross_site_requests_without_origin_are_refused() {
        let c = cors(&["https://app.example.com"]);
        let mut h = HeaderMap::new();
        h.insert("sec-fetch-site", HeaderValue::from_static("cross-site"));
        assert!(c.check(&h).is_err());
        h.insert("sec-fetch-site", HeaderValue::from_static("same-origin"));
        assert!(c.check(&h).unwrap().is_none());
    }

    #[test]
    fn bad_patterns_are_rejected() {
        for bad in [
            "*",
            "app.example.com",
            "https://app.example.com/path",
            "ftp://x",
            "https://*",
            "https://a.*.com",
        ] {
            assert!(OriginPattern::parse(bad).is_err(), "{bad} accepted");
        }
    }

    #[test]
    fn preflight_lists_the_sdk_headers_and_varies_on_origin() {
        let c = cors(&["https://app.example.com"]);
        let origin = HeaderValue::from_static("https://app.example.com");
        let response = c.preflight(&origin);
        assert_eq!(response.status(), StatusCode::NO_CONTENT);
        let h = response.headers();
        assert_eq!(
            h[header::ACCESS_CONTROL_ALLOW_ORIGIN],
            "https://app.example.com"
        );
        let allowed = h[header::ACCESS_CONTROL_ALLOW_HEADERS].to_str().unwrap();
        for name in [
            "authorization",
            "content-type",
            "slug",
            "sync_execution",
            "disable_field_options",
            "config_id",
            "connection_id",
        ] {
            assert!(allowed.contains(name), "{name}");
        }
        assert!(h.get_all(header::VARY).iter().any(|v| v == "origin"));
        assert_eq!(h[header::ACCESS_CONTROL_MAX_AGE], "600");
    }

    #[test]
    fn upstream_cors_headers_are_replaced() {
        let c = cors(&["https://app.example.com"]);
        let mut h = HeaderMap::new();
        h.insert(
            header::ACCESS_CONTROL_ALLOW_ORIGIN,
            HeaderValue::from_static("*"),
        );
        h.insert(
            header::ACCESS_CONTROL_ALLOW_CREDENTIALS,
            HeaderValue::from_static("true"),
        );
        c.decorate(&HeaderValue::from_static("https://app.example.com"), &mut h);
        assert_eq!(
            h[header::ACCESS_CONTROL_ALLOW_ORIGIN],
            "https://app.example.com"
        );
        assert!(!h.contains_key(header::ACCESS_CONTROL_ALLOW_CREDENTIALS));
    }
}
