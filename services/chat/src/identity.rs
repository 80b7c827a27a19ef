//! Who is calling: a login token checked against its signature and claims
//! ([`TokenAuthority::verify`]), then against the store's revocations and
//! the device it is bound to. Gateways call it at every login, the user
//! API at every call.

use tern_core::auth::{Claims, TokenAuthority};
use tern_core::proto::client::ErrorCode;
use tern_core::store::AccountStore;

use crate::Refusal;

/// The claims of `token` if it may act now, logging in as `device` (None:
/// an API call, which acts as the token's own device if it is bound to one).
pub async fn authenticate(
    auth: &TokenAuthority,
    store: &dyn AccountStore,
    token: &str,
    device: Option<&str>,
    now_ms: u64,
) -> Result<Claims, Refusal> {
    let claims = verify(auth, token, device, now_ms)?;
    check_not_revoked(store, &claims, device).await?;
    Ok(claims)
}

/// The part of [`authenticate`] that needs no store: signature, claims,
/// device binding. A gateway checks revocations after it has registered
/// the connection (so a revocation announced meanwhile still reaches it).
pub fn verify(
    auth: &TokenAuthority,
    token: &str,
    device: Option<&str>,
    now_ms: u64,
) -> Result<Claims, Refusal> {
    let claims = auth
        .verify(token, now_ms)
        .map_err(|e| Refusal::unauthenticated(format!("login refused: {e}")))?;
    if let (Some(bound), Some(device)) = (&claims.did, device)
        && bound != device
    {
        return Err(Refusal::unauthenticated(
            "login refused: the token is bound to another device",
        ));
    }
    Ok(claims)
}

/// Refuses a token issued before a revocation of its user, or of the
/// device it logs in as (or is bound to).
pub async fn check_not_revoked(
    store: &dyn AccountStore,
    claims: &Claims,
    device: Option<&str>,
) -> Result<(), Refusal> {
    let device = device.or(claims.did.as_deref());
    let revoked_before = store
        .revoked_before(&claims.sub, device)
        .await
        .map_err(|e| Refusal::unavailable(&e))?;
    if claims.issued_at_ms() < revoked_before {
        return Err(Refusal::new(
            ErrorCode::TokenRevoked,
            "login refused: the token was revoked (logged out); get a new one",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use tern_core::auth::TokenSpec;
    use tern_core::embedded::EmbeddedStore;

    const T0: u64 = 1_700_000_000_000;

    fn setup() -> (tempfile::TempDir, EmbeddedStore, TokenAuthority) {
        let dir = tempfile::tempdir().unwrap();
        let store = EmbeddedStore::open(&dir.path().join("s.redb"), 1 << 20).unwrap();
        (dir, store, TokenAuthority::new("k"))
    }

    #[tokio::test]
    async fn a_revocation_refuses_earlier_tokens_only() {
        let (_dir, store, auth) = setup();
        let old = auth.issue(&TokenSpec::new("alice", 3600), T0);
        store.revoke_tokens("alice", None, T0 + 1).await.unwrap();
        let new = auth.issue(&TokenSpec::new("alice", 3600), T0 + 1);
        let refused = authenticate(&auth, &store, &old, Some("phone"), T0 + 2)
            .await
            .unwrap_err();
        assert_eq!(refused.code, ErrorCode::TokenRevoked);
        let ok = authenticate(&auth, &store, &new, Some("phone"), T0 + 2).await;
        assert_eq!(
            ok.unwrap().sub,
            "alice",
            "issued in the revocation's millisecond: valid"
        );
    }

    #[tokio::test]
    async fn a_device_revocation_logs_out_that_device_only() {
        let (_dir, store, auth) = setup();
        let token = auth.issue(&TokenSpec::new("alice", 3600), T0);
        store
            .revoke_tokens("alice", Some("lost-phone"), T0 + 5)
            .await
            .unwrap();
        let at = T0 + 10;
        let refused = authenticate(&auth, &store, &token, Some("lost-phone"), at).await;
        assert_eq!(refused.unwrap_err().code, ErrorCode::TokenRevoked);
        assert!(
            authenticate(&auth, &store, &token, Some("laptop"), at)
                .await
                .is_ok()
        );
        assert!(authenticate(&auth, &store, &token, None, at).await.is_ok());
    }

    #[tokio::test]
    async fn a_bound_token_logs_in_as_its_device_only() {
        let (_dir, store, auth) = setup();
        let spec = TokenSpec {
            device: Some("phone".into()),
            ..TokenSpec::new("alice", 3600)
        };
        let token = auth.issue(&spec, T0);
        assert!(
            authenticate(&auth, &store, &token, Some("phone"), T0)
                .await
                .is_ok()
        );
        let refused = authenticate(&auth, &store, &token, Some("other"), T0).await;
        assert_eq!(refused.unwrap_err().code, ErrorCode::Unauthenticated);
        // An API call with a bound token honours the device's revocation.
        store
            .revoke_tokens("alice", Some("phone"), T0 + 1)
            .await
            .unwrap();
        let refused = authenticate(&auth, &store, &token, None, T0 + 2).await;
        assert_eq!(refused.unwrap_err().code, ErrorCode::TokenRevoked);
    }

    #[tokio::test]
    async fn bad_tokens_are_unauthenticated() {
        let (_dir, store, auth) = setup();
        let other = TokenAuthority::new("other").issue(&TokenSpec::new("alice", 60), T0);
        for token in ["", "garbage", other.as_str()] {
            let refused = authenticate(&auth, &store, token, None, T0)
                .await
                .unwrap_err();
            assert_eq!(refused.code, ErrorCode::Unauthenticated, "{token}");
        }
    }
}
