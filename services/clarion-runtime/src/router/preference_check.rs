//! The check before every send: may the subscriber's preferences have it?
//! The router asks `preferences::evaluate` (the precedence table, the same
//! function `POST /v1/preferences/evaluate` answers with) and feeds a denied
//! send back into the run as `Suppressed`, which notes it and goes on.
//!
//! The hot path stays free of reads: a tenant with no stored preferences on
//! the partition (`marks`) is checked with default preferences,
//! topics are cached per tenant like templates, and the send's address is
//! resolved only when the subscriber has an unverified contact on the
//! channel (the only rule that reads it).

use clarion_domain::flow::{Flow, SendSpec};
use clarion_domain::preferences::{evaluate, Preferences, Question};
use clarion_domain::router::{send_address, Recipient};
use clarion_domain::subscriber::Subscriber;
use clarion_domain::{Channel, Payload};
use clarion_store::{RowKey, Store, StoreError, Table};

use super::{Router, RunRecord};
use crate::processor::{Input, ProcessError};

/// The stored preferences row of a subscriber (the gateway reads it too).
pub fn preferences_key(tenant: &str, subscriber: &str) -> RowKey {
    RowKey::new(Table::Preferences, tenant, subscriber, Vec::new())
}

/// Decodes a stored preferences row; a row that does not decode is an error
/// (sending against a subscriber's opt-out is worse than stopping).
pub(super) fn decode_preferences(
    tenant: &str,
    subscriber: &str,
    bytes: &[u8],
) -> Result<Preferences, ProcessError> {
    Preferences::decode(bytes).map_err(|e| {
        ProcessError::Store(StoreError::Storage(format!(
            "stored preferences of subscriber {subscriber:?} of tenant {tenant:?} do not decode: {e}"
        )))
    })
}

impl Router {
    /// Whether a send may go: `None` when it may, else the reason it is
    /// suppressed, naming the rule, topic, channel and setting.
    pub(super) async fn preferences_deny(
        &mut self,
        store: &dyn Store,
        tenant: &str,
        flow: &Flow,
        rec: &RunRecord,
        spec: &SendSpec,
        recipient: &mut Option<Subscriber>,
    ) -> Result<Option<String>, ProcessError> {
        // A channel that does not parse fails when the send is rendered.
        let Ok(channel) = spec.channel.parse::<Channel>() else {
            return Ok(None);
        };
        let def = &flow.def;
        let topic = match &def.topic {
            Some(id) => self.topic(store, tenant, id).await?,
            None => None,
        };
        // A tenant with no stored preferences here costs no lookup at all.
        let marked = self.preference_marks.has(tenant);
        if marked {
            self.load_preferences(store, tenant, &rec.subscriber_id)
                .await?;
        }
        let unverified = marked
            && self
                .stored_preferences(tenant, &rec.subscriber_id)
                .and_then(|p| p.contacts.get(channel.as_str()))
                .is_some_and(|c| !c.verified);
        let address = if unverified {
            self.address_of(store, tenant, rec, spec, channel, recipient)
                .await?
        } else {
            String::new()
        };
        let stored = match marked {
            true => self.stored_preferences(tenant, &rec.subscriber_id),
            false => None,
        };
        let preferences = stored.unwrap_or(&self.no_preferences);
        let verdict = evaluate(&Question {
            channel,
            topic_id: def.topic.as_deref(),
            topic: topic.as_deref(),
            critical: def.critical,
            preferences,
            address: &address,
        });
        if verdict.allowed {
            return Ok(None);
        }
        count_suppressed(tenant, verdict.rule.as_str());
        Ok(Some(format!(
            "preferences ({}): {}",
            verdict.rule.as_str(),
            verdict.reason
        )))
    }

    /// Where the send would go, resolved as rendering resolves it (an
    /// address that does not resolve fails there; here it is none).
    async fn address_of(
        &mut self,
        store: &dyn Store,
        tenant: &str,
        rec: &RunRecord,
        spec: &SendSpec,
        channel: Channel,
        recipient: &mut Option<Subscriber>,
    ) -> Result<String, ProcessError> {
        let subscriber = match recipient {
            Some(s) => s,
            None => recipient.insert(self.recipient(store, tenant, rec).await?),
        };
        let to = Recipient {
            tenant,
            notification_id: &rec.run.notification_id,
            subscriber,
            payload: &rec.payload,
        };
        Ok(send_address(&to, spec, channel).unwrap_or_default())
    }

    /// The subscriber's stored preferences, if it has any (loaded first
    /// with [`Router::load_preferences`]).
    pub(super) fn stored_preferences(
        &self,
        tenant: &str,
        subscriber: &str,
    ) -> Option<&Preferences> {
        self.recipients
            .preferences
            .get(tenant, subscriber)
            .and_then(Option::as_ref)
    }

    /// Puts a subscriber's preferences in memory (memory, else the store
    /// row), unless its tenant has no rows on this partition at all.
    pub(super) async fn load_preferences(
        &mut self,
        store: &dyn Store,
        tenant: &str,
        subscriber: &str,
    ) -> Result<(), ProcessError> {
        if !self.preference_marks.has(tenant)
            || self
                .recipients
                .preferences
                .get(tenant, subscriber)
                .is_some()
        {
            return Ok(());
        }
        let stored = match store.get(&preferences_key(tenant, subscriber)).await? {
            Some(b) => {
                let mut p = decode_preferences(tenant, subscriber, &b)?;
                self.open_pending_contacts(tenant, subscriber, &mut p)
                    .await?;
                Some(p)
            }
            None => None,
        };
        self.recipients.preferences.load(tenant, subscriber, stored);
        Ok(())
    }

    /// Reads the preferences of the batch's triggered subscribers that are
    /// not in memory with one store read (tenants with rows only): a new
    /// run's first send is checked right away.
    pub(super) async fn prefetch_preferences(
        &mut self,
        store: &dyn Store,
        inputs: &[Input],
    ) -> Result<(), ProcessError> {
        let mut wanted: Vec<(String, String)> = Vec::new();
        for input in inputs {
            let Payload::Triggered(t) = &input.event.payload else {
                continue;
            };
            let tenant = input.event.tenant.as_str();
            if !self.preference_marks.has(tenant)
                || self
                    .recipients
                    .preferences
                    .get(tenant, &t.subscriber_id)
                    .is_some()
                || wanted
                    .last()
                    .is_some_and(|(a, b)| a == tenant && *b == t.subscriber_id)
            {
                continue;
            }
            wanted.push((tenant.to_string(), t.subscriber_id.clone()));
        }
        if wanted.is_empty() {
            return Ok(());
        }
        wanted.sort_unstable();
        wanted.dedup();
        let keys: Vec<RowKey> = wanted.iter().map(|(t, s)| preferences_key(t, s)).collect();
        let rows = store.get_many(&keys).await?;
        for ((tenant, subscriber), row) in wanted.into_iter().zip(rows) {
            let stored = match row {
                Some(b) => {
                    let mut p = decode_preferences(&tenant, &subscriber, &b)?;
                    self.open_pending_contacts(&tenant, &subscriber, &mut p)
                        .await?;
                    Some(p)
                }
                None => None,
            };
            self.recipients
                .preferences
                .load(&tenant, &subscriber, stored);
        }
        Ok(())
    }
}

/// Counts a suppressed send by the rule that decided (and by tenant only
/// where the operator allows tenant names in labels).
fn count_suppressed(tenant: &str, rule: &'static str) {
    if crate::metric_labels::tenant_labels_on() {
        metrics::counter!("clarion_sends_suppressed_total", "rule" => rule, "tenant" => crate::metric_labels::tenant(tenant))
            .increment(1);
    } else {
        metrics::counter!("clarion_sends_suppressed_total", "rule" => rule).increment(1);
    }
}
