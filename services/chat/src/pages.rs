//! How big a page may be. Every page, on the wire and in the API, is
//! bounded by a count and by bytes: a page of 100 messages of 64 KiB would
//! otherwise be 6.5 MB, more than stock gRPC clients accept (4 MiB).

use tern_core::proto::client::Message;

/// Messages (or conversations, groups, members) in a page when the client
/// asks for 0.
pub const DEFAULT_PAGE: usize = 100;
/// Most items one page returns, whatever the client asks for.
pub const MAX_PAGE: usize = 1000;
/// Most bytes of messages in one API page: a quarter of what stock gRPC
/// clients accept, so the page and its envelope always fit. Wire pages are
/// bounded by the frame limit instead.
pub const MAX_API_PAGE_BYTES: usize = 1 << 20;

/// Messages read from the store at once while filling a page: a page of
/// large bodies stops near its byte bound instead of loading its whole
/// count first (at most this many bodies past the bound are read).
pub const READ_CHUNK: usize = 64;

/// The number of items a page holds for a requested `limit`.
pub fn page_limit(limit: u32) -> usize {
    match limit {
        0 => DEFAULT_PAGE,
        n => (n as usize).min(MAX_PAGE),
    }
}

/// A page of ids read with one extra (`limit + 1` asked): the page, and
/// where the next one starts (its last id; empty when there is none).
pub fn with_next(mut ids: Vec<String>, limit: usize) -> (Vec<String>, String) {
    if ids.len() > limit {
        ids.truncate(limit);
        let next = ids.last().cloned().unwrap_or_default();
        (ids, next)
    } else {
        (ids, String::new())
    }
}

/// A page of inbox messages being filled, sans I/O: the caller loads the
/// bodies of [`READ_CHUNK`] entries at a time while [`Self::wants_more`],
/// and [`Self::finish`] says what the page holds and the cursor it covers
/// through. The wire's sync pages and the API's inbox pages share it.
#[derive(Debug)]
pub struct InboxPageFill {
    max_bytes: usize,
    bytes: usize,
    messages: Vec<Message>,
    /// Cursor of the last entry looked at (bodies or not).
    covered: u64,
    after: u64,
}

impl InboxPageFill {
    /// A page after cursor `after`, of at most `max_bytes` of messages.
    pub fn new(after: u64, max_bytes: usize) -> Self {
        InboxPageFill {
            max_bytes,
            bytes: 0,
            messages: Vec::new(),
            covered: after,
            after,
        }
    }

    /// Whether another chunk of bodies may still fit.
    pub fn wants_more(&self) -> bool {
        self.bytes <= self.max_bytes
    }

    /// The bodies loaded for the entries up to cursor `through` (entries
    /// whose message expired have none).
    pub fn add(&mut self, through: u64, loaded: Vec<Message>) {
        self.bytes += loaded.iter().map(|m| m.body.len()).sum::<usize>();
        self.messages.extend(loaded);
        self.covered = self.covered.max(through);
    }

    /// The messages that fit, and the cursor to pass for the next page: if
    /// all fitted, every entry looked at (an entry whose message expired
    /// must not be asked for forever); else the last message that fitted.
    pub fn finish(self) -> (Vec<Message>, u64) {
        let total = self.messages.len();
        let messages = fitting_prefix(self.messages, self.max_bytes);
        let next = if messages.len() == total {
            self.covered
        } else {
            messages.last().map_or(self.after, |m| m.cursor)
        };
        (messages, next)
    }
}

/// The longest prefix of `items` whose encoding fits `max_bytes`: always
/// at least one item (a single oversized item still gets its page, within
/// the body limit, which is far below every frame and message limit).
pub fn fitting_prefix<T: prost::Message>(mut items: Vec<T>, max_bytes: usize) -> Vec<T> {
    let mut size = 0;
    let keep = items
        .iter()
        .position(|m| {
            size += m.encoded_len() + 4;
            size > max_bytes
        })
        .unwrap_or(items.len())
        .max(1);
    items.truncate(keep);
    items
}

#[cfg(test)]
mod tests {
    use super::*;
    use tern_core::proto::client::Message;

    fn msg(cursor: u64, body_len: usize) -> Message {
        Message {
            cursor,
            body: vec![b'x'; body_len].into(),
            ..Default::default()
        }
    }

    #[test]
    fn limits_default_and_cap() {
        assert_eq!(page_limit(0), DEFAULT_PAGE);
        assert_eq!(page_limit(7), 7);
        assert_eq!(page_limit(u32::MAX), MAX_PAGE);
    }

    #[test]
    fn an_inbox_page_covers_what_it_looked_at_or_stops_at_what_fitted() {
        // Every body fits: the page covers entries without bodies too.
        let mut fill = InboxPageFill::new(10, 1 << 20);
        fill.add(15, vec![msg(12, 10), msg(14, 10)]);
        assert!(fill.wants_more());
        let (messages, next) = fill.finish();
        assert_eq!((messages.len(), next), (2, 15));
        // Over the bound: the page ends at the last message that fitted.
        let mut fill = InboxPageFill::new(10, 250);
        fill.add(13, vec![msg(11, 100), msg(12, 100), msg(13, 100)]);
        assert!(!fill.wants_more());
        let (messages, next) = fill.finish();
        assert_eq!((messages.len(), next), (2, 12));
        // Nothing at all: the cursor stays.
        assert_eq!(InboxPageFill::new(10, 250).finish(), (vec![], 10));
    }

    #[test]
    fn an_extra_id_means_a_next_page() {
        let ids = |n: usize| (0..n).map(|i| format!("u{i}")).collect::<Vec<_>>();
        assert_eq!(with_next(ids(3), 2), (ids(2), "u1".to_string()));
        assert_eq!(with_next(ids(2), 2), (ids(2), String::new()));
    }

    #[test]
    fn a_page_stops_at_the_byte_limit() {
        let page = fitting_prefix((1..=10).map(|c| msg(c, 100)).collect(), 350);
        assert_eq!(
            page.iter().map(|m| m.cursor).collect::<Vec<_>>(),
            vec![1, 2, 3]
        );
        assert_eq!(
            fitting_prefix((1..=3).map(|c| msg(c, 1)).collect(), 1 << 20).len(),
            3
        );
    }

    #[test]
    fn an_oversized_item_still_gets_a_page() {
        assert_eq!(fitting_prefix(vec![msg(1, 1000)], 10).len(), 1);
        assert!(fitting_prefix(Vec::<Message>::new(), 10).is_empty());
    }
}
