//! The reading calls: a user's inbox (back end only), conversation history,
//! the conversation list, read marks, room viewer counts. A user reads only
//! what `tern-chat` lets them; the back end reads anything.

use tern_chat::Refusal;
use tern_chat::access::{Actor, history_page, read_access};
use tern_chat::conversations::conversation_page;
use tern_chat::pages::{InboxPageFill, MAX_API_PAGE_BYTES, MAX_PAGE, READ_CHUNK, page_limit};
use tern_core::ids::{check_room, check_user};
use tern_core::proto::api::{
    ConversationList, FetchInboxRequest, HistoryPage, HistoryRequest, InboxPage,
    ListConversationsRequest, MarkReadRequest, MarkReadResponse, RoomViewersRequest,
    RoomViewersResponse,
};
use tern_core::store::load_entries;

use crate::authz::backend_only;
use crate::{Api, ApiError};

impl Api {
    pub(crate) async fn fetch_inbox(
        &self,
        actor: &Actor,
        req: FetchInboxRequest,
    ) -> Result<InboxPage, ApiError> {
        backend_only(actor, "read a user's inbox")?;
        check_user(&req.user)?;
        let page = self
            .deps
            .store
            .read_inbox(&req.user, req.after_cursor, page_limit(req.limit))
            .await?;
        if req.after_cursor > page.head {
            return Err(ApiError::BadCursor {
                cursor: req.after_cursor,
                head: page.head,
            });
        }
        // Bodies a chunk at a time, up to the page's byte bound.
        let mut fill = InboxPageFill::new(req.after_cursor, MAX_API_PAGE_BYTES);
        for chunk in page.entries.chunks(READ_CHUNK) {
            if !fill.wants_more() {
                break;
            }
            let loaded = load_entries(self.deps.store.as_ref(), chunk).await?;
            fill.add(chunk.last().map_or(0, |e| e.cursor), loaded);
        }
        let (messages, next_cursor) = fill.finish();
        Ok(InboxPage {
            messages,
            next_cursor,
            has_more: page.head > next_cursor,
        })
    }

    pub(crate) async fn history(
        &self,
        actor: &Actor,
        req: HistoryRequest,
    ) -> Result<HistoryPage, ApiError> {
        let store = self.deps.store.as_ref();
        let access = read_access(store, actor, &req.conversation).await?;
        let page = history_page(
            store,
            &access,
            req.before_seq,
            page_limit(req.limit),
            MAX_API_PAGE_BYTES,
        )
        .await?;
        Ok(HistoryPage {
            messages: page.messages,
            has_more: page.has_more,
        })
    }

    pub(crate) async fn list_conversations(
        &self,
        actor: &Actor,
        req: ListConversationsRequest,
    ) -> Result<ConversationList, ApiError> {
        let user = actor.subject(&req.user, "list the conversations of")?;
        self.costly(actor, false)?;
        let page = conversation_page(
            self.deps.store.as_ref(),
            &user,
            &req.before,
            page_limit(req.limit),
            MAX_API_PAGE_BYTES,
        )
        .await?;
        Ok(ConversationList {
            conversations: page.conversations,
            next: page.next.into(),
        })
    }

    pub(crate) async fn mark_read(
        &self,
        actor: &Actor,
        req: MarkReadRequest,
    ) -> Result<MarkReadResponse, ApiError> {
        let user = actor.subject(&req.user, "mark as read for")?;
        // The back end marks for a user only what that user may read.
        let store = self.deps.store.as_ref();
        let access = read_access(store, &Actor::User(user.clone()), &req.conversation).await?;
        let read_seq = store
            .mark_read(&user, &access.conversation.to_string(), req.seq)
            .await?;
        Ok(MarkReadResponse { read_seq })
    }

    pub(crate) async fn room_viewers(
        &self,
        _actor: &Actor,
        req: RoomViewersRequest,
    ) -> Result<RoomViewersResponse, ApiError> {
        if req.rooms.len() > MAX_PAGE {
            return Err(Refusal::invalid(format!(
                "{} rooms in one call; the limit is {MAX_PAGE}",
                req.rooms.len()
            ))
            .into());
        }
        for room in &req.rooms {
            check_room(room)?;
        }
        let viewers = self.deps.routes.room_viewers(&req.rooms).await?;
        Ok(RoomViewersResponse {
            viewers: viewers.into_iter().collect(),
        })
    }
}
