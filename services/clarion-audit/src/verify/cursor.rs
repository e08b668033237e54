//! A tenant's stored chain items of one partition, read a page at a time
//! in offset order.

use std::collections::VecDeque;
use std::ops::Bound;
use std::sync::Arc;

use clarion_store::{Scan, Store, Table};

use crate::chain::Hash;
use crate::rows::{ChainRow, Checkpoint};
use crate::Result;

/// Rows fetched per scan.
const PAGE: usize = 512;

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Item {
    Link(u64, Hash),
    Checkpoint(Checkpoint),
}

pub struct Cursor {
    store: Arc<dyn Store>,
    tenant: String,
    pk: String,
    items: VecDeque<Item>,
    /// The last ck read; `None` before the first page.
    after: Option<Vec<u8>>,
    done: bool,
}

impl Cursor {
    pub fn new(store: Arc<dyn Store>, tenant: &str, pk: String) -> Cursor {
        Cursor {
            store,
            tenant: tenant.to_string(),
            pk,
            items: VecDeque::new(),
            after: None,
            done: false,
        }
    }

    /// The next item, fetching a page when needed.
    pub async fn peek(&mut self) -> Result<Option<&Item>> {
        while self.items.is_empty() && !self.done {
            self.fetch().await?;
        }
        Ok(self.items.front())
    }

    /// The next item if it is already read.
    pub fn front(&self) -> Option<&Item> {
        self.items.front()
    }

    pub fn pop(&mut self) {
        self.items.pop_front();
    }

    async fn fetch(&mut self) -> Result<()> {
        let from = match &self.after {
            Some(ck) => Bound::Excluded(ck.clone()),
            None => Bound::Unbounded,
        };
        let scan = Scan::partition(Table::Chain, &self.tenant, &self.pk, PAGE)
            .range(from, Bound::Unbounded);
        let rows = self.store.scan(&scan).await?;
        self.done = rows.len() < PAGE;
        for (ck, v) in rows {
            let what = format!("{}/{}/{}", self.tenant, self.pk, hex::encode(&ck));
            let row = ChainRow::decode(&v, &what)?;
            self.items
                .extend(row.links.into_iter().map(|(o, h)| Item::Link(o, h)));
            self.items.extend(row.checkpoint.map(Item::Checkpoint));
            self.after = Some(ck);
        }
        Ok(())
    }
}
