//! The device's cursor writes, sans I/O: an ACK does not wait for its
//! write. One write is in flight at a time; ACKs arriving meanwhile are
//! written together (the highest) after it. The session holds the write's
//! future and tells this when it is done.

#[derive(Debug, Default)]
pub(super) struct CursorWrites {
    /// Highest cursor the device ACKed.
    acked: u64,
    /// Highest cursor whose write was started.
    writing: u64,
    in_flight: bool,
}

impl CursorWrites {
    pub fn acked(&mut self, cursor: u64) {
        self.acked = self.acked.max(cursor);
    }

    /// The cursor to write now, if one is due and none is in flight.
    pub fn next(&mut self) -> Option<u64> {
        if self.in_flight || self.acked <= self.writing {
            return None;
        }
        self.writing = self.acked;
        self.in_flight = true;
        Some(self.writing)
    }

    /// The write in flight finished (saved or not: a later ACK writes a
    /// higher cursor anyway).
    pub fn done(&mut self) {
        self.in_flight = false;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn acks_during_a_write_are_written_together_after_it() {
        let mut c = CursorWrites::default();
        assert_eq!(c.next(), None, "nothing ACKed");
        c.acked(5);
        assert_eq!(c.next(), Some(5));
        c.acked(7);
        c.acked(9);
        c.acked(8);
        assert_eq!(c.next(), None, "one write at a time");
        c.done();
        assert_eq!(c.next(), Some(9), "the highest, once");
        c.done();
        assert_eq!(c.next(), None);
        c.acked(3);
        assert_eq!(c.next(), None, "never back");
    }
}
