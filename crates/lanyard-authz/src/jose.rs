//! The JOSE header rules every verifier here applies before any key is chosen: a header is a
//! small JSON object with only the members we understand. `alg: none`, `crit`, and the members
//! that would make us fetch or trust a key named by the token (`jku`, `x5u`, `jwk`, `x5c`) are
//! refused outright, so no URL from a token is ever fetched and no key from a token is ever used.
//!
//! ES256 signatures are malleable: `(r, s)` and `(r, n - s)` both verify, so without a rule one
//! token has two texts, and anything keyed by the text (the verified-token cache, a replay list)
//! sees two tokens. Lanyard signs in the low-S form ([`es256_low_s`]) and its verifiers refuse the
//! other ([`es256_is_low_s`]).

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use serde_json::{Map, Value};

/// The longest token accepted (an ID token with many claims stays well below).
pub const MAX_TOKEN_LEN: usize = 16 * 1024;

/// A parsed, checked header.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Header {
    pub alg: String,
    pub kid: String,
    pub typ: Option<String>,
}

/// Why a header was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("JOSE header refused: {0}")]
pub struct HeaderError(pub &'static str);

/// Parses and checks the header of a compact JWS. `extra_allowed` names members beyond `alg`,
/// `kid` and `typ` that are tolerated and ignored (Entra ID's `x5t`, for example).
pub fn parse_header(token: &str, extra_allowed: &[&str]) -> Result<Header, HeaderError> {
    if token.len() > MAX_TOKEN_LEN {
        return Err(HeaderError("token too long"));
    }
    let mut parts = token.split('.');
    let (Some(head), Some(_), Some(_), None) = (parts.next(), parts.next(), parts.next(), parts.next()) else {
        return Err(HeaderError("not a compact JWS"));
    };
    let bytes = URL_SAFE_NO_PAD.decode(head).map_err(|_| HeaderError("header is not base64url"))?;
    let map: Map<String, Value> =
        serde_json::from_slice(&bytes).map_err(|_| HeaderError("header is not a JSON object"))?;
    for name in map.keys() {
        match name.as_str() {
            "alg" | "kid" | "typ" => {}
            "crit" => return Err(HeaderError("crit names extensions this verifier does not understand")),
            "jku" | "x5u" | "jwk" | "x5c" => return Err(HeaderError("keys named by the token are never used")),
            other if extra_allowed.contains(&other) => {}
            _ => return Err(HeaderError("unknown header member")),
        }
    }
    let text = |name: &str| match map.get(name) {
        None => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(HeaderError("header member is not a string")),
    };
    let alg = text("alg")?.ok_or(HeaderError("alg is missing"))?;
    if alg.eq_ignore_ascii_case("none") || alg.starts_with("HS") {
        return Err(HeaderError("symmetric or unsigned algorithms are refused"));
    }
    let kid = text("kid")?.ok_or(HeaderError("kid is missing"))?;
    if kid.is_empty() || kid.len() > 256 || !kid.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(HeaderError("kid is malformed"));
    }
    Ok(Header { alg, kid, typ: text("typ")? })
}

/// The ES256 signature of a compact JWS, if it is one (64 bytes, `r || s`).
fn es256_signature(token: &str) -> Option<p256::ecdsa::Signature> {
    let (_, signature) = token.rsplit_once('.')?;
    let bytes = URL_SAFE_NO_PAD.decode(signature).ok()?;
    p256::ecdsa::Signature::from_slice(&bytes).ok()
}

/// Whether the ES256 signature of `token` is in the low-S form (`s <= n/2`). A signature that is
/// not 64 bytes of valid scalars is not.
pub fn es256_is_low_s(token: &str) -> bool {
    es256_signature(token).is_some_and(|sig| sig.normalize_s().is_none())
}

/// Whether a decoded ES256 signature (`r || s`) is in the low-S form; one that is not 64 bytes
/// of valid scalars is not.
pub fn es256_signature_is_low_s(signature: &[u8]) -> bool {
    p256::ecdsa::Signature::from_slice(signature).is_ok_and(|sig| sig.normalize_s().is_none())
}

/// `token` with its ES256 signature in the low-S form (what every Lanyard token is signed as);
/// `None` when the signature is not an ES256 one.
pub fn es256_low_s(token: &str) -> Option<String> {
    let sig = es256_signature(token)?;
    let Some(low) = sig.normalize_s() else { return Some(token.to_owned()) };
    let (signed, _) = token.rsplit_once('.')?;
    Some(format!("{signed}.{}", URL_SAFE_NO_PAD.encode(low.to_bytes())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn es256_signatures_have_one_low_s_form() {
        use p256::ecdsa::signature::Signer;
        let key = p256::ecdsa::SigningKey::from_slice(&[7u8; 32]).unwrap();
        let signed = format!("{}.e30", URL_SAFE_NO_PAD.encode(r#"{"alg":"ES256","kid":"k"}"#));
        let sig: p256::ecdsa::Signature = key.sign(signed.as_bytes());
        let low = sig.normalize_s().unwrap_or(sig);
        let (r, s) = low.split_scalars();
        let high = p256::ecdsa::Signature::from_scalars(r, -*s).unwrap();
        let low_token = format!("{signed}.{}", URL_SAFE_NO_PAD.encode(low.to_bytes()));
        let high_token = format!("{signed}.{}", URL_SAFE_NO_PAD.encode(high.to_bytes()));
        assert!(es256_is_low_s(&low_token));
        assert!(!es256_is_low_s(&high_token));
        assert_eq!(es256_low_s(&high_token).as_deref(), Some(low_token.as_str()));
        assert_eq!(es256_low_s(&low_token).as_deref(), Some(low_token.as_str()));
        assert!(!es256_is_low_s(&format!("{signed}.c2ln")));
        assert_eq!(es256_low_s(&format!("{signed}.c2ln")), None);
    }

    fn token(header: &str) -> String {
        format!("{}.e30.c2ln", URL_SAFE_NO_PAD.encode(header))
    }

    #[test]
    fn refuses_dangerous_headers() {
        assert!(parse_header(&token(r#"{"alg":"ES256","kid":"k","typ":"at+jwt"}"#), &[]).is_ok());
        for bad in [
            r#"{"alg":"none","kid":"k"}"#,
            r#"{"alg":"NONE","kid":"k"}"#,
            r#"{"alg":"HS256","kid":"k"}"#,
            r#"{"alg":"ES256"}"#,
            r#"{"alg":"ES256","kid":"k","crit":["exp"]}"#,
            r#"{"alg":"ES256","kid":"k","jku":"https://evil.example/jwks"}"#,
            r#"{"alg":"ES256","kid":"k","x5u":"https://evil.example/cert"}"#,
            r#"{"alg":"ES256","kid":"k","jwk":{"kty":"EC"}}"#,
            r#"{"alg":"ES256","kid":"k","x5c":["AAAA"]}"#,
            r#"{"alg":"ES256","kid":"k","zip":"DEF"}"#,
            r#"{"alg":"ES256","kid":"k\n"}"#,
            r#"{"alg":"ES256","kid":1}"#,
            r#"[]"#,
        ] {
            assert!(parse_header(&token(bad), &[]).is_err(), "{bad} should be refused");
        }
        assert!(parse_header(&token(r#"{"alg":"RS256","kid":"k","x5t":"abc"}"#), &["x5t"]).is_ok());
        assert!(parse_header("a.b", &[]).is_err());
        assert!(parse_header("a.b.c.d", &[]).is_err());
    }
}
