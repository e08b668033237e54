//! Files written before record batches: a row per record in `records`, the
//! history index in `record_index` by offset. Opening such a file moves its
//! records into batches (one per partition and append time, as they were
//! appended) and its index onto them, in one transaction, then drops the
//! old tables; nothing accepted before is lost.

use rusqlite::{params, Transaction};

use super::batch::BodyWriter;

/// Moves a file's per-record rows into batches; nothing to do for a file
/// without them.
pub(super) fn from_record_rows(tx: &Transaction<'_>) -> rusqlite::Result<()> {
    let exists = |table: &str| -> rusqlite::Result<bool> {
        tx.query_row(
            "SELECT EXISTS (SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?1)",
            [table],
            |r| r.get(0),
        )
    };
    if !exists("records")? {
        return Ok(());
    }
    copy_records(tx)?;
    if exists("record_index")? {
        tx.execute_batch(
            "INSERT INTO record_keys (idx, batch, pos)
             SELECT i.idx, b.id, i.offset - b.base_offset
             FROM record_index i
             JOIN record_batches b ON b.topic = i.topic AND b.partition = i.partition
              AND b.base_offset = (SELECT MAX(base_offset) FROM record_batches
                                   WHERE topic = i.topic AND partition = i.partition
                                     AND base_offset <= i.offset);
             DROP TABLE record_index;",
        )?;
    }
    tx.execute_batch("DROP TABLE records;")
}

/// Copies `records` into `record_batches`: consecutive records of a
/// partition appended at the same time share a batch.
fn copy_records(tx: &Transaction<'_>) -> rusqlite::Result<()> {
    let mut insert = tx.prepare(
        "INSERT INTO record_batches (topic, partition, base_offset, count, ts, body)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
    )?;
    let mut flush = |at: (i64, i64, i64, i64), body: BodyWriter| -> rusqlite::Result<()> {
        let (topic, partition, base, ts) = at;
        let count = body.count();
        insert.execute(params![topic, partition, base, count, ts, body.finish()])?;
        Ok(())
    };
    let mut select = tx.prepare(
        "SELECT topic, partition, offset, key, value, ts FROM records
         ORDER BY topic, partition, offset",
    )?;
    let mut rows = select.query([])?;
    // The batch being filled: where it starts, and its body.
    let mut open: Option<((i64, i64, i64, i64), BodyWriter)> = None;
    while let Some(r) = rows.next()? {
        let (topic, partition, offset, ts): (i64, i64, i64, i64) =
            (r.get(0)?, r.get(1)?, r.get(2)?, r.get(5)?);
        let key: String = r.get(3)?;
        let value: Vec<u8> = r.get(4)?;
        let continues = open.as_ref().is_some_and(|((t, p, base, at), body)| {
            (*t, *p, *at) == (topic, partition, ts)
                && *base + i64::from(body.count()) == offset
                && !body.full_for(&key, &value)
        });
        if !continues {
            if let Some((at, body)) = open.take() {
                flush(at, body)?;
            }
            open = Some(((topic, partition, offset, ts), BodyWriter::default()));
        }
        open.as_mut().expect("opened above").1.push(&key, &value);
    }
    if let Some((at, body)) = open {
        flush(at, body)?;
    }
    Ok(())
}

/// Files from before index rows held several records (`record_keys.more`)
/// get the column, empty on their rows: each still names one record.
pub(super) fn record_keys_more(tx: &Transaction<'_>) -> rusqlite::Result<()> {
    let has_more: bool = tx.query_row(
        "SELECT EXISTS (SELECT 1 FROM pragma_table_info('record_keys') WHERE name = 'more')",
        [],
        |r| r.get(0),
    )?;
    if !has_more {
        tx.execute_batch("ALTER TABLE record_keys ADD COLUMN more BLOB;")?;
    }
    Ok(())
}
