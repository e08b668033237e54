//! The secondary index (`record_keys`): where the records of one key
//! ([`Record::index`](crate::Record), a notification) are.
//!
//! A row per record made the index the writer's largest B-tree cost after
//! the record batches themselves: a seek and an insert for every event, six
//! per notification. One commit often appends several records of the same
//! key (a router's `Routed` and `DispatchRequested`, a sink's `Sent` and
//! `Delivered`, in two topics or one), so an append job writes one row per
//! key: the first record's batch and position are the row's key, and the
//! others follow in `more`. Inserted in key order, neighbouring rows share
//! their leaf pages.

use bytes::Bytes;
use rusqlite::Transaction;

use clarion_sqlite::multi_row;

/// One record under a key: its batch (`record_batches.id`) and position.
pub(super) type Place = (i64, u32);

/// `more` holds each further record as 8 bytes: how far its batch id is past
/// the row's (`u32`, little-endian; an append job's batches are inserted in
/// one transaction, one after the other), then its position (`u32`, LE).
const MORE_ENTRY: usize = 8;

/// `INSERT INTO record_keys` statements of 1, 2, 4, ... rows
/// ([`multi_row`]).
fn insert_sql() -> &'static [String] {
    static SQL: std::sync::OnceLock<Vec<String>> = std::sync::OnceLock::new();
    SQL.get_or_init(|| {
        multi_row::statements(
            "INSERT OR FAIL INTO record_keys (idx, batch, pos, more)",
            "(?,?,?,?)",
            "",
        )
    })
}

/// A row to insert: a key, its first place, the others encoded.
struct Row<'a> {
    idx: &'a [u8],
    first: Place,
    more: Option<Vec<u8>>,
}

/// Groups `entries` (a key and a place, in the order the records were
/// appended) into one row per key, in key order.
fn rows(entries: &mut [(Bytes, i64, u32)]) -> Vec<Row<'_>> {
    // Stable: a key's places stay in append order, so batch ids only grow.
    entries.sort_by(|a, b| a.0.cmp(&b.0));
    let mut out: Vec<Row<'_>> = Vec::with_capacity(entries.len());
    for (idx, batch, pos) in entries.iter() {
        match out.last_mut() {
            Some(row) if row.idx == &idx[..] => {
                let more = row.more.get_or_insert_with(Vec::new);
                let delta = u32::try_from(batch - row.first.0)
                    .expect("an append job's batches are a few ids apart");
                more.extend_from_slice(&delta.to_le_bytes());
                more.extend_from_slice(&pos.to_le_bytes());
            }
            _ => out.push(Row {
                idx,
                first: (*batch, *pos),
                more: None,
            }),
        }
    }
    out
}

/// Inserts the index rows of one append job's `entries`, many to a
/// statement.
pub(super) fn insert(
    tx: &Transaction<'_>,
    entries: &mut [(Bytes, i64, u32)],
) -> rusqlite::Result<()> {
    let rows = rows(entries);
    let mut rest = &rows[..];
    while !rest.is_empty() {
        let (shift, n) = multi_row::chunk(rest.len());
        let (chunk, tail) = rest.split_at(n);
        let mut stmt = tx.prepare_cached(&insert_sql()[shift])?;
        for (i, row) in chunk.iter().enumerate() {
            stmt.raw_bind_parameter(4 * i + 1, row.idx)?;
            stmt.raw_bind_parameter(4 * i + 2, row.first.0)?;
            stmt.raw_bind_parameter(4 * i + 3, row.first.1)?;
            stmt.raw_bind_parameter(4 * i + 4, row.more.as_deref())?;
        }
        stmt.raw_execute()?;
        rest = tail;
    }
    Ok(())
}

/// Every place a row names: its own, then those in `more`. `None` if `more`
/// is not a whole number of entries.
pub(super) fn places(first: Place, more: Option<&[u8]>) -> Option<Vec<Place>> {
    let more = more.unwrap_or_default();
    if !more.len().is_multiple_of(MORE_ENTRY) {
        return None;
    }
    let mut out = Vec::with_capacity(1 + more.len() / MORE_ENTRY);
    out.push(first);
    for e in more.chunks_exact(MORE_ENTRY) {
        let delta = u32::from_le_bytes(e[..4].try_into().expect("4 bytes"));
        let pos = u32::from_le_bytes(e[4..].try_into().expect("4 bytes"));
        out.push((first.0 + i64::from(delta), pos));
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(idx: &str, batch: i64, pos: u32) -> (Bytes, i64, u32) {
        (Bytes::copy_from_slice(idx.as_bytes()), batch, pos)
    }

    #[test]
    fn one_row_per_key_in_key_order_with_places_in_append_order() {
        let mut entries = vec![
            entry("n2", 10, 0),
            entry("n1", 10, 1),
            entry("n2", 10, 2),
            entry("n1", 12, 0),
            entry("n3", 12, 1),
            entry("n2", 13, 7),
        ];
        let rows = rows(&mut entries);
        let got: Vec<(&[u8], Vec<Place>)> = rows
            .iter()
            .map(|r| (r.idx, places(r.first, r.more.as_deref()).expect("decodes")))
            .collect();
        assert_eq!(
            got,
            vec![
                (&b"n1"[..], vec![(10, 1), (12, 0)]),
                (&b"n2"[..], vec![(10, 0), (10, 2), (13, 7)]),
                (&b"n3"[..], vec![(12, 1)]),
            ]
        );
        // A key with one record stores no `more`.
        assert!(rows[2].more.is_none());
    }

    #[test]
    fn damaged_more_is_refused() {
        assert_eq!(places((5, 1), Some(&[1, 2, 3])), None);
        assert_eq!(places((5, 1), None), Some(vec![(5, 1)]));
        assert_eq!(places((5, 1), Some(&[])), Some(vec![(5, 1)]));
    }
}
