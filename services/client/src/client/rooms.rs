//! Live rooms: joining and leaving the one room a connection is in, and
//! posting to it. Rooms are best-effort: nothing is stored or ACKed, and
//! their messages arrive as [`Event::RoomMessages`](super::Event::RoomMessages).

use bytes::Bytes;
use tern_proto::client::{RoomJoin, RoomLeave, RoomSend, client_frame};
use tracing::debug;

use super::Client;
use super::shared::Answer;
use crate::ClientError;

impl Client {
    /// Enters live room `room`, leaving the one this connection was in.
    /// Once this returns, no message of the old room arrives and every
    /// message posted to `room` from now on does (as
    /// [`Event::RoomMessages`](super::Event::RoomMessages)).
    pub async fn join_room(&self, room: impl Into<String>) -> Result<(), ClientError> {
        let room = room.into();
        self.room_request(|request_id| client_frame::Kind::RoomJoin(RoomJoin { request_id, room }))
            .await
    }

    /// Leaves the current room.
    pub async fn leave_room(&self) -> Result<(), ClientError> {
        self.room_request(|request_id| client_frame::Kind::RoomLeave(RoomLeave { request_id }))
            .await
    }

    /// Posts a `text/plain` message to `room`, which this connection must
    /// be in. Returns once every gateway can read it; rooms are best-effort,
    /// so it is not stored and viewers who are too slow may miss it.
    pub async fn post_to_room(
        &self,
        room: impl Into<String>,
        body: impl Into<Bytes>,
    ) -> Result<(), ClientError> {
        let (room, body) = (room.into(), body.into());
        self.room_request(|request_id| {
            client_frame::Kind::RoomSend(RoomSend {
                request_id,
                room,
                content_type: "text/plain".into(),
                body,
            })
        })
        .await
    }

    async fn room_request(
        &self,
        frame: impl FnOnce(u64) -> client_frame::Kind,
    ) -> Result<(), ClientError> {
        match self.request(frame).await? {
            Answer::Room(result) => {
                debug!(room = %result.room, "room request answered");
                Ok(())
            }
            other => Err(ClientError::Protocol(format!(
                "a room request was answered with {other:?}"
            ))),
        }
    }
}
