//! ServiceAccount tokens: JWTs with Kubernetes' claims (`sub`
//! `system:serviceaccount:<ns>:<name>`, `kubernetes.io.serviceaccount.{name,uid}`, `aud`,
//! `exp`), signed with HMAC-SHA256 under a key only the server holds. A token names the
//! account's uid, so deleting and recreating the account invalidates its old tokens.
//!
//! Every token is untrusted input: its size is capped before decoding, and a malformed,
//! forged or expired one is an error, never a panic.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ring::hmac;
use serde_json::{Value, json};

/// The issuer and default audience, as in a cluster with default flags.
pub const ISSUER: &str = "https://kubernetes.default.svc.cluster.local";

/// Tokens longer than this are refused unread.
const MAX_TOKEN_BYTES: usize = 8 * 1024;

/// What a token says about its holder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claims {
    pub namespace: String,
    pub name: String,
    pub uid: String,
    pub audiences: Vec<String>,
    /// Unix seconds.
    pub issued_at: i64,
    pub expires_at: i64,
    pub id: String,
}

impl Claims {
    /// What the admin token stands for: no account, no expiry.
    pub fn admin() -> Self {
        Self {
            namespace: String::new(),
            name: String::new(),
            uid: String::new(),
            audiences: Vec::new(),
            issued_at: 0,
            expires_at: i64::MAX,
            id: String::new(),
        }
    }
}

/// Signs and verifies tokens.
pub struct Signer {
    key: hmac::Key,
}

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Signer")
    }
}

impl Signer {
    /// A signer whose key is derived from `secret` (the admin token), so tokens stay valid
    /// across restarts that keep the admin token, and no other key has to be stored.
    pub fn new(secret: &[u8]) -> Self {
        let derive = hmac::Key::new(hmac::HMAC_SHA256, b"quiver serviceaccount token key");
        let key = hmac::sign(&derive, secret);
        Self {
            key: hmac::Key::new(hmac::HMAC_SHA256, key.as_ref()),
        }
    }

    pub fn issue(&self, c: &Claims) -> String {
        let header = json!({"alg": "HS256", "typ": "JWT"});
        let payload = json!({
            "aud": c.audiences, "exp": c.expires_at, "iat": c.issued_at, "nbf": c.issued_at,
            "iss": ISSUER, "jti": c.id,
            "sub": format!("system:serviceaccount:{}:{}", c.namespace, c.name),
            "kubernetes.io": {"namespace": c.namespace, "serviceaccount": {"name": c.name, "uid": c.uid}},
        });
        let signed = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header.to_string()),
            URL_SAFE_NO_PAD.encode(payload.to_string())
        );
        let signature = hmac::sign(&self.key, signed.as_bytes());
        format!("{signed}.{}", URL_SAFE_NO_PAD.encode(signature.as_ref()))
    }

    /// The claims of a token this server issued that has not expired at `now`.
    pub fn verify(&self, token: &str, now: i64) -> Result<Claims, &'static str> {
        if token.len() > MAX_TOKEN_BYTES {
            return Err("token too long");
        }
        let mut parts = token.split('.');
        let (Some(header), Some(payload), Some(signature), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err("not a JWT");
        };
        let signature = URL_SAFE_NO_PAD
            .decode(signature)
            .map_err(|_| "malformed signature")?;
        let signed = &token[..header.len() + 1 + payload.len()];
        hmac::verify(&self.key, signed.as_bytes(), &signature).map_err(|_| "invalid signature")?;
        let payload: Value = URL_SAFE_NO_PAD
            .decode(payload)
            .ok()
            .and_then(|p| serde_json::from_slice(&p).ok())
            .ok_or("malformed claims")?;
        let text = |ptr: &str| {
            payload
                .pointer(ptr)
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string()
        };
        let number = |key: &str| payload.get(key).and_then(Value::as_i64).unwrap_or(0);
        let claims = Claims {
            namespace: text("/kubernetes.io/namespace"),
            name: text("/kubernetes.io/serviceaccount/name"),
            uid: text("/kubernetes.io/serviceaccount/uid"),
            audiences: payload
                .get("aud")
                .and_then(Value::as_array)
                .map(|a| {
                    a.iter()
                        .filter_map(|s| s.as_str().map(str::to_string))
                        .collect()
                })
                .unwrap_or_default(),
            issued_at: number("iat"),
            expires_at: number("exp"),
            id: text("/jti"),
        };
        if claims.expires_at <= now {
            return Err("token has expired");
        }
        Ok(claims)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claims() -> Claims {
        Claims {
            namespace: "ns".into(),
            name: "op".into(),
            uid: "u-1".into(),
            audiences: vec![ISSUER.into()],
            issued_at: 100,
            expires_at: 200,
            id: "j".into(),
        }
    }

    #[test]
    fn issued_tokens_verify_until_they_expire() {
        let signer = Signer::new(b"admin");
        let token = signer.issue(&claims());
        assert_eq!(signer.verify(&token, 150), Ok(claims()));
        assert_eq!(signer.verify(&token, 200), Err("token has expired"));
    }

    #[test]
    fn another_key_or_a_changed_payload_fails() {
        let token = Signer::new(b"admin").issue(&claims());
        assert_eq!(
            Signer::new(b"other").verify(&token, 150),
            Err("invalid signature")
        );
        let mut parts: Vec<&str> = token.split('.').collect();
        let forged = URL_SAFE_NO_PAD
            .encode(json!({"exp": 999, "kubernetes.io": {"namespace": "kube-system"}}).to_string());
        parts[1] = &forged;
        assert_eq!(
            Signer::new(b"admin").verify(&parts.join("."), 150),
            Err("invalid signature")
        );
    }

    #[test]
    fn garbage_is_refused_without_panicking() {
        let signer = Signer::new(b"admin");
        for bad in [
            "",
            "a",
            "a.b",
            "a.b.c",
            "a.b.c.d",
            "..",
            "é.é.é",
            &"x".repeat(10_000),
        ] {
            assert!(signer.verify(bad, 0).is_err(), "{bad}");
        }
    }
}
