//! A session's inbox side: live deliveries and catch-ups turned into push
//! frames (read from the inbox after the last pushed cursor, packed into
//! frames within the limits, re-sent until ACKed), ACKs and the cursor
//! writes they start, and sync pages. `Pushes` and `CursorWrites` keep the
//! state; this does the reading and writing.

use crate::metrics;
use futures_util::FutureExt;
use prost::Message as _;
use tern_chat::Refusal;
use tern_core::proto::client::{
    Codec, ErrorCode, Message, Push, SyncPage, SyncRequest, server_frame,
};
use tokio::time::Instant;
use tracing::Instrument;

use super::{
    BODY_BATCH, CURSOR_FLUSH, Close, LIVE_RESERVE, LoggedIn, ROOM_RETRY, STORE_RETRY, Session,
    frame_budget,
};
use crate::hub::SessionEvent;

impl Session {
    pub(super) async fn on_event(&mut self, event: SessionEvent) -> Result<(), Close> {
        match event {
            SessionEvent::Receipt(r) => self.on_receipt(r),
            SessionEvent::CatchUp => {
                if self.login.as_ref().is_some_and(|l| !l.send_only) {
                    self.pushes.catch_up_now(Instant::now());
                }
                Ok(())
            }
            SessionEvent::GroupPush(frame) => {
                // Live only (the message is in the group's history): it
                // never takes the room replies and pushes need.
                if self.out.capacity() > LIVE_RESERVE {
                    self.emit_bytes(frame)
                } else {
                    metrics::GROUP_FEED_DROPPED.inc();
                    Ok(())
                }
            }
            SessionEvent::Deliveries(refs) => {
                if self.login.as_ref().is_none_or(|l| l.send_only) {
                    return Ok(());
                }
                let newest = refs.iter().map(|r| r.cursor).max().unwrap_or(0);
                self.pushes
                    .delivered(newest, Instant::now(), self.shared.config.push_window);
                Ok(())
            }
        }
    }

    /// Pushes what the inbox holds after `last_pushed`, packed into as
    /// few frames as fit `push_max_bytes`, while there is room (see
    /// [`Self::push_room`]). What does not fit stays in the inbox, and
    /// `behind` stays set until an ACK makes room.
    pub(super) async fn catch_up(&mut self, login: &LoggedIn) -> Result<(), Close> {
        self.pushes.start();
        let user = login.user.clone();
        let c = &self.shared.config;
        let (limit, max_bytes, max_messages) =
            (c.push_max_messages, frame_budget(c), c.push_max_messages);
        let store = self.shared.deps.store.clone();
        // Messages of the frame being filled, and its encoded size.
        let mut frame: Vec<Message> = Vec::new();
        let mut frame_bytes = 0;
        // Cursor of the last inbox entry looked at.
        let mut read_to = self.pushes.last_pushed;
        while self.pushes.behind {
            if !self.push_room() {
                self.wait_for_room(); // `frame` is read again once there is room.
                return Ok(());
            }
            // A store outage does not end the connection: what could not be
            // read stays in the inbox, and pushing is tried again shortly.
            let page = match store.read_inbox(&user, read_to, limit).await {
                Ok(p) => p,
                Err(e) => {
                    self.retry_later(e);
                    return Ok(());
                }
            };
            let caught_up = page.entries.last().is_none_or(|e| e.cursor >= page.head);
            for chunk in page.entries.chunks(BODY_BATCH) {
                let messages = match self.shared.bodies.load(store.as_ref(), chunk).await {
                    Ok(m) => m,
                    Err(e) => {
                        self.retry_later(e);
                        return Ok(());
                    }
                };
                for m in messages {
                    let len = m.encoded_len() + 4;
                    if !frame.is_empty()
                        && (frame_bytes + len > max_bytes || frame.len() >= max_messages)
                    {
                        if !self.push_room() {
                            self.wait_for_room();
                            return Ok(());
                        }
                        let through = frame.last().map_or(read_to, |m| m.cursor);
                        self.push(std::mem::take(&mut frame), through, true, false)?;
                        frame_bytes = 0;
                    }
                    frame_bytes += len;
                    frame.push(m);
                }
                read_to = chunk.last().map_or(read_to, |e| e.cursor);
            }
            if caught_up {
                if !frame.is_empty() {
                    if !self.push_room() {
                        self.wait_for_room();
                        return Ok(());
                    }
                    self.push(std::mem::take(&mut frame), read_to, false, false)?;
                }
                // Entries whose message is gone are skipped, not pushed.
                self.pushes.last_pushed = self.pushes.last_pushed.max(read_to);
                self.pushes.behind = false;
            }
        }
        Ok(())
    }

    /// Pushing failed on the store: keep `behind`, try again in a second.
    fn retry_later(&mut self, e: tern_core::store::StoreError) {
        tracing::warn!(error = %e, "cannot read the inbox; pushing again in 1 s");
        self.pushes.retry_at(Instant::now() + STORE_RETRY);
    }

    /// Pushing stopped for lack of room: an ACK restarts it, or, if no push
    /// is waiting for one (the queue is full of replies), a short timer.
    pub(super) fn wait_for_room(&mut self) {
        self.pushes.wait_for_room(Instant::now(), ROOM_RETRY);
    }

    /// Sends one push frame covering inbox entries up to `through`, and
    /// remembers it until ACKed.
    pub(super) fn push(
        &mut self,
        messages: Vec<Message>,
        through: u64,
        more_pending: bool,
        older_not_pushed: bool,
    ) -> Result<(), Close> {
        let codec = self.login.as_ref().map_or(Codec::None, |l| l.codec);
        let first_cursor = messages.first().map_or(through, |m| m.cursor);
        let count = messages.len();
        let raw_len: usize = messages.iter().map(|m| m.encoded_len() + 2).sum();
        let (used, payload) =
            tern_wire::pack_batch(messages, codec, self.shared.config.compress_min_bytes);
        metrics::PUSHES.inc();
        metrics::PUSHED_MESSAGES.add(count as u64);
        if count > 0 {
            // Empty frames only move the cursor or carry a gap marker.
            metrics::PUSH_BATCH.observe(count as f64);
        }
        metrics::PUSH_RAW_BYTES.add(raw_len as u64);
        metrics::PUSH_PAYLOAD_BYTES.add(payload.len() as u64);
        let frame = tern_wire::encode_server(server_frame::Kind::Push(Push {
            first_cursor,
            last_cursor: through,
            codec: used as i32,
            payload,
            more_pending,
            older_not_pushed,
            gap: self.pushes.take_gap(),
        }));
        tracing::debug!(
            first_cursor,
            last_cursor = through,
            count,
            bytes = frame.len(),
            "push sent"
        );
        self.emit_bytes(frame.clone())?;
        self.pushes.sent(through, frame, Instant::now());
        Ok(())
    }

    pub(super) async fn on_ack(&mut self, login: &LoggedIn, cursor: u64) -> Result<(), Close> {
        // The latency ends when the ACK arrives, not after the cursor is saved.
        metrics::ACKS.inc();
        match self.pushes.ack(cursor, Instant::now()) {
            Err(bad) => {
                let msg = format!(
                    "ack for cursor {cursor}, but the last cursor pushed is {}",
                    bad.last_pushed
                );
                return self.reject(ErrorCode::BadCursor, msg, "", 0);
            }
            Ok(latencies) => {
                for latency in latencies {
                    metrics::ACK_LATENCY.observe_duration(latency);
                }
            }
        }
        self.cursor.acked(cursor);
        self.write_cursor();
        if self.pushes.behind {
            self.catch_up(login).await?;
        }
        Ok(())
    }

    pub(super) async fn on_sync(
        &mut self,
        login: &LoggedIn,
        req: SyncRequest,
    ) -> Result<(), Close> {
        let (user, codec) = (login.user.clone(), login.codec);
        let limit = tern_chat::pages::page_limit(req.limit);
        let store = self.shared.deps.store.clone();
        // Behind the trim point: the page starts there and says so.
        let read = async {
            let trimmed = store.trimmed_through(&user).await?;
            let after = req.after_cursor.max(trimmed);
            let page = store.read_inbox(&user, after, limit).await?;
            Ok::<_, tern_core::store::StoreError>((req.after_cursor < trimmed, after, page))
        };
        let (gap, after, page) = match read.await {
            Ok(read) => read,
            Err(e) => return self.refuse(Refusal::unavailable(&e), "", req.request_id),
        };
        if req.after_cursor > page.head {
            let msg = format!(
                "cursor {} is past the end of the inbox ({})",
                req.after_cursor, page.head
            );
            return self.reject(ErrorCode::BadCursor, msg, "", req.request_id);
        }
        let c = self.shared.config.clone();
        let budget = frame_budget(&c);
        // Bodies a chunk at a time, up to the page's byte bound (a page of
        // large bodies does not load its whole count first).
        let mut fill = tern_chat::pages::InboxPageFill::new(after, budget);
        for chunk in page.entries.chunks(tern_chat::pages::READ_CHUNK) {
            if !fill.wants_more() {
                break;
            }
            match self.shared.bodies.load(store.as_ref(), chunk).await {
                Ok(loaded) => fill.add(chunk.last().map_or(0, |e| e.cursor), loaded),
                Err(e) => return self.refuse(Refusal::unavailable(&e), "", req.request_id),
            }
        }
        let (page_messages, next_cursor) = fill.finish();
        let (used, payload) = tern_wire::pack_batch(page_messages, codec, c.compress_min_bytes);
        self.emit(server_frame::Kind::SyncPage(SyncPage {
            request_id: req.request_id,
            codec: used as i32,
            payload,
            next_cursor,
            has_more: page.head > next_cursor,
            gap,
        }))
    }

    /// Starts writing the highest ACKed cursor, unless a write is in
    /// flight (its completion calls this again) or nothing new was ACKed.
    pub(super) fn write_cursor(&mut self) {
        let Some(l) = self.login.as_ref() else {
            return;
        };
        let Some(cursor) = self.cursor.next() else {
            return;
        };
        let (store, user, device) = (
            self.shared.deps.store.clone(),
            l.user.clone(),
            l.device.clone(),
        );
        self.cursor_write = Some(
            async move {
                if let Err(e) = store.advance_cursor(&user, &device, cursor).await {
                    // Not fatal: the device gets those pushes again at its
                    // next login, and the next ACK writes a higher cursor.
                    tracing::warn!(error = %e, cursor, "cursor not saved");
                }
            }
            .in_current_span()
            .boxed(),
        );
    }

    /// Waits for the cursor write in flight and writes any cursor ACKed
    /// after it; gives up after `CURSOR_FLUSH` (a dead store).
    pub(super) async fn flush_cursor(&mut self) {
        let flush = async {
            if let Some(w) = self.cursor_write.take() {
                w.await;
                self.cursor.done();
            }
            self.write_cursor();
            if let Some(w) = self.cursor_write.take() {
                w.await;
                self.cursor.done();
            }
        };
        if tokio::time::timeout(CURSOR_FLUSH, flush).await.is_err() {
            tracing::warn!(
                "cursor not saved before the close; the device gets the last pushes again"
            );
        }
    }
}
