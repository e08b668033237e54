//! The store as one inbox batch sees it: its own writes over the store.
//!
//! A batch may write an item and mark it, or mark a whole feed twice; its
//! writes reach the store only at the commit, so reads inside the batch go
//! through this view. Each row keeps its last write only, so the batch
//! hands the store one op per row (a backend need not order ops on one key).

use std::collections::{BTreeMap, HashMap};
use std::ops::Bound;

use bytes::Bytes;
use clarion_store::{RowKey, Scan, Store, StoreError, Table, WriteBatch};

pub struct Pending<'a> {
    store: &'a dyn Store,
    ops: HashMap<RowKey, Option<Bytes>>,
}

impl<'a> Pending<'a> {
    pub fn new(store: &'a dyn Store) -> Pending<'a> {
        Pending {
            store,
            ops: HashMap::new(),
        }
    }

    pub async fn get(&self, key: &RowKey) -> Result<Option<Bytes>, StoreError> {
        match self.ops.get(key) {
            Some(v) => Ok(v.clone()),
            None => self.store.get(key).await,
        }
    }

    pub fn put(&mut self, key: RowKey, value: Bytes) {
        self.ops.insert(key, Some(value));
    }

    pub fn delete(&mut self, key: RowKey) {
        self.ops.insert(key, None);
    }

    /// Up to `limit` rows of a partition below `upper` (exclusive),
    /// ascending or (`reverse`) descending.
    pub async fn scan(
        &self,
        table: Table,
        tenant: &str,
        pk: &str,
        upper: Option<Vec<u8>>,
        limit: usize,
        reverse: bool,
    ) -> Result<Vec<(Vec<u8>, Bytes)>, StoreError> {
        let below = |ck: &Vec<u8>| upper.as_ref().is_none_or(|u| ck < u);
        let over: BTreeMap<&Vec<u8>, &Option<Bytes>> = self
            .ops
            .iter()
            .filter(|(k, _)| k.table == table && k.tenant == tenant && k.pk == pk && below(&k.ck))
            .map(|(k, v)| (&k.ck, v))
            .collect();
        // Every delete may hide a stored row: read that many more.
        let deletes = over.values().filter(|v| v.is_none()).count();
        let mut scan = Scan::partition(table, tenant, pk, limit.saturating_add(deletes)).range(
            Bound::Unbounded,
            upper.clone().map_or(Bound::Unbounded, Bound::Excluded),
        );
        if reverse {
            scan = scan.reversed();
        }
        let mut rows: BTreeMap<Vec<u8>, Bytes> =
            self.store.scan(&scan).await?.into_iter().collect();
        for (ck, v) in over {
            match v {
                Some(v) => rows.insert(ck.clone(), v.clone()),
                None => rows.remove(ck),
            };
        }
        let mut out: Vec<(Vec<u8>, Bytes)> = rows.into_iter().collect();
        if reverse {
            out.reverse();
        }
        out.truncate(limit);
        Ok(out)
    }

    /// The batch's writes, one op per row.
    pub fn into_writes(self, writes: &mut WriteBatch) {
        for (k, v) in self.ops {
            match v {
                Some(v) => writes.put(k, v),
                None => writes.delete(k),
            };
        }
    }
}
