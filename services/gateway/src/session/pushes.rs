//! What a connection has been pushed, sans I/O: the last inbox cursor
//! pushed, whether the inbox may hold more (`behind`), when to push next
//! (the merge window, or a retry), the frames not ACKed yet and when each
//! is re-sent, and a pending gap marker. The session reads the inbox and
//! writes the frames; this decides when and tracks what.

use std::collections::VecDeque;
use std::time::Duration;

use bytes::Bytes;
use tokio::time::Instant;

/// A push frame the client has not ACKed yet.
struct Unacked {
    last_cursor: u64,
    frame: Bytes,
    /// Last (re-)send: the next re-send is due `ack_timeout` after it.
    sent_at: Instant,
    /// First send, for the ACK latency metric (re-sends included in it).
    first_sent: Instant,
}

#[derive(Default)]
pub(super) struct Pushes {
    /// Last inbox cursor put in a push frame.
    pub last_pushed: u64,
    /// The inbox may hold entries after `last_pushed`.
    pub behind: bool,
    /// When to push what live deliveries announced (the merge window).
    flush_at: Option<Instant>,
    unacked: VecDeque<Unacked>,
    /// The next push tells the device that retention trimmed entries it
    /// had not received.
    gap_pending: bool,
}

/// An ACK of a cursor never pushed.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct BadAck {
    pub last_pushed: u64,
}

impl Pushes {
    /// Live deliveries up to `newest` arrived: push them once the merge
    /// window from now has passed (a window already open stays).
    pub fn delivered(&mut self, newest: u64, now: Instant, window: Duration) {
        if newest > self.last_pushed {
            self.behind = true;
            self.flush_at.get_or_insert(now + window);
        }
    }

    /// The inbox may hold what this connection missed: read it now.
    pub fn catch_up_now(&mut self, now: Instant) {
        self.behind = true;
        self.flush_at.get_or_insert(now);
    }

    /// Whether a push is due at `now`.
    pub fn due(&self, now: Instant) -> bool {
        self.flush_at.is_some_and(|at| now >= at)
    }

    /// Pushing starts: the window closes.
    pub fn start(&mut self) {
        self.flush_at = None;
    }

    /// Pushing stopped for a while (a store error): try again at `at`.
    pub fn retry_at(&mut self, at: Instant) {
        self.flush_at = Some(at);
    }

    /// Room for another frame: under the un-ACKed window.
    pub fn has_room(&self, max_unacked: usize) -> bool {
        self.unacked.len() < max_unacked
    }

    /// Pushing stopped for lack of room: an ACK restarts it, or, if no
    /// frame awaits one (the queue is full of replies), a timer.
    pub fn wait_for_room(&mut self, now: Instant, retry: Duration) {
        if self.unacked.is_empty() {
            self.flush_at = Some(now + retry);
        }
    }

    /// The next frame carries the gap marker.
    pub fn gap(&mut self) {
        self.gap_pending = true;
    }

    pub fn gap_pending(&self) -> bool {
        self.gap_pending
    }

    /// A frame covering the inbox up to `through` was sent at `now`.
    pub fn sent(&mut self, through: u64, frame: Bytes, now: Instant) {
        self.unacked.push_back(Unacked {
            last_cursor: through,
            frame,
            sent_at: now,
            first_sent: now,
        });
        self.last_pushed = through;
    }

    /// Takes the gap marker for the frame being built.
    pub fn take_gap(&mut self) -> bool {
        std::mem::take(&mut self.gap_pending)
    }

    /// The device ACKed `cursor`: the frames it covers are done; returns
    /// how long each took from its first send.
    pub fn ack(&mut self, cursor: u64, now: Instant) -> Result<Vec<Duration>, BadAck> {
        if cursor > self.last_pushed {
            return Err(BadAck {
                last_pushed: self.last_pushed,
            });
        }
        let mut latencies = Vec::new();
        self.unacked.retain(|u| {
            let covered = u.last_cursor <= cursor;
            if covered {
                latencies.push(now - u.first_sent);
            }
            !covered
        });
        Ok(latencies)
    }

    /// The frames due for a re-send at `now`. Only when the outbound queue
    /// is `drained`: a frame waiting there or in the socket is slow, not
    /// lost; otherwise its re-send is put off by another `ack_timeout`.
    pub fn resends(&mut self, now: Instant, ack_timeout: Duration, drained: bool) -> Vec<Bytes> {
        self.unacked
            .iter_mut()
            .filter(|u| now >= u.sent_at + ack_timeout)
            .filter_map(|u| {
                u.sent_at = now;
                drained.then(|| u.frame.clone())
            })
            .collect()
    }

    /// The next time something is due: a push, or a re-send.
    pub fn next_wake(&self, ack_timeout: Duration) -> Option<Instant> {
        let resend = self.unacked.iter().map(|u| u.sent_at + ack_timeout).min();
        match (self.flush_at, resend) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const WINDOW: Duration = Duration::from_millis(2);
    const ACK: Duration = Duration::from_secs(5);

    fn frame(n: u8) -> Bytes {
        Bytes::from(vec![n])
    }

    #[test]
    fn deliveries_open_one_merge_window() {
        let t0 = Instant::now();
        let mut p = Pushes::default();
        p.delivered(0, t0, WINDOW);
        assert!(!p.behind, "nothing newer than what was pushed");
        p.delivered(3, t0, WINDOW);
        p.delivered(4, t0 + Duration::from_millis(1), WINDOW);
        assert!(p.behind);
        assert!(!p.due(t0 + Duration::from_millis(1)));
        assert!(p.due(t0 + WINDOW), "the window of the first delivery");
        p.start();
        assert!(!p.due(t0 + WINDOW));
        p.catch_up_now(t0 + WINDOW);
        assert!(p.due(t0 + WINDOW), "a catch-up is due at once");
    }

    #[test]
    fn acks_clear_covered_frames_and_refuse_unpushed_cursors() {
        let t0 = Instant::now();
        let mut p = Pushes::default();
        p.sent(5, frame(1), t0);
        p.sent(9, frame(2), t0 + Duration::from_millis(10));
        assert!(!p.has_room(2));
        assert_eq!(p.ack(10, t0), Err(BadAck { last_pushed: 9 }));
        let latencies = p.ack(5, t0 + Duration::from_millis(30)).unwrap();
        assert_eq!(latencies, vec![Duration::from_millis(30)]);
        assert!(p.has_room(2));
        assert_eq!(p.ack(9, t0 + Duration::from_millis(40)).unwrap().len(), 1);
        assert_eq!(p.next_wake(ACK), None, "nothing left to re-send");
    }

    #[test]
    fn unacked_frames_are_resent_after_the_timeout_once_the_queue_drained() {
        let t0 = Instant::now();
        let mut p = Pushes::default();
        p.sent(5, frame(1), t0);
        assert_eq!(p.next_wake(ACK), Some(t0 + ACK));
        assert!(
            p.resends(t0 + ACK - Duration::from_millis(1), ACK, true)
                .is_empty()
        );
        assert!(
            p.resends(t0 + ACK, ACK, false).is_empty(),
            "queue not drained"
        );
        assert_eq!(p.next_wake(ACK), Some(t0 + 2 * ACK), "put off, not lost");
        assert_eq!(p.resends(t0 + 2 * ACK, ACK, true), vec![frame(1)]);
    }

    #[test]
    fn waiting_for_room_sets_a_timer_only_without_frames_awaiting_acks() {
        let t0 = Instant::now();
        let retry = Duration::from_millis(10);
        let mut p = Pushes::default();
        p.wait_for_room(t0, retry);
        assert_eq!(p.next_wake(ACK), Some(t0 + retry));
        let mut p = Pushes::default();
        p.sent(1, frame(1), t0);
        p.wait_for_room(t0, retry);
        assert_eq!(p.next_wake(ACK), Some(t0 + ACK), "the ACK restarts it");
    }

    #[test]
    fn the_gap_marker_goes_out_once() {
        let mut p = Pushes::default();
        p.gap();
        assert!(p.gap_pending());
        assert!(p.take_gap());
        assert!(!p.take_gap());
    }
}
