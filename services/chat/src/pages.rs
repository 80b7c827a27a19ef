//! How big a page may be. Every page, on the wire and in the API, is
//! bounded by a count and by bytes: a page of 100 messages of 64 KiB would
//! otherwise be 6.5 MB, more than stock gRPC clients accept (4 MiB).

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
