//! A session's reading side beyond live pushes: the login push of a long
//! backlog (newest first), history pages, the conversation list and read
//! marks.
//!
//! A device back after a long absence may have 100,000 pending messages.
//! Pushing them all, oldest first, would make the user wait for messages
//! they will mostly never scroll to. So when more than `login_push_max` are
//! pending, the login push carries only the newest of them (at most
//! `login_push_per_conversation` per conversation, so one busy group does
//! not crowd out every 1:1), flagged `older_not_pushed`; once ACKed, the
//! device's cursor is past the whole backlog. The rest stays readable
//! through history pages, per conversation, newest first: exactly what a
//! client shows when the user scrolls up, and no message is both pushed
//! and paged (a page before the oldest pushed seq starts below it).

use std::collections::HashMap;

use prost::Message as _;

use tern_chat::ChatError;
use tern_chat::access::{Actor, history_page, read_access};
use tern_chat::conversations::conversation_page;
use tern_chat::pages::page_limit;
use tern_core::proto::client::{
    ConversationList, ConversationsRequest, HistoryPage, HistoryRequest, MarkRead, MarkReadResult,
    Message, server_frame,
};
use tern_core::store::InboxEntry;

use super::{BODY_BATCH, Close, LoggedIn, Session, frame_budget};

/// Inbox entries looked at, per message the login push may carry, to find
/// the newest per conversation (ids only: bodies are read for the chosen)...
const LOGIN_SCAN_FACTOR: usize = 4;
/// ...and at least this many, so that the conversations of a long backlog
/// are all in the push unless one is quieter than the newest 20,000 pending
/// entries. Those are still in the conversation list, with their unread
/// counts. Reading 20,000 ids is a few milliseconds embedded.
const LOGIN_SCAN_MIN: usize = 20_000;

/// Which of the newest entries (newest first) the login push carries: all
/// of them if they are at most `max`; else at most `max`, and at most
/// `per_conversation` of one conversation. Returns them oldest first, and
/// whether any pending entry was left out.
pub(super) fn choose_login_push(
    newest: &[InboxEntry],
    scanned_all: bool,
    max: usize,
    per_conversation: usize,
) -> (Vec<InboxEntry>, bool) {
    if scanned_all && newest.len() <= max {
        // A short absence: everything, as ordinary pushes.
        return (newest.iter().rev().cloned().collect(), false);
    }
    let mut per: HashMap<&str, usize> = HashMap::new();
    let mut chosen = Vec::new();
    for e in newest {
        if chosen.len() >= max {
            break;
        }
        let n = per.entry(e.conversation.as_str()).or_default();
        if *n < per_conversation {
            *n += 1;
            chosen.push(e.clone());
        }
    }
    let left_out = !scanned_all || chosen.len() < newest.len();
    chosen.reverse();
    (chosen, left_out)
}

/// Splits messages into frames of at most `max_bytes` of encoded messages
/// and `max_messages` messages (an oversized message gets a frame alone).
pub(super) fn pack_frames(
    messages: Vec<Message>,
    max_bytes: usize,
    max_messages: usize,
) -> Vec<Vec<Message>> {
    let mut frames = Vec::new();
    let mut frame: Vec<Message> = Vec::new();
    let mut bytes = 0;
    for m in messages {
        let len = m.encoded_len() + 4;
        if !frame.is_empty() && (bytes + len > max_bytes || frame.len() >= max_messages) {
            frames.push(std::mem::take(&mut frame));
            bytes = 0;
        }
        bytes += len;
        frame.push(m);
    }
    if !frame.is_empty() {
        frames.push(frame);
    }
    frames
}

impl Session {
    /// Starts pushing after login from `cursor`: the whole backlog if it is
    /// short, else its newest part (see the module docs).
    pub(super) async fn login_push(&mut self, login: &LoggedIn, cursor: u64) -> Result<(), Close> {
        let c = self.shared.config.clone();
        let user = login.user.clone();
        let store = self.shared.deps.store.clone();
        // Retention first, exactly at login: a device behind the trim
        // point starts from it and is told it missed entries.
        let limits = c.inbox_retention.limits_at(tern_core::now_ms());
        let trimmed = match store.trim_inbox(&user, limits).await {
            Ok(t) => t,
            Err(e) => {
                tracing::warn!(%user, error = %e, "inbox trim failed at login");
                store.trimmed_through(&user).await.unwrap_or(0)
            }
        };
        let cursor = if cursor < trimmed {
            tracing::info!(%user, cursor, trimmed, "device behind the inbox trim point: gap");
            self.pushes.gap();
            trimmed
        } else {
            cursor
        };
        self.pushes.last_pushed = cursor;
        self.pushes.behind = true;
        self.newest_first(login, cursor).await?;
        if self.pushes.gap_pending() && !self.pushes.behind {
            // Nothing left to push: an empty push carries the news.
            self.push(Vec::new(), cursor, false, false)?;
        }
        Ok(())
    }

    /// The login push proper: the whole backlog after `cursor` if it is
    /// short, else its newest part.
    async fn newest_first(&mut self, login: &LoggedIn, cursor: u64) -> Result<(), Close> {
        let user = login.user.as_str();
        let c = self.shared.config.clone();
        if c.login_push_max == 0 {
            return self.catch_up(login).await;
        }
        let store = self.shared.deps.store.clone();
        let scan = c
            .login_push_max
            .saturating_mul(LOGIN_SCAN_FACTOR)
            .max(LOGIN_SCAN_MIN);
        let newest = match store.read_inbox_newest(user, cursor, scan + 1).await {
            Ok(n) => n,
            // The ordinary path retries store errors.
            Err(_) => return self.catch_up(login).await,
        };
        let scanned_all = newest.len() <= scan;
        let newest = &newest[..newest.len().min(scan)];
        let (chosen, left_out) = choose_login_push(
            newest,
            scanned_all,
            c.login_push_max,
            c.login_push_per_conversation,
        );
        if !left_out {
            return self.catch_up(login).await;
        }
        let head = newest.first().map_or(cursor, |e| e.cursor);
        let mut messages = Vec::with_capacity(chosen.len());
        for chunk in chosen.chunks(BODY_BATCH) {
            match self.shared.bodies.load(store.as_ref(), chunk).await {
                Ok(m) => messages.extend(m),
                Err(_) => return self.catch_up(login).await,
            }
        }
        let frames = pack_frames(messages, frame_budget(&c), c.push_max_messages);
        let count = frames.len();
        tracing::info!(
            user,
            cursor,
            head,
            pushed = chosen.len(),
            frames = count,
            "long backlog: pushing its newest messages, the rest is left to history pages"
        );
        if count == 0 {
            // Every chosen message had expired: only the cursor moves.
            self.push(Vec::new(), head, false, true)?;
        }
        for (i, frame) in frames.into_iter().enumerate() {
            let last = i + 1 == count;
            // The last frame covers the whole backlog, up to its newest entry.
            let through = if last {
                head
            } else {
                frame.last().map_or(head, |m| m.cursor)
            };
            self.push(frame, through, !last, true)?;
        }
        self.pushes.behind = false;
        Ok(())
    }

    pub(super) async fn on_history(
        &mut self,
        login: &LoggedIn,
        req: HistoryRequest,
    ) -> Result<(), Close> {
        let (user, codec) = (login.user.clone(), login.codec);
        let store = self.shared.deps.store.clone();
        let c = self.shared.config.clone();
        let read = async {
            let access = read_access(store.as_ref(), &Actor::User(user), &req.conversation).await?;
            let page = history_page(
                store.as_ref(),
                &access,
                req.before_seq,
                page_limit(req.limit),
                frame_budget(&c),
            )
            .await?;
            Ok::<_, ChatError>((access.conversation.to_string(), page))
        };
        let (conversation, page) = match read.await {
            Ok(read) => read,
            Err(e) => return self.refuse(e.into_refusal(), "", req.request_id),
        };
        let next_before_seq = page.messages.last().map_or(req.before_seq, |m| m.seq);
        let (used, payload) = tern_wire::pack_batch(page.messages, codec, c.compress_min_bytes);
        self.emit(server_frame::Kind::HistoryPage(HistoryPage {
            request_id: req.request_id,
            conversation,
            codec: used as i32,
            payload,
            next_before_seq,
            has_more: page.has_more,
        }))
    }

    pub(super) async fn on_conversations(
        &mut self,
        login: &LoggedIn,
        req: ConversationsRequest,
    ) -> Result<(), Close> {
        let user = login.user.clone();
        let now = tokio::time::Instant::now().into_std();
        if let Err(r) = self.shared.limits.costly.list(&user, now) {
            crate::metrics::GATEWAY_LIMITED.inc("list_reads");
            return self.refuse(r, "", req.request_id);
        }
        let store = self.shared.deps.store.clone();
        let budget = frame_budget(&self.shared.config);
        let page = conversation_page(
            store.as_ref(),
            &user,
            &req.before,
            page_limit(req.limit),
            budget,
        )
        .await;
        match page {
            Ok(page) => self.emit(server_frame::Kind::ConversationList(ConversationList {
                request_id: req.request_id,
                conversations: page.conversations,
                next: page.next.into(),
            })),
            Err(e) => self.refuse(e.into_refusal(), "", req.request_id),
        }
    }

    pub(super) async fn on_mark_read(
        &mut self,
        login: &LoggedIn,
        req: MarkRead,
    ) -> Result<(), Close> {
        let user = login.user.clone();
        let store = self.shared.deps.store.clone();
        let marked = async {
            let access = read_access(
                store.as_ref(),
                &Actor::User(user.clone()),
                &req.conversation,
            )
            .await?;
            let conversation = access.conversation.to_string();
            let read_seq = store.mark_read(&user, &conversation, req.seq).await?;
            Ok::<_, ChatError>((conversation, read_seq))
        };
        match marked.await {
            Ok((conversation, read_seq)) => {
                self.emit(server_frame::Kind::MarkReadResult(MarkReadResult {
                    request_id: req.request_id,
                    conversation,
                    read_seq,
                }))
            }
            Err(e) => self.refuse(e.into_refusal(), "", req.request_id),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tern_core::ids::MessageId;

    fn entry(cursor: u64, conversation: &str) -> InboxEntry {
        InboxEntry {
            user: "bob".into(),
            cursor,
            message_id: MessageId::new(),
            conversation: conversation.into(),
        }
    }

    fn cursors(entries: &[InboxEntry]) -> Vec<u64> {
        entries.iter().map(|e| e.cursor).collect()
    }

    #[test]
    fn the_login_push_takes_the_newest_within_both_limits() {
        // Newest first, as the store returns them.
        let newest = vec![
            entry(9, "a"),
            entry(8, "a"),
            entry(7, "a"),
            entry(6, "b"),
            entry(5, "a"),
            entry(4, "c"),
        ];
        let (chosen, left_out) = choose_login_push(&newest, true, 4, 2);
        assert_eq!(cursors(&chosen), vec![4, 6, 8, 9], "oldest first");
        assert!(left_out);
        let (chosen, left_out) = choose_login_push(&newest, true, 6, 1);
        assert_eq!(cursors(&chosen), vec![4, 5, 6, 7, 8, 9]);
        assert!(
            !left_out,
            "everything fits: an ordinary push, whatever the conversation"
        );
        let (_, left_out) = choose_login_push(&newest, false, 10, 10);
        assert!(left_out, "entries beyond the scan were not looked at");
    }

    #[test]
    fn frames_respect_bytes_and_counts() {
        let m = |cursor| Message {
            cursor,
            body: vec![0; 100].into(),
            ..Default::default()
        };
        let frames = pack_frames((1..=10).map(m).collect(), 350, 100);
        assert!(frames.iter().all(|f| f.len() <= 3), "{frames:?}");
        assert_eq!(frames.iter().map(Vec::len).sum::<usize>(), 10);
        let frames = pack_frames((1..=10).map(m).collect(), 1 << 20, 4);
        assert_eq!(
            frames.iter().map(Vec::len).collect::<Vec<_>>(),
            vec![4, 4, 2]
        );
        assert!(pack_frames(Vec::new(), 10, 10).is_empty());
    }
}
