//! Digests in the router: the accumulator's decisions (`clarion_domain::digest`)
//! turned into rows of `Table::Digests`, written in the batch's commit with
//! the runs they concern, so that under retries, concurrent triggers and a
//! crash anywhere each event lands in exactly one digest and each digest
//! closes once.
//!
//! Rows (partition: the subscriber; clustering key `workflow 0x00 key 0x00`
//! then `0x00` for the header or `0x01` + the item number, big-endian): an
//! append is one row, whatever the digest holds; the close reads the items
//! in order and deletes them. The leader's run keeps the closed digest
//! (`RunRecord::digest`) for its sends.

use std::ops::Bound;

use bytes::Bytes;
use clarion_domain::digest::{self, Batch as DigestBatch, Decision, Item, Open, Rule};
use clarion_domain::flow::run::{Purpose, Waiting};
use clarion_domain::flow::{Digested, Input as RunInput};
use clarion_domain::recipient::Map as FastMap;
use clarion_domain::{Event, Id};
use clarion_proto::events as pb;
use clarion_store::{RowKey, Scan, Store, Table};

use super::{Router, RunRecord};
use crate::processor::{Batch, ProcessError};

/// An open digest's address: tenant, subscriber, workflow, key value.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(super) struct DigestKey {
    pub tenant: String,
    pub subscriber: String,
    pub workflow: String,
    pub key: String,
}

impl DigestKey {
    /// `workflow 0x00 key 0x00`: every row of this digest starts so.
    fn prefix(&self) -> Vec<u8> {
        let mut ck = Vec::with_capacity(self.workflow.len() + self.key.len() + 7);
        ck.extend_from_slice(self.workflow.as_bytes());
        ck.push(0);
        ck.extend_from_slice(self.key.as_bytes());
        ck.push(0);
        ck
    }

    fn row(&self, ck: Vec<u8>) -> RowKey {
        RowKey::new(Table::Digests, &self.tenant, &self.subscriber, ck)
    }

    fn header(&self) -> RowKey {
        let mut ck = self.prefix();
        ck.push(0);
        self.row(ck)
    }

    fn item(&self, no: u32) -> RowKey {
        let mut ck = self.prefix();
        ck.push(1);
        ck.extend_from_slice(&no.to_be_bytes());
        self.row(ck)
    }
}

/// This batch's view of the digests it touched: headers as they are now
/// (`None`: closed or never open) and the items appended, which the store
/// does not hold until the batch commits. Cleared between batches.
#[derive(Default)]
pub(super) struct Touched {
    open: FastMap<DigestKey, Option<Open>>,
    items: FastMap<DigestKey, Vec<(u32, Item)>>,
    /// Digests filled by a joining run: closed once that run is settled.
    to_close: Vec<(DigestKey, String)>,
}

impl Touched {
    pub(super) fn clear(&mut self) {
        self.open.clear();
        self.items.clear();
        self.to_close.clear();
    }
}

/// Rows a flush of every key of a workflow reads at most (the open
/// digests' headers and items).
const MAX_OPEN_ROWS: usize = 1_000_000;

fn encode<T: serde::Serialize>(v: &T) -> Bytes {
    Bytes::from(rmp_serde::to_vec(v).expect("digest rows serialize"))
}

fn decode<T: serde::de::DeserializeOwned>(b: &[u8]) -> Result<T, ProcessError> {
    rmp_serde::from_slice(b).map_err(|e| {
        ProcessError::Store(clarion_store::StoreError::Storage(format!(
            "undecodable digest row: {e}"
        )))
    })
}

impl Router {
    /// The open digest at `dk`, as this batch sees it.
    async fn open_digest(
        &mut self,
        store: &dyn Store,
        dk: &DigestKey,
    ) -> Result<Option<Open>, ProcessError> {
        if let Some(o) = self.digests.open.get(dk) {
            return Ok(o.clone());
        }
        let open = match store.get(&dk.header()).await? {
            Some(b) => Some(decode::<Open>(&b)?),
            None => None,
        };
        self.digests.open.insert(dk.clone(), open.clone());
        Ok(open)
    }

    fn put_header(&mut self, batch: &mut Batch, dk: &DigestKey, open: Open) {
        batch.writes.put(dk.header(), encode(&open));
        self.digests.open.insert(dk.clone(), Some(open));
    }

    fn put_item(&mut self, batch: &mut Batch, dk: &DigestKey, no: u32, item: Item) {
        batch.writes.put(dk.item(no), encode(&item));
        self.digests
            .items
            .entry(dk.clone())
            .or_default()
            .push((no, item));
    }

    /// A run reached digest step `step` with key value `key`: leads or joins
    /// the open digest, or is not digested (critical, an unusable key, a
    /// schedule without a next occurrence). Returns the run's answer, and
    /// the closed digest when the leader's own item filled it.
    #[allow(clippy::too_many_arguments)]
    pub(super) async fn digest_arrival(
        &mut self,
        store: &dyn Store,
        batch: &mut Batch,
        tenant: &str,
        rec: &RunRecord,
        flow: &clarion_domain::flow::Flow,
        step: &str,
        key: String,
    ) -> Result<(Vec<RunInput>, Option<DigestBatch>), ProcessError> {
        let bypass = |reason: String| {
            Ok((
                vec![RunInput::Digested(Digested::Bypassed { reason })],
                None,
            ))
        };
        if rec.critical {
            return bypass(digest::CRITICAL_BYPASS.into());
        }
        if key.contains('\0') {
            return bypass("the digest key's value contains a NUL character; not digested".into());
        }
        let Some((spec, window_ms)) = flow.digest_step(step) else {
            return bypass(format!("step {step} is not a digest step"));
        };
        let tz = match &spec.schedule {
            Some(_) if window_ms.is_none() => self.recipient_tz(store, tenant, rec).await?,
            _ => clarion_domain::time::Tz::UTC,
        };
        let closes_at_ms =
            match digest::closes_at(window_ms, spec.schedule.as_deref(), batch.now_ms, tz) {
                Ok(at) => at,
                Err(e) => return bypass(format!("{e}; not digested")),
            };
        let rule = Rule {
            closes_at_ms,
            max_items: spec.max_items.unwrap_or(0),
        };
        let dk = DigestKey {
            tenant: tenant.to_string(),
            subscriber: rec.subscriber_id.clone(),
            workflow: rec.run.workflow_id.clone(),
            key,
        };
        let nid = rec.run.notification_id.clone();
        let open = self.open_digest(store, &dk).await?;
        let item = Item {
            notification_id: nid.clone(),
            at_ms: batch.now_ms,
            payload: rec.payload.json().clone(),
        };
        if let Some(old) = &open {
            if !self.still_leads(store, tenant, &old.leader).await? {
                return self.take_over(store, batch, dk, old, rule, item).await;
            }
        }
        match digest::decide(open.as_ref(), rule, &nid, batch.now_ms) {
            Decision::Lead(open) => {
                let full = open.full();
                let closes_at_ms = open.closes_at_ms;
                self.put_header(batch, &dk, open);
                self.put_item(batch, &dk, 0, item);
                let mut answer = vec![RunInput::Digested(Digested::Leads { closes_at_ms })];
                if !full {
                    return Ok((answer, None));
                }
                // `max_items: 1`: the leader's own item fills it.
                let closed = self.take_items(store, batch, &dk, 1).await?;
                answer.push(RunInput::Digested(Digested::Closed));
                Ok((answer, Some(closed)))
            }
            Decision::Join { open, no } => {
                let leader = open.leader.clone();
                if open.full() {
                    self.digests.to_close.push((dk.clone(), leader.clone()));
                }
                self.put_header(batch, &dk, open);
                self.put_item(batch, &dk, no, item);
                Ok((vec![RunInput::Digested(Digested::Joined { leader })], None))
            }
        }
    }

    /// Whether `leader`'s run still waits for its digest to close (not
    /// cancelled meanwhile). Usually in memory: a waiting run is cached.
    async fn still_leads(
        &mut self,
        store: &dyn Store,
        tenant: &str,
        leader: &str,
    ) -> Result<bool, ProcessError> {
        let Some(rec) = self.take_run_record(store, tenant, leader).await? else {
            return Ok(false);
        };
        let leading = leads(&rec);
        self.remember(tenant, leader.to_string(), rec, false);
        Ok(leading)
    }

    /// The digest's leader was cancelled: this run leads it now, with the
    /// items that joined before (`digest::take_over`).
    async fn take_over(
        &mut self,
        store: &dyn Store,
        batch: &mut Batch,
        dk: DigestKey,
        old: &Open,
        rule: Rule,
        item: Item,
    ) -> Result<(Vec<RunInput>, Option<DigestBatch>), ProcessError> {
        let (open, no) = digest::take_over(old, rule, &item.notification_id, batch.now_ms);
        let (full, closes_at_ms, count) = (open.full(), open.closes_at_ms, open.count);
        self.put_header(batch, &dk, open);
        self.put_item(batch, &dk, no, item);
        let mut answer = vec![RunInput::Digested(Digested::Leads { closes_at_ms })];
        if !full {
            return Ok((answer, None));
        }
        let closed = self.take_items(store, batch, &dk, count).await?;
        answer.push(RunInput::Digested(Digested::Closed));
        Ok((answer, Some(closed)))
    }

    /// The recipient's zone for a scheduled digest: the trigger's contact
    /// override, else the subscriber's, else UTC.
    async fn recipient_tz(
        &mut self,
        store: &dyn Store,
        tenant: &str,
        rec: &RunRecord,
    ) -> Result<clarion_domain::time::Tz, ProcessError> {
        let sub = self.recipient(store, tenant, rec).await?;
        Ok(clarion_domain::time::recipient_zone(&[
            rec.contact.timezone.as_str(),
            sub.timezone.as_str(),
        ]))
    }

    /// Closes the digest at `dk` (led by `leader`): reads its items in
    /// order, deletes its rows, and returns them.
    async fn take_items(
        &mut self,
        store: &dyn Store,
        batch: &mut Batch,
        dk: &DigestKey,
        count: u32,
    ) -> Result<DigestBatch, ProcessError> {
        let mut from = dk.prefix();
        from.push(1);
        let mut to = dk.prefix();
        to.push(2);
        let scan = Scan::partition(Table::Digests, &dk.tenant, &dk.subscriber, count as usize)
            .range(Bound::Included(from), Bound::Excluded(to));
        let mut items: Vec<(u32, Item)> = Vec::with_capacity(count as usize);
        for (ck, value) in store.scan(&scan).await? {
            let no = ck[ck.len().saturating_sub(4)..]
                .try_into()
                .map(u32::from_be_bytes)
                .unwrap_or(u32::MAX);
            items.push((no, decode::<Item>(&value)?));
        }
        // Items appended in this batch are not in the store yet.
        if let Some(pending) = self.digests.items.remove(dk) {
            items.extend(pending);
        }
        items.sort_by_key(|(no, _)| *no);
        items.dedup_by_key(|(no, _)| *no);
        batch.writes.delete(dk.header());
        for (no, _) in &items {
            batch.writes.delete(dk.item(*no));
        }
        self.digests.open.insert(dk.clone(), None);
        Ok(DigestBatch {
            key: dk.key.clone(),
            items: items.into_iter().map(|(_, i)| i).collect(),
        })
    }

    /// Closes the digest `leader` leads at `dk`, if it still does, and
    /// drives the leader's run on with it. `cause`: the input that closes
    /// it (a fired timer, a flush, the join that filled it); the close's
    /// events get ids derived from it and the leader, the same on a repeat.
    pub(super) async fn close_digest(
        &mut self,
        store: &dyn Store,
        batch: &mut Batch,
        cause: &Event,
        dk: &DigestKey,
        leader: &str,
        why: &str,
    ) -> Result<(), ProcessError> {
        let open = self.open_digest(store, dk).await?;
        if !digest::timer_closes(open.as_ref(), leader) {
            return Ok(()); // closed already (full, flushed, or its timer)
        }
        let Some(rec) = self.take_run_record(store, &dk.tenant, leader).await? else {
            return Ok(()); // no run to send it: left for a run that takes it over
        };
        let leading = leads(&rec);
        let flow = self
            .flow(
                store,
                &dk.tenant,
                &rec.run.workflow_id,
                rec.run.workflow_version,
            )
            .await?;
        let (true, Some(flow)) = (leading, flow) else {
            // Cancelled while leading: the next run with this key takes the
            // digest over (`take_over`); until then its items wait.
            self.remember(&dk.tenant, leader.to_string(), rec, false);
            return Ok(());
        };
        let mut rec = rec;
        let count = open.map_or(0, |o| o.count);
        let closed = self.take_items(store, batch, dk, count).await?;
        let mut close_cause = cause.clone();
        close_cause.id = Id::derive(&[b"digest-close", &cause.id.0, leader.as_bytes()]);
        let note = format!(
            "digest {:?} closed ({why}) with {} items",
            dk.key,
            closed.items.len()
        );
        rec.digest = Some(closed);
        let mut idx = 0u32;
        self.note(batch, &close_cause, leader, note, &mut idx);
        let input = RunInput::Digested(Digested::Closed);
        self.drive(store, batch, &close_cause, &flow, rec, input, &mut idx)
            .await
    }

    fn note(&self, batch: &mut Batch, cause: &Event, nid: &str, message: String, idx: &mut u32) {
        let noted = pb::RunNoted {
            notification_id: nid.to_string(),
            message,
        };
        let ev = cause.caused(
            *idx,
            batch.now_ms,
            super::actor(),
            clarion_domain::Payload::Noted(noted),
        );
        *idx += 1;
        batch.emit(crate::topics::Topic::Notifications, ev);
    }

    /// Closes the digests that joining runs filled while `cause` was routed.
    pub(super) async fn close_filled_digests(
        &mut self,
        store: &dyn Store,
        batch: &mut Batch,
        cause: &Event,
    ) -> Result<(), ProcessError> {
        while let Some((dk, leader)) = self.digests.to_close.pop() {
            self.close_digest(store, batch, cause, &dk, &leader, "max_items reached")
                .await?;
        }
        Ok(())
    }

    /// A digest timer fired: closes the digest its run leads, if the run
    /// still waits for this timer (a digest closed early left it stale).
    pub(super) async fn on_digest_timer(
        &mut self,
        store: &dyn Store,
        batch: &mut Batch,
        e: &Event,
        t: &pb::TimerFired,
    ) -> Result<(), ProcessError> {
        let tenant = e.tenant.as_str();
        let Some(rec) = self
            .take_run_record(store, tenant, &t.notification_id)
            .await?
        else {
            return Ok(());
        };
        let dk = match rec.run.waiting {
            Waiting::Timer {
                seq,
                purpose: Purpose::Digest,
            } if seq == t.seq => self.led_digest(store, tenant, &rec).await?,
            _ => None,
        };
        self.remember(tenant, t.notification_id.clone(), rec, false);
        match dk {
            Some(dk) => {
                self.close_digest(store, batch, e, &dk, &t.notification_id, "its time came")
                    .await
            }
            None => Ok(()),
        }
    }

    /// The digest a waiting leader leads: its step's key over its payload.
    async fn led_digest(
        &mut self,
        store: &dyn Store,
        tenant: &str,
        rec: &RunRecord,
    ) -> Result<Option<DigestKey>, ProcessError> {
        let run = &rec.run;
        let Some(flow) = self
            .flow(store, tenant, &run.workflow_id, run.workflow_version)
            .await?
        else {
            return Ok(None);
        };
        let Some(step) = run.pc.map(|pc| flow.def.steps[pc].id.as_str()) else {
            return Ok(None);
        };
        let Some((spec, _)) = flow.digest_step(step) else {
            return Ok(None);
        };
        let path = spec.key.strip_prefix("payload.").unwrap_or(&spec.key);
        Ok(
            clarion_domain::router::resolve_path(rec.payload.json(), path).map(|key| DigestKey {
                tenant: tenant.to_string(),
                subscriber: rec.subscriber_id.clone(),
                workflow: run.workflow_id.clone(),
                key,
            }),
        )
    }

    /// `DigestFlushRequested`: closes the subscriber's open digest of the
    /// workflow for the key now (every key when it names none).
    pub(super) async fn on_digest_flush(
        &mut self,
        store: &dyn Store,
        batch: &mut Batch,
        e: &Event,
        f: &pb::DigestFlushRequested,
    ) -> Result<(), ProcessError> {
        let dk = |key: String| DigestKey {
            tenant: e.tenant.as_str().to_string(),
            subscriber: f.subscriber_id.clone(),
            workflow: f.workflow_id.clone(),
            key,
        };
        let keys = if f.digest_key.is_empty() {
            self.open_keys(store, &dk(String::new())).await?
        } else {
            vec![dk(f.digest_key.clone())]
        };
        for dk in keys {
            if let Some(open) = self.open_digest(store, &dk).await? {
                self.close_digest(store, batch, e, &dk, &open.leader, "flushed")
                    .await?;
            }
        }
        Ok(())
    }

    /// The keys of the subscriber's open digests of a workflow (`of`: the
    /// address with an empty key), stored or opened in this batch.
    async fn open_keys(
        &mut self,
        store: &dyn Store,
        of: &DigestKey,
    ) -> Result<Vec<DigestKey>, ProcessError> {
        let mut from = of.workflow.as_bytes().to_vec();
        from.push(0);
        let mut to = of.workflow.as_bytes().to_vec();
        to.push(1);
        let scan = Scan::partition(Table::Digests, &of.tenant, &of.subscriber, MAX_OPEN_ROWS)
            .range(Bound::Included(from.clone()), Bound::Excluded(to));
        let mut keys: Vec<DigestKey> = Vec::new();
        for (ck, _) in store.scan(&scan).await? {
            // `key 0x00 0x00` is a header.
            let rest = &ck[from.len()..];
            if let Some(key) = rest.strip_suffix(&[0, 0]) {
                if !key.contains(&0) {
                    keys.push(DigestKey {
                        key: String::from_utf8_lossy(key).into_owned(),
                        ..of.clone()
                    });
                }
            }
        }
        for (dk, open) in &self.digests.open {
            let same = dk.tenant == of.tenant
                && dk.subscriber == of.subscriber
                && dk.workflow == of.workflow;
            if same && open.is_some() {
                keys.push(dk.clone());
            }
        }
        keys.sort();
        keys.dedup();
        Ok(keys)
    }
}

/// Whether a run waits for the digest it leads to close.
fn leads(rec: &RunRecord) -> bool {
    rec.run.terminal.is_none()
        && matches!(
            rec.run.waiting,
            Waiting::Timer {
                purpose: Purpose::Digest,
                ..
            }
        )
}
