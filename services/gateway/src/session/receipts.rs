//! The sends of one connection waiting for their receipt, sans I/O.
//!
//! A send is awaited from the moment it is appended until the persister's
//! receipt answers it or its deadline passes (then the client is told to
//! retry with the same id). A retry of a send still in flight is not
//! appended again: the one answer goes to every request for it, up to a
//! few. Deadlines are kept in order in a queue; answered sends leave their
//! entry behind, dropped once they outnumber the live ones.

use std::collections::{HashMap, VecDeque};
use std::time::Duration;

use tokio::time::Instant;

/// Requests one in-flight send answers (the first and its retries).
pub(super) const MAX_ANSWERS_PER_SEND: u32 = 8;

struct Awaiting {
    deadline: Instant,
    /// Send frames that asked for it (a retry while in flight counts).
    asked: u32,
    /// When the first arrived: for the receipt latency metric.
    received: Instant,
}

#[derive(Default)]
pub(super) struct Receipts {
    awaiting: HashMap<String, Awaiting>,
    /// client_msg_id by deadline; entries already answered are skipped.
    deadlines: VecDeque<(Instant, String)>,
}

/// What a retry of a send in flight gets.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Retry {
    /// Not in flight: a new send.
    New,
    /// Counted: the receipt will answer it too.
    Counted,
    /// Asked too often: answer it now.
    TooMany,
}

impl Receipts {
    /// Sends waiting for their receipt.
    pub fn len(&self) -> usize {
        self.awaiting.len()
    }

    /// Counts a send frame for `cmid` if that send is in flight.
    pub fn retry(&mut self, cmid: &str) -> Retry {
        match self.awaiting.get_mut(cmid) {
            None => Retry::New,
            Some(a) if a.asked < MAX_ANSWERS_PER_SEND => {
                a.asked += 1;
                Retry::Counted
            }
            Some(_) => Retry::TooMany,
        }
    }

    /// A send appended at `received`, answered by `received + timeout` at
    /// the latest.
    pub fn start(&mut self, cmid: String, received: Instant, timeout: Duration) {
        let deadline = received + timeout;
        self.deadlines.push_back((deadline, cmid.clone()));
        self.awaiting.insert(
            cmid,
            Awaiting {
                deadline,
                asked: 1,
                received,
            },
        );
    }

    /// Forgets a send being answered: how many requests asked for it and
    /// when the first arrived; None if it was answered already.
    pub fn answer(&mut self, cmid: &str) -> Option<(u32, Instant)> {
        let a = self.awaiting.remove(cmid)?;
        if self.deadlines.len() > 2 * self.awaiting.len() + 64 {
            let awaiting = &self.awaiting;
            self.deadlines
                .retain(|(at, id)| awaiting.get(id).is_some_and(|a| a.deadline == *at));
        }
        Some((a.asked, a.received))
    }

    /// When the next deadline is, if any send waits.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.deadlines.front().map(|(at, _)| *at)
    }

    /// The sends whose deadline passed by `now`, answered (forgotten) here:
    /// (client_msg_id, requests that asked for it).
    pub fn expired(&mut self, now: Instant) -> Vec<(String, u32)> {
        let mut out = Vec::new();
        while let Some((at, cmid)) = self.deadlines.pop_front() {
            if at > now {
                self.deadlines.push_front((at, cmid));
                break;
            }
            if self.awaiting.get(&cmid).is_some_and(|a| a.deadline == at)
                && let Some((asked, _)) = self.answer(&cmid)
            {
                out.push((cmid, asked));
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TIMEOUT: Duration = Duration::from_secs(10);

    #[test]
    fn a_receipt_answers_every_request_for_its_send_once() {
        let t0 = Instant::now();
        let mut r = Receipts::default();
        assert_eq!(r.retry("a"), Retry::New);
        r.start("a".into(), t0, TIMEOUT);
        assert_eq!(r.retry("a"), Retry::Counted);
        assert_eq!(r.answer("a"), Some((2, t0)));
        assert_eq!(r.answer("a"), None, "a replayed receipt answers nothing");
        assert_eq!(r.len(), 0);
    }

    #[test]
    fn retries_are_answered_a_bounded_number_of_times() {
        let mut r = Receipts::default();
        r.start("a".into(), Instant::now(), TIMEOUT);
        for _ in 1..MAX_ANSWERS_PER_SEND {
            assert_eq!(r.retry("a"), Retry::Counted);
        }
        assert_eq!(r.retry("a"), Retry::TooMany);
        assert_eq!(r.answer("a").unwrap().0, MAX_ANSWERS_PER_SEND);
    }

    #[test]
    fn deadlines_expire_in_order_and_skip_answered_sends() {
        let t0 = Instant::now();
        let mut r = Receipts::default();
        r.start("a".into(), t0, TIMEOUT);
        r.start("b".into(), t0 + Duration::from_secs(1), TIMEOUT);
        r.start("c".into(), t0 + Duration::from_secs(2), TIMEOUT);
        r.answer("b");
        assert_eq!(r.next_deadline(), Some(t0 + TIMEOUT));
        assert!(r.expired(t0 + Duration::from_secs(9)).is_empty());
        let due = r.expired(t0 + Duration::from_secs(11));
        assert_eq!(due, vec![("a".to_string(), 1)], "b was answered");
        assert_eq!(r.len(), 1);
        assert_eq!(
            r.expired(t0 + Duration::from_secs(12)),
            vec![("c".to_string(), 1)]
        );
        assert_eq!(r.next_deadline(), None);
    }

    #[test]
    fn a_send_retried_after_its_deadline_gets_a_new_one() {
        let t0 = Instant::now();
        let mut r = Receipts::default();
        r.start("a".into(), t0, TIMEOUT);
        assert_eq!(r.expired(t0 + TIMEOUT).len(), 1);
        r.start("a".into(), t0 + TIMEOUT, TIMEOUT);
        assert!(
            r.expired(t0 + TIMEOUT).is_empty(),
            "the old deadline is stale"
        );
        assert_eq!(r.len(), 1);
    }

    #[test]
    fn answered_deadlines_do_not_pile_up() {
        let t0 = Instant::now();
        let mut r = Receipts::default();
        for i in 0..10_000 {
            let id = format!("m{i}");
            r.start(id.clone(), t0, TIMEOUT);
            r.answer(&id);
        }
        assert!(r.deadlines.len() <= 65, "{}", r.deadlines.len());
    }
}
