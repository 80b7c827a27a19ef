//! Dropping re-sent pushes.
//!
//! The gateway re-sends a push that was not ACKed in time, so the same
//! messages can arrive twice. Every pushed message carries its position in
//! the user's inbox (its cursor), and cursors only grow, so remembering the
//! highest cursor handed to the application is enough to drop repeats.

use tern_proto::client::Message;

/// The highest inbox cursor handed to the application on this connection.
#[derive(Debug, Clone)]
pub struct CursorDedup {
    /// Starts at the device's cursor from `LoginResult`: everything up to it
    /// is already stored on the device.
    delivered: u64,
}

impl CursorDedup {
    pub fn new(login_cursor: u64) -> Self {
        CursorDedup {
            delivered: login_cursor,
        }
    }

    /// The highest cursor handed out so far.
    pub fn delivered(&self) -> u64 {
        self.delivered
    }

    /// Keeps the messages of a push that were not handed out before (cursor
    /// above everything seen). Returns `None` when the push brings nothing
    /// new: no new message and a `last_cursor` already passed. A push whose
    /// messages are all old but whose `last_cursor` moves forward is still
    /// returned (empty), so the application ACKs it and the gateway stops
    /// re-sending it.
    pub fn admit(&mut self, last_cursor: u64, messages: Vec<Message>) -> Option<Vec<Message>> {
        let before = self.delivered;
        let mut fresh = Vec::with_capacity(messages.len());
        for message in messages {
            if message.cursor > self.delivered {
                self.delivered = message.cursor;
                fresh.push(message);
            }
        }
        self.delivered = self.delivered.max(last_cursor);
        if fresh.is_empty() && self.delivered == before {
            return None;
        }
        Some(fresh)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msgs(cursors: &[u64]) -> Vec<Message> {
        cursors
            .iter()
            .map(|&cursor| Message {
                cursor,
                seq: cursor,
                ..Default::default()
            })
            .collect()
    }

    fn cursors(messages: &[Message]) -> Vec<u64> {
        messages.iter().map(|m| m.cursor).collect()
    }

    #[test]
    fn new_messages_pass_and_a_resent_push_is_dropped() {
        let mut d = CursorDedup::new(0);
        assert_eq!(cursors(&d.admit(3, msgs(&[1, 2, 3])).unwrap()), [1, 2, 3]);
        assert_eq!(d.delivered(), 3);
        assert!(d.admit(3, msgs(&[1, 2, 3])).is_none());
        assert_eq!(cursors(&d.admit(5, msgs(&[4, 5])).unwrap()), [4, 5]);
    }

    #[test]
    fn an_overlapping_push_keeps_only_the_new_tail() {
        let mut d = CursorDedup::new(0);
        d.admit(3, msgs(&[1, 2, 3]));
        assert_eq!(
            cursors(&d.admit(6, msgs(&[2, 3, 4, 5, 6])).unwrap()),
            [4, 5, 6]
        );
        assert_eq!(d.delivered(), 6);
    }

    #[test]
    fn messages_at_or_below_the_login_cursor_are_already_stored() {
        let mut d = CursorDedup::new(10);
        assert!(d.admit(10, msgs(&[9, 10])).is_none());
        assert_eq!(cursors(&d.admit(11, msgs(&[10, 11])).unwrap()), [11]);
    }

    #[test]
    fn repeats_inside_one_batch_are_dropped() {
        let mut d = CursorDedup::new(0);
        assert_eq!(
            cursors(&d.admit(3, msgs(&[1, 2, 2, 3, 1])).unwrap()),
            [1, 2, 3]
        );
    }

    #[test]
    fn a_push_that_only_moves_the_cursor_is_still_handed_out() {
        let mut d = CursorDedup::new(5);
        // Inbox entries 6..=8 were trimmed: nothing to show, but the cursor moves.
        assert_eq!(d.admit(8, Vec::new()).unwrap().len(), 0);
        assert_eq!(d.delivered(), 8);
        assert!(d.admit(8, Vec::new()).is_none());
        assert!(d.admit(7, msgs(&[7])).is_none());
    }
}
