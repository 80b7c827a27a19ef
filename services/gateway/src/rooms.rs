//! Live rooms, fanned out inside the gateway (DESIGN.md, point 5).
//!
//! Room messages travel by room id only, on the `rooms` topic, which every
//! gateway reads in full (its own consumer group). This gateway keeps
//! room → local viewers ([`Rooms`]); its feed ([`run_feed`]) merges each
//! room's messages over `room_window`, encodes and compresses each merged
//! batch once per codec in use, and hands the same bytes to every viewer.
//!
//! Rooms are best-effort: nothing is stored, ACKed or re-sent. Each viewer
//! has a bounded queue; a full one (or a session whose socket queue is
//! nearly full) drops the batch and counts it in
//! `tern_gateway_room_dropped_total`, so a slow viewer never holds up the
//! others. Sessions tag their room membership with an epoch that grows on
//! every join and leave, and drop queued batches of an older epoch: after a
//! switch is answered, no message of the old room follows.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use bytes::Bytes;
use prost::Message as _;
use tern_core::log::{LogError, Subscription};
use tern_core::proto::client::{Codec, Message, RoomBatch, server_frame};
use tern_core::proto::records::RoomRecord;
use tern_core::stage::stopped;
use tern_core::sync;
use tern_core::topics;

use crate::metrics;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

use crate::Shared;

/// A merged batch of one room, encoded for one viewer's codec.
#[derive(Debug, Clone)]
pub struct RoomFrame {
    /// The session's room epoch when it joined: stale batches are dropped.
    pub epoch: u64,
    pub frame: Bytes,
}

/// One connection watching a room.
pub struct Viewer {
    pub epoch: u64,
    pub codec: Codec,
    pub queue: mpsc::Sender<RoomFrame>,
}

#[derive(Default)]
pub struct Rooms {
    /// room → connection id → viewer.
    rooms: RwLock<HashMap<String, HashMap<u64, Viewer>>>,
    /// Rooms that lost their last local viewer since the last report: the
    /// next report says 0 for them once.
    emptied: Mutex<HashSet<String>>,
}

impl Rooms {
    pub fn join(&self, room: &str, conn: u64, viewer: Viewer) {
        let mut rooms = sync::write(&self.rooms);
        if rooms
            .entry(room.to_owned())
            .or_default()
            .insert(conn, viewer)
            .is_none()
        {
            metrics::ROOM_VIEWERS.inc();
        }
        sync::lock(&self.emptied).remove(room);
    }

    pub fn leave(&self, room: &str, conn: u64) {
        let mut rooms = sync::write(&self.rooms);
        let Some(viewers) = rooms.get_mut(room) else {
            return;
        };
        if viewers.remove(&conn).is_some() {
            metrics::ROOM_VIEWERS.dec();
        }
        if viewers.is_empty() {
            rooms.remove(room);
            sync::lock(&self.emptied).insert(room.to_owned());
        }
    }

    /// Viewers per room on this gateway, with 0 for rooms emptied since the
    /// last call: what the route directory is told.
    pub fn counts(&self) -> Vec<(String, u64)> {
        let rooms = sync::read(&self.rooms);
        let mut counts: Vec<(String, u64)> = rooms
            .iter()
            .map(|(room, viewers)| (room.clone(), viewers.len() as u64))
            .collect();
        let emptied = std::mem::take(&mut *sync::lock(&self.emptied));
        counts.extend(
            emptied
                .into_iter()
                .filter(|r| !rooms.contains_key(r))
                .map(|r| (r, 0)),
        );
        counts
    }

    /// Hands `messages` of `room` to every local viewer without waiting:
    /// encoded once per codec, the same bytes for every viewer of that
    /// codec. Returns (viewers reached, viewers whose queue was full).
    pub fn fan_out(&self, room: &str, messages: &[Message], compress_min: usize) -> (u64, u64) {
        let rooms = sync::read(&self.rooms);
        let Some(viewers) = rooms.get(room) else {
            return (0, 0);
        };
        let mut encoded: HashMap<Codec, Bytes> = HashMap::new();
        let (mut reached, mut dropped) = (0, 0);
        for viewer in viewers.values() {
            let frame = encoded
                .entry(viewer.codec)
                .or_insert_with(|| encode_batch(room, messages, viewer.codec, compress_min))
                .clone();
            match viewer.queue.try_send(RoomFrame {
                epoch: viewer.epoch,
                frame,
            }) {
                Ok(()) => reached += 1,
                Err(mpsc::error::TrySendError::Full(_)) => dropped += 1,
                // The session is ending; its cleanup removes it.
                Err(mpsc::error::TrySendError::Closed(_)) => {}
            }
        }
        (reached, dropped)
    }
}

/// One `RoomBatch` server frame.
fn encode_batch(room: &str, messages: &[Message], codec: Codec, compress_min: usize) -> Bytes {
    let raw_len: usize = messages.iter().map(|m| m.encoded_len() + 2).sum();
    let (used, payload) = tern_wire::pack_batch(messages.to_vec(), codec, compress_min);
    metrics::ROOM_ENCODES.inc();
    metrics::ROOM_RAW_BYTES.add(raw_len as u64);
    metrics::ROOM_PAYLOAD_BYTES.add(payload.len() as u64);
    tern_wire::encode_server(server_frame::Kind::RoomBatch(RoomBatch {
        room: room.to_owned(),
        codec: used as i32,
        payload,
    }))
}

/// The client's view of a room record.
fn room_message(r: RoomRecord) -> Message {
    Message {
        message_id: r.message_id,
        conversation: topics::room_conversation(&r.room),
        seq: 0,
        sender_user: r.sender_user,
        sender_device: r.sender_device,
        content_type: r.content_type,
        body: r.body,
        sent_at_ms: r.sent_at_ms,
        client_msg_id: String::new(),
        cursor: 0,
    }
}

/// The consumer group of this gateway's room feed: every gateway has its
/// own, so every gateway reads every room message.
fn group(node: &str) -> String {
    format!("rooms.{node}")
}

/// Subscribes before the gateway accepts connections.
pub(crate) async fn subscribe(shared: &Shared) -> Result<Box<dyn Subscription>, LogError> {
    let node = &shared.config.node_id;
    shared
        .deps
        .log
        .subscribe(
            topics::ROOMS,
            &group(node),
            tern_core::log::StartFrom::Latest,
        )
        .await
}

/// Reads the `rooms` topic and fans each room's messages out, merged over
/// `room_window` (zero: each poll's messages go out at once).
pub(crate) async fn run_feed(
    shared: Arc<Shared>,
    mut sub: Box<dyn Subscription>,
    mut shutdown: watch::Receiver<bool>,
) {
    let window = shared.config.room_window;
    // room → messages waiting for the window to close, in arrival order.
    let mut pending: HashMap<String, Vec<Message>> = HashMap::new();
    let mut flush_at: Option<Instant> = None;
    let mut backoff = Duration::from_millis(50);
    loop {
        let polled = tokio::select! {
            b = sub.poll(1024) => Some(b),
            _ = sleep_until(flush_at) => None,
            _ = stopped(&mut shutdown) => return,
        };
        match polled {
            None => {}
            Some(Ok(batch)) => {
                backoff = Duration::from_millis(50);
                for d in &batch {
                    match RoomRecord::decode(d.value.clone()) {
                        Ok(r) => {
                            metrics::ROOM_MESSAGES.inc();
                            pending
                                .entry(r.room.clone())
                                .or_default()
                                .push(room_message(r));
                        }
                        Err(e) => {
                            tracing::error!(offset = d.position.offset, error = %e, "skipping undecodable room record")
                        }
                    }
                }
                // Committed only so the embedded log can trim the topic:
                // rooms are best-effort, a batch lost in a crash is gone.
                if let Err(e) = sub.commit(&batch).await {
                    tracing::debug!(error = %e, "room feed commit failed");
                }
                if !pending.is_empty() && flush_at.is_none() {
                    flush_at = Some(Instant::now() + window);
                }
                if !window.is_zero() {
                    continue;
                }
            }
            Some(Err(LogError::Closed)) => return,
            Some(Err(e)) => {
                tracing::warn!(error = %e, retry_in_ms = backoff.as_millis() as u64, "room feed poll failed");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(5));
                match subscribe(&shared).await {
                    Ok(fresh) => tern_core::stage::retire(std::mem::replace(&mut sub, fresh)),
                    Err(e) => tracing::warn!(error = %e, "cannot subscribe to rooms again yet"),
                }
                continue;
            }
        }
        if flush_at.is_some_and(|at| at <= Instant::now()) || window.is_zero() {
            flush_at = None;
            let c = &shared.config;
            let budget = c
                .push_max_bytes
                .min(c.max_frame_bytes.saturating_sub(1024))
                .max(1);
            for (room, messages) in pending.drain() {
                for batch in frame_sized(&messages, budget) {
                    let (reached, dropped) =
                        shared.rooms.fan_out(&room, batch, c.compress_min_bytes);
                    metrics::ROOM_BATCHES.inc();
                    metrics::ROOM_FRAMES.add(reached);
                    metrics::ROOM_DROPPED.add(dropped);
                }
            }
        }
    }
}

/// `messages` cut into runs whose encoding fits `budget` bytes (a single
/// larger message still gets a run of its own).
fn frame_sized(messages: &[Message], budget: usize) -> Vec<&[Message]> {
    let mut runs = Vec::new();
    let (mut start, mut size) = (0, 0);
    for (i, m) in messages.iter().enumerate() {
        let len = m.encoded_len() + 4;
        if i > start && size + len > budget {
            runs.push(&messages[start..i]);
            (start, size) = (i, 0);
        }
        size += len;
    }
    if start < messages.len() {
        runs.push(&messages[start..]);
    }
    runs
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// Tells the route directory this gateway's viewer counts every `every`,
/// so the API can answer "how many watch this room" across gateways.
pub(crate) async fn report_viewers(shared: Arc<Shared>, mut shutdown: watch::Receiver<bool>) {
    let every = shared.config.room_report_every;
    // A report outlives two missed ones before it lapses.
    let ttl = every * 3;
    loop {
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = stopped(&mut shutdown) => return,
        }
        let counts = shared.rooms.counts();
        if let Err(e) = shared
            .deps
            .routes
            .report_room_viewers(&shared.config.node_id, &counts, ttl)
            .await
        {
            tracing::warn!(error = %e, "room viewer counts not reported");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn viewer(epoch: u64, codec: Codec, capacity: usize) -> (Viewer, mpsc::Receiver<RoomFrame>) {
        let (queue, rx) = mpsc::channel(capacity);
        (
            Viewer {
                epoch,
                codec,
                queue,
            },
            rx,
        )
    }

    fn msg(body: &str) -> Message {
        Message {
            body: body.as_bytes().to_vec().into(),
            ..Default::default()
        }
    }

    #[test]
    fn one_encoding_per_codec_shared_by_every_viewer() {
        let rooms = Rooms::default();
        let (a, mut rx_a) = viewer(1, Codec::Zstd, 4);
        let (b, mut rx_b) = viewer(7, Codec::Zstd, 4);
        let (c, mut rx_c) = viewer(1, Codec::None, 4);
        rooms.join("r", 1, a);
        rooms.join("r", 2, b);
        rooms.join("r", 3, c);
        assert_eq!(rooms.fan_out("r", &[msg("hi")], 0), (3, 0));
        let (fa, fb, fc) = (
            rx_a.try_recv().unwrap(),
            rx_b.try_recv().unwrap(),
            rx_c.try_recv().unwrap(),
        );
        // The very same allocation, not an equal copy.
        assert_eq!(fa.frame.as_ptr(), fb.frame.as_ptr());
        assert_ne!(fa.frame.as_ptr(), fc.frame.as_ptr());
        assert_eq!((fa.epoch, fb.epoch), (1, 7));
        assert_eq!(rooms.fan_out("elsewhere", &[msg("x")], 0), (0, 0));
    }

    #[test]
    fn a_full_viewer_queue_drops_without_affecting_others() {
        let rooms = Rooms::default();
        let (slow, _rx_slow) = viewer(1, Codec::None, 1);
        let (fast, mut rx_fast) = viewer(1, Codec::None, 8);
        rooms.join("r", 1, slow);
        rooms.join("r", 2, fast);
        assert_eq!(rooms.fan_out("r", &[msg("1")], 0), (2, 0));
        assert_eq!(rooms.fan_out("r", &[msg("2")], 0), (1, 1));
        assert_eq!(rx_fast.try_recv().iter().count(), 1);
        assert_eq!(rx_fast.try_recv().iter().count(), 1);
    }

    #[test]
    fn merged_batches_are_cut_to_the_frame_budget() {
        let messages: Vec<Message> = (0..10).map(|_| msg(&"x".repeat(100))).collect();
        let runs = frame_sized(&messages, 350);
        assert_eq!(
            runs.iter().map(|r| r.len()).collect::<Vec<_>>(),
            vec![3, 3, 3, 1]
        );
        assert_eq!(frame_sized(&messages[..1], 10).len(), 1);
        assert!(frame_sized(&[], 10).is_empty());
    }

    #[test]
    fn counts_report_an_emptied_room_once_as_zero() {
        let rooms = Rooms::default();
        let (a, _rx) = viewer(1, Codec::None, 1);
        rooms.join("r", 1, a);
        assert_eq!(rooms.counts(), vec![("r".to_string(), 1)]);
        rooms.leave("r", 1);
        assert_eq!(rooms.counts(), vec![("r".to_string(), 0)]);
        assert!(rooms.counts().is_empty());
    }
}
