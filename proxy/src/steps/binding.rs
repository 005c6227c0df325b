//! The account binding: no caller acts as another linked account. A request that names a
//! linked account (in the query, a header or a JSON body, in any spelling) must name the
//! caller's own; the header policy then strips the name, and the session token decides.

use http::header::{self, HeaderMap};
use percent_encoding::percent_decode_str;

use crate::error::ProxyError;
use crate::steps::headers::{is_account_param, same_name};

/// Refuses requests that name a linked account other than the caller's, in the query or
/// a header (any spelling). Equal values pass (and are stripped later).
pub fn check_account_binding(
    headers: &HeaderMap,
    query: Option<&str>,
    account: &str,
) -> Result<(), ProxyError> {
    for (name, value) in headers {
        if same_name(name.as_str(), "linked-account-id") && value.as_bytes() != account.as_bytes() {
            return Err(ProxyError::AccountMismatch);
        }
    }
    let Some(query) = query else {
        return Ok(());
    };
    for pair in query.split('&') {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        if is_account_param(key) {
            let value = value.replace('+', " ");
            let value = percent_decode_str(&value).decode_utf8_lossy();
            if value != account {
                return Err(ProxyError::AccountMismatch);
            }
        }
    }
    Ok(())
}

/// Refuses a request body that names a linked account other than the caller's in a
/// top-level `linked_account_id` field (any case, `_` or `-`, every occurrence of a
/// repeated key, a value that is not that exact string included). Only bodies typed as
/// JSON or not typed at all are read; a body that is not a JSON object passes, as does
/// one naming the caller's own account (unchanged: nothing is rewritten).
///
/// Strings are read as raw bytes and skipped values are not validated, so a lone UTF-16
/// surrogate or deep nesting, which a JavaScript parser accepts, cannot make this parse
/// fail where Refold's succeeds and hide a field behind it.
pub fn check_body_account_binding(
    headers: &HeaderMap,
    body: &[u8],
    account: &str,
) -> Result<(), ProxyError> {
    let json_or_untyped = {
        let mut types = headers.get_all(header::CONTENT_TYPE).iter().peekable();
        types.peek().is_none() || types.any(|v| is_json_type(v.as_bytes()))
    };
    let body = body.strip_prefix(b"\xef\xbb\xbf").unwrap_or(body);
    if !json_or_untyped || body.trim_ascii_start().first() != Some(&b'{') {
        return Ok(());
    }
    let mut seen = false;
    let fields = BodyFields {
        account: account.as_bytes(),
        seen: &mut seen,
    };
    match serde::Deserializer::deserialize_map(
        &mut serde_json::Deserializer::from_slice(body),
        fields,
    ) {
        Ok(true) => Ok(()),
        Ok(false) => Err(ProxyError::AccountMismatch),
        // Broken inside an account field (a number, an object...): not the caller.
        Err(_) if seen => Err(ProxyError::AccountMismatch),
        // Not JSON: Refold cannot read an account from it either.
        Err(_) => Ok(()),
    }
}

/// Whether a `Content-Type` value is JSON (`application/json`, `text/json`, `*/*+json`,
/// with or without parameters).
fn is_json_type(value: &[u8]) -> bool {
    let essence = value
        .split(|b| *b == b';')
        .next()
        .unwrap_or(value)
        .trim_ascii();
    let ends_with = |suffix: &[u8]| {
        essence.len() >= suffix.len()
            && essence[essence.len() - suffix.len()..].eq_ignore_ascii_case(suffix)
    };
    ends_with(b"/json") || ends_with(b"+json")
}

/// Visits a JSON object's top-level fields: `true` when every account field is the caller.
struct BodyFields<'a> {
    account: &'a [u8],
    /// Set once an account field's value is being read.
    seen: &'a mut bool,
}

impl<'de> serde::de::Visitor<'de> for BodyFields<'_> {
    type Value = bool;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<bool, A::Error> {
        let mut bound = true;
        while let Some(is_account) = map.next_key_seed(AccountKey)? {
            if is_account {
                *self.seen = true;
                bound &= map.next_value_seed(AccountValue(self.account))?;
            } else {
                map.next_value::<serde::de::IgnoredAny>()?;
            }
        }
        Ok(bound)
    }
}

/// A field name, read as bytes: whether it is `linked_account_id` in any spelling.
struct AccountKey;

impl<'de> serde::de::DeserializeSeed<'de> for AccountKey {
    type Value = bool;

    fn deserialize<D: serde::Deserializer<'de>>(self, deserializer: D) -> Result<bool, D::Error> {
        deserializer.deserialize_bytes(self)
    }
}

impl serde::de::Visitor<'_> for AccountKey {
    type Value = bool;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a field name")
    }

    fn visit_bytes<E>(self, name: &[u8]) -> Result<bool, E> {
        Ok(std::str::from_utf8(name).is_ok_and(|name| same_name(name, "linked-account-id")))
    }

    fn visit_str<E>(self, name: &str) -> Result<bool, E> {
        Ok(same_name(name, "linked-account-id"))
    }
}

/// An account field's value: whether it is exactly the caller's account as a string.
/// Anything else (a number, `null`, an array) fails to deserialize, which the caller
/// takes for a mismatch.
struct AccountValue<'a>(&'a [u8]);

impl<'de> serde::de::DeserializeSeed<'de> for AccountValue<'_> {
    type Value = bool;

    fn deserialize<D: serde::Deserializer<'de>>(self, deserializer: D) -> Result<bool, D::Error> {
        deserializer.deserialize_bytes(self)
    }
}

impl serde::de::Visitor<'_> for AccountValue<'_> {
    type Value = bool;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("the caller's linked account id")
    }

    fn visit_bytes<E>(self, value: &[u8]) -> Result<bool, E> {
        Ok(value == self.0)
    }

    fn visit_str<E>(self, value: &str) -> Result<bool, E> {
        Ok(value.as_bytes() == self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    #[test]
    fn account_binding() {
        let mut h = HeaderMap::new();
        assert!(check_account_binding(&h, Some("a=1&linked_account_id=alice"), "alice").is_ok());
        assert!(check_account_binding(&h, Some("LINKED-ACCOUNT-ID=bob"), "alice").is_err());
        assert!(check_account_binding(&h, Some("linked%5Faccount%5Fid=bob"), "alice").is_err());
        assert!(check_account_binding(&h, Some("linked_account_id=a%20b"), "a b").is_ok());
        assert!(check_account_binding(&h, Some("linked_account_id[]=bob"), "alice").is_err());
        assert!(check_account_binding(&h, Some("linked_account_id.x=bob"), "alice").is_err());
        h.insert("Linked_Account_Id", HeaderValue::from_static("bob"));
        assert!(check_account_binding(&h, None, "alice").is_err());
        assert!(check_account_binding(&h, None, "bob").is_ok());
    }

    #[test]
    fn body_account_binding() {
        let json = |content_type: &'static str| {
            let mut h = HeaderMap::new();
            h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
            h
        };
        let check =
            |h: &HeaderMap, body: &str| check_body_account_binding(h, body.as_bytes(), "alice");
        let typed = json("application/json");
        let deep = format!(
            r#"{{"a":{}1{},"linked_account_id":"mallory"}}"#,
            "[".repeat(500),
            "]".repeat(500)
        );
        for body in [
            r#"{"linked_account_id":"mallory"}"#,
            r#" {"a":1,"LINKED_ACCOUNT-ID":"mallory"}"#,
            "\u{feff}{\"linked_account_id\":\"mallory\"}",
            r#"{"linked_account_id":"alice","linked_account_id":"mallory"}"#,
            r#"{"linked_account_id":42}"#,
            r#"{"linked_account_id":null}"#,
            r#"{"linked_account_id":{"id":"alice"}}"#,
            r#"{"linked_account_id":"alice "}"#,
            // A lone surrogate is JSON to JavaScript: it must not end the parse early.
            r#"{"\ud800":"\udc00x","linked_account_id":"mallory"}"#,
            r#"{"linked\u005faccount\u005fid":"mallory"}"#,
            deep.as_str(),
        ] {
            assert!(check(&typed, body).is_err(), "{body}");
        }
        for body in [
            "",
            r#"{"linked_account_id":"alice"}"#,
            r#"{"linked_account_id":"al\u0069ce","b":[1,{"linked_account_id":"mallory"}]}"#,
            r#"{"other":"mallory"}"#,
            r#"[{"linked_account_id":"mallory"}]"#,
            "linked_account_id=mallory",
            r#"{"a": ,"linked_account_id":"mallory"}"#,
        ] {
            assert!(check(&typed, body).is_ok(), "{body}");
        }
        let mallory = r#"{"linked_account_id":"mallory"}"#;
        for content_type in [
            "application/json; charset=utf-8",
            "Application/JSON",
            "application/merge-patch+json",
            "text/json",
        ] {
            assert!(
                check(&json(content_type), mallory).is_err(),
                "{content_type}"
            );
        }
        assert!(check(&HeaderMap::new(), mallory).is_err());
        for content_type in [
            "text/plain",
            "application/octet-stream",
            "multipart/form-data",
        ] {
            assert!(
                check(&json(content_type), mallory).is_ok(),
                "{content_type}"
            );
        }
    }

    #[test]
    fn a_leading_bracket_key_is_linked_account_id_too() {
        // Found by the header_policy fuzz target: `qs` parses `[k]=v` as `k=v`, and so
        // `[k][x]=v` as `k[x]=v`, so these name the account as surely as `k=v`.
        let h = HeaderMap::new();
        for query in [
            "[linked_account_id]=mallory",
            "%5Blinked_account_id%5D=mallory",
            "a=1&[Linked-Account-Id][x]=mallory",
            // The minimised input: an empty value for an account named `alice`.
            "%5BlinKed-account_id%5D",
        ] {
            assert!(
                check_account_binding(&h, Some(query), "alice").is_err(),
                "{query}"
            );
        }
        assert!(check_account_binding(&h, Some("[linked_account_id]=alice"), "alice").is_ok());
    }
}
