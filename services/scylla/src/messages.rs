//! Messages: bodies by id (`messages`), the sender's idempotency keys
//! (`idempotency`), each conversation's last seq (`conversation_heads`) and
//! its history bucketed by seq (`history`).

use futures_util::future::{try_join, try_join_all};
use scylla::client::session::Session;
use scylla::statement::prepared::PreparedStatement;
use tern_core::ids::MessageId;
use tern_core::store::{PutOutcome, StoreError, StoredMessage};

use crate::{ScyllaStore, cql};

/// Messages per history bucket.
const HISTORY_BUCKET: u64 = 10_000;

pub(crate) struct Statements {
    insert_message: PreparedStatement,
    select_message: PreparedStatement,
    select_idempotency: PreparedStatement,
    insert_idempotency: PreparedStatement,
    select_head: PreparedStatement,
    update_head: PreparedStatement,
    select_history_at: PreparedStatement,
    insert_history: PreparedStatement,
    select_history_page: PreparedStatement,
}

pub(crate) async fn prepare(s: &Session, keyspace: &str) -> Result<Statements, StoreError> {
    let p = |q| cql::prepare(s, keyspace, q);
    Ok(Statements {
        insert_message: p("INSERT INTO {ks}.messages (message_id, conversation, seq, sender_user, sender_device, client_msg_id, content_type, body, sent_at_ms) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) USING TTL ?").await?,
        select_message: p("SELECT message_id, conversation, seq, sender_user, sender_device, client_msg_id, content_type, body, sent_at_ms FROM {ks}.messages WHERE message_id = ?").await?,
        select_idempotency: p("SELECT message_id FROM {ks}.idempotency WHERE sender_user = ? AND client_msg_id = ?").await?,
        insert_idempotency: p("INSERT INTO {ks}.idempotency (sender_user, client_msg_id, message_id) VALUES (?, ?, ?) USING TTL ?").await?,
        select_head: p("SELECT last_seq FROM {ks}.conversation_heads WHERE conversation = ?").await?,
        update_head: p("UPDATE {ks}.conversation_heads SET last_seq = ? WHERE conversation = ?").await?,
        select_history_at: p("SELECT message_id FROM {ks}.history WHERE conversation = ? AND bucket = ? AND seq = ?").await?,
        insert_history: p("INSERT INTO {ks}.history (conversation, bucket, seq, message_id, sender_user, sender_device, client_msg_id, content_type, body, sent_at_ms) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?) USING TTL ?").await?,
        select_history_page: p("SELECT message_id, seq, sender_user, sender_device, client_msg_id, content_type, body, sent_at_ms FROM {ks}.history WHERE conversation = ? AND bucket = ? AND seq < ? LIMIT ?").await?,
    })
}

type MessageRow = (
    Vec<u8>,
    String,
    i64,
    String,
    String,
    String,
    String,
    Vec<u8>,
    i64,
);

/// A history row: message id, seq, then the message's fields (absent in
/// rows written before migration 005).
type HistoryRow = (
    Vec<u8>,
    i64,
    Option<String>,
    Option<String>,
    Option<String>,
    Option<String>,
    Option<Vec<u8>>,
    Option<i64>,
);

fn from_row(r: MessageRow) -> StoredMessage {
    StoredMessage {
        message_id: r.0.into(),
        conversation: r.1,
        seq: r.2 as u64,
        sender_user: r.3,
        sender_device: r.4,
        client_msg_id: r.5,
        content_type: r.6,
        body: r.7.into(),
        sent_at_ms: r.8 as u64,
    }
}

async fn message(store: &ScyllaStore, id: &[u8]) -> Result<Option<StoredMessage>, StoreError> {
    Ok(store
        .first::<MessageRow>("read message", &store.st.messages.select_message, (id,))
        .await?
        .map(from_row))
}

/// The last seq given in `conversation` (0: none yet).
pub(crate) async fn conversation_head(
    store: &ScyllaStore,
    conversation: &str,
) -> Result<u64, StoreError> {
    Ok(store
        .first::<(i64,)>(
            "read conversation head",
            &store.st.messages.select_head,
            (conversation,),
        )
        .await?
        .map_or(0, |(h,)| h as u64))
}

pub(crate) async fn put_messages(
    store: &ScyllaStore,
    messages: Vec<StoredMessage>,
) -> Result<Vec<PutOutcome>, StoreError> {
    // Conversations in parallel, each conversation's messages in order.
    let mut by_conversation: Vec<(String, Vec<(usize, StoredMessage)>)> = Vec::new();
    for (i, m) in messages.into_iter().enumerate() {
        match by_conversation
            .iter_mut()
            .find(|(c, _)| *c == m.conversation)
        {
            Some((_, list)) => list.push((i, m)),
            None => by_conversation.push((m.conversation.clone(), vec![(i, m)])),
        }
    }
    let done = try_join_all(by_conversation.into_iter().map(|(_, list)| async move {
        let mut out = Vec::with_capacity(list.len());
        for (i, m) in list {
            out.push((i, put_one(store, m).await?));
        }
        Ok::<_, StoreError>(out)
    }))
    .await?;
    let mut all: Vec<(usize, PutOutcome)> = done.into_iter().flatten().collect();
    all.sort_by_key(|(i, _)| *i);
    Ok(all.into_iter().map(|(_, o)| o).collect())
}

/// Stores one message; messages of one conversation must come one at a
/// time, in order (the caller guarantees it).
///
/// Write order, and what a replay after a crash between steps does:
/// 1. body (by id: rewriting it is harmless), and at the same time
/// 2. history row at `seq`;
/// 3. conversation head = `seq`;
/// 4. idempotency key.
///
/// A replay finds no idempotency key (step 4 is last) and recomputes
/// `seq`: if the head already points at this message (a crash after
/// step 3), it reuses the head instead of taking the next number.
async fn put_one(store: &ScyllaStore, mut m: StoredMessage) -> Result<PutOutcome, StoreError> {
    let s = &store.st.messages;
    // Both reads at once: the head is wasted only on a duplicate.
    let (existing, head) = try_join(
        store.first::<(Vec<u8>,)>(
            "read idempotency",
            &s.select_idempotency,
            (&m.sender_user, &m.client_msg_id),
        ),
        store.first::<(i64,)>("read conversation head", &s.select_head, (&m.conversation,)),
    )
    .await?;
    if let Some((id,)) = existing {
        let stored = message(store, &id).await?.ok_or_else(|| {
            StoreError::Corrupt(format!(
                "idempotency key points at missing message {:?}",
                MessageId::from_slice(&id)
            ))
        })?;
        return Ok(PutOutcome {
            message: stored,
            duplicate: true,
        });
    }
    let head = head.map_or(0, |(h,)| h as u64);
    let at_head: Option<(Vec<u8>,)> = if head > 0 {
        store
            .first(
                "read history",
                &s.select_history_at,
                (&m.conversation, (head / HISTORY_BUCKET) as i64, head as i64),
            )
            .await?
    } else {
        None
    };
    let seq = if at_head.is_some_and(|(id,)| id == m.message_id[..]) {
        head
    } else {
        head + 1
    };
    m.seq = seq;
    // Steps 1 and 2 together: a replay rewrites whichever is missing.
    let body = async {
        cql!(
            "write message",
            store.session.execute_unpaged(
                &s.insert_message,
                (
                    &m.message_id[..],
                    &m.conversation,
                    seq as i64,
                    &m.sender_user,
                    &m.sender_device,
                    &m.client_msg_id,
                    &m.content_type,
                    &m.body[..],
                    m.sent_at_ms as i64,
                    store.ttl
                ),
            )
        )
    };
    let history = async {
        cql!(
            "write history",
            store.session.execute_unpaged(
                &s.insert_history,
                (
                    &m.conversation,
                    (seq / HISTORY_BUCKET) as i64,
                    seq as i64,
                    &m.message_id[..],
                    &m.sender_user,
                    &m.sender_device,
                    &m.client_msg_id,
                    &m.content_type,
                    &m.body[..],
                    m.sent_at_ms as i64,
                    store.ttl
                )
            )
        )
    };
    try_join(body, history).await?;
    cql!(
        "write conversation head",
        store
            .session
            .execute_unpaged(&s.update_head, (seq as i64, &m.conversation))
    )?;
    cql!(
        "write idempotency",
        store.session.execute_unpaged(
            &s.insert_idempotency,
            (
                &m.sender_user,
                &m.client_msg_id,
                &m.message_id[..],
                store.ttl
            )
        )
    )?;
    Ok(PutOutcome {
        message: m,
        duplicate: false,
    })
}

pub(crate) async fn get_messages(
    store: &ScyllaStore,
    ids: &[MessageId],
) -> Result<Vec<StoredMessage>, StoreError> {
    let found = try_join_all(
        ids.iter()
            .map(|id| async move { message(store, &id.to_bytes()).await }),
    )
    .await?;
    Ok(found.into_iter().flatten().collect())
}

pub(crate) async fn history(
    store: &ScyllaStore,
    conversation: &str,
    before_seq: u64,
    limit: usize,
) -> Result<Vec<StoredMessage>, StoreError> {
    let before = if before_seq == 0 {
        conversation_head(store, conversation).await? + 1
    } else {
        before_seq
    };
    // Rows carry the message (migration 005); older rows only its id.
    let mut rows: Vec<HistoryRow> = Vec::new();
    if before > 1 {
        let mut bucket = ((before - 1) / HISTORY_BUCKET) as i64;
        while rows.len() < limit && bucket >= 0 {
            let want = (limit - rows.len()) as i32;
            let page: Vec<HistoryRow> = store
                .all(
                    "read history",
                    &store.st.messages.select_history_page,
                    (conversation, bucket, before as i64, want),
                )
                .await?;
            rows.extend(page);
            bucket -= 1;
        }
    }
    let found = try_join_all(rows.into_iter().map(|row| async move {
        match row {
            (
                id,
                seq,
                Some(sender_user),
                sender_device,
                client_msg_id,
                content_type,
                Some(body),
                sent_at_ms,
            ) => Ok(Some(StoredMessage {
                message_id: id.into(),
                conversation: conversation.to_owned(),
                seq: seq as u64,
                sender_user,
                sender_device: sender_device.unwrap_or_default(),
                client_msg_id: client_msg_id.unwrap_or_default(),
                content_type: content_type.unwrap_or_default(),
                body: body.into(),
                sent_at_ms: sent_at_ms.unwrap_or(0) as u64,
            })),
            (id, ..) => message(store, &id).await,
        }
    }))
    .await?;
    Ok(found.into_iter().flatten().collect())
}
