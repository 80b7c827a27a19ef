//! A session's blocking frames: block or unblock a user, list the blocked.
//! The rules are `tern-chat`'s, shared with the user API.

use tern_chat::pages::{page_limit, with_next};
use tern_core::proto::client::{
    BlockedList, BlockedListRequest, SetBlocked, SetBlockedResult, server_frame,
};

use super::{Close, LoggedIn, Session};

impl Session {
    pub(super) async fn on_set_blocked(
        &mut self,
        login: &LoggedIn,
        req: SetBlocked,
    ) -> Result<(), Close> {
        let user = &login.user;
        let now = tokio::time::Instant::now().into_std();
        if let Err(r) = self.shared.limits.costly.change(user, now) {
            crate::metrics::GATEWAY_LIMITED.inc("account_changes");
            return self.refuse(r, "", req.request_id);
        }
        let store = self.shared.deps.store.clone();
        match tern_chat::access::set_blocked(store.as_ref(), user, &req.user, req.blocked).await {
            Ok(other) => self.emit(server_frame::Kind::SetBlockedResult(SetBlockedResult {
                request_id: req.request_id,
                user: other,
                blocked: req.blocked,
            })),
            Err(e) => self.refuse(e.into_refusal(), "", req.request_id),
        }
    }

    pub(super) async fn on_blocked_list(
        &mut self,
        login: &LoggedIn,
        req: BlockedListRequest,
    ) -> Result<(), Close> {
        let user = &login.user;
        let limit = page_limit(req.limit);
        let read = self
            .shared
            .deps
            .store
            .blocked_users(user, &req.after, limit + 1)
            .await;
        match read {
            Ok(read) => {
                let (users, next) = with_next(read, limit);
                self.emit(server_frame::Kind::BlockedList(BlockedList {
                    request_id: req.request_id,
                    users,
                    next,
                }))
            }
            Err(e) => self.refuse(tern_chat::Refusal::unavailable(&e), "", req.request_id),
        }
    }
}
