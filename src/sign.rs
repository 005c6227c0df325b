//! `refold-proxy sign-jwt`: an app JWT for trying a deployment by hand, signed with the
//! config's HS secret, a private key, or the demo's secret.

use std::path::PathBuf;
use std::str::FromStr;

use jsonwebtoken::Algorithm;
use refold_proxy::config::{parse_duration, Config, ConfigSource, IdentityConfig};
use refold_proxy::steps::identity::{self, signature_verifies, AppClaims, KeySet, SigningKey};
use refold_proxy::BoxError;

use crate::demo;

/// What signs the token.
pub(crate) enum Signer {
    /// The demo's secret and claims (no config needed).
    Demo,
    /// The config's `identity.hs_secret_env`.
    Secret,
    /// A PEM private key; the algorithm from `alg` or the key's type.
    Key {
        path: PathBuf,
        alg: Option<String>,
        kid: Option<String>,
    },
}

/// Prints an app JWT for `sub`, valid for `ttl`, on stdout; what signed it on stderr.
pub(crate) fn sign_jwt(
    config: ConfigSource,
    sub: &str,
    ttl: &str,
    signer: Signer,
) -> Result<(), BoxError> {
    let ttl = parse_duration(ttl)?;
    let (path, alg, kid) = match signer {
        Signer::Demo => {
            let token = demo::sign_jwt(sub, ttl)?;
            eprintln!("signed with the demo's secret (for `refold-proxy demo` only)");
            println!("{token}");
            return Ok(());
        }
        Signer::Secret => return sign_with_secret(&config, sub, ttl),
        Signer::Key { path, alg, kid } => (path, alg, kid),
    };
    let alg = alg
        .map(|name| {
            Algorithm::from_str(&name).map_err(|_| format!("--alg {name}: not a JWS algorithm"))
        })
        .transpose()?;
    // The claims the proxy checks come from the config; the key replaces its secret.
    let identity = Config::load_identity(config.path())?;
    let pem = std::fs::read(&path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let key = SigningKey::from_pem(&pem, alg).map_err(|e| format!("{}: {e}", path.display()))?;
    let token = key.sign(&claims(&identity, sub, ttl), kid.as_deref())?;
    eprintln!("signed {:?} with {}", key.algorithm(), path.display());
    for warning in refusals(&identity, &config, key.algorithm(), &token) {
        eprintln!("warning: {warning}");
    }
    println!("{token}");
    Ok(())
}

fn claims<'a>(
    identity: &'a IdentityConfig,
    sub: &'a str,
    ttl: std::time::Duration,
) -> AppClaims<'a> {
    AppClaims {
        account_claim: &identity.account_claim,
        account: sub,
        ttl,
        issuer: identity.issuer.as_deref(),
        audience: identity.audience.as_deref(),
    }
}

fn sign_with_secret(
    config: &ConfigSource,
    sub: &str,
    ttl: std::time::Duration,
) -> Result<(), BoxError> {
    // Only [identity] and its secret: signing needs neither Refold's API key nor Redis.
    let identity = Config::load_identity(config.path())?;
    let (Some(secret), Some(source)) = (&identity.hs_secret, &identity.hs_secret_env) else {
        return Err(
            "sign-jwt needs an HS algorithm and identity.hs_secret_env or \
                    identity.hs_secret_file in the config (or --key with a private key)"
                .into(),
        );
    };
    let token = identity::SigningKey::hs256(secret).sign(&claims(&identity, sub, ttl), None)?;
    eprintln!("signed with the secret in {source} (identity in {config})");
    println!("{token}");
    Ok(())
}

/// Why a proxy running `config` would refuse a token this key signed: the algorithm is
/// not allowed, or no key of `identity.public_key_file` verifies it. A token for a JWKS
/// deployment cannot be checked offline; the `kid` must be one the JWKS publishes.
fn refusals(
    identity: &IdentityConfig,
    config: &ConfigSource,
    alg: Algorithm,
    token: &str,
) -> Vec<String> {
    let mut refusals = Vec::new();
    if !identity.algorithms.contains(&alg) {
        refusals.push(format!(
            "identity.algorithms in {config} does not allow {alg:?}: a proxy running it refuses this token"
        ));
    }
    match (&identity.public_key_file, &identity.jwks) {
        (Some(file), _) => {
            let verified = KeySet::from_pem(&file.pem)
                .map(|keys| signature_verifies(&keys, token))
                .unwrap_or(false);
            if !verified && identity.jwks.is_none() {
                refusals.push(format!(
                    "no key of identity.public_key_file ({}) verifies this token: it is not \
                     the public half of this key (or a --kid was given: PEM keys match only \
                     tokens without one)",
                    file.path.display()
                ));
            }
        }
        (None, Some(_)) => eprintln!(
            "note: the config verifies with a JWKS: the proxy accepts this token only if the \
             JWKS publishes this key (under the --kid given, if any)"
        ),
        (None, None) => {}
    }
    refusals
}
