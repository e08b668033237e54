//! The router's side of crypto-shredding (issue #32): inputs arrive with
//! personal fields sealed; the router opens a copy to decide and render,
//! and keeps storing what the log holds (sealed). What it emits is sealed
//! by the runner (`crate::personal`).

use std::borrow::Cow;

use clarion_domain::personal::{is_sealed, json_may_hold_sealed};
use clarion_domain::subscriber::Subscriber;
use clarion_domain::{Event, Payload};
use clarion_proto::events as pb;
use prost::Message;

use super::Router;
use crate::processor::ProcessError;

impl Router {
    /// `e` with its personal fields opened, or `e` itself when there is
    /// nothing to open (no sealing configured, or nothing sealed).
    pub(super) async fn opened<'e>(&self, e: &'e Event) -> Result<Cow<'e, Event>, ProcessError> {
        let Some(p) = &self.personal else {
            return Ok(Cow::Borrowed(e));
        };
        if !holds_sealed(&e.payload) {
            return Ok(Cow::Borrowed(e));
        }
        let mut open = e.clone();
        p.open_event(&mut open).await?;
        Ok(Cow::Owned(open))
    }

    /// A subscriber was erased (their keys destroyed): what this router
    /// holds of them in clear, in memory, goes too.
    pub(super) fn on_erased(&mut self, tenant: &str, subscriber: &str) {
        self.recipients.profiles.forget(tenant, subscriber);
        if let Some(p) = &self.personal {
            p.forget(tenant, subscriber);
        }
    }

    /// A stored profile row, opened.
    pub(super) async fn open_profile(
        &self,
        tenant: &str,
        bytes: &[u8],
    ) -> Result<Option<Subscriber>, ProcessError> {
        let Ok(mut s) = pb::SubscriberUpserted::decode(bytes) else {
            return Ok(None);
        };
        if let Some(p) = &self.personal {
            let tenant = clarion_domain::TenantId::parse(tenant)
                .map_err(|e| clarion_store::StoreError::Storage(e.to_string()))?;
            p.open_profile(&tenant, &mut s).await?;
        }
        Ok(Some(Subscriber::from_event(&s)))
    }
}

/// Whether a payload the router reads has a sealed field (cheap checks).
fn holds_sealed(p: &Payload) -> bool {
    match p {
        Payload::SubscriberUpserted(s) => [&s.email, &s.phone, &s.attributes_json, &s.webhook_url]
            .iter()
            .any(|f| is_sealed(f)),
        Payload::Triggered(t) => {
            json_may_hold_sealed(&t.payload_json)
                || t.recipient.as_ref().is_some_and(|r| {
                    [&r.email, &r.phone, &r.webhook_url]
                        .iter()
                        .any(|f| is_sealed(f))
                })
        }
        Payload::ContactChanged(c) => is_sealed(&c.old_value) || is_sealed(&c.new_value),
        Payload::ContactVerified(c) => is_sealed(&c.value),
        _ => false,
    }
}
