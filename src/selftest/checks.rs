//! The checks, in report order. Each probe is a GET, a preflight or a request the proxy
//! must refuse; what could change state at Refold if the proxy were broken waits for
//! `--allow-writes`.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::header::ACCESS_CONTROL_ALLOW_ORIGIN;
use http::{Method, Uri};

use super::probe::{Answer, Ask, Probe};
use super::tls::{offer, Legacy, Verdict};
use super::{jwt, scan, Check, Outcome, SelftestArgs};

/// A read-only SDK route every account may GET: the account's own details.
const READ_ROUTE: &str = "/api/v3/org/basics";

/// The longest clock-skew leeway the proxy can be configured with (`identity.leeway_s`):
/// a JWT expired more recently may rightly still pass.
const MAX_LEEWAY_S: u64 = 300;

/// The API key the credential-header probes send: not a real one.
const FAKE_KEY: &str = "tk_selftest_not_a_real_api_key";

/// A linked account id no test account has.
const FOREIGN_ACCOUNT: &str = "refold-selftest-foreign-account";

/// The session-token route spelled every way a router might still match it.
const TOKEN_ROUTE_VARIANTS: &[&str] = &[
    "/api/v2/public/session-token",
    "/api/v2/public/session-token/",
    "/api/v2/public/session-token?force_refresh=true",
    "/API/V2/PUBLIC/SESSION-TOKEN",
    "/api/v2/public/Session-Token",
    "/api/v2/public/session-token/revoke",
    "/api/v2/public%2fsession-token",
    "/api/v2/public%2Fsession-token",
    "/api/v2/public/%73ession-token",
    "/api/v2/public/session%2dtoken",
    "/api/v2/public/%2e/session-token",
    "/api/v2/public/./session-token",
    "/api/v2/public/x/../session-token",
    "/api/v2/public/x/%2e%2e/session-token",
    "/api/v2/public/x/%252e%252e/session-token",
    "/api/v3/org/../../v2/public/session-token",
    "//api/v2/public/session-token",
    "/api//v2/public//session-token",
    "/api/v2/public/session-token;x=1",
    "/api/v2/public;x=1/session-token",
    "/api/v2/public/session-token/;",
    "/api/v2/public/session-token%00",
    "/api/v2/public/session-token%20",
];

/// The other routes that hand a token to whoever calls them.
const OTHER_TOKEN_ROUTES: &[&str] = &[
    "/api/v2/public/connect-url",
    "/api/v2/public/connect-code/exchange",
    "/api/v2/public/hosted-properties",
    "/api/v2/public/session/active-linked-account",
];

/// Runs every check against `args.url`; an error means the deployment could not be
/// probed at all.
pub(super) async fn run_all(args: &SelftestArgs) -> Result<Vec<Check>, String> {
    let url: Uri = args
        .url
        .parse()
        .map_err(|e| format!("--url {:?}: {e}", args.url))?;
    let ca = match &args.ca_file {
        Some(path) => {
            Some(std::fs::read(path).map_err(|e| format!("--ca-file {}: {e}", path.display()))?)
        }
        None => None,
    };
    let probe = Probe::new(&url, ca.as_deref()).map_err(|e| e.to_string())?;
    let baseline = probe
        .send(Ask::get(READ_ROUTE).bearer(&args.jwt))
        .await
        .map_err(|e| format!("cannot reach {}: {e}", args.url))?;

    let flipped = jwt::flip_signature(&args.jwt);
    let unsigned = jwt::alg_none(&args.jwt);
    let mut own: Vec<String> = vec![args.jwt.clone()];
    own.extend(args.expired_jwt.clone());
    own.extend(flipped.clone());
    own.extend(unsigned.clone());
    own.push(FAKE_KEY.to_owned());

    let mut checks = vec![Check::verdict(
        "jwt-accepted",
        (!(200..300).contains(&baseline.status)).then(|| {
            format!(
                "GET {READ_ROUTE} with the caller's JWT answered {}: the checks need it served",
                baseline.status
            )
        }),
        &format!("GET {READ_ROUTE} with the caller's JWT is served"),
    )];
    checks.push(token_routes(&probe, args).await);
    checks.push(refused_401(&probe, "jwt-missing", None, "no JWT").await);
    checks.push(match &flipped {
        Some(token) => {
            refused_401(
                &probe,
                "jwt-bad-signature",
                Some(token),
                "a flipped signature",
            )
            .await
        }
        None => Check::new(
            "jwt-bad-signature",
            Outcome::Fail,
            "--jwt is not a JWT with a signature",
        ),
    });
    checks.push(match &unsigned {
        Some(token) => refused_401(&probe, "jwt-alg-none", Some(token), "alg: none").await,
        None => Check::new(
            "jwt-alg-none",
            Outcome::Fail,
            "--jwt is not a JWT with a JSON header",
        ),
    });
    checks.push(expired(&probe, args).await);
    checks.push(account_in_query(&probe, &args.jwt).await);
    checks.push(account_in_body(&probe, args).await);
    checks.push(credential_headers(&probe, &args.jwt, &baseline, &own).await);
    checks.push(cors_foreign(&probe, args).await);
    checks.push(cors_allowed(&probe, args).await);
    checks.push(old_tls(&url).await);
    checks.push(hsts(&url, &baseline));
    let answers = probe.answers();
    checks.push(error_envelope(&answers));
    checks.push(no_secrets(&answers, &own));
    Ok(checks)
}

/// Sends `ask`; a transport error is a problem to report.
async fn answer(probe: &Probe, ask: Ask<'_>) -> Result<Answer, String> {
    probe.send(ask).await.map_err(|e| format!("no answer: {e}"))
}

/// Whether `answer` carries a secret (the answer to a token route must carry none).
fn carries_secret(answer: &Answer, own: &[String]) -> bool {
    scan::secret_in(&answer.body, own).is_some()
        || answer
            .headers
            .values()
            .any(|v| scan::secret_in(v.as_bytes(), own).is_some())
}

async fn token_routes(probe: &Probe, args: &SelftestArgs) -> Check {
    let mut methods = vec![Method::GET];
    if args.allow_writes {
        methods.push(Method::POST);
    }
    let own = [args.jwt.clone()];
    let mut sent = 0;
    for path in TOKEN_ROUTE_VARIANTS.iter().chain(OTHER_TOKEN_ROUTES) {
        for method in &methods {
            let ask = Ask {
                method: method.clone(),
                path,
                headers: vec![("authorization", format!("Bearer {}", args.jwt))],
                body: None,
            };
            sent += 1;
            let problem = match answer(probe, ask).await {
                Err(e) => Some(e),
                Ok(a) if carries_secret(&a, &own) => {
                    Some(format!("{} answered {} with a token", a.what, a.status))
                }
                Ok(a) if !a.refused() => Some(format!("{} was not refused: {}", a.what, a.status)),
                Ok(_) => None,
            };
            if let Some(problem) = problem {
                return Check::new("token-routes", Outcome::Fail, problem);
            }
        }
    }
    let writes = if args.allow_writes {
        "GET and POST"
    } else {
        "GET only; POST with --allow-writes"
    };
    Check::new(
        "token-routes",
        Outcome::Pass,
        format!(
            "{sent} requests to {} token-route spellings refused ({writes})",
            TOKEN_ROUTE_VARIANTS.len() + OTHER_TOKEN_ROUTES.len()
        ),
    )
}

/// The read route with `jwt` (or none) must be refused with 401.
async fn refused_401(probe: &Probe, name: &'static str, jwt: Option<&str>, what: &str) -> Check {
    let mut ask = Ask::get(READ_ROUTE);
    if let Some(jwt) = jwt {
        ask = ask.bearer(jwt);
    }
    let problem = match answer(probe, ask).await {
        Err(e) => Some(e),
        Ok(a) if a.status != 401 => Some(format!("{what}: answered {}, not 401", a.status)),
        Ok(_) => None,
    };
    Check::verdict(name, problem, &format!("{what}: refused with 401"))
}

async fn expired(probe: &Probe, args: &SelftestArgs) -> Check {
    let Some(token) = &args.expired_jwt else {
        return Check::new(
            "jwt-expired",
            Outcome::Skip,
            "pass --expired-jwt <an expired app JWT> to run it",
        );
    };
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    match jwt::expiry(token) {
        Some(exp) if exp.saturating_add(MAX_LEEWAY_S) < now => {
            refused_401(probe, "jwt-expired", Some(token), "an expired JWT").await
        }
        Some(exp) if exp < now => Check::new(
            "jwt-expired",
            Outcome::Skip,
            format!(
                "the --expired-jwt token expired under {MAX_LEEWAY_S}s ago, within a leeway \
                 the proxy may allow (identity.leeway_s): give one expired longer ago"
            ),
        ),
        _ => Check::new(
            "jwt-expired",
            Outcome::Skip,
            "the --expired-jwt token has no exp in the past",
        ),
    }
}

async fn account_in_query(probe: &Probe, jwt: &str) -> Check {
    for key in [
        "linked_account_id",
        "Linked_Account_Id",
        "linked-account-id",
        "linked_account_id[]",
    ] {
        let path = format!("{READ_ROUTE}?{key}={FOREIGN_ACCOUNT}");
        let problem = match answer(probe, Ask::get(&path).bearer(jwt)).await {
            Err(e) => Some(e),
            Ok(a) if !a.refused() => Some(format!(
                "?{key}= naming another account answered {}",
                a.status
            )),
            Ok(_) => None,
        };
        if problem.is_some() {
            return Check::verdict("account-in-query", problem, "");
        }
    }
    Check::new(
        "account-in-query",
        Outcome::Pass,
        "another account in the query (4 spellings) refused",
    )
}

async fn account_in_body(probe: &Probe, args: &SelftestArgs) -> Check {
    let body = Bytes::from(format!("{{\"linked_account_id\":\"{FOREIGN_ACCOUNT}\"}}"));
    // A GET with a body: refused by the proxy's body check, and read-only at Refold
    // even if the proxy let it through.
    let mut asks = vec![Ask {
        method: Method::GET,
        path: READ_ROUTE,
        headers: vec![
            ("authorization", format!("Bearer {}", args.jwt)),
            ("content-type", "application/json".into()),
        ],
        body: Some(body.clone()),
    }];
    if args.allow_writes {
        asks.push(Ask {
            method: Method::POST,
            path: "/api/v2/f-sdk/config",
            headers: vec![
                ("authorization", format!("Bearer {}", args.jwt)),
                ("content-type", "application/json".into()),
            ],
            body: Some(body),
        });
    }
    for ask in asks {
        let problem = match answer(probe, ask).await {
            Err(e) => Some(e),
            Ok(a) if !a.refused() => Some(format!(
                "{} with another account in the JSON body answered {}",
                a.what, a.status
            )),
            Ok(_) => None,
        };
        if problem.is_some() {
            return Check::verdict("account-in-body", problem, "");
        }
    }
    Check::new(
        "account-in-body",
        Outcome::Pass,
        if args.allow_writes {
            "another account in a JSON body refused (GET and POST)"
        } else {
            "another account in a JSON body refused (a read-only GET; POST with --allow-writes)"
        },
    )
}

async fn credential_headers(probe: &Probe, jwt: &str, baseline: &Answer, own: &[String]) -> Check {
    let token_route = "/api/v2/public/session-token";
    let probes: [&[(&'static str, &str)]; 7] = [
        &[("x-api-key", FAKE_KEY)],
        &[("linked_account_id", FOREIGN_ACCOUNT)],
        &[("linked-account-id", FOREIGN_ACCOUNT)],
        &[
            ("x-api-key", FAKE_KEY),
            ("linked_account_id", FOREIGN_ACCOUNT),
        ],
        &[("authorization", "Bearer selftest-not-a-session-token")],
        &[("x-original-url", token_route)],
        &[("x-rewrite-url", token_route)],
    ];
    for headers in probes {
        let mut ask = Ask::get(READ_ROUTE).bearer(jwt);
        for (name, value) in headers {
            ask = ask.header(name, *value);
        }
        let names: Vec<&str> = headers.iter().map(|(n, _)| *n).collect();
        let names = names.join(" + ");
        let problem = match answer(probe, ask).await {
            Err(e) => Some(e),
            Ok(a) if carries_secret(&a, own) => {
                Some(format!("with {names}: the answer carries a secret"))
            }
            Ok(a) if a.refused() => None,
            Ok(a) if a.status != baseline.status => Some(format!(
                "with {names}: answered {}, the caller alone {}",
                a.status, baseline.status
            )),
            Ok(a) if contains(&a.body, FOREIGN_ACCOUNT) => {
                Some(format!("with {names}: served as another account"))
            }
            Ok(_) => None,
        };
        if problem.is_some() {
            return Check::verdict("credential-headers", problem, "");
        }
    }
    Check::new(
        "credential-headers",
        Outcome::Pass,
        "x-api-key, linked_account_id, a second Authorization and rewrite headers: refused or served as the caller",
    )
}

fn contains(haystack: &[u8], needle: &str) -> bool {
    haystack
        .windows(needle.len())
        .any(|w| w == needle.as_bytes())
}

fn preflight<'a>(origin: &str) -> Ask<'a> {
    Ask {
        method: Method::OPTIONS,
        path: READ_ROUTE,
        headers: vec![
            ("origin", origin.to_owned()),
            ("access-control-request-method", "GET".into()),
            ("access-control-request-headers", "authorization".into()),
        ],
        body: None,
    }
}

async fn cors_foreign(probe: &Probe, args: &SelftestArgs) -> Check {
    let origin = &args.foreign_origin;
    let asks = [
        preflight(origin),
        Ask::get(READ_ROUTE)
            .bearer(&args.jwt)
            .header("origin", origin.clone()),
    ];
    for ask in asks {
        let problem = match answer(probe, ask).await {
            Err(e) => Some(e),
            Ok(a) => a.headers.get(ACCESS_CONTROL_ALLOW_ORIGIN).map(|v| {
                format!(
                    "{} from {origin} got Access-Control-Allow-Origin: {}",
                    a.what,
                    String::from_utf8_lossy(v.as_bytes())
                )
            }),
        };
        if problem.is_some() {
            return Check::verdict("cors-foreign-origin", problem, "");
        }
    }
    Check::new(
        "cors-foreign-origin",
        Outcome::Pass,
        format!("no Access-Control-Allow-Origin for {origin} (preflight and GET)"),
    )
}

async fn cors_allowed(probe: &Probe, args: &SelftestArgs) -> Check {
    let Some(origin) = &args.origin else {
        return Check::new(
            "cors-allowed-origin",
            Outcome::Skip,
            "pass --origin <an allowed origin> to run it",
        );
    };
    let problem = match answer(probe, preflight(origin)).await {
        Err(e) => Some(e),
        Ok(a) => match a.headers.get(ACCESS_CONTROL_ALLOW_ORIGIN) {
            Some(v) if v.as_bytes() == origin.as_bytes() => None,
            Some(v) => Some(format!(
                "the preflight from {origin} got Access-Control-Allow-Origin: {}",
                String::from_utf8_lossy(v.as_bytes())
            )),
            None => Some(format!(
                "the preflight from {origin} got no Access-Control-Allow-Origin ({})",
                a.status
            )),
        },
    };
    Check::verdict(
        "cors-allowed-origin",
        problem,
        &format!("the preflight from {origin} is allowed, the origin echoed"),
    )
}

async fn old_tls(url: &Uri) -> Check {
    const NAME: &str = "tls-old-versions";
    if url.scheme_str() != Some("https") {
        return Check::new(NAME, Outcome::Skip, "not an https:// URL");
    }
    let host = url
        .host()
        .unwrap_or("")
        .trim_start_matches('[')
        .trim_end_matches(']');
    let port = url.port_u16().unwrap_or(443);
    let mut refused = Vec::new();
    for version in [Legacy::Tls10, Legacy::Tls11] {
        match offer(host, port, version, Duration::from_secs(10)).await {
            Verdict::Refused(how) => refused.push(format!("{}: {how}", version.name())),
            Verdict::Accepted => {
                return Check::new(
                    NAME,
                    Outcome::Fail,
                    format!(
                        "{} accepted (the server answered a ServerHello)",
                        version.name()
                    ),
                )
            }
            Verdict::Unclear(what) => {
                return Check::new(NAME, Outcome::Fail, format!("{}: {what}", version.name()))
            }
        }
    }
    Check::new(
        NAME,
        Outcome::Pass,
        format!("refused ({})", refused.join("; ")),
    )
}

fn hsts(url: &Uri, baseline: &Answer) -> Check {
    if url.scheme_str() != Some("https") {
        return Check::new("hsts", Outcome::Skip, "not an https:// URL");
    }
    match baseline
        .headers
        .get(http::header::STRICT_TRANSPORT_SECURITY)
    {
        Some(v) => Check::new(
            "hsts",
            Outcome::Note,
            format!(
                "Strict-Transport-Security: {}",
                String::from_utf8_lossy(v.as_bytes())
            ),
        ),
        None => Check::new(
            "hsts",
            Outcome::Note,
            "no Strict-Transport-Security header (a load balancer in front may add it)",
        ),
    }
}

fn error_envelope(answers: &[Answer]) -> Check {
    let errors: Vec<&Answer> = answers.iter().filter(|a| a.status >= 400).collect();
    for a in &errors {
        if let Some(problem) = scan::envelope_problem(a) {
            return Check::new(
                "error-envelope",
                Outcome::Fail,
                format!("{} ({}): {problem}", a.what, a.status),
            );
        }
    }
    Check::new(
        "error-envelope",
        Outcome::Pass,
        format!(
            "{} error answers, all in Refold's JSON envelope",
            errors.len()
        ),
    )
}

fn no_secrets(answers: &[Answer], own: &[String]) -> Check {
    for a in answers {
        if let Some(kind) = scan::secret_in(&a.body, own) {
            return Check::new(
                "no-secrets-leaked",
                Outcome::Fail,
                format!("{} ({}): {kind} in the body", a.what, a.status),
            );
        }
        for (name, value) in &a.headers {
            if let Some(kind) = scan::secret_in(value.as_bytes(), own) {
                return Check::new(
                    "no-secrets-leaked",
                    Outcome::Fail,
                    format!("{} ({}): {kind} in the {name} header", a.what, a.status),
                );
            }
        }
    }
    Check::new(
        "no-secrets-leaked",
        Outcome::Pass,
        format!(
            "{} answers carry no API key, session token or foreign JWT",
            answers.len()
        ),
    )
}
