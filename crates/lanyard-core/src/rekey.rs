//! Re-sealing a service's stored secrets under the primary key-encryption key (`lanyard keys
//! reencrypt`), while the services keep running: each service names the columns it seals
//! ([`SealedColumn`]), and this walks them in batches, one transaction per batch.
//!
//! A value already under the primary key is left as it is, so a second run changes nothing and a
//! run after an interruption continues where the first stopped. Each row is rewritten only if it
//! still holds the value that was read (a service may have changed or cleared it meanwhile).

use sqlx::Row;

use crate::crypto::{CryptoError, SecretBox};
use crate::db::{Database, Retryable};

/// A column of sealed values: where they are, and the context each was sealed with.
#[derive(Clone, Copy, Debug)]
pub struct SealedColumn {
    /// The table (in the service's schema or file).
    pub table: &'static str,
    /// The column holding the sealed value; `NULL` or empty means nothing sealed.
    pub column: &'static str,
    /// The row's primary key columns (text), one or two, in order.
    pub keys: &'static [&'static str],
    /// The context the value is bound to, from the row's key values in the order of `keys`.
    pub context: fn(&[String]) -> String,
}

impl SealedColumn {
    /// `table.column`, for reports.
    pub fn name(&self) -> String {
        format!("{}.{}", self.table, self.column)
    }
}

/// What a pass over one column found or did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Tally {
    /// Values already under the primary key.
    pub current: u64,
    /// Values under another key: to re-seal (a check), or re-sealed (a run).
    pub moved: u64,
    /// Values a service changed or cleared between the read and the write (left to it).
    pub changed_meanwhile: u64,
    /// Whether the run stopped at its batch budget before the end of the column.
    pub stopped: bool,
}

/// Why a pass failed.
#[derive(Debug, thiserror::Error)]
pub enum RekeyError {
    /// The database failed.
    #[error(transparent)]
    Database(#[from] sqlx::Error),
    /// Values that none of the given keys opens; `first` names one of them.
    #[error("{count} value(s) in {column} open under none of the given keys (first: {first}): {source}")]
    Unreadable {
        /// `table.column`.
        column: String,
        /// How many.
        count: u64,
        /// The row of the first one (its key values).
        first: String,
        /// Why the first one did not open.
        source: CryptoError,
    },
}

impl Retryable for RekeyError {
    fn is_retryable(&self) -> bool {
        matches!(self, Self::Database(e) if crate::db::classify(e) == crate::db::DbErrorKind::Retryable)
    }
}

/// One row read: its key values and its sealed value.
struct Sealed {
    keys: Vec<String>,
    value: String,
}

/// Rows of `column` after `after` (by key) that are not in the primary key's `v2` form, at most
/// `limit`; values of the primary key in the older form are among them and are passed over.
fn candidates_sql(column: &SealedColumn, after: bool, limit: usize) -> String {
    let (table, col) = (column.table, column.column);
    let order = column.keys.join(", ");
    let after = match (after, column.keys) {
        (false, _) => String::new(),
        (true, [k]) => format!(" AND {k} > $2"),
        (true, [k0, k1]) => format!(" AND ({k0} > $2 OR ({k0} = $2 AND {k1} > $3))"),
        (true, _) => unreachable!("a sealed column's row is named by one or two keys"),
    };
    format!(
        "SELECT {order}, {col} FROM {table} WHERE {col} IS NOT NULL AND {col} <> '' AND {col} NOT LIKE $1{after} \
         ORDER BY {order} LIMIT {limit}"
    )
}

async fn read_batch<'e, E>(
    executor: E,
    column: &SealedColumn,
    prefix: &str,
    after: Option<&[String]>,
    limit: usize,
) -> Result<Vec<Sealed>, sqlx::Error>
where
    E: sqlx::Executor<'e, Database = sqlx::Any>,
{
    let sql = candidates_sql(column, after.is_some(), limit);
    let mut query = sqlx::query(&sql).bind(format!("{prefix}%"));
    for key in after.unwrap_or_default() {
        query = query.bind(key.clone());
    }
    let rows = query.fetch_all(executor).await?;
    rows.iter()
        .map(|row| {
            let keys = (0..column.keys.len()).map(|i| row.try_get::<String, _>(i)).collect::<Result<Vec<_>, _>>()?;
            Ok(Sealed { keys, value: row.try_get(column.keys.len())? })
        })
        .collect()
}

/// Reads every value of `column` that is not under the primary key and checks that it opens,
/// changing nothing: run over every column before [`reseal`] so that a wrong key fails before
/// anything is written.
pub async fn check(
    db: &Database,
    secrets: &SecretBox,
    column: &SealedColumn,
    batch: usize,
) -> Result<Tally, RekeyError> {
    let prefix = secrets.sealed_prefix();
    let mut tally = Tally::default();
    let mut unreadable: Option<(u64, String, CryptoError)> = None;
    let mut after: Option<Vec<String>> = None;
    loop {
        let rows = read_batch(&db.pool, column, &prefix, after.as_deref(), batch).await?;
        for row in &rows {
            match secrets.reseal(&row.value, &(column.context)(&row.keys)) {
                Ok(None) => tally.current += 1,
                Ok(Some(_)) => tally.moved += 1,
                Err(e) => match &mut unreadable {
                    Some((count, _, _)) => *count += 1,
                    None => unreadable = Some((1, row.keys.join("/"), e)),
                },
            }
        }
        match rows.last() {
            Some(last) if rows.len() == batch => after = Some(last.keys.clone()),
            _ => break,
        }
    }
    match unreadable {
        Some((count, first, source)) => Err(RekeyError::Unreadable { column: column.name(), count, first, source }),
        None => Ok(tally),
    }
}

/// Re-seals the values of `column` that are not under the primary key, `batch` rows per
/// transaction, at most `budget` batches when given (decremented as they commit).
pub async fn reseal(
    db: &Database,
    secrets: &SecretBox,
    column: &SealedColumn,
    batch: usize,
    budget: &mut Option<u64>,
) -> Result<Tally, RekeyError> {
    let prefix = secrets.sealed_prefix();
    let mut tally = Tally::default();
    let mut after: Option<Vec<String>> = None;
    loop {
        if *budget == Some(0) {
            tally.stopped = true;
            return Ok(tally);
        }
        let (prefix, cursor) = (&prefix, after.as_deref());
        let (done, last, full) = db
            .transaction(|open| {
                Box::pin(async move {
                    let tx = open.tx;
                    let rows = read_batch(&mut **tx, column, prefix, cursor, batch).await?;
                    let mut done = Tally::default();
                    for row in &rows {
                        let context = (column.context)(&row.keys);
                        let Some(resealed) =
                            secrets.reseal(&row.value, &context).map_err(|source| RekeyError::Unreadable {
                                column: column.name(),
                                count: 1,
                                first: row.keys.join("/"),
                                source,
                            })?
                        else {
                            done.current += 1;
                            continue;
                        };
                        let matches = column
                            .keys
                            .iter()
                            .enumerate()
                            .map(|(i, k)| format!("{k} = ${}", i + 3))
                            .collect::<Vec<_>>()
                            .join(" AND ");
                        let sql = format!(
                            "UPDATE {} SET {col} = $1 WHERE {col} = $2 AND {matches}",
                            column.table,
                            col = column.column
                        );
                        let mut update = sqlx::query(&sql).bind(resealed).bind(row.value.clone());
                        for key in &row.keys {
                            update = update.bind(key.clone());
                        }
                        if update.execute(&mut **tx).await?.rows_affected() == 1 {
                            done.moved += 1;
                        } else {
                            done.changed_meanwhile += 1;
                        }
                    }
                    Ok::<_, RekeyError>((done, rows.last().map(|r| r.keys.clone()), rows.len() == batch))
                })
            })
            .await?;
        tally.current += done.current;
        tally.moved += done.moved;
        tally.changed_meanwhile += done.changed_meanwhile;
        if let (Some(budget), Some(_)) = (budget.as_mut(), &last) {
            *budget -= 1;
        }
        match last {
            Some(last) if full => after = Some(last),
            _ => return Ok(tally),
        }
    }
}
