//! Flow control of one connection: when its socket is read, and where its
//! replies wait.
//!
//! A client is slowed down before it is punished. The session stops
//! reading the socket (so TCP backpressure reaches the client) while
//! - replies to its own requests wait for room in the outbound queue,
//! - it has `max_sends_in_flight` sends waiting for their receipt, or
//! - it has sent more frames than its per-second budget ([`ReadGate`]).
//!
//! Replies never overflow the queue: those that find it full wait in
//! [`Replies`], in order, and nothing more is read until they have gone
//! out. What they can number is bounded: one per send in flight (the
//! receipts) and one per frame read before the gate closed.
//! `SLOW_CONSUMER` is left for a client that stops reading altogether
//! (the writer's `write_timeout`).

use std::collections::VecDeque;
use std::time::Instant;

use bytes::Bytes;
use tern_chat::limits::{Rate, TokenBucket};
use tokio::sync::mpsc;

/// The per-second frame budget of one connection.
pub(super) struct ReadGate {
    rate: Rate,
    bucket: TokenBucket,
    /// Reading waits until then (the budget ran out).
    paused_until: Option<Instant>,
}

impl ReadGate {
    pub fn new(rate: Rate, now: Instant) -> Self {
        ReadGate {
            rate,
            bucket: TokenBucket::new(rate, now),
            paused_until: None,
        }
    }

    /// Counts a frame read at `now`; true if that overspent the budget and
    /// reading now pauses until the frame is paid for.
    pub fn on_frame(&mut self, now: Instant) -> bool {
        match self.bucket.spend(self.rate, now) {
            None => false,
            Some(wait) => {
                self.paused_until = Some(now + wait);
                true
            }
        }
    }

    /// Whether reading is paused at `now` (a pause that has run out ends).
    pub fn paused(&mut self, now: Instant) -> bool {
        match self.paused_until {
            Some(until) if now < until => true,
            Some(_) => {
                self.paused_until = None;
                false
            }
            None => false,
        }
    }

    /// When a pause ends, if reading is paused.
    pub fn resumes_at(&self) -> Option<Instant> {
        self.paused_until
    }
}

/// Replies waiting for room in the outbound queue, oldest first.
#[derive(Default)]
pub(super) struct Replies {
    waiting: VecDeque<Bytes>,
}

/// The socket's writer is gone.
#[derive(Debug)]
pub(super) struct WriterGone;

impl Replies {
    /// Sends `frame` to the outbound queue, or keeps it behind the replies
    /// already waiting (so replies keep their order).
    pub fn send(&mut self, out: &mpsc::Sender<Bytes>, frame: Bytes) -> Result<(), WriterGone> {
        if !self.waiting.is_empty() {
            self.waiting.push_back(frame);
            return Ok(());
        }
        match out.try_send(frame) {
            Ok(()) => Ok(()),
            Err(mpsc::error::TrySendError::Full(frame)) => {
                self.waiting.push_back(frame);
                Ok(())
            }
            Err(mpsc::error::TrySendError::Closed(_)) => Err(WriterGone),
        }
    }

    /// Moves waiting replies into the queue while it has room.
    pub fn drain(&mut self, out: &mpsc::Sender<Bytes>) {
        while let Some(frame) = self.waiting.pop_front() {
            if let Err(e) = out.try_send(frame) {
                let frame = match e {
                    mpsc::error::TrySendError::Full(f) | mpsc::error::TrySendError::Closed(f) => f,
                };
                self.waiting.push_front(frame);
                return;
            }
        }
    }

    pub fn is_empty(&self) -> bool {
        self.waiting.is_empty()
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.waiting.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn the_gate_pauses_past_the_budget_and_resumes_on_time() {
        let t0 = Instant::now();
        let mut gate = ReadGate::new(Rate::per_second(10.0, 2), t0);
        assert!(!gate.on_frame(t0));
        assert!(!gate.on_frame(t0));
        assert!(gate.on_frame(t0), "the third frame at once overspends");
        assert!(gate.paused(t0 + Duration::from_millis(50)));
        assert_eq!(gate.resumes_at(), Some(t0 + Duration::from_millis(100)));
        assert!(!gate.paused(t0 + Duration::from_millis(100)));
        assert_eq!(gate.resumes_at(), None);
        // Each frame after that is paid for before the next is read.
        assert!(gate.on_frame(t0 + Duration::from_millis(100)));
        assert_eq!(gate.resumes_at(), Some(t0 + Duration::from_millis(200)));
    }

    #[test]
    fn an_unlimited_gate_never_pauses() {
        let t0 = Instant::now();
        let mut gate = ReadGate::new(Rate::UNLIMITED, t0);
        for _ in 0..100_000 {
            assert!(!gate.on_frame(t0));
        }
    }

    #[test]
    fn replies_wait_in_order_for_room() {
        let (out, mut queue) = mpsc::channel(2);
        let mut replies = Replies::default();
        for i in 0..5u8 {
            replies.send(&out, Bytes::from(vec![i])).unwrap();
        }
        assert_eq!(replies.len(), 3, "two fit the queue, three wait");
        assert_eq!(queue.try_recv().unwrap()[0], 0);
        replies.drain(&out);
        assert_eq!(replies.len(), 2);
        let mut got = vec![queue.try_recv().unwrap()[0], queue.try_recv().unwrap()[0]];
        replies.drain(&out);
        while let Ok(b) = queue.try_recv() {
            got.push(b[0]);
        }
        assert_eq!(got, vec![1, 2, 3, 4], "in order, none lost");
        assert!(replies.is_empty());
        drop(queue);
        assert!(replies.send(&out, Bytes::new()).is_err());
    }
}
