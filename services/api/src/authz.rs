//! Who may call what: the one place the API decides it.
//!
//! | listener | service | credential | acts as |
//! |---|---|---|---|
//! | `api_listen` | `UserApi` | `authorization: Bearer <login token>` | the token's user |
//! | `api_listen` | `UserApi.IssueDevToken` | none; dev mode only | nobody |
//! | `backend_listen` | `BackendApi` | `authorization: Bearer <backend_token>` | any user it names |
//! | `backend_listen` | `ArchiveAdmin` | `authorization: Bearer <admin_token>` | the archive |
//!
//! Every method of a service goes through its service's `call`, which
//! authenticates first; what the caller may then do with the user,
//! conversation or group it names is `tern-chat`'s to decide (an
//! [`Actor::User`] acts only as itself).

use std::future::Future;

use sha2::{Digest, Sha256};
use tern_chat::access::Actor;
use tern_core::auth::Claims;
use tern_core::proto::client::ErrorCode;
use tonic::Extensions;
use tonic::metadata::MetadataMap;
use tonic::{Request, Response, Status};

use crate::error::refusal_status;
use crate::{Api, ApiError};

/// The token of an `authorization: Bearer <token>` header.
pub(crate) fn bearer(metadata: &MetadataMap) -> Result<Option<&str>, Status> {
    let Some(value) = metadata.get("authorization") else {
        return Ok(None);
    };
    value
        .to_str()
        .ok()
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(Some)
        .ok_or_else(|| Status::unauthenticated("authorization must be \"Bearer <token>\""))
}

/// Whether two secrets are equal, in time that does not depend on where
/// they differ (their digests are compared).
pub(crate) fn same_secret(given: &str, expected: &str) -> bool {
    Sha256::digest(given.as_bytes()) == Sha256::digest(expected.as_bytes())
}

impl Api {
    /// The user a user-API call acts as: its login token must be valid,
    /// unrevoked and, when bound to a device, not revoked for it.
    pub(crate) async fn user_actor(
        &self,
        metadata: &MetadataMap,
        extensions: &Extensions,
    ) -> Result<Actor, Status> {
        Ok(Actor::User(
            self.user_claims(metadata, extensions).await?.sub,
        ))
    }

    /// The claims of a user-API call's token (see [`Self::user_actor`]).
    /// The gate verified the token already and left its claims in the
    /// request's extensions; only revocations are left to check.
    pub(crate) async fn user_claims(
        &self,
        metadata: &MetadataMap,
        extensions: &Extensions,
    ) -> Result<Claims, Status> {
        let claims = match extensions.get::<Claims>() {
            Some(claims) => claims.clone(),
            None => {
                let Some(token) = bearer(metadata)? else {
                    return Err(Status::unauthenticated(
                        "this call needs authorization: Bearer <login token>",
                    ));
                };
                tern_chat::identity::verify(&self.deps.auth, token, None, tern_core::now_ms())
                    .map_err(|r| refusal_status(&r))?
            }
        };
        tern_chat::identity::check_not_revoked(self.deps.store.as_ref(), &claims, None)
            .await
            .map_err(|r| refusal_status(&r))?;
        Ok(claims)
    }

    /// A back-end call: it must carry the back-end token. A user's login
    /// token is a valid credential of the wrong kind: PERMISSION_DENIED.
    pub(crate) fn backend_actor(&self, metadata: &MetadataMap) -> Result<Actor, Status> {
        let Some(expected) = &self.config.backend_token else {
            return Err(Status::failed_precondition(
                "the back-end API is off on this server: set backend_token",
            ));
        };
        let Some(token) = bearer(metadata)? else {
            return Err(Status::unauthenticated(
                "back-end calls need authorization: Bearer <backend_token>",
            ));
        };
        if same_secret(token, expected.expose()) {
            return Ok(Actor::Backend);
        }
        if self.deps.auth.verify(token, tern_core::now_ms()).is_ok() {
            return Err(Status::permission_denied(
                "a user's login token cannot call the back-end API",
            ));
        }
        Err(Status::unauthenticated("wrong back-end token"))
    }

    /// Refuses a call on behalf of dev mode being off.
    pub(crate) fn dev_mode_only(&self) -> Result<(), Status> {
        if self.config.dev_mode {
            Ok(())
        } else {
            Err(Status::unimplemented(
                "dev tokens exist only in dev mode; tokens come from the application's auth server",
            ))
        }
    }
}

/// The first look at a call, before it takes one of the listener's places
/// (so calls without a valid credential cannot hold them): the user API
/// needs a login token with a valid signature (revocations are checked
/// next, by the service), the back-end listener the back-end or admin
/// token. In dev mode the user API lets calls without one through, for
/// `IssueDevToken` (dev mode listens on loopback only).
#[derive(Clone)]
pub(crate) enum Gate {
    User {
        auth: tern_core::auth::TokenAuthority,
        dev_mode: bool,
    },
    Backend {
        auth: tern_core::auth::TokenAuthority,
        tokens: Vec<String>,
    },
}

impl tonic::service::Interceptor for Gate {
    fn call(&mut self, mut request: tonic::Request<()>) -> Result<tonic::Request<()>, Status> {
        let token = bearer(request.metadata())?;
        let now = tern_core::now_ms();
        if let (Gate::User { auth, .. }, Some(t)) = (&*self, token)
            && let Ok(claims) = auth.verify(t, now)
        {
            // Verified once: the service reads the claims from here.
            request.extensions_mut().insert(claims);
            return Ok(request);
        }
        match (&*self, token) {
            (Gate::User { dev_mode: true, .. }, None) => Ok(request),
            (Gate::User { .. }, _) => Err(Status::unauthenticated(
                "this call needs authorization: Bearer <a valid login token>",
            )),
            // Nothing configured: the services say what is missing.
            (Gate::Backend { tokens, .. }, _) if tokens.is_empty() => Ok(request),
            (Gate::Backend { tokens, .. }, Some(t)) if tokens.iter().any(|e| same_secret(t, e)) => {
                Ok(request)
            }
            (Gate::Backend { auth, .. }, Some(t)) if auth.verify(t, now).is_ok() => Err(
                Status::permission_denied("a user's login token cannot call the back-end listener"),
            ),
            (Gate::Backend { .. }, None) => Err(Status::unauthenticated(
                "calls here need authorization: Bearer <backend_token or admin_token>",
            )),
            (Gate::Backend { .. }, Some(_)) => Err(Status::unauthenticated(
                "wrong token: calls here need the back-end token (or, for the archive, the admin token)",
            )),
        }
    }
}

/// A service whose calls are authorized one way.
pub(crate) trait Authorized: Send + Sync {
    fn api(&self) -> &Api;

    /// The caller of a request, or why it may not call.
    fn actor(
        &self,
        metadata: &MetadataMap,
        extensions: &Extensions,
    ) -> impl Future<Output = Result<Actor, Status>> + Send;

    /// Authorizes, then runs `op` as the caller.
    fn call<Req, Res, Fut>(
        &self,
        request: Request<Req>,
        op: impl FnOnce(Api, Actor, Req) -> Fut + Send,
    ) -> impl Future<Output = Result<Response<Res>, Status>> + Send
    where
        Req: Send,
        Fut: Future<Output = Result<Res, ApiError>> + Send,
    {
        async move {
            let actor = self.actor(request.metadata(), request.extensions()).await?;
            let api = self.api().clone();
            Ok(Response::new(op(api, actor, request.into_inner()).await?))
        }
    }
}

/// The user API's service.
#[derive(Clone)]
pub(crate) struct UserService(pub Api);

impl Authorized for UserService {
    fn api(&self) -> &Api {
        &self.0
    }

    async fn actor(
        &self,
        metadata: &MetadataMap,
        extensions: &Extensions,
    ) -> Result<Actor, Status> {
        self.0.user_actor(metadata, extensions).await
    }
}

/// The back-end API's service.
#[derive(Clone)]
pub(crate) struct BackendService(pub Api);

impl Authorized for BackendService {
    fn api(&self) -> &Api {
        &self.0
    }

    async fn actor(&self, metadata: &MetadataMap, _: &Extensions) -> Result<Actor, Status> {
        self.0.backend_actor(metadata)
    }
}

/// Refuses a back-end-only operation asked by a user (a guard inside
/// operations both services share).
pub(crate) fn backend_only(actor: &Actor, what: &str) -> Result<(), ApiError> {
    match actor {
        Actor::Backend => Ok(()),
        Actor::User(_) => Err(tern_chat::Refusal::new(
            ErrorCode::Forbidden,
            format!("only the back-end API may {what}"),
        )
        .into()),
    }
}
