//! A session's side of live rooms: join, switch, leave, post, and passing
//! the room batches the feed hands it on to the socket (see `crate::rooms`).

use futures_util::FutureExt;
use prost::Message as _;
use tern_chat::send::check_content;
use tern_core::ids::{MessageId, check_room, clip};
use tern_core::log::Record;
use tern_core::proto::client::{
    ErrorCode, RoomJoin, RoomLeave, RoomResult, RoomSend, server_frame,
};
use tern_core::proto::records::RoomRecord;
use tern_core::{now_ms, topics};

use crate::metrics;
use tokio::sync::mpsc;

use super::{Close, LoggedIn, Session};
use crate::rooms::{RoomFrame, Viewer};

/// Frames kept free in the socket queue for replies: with fewer, room
/// batches are dropped instead of queued (rooms are best-effort, replies
/// and pushes are not).
const REPLY_RESERVE: usize = 4;
/// Room posts of one connection being appended at once.
const MAX_POSTS_IN_FLIGHT: usize = 64;

/// Where a room post went: (request id, room, outcome of the append).
pub(super) type PostResult = (u64, String, Result<(), tern_core::log::LogError>);

impl Session {
    pub(super) fn on_room_join(&mut self, login: &LoggedIn, join: RoomJoin) -> Result<(), Close> {
        if let Err(e) = check_room(&join.room) {
            return self.reject(
                ErrorCode::InvalidArgument,
                e.to_string(),
                "",
                join.request_id,
            );
        }
        let codec = login.codec;
        // Posting needs the room joined, so this decides both.
        let allowed = tern_chat::rooms::check_room(
            self.shared.config.room_policy,
            login.rooms.as_deref(),
            &join.room,
        );
        if let Err(r) = allowed {
            return self.refuse(r, "", join.request_id);
        }
        self.leave_room();
        let queue = match &self.room_tx {
            Some(tx) => tx.clone(),
            None => {
                // Made on the first join: connections that never watch a
                // room pay nothing for it.
                let (tx, rx) = mpsc::channel(self.shared.config.room_queue);
                self.room_feed = Some(rx);
                self.room_tx = Some(tx.clone());
                tx
            }
        };
        let viewer = Viewer {
            epoch: self.room_epoch,
            codec,
            queue,
        };
        // In the room before the answer: every message the feed reads from
        // now on reaches this connection.
        self.shared.rooms.join(&join.room, self.id, viewer);
        tracing::debug!(room = %join.room, "joined room");
        self.room = Some(join.room.clone());
        self.emit(server_frame::Kind::RoomResult(RoomResult {
            request_id: join.request_id,
            room: join.room,
        }))
    }

    pub(super) fn on_room_leave(&mut self, leave: RoomLeave) -> Result<(), Close> {
        self.leave_room();
        self.emit(server_frame::Kind::RoomResult(RoomResult {
            request_id: leave.request_id,
            room: String::new(),
        }))
    }

    /// Leaves the current room, if any. The epoch moves on, so batches of
    /// the old room still queued for this connection are dropped.
    pub(super) fn leave_room(&mut self) {
        self.room_epoch += 1;
        if let Some(room) = self.room.take() {
            self.shared.rooms.leave(&room, self.id);
        }
    }

    pub(super) fn on_room_send(&mut self, login: &LoggedIn, send: RoomSend) -> Result<(), Close> {
        let rid = send.request_id;
        if self.room.as_deref() != Some(send.room.as_str()) {
            let msg = format!("join room {:?} before posting to it", clip(&send.room));
            return self.reject(ErrorCode::Forbidden, msg, "", rid);
        }
        let max = self.shared.config.max_body_bytes;
        if let Err(r) = check_content(&send.content_type, send.body.len(), max) {
            return self.refuse(r, "", rid);
        }
        // Room posts spend the user's sends, like chat messages.
        let user = &login.user;
        let now = tokio::time::Instant::now().into_std();
        if let Err(after) = self.shared.limits.take_send(user, now) {
            let r = tern_chat::Refusal::rate_limited(
                format!("{user} sends more messages per second than allowed; not posted"),
                after,
            );
            return self.refuse(r, "", rid);
        }
        if self.room_posts.len() >= MAX_POSTS_IN_FLIGHT {
            let msg = "too many room posts in flight; retry later";
            return self.reject(ErrorCode::Unavailable, msg, "", rid);
        }
        let record = RoomRecord {
            room: send.room.clone(),
            message_id: MessageId::new().to_vec(),
            sender_user: login.user.clone(),
            sender_device: login.device.clone(),
            content_type: send.content_type,
            body: send.body,
            sent_at_ms: now_ms(),
        };
        let log = self.shared.deps.log.clone();
        let room = send.room;
        self.room_posts.push(
            async move {
                let r = log
                    .append(
                        topics::ROOMS,
                        vec![Record::new(room.clone(), record.encode_to_vec())],
                    )
                    .await;
                (rid, room, r.map(|_| ()))
            }
            .boxed(),
        );
        Ok(())
    }

    pub(super) fn on_room_posted(&mut self, (rid, room, result): PostResult) -> Result<(), Close> {
        match result {
            Ok(()) => self.emit(server_frame::Kind::RoomResult(RoomResult {
                request_id: rid,
                room,
            })),
            Err(e) => {
                let msg = format!("room message not posted: {e}");
                self.reject(ErrorCode::Unavailable, msg, "", rid)
            }
        }
    }

    /// A batch from the feed: written if it belongs to the current room
    /// and the socket queue has room to spare, dropped otherwise.
    pub(super) fn on_room_frame(&mut self, frame: RoomFrame) -> Result<(), Close> {
        if frame.epoch != self.room_epoch || self.room.is_none() {
            return Ok(());
        }
        if self.out.capacity() <= REPLY_RESERVE {
            metrics::ROOM_DROPPED.inc();
            return Ok(());
        }
        self.emit_bytes(frame.frame)
    }
}

/// The next batch from the room feed, or never if the session has none.
pub(super) async fn next_room_frame(
    feed: &mut Option<mpsc::Receiver<RoomFrame>>,
) -> Option<RoomFrame> {
    match feed {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}
