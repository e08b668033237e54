//! Run records at rest (issue #32). A run still going (waiting on a timer,
//! a delivery outcome, a digest, or in the DLQ) keeps the trigger's payload
//! and inline contact data to render its next sends. In memory they are
//! open; in the `runs` row they are stored as the log holds them: the
//! payload's fields the workflow marks personal and the contact's
//! addresses sealed under the subscriber's data key, so an erasure reaches
//! a run that waits for days as it reaches the log. The rest of the payload
//! is kept as given, as in the log's trigger (docs/personal-data.md).
//!
//! The sealed contact comes from the trigger as logged (the gateway sealed
//! it), so a run written again seals nothing new; only marked payload
//! paths are sealed at each write (none for most workflows). Settled runs
//! keep neither payload nor contact (`record::settled`). Records stored
//! before this form hold the whole payload as one sealed string: they
//! still open.

use std::borrow::Cow;

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
    /// The stored form of a run: marked payload paths and contact sealed
    /// while it goes.
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
        let sub = rec.subscriber_id.as_str();
        let mut payload = Cow::Borrowed(rec.payload.json());
        if !rec.personal_paths.is_empty() {
            p.seal_paths_in(tenant, sub, payload.to_mut(), &rec.personal_paths)
                .await?;
        }
        let contact = match &rec.sealed_contact {
            Some(c) => Cow::Borrowed(c),
            None => {
                let t = tenant_id(tenant)?;
                let mut contact = rec.contact.clone();
                for f in [
                    &mut contact.email,
                    &mut contact.phone,
                    &mut contact.webhook_url,
                ] {
                    *f = p.seal_value(&t, sub, f).await?;
                }
                Cow::Owned(contact)
            }
        };
        Ok(encode_run_with(rec, &payload, &contact))
    }

    /// Opens what [`Router::encode_sealed`] sealed, in place, and keeps the
    /// sealed contact for the next write. An erased subscriber's run reads
    /// `[erased]` values (the dispatcher refuses to send to those).
    pub(super) async fn open_run(
        &self,
        tenant: &str,
        rec: &mut RunRecord,
    ) -> Result<(), ProcessError> {
        let Some(p) = &self.personal else {
            return Ok(());
        };
        let whole_payload = matches!(rec.payload.json(), Value::String(s) if is_sealed(s));
        let c = &rec.contact;
        let sealed_contact = [&c.email, &c.phone, &c.webhook_url]
            .iter()
            .any(|f| is_sealed(f));
        if !whole_payload && rec.personal_paths.is_empty() && !sealed_contact {
            return Ok(());
        }
        let t = tenant_id(tenant)?;
        if whole_payload {
            // A record stored before marked paths: the payload sealed whole.
            let Value::String(s) = rec.payload.json() else {
                unreachable!("checked above")
            };
            let text = p.open(&t, &rec.subscriber_id, s).await?;
            let json = serde_json::from_str(&text).unwrap_or(Value::Object(Default::default()));
            rec.payload = json.into();
        } else if !rec.personal_paths.is_empty() {
            let mut json = rec.payload.json().clone();
            p.open_json_value(&t, &rec.subscriber_id, &mut json).await?;
            rec.payload = json.into();
        }
        if sealed_contact {
            rec.sealed_contact = Some(rec.contact.clone());
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
        }
        Ok(())
    }
}
