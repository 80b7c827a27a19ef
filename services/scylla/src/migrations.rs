//! Versioned CQL migrations: the files of `schemas/cql/NNN-*.cql`, applied
//! in order at connect and recorded in `schema_migrations`, so connecting
//! again applies none twice.

use scylla::client::session::Session;
use tern_core::store::StoreError;

/// The migrations, in order: (version, name, CQL).
const MIGRATIONS: &[(i32, &str, &str)] = &[
    (
        1,
        "001-init",
        include_str!("../../../schemas/cql/001-init.cql"),
    ),
    (
        2,
        "002-groups",
        include_str!("../../../schemas/cql/002-groups.cql"),
    ),
    (
        3,
        "003-conversations",
        include_str!("../../../schemas/cql/003-conversations.cql"),
    ),
    (
        4,
        "004-retention",
        include_str!("../../../schemas/cql/004-retention.cql"),
    ),
    (
        5,
        "005-history-bodies",
        include_str!("../../../schemas/cql/005-history-bodies.cql"),
    ),
    (
        6,
        "006-device-cursors",
        include_str!("../../../schemas/cql/006-device-cursors.cql"),
    ),
    (
        7,
        "007-accounts",
        include_str!("../../../schemas/cql/007-accounts.cql"),
    ),
];

/// Creates `schema_migrations` if needed, then applies, in order, each
/// migration it does not list and records it there.
pub(crate) async fn migrate(session: &Session, ks: &str) -> Result<(), StoreError> {
    cql!(
        "create schema_migrations",
        session.query_unpaged(
            format!("CREATE TABLE IF NOT EXISTS {ks}.schema_migrations (version int PRIMARY KEY, name text, applied_at_ms bigint)"),
            &[]
        )
    )?;
    let applied: Vec<i32> = cql!(
        "read schema_migrations",
        session.query_unpaged(format!("SELECT version FROM {ks}.schema_migrations"), &[])
    )?
    .into_rows_result()
    .map_err(|e| StoreError::Unavailable(e.to_string()))?
    .rows::<(i32,)>()
    .map_err(|e| StoreError::Unavailable(e.to_string()))?
    .filter_map(Result::ok)
    .map(|(v,)| v)
    .collect();
    for (version, name, text) in MIGRATIONS {
        if applied.contains(version) {
            continue;
        }
        for statement in statements(text).iter().map(|st| qualify(st, ks)) {
            let result = cql!(
                format!("migration {name}"),
                session.query_unpaged(statement.clone(), &[])
            );
            // Processes starting together migrate together: CREATE ... IF
            // NOT EXISTS is idempotent, ALTER TABLE ... ADD is not, so a
            // failed ADD whose columns all exist was another's, and done.
            if let Err(e) = result
                && !added_columns_exist(session, ks, &statement).await?
            {
                return Err(e);
            }
        }
        cql!(
            format!("migration {name}: schema agreement"),
            session.await_schema_agreement()
        )?;
        cql!(
            "record migration",
            session.query_unpaged(
                format!("INSERT INTO {ks}.schema_migrations (version, name, applied_at_ms) VALUES (?, ?, ?)"),
                (*version, *name, tern_core::now_ms() as i64)
            )
        )?;
        tracing::info!(version, name, "CQL migration applied");
    }
    Ok(())
}

/// For `ALTER TABLE ks.t ADD (a type, b type)`: whether columns a and b
/// exist now. False for any other statement.
async fn added_columns_exist(
    session: &Session,
    ks: &str,
    statement: &str,
) -> Result<bool, StoreError> {
    let Some((table, columns)) = alter_add_columns(statement, ks) else {
        return Ok(false);
    };
    let existing: Vec<String> = cql!(
        "read table columns",
        session.query_unpaged(
            "SELECT column_name FROM system_schema.columns WHERE keyspace_name = ? AND table_name = ?",
            (ks, table.as_str())
        )
    )?
    .into_rows_result()
    .map_err(|e| StoreError::Unavailable(e.to_string()))?
    .rows::<(String,)>()
    .map_err(|e| StoreError::Unavailable(e.to_string()))?
    .filter_map(Result::ok)
    .map(|(c,)| c)
    .collect();
    Ok(columns.iter().all(|c| existing.contains(c)))
}

/// The table and column names of `ALTER TABLE ks.table ADD (c1 t1, c2 t2)`.
fn alter_add_columns(statement: &str, ks: &str) -> Option<(String, Vec<String>)> {
    let rest = statement.strip_prefix(&format!("ALTER TABLE {ks}."))?;
    let (table, rest) = rest.split_once(char::is_whitespace)?;
    let inner = rest.trim().strip_prefix("ADD")?.trim();
    let inner = inner.strip_prefix('(')?.strip_suffix(')')?;
    let columns = inner
        .split(',')
        .filter_map(|c| c.split_whitespace().next())
        .map(str::to_owned)
        .collect();
    Some((table.to_owned(), columns))
}

/// Puts `ks.` before the table a `CREATE TABLE [IF NOT EXISTS] name` or
/// `ALTER TABLE name` statement names (migration files name no keyspace).
fn qualify(statement: &str, ks: &str) -> String {
    for head in [
        "CREATE TABLE IF NOT EXISTS ",
        "CREATE TABLE ",
        "ALTER TABLE ",
    ] {
        if let Some(rest) = statement.strip_prefix(head) {
            return format!("{head}{ks}.{rest}");
        }
    }
    statement.to_owned()
}

/// The statements of a migration file: split on ';', comments dropped.
fn statements(text: &str) -> Vec<String> {
    let without_comments: String = text
        .lines()
        .map(|l| l.split("--").next().unwrap_or_default())
        .collect::<Vec<_>>()
        .join("\n");
    without_comments
        .split(';')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect()
}

#[cfg(test)]
mod tests {
    #[test]
    fn migration_statements_split_and_drop_comments() {
        let s = super::statements(
            "-- a comment; with a semicolon\nCREATE TABLE a (x int PRIMARY KEY);\n\n-- more\nCREATE TABLE b (y int PRIMARY KEY); ",
        );
        assert_eq!(
            s,
            vec![
                "CREATE TABLE a (x int PRIMARY KEY)",
                "CREATE TABLE b (y int PRIMARY KEY)"
            ]
        );
        assert_eq!(
            super::statements(super::MIGRATIONS[0].2).len(),
            8,
            "one statement per table of 001-init.cql"
        );
    }

    #[test]
    fn migration_tables_get_the_keyspace() {
        assert_eq!(
            super::qualify("CREATE TABLE IF NOT EXISTS inbox (x int)", "ks"),
            "CREATE TABLE IF NOT EXISTS ks.inbox (x int)"
        );
        assert_eq!(
            super::qualify("CREATE TABLE a (x int)", "ks"),
            "CREATE TABLE ks.a (x int)"
        );
        assert_eq!(
            super::qualify("ALTER TABLE history ADD (x int)", "ks"),
            "ALTER TABLE ks.history ADD (x int)"
        );
    }

    #[test]
    fn added_columns_are_read_from_alter_statements() {
        let st = "ALTER TABLE ks.history ADD (\n  sender_user text,\n  body blob\n)";
        assert_eq!(
            super::alter_add_columns(st, "ks"),
            Some((
                "history".to_owned(),
                vec!["sender_user".to_owned(), "body".to_owned()]
            ))
        );
        assert_eq!(
            super::alter_add_columns("CREATE TABLE ks.a (x int)", "ks"),
            None
        );
    }

    #[test]
    fn the_alters_of_007_are_recognised_when_another_process_applied_them() {
        let added: Vec<(String, Vec<String>)> = super::statements(super::MIGRATIONS[6].2)
            .iter()
            .filter_map(|st| super::alter_add_columns(&super::qualify(st, "ks"), "ks"))
            .collect();
        assert_eq!(
            added,
            vec![
                ("group_members".into(), vec!["joined_after_seq".into()]),
                ("groups".into(), vec!["history_open".into()]),
            ]
        );
    }
}
