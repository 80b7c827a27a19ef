//! The reading calls: conversation history, a user's conversation list,
//! read marks. With `authorization: Bearer <token>` they act as that user
//! (history only of conversations the user is in); without, they come from
//! a trusted back end (see `groups`).

use tern_core::groups::is_in_conversation;
use tern_core::ids::Conversation;
use tern_core::proto::api::{
    ConversationList, HistoryPage, HistoryRequest, ListConversationsRequest, MarkReadRequest,
    MarkReadResponse,
};
use tern_core::store::{client_message, conversation_summaries};

use crate::groups::{Caller, subject};
use crate::{Api, IngestError, page_limit};

impl Api {
    /// Checks that the caller may read `conversation`.
    async fn readable(
        &self,
        caller: &Caller,
        conversation: &str,
    ) -> Result<Conversation, IngestError> {
        let conv = Conversation::parse(conversation)?;
        let Some(user) = caller else {
            return Ok(conv);
        };
        if is_in_conversation(self.deps.store.as_ref(), user, &conv).await? {
            Ok(conv)
        } else {
            Err(IngestError::Forbidden(format!(
                "{user} is not in conversation {conversation}"
            )))
        }
    }

    pub(crate) async fn history(
        &self,
        caller: Caller,
        req: HistoryRequest,
    ) -> Result<HistoryPage, IngestError> {
        let conversation = self.readable(&caller, &req.conversation).await?;
        let limit = page_limit(req.limit);
        // One extra tells whether there is more.
        let mut stored = self
            .deps
            .store
            .history(&conversation.to_string(), req.before_seq, limit + 1)
            .await?;
        let has_more = stored.len() > limit;
        stored.truncate(limit);
        Ok(HistoryPage {
            messages: stored.into_iter().map(|m| client_message(m, 0)).collect(),
            has_more,
        })
    }

    pub(crate) async fn list_conversations(
        &self,
        caller: Caller,
        req: ListConversationsRequest,
    ) -> Result<ConversationList, IngestError> {
        let user = subject(caller, &req.user, "list the conversations of")?;
        let conversations =
            conversation_summaries(self.deps.store.as_ref(), &user, page_limit(req.limit)).await?;
        Ok(ConversationList { conversations })
    }

    pub(crate) async fn mark_read(
        &self,
        caller: Caller,
        req: MarkReadRequest,
    ) -> Result<MarkReadResponse, IngestError> {
        let user = subject(caller, &req.user, "mark as read for")?;
        let conversation = self
            .readable(&Some(user.clone()), &req.conversation)
            .await?;
        let read_seq = self
            .deps
            .store
            .mark_read(&user, &conversation.to_string(), req.seq)
            .await?;
        Ok(MarkReadResponse { read_seq })
    }
}
