//! The caller's app JWT turned into the ones a proxy must refuse: a flipped signature,
//! `alg: none` without a signature. Nothing here signs: the probe holds no key.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use serde_json::Value;

/// `jwt` with the first signature byte's bits flipped (the last base64 character may
/// only carry padding bits, which some decoders ignore).
pub(crate) fn flip_signature(jwt: &str) -> Option<String> {
    let (signed, signature) = jwt.rsplit_once('.')?;
    let mut bytes = URL_SAFE_NO_PAD.decode(signature).ok()?;
    let first = bytes.first_mut()?;
    *first ^= 0xff;
    Some(format!("{signed}.{}", URL_SAFE_NO_PAD.encode(bytes)))
}

/// `jwt` re-headed `alg: none` and with its signature dropped (`header.payload.`).
pub(crate) fn alg_none(jwt: &str) -> Option<String> {
    let mut parts = jwt.split('.');
    let header = parts.next()?;
    let payload = parts.next()?;
    let mut header: Value = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(header).ok()?).ok()?;
    header
        .as_object_mut()?
        .insert("alg".into(), Value::from("none"));
    let header = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&header).ok()?);
    Some(format!("{header}.{payload}."))
}

/// The `exp` claim of `jwt`, unverified.
pub(crate) fn expiry(jwt: &str) -> Option<u64> {
    let payload = jwt.split('.').nth(1)?;
    let claims: Value = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).ok()?).ok()?;
    claims["exp"].as_u64()
}

#[cfg(test)]
mod tests {
    use super::*;

    const JWT: &str = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiJhbGljZSIsImV4cCI6MTAwfQ.c2lnbmF0dXJlLWJ5dGVzLTAxMjM0NTY3ODkwMTIzNDU2Nzg";

    #[test]
    fn the_flipped_signature_differs_in_its_first_byte_only() {
        let flipped = flip_signature(JWT).unwrap_or_default();
        let (head, sig) = flipped.rsplit_once('.').unwrap_or_default();
        assert!(JWT.starts_with(head));
        let before = URL_SAFE_NO_PAD
            .decode(JWT.rsplit_once('.').unwrap_or_default().1)
            .unwrap_or_default();
        let after = URL_SAFE_NO_PAD.decode(sig).unwrap_or_default();
        assert_eq!(before.len(), after.len());
        assert_eq!(after[0], before[0] ^ 0xff);
        assert_eq!(after[1..], before[1..]);
    }

    #[test]
    fn alg_none_keeps_the_claims_and_drops_the_signature() {
        let none = alg_none(JWT).unwrap_or_default();
        let parts: Vec<&str> = none.split('.').collect();
        assert_eq!(parts.len(), 3);
        assert_eq!(parts[2], "");
        assert_eq!(parts[1], JWT.split('.').nth(1).unwrap_or_default());
        let header: Value =
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[0]).unwrap_or_default())
                .unwrap_or_default();
        assert_eq!(header["alg"], "none");
        assert_eq!(header["typ"], "JWT");
        assert_eq!(expiry(JWT), Some(100));
        assert_eq!(alg_none("not a jwt"), None);
    }
}
