//! The router's runs in memory: taken out for an input and put back, read
//! for a whole batch at once, written once per batch, and forgotten between
//! batches once ended. Also the batch's metrics.

use clarion_domain::recipient::Pair;
use clarion_domain::Payload;
use clarion_store::{RowKey, Store, Table};

use super::{decode_run, load_run, Router, RunRecord};
use super::{
    MAX_CACHED_CONTENT_HASHES, MAX_CACHED_RUNS, MAX_CACHED_SUBSCRIBERS, MAX_CACHED_THROTTLE_LOGS,
};
use crate::processor::{Batch, Input, ProcessError};

impl Router {
    /// Whether the notification has a run (without copying its record).
    pub(super) async fn has_run(
        &mut self,
        store: &dyn Store,
        tenant: &str,
        nid: &str,
    ) -> Result<bool, ProcessError> {
        let k = Pair(tenant, nid);
        if self.runs.contains_key(&k) {
            return Ok(true);
        }
        if let Some(r) = self.prefetched.get(&k) {
            return Ok(r.is_some());
        }
        if self.horizon.surely_new(nid) {
            return Ok(false);
        }
        Ok(load_run(store, tenant, nid).await?.is_some())
    }

    /// The run record of a notification, moved out of memory rather than
    /// copied (a copy per input showed in the profile): whoever takes it
    /// puts it back with [`Router::remember`]. Should that not happen (an
    /// error in between), the next input reads the run from the store,
    /// which holds it as it was before this uncommitted batch.
    pub(super) async fn take_run_record(
        &mut self,
        store: &dyn Store,
        tenant: &str,
        nid: &str,
    ) -> Result<Option<Box<RunRecord>>, ProcessError> {
        let k = Pair(tenant, nid);
        let before = self.runs.len();
        if let Some(r) = self.runs.remove(&k) {
            self.count_cached_runs(before);
            return Ok(Some(r));
        }
        if let Some(r) = self.prefetched.remove(&k) {
            return Ok(r);
        }
        match load_run(store, tenant, nid).await? {
            Some(mut rec) => {
                self.open_run(tenant, &mut rec).await?;
                Ok(Some(Box::new(rec)))
            }
            None => Ok(None),
        }
    }

    /// Reads the run records of the batch's notifications that are not in
    /// memory (new triggers, late engagement) with one store read, not one
    /// read per input.
    pub(super) async fn prefetch_runs(
        &mut self,
        store: &dyn Store,
        inputs: &[Input],
    ) -> Result<(), ProcessError> {
        self.prefetched.clear();
        let mut keys = Vec::new();
        let mut ids = Vec::new();
        for input in inputs {
            let e = &input.event;
            let Some(nid) = e.payload.notification_id() else {
                continue;
            };
            if !about_a_run(&e.payload) {
                continue;
            }
            if matches!(e.payload, Payload::Triggered(_)) && self.horizon.surely_new(nid) {
                continue;
            }
            let tenant = e.tenant.as_str();
            let probe = Pair(tenant, nid);
            if self.runs.contains_key(&probe) || self.prefetched.contains_key(&probe) {
                continue;
            }
            let k = (tenant.to_string(), nid.to_string());
            keys.push(RowKey::new(Table::Runs, &k.0, &k.1, Vec::new()));
            self.prefetched.insert(k.clone(), None);
            ids.push(k);
        }
        if keys.is_empty() {
            return Ok(());
        }
        let rows = store.get_many(&keys).await?;
        for (k, row) in ids.into_iter().zip(rows) {
            let mut rec = row.and_then(|b| decode_run(&b));
            if let Some(r) = rec.as_mut() {
                self.open_run(&k.0, r).await?;
            }
            self.prefetched.insert(k, rec.map(Box::new));
        }
        Ok(())
    }

    /// Keeps a run in memory for its next input. Ended runs leave the cache
    /// with the next batch (a late engagement reloads them from the store), so
    /// memory holds the runs in flight, not every run ever started; the bound
    /// is a guard against a flood of long waits.
    /// `changed`: the record differs from the stored one, and is written
    /// when the batch ends ([`Router::write_changed_runs`]).
    pub(super) fn remember(
        &mut self,
        tenant: &str,
        nid: String,
        rec: Box<RunRecord>,
        changed: bool,
    ) {
        let key = (tenant.to_string(), nid);
        self.prefetched.remove(&key);
        // A send's `sent` and `delivered` come one after the other: most
        // repeats are the last key, and need not wait for the dedup below.
        if changed && self.changed.last() != Some(&key) {
            self.changed.push(key.clone());
        }
        let before = self.runs.len();
        if rec.run.terminal.is_some() && !rec.in_dlq {
            self.ended.push(key.clone());
        }
        self.runs.insert(key, rec);
        self.count_cached_runs(before);
    }

    /// Writes each run the batch changed once, as it is at the batch's end.
    /// They are all in memory: a changed run is remembered, and runs leave
    /// memory only when the next batch starts. Payload and contact data of
    /// a run still going are stored sealed (`super::sealed_runs`).
    pub(super) async fn write_changed_runs(
        &mut self,
        batch: &mut Batch,
    ) -> Result<(), ProcessError> {
        let mut changed = std::mem::take(&mut self.changed);
        changed.sort_unstable();
        changed.dedup();
        for key in changed {
            let rec = self
                .runs
                .get(&key)
                .expect("a run changed in this batch is in memory until it ends");
            let value = self.encode_sealed(&key.0, rec).await?;
            batch
                .writes
                .put(RowKey::new(Table::Runs, &key.0, &key.1, Vec::new()), value);
        }
        Ok(())
    }

    /// Between batches, when everything this router decided is committed:
    /// starts full caches over and drops the runs that ended. Only here: an
    /// entry changed earlier in a batch must stay in memory for the rest of
    /// it, since the store has the change only once the batch commits.
    /// Every cached fact is also a store row (throttle marks and content
    /// hashes with their window as TTL), so what is forgotten is reloaded
    /// when next needed.
    pub(super) fn start_batch(&mut self) {
        let state = &mut self.recipients;
        if state.throttle.len() >= MAX_CACHED_THROTTLE_LOGS {
            // Recipient-scoped windows pile up, one per recipient.
            state.throttle.clear();
        }
        if state.profiles.len() >= MAX_CACHED_SUBSCRIBERS {
            state.profiles.clear();
        }
        if state.content.len() >= MAX_CACHED_CONTENT_HASHES {
            state.content.clear();
        }
        if state.preferences.len() >= MAX_CACHED_SUBSCRIBERS {
            state.preferences.clear();
        }
        if state.devices.len() >= MAX_CACHED_SUBSCRIBERS {
            state.devices.clear();
        }
        self.applied_preference_events.clear();
        self.digests.clear();
        self.payloads.clear();
        self.forget_ended_runs();
    }

    /// Drops the runs that ended in the previous batch and have not come
    /// back to life since (a dead letter retried); starts over when full.
    fn forget_ended_runs(&mut self) {
        let before = self.runs.len();
        if self.runs.len() >= MAX_CACHED_RUNS {
            self.runs.clear();
            self.ended.clear();
        }
        for key in std::mem::take(&mut self.ended) {
            // One probe per run (`entry`, with the key owned already).
            if let hashbrown::hash_map::Entry::Occupied(e) = self.runs.entry(key) {
                if e.get().run.terminal.is_some() && !e.get().in_dlq {
                    e.remove();
                }
            }
        }
        self.count_cached_runs(before);
    }

    fn count_cached_runs(&mut self, before: usize) {
        self.cached_runs_delta += self.runs.len() as i64 - before as i64;
    }

    pub(super) fn count_run_ended(&mut self, outcome: &'static str) {
        match self.runs_ended.iter_mut().find(|(o, _)| *o == outcome) {
            Some((_, n)) => *n += 1,
            None => self.runs_ended.push((outcome, 1)),
        }
    }

    /// Reports the batch's metric changes: runs ended by outcome, and the
    /// gauge (summed over the partitions' routers) of runs held in memory.
    pub(super) fn report_metrics(&mut self) {
        if self.cached_runs_delta != 0 {
            metrics::gauge!("clarion_router_cached_runs").increment(self.cached_runs_delta as f64);
            self.cached_runs_delta = 0;
        }
        for (outcome, n) in self.runs_ended.drain(..) {
            metrics::counter!("clarion_runs_ended_total", "outcome" => outcome).increment(n);
        }
    }
}

/// Whether an input with a notification id is a fact for its run (device
/// outcomes, rejections and inbox items name one, but are not).
fn about_a_run(p: &Payload) -> bool {
    !matches!(
        p,
        Payload::PushRejected(_)
            | Payload::PushDeviceOutcome(_)
            | Payload::InboxItemWritten(_)
            | Payload::ProviderFailedOver(_)
            | Payload::ProviderBreakerChanged(_)
    )
}
