//! The notary: the one chainer of a log partition.
//!
//! The log has many producers (several gateways and every processor), so
//! no appender knows the previous hash of a tenant's chain. One notary per
//! partition of every topic reads the records in offset order, chains each
//! tenant's records, and stores the links, the tenants' heads and its own
//! position in one store write per batch (a crash re-reads from the old
//! position and recomputes the same links). It never decodes a payload:
//! the tenant is read from the envelope ([`crate::envelope`]).
//!
//! Every `checkpoint-every` records or `checkpoint-interval-ms` of a
//! tenant's chain it signs a checkpoint (head hash, offset); an idle
//! partition gets its pending checkpoints from the clock.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use clarion_log::{EventLog, LogRecord};
use clarion_runtime::Clock;
use clarion_store::{RowKey, Scan, Store, Table, WriteBatch, SYSTEM_TENANT};
use tokio::sync::watch;

use crate::chain::{genesis, link};
use crate::envelope::chain_tenant;
use crate::rows::{self, ChainRow, Checkpoint, Head};
use crate::signing::{AuditKey, Statement};
use crate::walk::Part;
use crate::{AuditError, Result};

/// Most tenants' heads read back on start (a bound on one scan; a
/// partition holds far fewer tenants).
const MAX_TENANTS: usize = 1_000_000;

#[derive(Clone, Debug)]
pub struct NotaryConfig {
    /// Most records read and chained per store write.
    pub max_batch: usize,
    /// How long an idle read waits.
    pub poll_wait: Duration,
    /// How long the notary lets records gather after a batch that did not
    /// fill `max_batch` (`runtime.follower-linger-ms`): one store write per
    /// larger batch instead of one per spine commit.
    pub linger: Duration,
    pub checkpoint_every: u64,
    pub checkpoint_interval_ms: i64,
}

impl Default for NotaryConfig {
    fn default() -> Self {
        NotaryConfig {
            max_batch: 4096,
            poll_wait: Duration::from_millis(100),
            linger: Duration::ZERO,
            checkpoint_every: 10_000,
            checkpoint_interval_ms: 60_000,
        }
    }
}

/// The notary of one partition.
pub struct Notary {
    log: Arc<dyn EventLog>,
    store: Arc<dyn Store>,
    part: Part,
    clock: Arc<dyn Clock>,
    key: Arc<AuditKey>,
    cfg: NotaryConfig,
    /// Next offset to chain.
    position: u64,
    heads: HashMap<String, Head>,
}

impl Notary {
    pub fn new(
        log: Arc<dyn EventLog>,
        store: Arc<dyn Store>,
        part: Part,
        clock: Arc<dyn Clock>,
        key: Arc<AuditKey>,
        cfg: NotaryConfig,
    ) -> Notary {
        Notary {
            log,
            store,
            part,
            clock,
            key,
            cfg,
            position: 0,
            heads: HashMap::new(),
        }
    }

    /// Runs until `shutdown`, starting over from the store after an error.
    pub async fn run(mut self, mut shutdown: watch::Receiver<bool>) -> Result<()> {
        let mut backoff = Duration::from_millis(200);
        loop {
            match self.run_once(&mut shutdown).await {
                Ok(()) => return Ok(()),
                Err(e) => {
                    metrics::counter!("clarion_audit_notary_errors_total").increment(1);
                    tracing::warn!(topic = %self.part.name, partition = self.part.partition, error = %e, "notary failed; starting over from its stored position");
                }
            }
            tokio::select! {
                _ = tokio::time::sleep(backoff) => {}
                _ = shutdown.changed() => {}
            }
            if *shutdown.borrow() {
                return Ok(());
            }
            backoff = (backoff * 2).min(Duration::from_secs(30));
        }
    }

    async fn run_once(&mut self, shutdown: &mut watch::Receiver<bool>) -> Result<()> {
        self.load().await?;
        let mut sub = self
            .log
            .subscribe(&self.part.name, self.part.partition, self.position)
            .await?;
        while !*shutdown.borrow() {
            let records = sub
                .next_batch(self.cfg.max_batch, self.cfg.poll_wait)
                .await?;
            let now = self.clock.now_ms();
            let w = if records.is_empty() {
                self.idle_checkpoints(now)
            } else {
                self.chain(&records, now)
            };
            if !w.is_empty() {
                self.store.write(w).await?;
            }
            let partial = !records.is_empty() && records.len() < self.cfg.max_batch;
            if partial && !self.cfg.linger.is_zero() {
                tokio::time::sleep(self.cfg.linger).await;
            }
        }
        Ok(())
    }

    /// Chains everything up to the partition's current end, then returns
    /// the next offset (tests, and a catch-up without a running server).
    pub async fn catch_up(&mut self) -> Result<u64> {
        self.load().await?;
        let end = self
            .log
            .end_offset(&self.part.name, self.part.partition)
            .await?;
        let mut writes = Vec::new();
        let from = self.position;
        let part = self.part.clone();
        let log = self.log.clone();
        crate::walk::walk(&*log, &part, from, end, |records| {
            let now = self.clock.now_ms();
            writes.push(self.chain(records, now));
            true
        })
        .await?;
        for w in writes {
            self.store.write(w).await?;
        }
        let idle = self.idle_checkpoints(self.clock.now_ms());
        if !idle.is_empty() {
            self.store.write(idle).await?;
        }
        Ok(self.position)
    }

    /// Reads the position and the heads back from the store.
    async fn load(&mut self) -> Result<()> {
        let pk = rows::notary_pk(self.part.base, self.part.partition);
        let stored = self
            .store
            .scan(&Scan::partition(
                Table::Chain,
                SYSTEM_TENANT,
                &pk,
                MAX_TENANTS,
            ))
            .await?;
        self.position = 0;
        self.heads.clear();
        for (ck, v) in stored {
            if ck == rows::POSITION_CK {
                let raw = <[u8; 8]>::try_from(&v[..]).map_err(|_| AuditError::Row {
                    what: format!("{pk} position"),
                    reason: "not 8 bytes".into(),
                })?;
                self.position = u64::from_be_bytes(raw);
                continue;
            }
            let tenant = String::from_utf8_lossy(&ck).into_owned();
            let head = Head::decode(&v, &format!("{pk} head of {tenant}"))?;
            self.heads.insert(tenant, head);
        }
        Ok(())
    }

    /// The store write that chains `records` (in offset order).
    fn chain(&mut self, records: &[LogRecord], now: i64) -> WriteBatch {
        let (base, partition) = (self.part.base, self.part.partition);
        let mut links: HashMap<&str, ChainRow> = HashMap::new();
        for r in records {
            let tenant = chain_tenant(&r.value);
            if !self.heads.contains_key(tenant) {
                let fresh = Head {
                    offset: 0,
                    hash: genesis(tenant, base, partition),
                    unsigned: 0,
                    since_ms: now,
                };
                self.heads.insert(tenant.to_string(), fresh);
            }
            let head = self.heads.get_mut(tenant).expect("inserted above");
            if head.unsigned == 0 {
                head.since_ms = now;
            }
            head.hash = link(&head.hash, r.offset, &r.value);
            head.offset = r.offset;
            head.unsigned += 1;
            links
                .entry(tenant)
                .or_default()
                .links
                .push((r.offset, head.hash));
        }
        let mut w = WriteBatch::new();
        let pk = rows::chain_pk(base, partition);
        for (tenant, mut row) in links {
            let mut head = self.heads[tenant];
            row.checkpoint = self.due(tenant, &mut head, now);
            *self.heads.get_mut(tenant).expect("chained above") = head;
            let first = row.links[0].0;
            w.put(
                RowKey::new(Table::Chain, tenant, &pk, rows::batch_ck(first)),
                row.encode(),
            );
            self.put_head(&mut w, tenant);
        }
        if let Some(last) = records.last() {
            self.position = last.offset + 1;
        }
        self.put_position(&mut w);
        metrics::counter!("clarion_audit_chained_records_total").increment(records.len() as u64);
        w
    }

    /// Checkpoints owed by the clock alone (no new records).
    fn idle_checkpoints(&mut self, now: i64) -> WriteBatch {
        let mut w = WriteBatch::new();
        let pk = rows::chain_pk(self.part.base, self.part.partition);
        let due: Vec<String> = self
            .heads
            .iter()
            .filter(|(_, h)| h.unsigned > 0 && now - h.since_ms >= self.cfg.checkpoint_interval_ms)
            .map(|(t, _)| t.clone())
            .collect();
        for tenant in due {
            let mut head = self.heads[&tenant];
            let checkpoint = self.due(&tenant, &mut head, now);
            self.heads.insert(tenant.clone(), head);
            let row = ChainRow {
                links: Vec::new(),
                checkpoint,
            };
            w.put(
                RowKey::new(Table::Chain, &tenant, &pk, rows::checkpoint_ck(head.offset)),
                row.encode(),
            );
            self.put_head(&mut w, &tenant);
        }
        w
    }

    /// A signed checkpoint of `head` if one is due (resetting its count).
    fn due(&self, tenant: &str, head: &mut Head, now: i64) -> Option<Checkpoint> {
        let by_count = head.unsigned >= self.cfg.checkpoint_every;
        let by_time = head.unsigned > 0 && now - head.since_ms >= self.cfg.checkpoint_interval_ms;
        if !(by_count || by_time) {
            return None;
        }
        let signature = self.key.sign(&Statement {
            tenant,
            topic: self.part.base,
            partition: self.part.partition,
            offset: head.offset,
            head: &head.hash,
            at_ms: now,
        });
        head.unsigned = 0;
        head.since_ms = now;
        metrics::counter!("clarion_audit_checkpoints_total").increment(1);
        Some(Checkpoint {
            offset: head.offset,
            head: head.hash,
            at_ms: now,
            signature,
        })
    }

    fn put_head(&self, w: &mut WriteBatch, tenant: &str) {
        let pk = rows::notary_pk(self.part.base, self.part.partition);
        w.put(
            RowKey::new(Table::Chain, SYSTEM_TENANT, &pk, tenant.as_bytes().to_vec()),
            self.heads[tenant].encode(),
        );
    }

    fn put_position(&self, w: &mut WriteBatch) {
        let pk = rows::notary_pk(self.part.base, self.part.partition);
        w.put(
            RowKey::new(Table::Chain, SYSTEM_TENANT, &pk, rows::POSITION_CK.to_vec()),
            self.position.to_be_bytes().to_vec(),
        );
    }
}
