//! `clarion audit verify`: recomputes every chain from the log and compares
//! it with the notary's stored links and signed checkpoints.
//!
//! Per partition, each tenant's records are hashed in offset order from
//! the genesis hash and checked against the next stored item of that
//! tenant ([`cursor`]): a link at the same offset must hold the same hash;
//! a checkpoint must carry a valid signature over the recomputed head. A
//! mismatch is a break; the walk then goes on from the stored hash, so an
//! edit of one record shows as one break, at that record. Records past the
//! notary's position are the unchained tail, not breaks.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use clarion_log::EventLog;
use clarion_store::{Scan, Store, Table, SYSTEM_TENANT};
use futures::StreamExt;

use crate::chain::{genesis, link, Hash};
use crate::envelope::chain_tenant;
use crate::rows::{self, Checkpoint};
use crate::signing::{PublicKey, Statement};
use crate::walk::{Part, Walker};
use crate::Result;

mod cursor;
use cursor::{Cursor, Item};

/// A place where the log and the chain disagree.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Break {
    pub topic: String,
    pub partition: u32,
    pub offset: u64,
    pub tenant: String,
    pub what: String,
}

/// What a verification found.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct Report {
    /// Records read (of the tenant asked for, or all).
    pub records: u64,
    /// Records whose link was compared.
    pub checked: u64,
    /// Records past the notary's position: not chained yet.
    pub tail: u64,
    /// Signed checkpoints verified.
    pub checkpoints: u64,
    pub breaks: u64,
    /// The first break, in topic, partition and offset order.
    pub first_break: Option<Break>,
    #[serde(skip)]
    pub elapsed: Duration,
}

impl Report {
    pub fn events_per_s(&self) -> f64 {
        self.records as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    fn merge(&mut self, other: Report) {
        self.records += other.records;
        self.checked += other.checked;
        self.tail += other.tail;
        self.checkpoints += other.checkpoints;
        self.breaks += other.breaks;
        if self.first_break.is_none() {
            self.first_break = other.first_break;
        }
    }
}

/// What to verify, and with which key.
#[derive(Clone)]
pub struct Verify {
    pub log: Arc<dyn EventLog>,
    pub store: Arc<dyn Store>,
    pub parts: Vec<Part>,
    /// Only this tenant's chains (`None`: every tenant).
    pub tenant: Option<String>,
    pub public_key: PublicKey,
    /// Partitions verified at once.
    pub concurrency: usize,
}

impl Verify {
    /// The records to read (the sum of the partitions' end offsets), for a
    /// progress bar.
    pub async fn total(&self) -> Result<u64> {
        let mut total = 0;
        for p in &self.parts {
            total += self.log.end_offset(&p.name, p.partition).await?;
        }
        Ok(total)
    }

    /// Verifies every partition; `progress` hears of records read.
    pub async fn run(&self, progress: &(dyn Fn(u64) + Send + Sync)) -> Result<Report> {
        let started = Instant::now();
        let reports: Vec<Result<Report>> = futures::stream::iter(self.parts.iter())
            .map(|p| self.part(p, progress))
            .buffered(self.concurrency.max(1))
            .collect()
            .await;
        let mut out = Report::default();
        for r in reports {
            out.merge(r?);
        }
        out.elapsed = started.elapsed();
        Ok(out)
    }

    async fn part(&self, part: &Part, progress: &(dyn Fn(u64) + Send + Sync)) -> Result<Report> {
        // The notary's state first: it never passes the end read after it.
        let (position, tenants) = self.notary_state(part).await?;
        let end = self.log.end_offset(&part.name, part.partition).await?;
        let mut check = PartCheck {
            verify: self,
            part,
            position,
            tenants: HashMap::new(),
            report: Report::default(),
        };
        if end < position {
            check.found(end, SYSTEM_TENANT, format!("the log ends at offset {end} but the notary chained up to {position}: records were removed"));
        }
        let mut walker = match end {
            0 => None,
            _ => Some(Walker::open(&*self.log, part, 0, end).await?),
        };
        while let Some(batch) = match &mut walker {
            Some(w) => w.next().await?,
            None => None,
        } {
            progress(batch.len() as u64);
            for r in &batch {
                let tenant = chain_tenant(&r.value);
                if self.tenant.as_deref().is_some_and(|t| t != tenant) {
                    continue;
                }
                check.record(tenant, r.offset, &r.value).await?;
            }
        }
        for t in tenants {
            if self.tenant.as_deref().is_none_or(|want| want == t) {
                check.leftovers(&t).await?;
            }
        }
        let seen: Vec<String> = check.tenants.keys().cloned().collect();
        for t in seen {
            check.leftovers(&t).await?;
        }
        Ok(check.report)
    }

    /// The notary's position and the tenants it chained on `part`.
    async fn notary_state(&self, part: &Part) -> Result<(u64, Vec<String>)> {
        let pk = rows::notary_pk(part.base, part.partition);
        let stored = self
            .store
            .scan(&Scan::partition(
                Table::Chain,
                SYSTEM_TENANT,
                &pk,
                1_000_000,
            ))
            .await?;
        let mut position = 0;
        let mut tenants = Vec::new();
        for (ck, v) in stored {
            if ck == rows::POSITION_CK {
                position = v.get(..8).map_or(0, |b| {
                    u64::from_be_bytes(b.try_into().expect("eight bytes"))
                });
            } else {
                tenants.push(String::from_utf8_lossy(&ck).into_owned());
            }
        }
        Ok((position, tenants))
    }
}

/// One tenant's chain being recomputed.
struct TenantChain {
    prev: Hash,
    cursor: Cursor,
}

/// The verification of one partition.
struct PartCheck<'a> {
    verify: &'a Verify,
    part: &'a Part,
    position: u64,
    tenants: HashMap<String, TenantChain>,
    report: Report,
}

impl PartCheck<'_> {
    fn found(&mut self, offset: u64, tenant: &str, what: String) {
        self.report.breaks += 1;
        let b = Break {
            topic: self.part.base.to_string(),
            partition: self.part.partition,
            offset,
            tenant: tenant.to_string(),
            what,
        };
        match &self.report.first_break {
            Some(f) if f.offset <= offset => {}
            _ => self.report.first_break = Some(b),
        }
    }

    fn chain_of(&mut self, tenant: &str) -> &mut TenantChain {
        if !self.tenants.contains_key(tenant) {
            let c = TenantChain {
                prev: genesis(tenant, self.part.base, self.part.partition),
                cursor: Cursor::new(
                    self.verify.store.clone(),
                    tenant,
                    rows::chain_pk(self.part.base, self.part.partition),
                ),
            };
            self.tenants.insert(tenant.to_string(), c);
        }
        self.tenants.get_mut(tenant).expect("inserted above")
    }

    /// Checks the record of `tenant` at `offset`.
    async fn record(&mut self, tenant: &str, offset: u64, value: &[u8]) -> Result<()> {
        self.report.records += 1;
        self.chain_of(tenant);
        // A borrow of the map alone, so the report can be counted meanwhile.
        let chain = self.tenants.get_mut(tenant).expect("made above");
        let h = link(&chain.prev, offset, value);
        // The common case, without an await: the next stored link is this
        // record's, equal, and more links of its row follow.
        if let Some(&Item::Link(at, stored)) = chain.cursor.front() {
            if at == offset && stored == h {
                chain.prev = stored;
                chain.cursor.pop();
                self.report.checked += 1;
                if matches!(chain.cursor.front(), Some(Item::Link(..))) {
                    return Ok(());
                }
                return self.checkpoints_at(tenant, offset, &stored).await;
            }
        }
        self.skip_stale(tenant, offset).await?;
        let peeked = self.chain_of(tenant).cursor.peek().await?.cloned();
        match peeked {
            Some(Item::Link(at, stored)) if at == offset => {
                self.report.checked += 1;
                if stored != h {
                    self.found(offset, tenant, "the record's hash differs from its stored link: this record (or the chain row) was changed".into());
                }
                let chain = self.chain_of(tenant);
                chain.prev = stored;
                chain.cursor.pop();
                self.checkpoints_at(tenant, offset, &stored).await?;
            }
            _ => {
                self.chain_of(tenant).prev = h;
                if offset < self.position {
                    self.found(offset, tenant, "the record has no stored link although the notary chained past it: a record was added or its tenant changed".into());
                } else {
                    self.report.tail += 1;
                }
            }
        }
        Ok(())
    }

    /// Stored items before `offset` that no record of the tenant matched.
    async fn skip_stale(&mut self, tenant: &str, offset: u64) -> Result<()> {
        loop {
            let peeked = self.chain_of(tenant).cursor.peek().await?.cloned();
            let what = match peeked {
                Some(Item::Link(at, _)) if at < offset => (at, "a stored link has no record of this tenant at its offset: the record was removed or its tenant changed"),
                Some(Item::Checkpoint(c)) if c.offset < offset => (c.offset, "a signed checkpoint names an offset with no record of this tenant"),
                _ => return Ok(()),
            };
            self.found(what.0, tenant, what.1.into());
            self.chain_of(tenant).cursor.pop();
        }
    }

    /// Checks the checkpoints stored right after the link of `offset`
    /// against the stored head `h` (itself checked against the record just
    /// before): links rewritten after signing differ from the signed head.
    async fn checkpoints_at(&mut self, tenant: &str, offset: u64, h: &Hash) -> Result<()> {
        loop {
            let Some(Item::Checkpoint(c)) = self.chain_of(tenant).cursor.peek().await?.cloned()
            else {
                return Ok(());
            };
            if c.offset != offset {
                return Ok(());
            }
            self.chain_of(tenant).cursor.pop();
            self.report.checkpoints += 1;
            if let Some(what) = self.bad_checkpoint(tenant, &c, h) {
                self.found(offset, tenant, what);
            }
        }
    }

    fn bad_checkpoint(&self, tenant: &str, c: &Checkpoint, h: &Hash) -> Option<String> {
        let statement = Statement {
            tenant,
            topic: self.part.base,
            partition: self.part.partition,
            offset: c.offset,
            head: &c.head,
            at_ms: c.at_ms,
        };
        if !self.verify.public_key.verify(&statement, &c.signature) {
            return Some("the checkpoint's signature does not verify with this public key".into());
        }
        (c.head != *h).then(|| {
            "the signed checkpoint's head differs from the stored chain: the links were rewritten after signing".into()
        })
    }

    /// Stored items of `tenant` left after the walk that the notary had
    /// chained (their records are gone).
    async fn leftovers(&mut self, tenant: &str) -> Result<()> {
        self.skip_stale(tenant, self.position).await
    }
}
