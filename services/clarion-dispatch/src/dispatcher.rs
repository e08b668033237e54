//! The dispatcher processor and its effects.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use clarion_domain::{send, Actor, Event, Payload};
use clarion_proto::events as pb;
use clarion_runtime::{
    live, telemetry, Batch, Clock, Effects, Emit, Input, ProcessError, Processor, SystemClock,
    Topic,
};
use clarion_store::{RowKey, Store, Table};
use prost::Message;

use clarion_runtime::personal::Personal;

use crate::breaker::BreakerConfig;
use crate::failover::{Providers, Routed};
use crate::provider::Provider;

pub const DISPATCHER: &str = "dispatcher";
pub const SINK: &str = "sink";
/// The built-in provider of the in_app channel: the send is the
/// `InboxItemWritten` event itself (docs/inbox.md).
pub const INBOX: &str = "inbox";

/// Decides, per dispatch request, between the sink (recorded in the commit)
/// and an external provider (an effect after the commit).
pub struct Dispatcher {
    dedup: bool,
    /// Opens what the sink records (it stands for the recipient's mailbox).
    personal: Option<Arc<Personal>>,
}

impl Dispatcher {
    /// A dispatcher whose inputs may repeat: on Kafka, or with the log in
    /// another file than the store, a router's requests are published after
    /// its commit, and a crash in between publishes them again, so the
    /// runner drops repeats through the dedup table.
    pub fn new() -> Dispatcher {
        Dispatcher {
            dedup: true,
            personal: None,
        }
    }

    /// A dispatcher for a log that shares the store's file (the embedded
    /// default): every router appends its requests in the commit that made
    /// them, so `dispatch` holds each request exactly once, and the dedup
    /// rows (two B-tree rows per request, kept for days) would be pure cost.
    pub fn colocated() -> Dispatcher {
        Dispatcher {
            dedup: false,
            personal: None,
        }
    }
}

impl Dispatcher {
    /// Opens sealed personal fields where a send needs them (issue #32).
    pub fn with_personal(mut self, personal: Arc<Personal>) -> Dispatcher {
        self.personal = Some(personal);
        self
    }
}

impl Default for Dispatcher {
    fn default() -> Self {
        Dispatcher::new()
    }
}

fn actor() -> Actor {
    Actor::System(DISPATCHER.into())
}

#[async_trait]
impl Processor for Dispatcher {
    fn name(&self) -> &'static str {
        DISPATCHER
    }

    fn dedup(&self) -> bool {
        self.dedup
    }

    async fn process(
        &mut self,
        _store: &dyn Store,
        batch: &mut Batch,
        inputs: &[Input],
    ) -> Result<(), ProcessError> {
        // The built-in providers' sends, counted once per batch for the
        // live rates (external sends are counted as their effects finish).
        let mut live: HashMap<(&str, &str, live::Kind), u64> = HashMap::new();
        for input in inputs {
            let e = &input.event;
            let Payload::DispatchRequested(d) = &e.payload else {
                continue;
            };
            if d.provider == INBOX {
                let kind = if inbox(batch, e, d) {
                    live::Kind::Sent
                } else {
                    live::Kind::Failed
                };
                *live
                    .entry((e.tenant.as_str(), &d.channel, kind))
                    .or_default() += 1;
            } else if d.provider == SINK {
                // The sink's "send" is this row, committed with the offset and
                // the dedup id: it exists exactly once per dispatch request.
                // It is the recipient's mailbox: what arrives there is open.
                let opened;
                let open = match &self.personal {
                    Some(p) if personal_sealed(d) => {
                        let mut o = e.clone();
                        p.open_event(&mut o).await?;
                        opened = o;
                        match &opened.payload {
                            Payload::DispatchRequested(d) => d,
                            _ => unreachable!("opening keeps the payload's type"),
                        }
                    }
                    _ => d,
                };
                let mut ck = batch.partition.to_be_bytes().to_vec();
                ck.extend_from_slice(&input.offset.to_be_bytes());
                batch.writes.put(
                    RowKey::new(
                        Table::SinkDeliveries,
                        e.tenant.as_str(),
                        &d.notification_id,
                        ck,
                    ),
                    Bytes::from(open.encode_to_vec()),
                );
                sent_and_delivered(batch, e, d, SINK);
                *live
                    .entry((e.tenant.as_str(), &d.channel, live::Kind::Sent))
                    .or_default() += 1;
            } else {
                batch.effects.push(Bytes::from(e.encode()));
            }
        }
        for ((tenant, channel, kind), n) in live {
            live::record(tenant, kind, channel, n, batch.now_ms);
        }
        Ok(())
    }
}

/// The inbox's "send": the item, then sent and delivered, all in the
/// dispatcher's commit, so the item exists exactly once per request. Under
/// the request's key (the subscriber's), so the inbox projector applies a
/// feed's items and marks in order. Returns whether it was sent.
fn inbox(batch: &mut Batch, e: &Event, d: &pb::DispatchRequested) -> bool {
    if d.subscriber_id.is_empty() {
        let failed = pb::NotificationFailed {
            notification_id: d.notification_id.clone(),
            attempt_id: d.attempt_id.clone(),
            provider: INBOX.into(),
            reason: "an in-app item needs a subscriber id: the recipient has none".into(),
            retryable: false,
            stage: "dispatch".into(),
            context: Some(send::context(d, e.occurred_at_ms)),
        };
        let failed = e.caused(2, batch.now_ms, actor(), Payload::Failed(failed));
        batch.emit(Topic::Deliveries, failed);
        return false;
    }
    let item = pb::InboxItemWritten {
        subscriber_id: d.subscriber_id.clone(),
        item_id: d.attempt_id.clone(),
        notification_id: d.notification_id.clone(),
        attempt_id: d.attempt_id.clone(),
        title: d.subject.clone(),
        body: d.body.clone(),
        link: d.link.clone(),
        category: d.category.clone(),
        workflow_id: d.workflow_id.clone(),
        locale: d.locale.clone(),
        data_json: d.data_json.clone(),
    };
    let written = e.caused(0, batch.now_ms, actor(), Payload::InboxItemWritten(item));
    batch.emit(Topic::Deliveries, written);
    sent_and_delivered(batch, e, d, INBOX);
    true
}

/// A built-in provider's outcome inside the commit: sent (its message id
/// is the attempt id) and delivered at once.
fn sent_and_delivered(batch: &mut Batch, e: &Event, d: &pb::DispatchRequested, provider: &str) {
    let context = send::context(d, e.occurred_at_ms);
    let sent = e.caused(
        0,
        batch.now_ms,
        actor(),
        Payload::Sent(pb::NotificationSent {
            notification_id: d.notification_id.clone(),
            attempt_id: d.attempt_id.clone(),
            provider: provider.into(),
            provider_message_id: d.attempt_id.clone(),
            context: Some(context.clone()),
        }),
    );
    let delivered = e.caused(
        1,
        batch.now_ms,
        actor(),
        Payload::Delivered(pb::NotificationDelivered {
            notification_id: d.notification_id.clone(),
            attempt_id: d.attempt_id.clone(),
            provider: provider.into(),
            context: Some(context),
        }),
    );
    batch.emit(Topic::Deliveries, sent);
    batch.emit(Topic::Deliveries, delivered);
}

/// Whether a dispatch holds a sealed field.
fn personal_sealed(d: &pb::DispatchRequested) -> bool {
    [&d.to, &d.subject, &d.body, &d.data_json]
        .iter()
        .any(|f| clarion_runtime::personal::is_sealed(f))
        || d.push_targets.iter().any(|t| {
            t.token
                .as_ref()
                .is_some_and(|t| clarion_runtime::personal::is_sealed(&t.personal))
        })
}

/// Sends through external providers after the dispatcher's commit.
pub struct DispatchEffects {
    providers: Providers,
    /// Tenants' own providers, routes and SLA demotions (issue #31).
    tenants: Option<Arc<crate::tenant_providers::TenantProviders>>,
    /// Opens the address and body for the provider (issue #32).
    personal: Option<Arc<Personal>>,
}

/// The longest any one send may take, whatever the provider's own
/// timeouts: a send past it fails retryably and the runner moves on.
pub const DEFAULT_SEND_TIMEOUT: Duration = Duration::from_secs(30);

impl DispatchEffects {
    pub fn new(providers: Vec<Arc<dyn Provider>>) -> DispatchEffects {
        DispatchEffects {
            providers: Providers::new(providers, Arc::new(SystemClock), DEFAULT_SEND_TIMEOUT),
            tenants: None,
            personal: None,
        }
    }

    /// Sends through each tenant's own providers and routes where it set
    /// them, honouring its SLAs' demotions (docs/providers.md).
    pub fn with_tenant_providers(
        mut self,
        tenants: Arc<crate::tenant_providers::TenantProviders>,
    ) -> DispatchEffects {
        self.tenants = Some(tenants);
        self
    }

    /// Opens sealed personal fields before a send (issue #32).
    pub fn with_personal(mut self, personal: Arc<Personal>) -> DispatchEffects {
        self.personal = Some(personal);
        self
    }

    /// Bounds every send (a blackholed SMTP host, a provider that never
    /// answers) to `timeout`: one provider's, before the next is tried.
    pub fn with_send_timeout(mut self, timeout: Duration) -> DispatchEffects {
        self.providers.set_send_timeout(timeout);
        self
    }

    /// Providers per channel in priority order, each behind a circuit
    /// breaker (docs/providers.md).
    pub fn with_routes(
        mut self,
        routes: HashMap<String, Vec<String>>,
        breaker: &BreakerConfig,
    ) -> DispatchEffects {
        self.providers = self.providers.with_routes(routes, breaker);
        self
    }

    /// The clock the breakers judge time (windows, latency) by.
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> DispatchEffects {
        self.providers.set_clock(clock);
        self
    }

    /// The state of a provider's breaker, if it has one.
    pub fn breaker_state(&self, provider: &str) -> Option<crate::breaker::State> {
        self.providers.breaker(provider).map(|b| b.state())
    }
}

#[async_trait]
impl Effects for DispatchEffects {
    async fn run(&self, effect: &[u8], now_ms: i64) -> Vec<Emit> {
        let mut e = match Event::decode(effect) {
            Ok(e) => e,
            Err(err) => {
                // Written by this dispatcher moments ago; unreadable means a bug.
                tracing::error!(error = %err, "undecodable dispatch effect dropped");
                return Vec::new();
            }
        };
        if let Some(p) = &self.personal {
            if let Err(err) = p.open_event(&mut e).await {
                // The key store is unreachable: the send fails retryably
                // rather than go out with sealed text.
                return vec![open_failed(
                    &e,
                    now_ms,
                    format!("opening the message: {err}"),
                    true,
                )];
            }
        }
        let Payload::DispatchRequested(d) = &e.payload else {
            return Vec::new();
        };
        if erased(d) {
            // Erased between the request and the send: nothing to send to.
            return vec![open_failed(
                &e,
                now_ms,
                "the recipient's data was erased".into(),
                false,
            )];
        }
        let view = match &self.tenants {
            Some(t) => match t.get(e.tenant.as_str()).await {
                Ok(v) => Some(v),
                // The operator's trouble (store, keyring): retried later
                // rather than sent through providers the tenant replaced.
                Err(err) => return vec![open_failed(&e, now_ms, err, true)],
            },
            None => None,
        };
        let view = view.as_deref();
        let routed = if telemetry::enabled() {
            // The provider call as a `tracing` span in the notification's
            // trace: what the provider code logs lands in it.
            use tracing::Instrument;
            let span =
                tracing::info_span!("provider.send", provider = %d.provider, channel = %d.channel);
            telemetry::join(&span, &e);
            self.providers
                .send_with(e.tenant.as_str(), d, view)
                .instrument(span)
                .await
        } else {
            self.providers.send_with(e.tenant.as_str(), d, view).await
        };
        // The outcome happened when the provider answered: its events carry
        // that time (what SLAs and latency figures measure), not the time
        // the send began.
        let now_ms = now_ms.max(self.providers.clock().now_ms());
        routed_emits(&e, d, routed, now_ms)
    }
}

/// The events of a send that went through the provider route: the
/// failover note, breaker changes, the outcome, the provider's own events.
fn routed_emits(e: &Event, d: &pb::DispatchRequested, routed: Routed, now_ms: i64) -> Vec<Emit> {
    let kind = if routed.report.result.is_ok() {
        live::Kind::Sent
    } else {
        live::Kind::Failed
    };
    live::record(e.tenant.as_str(), kind, &d.channel, 1, now_ms);
    let emit = |topic: Topic, index: u32, payload: Payload| Emit {
        topic,
        event: e.caused(index, now_ms, actor(), payload),
    };
    let mut out = Vec::new();
    // Why the outcome names another provider than the request: first.
    if !routed.skipped.is_empty() && routed.report.result.is_ok() {
        let over = pb::ProviderFailedOver {
            notification_id: d.notification_id.clone(),
            attempt_id: d.attempt_id.clone(),
            provider: routed.provider.clone(),
            skipped: routed.skipped,
        };
        out.push(emit(
            Topic::Deliveries,
            FAILED_OVER_INDEX,
            Payload::ProviderFailedOver(over),
        ));
    }
    let changes = routed.changes.into_iter().take(MAX_CHANGES);
    for (i, c) in changes.enumerate() {
        let changed = pb::ProviderBreakerChanged {
            provider: c.provider,
            from: c.from.as_str().into(),
            to: c.to.as_str().into(),
            reason: c.reason,
            notification_id: d.notification_id.clone(),
            attempt_id: d.attempt_id.clone(),
        };
        out.push(emit(
            Topic::Deliveries,
            FAILED_OVER_INDEX + 1 + i as u32,
            Payload::ProviderBreakerChanged(changed),
        ));
    }
    let context = send::context(d, e.occurred_at_ms);
    out.extend(
        outcome_events(d, &context, &routed.provider, routed.report.result)
            .into_iter()
            .map(|(index, payload)| emit(Topic::Deliveries, index, payload)),
    );
    // Indexes 0-2 are the outcome's, 3-15 the route's; a provider's
    // own events follow.
    for (i, (topic, payload)) in routed.report.extra.into_iter().enumerate() {
        out.push(emit(topic, EXTRA_INDEX + i as u32, payload));
    }
    out
}

/// Whether the recipient's data was erased between the request and the
/// send: the address, or every push target's token, reads `[erased]`.
fn erased(d: &pb::DispatchRequested) -> bool {
    use clarion_runtime::personal::ERASED;
    d.to == ERASED
        || (!d.push_targets.is_empty()
            && d.push_targets
                .iter()
                .all(|t| t.token.as_ref().is_some_and(|t| t.personal == ERASED)))
}

/// The send's failure when its personal fields cannot be opened.
fn open_failed(e: &Event, now_ms: i64, reason: String, retryable: bool) -> Emit {
    let Payload::DispatchRequested(d) = &e.payload else {
        unreachable!("only dispatch requests are opened")
    };
    let failed = pb::NotificationFailed {
        notification_id: d.notification_id.clone(),
        attempt_id: d.attempt_id.clone(),
        provider: d.provider.clone(),
        reason,
        retryable,
        stage: "dispatch".into(),
        context: Some(send::context(d, e.occurred_at_ms)),
    };
    Emit {
        topic: Topic::Deliveries,
        event: e.caused(2, now_ms, actor(), Payload::Failed(failed)),
    }
}

/// The index of the failover event; breaker changes follow it.
const FAILED_OVER_INDEX: u32 = 3;
/// Breaker changes one send reports at most (indexes 4-15).
const MAX_CHANGES: usize = 12;
/// Where the indexes of a provider's own events start (see [`crate::Report`]).
const EXTRA_INDEX: u32 = 16;

/// The outcome's events (index, payload): sent (and delivered), or failed,
/// in the name of `provider`, the one that took (or last refused) the send,
/// each with the request's `context`.
fn outcome_events(
    d: &pb::DispatchRequested,
    context: &pb::SendContext,
    provider: &str,
    result: Result<crate::SendOutcome, crate::SendError>,
) -> Vec<(u32, Payload)> {
    match result {
        Ok(outcome) => {
            metrics::counter!("clarion_dispatch_sent_total", "provider" => provider.to_string())
                .increment(1);
            let mut out = vec![(
                0,
                Payload::Sent(pb::NotificationSent {
                    notification_id: d.notification_id.clone(),
                    attempt_id: d.attempt_id.clone(),
                    provider: provider.to_string(),
                    provider_message_id: outcome.provider_message_id,
                    context: Some(context.clone()),
                }),
            )];
            if outcome.delivered {
                out.push((
                    1,
                    Payload::Delivered(pb::NotificationDelivered {
                        notification_id: d.notification_id.clone(),
                        attempt_id: d.attempt_id.clone(),
                        provider: provider.to_string(),
                        context: Some(context.clone()),
                    }),
                ));
            }
            out
        }
        Err(err) => {
            metrics::counter!("clarion_dispatch_failed_total", "provider" => provider.to_string())
                .increment(1);
            tracing::warn!(notification = %d.notification_id, provider = %provider, error = %err, "send failed");
            vec![(
                2,
                Payload::Failed(pb::NotificationFailed {
                    notification_id: d.notification_id.clone(),
                    attempt_id: d.attempt_id.clone(),
                    provider: provider.to_string(),
                    reason: err.message,
                    retryable: err.retryable,
                    stage: "dispatch".into(),
                    context: Some(context.clone()),
                }),
            )]
        }
    }
}

/// Sink deliveries of a notification (what the sink provider recorded).
pub async fn sink_deliveries(
    store: &dyn Store,
    tenant: &str,
    notification_id: &str,
) -> Result<Vec<pb::DispatchRequested>, clarion_store::StoreError> {
    let rows = store
        .scan(&clarion_store::Scan::partition(
            Table::SinkDeliveries,
            tenant,
            notification_id,
            1000,
        ))
        .await?;
    Ok(rows
        .into_iter()
        .filter_map(|(_, v)| pb::DispatchRequested::decode(&v[..]).ok())
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clarion_domain::{Id, TenantId};

    fn request(subscriber: &str) -> Input {
        let e = Event {
            id: Id([7; 16]),
            tenant: TenantId::parse("acme").unwrap(),
            partition_key: "acme/ana".into(),
            occurred_at_ms: 1,
            causation_id: None,
            correlation_id: None,
            actor: actor(),
            payload: Payload::DispatchRequested(pb::DispatchRequested {
                notification_id: "n1".into(),
                attempt_id: "a1".into(),
                channel: "in_app".into(),
                provider: INBOX.into(),
                subject: "Job J-7".into(),
                body: "yours".into(),
                subscriber_id: subscriber.into(),
                category: "jobs".into(),
                link: "fieldapp://jobs/J-7".into(),
                ..Default::default()
            }),
        };
        Input {
            offset: 0,
            raw: Bytes::from(e.encode()),
            event: e,
        }
    }

    async fn decide(input: Input) -> Batch {
        let dir = tempfile::tempdir().unwrap();
        let store =
            clarion_store::embedded::SqliteStore::open(dir.path().join("s.db").to_str().unwrap())
                .unwrap();
        let mut batch = Batch {
            now_ms: 5,
            ..Batch::default()
        };
        Dispatcher::new()
            .process(&store, &mut batch, &[input])
            .await
            .unwrap();
        batch
    }

    #[tokio::test]
    async fn the_inbox_writes_the_item_then_sent_and_delivered_in_the_commit() {
        let batch = decide(request("ana")).await;
        assert!(batch.effects.is_empty(), "no send after the commit");
        let kinds: Vec<&str> = batch.emits.iter().map(|e| e.event.event_type()).collect();
        assert_eq!(
            kinds,
            [
                "clarion.inbox.item_written.v1",
                "clarion.notification.sent.v1",
                "clarion.notification.delivered.v1"
            ]
        );
        for e in &batch.emits {
            assert_eq!(e.topic, Topic::Deliveries);
            assert_eq!(e.event.partition_key, "acme/ana", "the subscriber's key");
        }
        let Payload::InboxItemWritten(item) = &batch.emits[0].event.payload else {
            panic!("{:?}", batch.emits[0]);
        };
        assert_eq!(
            (
                item.item_id.as_str(),
                item.title.as_str(),
                item.link.as_str()
            ),
            ("a1", "Job J-7", "fieldapp://jobs/J-7")
        );
        assert_eq!(batch.emits[0].event.occurred_at_ms, 5);
        // The outcomes say what the send was: analytics counts them alone.
        for e in &batch.emits[1..] {
            let context = match &e.event.payload {
                Payload::Sent(s) => s.context.as_ref(),
                Payload::Delivered(d) => d.context.as_ref(),
                other => panic!("{other:?}"),
            };
            let c = context.expect("the request's context");
            assert_eq!((c.channel.as_str(), c.provider.as_str()), ("in_app", INBOX));
            assert_eq!(c.requested_at_ms, 1, "the request's time, not the send's");
        }
    }

    #[test]
    fn an_external_sends_outcomes_carry_the_requests_context() {
        let d = pb::DispatchRequested {
            notification_id: "n1".into(),
            attempt_id: "a1".into(),
            channel: "email".into(),
            provider: "smtp".into(),
            workflow_id: "welcome".into(),
            template_id: "hello".into(),
            subscriber_id: "ana".into(),
            ..Default::default()
        };
        let context = send::context(&d, 40);
        let ok = crate::SendOutcome {
            provider_message_id: "m1".into(),
            delivered: true,
        };
        // Failed over to another provider: the context keeps the one asked.
        let sent = outcome_events(&d, &context, "ses", Ok(ok));
        let failed = outcome_events(&d, &context, "smtp", Err(crate::SendError::retryable("x")));
        for (_, p) in sent.iter().chain(&failed) {
            let (c, provider) = match p {
                Payload::Sent(s) => (s.context.as_ref(), &s.provider),
                Payload::Delivered(d) => (d.context.as_ref(), &d.provider),
                Payload::Failed(f) => (f.context.as_ref(), &f.provider),
                other => panic!("{other:?}"),
            };
            assert_eq!(c, Some(&context), "{p:?}");
            assert!(provider == "ses" || provider == "smtp");
        }
        assert_eq!(sent.len() + failed.len(), 3);
        assert_eq!(context.provider, "smtp");
        assert_eq!(context.requested_at_ms, 40);
    }

    #[tokio::test]
    async fn an_item_without_a_subscriber_fails_for_good() {
        let batch = decide(request("")).await;
        assert_eq!(batch.emits.len(), 1);
        let Payload::Failed(f) = &batch.emits[0].event.payload else {
            panic!("{:?}", batch.emits[0]);
        };
        assert!(!f.retryable && f.reason.contains("subscriber"), "{f:?}");
    }
}
