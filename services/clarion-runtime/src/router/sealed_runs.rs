//! Run records at rest (issue #32). A run still going (waiting on a timer,
//! a delivery outcome, a digest, or in the DLQ) keeps the trigger's payload
//! and inline contact data to render its next sends. In memory they are
//! open; in the `runs` row they are sealed under the subscriber's data key,
//! so an erasure reaches a run that waits for days as it reaches the log.
//! The whole payload is sealed as one value (one AES-GCM per write, and no
//! need to know which fields the workflow marked); the address fields of
//! the contact one by one. Settled runs keep neither (`record::settled`).

use bytes::Bytes;
use clarion_domain::personal::is_sealed;
use clarion_domain::TenantId;
use serde_json::Value;

use super::record::{encode_run, encode_run_with, settled, ContactOverride};
use super::{Router, RunRecord};
use crate::processor::ProcessError;

fn tenant_id(tenant: &str) -> Result<TenantId, ProcessError> {
    TenantId::parse(tenant).map_err(|e| clarion_store::StoreError::Storage(e.to_string()).into())
}

impl Router {
    /// The stored form of a run: payload and contact sealed while it goes.
    pub(super) async fn encode_sealed(
        &self,
        tenant: &str,
        rec: &RunRecord,
    ) -> Result<Bytes, ProcessError> {
        let Some(p) = &self.personal else {
            return Ok(encode_run(rec));
        };
        if settled(rec) || rec.subscriber_id.is_empty() {
            return Ok(encode_run(rec));
        }
        let t = tenant_id(tenant)?;
        let sub = rec.subscriber_id.as_str();
        let payload = match rec.payload.json() {
            Value::Object(m) if m.is_empty() => Value::Object(m.clone()),
            Value::Null => Value::Null,
            v => Value::String(p.seal_value(&t, sub, &v.to_string()).await?),
        };
        let mut contact = rec.contact.clone();
        for f in [
            &mut contact.email,
            &mut contact.phone,
            &mut contact.webhook_url,
        ] {
            *f = p.seal_value(&t, sub, f).await?;
        }
        Ok(encode_run_with(rec, &payload, &contact))
    }

    /// Opens what [`Router::encode_sealed`] sealed, in place. An erased
    /// subscriber's run reads an empty payload and `[erased]` addresses (the
    /// dispatcher refuses to send to those).
    pub(super) async fn open_run(
        &self,
        tenant: &str,
        rec: &mut RunRecord,
    ) -> Result<(), ProcessError> {
        let Some(p) = &self.personal else {
            return Ok(());
        };
        let sealed_payload = matches!(rec.payload.json(), Value::String(s) if is_sealed(s));
        let c = &rec.contact;
        if !sealed_payload
            && ![&c.email, &c.phone, &c.webhook_url]
                .iter()
                .any(|f| is_sealed(f))
        {
            return Ok(());
        }
        let t = tenant_id(tenant)?;
        if let Value::String(s) = rec.payload.json() {
            if is_sealed(s) {
                let text = p.open(&t, &rec.subscriber_id, s).await?;
                let json = serde_json::from_str(&text).unwrap_or(Value::Object(Default::default()));
                rec.payload = json.into();
            }
        }
        let ContactOverride {
            email,
            phone,
            webhook_url,
            ..
        } = &mut rec.contact;
        for f in [email, phone, webhook_url] {
            if is_sealed(f) {
                *f = p.open(&t, &rec.subscriber_id, f).await?;
            }
        }
        Ok(())
    }
}
