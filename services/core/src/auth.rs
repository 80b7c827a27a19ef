//! Login tokens: JWTs signed with HMAC-SHA256 (HS256) and a shared secret.
//!
//! Only HS256 is accepted; the header's `alg` is checked, so a token cannot
//! downgrade itself to `none`. The signature is compared in constant time.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum AuthError {
    #[error("token is malformed")]
    Malformed,
    #[error("token signature is invalid")]
    BadSignature,
    #[error("token algorithm {0:?} is not accepted (HS256 only)")]
    BadAlgorithm(String),
    #[error("token expired")]
    Expired,
    #[error("token subject is not a valid user id")]
    BadSubject,
}

/// The claims tern reads.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Claims {
    /// The user id.
    pub sub: String,
    /// Expiry, seconds since the Unix epoch.
    pub exp: u64,
    #[serde(default)]
    pub iat: u64,
}

#[derive(Clone)]
pub struct TokenAuthority {
    secret: Vec<u8>,
}

#[derive(Deserialize)]
struct Header {
    alg: String,
}

impl TokenAuthority {
    pub fn new(secret: impl Into<Vec<u8>>) -> Self {
        TokenAuthority {
            secret: secret.into(),
        }
    }

    fn mac(&self) -> Hmac<Sha256> {
        Hmac::<Sha256>::new_from_slice(&self.secret).expect("HMAC takes keys of any length")
    }

    /// Signs a token for `user`, valid for `ttl_secs` from `now_secs`.
    pub fn issue(&self, user: &str, now_secs: u64, ttl_secs: u64) -> String {
        let header = B64.encode(br#"{"alg":"HS256","typ":"JWT"}"#);
        let claims = Claims {
            sub: user.to_owned(),
            exp: now_secs.saturating_add(ttl_secs),
            iat: now_secs,
        };
        let payload = B64.encode(serde_json::to_vec(&claims).expect("claims serialize"));
        let signing_input = format!("{header}.{payload}");
        let mut mac = self.mac();
        mac.update(signing_input.as_bytes());
        let sig = B64.encode(mac.finalize().into_bytes());
        format!("{signing_input}.{sig}")
    }

    /// Checks signature, algorithm, expiry and subject; returns the claims.
    pub fn verify(&self, token: &str, now_secs: u64) -> Result<Claims, AuthError> {
        let mut parts = token.split('.');
        let (Some(h), Some(p), Some(s), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(AuthError::Malformed);
        };
        let header: Header = B64
            .decode(h)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .ok_or(AuthError::Malformed)?;
        if header.alg != "HS256" {
            return Err(AuthError::BadAlgorithm(header.alg));
        }
        let sig = B64.decode(s).map_err(|_| AuthError::Malformed)?;
        let mut mac = self.mac();
        mac.update(h.as_bytes());
        mac.update(b".");
        mac.update(p.as_bytes());
        mac.verify_slice(&sig)
            .map_err(|_| AuthError::BadSignature)?;
        let claims: Claims = B64
            .decode(p)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .ok_or(AuthError::Malformed)?;
        if claims.exp <= now_secs {
            return Err(AuthError::Expired);
        }
        crate::ids::check_user(&claims.sub).map_err(|_| AuthError::BadSubject)?;
        Ok(claims)
    }
}

/// Seconds since the Unix epoch.
pub fn now_secs() -> u64 {
    crate::now_ms() / 1000
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn issued_tokens_verify() {
        let a = TokenAuthority::new("s3cret");
        let t = a.issue("alice", 1000, 60);
        let c = a.verify(&t, 1000).unwrap();
        assert_eq!(c.sub, "alice");
        assert_eq!(c.exp, 1060);
    }

    #[test]
    fn expired_tokens_fail() {
        let a = TokenAuthority::new("s3cret");
        let t = a.issue("alice", 1000, 60);
        assert_eq!(a.verify(&t, 1060), Err(AuthError::Expired));
    }

    #[test]
    fn other_secrets_and_tampering_fail() {
        let a = TokenAuthority::new("s3cret");
        let t = a.issue("alice", 1000, 60);
        assert_eq!(
            TokenAuthority::new("other").verify(&t, 1000),
            Err(AuthError::BadSignature)
        );
        // Swap in bob's claims under alice's signature.
        let bob = a.issue("bob", 1000, 60);
        let forged = format!(
            "{}.{}.{}",
            t.split('.').next().unwrap(),
            bob.split('.').nth(1).unwrap(),
            t.split('.').nth(2).unwrap()
        );
        assert_eq!(a.verify(&forged, 1000), Err(AuthError::BadSignature));
    }

    #[test]
    fn alg_none_and_garbage_are_rejected() {
        let a = TokenAuthority::new("s3cret");
        let header = B64.encode(br#"{"alg":"none"}"#);
        let payload = B64.encode(br#"{"sub":"alice","exp":99999999999}"#);
        assert_eq!(
            a.verify(&format!("{header}.{payload}."), 0),
            Err(AuthError::BadAlgorithm("none".into()))
        );
        for bad in ["", "abc", "a.b", "a.b.c.d", "!!.??.**"] {
            assert_eq!(a.verify(bad, 0), Err(AuthError::Malformed), "{bad}");
        }
    }
}
