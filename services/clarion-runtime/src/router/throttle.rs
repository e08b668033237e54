//! Throttling's adapter: loads the windows a send counts in (memory, else
//! the store's marks), asks `recipient::throttle`, and records a send that
//! goes (a mark per window, with the window as TTL).

use std::collections::VecDeque;
use std::time::Duration;

use bytes::Bytes;
use clarion_domain::flow::throttle::Hold;
use clarion_domain::flow::Flow;
use clarion_domain::recipient::throttle::{self, Counted, Decision, Limits};
use clarion_domain::recipient::Event as RecipientEvent;
use clarion_store::{RowKey, Scan, Store, Table};

use super::Router;
use crate::processor::{Batch, ProcessError};

/// A send to check: whose, on which channel, as which attempt.
pub(super) struct Sending<'a> {
    pub tenant: &'a str,
    pub subscriber: &'a str,
    pub channel: &'a str,
    pub attempt_id: &'a str,
}

impl Router {
    /// Checks a send against the workflow's limits and the tenant's. `Ok(None)`:
    /// it may go, and is counted by every limit that covers it. `Ok(Some(hold))`:
    /// it is held back (and counted nowhere).
    pub(super) async fn throttle(
        &mut self,
        store: &dyn Store,
        batch: &mut Batch,
        flow: &Flow,
        send: Sending<'_>,
    ) -> Result<Option<Hold>, ProcessError> {
        let tenant = send.tenant;
        let tenant_limits = self.tenant_limits(store, tenant).await?;
        let limits = Limits {
            flow,
            tenant: tenant_limits.as_deref(),
        };
        let ctx = self.ctx(batch);
        let counters = throttle::counters(limits, send.subscriber, send.channel, &ctx);
        if counters.is_empty() {
            return Ok(None);
        }
        for c in &counters {
            self.load_window(store, tenant, &c.key).await?;
        }
        let windows = &self.recipients.throttle;
        if let Decision::Held(hold) =
            throttle::decide(limits, &counters, windows, tenant, ctx.now_ms)
        {
            return Ok(Some(hold));
        }
        let now = ctx.now_ms;
        for c in &counters {
            let mut ck = now.to_be_bytes().to_vec();
            ck.extend_from_slice(send.attempt_id.as_bytes());
            batch.writes.put_ttl(
                RowKey::new(Table::Runs, tenant, &c.key, ck),
                Bytes::new(),
                Duration::from_millis(c.window_ms),
            );
        }
        self.recipients.evolve(RecipientEvent::SendCounted(Counted {
            tenant: tenant.to_string(),
            windows: counters.into_iter().map(|c| (c.key, c.window_ms)).collect(),
            at_ms: now,
        }));
        Ok(None)
    }

    /// Puts a window in memory, from its marks in the store, unless it is
    /// there already.
    async fn load_window(
        &mut self,
        store: &dyn Store,
        tenant: &str,
        key: &str,
    ) -> Result<(), ProcessError> {
        if self.recipients.throttle.contains(tenant, key) {
            return Ok(());
        }
        let rows = store
            .scan(&Scan::partition(Table::Runs, tenant, key, 100_000))
            .await?;
        let log: VecDeque<i64> = rows
            .iter()
            .filter_map(|(ck, _)| ck.get(..8))
            .map(|b| i64::from_be_bytes(b.try_into().expect("8 bytes")))
            .collect();
        self.recipients.throttle.load(tenant, key, log);
        Ok(())
    }
}
