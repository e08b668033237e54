//! The dead-letter queue's adapter: the queue's rows, this partition's
//! count per tenant (a store row each, one writer), the size gauge, and the
//! alert `recipient::dlq` decides on.

use bytes::Bytes;
use clarion_domain::recipient::dlq::{self, Alert, Change, Counted};
use clarion_domain::recipient::Event as RecipientEvent;
use clarion_domain::{Event, Payload};
use clarion_proto::events as pb;
use clarion_store::{RowKey, Scan, Store, Table};

use super::{actor, dead_letter_key, Router};
use crate::notification_index::Status;
use crate::processor::{Batch, ProcessError};
use crate::topics::Topic;

/// Each router partition's dead-letter count of a tenant (clustering key:
/// the partition, big-endian).
async fn count_rows(
    store: &dyn Store,
    tenant: &str,
) -> Result<Vec<(Vec<u8>, i64)>, clarion_store::StoreError> {
    let rows = store
        .scan(&Scan::partition(Table::Runs, tenant, DLQ_COUNT_PK, 10_000))
        .await?;
    let parse = |b: &[u8]| <[u8; 8]>::try_from(b).map(i64::from_be_bytes).unwrap_or(0);
    Ok(rows.into_iter().map(|(ck, v)| (ck, parse(&v))).collect())
}

/// The partition of the per-router-partition count rows.
const DLQ_COUNT_PK: &str = "dlq-count";

/// A tenant's dead-letter queue size: the sum of the router partitions'
/// counts (what the `clarion_dlq_size` gauge and the alert use).
pub async fn dlq_size(store: &dyn Store, tenant: &str) -> Result<u64, clarion_store::StoreError> {
    let total: i64 = count_rows(store, tenant)
        .await?
        .iter()
        .map(|(_, n)| n)
        .sum();
    Ok(total.max(0) as u64)
}

impl Router {
    /// An operator discarded a dead letter: it leaves the queue (and stays
    /// a dead letter, which may still be retried).
    pub(super) async fn on_discarded(
        &mut self,
        store: &dyn Store,
        batch: &mut Batch,
        e: &Event,
        d: &pb::DeadLetterDiscarded,
    ) -> Result<(), ProcessError> {
        let tenant = e.tenant.as_str();
        let Some(mut rec) = self
            .take_run_record(store, tenant, &d.notification_id)
            .await?
        else {
            return Ok(());
        };
        let discarded = rec.in_dlq;
        if discarded {
            let before = Status::of_run(&rec.run, true);
            rec.in_dlq = false;
            super::drive::index_if_changed(batch, tenant, &rec, before);
            batch
                .writes
                .delete(dead_letter_key(tenant, &d.notification_id));
        }
        self.remember(tenant, d.notification_id.clone(), rec, discarded);
        if discarded {
            self.dlq_changed(store, batch, e, tenant, -1).await?;
        }
        Ok(())
    }

    /// Applies a change of this partition's dead-letter count for a tenant:
    /// keeps the per-partition row (one writer each), exports the tenant's
    /// total as a gauge and raises the alert when the decision says so.
    pub(super) async fn dlq_changed(
        &mut self,
        store: &dyn Store,
        batch: &mut Batch,
        cause: &Event,
        tenant: &str,
        delta: i64,
    ) -> Result<(), ProcessError> {
        let own_ck = batch.partition.to_be_bytes().to_vec();
        let rows = count_rows(store, tenant).await?;
        let stored_own = rows
            .iter()
            .find(|(ck, _)| *ck == own_ck)
            .map(|(_, n)| *n)
            .unwrap_or(0);
        let others: i64 = rows
            .iter()
            .filter(|(ck, _)| *ck != own_ck)
            .map(|(_, n)| *n)
            .sum();
        let decision = dlq::decide(Change {
            own: self.recipients.dlq.own(tenant).unwrap_or(stored_own),
            others,
            delta,
            threshold: self.dlq_alerts.threshold_for(tenant),
        });
        self.recipients
            .evolve(RecipientEvent::DeadLettersCounted(Counted {
                tenant: tenant.to_string(),
                own: decision.own,
            }));
        batch.writes.put(
            RowKey::new(Table::Runs, tenant, DLQ_COUNT_PK, own_ck),
            Bytes::copy_from_slice(&decision.own.to_be_bytes()),
        );
        // A tenant's queue size is a per-tenant fact: with tenant labels off
        // every tenant would overwrite one `_` series, so it is not exported.
        if crate::metric_labels::tenant_labels_on() {
            metrics::gauge!("clarion_dlq_size", "tenant" => crate::metric_labels::tenant(tenant))
                .set(decision.total as f64);
        }
        if let Some(alert) = decision.alert {
            self.raise_dlq_alert(batch, cause, tenant, alert);
        }
        Ok(())
    }

    /// Counts and logs the alert, and dispatches it to the webhook if one
    /// is configured.
    fn raise_dlq_alert(&self, batch: &mut Batch, cause: &Event, tenant: &str, alert: Alert) {
        metrics::counter!("clarion_dlq_alerts_total", "tenant" => crate::metric_labels::tenant(tenant)).increment(1);
        tracing::warn!(
            tenant,
            total = alert.total,
            threshold = alert.threshold,
            "dead-letter queue over its alert threshold"
        );
        let Some(url) = &self.dlq_alerts.webhook_url else {
            return;
        };
        let alert_id = cause.id.child("dlq-alert", 0).to_hex();
        let ev = Event {
            id: cause.id.child("dlq-alert", 1),
            tenant: cause.tenant.clone(),
            partition_key: cause.partition_key.clone(),
            occurred_at_ms: batch.now_ms,
            causation_id: Some(cause.id),
            correlation_id: None,
            actor: actor(),
            payload: Payload::DispatchRequested(dlq::alert_dispatch(tenant, alert, url, alert_id)),
        };
        batch.emit(Topic::Dispatch, ev);
    }
}
