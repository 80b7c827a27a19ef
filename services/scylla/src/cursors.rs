//! Cursors: how far each device of a user has read its inbox
//! (`device_cursors`, and `cursors` as written before migration 006).

use futures_util::future::try_join;
use scylla::client::session::Session;
use scylla::statement::prepared::PreparedStatement;
use tern_core::store::StoreError;

use crate::{ScyllaStore, cql};

pub(crate) struct Statements {
    select_cursor: PreparedStatement,
    select_device_cursor: PreparedStatement,
    write_device_cursor: PreparedStatement,
}

pub(crate) async fn prepare(s: &Session, keyspace: &str) -> Result<Statements, StoreError> {
    let p = |q| cql::prepare(s, keyspace, q);
    Ok(Statements {
        select_cursor: p("SELECT cursor FROM {ks}.cursors WHERE user_id = ? AND device = ?").await?,
        select_device_cursor: p("SELECT cursor FROM {ks}.device_cursors WHERE user_id = ? AND device = ?").await?,
        write_device_cursor: p("UPDATE {ks}.device_cursors USING TIMESTAMP ? SET cursor = ? WHERE user_id = ? AND device = ?").await?,
    })
}

pub(crate) async fn cursor(
    store: &ScyllaStore,
    user: &str,
    device: &str,
) -> Result<u64, StoreError> {
    let s = &store.st.cursors;
    // The pre-006 table too, for devices that last ACKed before it.
    let (now, before) = try_join(
        store.first::<(i64,)>("read cursor", &s.select_device_cursor, (user, device)),
        store.first::<(i64,)>("read old cursor", &s.select_cursor, (user, device)),
    )
    .await?;
    Ok([now, before]
        .into_iter()
        .flatten()
        .map(|(c,)| c as u64)
        .max()
        .unwrap_or(0))
}

pub(crate) async fn advance_cursor(
    store: &ScyllaStore,
    user: &str,
    device: &str,
    cursor: u64,
) -> Result<(), StoreError> {
    // No read: with the cursor as the write's timestamp, the largest
    // cursor written wins, whatever order the writes arrive in.
    cql!(
        "write cursor",
        store.session.execute_unpaged(
            &store.st.cursors.write_device_cursor,
            (cursor as i64, cursor as i64, user, device)
        )
    )?;
    Ok(())
}
