//! What the checks look for in an answer: Refold's error envelope, and anything shaped
//! like a secret (an API key, a session token or another JWT).

use serde_json::Value;

use super::probe::Answer;

/// Why `answer` (an error) is not Refold's JSON envelope, if it is not: JSON typed as
/// such, `status_code` equal to the status, `http_error_type`, `error` (or `error_code`)
/// and `message` strings.
pub(crate) fn envelope_problem(answer: &Answer) -> Option<String> {
    let typed_json = answer
        .headers
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.split(';')
                .next()
                .is_some_and(|t| t.trim().eq_ignore_ascii_case("application/json"))
        });
    if !typed_json {
        return Some("not typed application/json".into());
    }
    let Ok(body) = serde_json::from_slice::<Value>(&answer.body) else {
        return Some("the body is not JSON".into());
    };
    if body["status_code"].as_u64() != Some(u64::from(answer.status)) {
        return Some("status_code is not the response status".into());
    }
    for field in ["http_error_type", "message"] {
        if !body[field].is_string() {
            return Some(format!("no {field} string"));
        }
    }
    if !body["error"].is_string() && !body["error_code"].is_string() {
        return Some("no error (or error_code) string".into());
    }
    None
}

/// What kind of secret `text` carries, if any: a Refold API key (`tk`/`pk` prefix) or a
/// JWT, other than those in `own` (what the probes sent themselves: the caller's JWTs,
/// the fake key).
pub(crate) fn secret_in(text: &[u8], own: &[String]) -> Option<&'static str> {
    let words = text
        .split(|b| !(b.is_ascii_alphanumeric() || b"_-.".contains(b)))
        .filter(|w| !w.is_empty());
    for word in words {
        let key = word.split(|b| *b == b'.').next().unwrap_or(word);
        if api_key_shaped(word) && !own.iter().any(|o| o.as_bytes() == key) {
            return Some("an API key (tk/pk prefix)");
        }
        if let Some(jwt) = jwt_in(word) {
            if !own.iter().any(|o| o.as_bytes() == jwt) {
                return Some("a JWT other than the caller's");
            }
        }
    }
    None
}

/// `tk`/`pk` then `_` or `-` and a long tail, or `tk`/`pk` and 20 or more letters and
/// digits with a digit among them: test and production keys, not words like `pkce`.
fn api_key_shaped(word: &[u8]) -> bool {
    let word = word.split(|b| *b == b'.').next().unwrap_or(word);
    let (Some(prefix), Some(rest)) = (word.get(..2), word.get(2..)) else {
        return false;
    };
    if prefix != b"tk" && prefix != b"pk" {
        return false;
    }
    match rest.split_first() {
        Some((b'_' | b'-', tail)) => tail.len() >= 12,
        _ => rest.len() >= 20 && rest.iter().any(u8::is_ascii_digit),
    }
}

/// The JWT (`eyJ…` header, payload and signature, base64url) at the start of `word`.
fn jwt_in(word: &[u8]) -> Option<&[u8]> {
    let start = word.windows(3).position(|w| w == b"eyJ")?;
    let word = &word[start..];
    let mut parts = word.splitn(3, |b| *b == b'.');
    let header = parts.next()?;
    let payload = parts.next()?;
    let rest = parts.next()?;
    let b64 = |s: &[u8]| {
        s.iter()
            .all(|b| b.is_ascii_alphanumeric() || *b == b'_' || *b == b'-')
    };
    let signature_len = rest.iter().take_while(|b| b64(&[**b])).count();
    if header.len() < 10 || payload.len() < 2 || !b64(header) || !b64(payload) {
        return None;
    }
    word.get(..header.len() + payload.len() + 2 + signature_len)
}

#[cfg(test)]
mod tests {
    use super::*;

    const JWT: &str = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJhbGljZSJ9.c2lnbmF0dXJl";

    #[test]
    fn api_keys_are_found_and_words_are_not() {
        assert!(secret_in(b"{\"key\":\"tk_integration_api_key\"}", &[]).is_some());
        assert!(secret_in(b"x-api-key: pk-4f9a0c2e8b7d6a5f", &[]).is_some());
        assert!(secret_in(b"pk7Hq2mZ9xL4vB8nR3tY6w", &[]).is_some());
        assert_eq!(secret_in(b"{\"flow\":\"pkce\",\"tkt\":\"tk\"}", &[]), None);
        assert_eq!(secret_in(b"tk_short", &[]), None);
        let sent = ["tk_selftest_not_a_real_api_key".to_owned()];
        assert_eq!(
            secret_in(b"bad key tk_selftest_not_a_real_api_key.", &sent),
            None
        );
    }

    #[test]
    fn jwts_other_than_the_callers_are_found() {
        let body = format!("{{\"token\":\"{JWT}\"}}");
        assert!(secret_in(body.as_bytes(), &[]).is_some());
        assert_eq!(secret_in(body.as_bytes(), &[JWT.to_owned()]), None);
        let url = format!("https://hosted.example/connect/{JWT}?x=1");
        assert!(secret_in(url.as_bytes(), &[]).is_some());
        assert_eq!(secret_in(b"{\"a\":\"eyJ.not.a.jwt\"}", &[]), None);
    }

    fn answer(status: u16, content_type: &str, body: &str) -> Answer {
        let mut headers = http::HeaderMap::new();
        headers.insert(
            http::header::CONTENT_TYPE,
            http::HeaderValue::from_str(content_type)
                .unwrap_or(http::HeaderValue::from_static("x")),
        );
        Answer {
            what: "GET /".into(),
            status,
            headers,
            body: bytes::Bytes::from(body.to_owned()),
        }
    }

    #[test]
    fn the_envelope_is_checked_field_by_field() {
        let good =
            r#"{"status_code":401,"http_error_type":"UNAUTHORIZED","error":"X","message":"m"}"#;
        assert_eq!(
            envelope_problem(&answer(401, "application/json", good)),
            None
        );
        let legacy =
            r#"{"status_code":404,"http_error_type":"NOT_FOUND","error_code":"X","message":"m"}"#;
        assert_eq!(
            envelope_problem(&answer(404, "application/json; charset=utf-8", legacy)),
            None
        );
        assert!(envelope_problem(&answer(401, "text/html", good)).is_some());
        assert!(envelope_problem(&answer(403, "application/json", good)).is_some());
        assert!(envelope_problem(&answer(401, "application/json", "<html>")).is_some());
        let no_message = r#"{"status_code":401,"http_error_type":"UNAUTHORIZED","error":"X"}"#;
        assert!(envelope_problem(&answer(401, "application/json", no_message)).is_some());
    }
}
