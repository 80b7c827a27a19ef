//! Conversation lists: per user, each conversation's last message and read
//! mark (`user_conversations`).

use std::collections::HashMap;

use futures_util::future::try_join_all;
use scylla::client::session::Session;
use scylla::statement::prepared::PreparedStatement;
use tern_core::ids::MessageId;
use tern_core::store::{ConversationNote, ConversationState, StoreError, newest_first};

use crate::{ScyllaStore, cql, messages};

pub(crate) struct Statements {
    note_last: PreparedStatement,
    note_read: PreparedStatement,
    select_conversations: PreparedStatement,
    select_conversation: PreparedStatement,
}

pub(crate) async fn prepare(s: &Session, keyspace: &str) -> Result<Statements, StoreError> {
    let p = |q| cql::prepare(s, keyspace, q);
    Ok(Statements {
        note_last: p("UPDATE {ks}.user_conversations USING TIMESTAMP ? SET last_seq = ?, last_message_id = ? WHERE user_id = ? AND conversation = ?").await?,
        note_read: p("UPDATE {ks}.user_conversations USING TIMESTAMP ? SET read_seq = ? WHERE user_id = ? AND conversation = ?").await?,
        select_conversations: p("SELECT conversation, last_seq, last_message_id, read_seq FROM {ks}.user_conversations WHERE user_id = ?").await?,
        select_conversation: p("SELECT last_seq, read_seq FROM {ks}.user_conversations WHERE user_id = ? AND conversation = ?").await?,
    })
}

/// The read mark's write timestamp is its value: a lower mark written
/// later (a replay, a race between devices) loses to a higher one.
async fn write_read_seq(
    store: &ScyllaStore,
    user: &str,
    conversation: &str,
    seq: u64,
) -> Result<(), StoreError> {
    cql!(
        "write read mark",
        store.session.execute_unpaged(
            &store.st.conversations.note_read,
            (seq as i64, seq as i64, user, conversation)
        )
    )?;
    Ok(())
}

pub(crate) async fn note_conversations(
    store: &ScyllaStore,
    notes: Vec<ConversationNote>,
) -> Result<(), StoreError> {
    // Only the newest note per (user, conversation) needs writing.
    let mut newest: HashMap<(&str, &str), &ConversationNote> = HashMap::new();
    let mut read: HashMap<(&str, &str), u64> = HashMap::new();
    for n in &notes {
        let key = (n.user.as_str(), n.conversation.as_str());
        let slot = newest.entry(key).or_insert(n);
        if n.seq > slot.seq {
            *slot = n;
        }
        if n.sent_by_user {
            let r = read.entry(key).or_default();
            *r = (*r).max(n.seq);
        }
    }
    let last = newest.values().map(|n| {
        let id = n.message_id.to_bytes();
        let (user, conversation) = (n.user.as_str(), n.conversation.as_str());
        async move {
            cql!(
                "write conversation list",
                store.session.execute_unpaged(
                    &store.st.conversations.note_last,
                    (n.seq as i64, n.seq as i64, &id[..], user, conversation)
                )
            )
        }
    });
    try_join_all(last).await?;
    try_join_all(
        read.iter()
            .map(|(&(user, conversation), &seq)| write_read_seq(store, user, conversation, seq)),
    )
    .await?;
    Ok(())
}

pub(crate) async fn conversations(
    store: &ScyllaStore,
    user: &str,
    limit: usize,
) -> Result<Vec<ConversationState>, StoreError> {
    type Row = (String, Option<i64>, Option<Vec<u8>>, Option<i64>);
    let rows: Vec<Row> = store
        .all(
            "read conversation list",
            &store.st.conversations.select_conversations,
            (user,),
        )
        .await?;
    let mut list = Vec::with_capacity(rows.len());
    for (conversation, last_seq, last_id, read_seq) in rows {
        // A row with only a read mark (a large group) has last_seq 0.
        let (last_seq, last_message_id) = match (last_seq, last_id) {
            (Some(seq), Some(id)) => (seq as u64, cql::message_id(&id)?),
            _ => (0, MessageId(0)),
        };
        list.push(ConversationState {
            conversation,
            last_seq,
            last_message_id,
            read_seq: read_seq.unwrap_or(0) as u64,
        });
    }
    Ok(newest_first(list, limit))
}

pub(crate) async fn mark_read(
    store: &ScyllaStore,
    user: &str,
    conversation: &str,
    seq: u64,
) -> Result<u64, StoreError> {
    let (last_seq, read_seq) = store
        .first::<(Option<i64>, Option<i64>)>(
            "read conversation list",
            &store.st.conversations.select_conversation,
            (user, conversation),
        )
        .await?
        .map_or((0, 0), |(l, r)| {
            (l.unwrap_or(0) as u64, r.unwrap_or(0) as u64)
        });
    // Large groups skip inboxes: the conversation's own head bounds too.
    let head = messages::conversation_head(store, conversation).await?;
    let new = read_seq.max(seq.min(last_seq.max(head)));
    if new > read_seq {
        write_read_seq(store, user, conversation, new).await?;
    }
    Ok(new)
}
