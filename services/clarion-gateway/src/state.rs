//! What every service handler shares.

use std::sync::Arc;
use std::time::Duration;

use clarion_domain::trigger::TriggerLimits;
use clarion_domain::Event;
use clarion_log::{Appended, EventLog, Record};
use clarion_runtime::{Clock, Topic, Topics};
use clarion_store::Store;

use crate::access::Security;
use crate::config_cache::ConfigCache;
use crate::error::ApiError;

#[derive(Clone)]
pub struct GatewayState {
    pub log: Arc<dyn EventLog>,
    pub store: Arc<dyn Store>,
    pub topics: Topics,
    pub clock: Arc<dyn Clock>,
    pub limits: TriggerLimits,
    /// SHA-256 (hex) of the operator admin token.
    pub admin_token_sha256: Option<String>,
    /// How long configuration writes wait to become visible.
    pub projection_wait: Duration,
    /// How long trigger idempotency keys are remembered.
    pub idempotency_ttl: Duration,
    /// Serialises configuration writes of this gateway (version numbering).
    pub config_lock: Arc<tokio::sync::Mutex<()>>,
    /// Recently read API keys and workflow versions (the Trigger hot path).
    pub config_cache: Arc<ConfigCache>,
    /// Rate limits, key last-use notes, reflection access.
    pub security: Arc<Security>,
    /// Seals secrets this gateway stores (webhook signing secrets).
    pub keyring: Arc<clarion_dispatch::secrets::Keyring>,
    /// Wakes live inbox streams (see `clarion_runtime::inbox::hub`).
    pub inbox_hub: Arc<clarion_runtime::inbox::InboxHub>,
    /// A device neither seen nor given a new token for this long shows
    /// `expired` (the router skips it): `devices.expire-after-days`.
    pub device_expiry: Duration,
    /// Seals personal fields of what this gateway appends, opens them for
    /// its answers (issue #32, `clarion_runtime::personal`).
    pub personal: Arc<clarion_runtime::personal::Personal>,
    /// Secure exports (`POST /v1/exports`); `None`: not offered here.
    pub export: Option<Arc<crate::rest_exports::ExportDoor>>,
    /// Destroys data keys (erasure, issue #32): the crypto layer.
    pub shredder: Arc<dyn clarion_runtime::retention::Shredder>,
}

impl GatewayState {
    /// Appends events to a topic; `Ok` means durable.
    pub async fn append(&self, topic: Topic, events: &[Event]) -> Result<Vec<Appended>, ApiError> {
        let mut recs = Vec::with_capacity(events.len());
        for e in events {
            // Personal fields enter the log sealed (`clarion_runtime::personal`).
            let value = if clarion_domain::personal::has_fields(&e.payload) {
                let mut sealed = e.clone();
                self.personal
                    .seal_event(&mut sealed)
                    .await
                    .map_err(|e| ApiError::Unavailable(format!("personal-data keys: {e}")))?;
                sealed.encode()
            } else {
                e.encode()
            };
            recs.push(Record {
                key: e.partition_key.clone(),
                value: value.into(),
                index: clarion_runtime::projector::event_history_index(e),
            });
        }
        let started = std::time::Instant::now();
        let appended = self
            .log
            .append(&self.topics.name(topic), recs)
            .await
            .map_err(|e| ApiError::Unavailable(format!("event log: {e}")));
        metrics::histogram!("clarion_gateway_append_seconds")
            .record(started.elapsed().as_secs_f64());
        appended
    }

    /// Opens the personal fields of events read back for an answer
    /// (erased ones read `[erased]`, redacted bodies `[redacted]`).
    pub async fn open_events(&self, events: &mut [Event]) -> Result<(), ApiError> {
        for e in events {
            self.open_event(e).await?;
        }
        Ok(())
    }

    /// [`Self::open_events`] for one event.
    pub async fn open_event(&self, e: &mut Event) -> Result<(), ApiError> {
        self.personal
            .open_event(e)
            .await
            .map_err(|e| ApiError::Unavailable(format!("personal-data keys: {e}")))
    }

    /// Opens one personal value of `subscriber` (plain values unchanged).
    pub async fn open_value(
        &self,
        tenant: &clarion_domain::TenantId,
        subscriber: &str,
        value: &mut String,
    ) -> Result<(), ApiError> {
        if clarion_runtime::personal::is_sealed(value) {
            *value = self
                .personal
                .open(tenant, subscriber, value)
                .await
                .map_err(|e| ApiError::Unavailable(format!("personal-data keys: {e}")))?;
        }
        Ok(())
    }

    /// Opens a stored profile's personal fields.
    pub async fn open_profile(
        &self,
        tenant: &clarion_domain::TenantId,
        p: &mut clarion_proto::events::SubscriberUpserted,
    ) -> Result<(), ApiError> {
        self.personal
            .open_profile(tenant, p)
            .await
            .map_err(|e| ApiError::Unavailable(format!("personal-data keys: {e}")))
    }

    /// Opens an inbox item's title, body and data.
    pub async fn open_inbox_item(
        &self,
        tenant: &clarion_domain::TenantId,
        subscriber: &str,
        item: &mut clarion_proto::events::InboxItemRecord,
    ) -> Result<(), ApiError> {
        for f in [&mut item.title, &mut item.body, &mut item.data_json] {
            self.open_value(tenant, subscriber, f).await?;
        }
        Ok(())
    }

    /// Waits until `processor` has applied the record at `at` (bounded by
    /// `projection_wait`). Returns whether it did; the write is durable either way.
    pub async fn wait_applied(&self, processor: &str, topic: Topic, at: Appended) -> bool {
        let name = self.topics.name(topic);
        let deadline = tokio::time::Instant::now() + self.projection_wait;
        let mut nap = Duration::from_millis(1);
        loop {
            match clarion_runtime::runner::stored_offset(
                &*self.store,
                processor,
                &name,
                at.partition,
            )
            .await
            {
                Ok(next) if next > at.offset => return true,
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "reading processor position"),
            }
            if tokio::time::Instant::now() >= deadline {
                tracing::warn!(processor, topic = %name, offset = at.offset, "write accepted but not yet applied");
                return false;
            }
            tokio::time::sleep(nap).await;
            nap = (nap * 2).min(Duration::from_millis(20));
        }
    }
}
