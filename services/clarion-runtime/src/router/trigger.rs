//! Triggers: accepting a `Triggered` into a run (`recipient::acceptance`),
//! with content dedup (`recipient::dedup`) on the way.

use std::time::Duration;

use bytes::Bytes;
use clarion_domain::flow::{Flow, Input as RunInput, Run};
use clarion_domain::payload::SharedPayload;
use clarion_domain::recipient::acceptance::{self, Verdict};
use clarion_domain::recipient::dedup::{self, Mark};
use clarion_domain::recipient::Event as RecipientEvent;
use clarion_domain::{Event, Payload};
use clarion_proto::events as pb;
use clarion_store::{RowKey, Store, Table};
use serde_json::json;

use super::{actor, Router, RunRecord};
use crate::notification_index::{self, Status};
use crate::processor::{Batch, ProcessError};
use crate::topics::Topic;

impl Router {
    pub(super) async fn on_triggered(
        &mut self,
        store: &dyn Store,
        batch: &mut Batch,
        e: &Event,
        t: &pb::NotificationTriggered,
    ) -> Result<(), ProcessError> {
        let tenant = e.tenant.as_str();
        if self.has_run(store, tenant, &t.notification_id).await? {
            return Ok(()); // a retried trigger with the same idempotency key
        }
        self.horizon.note(&t.notification_id);
        index_by_subscriber(batch, tenant, t);
        let payload = self.payloads.get(&t.payload_json);
        let contact = t.recipient.clone().unwrap_or_default().into();
        let Some(flow) = self
            .flow(store, tenant, &t.workflow_id, t.workflow_version)
            .await?
        else {
            end_untriggered(batch, e, t, acceptance::unknown_version(t));
            return Ok(());
        };
        if let Some(ended) = self
            .content_dedup(store, batch, tenant, t, &flow, &payload)
            .await?
        {
            end_untriggered(batch, e, t, ended);
            return Ok(());
        }
        let rec = Box::new(RunRecord {
            run: Run::new(&t.notification_id, &flow),
            subscriber_id: t.subscriber_id.clone(),
            payload,
            contact,
            key: e.partition_key.clone(),
            in_dlq: false,
            critical: t.critical || flow.def.critical,
            digest: None,
            personal_paths: t.personal_paths.clone(),
            sealed_contact: logged_contact(e),
        });
        // The trigger condition decides whether the run starts at all; the
        // subscriber's variables are built only for one.
        let matched = if flow.has_trigger_condition() {
            let sub_json = self
                .recipient(store, tenant, &rec)
                .await?
                .template_context();
            flow.matches(&rec.payload, &sub_json, &json!({"id": tenant}))
        } else {
            Ok(true)
        };
        match acceptance::verdict(matched) {
            Verdict::Start => {
                // Index the run by its cancellation key, if the workflow has one.
                if let Some(value) = acceptance::cancel_key(&flow, &rec.payload) {
                    batch.writes.put(
                        RowKey::new(
                            Table::Runs,
                            tenant,
                            &cancel_pk(&value),
                            t.notification_id.as_bytes().to_vec(),
                        ),
                        Bytes::new(),
                    );
                }
                let mut idx = 0u32;
                // A trigger's `send_at` (or delay): the run waits for it first.
                let start = match t.send_at_ms {
                    0 => RunInput::Start,
                    at_ms => RunInput::StartAt { at_ms },
                };
                self.drive(store, batch, e, &flow, rec, start, &mut idx)
                    .await
            }
            Verdict::Suppress(reason) => {
                // Recorded as a run that ended suppressed, so the
                // notification still reaches a terminal state.
                let mut rec = rec;
                acceptance::suppress(&mut rec.run, &flow, reason.clone(), batch.now_ms);
                end_untriggered(batch, e, t, acceptance::suppressed(t, &flow, reason));
                self.remember(tenant, t.notification_id.clone(), rec, true);
                Ok(())
            }
        }
    }

    /// Content dedup, for a workflow that asks for it: the ending of a
    /// duplicate, or `None` (the content marked, in memory and in the store
    /// for the window: a duplicate in the same batch is not in the store yet).
    async fn content_dedup(
        &mut self,
        store: &dyn Store,
        batch: &mut Batch,
        tenant: &str,
        t: &pb::NotificationTriggered,
        flow: &Flow,
        payload: &SharedPayload,
    ) -> Result<Option<pb::RunEnded>, ProcessError> {
        let Some(window) = flow.dedup_window_ms else {
            return Ok(None);
        };
        let hash = dedup::content_hash(tenant, &t.workflow_id, &t.subscriber_id, payload.json());
        let key = RowKey::new(Table::ContentDedup, tenant, &hash, Vec::new());
        let seen = match self.recipients.content.get(tenant, &hash) {
            Some(mark) => Some(mark.clone()),
            None => store.get(&key).await?.and_then(|b| Mark::decode(&b)),
        };
        match dedup::decide(
            flow,
            window,
            seen.as_ref(),
            &t.notification_id,
            batch.now_ms,
        ) {
            dedup::Decision::Duplicate { reason } => {
                Ok(Some(acceptance::suppressed(t, flow, reason)))
            }
            dedup::Decision::Fresh(mark) => {
                let ttl = Duration::from_millis(window);
                batch.writes.put_ttl(key, Bytes::from(mark.encode()), ttl);
                self.recipients
                    .evolve(RecipientEvent::ContentMarked(dedup::Marked {
                        tenant: tenant.to_string(),
                        hash,
                        mark,
                    }));
                Ok(None)
            }
        }
    }

    pub(super) async fn on_cancel(
        &mut self,
        store: &dyn Store,
        batch: &mut Batch,
        e: &Event,
        c: &pb::CancelRequested,
    ) -> Result<(), ProcessError> {
        let tenant = e.tenant.as_str();
        let rows = store
            .scan(&clarion_store::Scan::partition(
                Table::Runs,
                tenant,
                &cancel_pk(&c.cancel_key),
                100_000,
            ))
            .await?;
        let mut idx = 0u32;
        for (nid, _) in rows {
            let nid = String::from_utf8_lossy(&nid).into_owned();
            let reason = if c.reason.is_empty() {
                format!("cancelled by key {:?}", c.cancel_key)
            } else {
                c.reason.clone()
            };
            self.feed(
                store,
                batch,
                e,
                &nid,
                |_| Some(RunInput::Cancel { reason }),
                &mut idx,
            )
            .await?;
        }
        Ok(())
    }
}

/// Lists the notification under its subscriber and in the tenant's day
/// (every accepted trigger, whether its run starts or not: each has a
/// status to show). Two small rows per notification, in the batch's commit.
fn index_by_subscriber(batch: &mut Batch, tenant: &str, t: &pb::NotificationTriggered) {
    let entry = crate::subscriber_index::Entry {
        workflow_id: t.workflow_id.clone(),
    };
    batch.writes.put(
        crate::subscriber_index::row(tenant, &t.subscriber_id, &t.notification_id),
        Bytes::from(entry.encode()),
    );
    index_status(batch, tenant, t, Status::accepted(t.send_at_ms));
}

/// The notification's row in the console's index, with `status`.
fn index_status(batch: &mut Batch, tenant: &str, t: &pb::NotificationTriggered, status: Status) {
    if let Some(key) = notification_index::row(tenant, &t.notification_id) {
        let entry =
            notification_index::Entry::new(&t.workflow_id, &t.subscriber_id, status, batch.now_ms);
        batch.writes.put(key, Bytes::from(entry.encode()));
    }
}

/// Emits the ending of a notification that got no run going (and
/// overwrites its index row, written as accepted a moment before).
fn end_untriggered(
    batch: &mut Batch,
    e: &Event,
    t: &pb::NotificationTriggered,
    ended: pb::RunEnded,
) {
    let status = Status::of_outcome(&ended.outcome);
    index_status(batch, e.tenant.as_str(), t, status);
    let ev = e.caused(0, batch.now_ms, actor(), Payload::Ended(ended));
    batch.emit(Topic::Notifications, ev);
}

/// Runs-table partition listing the runs with a given cancellation key value
/// (notification ids are hex, so the prefix cannot collide with one).
fn cancel_pk(value: &str) -> String {
    format!("cancel:{value}")
}

/// The trigger's contact data as logged, when every personal field of it
/// is sealed there (see `RunRecord::sealed_contact`).
fn logged_contact(e: &Event) -> Option<super::record::ContactOverride> {
    let Payload::Triggered(t) = &e.payload else {
        return None;
    };
    let r = t.recipient.as_ref()?;
    let sealed = [&r.email, &r.phone, &r.webhook_url]
        .iter()
        .all(|f| f.is_empty() || clarion_domain::personal::is_sealed(f));
    sealed.then(|| r.clone().into())
}
