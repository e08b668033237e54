//! The counting half of the alerts role: provider outcomes into minute
//! counts per tenant and series.

use std::collections::HashMap;

use async_trait::async_trait;
use bytes::Bytes;
use clarion_domain::anomaly::MinuteCounts;
use clarion_domain::event::Payload;
use clarion_domain::ids::Id;
use clarion_domain::Event;
use clarion_store::Store;

use super::keys::{self, COUNT_TTL, TENANT_SERIES, TENANT_TTL};
use crate::processor::{Batch, Input, ProcessError, Processor};

/// The processor's name (offsets, dedup).
pub const ALERTS: &str = "alerts";

/// Latencies past a day are a deferred send (a delay step, a schedule), not
/// a slow provider: they are left out of the latency signal.
const MAX_LATENCY_MS: i64 = 86_400_000;

/// Counts each provider outcome of its partition of `deliveries`.
pub struct AlertCounter {
    dedup: bool,
}

impl AlertCounter {
    /// Checks inputs against the dedup table: an outcome published twice
    /// (an outbox flushed again after a crash) is counted once.
    pub fn new() -> AlertCounter {
        AlertCounter { dedup: true }
    }

    /// With the log in the store's file (the embedded default), outcomes
    /// are appended in the commits that made them; a repeat needs a send
    /// effect run again after a crash, and a few outcomes counted twice in
    /// one minute do not move a baseline. Two dedup rows per outcome on the
    /// hot path would.
    pub fn colocated() -> AlertCounter {
        AlertCounter { dedup: false }
    }
}

impl Default for AlertCounter {
    fn default() -> Self {
        AlertCounter::new()
    }
}

/// What one event adds to its series' minute.
fn contribution(e: &Event) -> Option<(&str, MinuteCounts)> {
    let mut c = MinuteCounts::default();
    let (provider, nid) = match &e.payload {
        Payload::Sent(p) => {
            c.attempts = 1;
            (p.provider.as_str(), p.notification_id.as_str())
        }
        Payload::Delivered(p) => {
            c.delivered = 1;
            return Some((p.provider.as_str(), c));
        }
        Payload::Failed(p) => {
            c.failed = 1;
            // A bounce ("delivery") fails an attempt already counted sent.
            if p.stage != "delivery" {
                c.attempts = 1;
            }
            (p.provider.as_str(), p.notification_id.as_str())
        }
        _ => return None,
    };
    // Notification ids lead with their creation time: trigger → outcome.
    if let Some(id) = Id::parse_hex(nid) {
        let latency = e.occurred_at_ms - id.time_ms();
        if (0..MAX_LATENCY_MS).contains(&latency) {
            c.latency_sum_ms = latency as u64;
            c.latency_n = 1;
        }
    }
    Some((provider, c))
}

type Acc = HashMap<(String, i64, String), MinuteCounts>;

fn accumulate(acc: &mut Acc, e: &Event) {
    let Some((provider, c)) = contribution(e) else {
        return;
    };
    let tenant = e.tenant.as_str();
    let minute = keys::minute_of(e.occurred_at_ms);
    let mut add = |series: String| {
        acc.entry((tenant.to_string(), minute, series))
            .or_default()
            .add(&c)
    };
    add(TENANT_SERIES.to_string());
    if !provider.is_empty() {
        add(keys::provider_series(provider));
    }
}

pub fn encode_counts(c: &MinuteCounts) -> Bytes {
    Bytes::from(rmp_serde::to_vec(c).expect("counts encode"))
}

pub fn decode_counts(b: &[u8]) -> Option<MinuteCounts> {
    rmp_serde::from_slice(b).ok()
}

#[async_trait]
impl Processor for AlertCounter {
    fn name(&self) -> &'static str {
        ALERTS
    }

    fn dedup(&self) -> bool {
        self.dedup
    }

    /// The detector reads minute counts: not on a notification's path.
    fn follows(&self) -> bool {
        true
    }

    fn accepted_types(&self) -> Option<&'static [&'static str]> {
        Some(&clarion_domain::event::SEND_FACTS)
    }

    async fn process(
        &mut self,
        store: &dyn Store,
        batch: &mut Batch,
        inputs: &[Input],
    ) -> Result<(), ProcessError> {
        let mut acc = Acc::new();
        for input in inputs {
            accumulate(&mut acc, &input.event);
        }
        if acc.is_empty() {
            return Ok(());
        }
        let entries: Vec<_> = acc.into_iter().collect();
        let row_keys: Vec<_> = entries
            .iter()
            .map(|((t, m, s), _)| keys::count_key(t, *m, s, batch.partition))
            .collect();
        let stored = store.get_many(&row_keys).await?;
        let mut tenants = std::collections::BTreeSet::new();
        for ((key, ((tenant, _, _), add)), old) in row_keys.into_iter().zip(&entries).zip(stored) {
            let mut c = old.and_then(|b| decode_counts(&b)).unwrap_or_default();
            c.add(add);
            batch.writes.put_ttl(key, encode_counts(&c), COUNT_TTL);
            tenants.insert(tenant.as_str());
        }
        for t in tenants {
            batch
                .writes
                .put_ttl(keys::tenant_seen_key(t), Bytes::new(), TENANT_TTL);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clarion_domain::event::Actor;
    use clarion_domain::ids::TenantId;
    use clarion_proto::events as pb;

    fn event(tenant: &str, at: i64, payload: Payload) -> Event {
        Event {
            id: Id::derive(&[tenant.as_bytes(), &at.to_le_bytes()]),
            tenant: TenantId::parse(tenant).unwrap(),
            partition_key: format!("{tenant}/s"),
            occurred_at_ms: at,
            causation_id: None,
            correlation_id: None,
            actor: Actor::System("dispatcher".into()),
            payload,
        }
    }

    #[test]
    fn outcomes_count_into_their_series_minute() {
        let nid = Id::time_ordered(60_000, &[b"n"]).to_hex();
        let sent = Payload::Sent(pb::NotificationSent {
            notification_id: nid.clone(),
            provider: "smtp".into(),
            ..Default::default()
        });
        let bounced = Payload::Failed(pb::NotificationFailed {
            notification_id: nid.clone(),
            provider: "smtp".into(),
            stage: "delivery".into(),
            ..Default::default()
        });
        let routing = Payload::Failed(pb::NotificationFailed {
            notification_id: nid,
            stage: "route".into(),
            ..Default::default()
        });
        let mut acc = Acc::new();
        for (at, p) in [(60_250, sent), (119_999, bounced), (120_000, routing)] {
            accumulate(&mut acc, &event("acme", at, p));
        }
        accumulate(
            &mut acc,
            &event("acme", 60_000, Payload::Noted(Default::default())),
        );
        let get = |m: i64, s: &str| acc[&("acme".to_string(), m, s.to_string())];
        let smtp = get(60_000, "provider:smtp");
        assert_eq!((smtp.attempts, smtp.failed, smtp.delivered), (1, 1, 0));
        assert_eq!((smtp.latency_sum_ms, smtp.latency_n), (250 + 59_999, 2));
        assert_eq!(get(60_000, "tenant"), smtp);
        // A routing failure names no provider: the tenant's series only.
        assert_eq!(get(120_000, "tenant").attempts, 1);
        assert_eq!(acc.len(), 3);
    }
}
