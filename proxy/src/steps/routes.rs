//! Route policy: path normalisation, then which routes may reach Refold.
//!
//! 1. [`normalize`] turns the path below the mount into the one path that is both checked
//!    and forwarded: repeated slashes folded (the SDK's `//api/...`), everything else kept
//!    byte for byte. Paths that could mean something else to another parser are refused:
//!    `.`/`..` segments (raw, percent-encoded or double-encoded, also with `;params`),
//!    encoded `/` or `\`, control characters, non-UTF-8, and over-long paths.
//! 2. [`RoutePolicy::check`] matches the normalised path against an allowlist of the
//!    SDK's endpoints (method + template); a known path with another method is 405.
//! 3. Routes that hand out tokens and org-level routes are denied whatever the config
//!    says, matched on a canonical form (decoded, case-folded, no trailing slash), as
//!    Refold's router may route `/API/V2/PUBLIC/SESSION-TOKEN/` to the same handler.

use std::borrow::Cow;
use std::fmt;
use std::sync::Arc;

use http::Method;
use percent_encoding::percent_decode_str;

use crate::config::{ConfigError, RoutesConfig};
use crate::error::ProxyError;

/// The SDK's endpoints (REFOLD_API.md), allowed by default.
const SDK_ROUTES: &[&str] = &[
    "GET /api/v3/org/basics",
    "GET /api/v2/f-sdk/application",
    "GET /api/v2/f-sdk/application/{slug}",
    "GET /api/v1/{slug}/integrate",
    "POST /api/v1/{slug}/integrate",
    "POST /api/v2/app/{slug}/save",
    "DELETE /api/v1/linked-acc/integration/{slug}",
    "POST /api/v2/f-sdk/config",
    "PUT /api/v2/f-sdk/config",
    "GET /api/v2/f-sdk/slug/{slug}/config",
    "GET /api/v2/f-sdk/slug/{slug}/config/{config_id}",
    "DELETE /api/v2/f-sdk/slug/{slug}/config",
    "DELETE /api/v2/f-sdk/slug/{slug}/config/{config_id}",
    "GET /api/v2/public/slug/{slug}/configs",
    "PATCH /api/v2/public/slug/{slug}/config/{config_id}/workflows/{workflow_id}",
    "GET /api/v2/public/config/field/{field_id}",
    "POST /api/v2/public/config/field/{field_id}",
    "PUT /api/v2/public/config/field/{field_id}",
    "DELETE /api/v2/public/config/field/{field_id}",
    "POST /api/v2/public/config/rule-engine/{field_id}",
    "GET /api/v2/public/workflow",
    "POST /api/v2/public/workflow",
    "DELETE /api/v2/public/workflow/{workflow_id}",
    "GET /api/v2/public/workflow/request-structure/{workflow_id}",
    "POST /api/v2/public/workflow/{workflow_id}/execute",
    "GET /api/v2/public/execution",
    "GET /api/v2/public/execution/{execution_id}",
    "POST /api/v1/ecosystem/leads",
    "GET /api/v2/public/slug/{slug}/auth-config",
];

/// The SDK's private `updateAccount`: it can rewrite the account's stored app
/// credentials, so it passes only when `routes.allow_update_account` says so.
const UPDATE_ACCOUNT: &str = "PUT /api/v2/public/linked-account";

/// Canonical path prefixes that never pass, with the reason.
const HARD_DENY: &[(&str, &str)] = &[
    (
        "/api/v2/public/session-token",
        "it hands out session tokens",
    ),
    (
        "/api/v2/public/connect-url",
        "it returns a URL holding a session token",
    ),
    (
        "/api/v2/public/connect-code",
        "it exchanges a code for a session token",
    ),
    (
        "/api/v2/public/hosted-properties",
        "it exposes hosted-portal tokens",
    ),
    ("/api/v2/public/session", "it reveals session state"),
    ("/api/v2/public/webhook", "it is an org-level route"),
    ("/api/v2/public/webhooks", "it is an org-level route"),
    ("/api/v2/public/org", "it is an org-level route"),
    ("/api/v2/org", "it is an org-level route"),
];

/// `/api/v2/public/linked-account` and below are org-level (listing, creation,
/// deletion), except the exact `PUT` that `allow_update_account` may open.
const LINKED_ACCOUNTS: &str = "/api/v2/public/linked-account";

/// A route template: a method and a path whose `{name}` segments match any one segment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteTemplate {
    method: Method,
    segments: Vec<Segment>,
    /// [`RouteTemplate::path`], built once: a label that costs no allocation per request.
    label: Arc<str>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Segment {
    Literal(String),
    Param,
}

impl RouteTemplate {
    /// Parses `"GET /api/v2/public/workflow/{workflow_id}"`.
    pub fn parse(text: &str) -> Result<Self, String> {
        let (method, path) = text
            .trim()
            .split_once(' ')
            .ok_or_else(|| format!("{text:?} is not \"METHOD /path\""))?;
        let method = match method {
            "GET" => Method::GET,
            "POST" => Method::POST,
            "PUT" => Method::PUT,
            "PATCH" => Method::PATCH,
            "DELETE" => Method::DELETE,
            other => {
                return Err(format!(
                    "{text:?}: method {other:?} is not GET, POST, PUT, PATCH or DELETE"
                ))
            }
        };
        let path = path.trim();
        if !path.starts_with('/') || path.contains("//") || path.contains(['?', '#', '%', '\\']) {
            return Err(format!(
                "{text:?}: the path must be a plain /path/{{param}} template"
            ));
        }
        let mut segments = Vec::new();
        for segment in path.trim_end_matches('/').split('/').skip(1) {
            if segment.starts_with('{') && segment.ends_with('}') && segment.len() > 2 {
                segments.push(Segment::Param);
            } else if segment.contains(['{', '}'])
                || segment == "."
                || segment == ".."
                || segment.is_empty()
            {
                return Err(format!("{text:?}: bad segment {segment:?}"));
            } else {
                segments.push(Segment::Literal(segment.to_owned()));
            }
        }
        if segments.is_empty() {
            return Err(format!("{text:?}: the path is empty"));
        }
        if segments.len() > MAX_SEGMENTS {
            return Err(format!("{text:?}: more than {MAX_SEGMENTS} segments"));
        }
        let mut template = Self {
            method,
            segments,
            label: Arc::from(""),
        };
        template.label = Arc::from(template.path());
        Ok(template)
    }

    fn matches_path(&self, segments: &[&str]) -> bool {
        self.segments.len() == segments.len()
            && self.segments.iter().zip(segments).all(|(t, s)| match t {
                Segment::Literal(l) => l == s,
                Segment::Param => !s.is_empty(),
            })
    }

    /// The template's path with parameters as `{}`, for logs and metrics.
    pub fn path(&self) -> String {
        let mut out = String::new();
        for segment in &self.segments {
            out.push('/');
            match segment {
                Segment::Literal(l) => out.push_str(l),
                Segment::Param => out.push_str("{}"),
            }
        }
        out
    }
}

impl RouteTemplate {
    /// The same as [`RouteTemplate::path`], shared: for the access log and metrics.
    pub fn label(&self) -> &Arc<str> {
        &self.label
    }
}

impl fmt::Display for RouteTemplate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.method, self.path())
    }
}

/// Why a template can never pass, if it cannot.
pub fn hard_denied(template: &RouteTemplate) -> Option<&'static str> {
    let path = canonical_slow(&template.path().replace("{}", "x"));
    denied_reason(&template.method, &path, false)
}

fn denied_reason(
    method: &Method,
    canonical: &str,
    allow_update_account: bool,
) -> Option<&'static str> {
    let under = |prefix: &str| {
        canonical
            .strip_prefix(prefix)
            .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
    };
    if let Some((_, why)) = HARD_DENY.iter().find(|(prefix, _)| under(prefix)) {
        return Some(why);
    }
    if under(LINKED_ACCOUNTS) {
        let update = canonical == LINKED_ACCOUNTS && method == Method::PUT;
        if !(update && allow_update_account) {
            return Some("linked-account management is org-level");
        }
    }
    None
}

/// Segments a checked path may have: more than any template holds.
const MAX_SEGMENTS: usize = 32;

/// Decides whether a request's route may pass.
#[derive(Debug, Clone)]
pub struct RoutePolicy {
    allowed: Vec<RouteTemplate>,
    /// `by_length[n]`: the indices in `allowed` of the templates of `n` segments, in
    /// order, so a path is compared with the templates it could match only.
    by_length: Vec<Vec<usize>>,
    allow_update_account: bool,
}

impl Default for RoutePolicy {
    fn default() -> Self {
        Self::with_templates(Vec::new(), &[], false)
    }
}

/// The templates of `routes.allow` or `routes.deny` (`key`), parsed.
fn templates(key: &'static str, list: &[String]) -> Result<Vec<RouteTemplate>, ConfigError> {
    list.iter()
        .map(|t| RouteTemplate::parse(t).map_err(|e| ConfigError::invalid(key, e)))
        .collect()
}

/// What `[routes]` allows to no effect: templates the hard deny list refuses anyway.
/// Templates that do not parse are [`RoutePolicy::new`]'s to refuse, not reported here.
pub fn warnings(config: &RoutesConfig) -> Vec<String> {
    config
        .allow
        .iter()
        .filter_map(|t| RouteTemplate::parse(t).ok())
        .filter_map(|template| {
            hard_denied(&template).map(|why| {
                format!(
                    "routes.allow: \"{template}\" is never forwarded ({why}); the entry has no effect"
                )
            })
        })
        .collect()
}

impl RoutePolicy {
    /// The SDK allowlist, changed by `[routes]`; a template that does not parse is
    /// refused naming its key.
    pub fn new(config: &RoutesConfig) -> Result<Self, ConfigError> {
        let allow = templates("routes.allow", &config.allow)?;
        let deny = templates("routes.deny", &config.deny)?;
        Ok(Self::with_templates(
            allow,
            &deny,
            config.allow_update_account,
        ))
    }

    fn with_templates(
        allow: Vec<RouteTemplate>,
        deny: &[RouteTemplate],
        allow_update_account: bool,
    ) -> Self {
        let mut allowed: Vec<RouteTemplate> = SDK_ROUTES
            .iter()
            .filter_map(|t| RouteTemplate::parse(t).ok())
            .collect();
        if allow_update_account {
            allowed.extend(RouteTemplate::parse(UPDATE_ACCOUNT).ok());
        }
        allowed.extend(allow);
        allowed.retain(|t| !deny.contains(t));
        let mut by_length: Vec<Vec<usize>> = vec![Vec::new(); MAX_SEGMENTS + 1];
        for (i, template) in allowed.iter().enumerate() {
            if let Some(same_length) = by_length.get_mut(template.segments.len()) {
                same_length.push(i);
            }
        }
        Self {
            allowed,
            by_length,
            allow_update_account,
        }
    }

    /// Checks a normalised path (see [`normalize`]). Returns the matched template.
    pub fn check(&self, method: &Method, path: &str) -> Result<&RouteTemplate, ProxyError> {
        if denied_reason(method, &canonical(path), self.allow_update_account).is_some() {
            return Err(ProxyError::RouteNotAllowed);
        }
        let trimmed = path
            .strip_suffix('/')
            .filter(|p| !p.is_empty())
            .unwrap_or(path);
        // On the stack: no template is longer, so a longer path matches none.
        let mut segments = [""; MAX_SEGMENTS];
        let mut count = 0;
        // The pieces between slashes after the leading one (as `split('/').skip(1)`),
        // cut where memchr finds each `/`: no char searcher per segment.
        let mut start = 1;
        let ends = memchr::memchr_iter(b'/', trimmed.as_bytes().get(1..).unwrap_or(&[]))
            .map(|i| i + 1)
            .chain([trimmed.len()]);
        for end in ends {
            if count == MAX_SEGMENTS {
                return Err(ProxyError::RouteNotAllowed);
            }
            segments[count] = trimmed.get(start..end).unwrap_or("");
            count += 1;
            start = end + 1;
        }
        let segments = &segments[..count];
        let mut path_known = false;
        let candidates = self.by_length.get(count).map_or(&[][..], Vec::as_slice);
        for template in candidates.iter().map(|&i| &self.allowed[i]) {
            if template.matches_path(segments) {
                if template.method == method {
                    return Ok(template);
                }
                path_known = true;
            }
        }
        if path_known {
            let allow: Vec<&str> = self
                .allowed_methods(path)
                .iter()
                .map(|m| m.as_str())
                .collect();
            Err(ProxyError::MethodNotAllowed {
                allow: allow.join(", "),
            })
        } else {
            Err(ProxyError::RouteNotAllowed)
        }
    }

    /// The methods allowed on a path, for a 405's `Allow` header.
    pub fn allowed_methods(&self, path: &str) -> Vec<&Method> {
        let trimmed = path
            .strip_suffix('/')
            .filter(|p| !p.is_empty())
            .unwrap_or(path);
        let segments: Vec<&str> = trimmed.split('/').skip(1).collect();
        self.allowed
            .iter()
            .filter(|t| t.matches_path(&segments))
            .map(|t| &t.method)
            .collect()
    }
}

/// The path to check and forward: repeated slashes folded, nothing else changed.
/// Refuses (400 `INVALID_PATH`) anything another parser could read differently.
pub fn normalize(path: &str, max_bytes: usize) -> Result<Cow<'_, str>, ProxyError> {
    if path.len() > max_bytes || !path.starts_with('/') {
        return Err(ProxyError::InvalidPath);
    }
    if is_plain(path) {
        // Nothing encoded, no parameters, no controls: only dot segments to refuse.
        if path.as_bytes().contains(&b'.') && path.split('/').any(|s| s == "." || s == "..") {
            return Err(ProxyError::InvalidPath);
        }
        return Ok(fold_slashes(path));
    }
    for segment in path.split('/') {
        check_segment(segment)?;
    }
    Ok(fold_slashes(path))
}

/// Percent-decoding rounds undone when checking a segment: catches double and triple
/// encoding; a segment still encoded after that is refused.
const DECODE_ROUNDS: usize = 3;

fn check_segment(raw: &str) -> Result<(), ProxyError> {
    if raw.bytes().any(|b| b.is_ascii_control() || b == b'\\') {
        return Err(ProxyError::InvalidPath);
    }
    let mut current: Cow<'_, str> = Cow::Borrowed(raw);
    for round in 0..=DECODE_ROUNDS {
        // `..;x` is `..` to a router that drops path parameters, as `canonical` assumes.
        let before_params = current.split(';').next().unwrap_or("");
        if before_params == "." || before_params == ".." {
            return Err(ProxyError::InvalidPath);
        }
        if round > 0 && current.contains(['/', '\\']) {
            return Err(ProxyError::InvalidPath);
        }
        if current.chars().any(char::is_control) {
            return Err(ProxyError::InvalidPath);
        }
        if !current.contains('%') {
            return Ok(());
        }
        if round == DECODE_ROUNDS {
            break;
        }
        let decoded = percent_decode_str(&current)
            .decode_utf8()
            .map_err(|_| ProxyError::InvalidPath)?
            .into_owned();
        if decoded == current {
            // A lone `%` that decodes to itself: not an encoding, but not a valid path either.
            return Err(ProxyError::InvalidPath);
        }
        current = Cow::Owned(decoded);
    }
    Err(ProxyError::InvalidPath)
}

/// The form deny rules compare in: percent-decoded until stable, case-folded (Unicode
/// upper then lower case, so the Kelvin sign, `ſ` and `ß` read as `k`, `s` and `ss`),
/// repeated slashes folded, path parameters (`;...`) dropped, and no trailing slash.
fn canonical(path: &str) -> Cow<'_, str> {
    // What SDK calls look like: already in canonical form but for a trailing slash.
    if is_plain(path)
        && path.starts_with('/')
        && !has_double_slash(path)
        && !path.bytes().any(|b| b.is_ascii_uppercase())
    {
        return match path.strip_suffix('/') {
            Some("") | None => Cow::Borrowed(path),
            Some(trimmed) => Cow::Borrowed(trimmed),
        };
    }
    Cow::Owned(canonical_slow(path))
}

/// Whether `path` holds only unreserved characters and `/`: nothing to decode, no path
/// parameters, no case beyond ASCII.
fn is_plain(path: &str) -> bool {
    path.bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'/' | b'-' | b'_' | b'.' | b'~'))
}

fn canonical_slow(path: &str) -> String {
    let mut decoded: Cow<'_, str> = Cow::Borrowed(path);
    for _ in 0..DECODE_ROUNDS {
        let next = percent_decode_str(&decoded)
            .decode_utf8_lossy()
            .into_owned();
        if next == decoded {
            break;
        }
        decoded = Cow::Owned(next);
    }
    let mut out = String::with_capacity(decoded.len());
    for segment in decoded.replace('\\', "/").split('/') {
        let segment = segment.split(';').next().unwrap_or("");
        if segment.is_empty() {
            continue;
        }
        out.push('/');
        out.push_str(&segment.to_uppercase().to_lowercase());
    }
    if out.is_empty() {
        out.push('/');
    }
    out
}

/// Whether `path` holds `//`: a look at the byte after each slash, no substring searcher
/// to build (this runs twice a request).
fn has_double_slash(path: &str) -> bool {
    let bytes = path.as_bytes();
    memchr::memchr_iter(b'/', bytes).any(|i| bytes.get(i + 1) == Some(&b'/'))
}

/// Folds repeated slashes (the SDK's `//api/...` when `baseUrl` ends in `/`).
pub fn fold_slashes(path: &str) -> Cow<'_, str> {
    if !has_double_slash(path) {
        return Cow::Borrowed(path);
    }
    let mut out = String::with_capacity(path.len());
    let mut previous_slash = false;
    for c in path.chars() {
        if c == '/' && previous_slash {
            continue;
        }
        previous_slash = c == '/';
        out.push(c);
    }
    Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn double_slashes_are_found_anywhere() {
        for (path, expected) in [
            ("", false),
            ("/", false),
            ("//", true),
            ("/a/b/", false),
            ("/a//b", true),
            ("a//", true),
            ("/a/b//", true),
            ("/a/./b", false),
        ] {
            assert_eq!(has_double_slash(path), expected, "{path:?}");
            assert_eq!(has_double_slash(path), path.contains("//"), "{path:?}");
        }
    }

    #[test]
    fn the_plain_path_shortcuts_agree_with_the_full_rules() {
        for path in [
            "/",
            "/api/v2/public/workflow",
            "/api/v2/public/workflow/",
            "/api/v2/public/workflow/wf-1/execute",
            "/api/v2/public/Session-Token",
            "/API/v2/public/session-token/",
            "/api/v1/linked-acc/integration/hubspot",
            "/a/./b",
            "/a/../b",
            "/a/b.c~d_e",
            "/a//b",
        ] {
            assert_eq!(canonical(path), canonical_slow(path), "{path}");
            // The shortcut of `normalize` gives what the segment checks give.
            let full = path
                .split('/')
                .try_for_each(check_segment)
                .map(|()| fold_slashes(path));
            assert_eq!(
                normalize(path, 4096).map_err(|e| e.code()),
                full.map_err(|e| e.code()),
                "{path}"
            );
        }
        let long = format!("/api{}", "/x".repeat(MAX_SEGMENTS));
        assert_eq!(
            RoutePolicy::default()
                .check(&Method::GET, &long)
                .unwrap_err()
                .code(),
            "ROUTE_NOT_ALLOWED"
        );
    }

    fn policy() -> RoutePolicy {
        RoutePolicy::default()
    }

    fn code(result: Result<&RouteTemplate, ProxyError>) -> &'static str {
        match result {
            Ok(_) => "OK",
            Err(e) => e.code(),
        }
    }

    #[test]
    fn token_leaking_and_org_routes_are_refused_in_every_spelling() {
        let policy = RoutePolicy::new(&RoutesConfig {
            allow: vec![
                "POST /api/v2/public/session-token".into(),
                "GET /api/v2/public/linked-account".into(),
            ],
            ..RoutesConfig::default()
        })
        .unwrap();
        for (method, path) in [
            (Method::POST, "/api/v2/public/session-token"),
            (Method::POST, "/api/v2/public/session-token/"),
            (Method::POST, "/API/V2/PUBLIC/SESSION-TOKEN/"),
            (Method::POST, "/api/v2/public/session-token/revoke"),
            (Method::POST, "/api/v2/public/session%2Dtoken"),
            (Method::POST, "/api/v2/public/session%252Dtoken"),
            (Method::POST, "/api/v2/public/session-token;x=1"),
            (Method::POST, "/api/v2/public/connect-url"),
            (Method::POST, "/api/v2/public/connect-code/exchange"),
            (Method::GET, "/api/v2/public/hosted-properties"),
            (Method::GET, "/api/v2/public/session/active-linked-account"),
            (Method::GET, "/api/v2/public/linked-account"),
            (Method::DELETE, "/api/v2/public/linked-account/x"),
            (Method::POST, "/api/v2/public/webhook"),
        ] {
            assert_eq!(
                code(policy.check(&method, path)),
                "ROUTE_NOT_ALLOWED",
                "{method} {path}"
            );
        }
    }

    #[test]
    fn sdk_routes_pass_and_wrong_methods_are_405() {
        let p = policy();
        assert_eq!(
            code(p.check(&Method::GET, "/api/v2/f-sdk/application")),
            "OK"
        );
        assert_eq!(
            code(p.check(&Method::GET, "/api/v2/f-sdk/application/")),
            "OK"
        );
        assert_eq!(
            code(p.check(&Method::GET, "/api/v2/f-sdk/application/hubspot")),
            "OK"
        );
        assert_eq!(
            code(p.check(&Method::POST, "/api/v1/hubspot/integrate")),
            "OK"
        );
        assert_eq!(
            code(p.check(&Method::GET, "/api/v1/hubspot/integrate")),
            "OK"
        );
        assert_eq!(
            code(p.check(&Method::POST, "/api/v2/public/workflow/wf_1/execute")),
            "OK"
        );
        assert_eq!(
            code(p.check(&Method::DELETE, "/api/v2/f-sdk/application")),
            "METHOD_NOT_ALLOWED"
        );
        assert_eq!(
            code(p.check(&Method::GET, "/api/v2/public/unknown")),
            "ROUTE_NOT_ALLOWED"
        );
        assert_eq!(
            code(p.check(&Method::GET, "/api/v2/public/%77orkflow")),
            "ROUTE_NOT_ALLOWED"
        );
        assert_eq!(
            code(p.check(&Method::PUT, "/api/v2/public/linked-account")),
            "ROUTE_NOT_ALLOWED"
        );
        assert_eq!(p.allowed_methods("/api/v2/public/workflow").len(), 2);
    }

    #[test]
    fn update_account_is_one_switch() {
        let p = RoutePolicy::new(&RoutesConfig {
            allow_update_account: true,
            ..RoutesConfig::default()
        })
        .unwrap();
        assert_eq!(
            code(p.check(&Method::PUT, "/api/v2/public/linked-account")),
            "OK"
        );
        assert_eq!(
            code(p.check(&Method::GET, "/api/v2/public/linked-account")),
            "ROUTE_NOT_ALLOWED"
        );
        assert_eq!(
            code(p.check(&Method::DELETE, "/api/v2/public/linked-account/other")),
            "ROUTE_NOT_ALLOWED"
        );
    }

    #[test]
    fn config_can_add_and_remove_routes() {
        let p = RoutePolicy::new(&RoutesConfig {
            allow: vec!["POST /api/v2/custom/{id}/run".into()],
            deny: vec!["DELETE /api/v2/public/workflow/{workflow_id}".into()],
            allow_update_account: false,
        })
        .unwrap();
        assert_eq!(code(p.check(&Method::POST, "/api/v2/custom/7/run")), "OK");
        assert_eq!(
            code(p.check(&Method::DELETE, "/api/v2/public/workflow/wf")),
            "ROUTE_NOT_ALLOWED"
        );
    }

    #[test]
    fn templates_are_validated() {
        for bad in [
            "GET",
            "FETCH /x",
            "GET x",
            "GET /a//b",
            "GET /a/../b",
            "GET /a/{b",
            "GET /a?x",
            "GET /",
        ] {
            assert!(RouteTemplate::parse(bad).is_err(), "{bad} accepted");
        }
        assert!(hard_denied(
            &RouteTemplate::parse("POST /api/v2/public/session-token/{x}").unwrap()
        )
        .is_some());
        assert!(
            hard_denied(&RouteTemplate::parse("GET /api/v2/public/workflow").unwrap()).is_none()
        );
    }

    #[test]
    fn bad_templates_name_their_key_and_dead_allows_warn() {
        for (config, key) in [
            (
                RoutesConfig {
                    allow: vec!["FETCH /x".into()],
                    ..RoutesConfig::default()
                },
                "routes.allow",
            ),
            (
                RoutesConfig {
                    deny: vec!["GET /a//b".into()],
                    ..RoutesConfig::default()
                },
                "routes.deny",
            ),
        ] {
            let err = RoutePolicy::new(&config).unwrap_err().to_string();
            assert!(err.contains(key), "{config:?} gave {err}");
        }
        let dead = RoutesConfig {
            allow: vec![
                "POST /api/v2/public/session-token/{x}".into(),
                "GET /api/v2/public/workflow".into(),
            ],
            ..RoutesConfig::default()
        };
        let found = warnings(&dead);
        assert_eq!(found.len(), 1, "{found:?}");
        assert!(
            found[0].starts_with("routes.allow: \"POST /api/v2/public/session-token/{}\""),
            "{found:?}"
        );
        assert!(warnings(&RoutesConfig::default()).is_empty());
    }

    #[test]
    fn normalisation_refuses_ambiguous_paths() {
        for bad in [
            "/api/v2/../public/session-token",
            "/api/v2/./x",
            "/api/%2e%2e/x",
            "/api/%2E%2E/x",
            "/api/%252e%252e/x",
            "/api/.%2e/x",
            "/api/a%2fb",
            "/api/a%2Fb",
            "/api/a%252fb",
            "/api/a%5cb",
            "/api/a\\b",
            "/api/a%00b",
            "/api/a%0ab",
            "/api/a%ffb",
            "/api/a%2525252fb",
            "/api/100%",
            "api/x",
        ] {
            assert!(normalize(bad, 2048).is_err(), "{bad} accepted");
        }
        assert!(normalize(&format!("/{}", "a".repeat(3000)), 2048).is_err());
    }

    #[test]
    fn normalisation_keeps_everything_else_byte_for_byte() {
        assert_eq!(normalize("//api/v1/x", 2048).unwrap(), "/api/v1/x");
        assert_eq!(
            normalize("/api/v1/My%20App/config", 2048).unwrap(),
            "/api/v1/My%20App/config"
        );
        assert_eq!(
            normalize("/api/v1/caf%C3%A9", 2048).unwrap(),
            "/api/v1/caf%C3%A9"
        );
        assert_eq!(normalize("/api/v1/a.b..c", 2048).unwrap(), "/api/v1/a.b..c");
        assert!(matches!(
            normalize("/api/v1", 2048).unwrap(),
            Cow::Borrowed(_)
        ));
    }
}
