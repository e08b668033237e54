//! Preference events on the subscriber's stream, applied in order with that
//! subscriber's triggers: each loads the subscriber's `Preferences`
//! (memory, else the store row, else none), changes them as the domain
//! says, and writes the preferences row, a history row (the event as
//! logged) and the aggregate's `PreferencesReplaced`.
//!
//! A contact change also replaces the address in the stored profile (sends
//! then go there, and are held back until it is verified) and sends the
//! verification message: the one message an unverified contact receives.
//! It is a `DispatchRequested` of no run (no `Routed`, no run record), so
//! its outcomes find no run when they come back, and are dropped like any
//! outcome of a run the router does not know.

use bytes::Bytes;
use clarion_domain::preferences::{verification, Preferences};
use clarion_domain::recipient::{self, preference};
use clarion_domain::subscriber::Subscriber;
use clarion_domain::{Channel, Event, Id, Payload};
use clarion_proto::events as pb;
use clarion_store::{RowKey, Store, Table};

use super::preference_check::{decode_preferences, preferences_key};
use super::{actor, Router};
use crate::processor::{Batch, ProcessError};
use crate::topics::Topic;

/// The step name of the verification message's dispatch.
pub const VERIFY_STEP: &str = "verify-contact";

/// A history row: the subscriber's partition, ordered by the event's time,
/// then its id.
pub fn history_key(tenant: &str, subscriber: &str, e: &Event) -> RowKey {
    let mut ck = Vec::with_capacity(24);
    ck.extend_from_slice(&(e.occurred_at_ms as u64).to_be_bytes());
    ck.extend_from_slice(&e.id.0);
    RowKey::new(Table::PreferenceHistory, tenant, subscriber, ck)
}

impl Router {
    /// One preference or contact event (any other payload is ignored):
    /// `e` as logged (the history row keeps it sealed), `open` the same
    /// with its personal fields opened, to decide on.
    pub(super) async fn on_preference_event(
        &mut self,
        store: &dyn Store,
        batch: &mut Batch,
        e: &Event,
        open: &Event,
    ) -> Result<(), ProcessError> {
        let subscriber = match &open.payload {
            Payload::PreferencesChanged(p) => &p.subscriber_id,
            Payload::ContactChanged(c) => &c.subscriber_id,
            Payload::ContactVerified(v) => &v.subscriber_id,
            Payload::ContactVerificationFailed(f) => &f.subscriber_id,
            _ => return Ok(()),
        };
        let tenant = e.tenant.as_str();
        let history = history_key(tenant, subscriber, e);
        // Appended twice (a retried request): applied once. A repeat must
        // neither send a second code nor count a wrong one twice.
        if self.applied_preference_events.contains(&e.id) || store.get(&history).await?.is_some() {
            return Ok(());
        }
        let mut prefs = self.preferences_for(store, tenant, subscriber).await?;
        match &open.payload {
            Payload::PreferencesChanged(p) => prefs.apply(p),
            Payload::ContactChanged(c) => {
                prefs.contact_changed(tenant, c);
                self.change_contact(store, batch, open, c).await?;
            }
            Payload::ContactVerified(v) => prefs.contact_verified(v),
            Payload::ContactVerificationFailed(f) => prefs.verification_failed(f),
            _ => unreachable!("matched above"),
        }
        batch.writes.put(history, Bytes::from(e.encode()));
        self.applied_preference_events.push(e.id);
        self.save_preferences(batch, tenant, subscriber, prefs);
        Ok(())
    }

    /// A subscriber's preferences as they stand (default when none stored),
    /// to change.
    async fn preferences_for(
        &mut self,
        store: &dyn Store,
        tenant: &str,
        subscriber: &str,
    ) -> Result<Preferences, ProcessError> {
        if let Some(known) = self.recipients.preferences.get(tenant, subscriber) {
            return Ok(known.clone().unwrap_or_default());
        }
        // Not the marks' shortcut: a change is rare, and the row is the truth.
        Ok(
            match store.get(&preferences_key(tenant, subscriber)).await? {
                Some(b) => {
                    let mut p = decode_preferences(tenant, subscriber, &b)?;
                    self.open_pending_contacts(tenant, subscriber, &mut p)
                        .await?;
                    p
                }
                None => Preferences::default(),
            },
        )
    }

    /// Writes a subscriber's preferences row (marking its tenant on this
    /// partition) and keeps them for the sends that follow.
    fn save_preferences(
        &mut self,
        batch: &mut Batch,
        tenant: &str,
        subscriber: &str,
        prefs: Preferences,
    ) {
        batch
            .writes
            .put(preferences_key(tenant, subscriber), prefs.encode());
        self.preference_marks.note(batch, tenant);
        self.recipients
            .evolve(recipient::Event::PreferencesReplaced(
                preference::Replaced {
                    tenant: tenant.to_string(),
                    subscriber: subscriber.to_string(),
                    preferences: prefs,
                },
            ));
    }

    /// A contact changed through the preference APIs: the profile takes the
    /// new address, and the verification code goes to it.
    async fn change_contact(
        &mut self,
        store: &dyn Store,
        batch: &mut Batch,
        e: &Event,
        c: &pb::ContactChanged,
    ) -> Result<(), ProcessError> {
        let tenant = e.tenant.as_str();
        let mut s = self
            .subscriber(store, tenant, &c.subscriber_id)
            .await?
            .unwrap_or_else(|| Subscriber {
                subscriber_id: c.subscriber_id.clone(),
                ..Subscriber::default()
            });
        verification::apply_to_profile(&mut s, &c.channel, &c.new_value);
        self.store_profile(batch, tenant, &s.to_event(), s);
        self.send_verification(batch, e, c);
        Ok(())
    }

    /// The verification message: straight to the dispatcher, past
    /// preferences and verification. Its ids derive from the event's, so a
    /// re-applied event asks for the same send. A code that expired before
    /// the router got to it (a lagging or replayed partition) is not sent.
    fn send_verification(&self, batch: &mut Batch, e: &Event, c: &pb::ContactChanged) {
        let Ok(channel) = c.channel.parse::<Channel>() else {
            return;
        };
        if !verification::verifiable(channel) || c.new_value.is_empty() || c.code.is_empty() {
            return;
        }
        if batch.now_ms > c.expires_at_ms {
            tracing::warn!(
                tenant = e.tenant.as_str(),
                event = %e.id,
                "verification code expired before it was sent; not sent"
            );
            return;
        }
        let (subject, body) = verification::message(&c.locale, &c.code);
        let id = &e.id.0[..];
        let dispatch = pb::DispatchRequested {
            notification_id: Id::time_ordered(e.occurred_at_ms, &[b"verify-contact", id]).to_hex(),
            attempt_id: Id::derive(&[b"verify-contact-attempt", id]).to_hex(),
            channel: channel.to_string(),
            provider: self.default_provider(channel),
            to: c.new_value.clone(),
            subject,
            body,
            locale: c.locale.clone(),
            subscriber_id: c.subscriber_id.clone(),
            step: VERIFY_STEP.into(),
            context_in_outcomes: true,
            ..Default::default()
        };
        let ev = e.caused(
            0,
            batch.now_ms,
            actor(),
            Payload::DispatchRequested(dispatch),
        );
        batch.emit(Topic::Dispatch, ev);
    }

    /// The tenant's back end replaced a profile: a pending verification of
    /// another address than the one it set ends (the tenant vouches for its
    /// own contacts).
    pub(super) async fn profile_replaced(
        &mut self,
        store: &dyn Store,
        batch: &mut Batch,
        tenant: &str,
        s: &Subscriber,
    ) -> Result<(), ProcessError> {
        if !self.preference_marks.has(tenant) {
            return Ok(()); // no stored preferences, no pending contact
        }
        self.load_preferences(store, tenant, &s.subscriber_id)
            .await?;
        let Some(mut prefs) = self.stored_preferences(tenant, &s.subscriber_id).cloned() else {
            return Ok(());
        };
        if prefs.profile_upserted(s) {
            self.save_preferences(batch, tenant, &s.subscriber_id, prefs);
        }
        Ok(())
    }
}
