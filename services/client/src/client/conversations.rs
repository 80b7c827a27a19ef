//! Reading conversations: a conversation's history a page at a time
//! (newest first), the user's conversation list with unread counts, and
//! read marks, which the server keeps per user for every device.

use bytes::Bytes;
use tern_proto::client::{
    ConversationSummary, ConversationsRequest, HistoryRequest, MarkRead, Message, client_frame,
};
use tern_wire::unpack_batch;

use super::shared::Answer;
use super::{Client, MAX_PAYLOAD};
use crate::ClientError;

impl Client {
    /// A page of `conversation`'s history, newest first: messages with seq
    /// below `before_seq` (0: from the newest). Returns the messages, the
    /// `before_seq` for the next (older) page, and whether there is one.
    pub async fn history(
        &self,
        conversation: impl Into<String>,
        before_seq: u64,
        limit: u32,
    ) -> Result<(Vec<Message>, u64, bool), ClientError> {
        let conversation = conversation.into();
        let answer = self
            .request(|request_id| {
                client_frame::Kind::History(HistoryRequest {
                    request_id,
                    conversation,
                    before_seq,
                    limit,
                })
            })
            .await?;
        let Answer::History(page) = answer else {
            return Err(ClientError::Protocol(format!(
                "a history request was answered with {answer:?}"
            )));
        };
        let messages = unpack_batch(page.codec, &page.payload, MAX_PAYLOAD)?;
        Ok((messages, page.next_before_seq, page.has_more))
    }

    /// Up to `limit` (0: the server's default) of this user's
    /// conversations, most recently active first, with the newest message
    /// and the unread count of each.
    pub async fn conversations(&self, limit: u32) -> Result<Vec<ConversationSummary>, ClientError> {
        Ok(self.conversations_page(limit, Bytes::new()).await?.0)
    }

    /// A page of the conversation list: up to `limit` conversations after
    /// the page that returned `before` as its next position (empty: the
    /// most recent). Returns the page and the next position (empty: none).
    pub async fn conversations_page(
        &self,
        limit: u32,
        before: Bytes,
    ) -> Result<(Vec<ConversationSummary>, Bytes), ClientError> {
        match self
            .request(|request_id| {
                client_frame::Kind::Conversations(ConversationsRequest {
                    request_id,
                    limit,
                    before,
                })
            })
            .await?
        {
            Answer::Conversations(list) => Ok((list.conversations, list.next)),
            other => Err(ClientError::Protocol(format!(
                "a conversation list request was answered with {other:?}"
            ))),
        }
    }

    /// Marks `conversation` read up to `seq` for this user (on every
    /// device). Returns the read mark now stored: never lower than before,
    /// never past the newest message.
    pub async fn mark_read(
        &self,
        conversation: impl Into<String>,
        seq: u64,
    ) -> Result<u64, ClientError> {
        let conversation = conversation.into();
        match self
            .request(|request_id| {
                client_frame::Kind::MarkRead(MarkRead {
                    request_id,
                    conversation,
                    seq,
                })
            })
            .await?
        {
            Answer::MarkRead(result) => Ok(result.read_seq),
            other => Err(ClientError::Protocol(format!(
                "a mark-read request was answered with {other:?}"
            ))),
        }
    }
}
