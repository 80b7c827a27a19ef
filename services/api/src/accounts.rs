//! A user's safety calls: blocking, logging devices out (token
//! revocation), and dev tokens.

use std::time::Duration;

use prost::Message as _;
use tern_chat::access::Actor;
use tern_chat::pages::{page_limit, with_next};
use tern_core::auth::TokenSpec;
use tern_core::ids::{check_device, check_user};
use tern_core::log::Record;
use tern_core::proto::api::{
    BlockedList, IssueDevTokenRequest, IssueDevTokenResponse, ListBlockedRequest,
    RevokeTokensRequest, RevokeTokensResponse, SetBlockedRequest, SetBlockedResponse,
};
use tern_core::proto::records::{GroupFeedRecord, TokensRevoked, group_feed_record};
use tern_core::topics;

use crate::{Api, ApiError};

/// Longest a dev token lives, whatever is asked.
pub const MAX_DEV_TOKEN_TTL: Duration = Duration::from_secs(24 * 3600);

impl Api {
    pub(crate) async fn set_blocked(
        &self,
        actor: &Actor,
        req: SetBlockedRequest,
    ) -> Result<SetBlockedResponse, ApiError> {
        let me = actor.subject("", "block for")?;
        self.costly(actor, true)?;
        let reply =
            tern_chat::access::set_blocked(self.deps.store.as_ref(), &me, &req.user, req.blocked)
                .await?;
        Ok(SetBlockedResponse {
            user: reply,
            blocked: req.blocked,
        })
    }

    pub(crate) async fn list_blocked(
        &self,
        actor: &Actor,
        req: ListBlockedRequest,
    ) -> Result<BlockedList, ApiError> {
        let me = actor.subject("", "list the blocks of")?;
        let limit = page_limit(req.limit);
        let read = self
            .deps
            .store
            .blocked_users(&me, &req.after, limit + 1)
            .await?;
        let (users, next) = with_next(read, limit);
        Ok(BlockedList { users, next })
    }

    pub(crate) async fn revoke_tokens(
        &self,
        actor: &Actor,
        req: RevokeTokensRequest,
    ) -> Result<RevokeTokensResponse, ApiError> {
        let user = actor.subject(&req.user, "revoke the tokens of")?;
        self.costly(actor, true)?;
        let device = (!req.device.is_empty()).then_some(req.device.as_str());
        if let Some(d) = device {
            check_device(d)?;
        }
        let before_ms = tern_core::now_ms();
        self.deps
            .store
            .revoke_tokens(&user, device, before_ms)
            .await?;
        // Every gateway reads the feed and closes the connections that
        // logged in with a revoked token.
        let record = GroupFeedRecord {
            kind: Some(group_feed_record::Kind::Revoked(TokensRevoked {
                user: user.clone(),
                device: req.device.clone(),
                before_ms,
            })),
        };
        self.deps
            .log
            .append(
                topics::GROUP_FEED,
                vec![Record::new(
                    user.as_bytes().to_vec(),
                    record.encode_to_vec(),
                )],
            )
            .await
            .map_err(ApiError::Feed)?;
        tracing::info!(%user, device = device.unwrap_or("*"), before_ms, "tokens revoked");
        Ok(RevokeTokensResponse {
            revoked_before_ms: before_ms,
        })
    }

    pub(crate) fn issue_dev_token(
        &self,
        req: IssueDevTokenRequest,
    ) -> Result<IssueDevTokenResponse, ApiError> {
        check_user(&req.user)?;
        if !req.device.is_empty() {
            check_device(&req.device)?;
        }
        let asked = match req.ttl_seconds {
            0 => self.config.dev_token_ttl,
            s => Duration::from_secs(s),
        };
        let spec = TokenSpec {
            user: req.user,
            ttl_secs: asked.min(MAX_DEV_TOKEN_TTL).as_secs(),
            device: (!req.device.is_empty()).then_some(req.device),
            rooms: (!req.rooms.is_empty()).then_some(req.rooms),
        };
        Ok(IssueDevTokenResponse {
            token: self.deps.auth.issue(&spec, tern_core::now_ms()),
        })
    }
}
