//! What every table module shares: the `cql!` error mapping, preparing a
//! statement, and running one for its first row or all its rows.

use scylla::client::session::Session;
use scylla::statement::prepared::PreparedStatement;
use tern_core::ids::MessageId;
use tern_core::store::StoreError;

use crate::ScyllaStore;

/// Runs one statement (or batch: one round trip), counted in
/// `tern_cql_statements_total`; maps any driver error to "unavailable",
/// naming the operation.
macro_rules! cql {
    ($what:expr, $e:expr) => {{
        tern_core::metrics::CQL_STATEMENTS.inc();
        $e.await
            .map_err(|e| StoreError::Unavailable(format!("{}: {e}", $what)))
    }};
}

/// Prepares `q` with `{ks}` replaced by the keyspace.
///
/// Table names qualified with the keyspace: prepared statements that lean
/// on `USE` are ambiguous (and Cassandra warns about each).
pub(crate) async fn prepare(
    s: &Session,
    keyspace: &str,
    q: &'static str,
) -> Result<PreparedStatement, StoreError> {
    let q = q.replace("{ks}", keyspace);
    s.prepare(q.clone())
        .await
        .map_err(|e| StoreError::Unavailable(format!("prepare {q:?}: {e}")))
}

/// A message id read back from a blob column.
pub(crate) fn message_id(id: &[u8]) -> Result<MessageId, StoreError> {
    MessageId::from_slice(id)
        .ok_or_else(|| StoreError::Corrupt("stored message id is not 16 bytes".into()))
}

fn rows_err(e: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt(format!("unexpected row shape: {e}"))
}

impl ScyllaStore {
    pub(crate) async fn first<R>(
        &self,
        what: &str,
        st: &PreparedStatement,
        values: impl scylla::serialize::row::SerializeRow,
    ) -> Result<Option<R>, StoreError>
    where
        R: for<'f> scylla::deserialize::row::DeserializeRow<'f, 'f>,
    {
        let result = cql!(what, self.session.execute_unpaged(st, values))?;
        result
            .into_rows_result()
            .map_err(rows_err)?
            .maybe_first_row::<R>()
            .map_err(rows_err)
    }

    pub(crate) async fn all<R>(
        &self,
        what: &str,
        st: &PreparedStatement,
        values: impl scylla::serialize::row::SerializeRow,
    ) -> Result<Vec<R>, StoreError>
    where
        R: for<'f> scylla::deserialize::row::DeserializeRow<'f, 'f>,
    {
        let result = cql!(what, self.session.execute_unpaged(st, values))?;
        let rows = result.into_rows_result().map_err(rows_err)?;
        rows.rows::<R>()
            .map_err(rows_err)?
            .map(|r| r.map_err(rows_err))
            .collect()
    }
}
