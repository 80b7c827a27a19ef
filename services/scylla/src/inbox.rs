//! Inboxes: each user's entries bucketed by cursor (`inbox`), the buckets a
//! user has (`inbox_buckets`), the entry of each (user, message)
//! (`inbox_index`, which makes appends idempotent), entry counts
//! (`inbox_counts`) and how far an inbox is trimmed (`inbox_trims`).

use futures_util::future::{try_join, try_join_all};
use scylla::client::session::Session;
use scylla::statement::prepared::PreparedStatement;
use scylla::value::Counter;
use tern_core::store::{InboxEntry, InboxLimits, InboxPage, StoreError};

use crate::{ScyllaStore, cql};

/// Cursor values per inbox bucket (bits).
const INBOX_BUCKET_BITS: u32 = 20;
/// Inbox entries read per page while looking for what to trim.
const TRIM_PAGE: usize = 1000;
/// Most entries one trim deletes; the rest go next time.
const MAX_TRIM: usize = 20_000;

pub(crate) struct Statements {
    select_inbox_index: PreparedStatement,
    insert_inbox_index: PreparedStatement,
    insert_inbox: PreparedStatement,
    insert_inbox_bucket: PreparedStatement,
    select_inbox_buckets_from: PreparedStatement,
    select_last_inbox_bucket: PreparedStatement,
    select_inbox_page: PreparedStatement,
    select_last_inbox_cursor: PreparedStatement,
    select_inbox_buckets_desc: PreparedStatement,
    select_inbox_page_desc: PreparedStatement,
    add_inbox_count: PreparedStatement,
    select_inbox_count: PreparedStatement,
    select_trim: PreparedStatement,
    update_trim: PreparedStatement,
    delete_inbox: PreparedStatement,
    delete_inbox_index: PreparedStatement,
}

pub(crate) async fn prepare(s: &Session, keyspace: &str) -> Result<Statements, StoreError> {
    let p = |q| cql::prepare(s, keyspace, q);
    Ok(Statements {
        select_inbox_index: p("SELECT cursor FROM {ks}.inbox_index WHERE user_id = ? AND message_id = ?").await?,
        insert_inbox_index: p("INSERT INTO {ks}.inbox_index (user_id, message_id, cursor) VALUES (?, ?, ?) USING TTL ?").await?,
        insert_inbox: p("INSERT INTO {ks}.inbox (user_id, bucket, cursor, message_id, conversation) VALUES (?, ?, ?, ?, ?) USING TTL ?").await?,
        insert_inbox_bucket: p("INSERT INTO {ks}.inbox_buckets (user_id, bucket) VALUES (?, ?) USING TTL ?").await?,
        select_inbox_buckets_from: p("SELECT bucket FROM {ks}.inbox_buckets WHERE user_id = ? AND bucket >= ?").await?,
        select_last_inbox_bucket: p("SELECT bucket FROM {ks}.inbox_buckets WHERE user_id = ? ORDER BY bucket DESC LIMIT 1").await?,
        select_inbox_page: p("SELECT cursor, message_id, conversation FROM {ks}.inbox WHERE user_id = ? AND bucket = ? AND cursor > ? LIMIT ?").await?,
        select_last_inbox_cursor: p("SELECT cursor FROM {ks}.inbox WHERE user_id = ? AND bucket = ? ORDER BY cursor DESC LIMIT 1").await?,
        select_inbox_buckets_desc: p("SELECT bucket FROM {ks}.inbox_buckets WHERE user_id = ? AND bucket >= ? ORDER BY bucket DESC").await?,
        select_inbox_page_desc: p("SELECT cursor, message_id, conversation FROM {ks}.inbox WHERE user_id = ? AND bucket = ? AND cursor > ? ORDER BY cursor DESC LIMIT ?").await?,
        add_inbox_count: p("UPDATE {ks}.inbox_counts SET entry_count = entry_count + ? WHERE user_id = ?").await?,
        select_inbox_count: p("SELECT entry_count FROM {ks}.inbox_counts WHERE user_id = ?").await?,
        select_trim: p("SELECT trimmed_through FROM {ks}.inbox_trims WHERE user_id = ?").await?,
        update_trim: p("UPDATE {ks}.inbox_trims USING TIMESTAMP ? SET trimmed_through = ? WHERE user_id = ?").await?,
        delete_inbox: p("DELETE FROM {ks}.inbox WHERE user_id = ? AND bucket = ? AND cursor = ?").await?,
        delete_inbox_index: p("DELETE FROM {ks}.inbox_index WHERE user_id = ? AND message_id = ?").await?,
    })
}

pub(crate) async fn append_inbox(
    store: &ScyllaStore,
    entries: Vec<InboxEntry>,
) -> Result<Vec<u64>, StoreError> {
    // One user's entries in order (a repeat within the batch must see
    // the first), users in parallel.
    let mut by_user: Vec<(&str, Vec<(usize, &InboxEntry)>)> = Vec::new();
    for (i, e) in entries.iter().enumerate() {
        match by_user.iter_mut().find(|(u, _)| *u == e.user) {
            Some((_, list)) => list.push((i, e)),
            None => by_user.push((&e.user, vec![(i, e)])),
        }
    }
    let done = try_join_all(by_user.into_iter().map(|(user, list)| async move {
        let mut out = Vec::with_capacity(list.len());
        let mut added = 0i64;
        for (i, e) in list {
            let (cursor, new) = append_one(store, e).await?;
            added += i64::from(new);
            out.push((i, cursor));
        }
        // After the entries: a crash in between undercounts (the
        // replay finds the entries and adds nothing), never overcounts.
        if added > 0 {
            cql!(
                "count inbox entries",
                store
                    .session
                    .execute_unpaged(&store.st.inbox.add_inbox_count, (Counter(added), user))
            )?;
        }
        Ok::<_, StoreError>(out)
    }))
    .await?;
    let mut all: Vec<(usize, u64)> = done.into_iter().flatten().collect();
    all.sort_by_key(|(i, _)| *i);
    Ok(all.into_iter().map(|(_, c)| c).collect())
}

/// Appends one entry; returns its cursor and whether it is new.
async fn append_one(store: &ScyllaStore, e: &InboxEntry) -> Result<(u64, bool), StoreError> {
    let id = e.message_id.to_bytes();
    let s = &store.st.inbox;
    if let Some((c,)) = store
        .first::<(i64,)>(
            "read inbox index",
            &s.select_inbox_index,
            (&e.user, &id[..]),
        )
        .await?
    {
        return Ok((c as u64, false));
    }
    let bucket = (e.cursor >> INBOX_BUCKET_BITS) as i64;
    // Entry and bucket together; the index, which marks the entry
    // written for a replay, after both.
    let entry = async {
        cql!(
            "write inbox",
            store.session.execute_unpaged(
                &s.insert_inbox,
                (
                    &e.user,
                    bucket,
                    e.cursor as i64,
                    &id[..],
                    &e.conversation,
                    store.ttl
                )
            )
        )
    };
    let listed = async {
        cql!(
            "write inbox bucket",
            store
                .session
                .execute_unpaged(&s.insert_inbox_bucket, (&e.user, bucket, store.ttl))
        )
    };
    try_join(entry, listed).await?;
    cql!(
        "write inbox index",
        store.session.execute_unpaged(
            &s.insert_inbox_index,
            (&e.user, &id[..], e.cursor as i64, store.ttl)
        )
    )?;
    Ok((e.cursor, true))
}

async fn inbox_head(store: &ScyllaStore, user: &str) -> Result<u64, StoreError> {
    let Some((bucket,)) = store
        .first::<(i64,)>(
            "read inbox buckets",
            &store.st.inbox.select_last_inbox_bucket,
            (user,),
        )
        .await?
    else {
        return Ok(0);
    };
    Ok(store
        .first::<(i64,)>(
            "read inbox head",
            &store.st.inbox.select_last_inbox_cursor,
            (user, bucket),
        )
        .await?
        .map_or(0, |(c,)| c as u64))
}

/// Which end of an inbox a scan starts from.
#[derive(Clone, Copy)]
enum Scan {
    OldestFirst,
    NewestFirst,
}

/// Up to `limit` entries of `user`'s inbox after `after`, bucket by
/// bucket (only buckets that hold entries), from either end.
async fn scan_inbox(
    store: &ScyllaStore,
    user: &str,
    after: u64,
    limit: usize,
    from: Scan,
) -> Result<Vec<InboxEntry>, StoreError> {
    let s = &store.st.inbox;
    let (buckets_st, page_st) = match from {
        Scan::OldestFirst => (&s.select_inbox_buckets_from, &s.select_inbox_page),
        Scan::NewestFirst => (&s.select_inbox_buckets_desc, &s.select_inbox_page_desc),
    };
    let from_bucket = ((after + 1) >> INBOX_BUCKET_BITS) as i64;
    let buckets: Vec<(i64,)> = store
        .all("read inbox buckets", buckets_st, (user, from_bucket))
        .await?;
    let mut entries = Vec::new();
    for (bucket,) in buckets {
        let want = (limit - entries.len()) as i32;
        let rows: Vec<(i64, Vec<u8>, String)> = store
            .all("read inbox", page_st, (user, bucket, after as i64, want))
            .await?;
        for (cursor, id, conversation) in rows {
            entries.push(InboxEntry {
                user: user.to_owned(),
                cursor: cursor as u64,
                message_id: cql::message_id(&id)?,
                conversation,
            });
        }
        if entries.len() >= limit {
            break;
        }
    }
    Ok(entries)
}

pub(crate) async fn read_inbox(
    store: &ScyllaStore,
    user: &str,
    after: u64,
    limit: usize,
) -> Result<InboxPage, StoreError> {
    let head = inbox_head(store, user).await?;
    if after >= head || limit == 0 {
        return Ok(InboxPage {
            entries: Vec::new(),
            head,
        });
    }
    let entries = scan_inbox(store, user, after, limit, Scan::OldestFirst).await?;
    Ok(InboxPage { entries, head })
}

pub(crate) async fn read_inbox_newest(
    store: &ScyllaStore,
    user: &str,
    after: u64,
    limit: usize,
) -> Result<Vec<InboxEntry>, StoreError> {
    if after >= i64::MAX as u64 || limit == 0 {
        return Ok(Vec::new());
    }
    scan_inbox(store, user, after, limit, Scan::NewestFirst).await
}

pub(crate) async fn trim_inbox(
    store: &ScyllaStore,
    user: &str,
    limits: InboxLimits,
) -> Result<u64, StoreError> {
    let s = &store.st.inbox;
    let trimmed = trimmed_through(store, user).await?;
    let count = store
        .first::<(Option<Counter>,)>("read inbox count", &s.select_inbox_count, (user,))
        .await?
        .and_then(|(c,)| c)
        .map_or(0, |c| c.0.max(0) as u64);
    let excess = count.saturating_sub(limits.max_entries) as usize;
    // Oldest first, from the trim point (older rows are deleted already).
    // A young entry ends the age trim: entries are in arrival order.
    let mut doomed: Vec<InboxEntry> = Vec::new();
    let mut after = trimmed;
    // Without excess, one entry tells whether the oldest is too old.
    let mut page = if excess > 0 { TRIM_PAGE } else { 1 };
    'scan: while doomed.len() < MAX_TRIM {
        let entries = scan_inbox(store, user, after, page, Scan::OldestFirst).await?;
        let Some(last) = entries.last() else { break };
        after = last.cursor;
        let full = entries.len() == page;
        for e in entries {
            if doomed.len() >= excess && e.message_id.time_ms() >= limits.min_time_ms {
                break 'scan;
            }
            doomed.push(e);
        }
        if !full {
            break;
        }
        page = TRIM_PAGE;
    }
    let Some(last) = doomed.last().map(|e| e.cursor) else {
        return Ok(trimmed);
    };
    for chunk in doomed.chunks(64) {
        try_join_all(chunk.iter().map(|e| async move {
            let bucket = (e.cursor >> INBOX_BUCKET_BITS) as i64;
            let id = e.message_id.to_bytes();
            cql!(
                "trim inbox",
                store
                    .session
                    .execute_unpaged(&s.delete_inbox, (user, bucket, e.cursor as i64))
            )?;
            cql!(
                "trim inbox index",
                store
                    .session
                    .execute_unpaged(&s.delete_inbox_index, (user, &id[..]))
            )
        }))
        .await?;
    }
    cql!(
        "count inbox entries",
        store
            .session
            .execute_unpaged(&s.add_inbox_count, (Counter(-(doomed.len() as i64)), user))
    )?;
    cql!(
        "write trim point",
        store
            .session
            .execute_unpaged(&s.update_trim, (last as i64, last as i64, user))
    )?;
    Ok(trimmed.max(last))
}

pub(crate) async fn trimmed_through(store: &ScyllaStore, user: &str) -> Result<u64, StoreError> {
    Ok(store
        .first::<(Option<i64>,)>("read trim point", &store.st.inbox.select_trim, (user,))
        .await?
        .and_then(|(t,)| t)
        .unwrap_or(0) as u64)
}
