//! The device's inbox: [`Client::ack`] tells the gateway what this device
//! has stored, which moves its cursor, and [`Client::sync`] pulls pages of
//! the inbox after a cursor, to catch up without waiting for pushes.

use tern_proto::client::{Message, PushAck, SyncRequest, client_frame};
use tern_wire::{encode_client, unpack_batch};

use super::shared::Answer;
use super::{Client, MAX_PAYLOAD};
use crate::ClientError;

/// A page of the inbox, from [`Client::sync`].
#[derive(Debug, Clone, PartialEq)]
pub struct InboxSlice {
    pub messages: Vec<Message>,
    /// Pass as `after_cursor` for the next page.
    pub next_cursor: u64,
    pub has_more: bool,
    /// Retention trimmed entries after the cursor asked for: this page
    /// starts at the trim point, and the device missed what was before.
    pub gap: bool,
}

impl Client {
    /// Tells the gateway everything up to `cursor` is stored on this device.
    pub async fn ack(&self, cursor: u64) -> Result<(), ClientError> {
        self.write(encode_client(client_frame::Kind::PushAck(PushAck {
            cursor,
        })))
        .await
    }

    /// Pulls up to `limit` inbox messages after `after_cursor`.
    pub async fn sync(&self, after_cursor: u64, limit: u32) -> Result<InboxSlice, ClientError> {
        let answer = self
            .request(|request_id| {
                client_frame::Kind::Sync(SyncRequest {
                    request_id,
                    after_cursor,
                    limit,
                })
            })
            .await?;
        let Answer::Sync(page) = answer else {
            return Err(ClientError::Protocol(format!(
                "a sync was answered with {answer:?}"
            )));
        };
        let messages = unpack_batch(page.codec, &page.payload, MAX_PAYLOAD)?;
        Ok(InboxSlice {
            messages,
            next_cursor: page.next_cursor,
            has_more: page.has_more,
            gap: page.gap,
        })
    }
}
