//! The store as seen by a batch decided while the previous one commits.
//!
//! A runner on the embedded default hands a batch to the file's writer and,
//! instead of idling until it commits, decides the next batch meanwhile
//! (`PartitionRunner::run`). That next batch must read the state the first
//! one leaves, which is not in the store yet: [`Overlay`] answers reads from
//! the committing batch's writes where they touch the key, and from the
//! store elsewhere. The next batch is handed over only once the first one
//! committed, so a failed commit never leaves a later batch committed on
//! state that does not exist.

use std::hash::BuildHasher;
use std::ops::RangeBounds;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use clarion_store::{Op, Result, RowKey, Scan, Store, WriteBatch};

/// `store` with `pending`'s writes applied over it, for reads.
pub struct Overlay {
    store: Arc<dyn Store>,
    pending: Option<Arc<WriteBatch>>,
    /// Op positions by key hash, built on the first point read: a batch
    /// holds thousands of ops, and a router batch reads as many keys.
    index: OnceLock<foldhash::HashMap<u64, Vec<usize>>>,
    hasher: foldhash::fast::RandomState,
}

fn key_of(op: &Op) -> &RowKey {
    match op {
        Op::Put { key, .. } | Op::Delete { key } => key,
    }
}

/// What the pending batch says of a row: `None` if it does not touch it.
type Said = Option<Option<Bytes>>;

fn said(op: &Op) -> Option<Bytes> {
    match op {
        Op::Put { value, .. } => Some(value.clone()),
        Op::Delete { .. } => None,
    }
}

impl Overlay {
    /// Reads of `store`, seeing `pending`'s writes (if any) as if committed.
    pub fn new(store: Arc<dyn Store>, pending: Option<Arc<WriteBatch>>) -> Overlay {
        Overlay {
            store,
            pending,
            index: OnceLock::new(),
            hasher: foldhash::fast::RandomState::default(),
        }
    }

    fn hash(&self, key: &RowKey) -> u64 {
        self.hasher.hash_one(key)
    }

    /// The last op of the pending batch on `key` decides the row.
    fn lookup(&self, key: &RowKey) -> Said {
        let pending = self.pending.as_ref()?;
        let index = self.index.get_or_init(|| {
            let mut m: foldhash::HashMap<u64, Vec<usize>> = Default::default();
            for (i, op) in pending.ops.iter().enumerate() {
                m.entry(self.hash(key_of(op))).or_default().push(i);
            }
            m
        });
        let at = index.get(&self.hash(key))?;
        at.iter()
            .rev()
            .map(|&i| &pending.ops[i])
            .find(|op| key_of(op) == key)
            .map(said)
    }
}

#[async_trait]
impl Store for Overlay {
    async fn get(&self, key: &RowKey) -> Result<Option<Bytes>> {
        match self.lookup(key) {
            Some(row) => Ok(row),
            None => self.store.get(key).await,
        }
    }

    async fn get_many(&self, keys: &[RowKey]) -> Result<Vec<Option<Bytes>>> {
        if self.pending.is_none() {
            return self.store.get_many(keys).await;
        }
        let said: Vec<Said> = keys.iter().map(|k| self.lookup(k)).collect();
        let missing: Vec<RowKey> = keys
            .iter()
            .zip(&said)
            .filter(|(_, s)| s.is_none())
            .map(|(k, _)| k.clone())
            .collect();
        let mut stored = if missing.is_empty() {
            Vec::new()
        } else {
            self.store.get_many(&missing).await?
        }
        .into_iter();
        Ok(said
            .into_iter()
            .map(|s| s.unwrap_or_else(|| stored.next().flatten()))
            .collect())
    }

    async fn scan(&self, scan: &Scan) -> Result<Vec<(Vec<u8>, Bytes)>> {
        let Some(pending) = &self.pending else {
            return self.store.scan(scan).await;
        };
        // The pending batch's rows of this range, last op per key.
        let mut over = std::collections::BTreeMap::<Vec<u8>, Option<Bytes>>::new();
        let range = (scan.from.as_ref(), scan.to.as_ref());
        for op in &pending.ops {
            let k = key_of(op);
            if k.table == scan.table
                && k.tenant == scan.tenant
                && k.pk == scan.pk
                && RangeBounds::<Vec<u8>>::contains(&range, &k.ck)
            {
                over.insert(k.ck.clone(), said(op));
            }
        }
        if over.is_empty() {
            return self.store.scan(scan).await;
        }
        // Every pending delete may hide a stored row: read that many more so
        // `limit` rows remain when the store has them.
        let deletes = over.values().filter(|v| v.is_none()).count();
        let mut wider = scan.clone();
        wider.limit = scan.limit.saturating_add(deletes);
        let mut rows: std::collections::BTreeMap<Vec<u8>, Bytes> =
            self.store.scan(&wider).await?.into_iter().collect();
        for (ck, v) in over {
            match v {
                Some(v) => rows.insert(ck, v),
                None => rows.remove(&ck),
            };
        }
        let mut out: Vec<(Vec<u8>, Bytes)> = rows.into_iter().collect();
        if scan.reverse {
            out.reverse();
        }
        out.truncate(scan.limit);
        Ok(out)
    }

    /// Processors do not write directly (their writes go in their batch);
    /// should one, it writes the store.
    async fn write(&self, batch: WriteBatch) -> Result<()> {
        self.store.write(batch).await
    }

    async fn insert_if_absent(
        &self,
        key: &RowKey,
        value: Bytes,
        ttl: Option<Duration>,
    ) -> Result<Option<Bytes>> {
        self.store.insert_if_absent(key, value, ttl).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clarion_store::embedded::SqliteStore;
    use clarion_store::Table;
    use std::ops::Bound;

    fn key(pk: &str, ck: &[u8]) -> RowKey {
        RowKey::new(Table::Runs, "acme", pk, ck.to_vec())
    }

    async fn store_with(rows: &[(&str, &[u8], &str)]) -> (tempfile::TempDir, Arc<dyn Store>) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.db");
        let store: Arc<dyn Store> = Arc::new(SqliteStore::open(path.to_str().unwrap()).unwrap());
        let mut b = WriteBatch::new();
        for (pk, ck, v) in rows {
            b.put(key(pk, ck), Bytes::copy_from_slice(v.as_bytes()));
        }
        store.write(b).await.unwrap();
        (dir, store)
    }

    #[tokio::test]
    async fn point_reads_see_the_last_pending_op_else_the_store() {
        let (_d, store) = store_with(&[("a", b"", "a0"), ("b", b"", "b0"), ("c", b"", "c0")]).await;
        let mut p = WriteBatch::new();
        p.put(key("a", b""), "a1")
            .delete(key("b", b""))
            .put(key("d", b""), "d1")
            .put(key("a", b""), "a2");
        let view = Overlay::new(store.clone(), Some(Arc::new(p)));
        let b = |s: &str| Some(Bytes::copy_from_slice(s.as_bytes()));
        assert_eq!(view.get(&key("a", b"")).await.unwrap(), b("a2"));
        assert_eq!(view.get(&key("b", b"")).await.unwrap(), None);
        assert_eq!(view.get(&key("c", b"")).await.unwrap(), b("c0"));
        let many = view
            .get_many(&[
                key("c", b""),
                key("b", b""),
                key("x", b""),
                key("d", b""),
                key("a", b""),
            ])
            .await
            .unwrap();
        assert_eq!(many, vec![b("c0"), None, None, b("d1"), b("a2")]);
        // Without a pending batch it is the store.
        let plain = Overlay::new(store, None);
        assert_eq!(plain.get(&key("b", b"")).await.unwrap(), b("b0"));
    }

    #[tokio::test]
    async fn scans_merge_pending_rows_in_order_and_keep_the_limit() {
        let (_d, store) = store_with(&[
            ("p", b"1", "s1"),
            ("p", b"2", "s2"),
            ("p", b"3", "s3"),
            ("p", b"4", "s4"),
            ("q", b"1", "q1"),
        ])
        .await;
        let mut p = WriteBatch::new();
        p.delete(key("p", b"1"))
            .delete(key("p", b"2"))
            .put(key("p", b"25"), "n25")
            .put(key("p", b"3"), "n3")
            .put(key("q", b"0"), "q0");
        let view = Overlay::new(store, Some(Arc::new(p)));
        let got = |rows: Vec<(Vec<u8>, Bytes)>| {
            rows.into_iter()
                .map(|(ck, v)| {
                    (
                        String::from_utf8(ck).unwrap(),
                        String::from_utf8(v.to_vec()).unwrap(),
                    )
                })
                .collect::<Vec<_>>()
        };
        let s = |a: &str, b: &str| (a.to_string(), b.to_string());
        // Two rows the store has first are deleted: the limit still fills.
        let two = view
            .scan(&Scan::partition(Table::Runs, "acme", "p", 2))
            .await
            .unwrap();
        assert_eq!(got(two), vec![s("25", "n25"), s("3", "n3")]);
        let rev = view
            .scan(&Scan::partition(Table::Runs, "acme", "p", 3).reversed())
            .await
            .unwrap();
        assert_eq!(got(rev), vec![s("4", "s4"), s("3", "n3"), s("25", "n25")]);
        let ranged = view
            .scan(
                &Scan::partition(Table::Runs, "acme", "p", 10)
                    .range(Bound::Excluded(b"25".to_vec()), Bound::Unbounded),
            )
            .await
            .unwrap();
        assert_eq!(got(ranged), vec![s("3", "n3"), s("4", "s4")]);
        let other = view
            .scan(&Scan::partition(Table::Runs, "acme", "q", 10))
            .await
            .unwrap();
        assert_eq!(got(other), vec![s("0", "q0"), s("1", "q1")]);
    }
}
