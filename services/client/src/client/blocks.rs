//! The user's block list: blocking and unblocking a user (whose 1:1
//! messages are then refused) and reading the list a page at a time.

use tern_proto::client::{BlockedListRequest, SetBlocked, client_frame};

use super::Client;
use super::shared::Answer;
use crate::ClientError;

impl Client {
    /// Blocks `user` (`blocked` true) or unblocks them: a blocked user's
    /// 1:1 messages to this user are refused with `BLOCKED`. Returns whether
    /// the user is blocked now.
    pub async fn set_blocked(
        &self,
        user: impl Into<String>,
        blocked: bool,
    ) -> Result<bool, ClientError> {
        let user = user.into();
        match self
            .request(|request_id| {
                client_frame::Kind::SetBlocked(SetBlocked {
                    request_id,
                    user,
                    blocked,
                })
            })
            .await?
        {
            Answer::Blocked(result) => Ok(result.blocked),
            other => Err(ClientError::Protocol(format!(
                "a block request was answered with {other:?}"
            ))),
        }
    }

    /// Every user this user blocks, in id order (read a page at a time).
    pub async fn blocked_users(&self) -> Result<Vec<String>, ClientError> {
        let mut all = Vec::new();
        let mut after = String::new();
        loop {
            let page = self
                .request(|request_id| {
                    client_frame::Kind::BlockedList(BlockedListRequest {
                        request_id,
                        after,
                        limit: 0,
                    })
                })
                .await?;
            let Answer::BlockedList(page) = page else {
                return Err(ClientError::Protocol(format!(
                    "a blocked-list request was answered with {page:?}"
                )));
            };
            all.extend(page.users);
            if page.next.is_empty() {
                return Ok(all);
            }
            after = page.next;
        }
    }
}
