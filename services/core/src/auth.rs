//! Login tokens: JWTs signed with HMAC-SHA256 (HS256) and a shared secret.
//!
//! - Only HS256 is accepted; the header's `alg` is checked, so a token
//!   cannot downgrade itself to `none`. Signatures are compared in constant
//!   time.
//! - Tokens carry `iss`, `aud`, `iat`, `exp` and a token id (`jti`); `iss`
//!   and `aud` must be the configured ones, so a token minted for another
//!   service with the same secret is refused.
//! - Keys rotate without logging anyone out: the authority holds the
//!   current key, which signs, and optionally the previous one, which only
//!   verifies. Each key has an id (`kid` in the header) derived from the
//!   secret; a token without a `kid` is tried against both.
//! - Optional claims: `did` binds the token to one device, `rooms` lists the
//!   live-room prefixes it may join (see the room policy).
//!
//! Revocation (a user's tokens issued before a time) needs the store; it is
//! checked by `tern-chat` on top of [`TokenAuthority::verify`].

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// Issuer and audience of tokens when none is configured.
pub const DEFAULT_ISSUER: &str = "tern";
pub const DEFAULT_AUDIENCE: &str = "tern";

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum AuthError {
    #[error("token is malformed")]
    Malformed,
    #[error("token signature is invalid")]
    BadSignature,
    #[error("token algorithm is not accepted (HS256 only)")]
    BadAlgorithm,
    #[error("token is signed with a key this server does not have")]
    UnknownKey,
    #[error("token expired")]
    Expired,
    #[error("token subject is not a valid user id")]
    BadSubject,
    #[error("token issuer is not this server's")]
    WrongIssuer,
    #[error("token audience is not this server")]
    WrongAudience,
    #[error("token is issued in the future (check the issuer's clock)")]
    IssuedInFuture,
}

/// How far in the future `iat` may be (issuers' clocks drift a little; a
/// token issued later than this could never be revoked).
pub const MAX_CLOCK_SKEW_MS: u64 = 60_000;

/// `aud` is a string or an array of strings (RFC 7519).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(untagged)]
pub enum Audience {
    One(String),
    Many(Vec<String>),
}

impl Audience {
    fn contains(&self, audience: &str) -> bool {
        match self {
            Audience::One(a) => a == audience,
            Audience::Many(list) => list.iter().any(|a| a == audience),
        }
    }
}

/// The claims tern reads.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Claims {
    /// The user id.
    pub sub: String,
    /// Expiry, seconds since the Unix epoch.
    pub exp: u64,
    /// Issued at, seconds since the Unix epoch; tern writes milliseconds
    /// as a fraction (RFC 7519 allows it), so that a revocation and a token
    /// issued in the same second are told apart.
    pub iat: f64,
    pub iss: String,
    pub aud: Audience,
    /// Token id, for logs and audits.
    #[serde(default)]
    pub jti: String,
    /// The one device this token logs in as, if bound to one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub did: Option<String>,
    /// Live-room id prefixes this token may join and post to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rooms: Option<Vec<String>>,
}

impl Claims {
    /// When the token was issued, ms since the epoch (rounded down).
    pub fn issued_at_ms(&self) -> u64 {
        (self.iat.max(0.0) * 1000.0) as u64
    }
}

/// What a new token says besides its times.
#[derive(Debug, Clone, Default)]
pub struct TokenSpec {
    pub user: String,
    pub ttl_secs: u64,
    pub device: Option<String>,
    pub rooms: Option<Vec<String>>,
}

impl TokenSpec {
    pub fn new(user: impl Into<String>, ttl_secs: u64) -> Self {
        TokenSpec {
            user: user.into(),
            ttl_secs,
            ..Default::default()
        }
    }
}

/// One HS256 key and its id.
#[derive(Clone)]
struct SigningKey {
    id: String,
    secret: Vec<u8>,
}

impl SigningKey {
    fn new(secret: Vec<u8>) -> Self {
        SigningKey {
            id: key_id(&secret),
            secret,
        }
    }

    // why: HMAC takes keys of any length (longer ones are hashed): the
    // `InvalidLength` error of the generic `KeyInit` API never happens here.
    #[allow(clippy::expect_used)]
    fn mac(&self) -> Hmac<Sha256> {
        Hmac::<Sha256>::new_from_slice(&self.secret).expect("HMAC takes keys of any length")
    }
}

/// The `kid` of a secret: the first 8 bytes of its SHA-256, in hex. It
/// names the key without revealing it, and needs no configuration.
pub fn key_id(secret: &[u8]) -> String {
    Sha256::digest(secret)[..8]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[derive(Clone)]
pub struct TokenAuthority {
    /// The current key first (it signs), then the previous one, if any.
    keys: Vec<SigningKey>,
    issuer: String,
    audience: String,
}

#[derive(Deserialize)]
struct Header {
    alg: String,
    #[serde(default)]
    kid: Option<String>,
}

impl std::fmt::Debug for TokenAuthority {
    /// Key ids only: secrets are never printed.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenAuthority")
            .field("key_ids", &self.key_ids())
            .field("issuer", &self.issuer)
            .field("audience", &self.audience)
            .finish()
    }
}

impl TokenAuthority {
    /// An authority whose one key is `current`, with the default issuer and
    /// audience.
    pub fn new(current: impl Into<Vec<u8>>) -> Self {
        TokenAuthority {
            keys: vec![SigningKey::new(current.into())],
            issuer: DEFAULT_ISSUER.into(),
            audience: DEFAULT_AUDIENCE.into(),
        }
    }

    /// Also accepts tokens signed with `previous` (during a key rotation).
    pub fn with_previous(mut self, previous: impl Into<Vec<u8>>) -> Self {
        self.keys.truncate(1);
        self.keys.push(SigningKey::new(previous.into()));
        self
    }

    pub fn with_issuer(mut self, issuer: impl Into<String>) -> Self {
        self.issuer = issuer.into();
        self
    }

    pub fn with_audience(mut self, audience: impl Into<String>) -> Self {
        self.audience = audience.into();
        self
    }

    /// Ids of the keys, the signing one first.
    pub fn key_ids(&self) -> Vec<&str> {
        self.keys.iter().map(|k| k.id.as_str()).collect()
    }

    /// Signs a token for `spec`, issued at `now_ms`.
    pub fn issue(&self, spec: &TokenSpec, now_ms: u64) -> String {
        let key = &self.keys[0];
        let header = serde_json::json!({"alg": "HS256", "typ": "JWT", "kid": key.id});
        let claims = Claims {
            sub: spec.user.clone(),
            exp: (now_ms / 1000).saturating_add(spec.ttl_secs),
            iat: now_ms as f64 / 1000.0,
            iss: self.issuer.clone(),
            aud: Audience::One(self.audience.clone()),
            jti: uuid::Uuid::now_v7().to_string(),
            did: spec.device.clone(),
            rooms: spec.rooms.clone(),
        };
        let header = B64.encode(header.to_string());
        // why: `Claims` is strings, numbers and lists of strings, which
        // serde_json always serializes (it fails only on non-string map
        // keys or a failing custom `Serialize`).
        #[allow(clippy::expect_used)]
        let payload = B64.encode(serde_json::to_vec(&claims).expect("claims serialize"));
        let signing_input = format!("{header}.{payload}");
        let mut mac = key.mac();
        mac.update(signing_input.as_bytes());
        let sig = B64.encode(mac.finalize().into_bytes());
        format!("{signing_input}.{sig}")
    }

    /// Checks algorithm, key, signature, issuer, audience, expiry (at
    /// `now_ms`) and subject; returns the claims.
    pub fn verify(&self, token: &str, now_ms: u64) -> Result<Claims, AuthError> {
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
            return Err(AuthError::BadAlgorithm);
        }
        let sig = B64.decode(s).map_err(|_| AuthError::Malformed)?;
        let candidates: Vec<&SigningKey> = match &header.kid {
            Some(kid) => self.keys.iter().filter(|k| &k.id == kid).collect(),
            None => self.keys.iter().collect(),
        };
        if candidates.is_empty() {
            return Err(AuthError::UnknownKey);
        }
        let signed = candidates.iter().any(|key| {
            let mut mac = key.mac();
            mac.update(h.as_bytes());
            mac.update(b".");
            mac.update(p.as_bytes());
            mac.verify_slice(&sig).is_ok()
        });
        if !signed {
            return Err(AuthError::BadSignature);
        }
        let claims: Claims = B64
            .decode(p)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .ok_or(AuthError::Malformed)?;
        if claims.iss != self.issuer {
            return Err(AuthError::WrongIssuer);
        }
        if !claims.aud.contains(&self.audience) {
            return Err(AuthError::WrongAudience);
        }
        if claims.exp <= now_ms / 1000 {
            return Err(AuthError::Expired);
        }
        if claims.issued_at_ms() > now_ms.saturating_add(MAX_CLOCK_SKEW_MS) {
            return Err(AuthError::IssuedInFuture);
        }
        crate::ids::check_user(&claims.sub).map_err(|_| AuthError::BadSubject)?;
        Ok(claims)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: u64 = 1_000_000;

    fn sign_raw(secret: &[u8], header: &str, claims: &str) -> String {
        let (h, p) = (B64.encode(header), B64.encode(claims));
        let mut mac = Hmac::<Sha256>::new_from_slice(secret).unwrap();
        mac.update(format!("{h}.{p}").as_bytes());
        format!("{h}.{p}.{}", B64.encode(mac.finalize().into_bytes()))
    }

    #[test]
    fn issued_tokens_verify_with_their_claims() {
        let a = TokenAuthority::new("s3cret");
        let spec = TokenSpec {
            device: Some("phone".into()),
            rooms: Some(vec!["public.".into()]),
            ..TokenSpec::new("alice", 60)
        };
        let c = a.verify(&a.issue(&spec, NOW), NOW).unwrap();
        assert_eq!(c.sub, "alice");
        assert_eq!(c.exp, NOW / 1000 + 60);
        assert_eq!(c.issued_at_ms(), NOW);
        assert_eq!(
            (c.iss.as_str(), &c.aud),
            ("tern", &Audience::One("tern".into()))
        );
        assert_eq!(c.did.as_deref(), Some("phone"));
        assert_eq!(c.rooms, Some(vec!["public.".to_string()]));
        assert!(!c.jti.is_empty());
    }

    #[test]
    fn tokens_from_the_future_fail() {
        let a = TokenAuthority::new("s3cret");
        let t = a.issue(&TokenSpec::new("alice", 3600), NOW + MAX_CLOCK_SKEW_MS + 1);
        assert_eq!(a.verify(&t, NOW), Err(AuthError::IssuedInFuture));
        let t = a.issue(&TokenSpec::new("alice", 3600), NOW + MAX_CLOCK_SKEW_MS);
        assert!(a.verify(&t, NOW).is_ok(), "a little skew is fine");
    }

    #[test]
    fn expired_tokens_fail() {
        let a = TokenAuthority::new("s3cret");
        let t = a.issue(&TokenSpec::new("alice", 60), NOW);
        assert_eq!(a.verify(&t, NOW + 60_000), Err(AuthError::Expired));
    }

    #[test]
    fn other_secrets_and_tampering_fail() {
        let a = TokenAuthority::new("s3cret");
        let t = a.issue(&TokenSpec::new("alice", 60), NOW);
        assert_eq!(
            TokenAuthority::new("other").verify(&t, NOW),
            Err(AuthError::UnknownKey),
            "the kid names a key the other server lacks"
        );
        // Swap in bob's claims under alice's signature.
        let bob = a.issue(&TokenSpec::new("bob", 60), NOW);
        let forged = format!(
            "{}.{}.{}",
            t.split('.').next().unwrap(),
            bob.split('.').nth(1).unwrap(),
            t.split('.').nth(2).unwrap()
        );
        assert_eq!(a.verify(&forged, NOW), Err(AuthError::BadSignature));
    }

    #[test]
    fn keys_rotate_without_logging_anyone_out() {
        let old = TokenAuthority::new("old-key");
        let old_token = old.issue(&TokenSpec::new("alice", 60), NOW);
        let both = TokenAuthority::new("new-key").with_previous("old-key");
        assert_eq!(both.verify(&old_token, NOW).unwrap().sub, "alice");
        let new_token = both.issue(&TokenSpec::new("bob", 60), NOW);
        assert_eq!(
            TokenAuthority::new("new-key")
                .verify(&new_token, NOW)
                .unwrap()
                .sub,
            "bob",
            "the new key signs"
        );
        assert_eq!(
            TokenAuthority::new("new-key").verify(&old_token, NOW),
            Err(AuthError::UnknownKey),
            "the old key is gone once removed"
        );
    }

    #[test]
    fn third_party_tokens_without_kid_and_with_an_audience_list_verify() {
        let a = TokenAuthority::new("s3cret").with_issuer("auth.example.com");
        let t = sign_raw(
            b"s3cret",
            r#"{"alg":"HS256","typ":"JWT"}"#,
            r#"{"sub":"alice","exp":2000,"iat":999,"iss":"auth.example.com","aud":["x","tern"]}"#,
        );
        let c = a.verify(&t, NOW).unwrap();
        assert_eq!(c.issued_at_ms(), 999_000);
        assert_eq!(c.jti, "");
    }

    #[test]
    fn issuer_and_audience_must_match() {
        let a = TokenAuthority::new("s3cret");
        let claims = |iss: &str, aud: &str| {
            format!(r#"{{"sub":"alice","exp":2000,"iat":999,"iss":"{iss}","aud":"{aud}"}}"#)
        };
        let header = r#"{"alg":"HS256"}"#;
        let t = sign_raw(b"s3cret", header, &claims("someone-else", "tern"));
        assert_eq!(a.verify(&t, NOW), Err(AuthError::WrongIssuer));
        let t = sign_raw(b"s3cret", header, &claims("tern", "billing"));
        assert_eq!(a.verify(&t, NOW), Err(AuthError::WrongAudience));
        let t = sign_raw(b"s3cret", header, r#"{"sub":"alice","exp":2000,"iat":1}"#);
        assert_eq!(
            a.verify(&t, NOW),
            Err(AuthError::Malformed),
            "iss and aud are required"
        );
    }

    #[test]
    fn alg_none_and_garbage_are_rejected() {
        let a = TokenAuthority::new("s3cret");
        let header = B64.encode(br#"{"alg":"none"}"#);
        let payload = B64.encode(br#"{"sub":"alice","exp":99999999999}"#);
        assert_eq!(
            a.verify(&format!("{header}.{payload}."), 0),
            Err(AuthError::BadAlgorithm)
        );
        for bad in ["", "abc", "a.b", "a.b.c.d", "!!.??.**"] {
            assert_eq!(a.verify(bad, 0), Err(AuthError::Malformed), "{bad}");
        }
    }

    #[test]
    fn key_ids_do_not_reveal_the_secret_and_debug_prints_no_secret() {
        let a = TokenAuthority::new("very-secret-value");
        assert_eq!(a.key_ids()[0].len(), 16);
        assert!(!format!("{a:?}").contains("very-secret-value"));
    }
}
