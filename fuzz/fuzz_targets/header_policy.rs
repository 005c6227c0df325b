//! Arbitrary request headers, peers and queries through the header policy: no client
//! credential or method-override header survives in any case or `_` spelling, exactly one
//! `Authorization` carries the session token, forwarding headers are believed only from
//! trusted peers, everything else passes untouched; the query loses every
//! `linked_account_id` any parser could see, and a different account in the query or a
//! header is refused.

#![no_main]

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::OnceLock;
use std::time::Duration;

use http::header::{HeaderMap, HeaderName, HeaderValue};
use libfuzzer_sys::arbitrary::{self, Arbitrary};
use libfuzzer_sys::fuzz_target;
use refold_proxy::config::Cidr;
use refold_proxy::steps::binding::check_account_binding;
use refold_proxy::steps::framing::check_framing;
use refold_proxy::steps::headers::{strip_credential_params, Downstream, HeaderPolicy};
use refold_proxy::steps::tokens::Token;
use refold_oracles::{account_param, fold_name};

const TOKEN: &str = "session-abc.def";
const APP_HEADER: &str = "x-app-token";

const NAMES: &[&str] = &[
    "authorization",
    "x-api-key",
    "linked-account-id",
    "cookie",
    "proxy-authorization",
    "x-app-token",
    "host",
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "content-length",
    "upgrade",
    "forwarded",
    "x-forwarded-for",
    "x-forwarded-proto",
    "x-forwarded-host",
    "x-real-ip",
    "proxy-anything",
    "slug",
    "config_id",
    "content-type",
    "x-kept",
    "x-http-method-override",
    "x-http-method",
    "x-method-override",
    "x-original-url",
    "x-rewrite-url",
    "x-original-method",
];

const CREDENTIALS: &[&str] = &[
    "authorization",
    "x-api-key",
    "linked-account-id",
    "cookie",
    "proxy-authorization",
    APP_HEADER,
];

/// Method-override and URL-rewrite headers: stripped in any case or `_` spelling.
const OVERRIDES: &[&str] = &[
    "x-http-method-override",
    "x-http-method",
    "x-method-override",
    "x-original-url",
    "x-rewrite-url",
    "x-original-method",
];

const HOP_BY_HOP: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

#[derive(Arbitrary, Debug)]
enum Name {
    Known(u8),
    /// A known name respelled: bit i of `upper` upper-cases char i, bit i of `under`
    /// turns a `-` at i into `_`.
    Spelled {
        base: u8,
        upper: u32,
        under: u32,
    },
    Raw(Vec<u8>),
}

impl Name {
    fn bytes(&self) -> Vec<u8> {
        match self {
            Name::Known(i) => NAMES[*i as usize % NAMES.len()].as_bytes().to_vec(),
            Name::Spelled { base, upper, under } => NAMES[*base as usize % NAMES.len()]
                .bytes()
                .enumerate()
                .map(|(i, b)| {
                    let bit = 1u32.checked_shl(i as u32).unwrap_or(0);
                    if b == b'-' && under & bit != 0 {
                        b'_'
                    } else if upper & bit != 0 {
                        b.to_ascii_uppercase()
                    } else {
                        b
                    }
                })
                .collect(),
            Name::Raw(bytes) => bytes.clone(),
        }
    }
}

#[derive(Arbitrary, Debug)]
enum Value {
    Raw(Vec<u8>),
    /// A `Connection`-style list of names.
    Names(Vec<Name>),
    Account(bool),
}

#[derive(Arbitrary, Debug)]
enum Peer {
    V4([u8; 4]),
    V6([u8; 16]),
    Trusted(u8),
}

/// Pieces of a query string, so that the fuzzer reaches the spellings query parsers
/// fold into `linked_account_id` without guessing the name byte by byte.
#[derive(Arbitrary, Debug)]
enum QueryPiece {
    Text(String),
    /// `linked-account-id` respelled (case, `_`), wrapped: 0 bare, 1 `[k]`, 2 `k[]`,
    /// 3 `k[0]`, 4 `k.x`, 5 `%5Bk%5D`, 6 `[k][x]`, 7 ` k`, 8 percent-encoded `_`.
    Key {
        upper: u32,
        under: u32,
        wrap: u8,
    },
    Equals,
    Amp,
    Account,
    Mallory,
}

#[derive(Arbitrary, Debug)]
struct Input {
    headers: Vec<(Name, Value)>,
    peer: Peer,
    app_header: bool,
    query: String,
    query_pieces: Vec<QueryPiece>,
    account: String,
}

fn spell_key(upper: u32, under: u32, wrap: u8) -> String {
    let key: String = "linked-account-id"
        .chars()
        .enumerate()
        .map(|(i, c)| {
            let bit = 1u32.checked_shl(i as u32).unwrap_or(0);
            if c == '-' && under & bit != 0 {
                '_'
            } else if upper & bit != 0 {
                c.to_ascii_uppercase()
            } else {
                c
            }
        })
        .collect();
    match wrap % 9 {
        0 => key,
        1 => format!("[{key}]"),
        2 => format!("{key}[]"),
        3 => format!("{key}[0]"),
        4 => format!("{key}.x"),
        5 => format!("%5B{key}%5D"),
        6 => format!("[{key}][x]"),
        7 => format!(" {key}"),
        _ => key.replace('_', "%5F"),
    }
}

fn assemble_query(input: &Input, account: &str) -> String {
    let mut query = input.query.clone();
    for piece in &input.query_pieces {
        match piece {
            QueryPiece::Text(t) => query.push_str(t),
            QueryPiece::Key { upper, under, wrap } => {
                query.push_str(&spell_key(*upper, *under, *wrap))
            }
            QueryPiece::Equals => query.push('='),
            QueryPiece::Amp => query.push('&'),
            QueryPiece::Account => query.push_str(account),
            QueryPiece::Mallory => query.push_str("mallory"),
        }
    }
    query
}

fn token() -> &'static Token {
    static TOKEN_CELL: OnceLock<Token> = OnceLock::new();
    TOKEN_CELL.get_or_init(|| {
        let now = tokio::time::Instant::now();
        Token::new(
            TOKEN,
            now,
            now + Duration::from_secs(3600),
            Duration::from_secs(60),
        )
        .expect("a valid token")
    })
}

fn trusted_cidrs() -> Vec<Cidr> {
    ["10.0.0.0/8", "::1/128", "fd00::/8"]
        .iter()
        .map(|c| Cidr::parse(c).expect("a CIDR"))
        .collect()
}

/// Independent of `Cidr::contains`: 10/8, ::1, fd00::/8, and IPv4-mapped forms of 10/8.
fn is_trusted(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => v4.octets()[0] == 10,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => v4.octets()[0] == 10,
            None => v6 == Ipv6Addr::LOCALHOST || v6.octets()[0] == 0xfd,
        },
    }
}

fn is_forwarding(folded: &[u8]) -> bool {
    folded == b"forwarded" || folded == b"x-real-ip" || folded.starts_with(b"x-forwarded-")
}

/// The names a `Connection` header lists (RFC 9110 §7.6.1), lower case.
fn connection_names(headers: &HeaderMap) -> Vec<Vec<u8>> {
    headers
        .get_all("connection")
        .iter()
        .flat_map(|v| v.as_bytes().split(|b| *b == b','))
        .map(|item| item.trim_ascii().to_ascii_lowercase())
        .filter(|item| !item.is_empty())
        .collect()
}

fuzz_target!(|input: Input| {
    let peer = match input.peer {
        Peer::V4(o) => IpAddr::V4(Ipv4Addr::from(o)),
        Peer::V6(o) => IpAddr::V6(Ipv6Addr::from(o)),
        Peer::Trusted(n) => IpAddr::V4(Ipv4Addr::new(10, n, 0, 1)),
    };
    let trusted = is_trusted(peer);
    let account = if input.account.is_empty() {
        "alice".to_owned()
    } else {
        input.account.clone()
    };

    let mut headers = HeaderMap::new();
    for (name, value) in &input.headers {
        let Ok(name) = HeaderName::from_bytes(&name.bytes()) else {
            continue;
        };
        let value = match value {
            Value::Raw(bytes) => bytes.clone(),
            Value::Names(names) => names
                .iter()
                .map(|n| String::from_utf8_lossy(&n.bytes()).into_owned())
                .collect::<Vec<_>>()
                .join(", ")
                .into_bytes(),
            Value::Account(true) => account.clone().into_bytes(),
            Value::Account(false) => b"mallory".to_vec(),
        };
        let Ok(value) = HeaderValue::from_bytes(&value) else {
            continue;
        };
        headers.append(name, value);
    }
    let original = headers.clone();

    // Framing: never panics; a pass means one unambiguous framing.
    if check_framing(&headers).is_ok() {
        let lengths: Vec<_> = headers.get_all("content-length").iter().collect();
        let encodings: Vec<_> = headers.get_all("transfer-encoding").iter().collect();
        assert!(lengths.is_empty() || encodings.is_empty());
        assert!(lengths.windows(2).all(|w| w[0] == w[1]));
        assert!(encodings.len() <= 1);
    }

    // Account binding on headers and query.
    let query = assemble_query(&input, &account);
    let query = query.as_str();
    if check_account_binding(&headers, Some(query), &account).is_ok() {
        for (name, value) in &headers {
            if fold_name(name.as_str().as_bytes()) == b"linked-account-id" {
                assert_eq!(value.as_bytes(), account.as_bytes(), "header {name} passed");
            }
        }
        for pair in query.split('&') {
            if let Some(value) = account_param(pair) {
                assert_eq!(value, account, "query pair {pair:?} passed for {account:?}");
            }
        }
    }
    let stripped = strip_credential_params(query);
    for pair in stripped.split('&') {
        assert!(
            account_param(pair).is_none(),
            "{pair:?} survived stripping {query:?}"
        );
        assert!(
            pair.is_empty() || query.split('&').any(|p| p == pair),
            "{pair:?} was invented"
        );
    }
    assert_eq!(strip_credential_params(&stripped), stripped);

    // The header policy.
    let app_header = HeaderName::from_static(APP_HEADER);
    let policy_header = if input.app_header {
        &app_header
    } else {
        &http::header::AUTHORIZATION
    };
    let policy = HeaderPolicy::new(policy_header, &trusted_cidrs());
    policy.apply_to_request(&mut headers, token(), &Downstream::new(peer, false));

    let auth: Vec<_> = headers.get_all("authorization").iter().collect();
    assert_eq!(auth.len(), 1, "{headers:?}");
    assert_eq!(auth[0].as_bytes(), format!("Bearer {TOKEN}").as_bytes());
    let proxy_set: [&[u8]; 3] = [b"authorization", b"x-forwarded-for", b"x-forwarded-proto"];
    for name in headers.keys() {
        let folded = fold_name(name.as_str().as_bytes());
        if name.as_str() != "authorization" {
            assert!(
                !CREDENTIALS
                    .iter()
                    .any(|c| folded == c.as_bytes() && (input.app_header || *c != APP_HEADER)),
                "credential header {name} survived"
            );
        }
        assert!(
            !OVERRIDES.iter().any(|o| folded == o.as_bytes()),
            "override header {name} survived"
        );
        assert!(!folded.starts_with(b"proxy-"), "{name} survived");
        assert!(!HOP_BY_HOP.contains(&name.as_str()), "{name} survived");
        assert_ne!(name.as_str(), "host");
        if !trusted && is_forwarding(&folded) {
            assert!(
                proxy_set.contains(&name.as_str().as_bytes()),
                "{name} from {peer}"
            );
        }
    }
    let xff: Vec<_> = headers.get_all("x-forwarded-for").iter().collect();
    assert_eq!(xff.len(), 1);
    // A chain of trusted proxies may have sent several; otherwise the proxy's own, once.
    let xfp: Vec<_> = headers.get_all("x-forwarded-proto").iter().collect();
    assert!(!xfp.is_empty());
    if trusted {
        let chain = xff[0].to_str().expect("set from text");
        assert!(
            chain == peer.to_string() || chain.ends_with(&format!(", {peer}")),
            "{chain}"
        );
    } else {
        assert_eq!(xff[0].as_bytes(), peer.to_string().as_bytes());
        assert_eq!(xfp, ["http"]);
    }

    // Everything the policy does not own passes exactly as sent.
    let named = connection_names(&original);
    for name in original.keys() {
        let folded = fold_name(name.as_str().as_bytes());
        let owned = CREDENTIALS.iter().any(|c| folded == c.as_bytes())
            || OVERRIDES.iter().any(|o| folded == o.as_bytes())
            || folded.starts_with(b"proxy-")
            || HOP_BY_HOP.contains(&name.as_str())
            || name.as_str() == "host"
            || is_forwarding(&folded)
            || named
                .iter()
                .any(|n| n.as_slice() == name.as_str().as_bytes());
        if !owned {
            let before: Vec<_> = original.get_all(name).iter().collect();
            let after: Vec<_> = headers.get_all(name).iter().collect();
            assert_eq!(before, after, "{name} changed");
        } else if named
            .iter()
            .any(|n| n.as_slice() == name.as_str().as_bytes())
            && !proxy_set.contains(&name.as_str().as_bytes())
        {
            assert!(
                !headers.contains_key(name),
                "{name}, named by Connection, survived"
            );
        }
    }
});
