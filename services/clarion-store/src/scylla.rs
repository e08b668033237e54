//! The ScyllaDB store: every logical table is a CQL table
//! `(tenant text, pk text, ck blob, value blob, PRIMARY KEY ((tenant, pk), ck))`
//! in one keyspace, so a `(tenant, pk)` partition lives on one replica set and
//! its rows are kept sorted by `ck` (blob order is unsigned byte order, the
//! same order the embedded store uses).
//!
//! How each [`Store`] operation maps onto CQL:
//!
//! - `get` / `get_many`: prepared point `SELECT`s, `get_many` runs them
//!   concurrently.
//! - `scan`: a prepared slice query over one partition, one statement per
//!   bound shape and direction, read through the driver's pager.
//! - `write`: one `LOGGED` batch, so a batch spanning several partitions or
//!   tables is all-or-nothing (via ScyllaDB's batchlog).
//! - TTL: CQL `USING TTL` in whole seconds; expired rows vanish from reads on
//!   their own.
//! - `insert_if_absent`: a lightweight transaction, `INSERT ... IF NOT EXISTS`.
//!
//! `connect` creates the keyspace and tables if they are missing so a fresh
//! development node works out of the box. The keyspace it creates uses
//! `SimpleStrategy` with replication factor 1, which is only fit for a single
//! development node: production should create the keyspace beforehand with
//! `NetworkTopologyStrategy` and a real replication factor (see
//! `schemas/cql/clarion.cql`), and `connect` then leaves it untouched.
//!
//! Statements run at the driver's default consistency, `LOCAL_QUORUM` (and
//! `LOCAL_SERIAL` for the lightweight transaction), so reads see the writes
//! acknowledged before them within a datacenter.

use std::collections::{HashMap, HashSet};
use std::fmt::Display;
use std::ops::Bound;
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use futures::TryStreamExt;
use scylla::client::session::Session;
use scylla::client::session_builder::SessionBuilder;
use scylla::deserialize::row::ColumnIterator;
use scylla::deserialize::value::DeserializeValue;
use scylla::errors::{
    DbError, ExecutionError, MetadataError, NewSessionError, NextPageError, NextRowError,
    PagerExecutionError, PrepareError, RequestAttemptError, RequestError, SchemaAgreementError,
    UseKeyspaceError,
};
use scylla::serialize::row::{RowSerializationContext, SerializeRow};
use scylla::serialize::writers::RowWriter;
use scylla::serialize::SerializationError;
use scylla::statement::batch::{Batch, BatchType};
use scylla::statement::prepared::PreparedStatement;

use crate::{Op, Result, RowKey, Scan, Store, StoreError, Table, WriteBatch};

/// Longest TTL CQL accepts: 20 years, in seconds. Longer TTLs are rejected by
/// the server, so they are rejected here with a clearer message.
const MAX_TTL_SECS: u64 = 630_720_000;

/// Longest keyspace name ScyllaDB accepts.
const MAX_KEYSPACE_LEN: usize = 48;

/// Name of the column a lightweight transaction reports its outcome in.
const APPLIED_COLUMN: &str = "[applied]";

/// Prepared statements of one table, prepared once at connect.
struct TableStatements {
    get: PreparedStatement,
    put: PreparedStatement,
    put_ttl: PreparedStatement,
    delete: PreparedStatement,
    insert_if_absent: PreparedStatement,
    insert_if_absent_ttl: PreparedStatement,
}

/// The ScyllaDB store.
pub struct ScyllaStore {
    session: Session,
    keyspace: String,
    statements: HashMap<Table, TableStatements>,
    /// Scan statements by CQL text. The text encodes the whole shape (table,
    /// bounds, direction), and there are few shapes, so they are prepared on
    /// first use rather than all up front.
    scans: Mutex<HashMap<String, PreparedStatement>>,
}

impl ScyllaStore {
    /// Connects to `host:port[,host:port]/keyspace` (the part of a
    /// `scylla://` URL after the scheme), creating the keyspace and tables if
    /// they are missing, and prepares every statement.
    pub async fn connect(target: &str) -> Result<ScyllaStore> {
        let (nodes, keyspace) = parse_target(target)?;
        let session = SessionBuilder::new()
            .known_nodes(&nodes)
            .build()
            .await
            .map_err(|e| {
                fail(
                    format_args!("connecting to ScyllaDB at {}", nodes.join(",")),
                    e,
                )
            })?;

        // The keyspace must exist before the session can switch to it, so it
        // is created with a fully qualified statement first. Every DDL
        // statement is `IF NOT EXISTS`: a pre-created production schema is
        // left as it is. The driver waits for schema agreement after each.
        let (create_keyspace, create_tables) = schema_statements(&keyspace);
        session
            .query_unpaged(create_keyspace, ())
            .await
            .map_err(|e| fail(format_args!("creating keyspace {keyspace}"), e))?;
        session
            .use_keyspace(keyspace.as_str(), false)
            .await
            .map_err(|e| fail(format_args!("switching to keyspace {keyspace}"), e))?;
        // Sequentially: concurrent schema changes only add contention.
        for (table, ddl) in Table::ALL.into_iter().zip(create_tables) {
            session
                .query_unpaged(ddl, ())
                .await
                .map_err(|e| fail(format_args!("creating table {keyspace}.{table}"), e))?;
        }

        let prepared = futures::future::try_join_all(
            Table::ALL
                .into_iter()
                .map(|table| prepare_table(&session, &keyspace, table)),
        )
        .await?;
        let statements = Table::ALL.into_iter().zip(prepared).collect();

        tracing::info!(nodes = %nodes.join(","), %keyspace, "connected to ScyllaDB store");
        Ok(ScyllaStore {
            session,
            keyspace,
            statements,
            scans: Mutex::new(HashMap::new()),
        })
    }

    fn table(&self, table: Table) -> Result<&TableStatements> {
        // Every table of `Table::ALL` is prepared in `connect`, so this only
        // fails if a table is added to the enum but not to `ALL`.
        self.statements
            .get(&table)
            .ok_or_else(|| StoreError::Storage(format!("no prepared statements for table {table}")))
    }

    async fn get_one(&self, key: &RowKey) -> Result<Option<Bytes>> {
        let stmt = &self.table(key.table)?.get;
        let what = || format!("reading {}", describe(key));
        let result = self
            .session
            .execute_unpaged(stmt, (&key.tenant, &key.pk, &key.ck))
            .await
            .map_err(|e| fail(what(), e))?
            .into_rows_result()
            .map_err(|e| storage(what(), e))?;
        // `Bytes` deserializes as a view into the response frame, so the
        // value is not copied again.
        let row = result
            .maybe_first_row::<(Bytes,)>()
            .map_err(|e| storage(what(), e))?;
        Ok(row.map(|(value,)| value))
    }

    /// The prepared statement for `cql`, preparing it on first use.
    async fn scan_statement(&self, cql: String) -> Result<PreparedStatement> {
        if let Some(stmt) = self.lock_scans().get(&cql) {
            return Ok(stmt.clone());
        }
        // Prepared without holding the lock (it must not be held across an
        // await); two tasks racing here both prepare, which is harmless.
        let mut stmt = self
            .session
            .prepare(cql.as_str())
            .await
            .map_err(|e| fail(format_args!("preparing `{cql}`"), e))?;
        // Reads can be retried and speculatively executed safely.
        stmt.set_is_idempotent(true);
        Ok(self.lock_scans().entry(cql).or_insert(stmt).clone())
    }

    fn lock_scans(&self) -> std::sync::MutexGuard<'_, HashMap<String, PreparedStatement>> {
        // The map is consistent after every operation on it, so a panic while
        // it was held leaves nothing to repair.
        self.scans.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[async_trait]
impl Store for ScyllaStore {
    async fn get(&self, key: &RowKey) -> Result<Option<Bytes>> {
        self.get_one(key).await
    }

    async fn get_many(&self, keys: &[RowKey]) -> Result<Vec<Option<Bytes>>> {
        // Keys usually lie in different partitions, i.e. on different
        // replicas, so concurrent point reads beat any multi-key query.
        // `try_join_all` keeps the order of `keys`.
        futures::future::try_join_all(keys.iter().map(|key| self.get_one(key))).await
    }

    async fn scan(&self, scan: &Scan) -> Result<Vec<(Vec<u8>, Bytes)>> {
        // CQL rejects `LIMIT 0`; nothing can be returned anyway.
        if scan.limit == 0 {
            return Ok(Vec::new());
        }
        let what = || {
            format!(
                "scanning {}.{} partition ({:?}, {:?})",
                self.keyspace, scan.table, scan.tenant, scan.pk
            )
        };
        let stmt = self.scan_statement(scan_cql(&self.keyspace, scan)).await?;
        let values = ScanValues {
            tenant: &scan.tenant,
            pk: &scan.pk,
            from: bound_value(&scan.from),
            to: bound_value(&scan.to),
            // CQL's LIMIT is an `int`; a larger limit means "all rows".
            limit: i32::try_from(scan.limit).unwrap_or(i32::MAX),
        };
        // Paged, so a large limit streams the partition page by page rather
        // than in one huge response; the server applies LIMIT across pages.
        self.session
            .execute_iter(stmt, values)
            .await
            .map_err(|e| fail(what(), e))?
            .rows_stream::<(Vec<u8>, Bytes)>()
            .map_err(|e| storage(what(), e))?
            .try_collect()
            .await
            .map_err(|e| fail(what(), e))
    }

    async fn write(&self, batch: WriteBatch) -> Result<()> {
        if batch.is_empty() {
            return Ok(());
        }
        // A conditional CQL batch must stay in one partition, which a
        // processor's commit does not: the guards are read just before the
        // batch. That narrows, but does not close, the window in which a
        // fenced process could still write; the consumer group's revoke
        // (which waits for the old owner's commit) is the guarantee.
        for (key, want) in &batch.guards {
            if self.get(key).await?.as_deref() != Some(&want[..]) {
                return Err(crate::StoreError::Fenced(format!(
                    "{}{}/{} holds another owner's epoch",
                    crate::FENCED,
                    key.table,
                    key.pk
                )));
            }
        }
        // All statements of a batch share one write timestamp, and at equal
        // timestamps CQL picks the tombstone, or the larger value, rather than
        // the later statement. Ops apply in order in the store's contract, and
        // every op replaces its whole row, so only the last op on each row
        // matters: keep just that one.
        let ops = last_op_per_row(&batch.ops);
        let mut cql_batch = Batch::new(BatchType::Logged);
        let mut values = Vec::with_capacity(ops.len());
        for op in ops {
            match op {
                Op::Put { key, value, ttl } => {
                    let stmts = self.table(key.table)?;
                    match ttl {
                        None => {
                            cql_batch.append_statement(stmts.put.clone());
                            values.push(OpValues::Put(&key.tenant, &key.pk, &key.ck, value));
                        }
                        Some(ttl) => {
                            cql_batch.append_statement(stmts.put_ttl.clone());
                            values.push(OpValues::PutTtl(
                                &key.tenant,
                                &key.pk,
                                &key.ck,
                                value,
                                ttl_seconds(*ttl)?,
                            ));
                        }
                    }
                }
                Op::Delete { key } => {
                    cql_batch.append_statement(self.table(key.table)?.delete.clone());
                    values.push(OpValues::Delete(&key.tenant, &key.pk, &key.ck));
                }
            }
        }
        self.session
            .batch(&cql_batch, values)
            .await
            .map_err(|e| fail(format_args!("writing a batch of {} ops", batch.len()), e))?;
        Ok(())
    }

    async fn insert_if_absent(
        &self,
        key: &RowKey,
        value: Bytes,
        ttl: Option<Duration>,
    ) -> Result<Option<Bytes>> {
        let stmts = self.table(key.table)?;
        let what = || format!("inserting {} if absent", describe(key));
        let result = match ttl {
            None => {
                self.session
                    .execute_unpaged(
                        &stmts.insert_if_absent,
                        (&key.tenant, &key.pk, &key.ck, &value),
                    )
                    .await
            }
            Some(ttl) => {
                self.session
                    .execute_unpaged(
                        &stmts.insert_if_absent_ttl,
                        (&key.tenant, &key.pk, &key.ck, &value, ttl_seconds(ttl)?),
                    )
                    .await
            }
        }
        .map_err(|e| fail(what(), e))?
        .into_rows_result()
        .map_err(|e| storage(what(), e))?;
        // ScyllaDB answers a conditional statement with one row: `[applied]`
        // and the columns of the row as it was before (all null when there
        // was none). Columns are looked up by name, not position, so the
        // answer also parses if only `[applied]` is sent, as Cassandra does
        // when the insert applied.
        let row = result
            .maybe_first_row::<ColumnIterator>()
            .map_err(|e| storage(what(), e))?
            .ok_or_else(|| StoreError::Storage(format!("{}: no result row", what())))?;
        let outcome = lwt_outcome(row).map_err(|e| storage(what(), e))?;
        match outcome {
            (Some(true), _) => Ok(None),
            (Some(false), Some(existing)) => Ok(Some(existing)),
            (Some(false), None) => Err(StoreError::Storage(format!(
                "{}: not applied, but the existing row has no value",
                what()
            ))),
            (None, _) => Err(StoreError::Storage(format!(
                "{}: result has no {APPLIED_COLUMN} column",
                what()
            ))),
        }
    }
}

/// Reads `[applied]` and the previous `value` out of a lightweight
/// transaction's result row.
fn lwt_outcome(
    row: ColumnIterator<'_, '_>,
) -> std::result::Result<(Option<bool>, Option<Bytes>), String> {
    let mut applied = None;
    let mut existing = None;
    for column in row {
        let column = column.map_err(|e| e.to_string())?;
        let typ = column.spec.typ();
        match column.spec.name() {
            APPLIED_COLUMN => {
                <bool as DeserializeValue>::type_check(typ).map_err(|e| e.to_string())?;
                applied = Some(
                    <bool as DeserializeValue>::deserialize(typ, column.slice)
                        .map_err(|e| e.to_string())?,
                );
            }
            "value" => {
                <Option<Bytes> as DeserializeValue>::type_check(typ).map_err(|e| e.to_string())?;
                existing = <Option<Bytes> as DeserializeValue>::deserialize(typ, column.slice)
                    .map_err(|e| e.to_string())?;
            }
            _ => {}
        }
    }
    Ok((applied, existing))
}

/// Prepares the fixed statements of `table`.
async fn prepare_table(session: &Session, keyspace: &str, table: Table) -> Result<TableStatements> {
    let t = format!("{keyspace}.{table}");
    let insert = format!("INSERT INTO {t} (tenant, pk, ck, value) VALUES (?, ?, ?, ?)");
    let prepare = |cql: String| async move {
        session
            .prepare(cql.as_str())
            .await
            .map_err(|e| fail(format_args!("preparing `{cql}`"), e))
    };
    let (mut get, put, put_ttl, delete, insert_if_absent, insert_if_absent_ttl) = futures::try_join!(
        prepare(format!(
            "SELECT value FROM {t} WHERE tenant = ? AND pk = ? AND ck = ?"
        )),
        prepare(insert.clone()),
        prepare(format!("{insert} USING TTL ?")),
        prepare(format!(
            "DELETE FROM {t} WHERE tenant = ? AND pk = ? AND ck = ?"
        )),
        prepare(format!("{insert} IF NOT EXISTS")),
        prepare(format!("{insert} IF NOT EXISTS USING TTL ?")),
    )?;
    // Reads can be retried and speculatively executed safely. Writes keep
    // the driver's default (not idempotent): a blind retry could land after,
    // and undo, a later write of the same row.
    get.set_is_idempotent(true);
    Ok(TableStatements {
        get,
        put,
        put_ttl,
        delete,
        insert_if_absent,
        insert_if_absent_ttl,
    })
}

/// The DDL `connect` runs: the keyspace, then one table per entry of
/// [`Table::ALL`], in that order. `schemas/cql/clarion.cql` holds the same
/// statements for keyspace `clarion` (a test checks they match).
fn schema_statements(keyspace: &str) -> (String, Vec<String>) {
    let create_keyspace = format!(
        "CREATE KEYSPACE IF NOT EXISTS {keyspace} \
         WITH replication = {{'class': 'SimpleStrategy', 'replication_factor': 1}}"
    );
    let create_tables = Table::ALL
        .iter()
        .map(|table| {
            format!(
                "CREATE TABLE IF NOT EXISTS {keyspace}.{table} (\
                 tenant text, pk text, ck blob, value blob, \
                 PRIMARY KEY ((tenant, pk), ck)\
                 ) WITH CLUSTERING ORDER BY (ck ASC)"
            )
        })
        .collect();
    (create_keyspace, create_tables)
}

/// Splits `host:port[,host:port]/keyspace` into nodes and keyspace.
fn parse_target(target: &str) -> Result<(Vec<String>, String)> {
    let bad = || StoreError::BadUrl(format!("scylla://{target}"));
    let (nodes, keyspace) = target.split_once('/').ok_or_else(bad)?;
    let nodes: Vec<String> = nodes.split(',').map(|n| n.trim().to_string()).collect();
    if nodes
        .iter()
        .any(|n| n.is_empty() || n.contains(char::is_whitespace))
    {
        return Err(bad());
    }
    // The keyspace is spliced into CQL text (it cannot be a bind marker), so
    // only plain unquoted identifiers are accepted.
    let mut chars = keyspace.chars();
    let valid_keyspace = keyspace.len() <= MAX_KEYSPACE_LEN
        && chars.next().is_some_and(|c| c.is_ascii_alphabetic())
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_');
    if !valid_keyspace {
        return Err(bad());
    }
    // Unquoted CQL identifiers are case-insensitive and stored lowercase.
    Ok((nodes, keyspace.to_ascii_lowercase()))
}

/// The CQL of a scan: it depends only on the table, which bounds are set and
/// how, and the direction, so it doubles as the statement cache key.
fn scan_cql(keyspace: &str, scan: &Scan) -> String {
    let mut cql = format!(
        "SELECT ck, value FROM {keyspace}.{} WHERE tenant = ? AND pk = ?",
        scan.table
    );
    for (bound, included, excluded) in [(&scan.from, ">=", ">"), (&scan.to, "<=", "<")] {
        match bound {
            Bound::Included(_) => cql.push_str(&format!(" AND ck {included} ?")),
            Bound::Excluded(_) => cql.push_str(&format!(" AND ck {excluded} ?")),
            Bound::Unbounded => {}
        }
    }
    cql.push_str(if scan.reverse {
        " ORDER BY ck DESC LIMIT ?"
    } else {
        " ORDER BY ck ASC LIMIT ?"
    });
    cql
}

fn bound_value(bound: &Bound<Vec<u8>>) -> Option<&[u8]> {
    match bound {
        Bound::Included(b) | Bound::Excluded(b) => Some(b),
        Bound::Unbounded => None,
    }
}

/// Bind values of a scan statement, in the order [`scan_cql`] places the
/// markers.
struct ScanValues<'a> {
    tenant: &'a str,
    pk: &'a str,
    from: Option<&'a [u8]>,
    to: Option<&'a [u8]>,
    limit: i32,
}

impl SerializeRow for ScanValues<'_> {
    fn serialize(
        &self,
        ctx: &RowSerializationContext<'_>,
        writer: &mut RowWriter,
    ) -> std::result::Result<(), SerializationError> {
        let (t, p, l) = (self.tenant, self.pk, self.limit);
        // Delegating to tuples keeps the driver's type checks against the
        // prepared statement's markers.
        match (self.from, self.to) {
            (None, None) => (t, p, l).serialize(ctx, writer),
            (Some(f), None) => (t, p, f, l).serialize(ctx, writer),
            (None, Some(to)) => (t, p, to, l).serialize(ctx, writer),
            (Some(f), Some(to)) => (t, p, f, to, l).serialize(ctx, writer),
        }
    }

    fn is_empty(&self) -> bool {
        false
    }
}

/// Bind values of one statement of a write batch. A batch's values must all
/// have one type, while the statements take different markers.
enum OpValues<'a> {
    Put(&'a str, &'a str, &'a [u8], &'a [u8]),
    PutTtl(&'a str, &'a str, &'a [u8], &'a [u8], i32),
    Delete(&'a str, &'a str, &'a [u8]),
}

impl SerializeRow for OpValues<'_> {
    fn serialize(
        &self,
        ctx: &RowSerializationContext<'_>,
        writer: &mut RowWriter,
    ) -> std::result::Result<(), SerializationError> {
        match *self {
            OpValues::Put(t, p, c, v) => (t, p, c, v).serialize(ctx, writer),
            OpValues::PutTtl(t, p, c, v, ttl) => (t, p, c, v, ttl).serialize(ctx, writer),
            OpValues::Delete(t, p, c) => (t, p, c).serialize(ctx, writer),
        }
    }

    fn is_empty(&self) -> bool {
        false
    }
}

/// The ops of `ops` that are the last on their row, in their original order.
fn last_op_per_row(ops: &[Op]) -> Vec<&Op> {
    let mut seen = HashSet::new();
    let mut kept: Vec<&Op> = ops
        .iter()
        .rev()
        .filter(|op| {
            let key = match op {
                Op::Put { key, .. } | Op::Delete { key } => key,
            };
            seen.insert(key)
        })
        .collect();
    kept.reverse();
    kept
}

/// A TTL in CQL's whole seconds: rounded up, so a row never expires early,
/// and at least 1, because `USING TTL 0` means "never expires".
fn ttl_seconds(ttl: Duration) -> Result<i32> {
    let secs = (ttl.as_secs() + u64::from(ttl.subsec_nanos() > 0)).max(1);
    if secs > MAX_TTL_SECS {
        return Err(StoreError::Storage(format!(
            "TTL of {secs}s exceeds the CQL maximum of {MAX_TTL_SECS}s"
        )));
    }
    i32::try_from(secs).map_err(|_| StoreError::Storage(format!("TTL of {secs}s is too long")))
}

fn describe(key: &RowKey) -> String {
    format!(
        "{} row ({:?}, {:?}, {:?})",
        key.table, key.tenant, key.pk, key.ck
    )
}

/// A failure that is not about reaching the cluster: bad data, schema
/// mismatch, a rejected statement.
fn storage(what: impl Display, err: impl Display) -> StoreError {
    StoreError::Storage(format!("ScyllaDB: {what}: {err}"))
}

/// Maps a driver error to [`StoreError::Unavailable`] when the cluster could
/// not be reached or answer in time (worth retrying later), and to
/// [`StoreError::Storage`] otherwise.
fn fail<E: Transient + Display>(what: impl Display, err: E) -> StoreError {
    if err.is_transient() {
        StoreError::Unavailable(format!("ScyllaDB: {what}: {err}"))
    } else {
        storage(what, err)
    }
}

/// Whether a driver error means the cluster is (for now) unreachable,
/// overloaded or too slow, rather than that the request itself is wrong.
trait Transient {
    fn is_transient(&self) -> bool;
}

impl Transient for DbError {
    fn is_transient(&self) -> bool {
        matches!(
            self,
            DbError::Unavailable { .. }
                | DbError::Overloaded
                | DbError::IsBootstrapping
                | DbError::ReadTimeout { .. }
                | DbError::WriteTimeout { .. }
                | DbError::RateLimitReached { .. }
        )
    }
}

impl Transient for RequestAttemptError {
    fn is_transient(&self) -> bool {
        match self {
            RequestAttemptError::BrokenConnectionError(_)
            | RequestAttemptError::UnableToAllocStreamId => true,
            RequestAttemptError::DbError(db, _) => db.is_transient(),
            _ => false,
        }
    }
}

impl Transient for RequestError {
    fn is_transient(&self) -> bool {
        match self {
            RequestError::EmptyPlan
            | RequestError::ConnectionPoolError(_)
            | RequestError::RequestTimeout(_) => true,
            RequestError::LastAttemptError(e) => e.is_transient(),
            _ => false,
        }
    }
}

impl Transient for PrepareError {
    fn is_transient(&self) -> bool {
        match self {
            PrepareError::ConnectionPoolError(_) => true,
            PrepareError::AllAttemptsFailed { first_attempt } => first_attempt.is_transient(),
            _ => false,
        }
    }
}

impl Transient for UseKeyspaceError {
    fn is_transient(&self) -> bool {
        match self {
            UseKeyspaceError::RequestError(e) => e.is_transient(),
            UseKeyspaceError::RequestTimeout(_) => true,
            _ => false,
        }
    }
}

impl Transient for SchemaAgreementError {
    fn is_transient(&self) -> bool {
        match self {
            SchemaAgreementError::ConnectionPoolError(_) | SchemaAgreementError::Timeout(_) => true,
            SchemaAgreementError::PrepareError(e) => e.is_transient(),
            SchemaAgreementError::RequestError(e) => e.is_transient(),
            _ => false,
        }
    }
}

impl Transient for MetadataError {
    fn is_transient(&self) -> bool {
        match self {
            MetadataError::ConnectionPoolError(_) => true,
            // Fetching the metadata failed, e.g. on a broken connection.
            MetadataError::FetchError(_) => true,
            _ => false,
        }
    }
}

impl Transient for ExecutionError {
    fn is_transient(&self) -> bool {
        match self {
            ExecutionError::EmptyPlan
            | ExecutionError::ConnectionPoolError(_)
            | ExecutionError::RequestTimeout(_) => true,
            ExecutionError::LastAttemptError(e) => e.is_transient(),
            ExecutionError::PrepareError(e) => e.is_transient(),
            ExecutionError::UseKeyspaceError(e) => e.is_transient(),
            ExecutionError::SchemaAgreementError(e) => e.is_transient(),
            ExecutionError::MetadataError(e) => e.is_transient(),
            _ => false,
        }
    }
}

impl Transient for NextPageError {
    fn is_transient(&self) -> bool {
        match self {
            NextPageError::RequestFailure(e) => e.is_transient(),
            _ => false,
        }
    }
}

impl Transient for PagerExecutionError {
    fn is_transient(&self) -> bool {
        match self {
            PagerExecutionError::PrepareError(e) => e.is_transient(),
            PagerExecutionError::NextPageError(e) => e.is_transient(),
            PagerExecutionError::UseKeyspaceError(e) => e.is_transient(),
            PagerExecutionError::SchemaAgreementError(e) => e.is_transient(),
            PagerExecutionError::MetadataError(e) => e.is_transient(),
            _ => false,
        }
    }
}

impl Transient for NextRowError {
    fn is_transient(&self) -> bool {
        match self {
            NextRowError::NextPageError(e) => e.is_transient(),
            _ => false,
        }
    }
}

impl Transient for NewSessionError {
    fn is_transient(&self) -> bool {
        match self {
            // Nothing resolved or answered: the cluster is not reachable.
            NewSessionError::FailedToResolveAnyHostname(_) => true,
            NewSessionError::MetadataError(e) => e.is_transient(),
            NewSessionError::UseKeyspaceError(e) => e.is_transient(),
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_parse() {
        let (nodes, ks) = parse_target("10.0.0.1:9042,db2:19042/Clarion_1").unwrap();
        assert_eq!(nodes, ["10.0.0.1:9042", "db2:19042"]);
        assert_eq!(ks, "clarion_1");
        for bad in [
            "127.0.0.1:9042",
            "127.0.0.1:9042/",
            "/clarion",
            "a:1,,b:2/clarion",
            "a:1/1clarion",
            "a:1/clarion; DROP KEYSPACE x",
            "a:1/clarion/x",
        ] {
            assert!(
                matches!(parse_target(bad), Err(StoreError::BadUrl(_))),
                "{bad} should be rejected"
            );
        }
        assert!(parse_target(&format!("a:1/{}", "k".repeat(MAX_KEYSPACE_LEN + 1))).is_err());
    }

    #[test]
    fn ttls_round_up_to_whole_seconds() {
        assert_eq!(ttl_seconds(Duration::from_secs(1)).unwrap(), 1);
        assert_eq!(ttl_seconds(Duration::from_millis(1500)).unwrap(), 2);
        assert_eq!(ttl_seconds(Duration::ZERO).unwrap(), 1);
        assert_eq!(ttl_seconds(Duration::from_nanos(1)).unwrap(), 1);
        assert_eq!(
            ttl_seconds(Duration::from_secs(MAX_TTL_SECS)).unwrap(),
            MAX_TTL_SECS as i32
        );
        assert!(ttl_seconds(Duration::from_secs(MAX_TTL_SECS + 1)).is_err());
    }

    #[test]
    fn scan_cql_follows_bounds_and_direction() {
        let base = Scan::partition(Table::Timers, "t", "p", 10);
        assert_eq!(
            scan_cql("ks", &base),
            "SELECT ck, value FROM ks.timers WHERE tenant = ? AND pk = ? ORDER BY ck ASC LIMIT ?"
        );
        let ranged = base
            .clone()
            .range(Bound::Excluded(vec![1]), Bound::Included(vec![2]))
            .reversed();
        assert_eq!(
            scan_cql("ks", &ranged),
            "SELECT ck, value FROM ks.timers WHERE tenant = ? AND pk = ? \
             AND ck > ? AND ck <= ? ORDER BY ck DESC LIMIT ?"
        );
        let from_only = base.range(Bound::Included(vec![1]), Bound::Unbounded);
        assert_eq!(
            scan_cql("ks", &from_only),
            "SELECT ck, value FROM ks.timers WHERE tenant = ? AND pk = ? \
             AND ck >= ? ORDER BY ck ASC LIMIT ?"
        );
    }

    #[test]
    fn only_the_last_op_on_a_row_is_kept() {
        let a = RowKey::new(Table::Dedup, "t", "p", b"a".to_vec());
        let b = RowKey::new(Table::Dedup, "t", "p", b"b".to_vec());
        let other_table = RowKey::new(Table::Outbox, "t", "p", b"a".to_vec());
        let mut batch = WriteBatch::new();
        batch
            .put(a.clone(), "1")
            .delete(b.clone())
            .put(other_table.clone(), "x")
            .delete(a.clone())
            .put(a.clone(), "2");
        let kept = last_op_per_row(&batch.ops);
        assert_eq!(kept, [&batch.ops[1], &batch.ops[2], &batch.ops[4]]);
    }

    /// `schemas/cql/clarion.cql` must hold exactly the DDL `connect` runs.
    #[test]
    fn schema_file_matches_connect_ddl() {
        let file = include_str!("../../../schemas/cql/clarion.cql");
        let normalize = |s: &str| {
            s.split_whitespace()
                .collect::<Vec<_>>()
                .join(" ")
                .replace("( ", "(")
                .replace(" )", ")")
        };
        let without_comments: String = file
            .lines()
            .map(|line| line.split("--").next().unwrap_or(""))
            .collect::<Vec<_>>()
            .join("\n");
        let in_file: Vec<String> = without_comments
            .split(';')
            .map(normalize)
            .filter(|s| !s.is_empty())
            .collect();
        let (keyspace, tables) = schema_statements("clarion");
        let expected: Vec<String> = std::iter::once(keyspace)
            .chain(tables)
            .map(|s| normalize(&s))
            .collect();
        assert_eq!(in_file, expected);
    }
}
