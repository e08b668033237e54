//! `NotificationService`: Trigger and GetNotification.

use clarion_domain::trigger::{Recipient, TriggerCommand};
use clarion_domain::{Event, Payload, Violations};
use clarion_proto::api;
use clarion_proto::events as pb;
use clarion_runtime::projector::{history, status_of};
use clarion_runtime::Topic;
use clarion_store::{RowKey, Table};
use tonic::{Request, Response, Status};

use crate::auth;
use crate::config_cache::WorkflowHead;
use crate::config_read::cached_workflow_version;
use crate::error::ApiError;
use crate::state::GatewayState;

pub struct NotificationApi(pub GatewayState);

/// When a trigger's notifications may go: its `send_at` or `delay`.
#[derive(Clone, Copy, Debug, PartialEq)]
enum When {
    Now,
    At(i64),
    After(i64),
}

/// The longest a trigger may wait: `send_at` or `delay` at most this far ahead.
const MAX_SEND_AHEAD_MS: i64 = clarion_domain::limits::MAX_DELAY_MS as i64;

impl When {
    /// Reads `send_at` / `delay` (at most one; bounded) against `now_ms`.
    fn of(req: &api::TriggerRequest, now_ms: i64) -> Result<When, Violations> {
        let days = MAX_SEND_AHEAD_MS / 86_400_000;
        match (req.send_at.is_empty(), req.delay.is_empty()) {
            (true, true) => Ok(When::Now),
            (false, false) => Err(Violations::single(
                "delay",
                "set either send_at or delay, not both",
            )),
            (false, true) => {
                let at = clarion_domain::time::parse_instant(&req.send_at)
                    .map_err(|e| Violations::single("send_at", e))?;
                if at - now_ms > MAX_SEND_AHEAD_MS {
                    return Err(Violations::single(
                        "send_at",
                        format!("is more than {days} days ahead"),
                    ));
                }
                Ok(When::At(at))
            }
            (true, false) => {
                let ms = clarion_domain::flow::duration::parse_bounded_ms(
                    &req.delay,
                    MAX_SEND_AHEAD_MS as u64,
                    true,
                )
                .map_err(|e| Violations::single("delay", e))?;
                Ok(When::After(ms as i64))
            }
        }
    }

    /// The instant (ms; 0: at once) for a request accepted at `at_ms`.
    fn send_at_ms(self, at_ms: i64) -> i64 {
        match self {
            When::Now => 0,
            When::At(t) => t,
            When::After(d) => at_ms + d,
        }
    }
}

fn command(req: api::TriggerRequest) -> TriggerCommand {
    TriggerCommand {
        workflow_id: req.workflow_id,
        recipients: req
            .recipients
            .into_iter()
            .map(|r| {
                let contact = pb::RecipientOverride {
                    email: r.email,
                    phone: r.phone,
                    locale: r.locale,
                    timezone: r.timezone,
                    webhook_url: r.webhook_url,
                };
                Recipient {
                    subscriber_id: r.subscriber_id,
                    contact: (contact != pb::RecipientOverride::default()).then_some(contact),
                }
            })
            .collect(),
        payload_json: req.payload_json,
        idempotency_key: req.idempotency_key,
        // Resolved per acceptance (`When::send_at_ms`).
        send_at_ms: 0,
        critical: req.critical,
        // Set per workflow from its latest version.
        personal_paths: Vec::new(),
    }
}

/// A trigger names a workflow or a business event, not both; the event
/// name is bounded.
fn check_event_name(req: &api::TriggerRequest) -> Result<(), ApiError> {
    let event = &req.event;
    if event.len() > clarion_domain::limits::MAX_EVENT_NAME_BYTES {
        let mut v = Violations::default();
        clarion_domain::limits::check_len(
            &mut v,
            "event",
            event,
            clarion_domain::limits::MAX_EVENT_NAME_BYTES,
        );
        return Err(v.into());
    }
    if !event.is_empty() && !req.workflow_id.is_empty() {
        return Err(
            Violations::single("event", "set either workflow_id or event, not both").into(),
        );
    }
    Ok(())
}

/// The workflows (id, latest version's head) a trigger starts: its
/// workflow, or every workflow whose trigger names `event`; the request's
/// shape is validated on the way.
async fn resolve_flows(
    s: &GatewayState,
    tenant: &clarion_domain::TenantId,
    base: &TriggerCommand,
    event: &str,
) -> Result<Vec<(String, WorkflowHead)>, ApiError> {
    if event.is_empty() {
        base.validate(&s.limits)?;
        let head = cached_workflow_version(s, tenant, &base.workflow_id)
            .await?
            .ok_or_else(|| {
                Violations::single(
                    "workflow_id",
                    format!(
                        "no workflow {:?} exists for tenant {:?}",
                        base.workflow_id,
                        tenant.as_str()
                    ),
                )
            })?;
        return Ok(vec![(base.workflow_id.clone(), head)]);
    }
    // Validate the shape once with a placeholder id, then fan out.
    let mut probe = base.clone();
    probe.workflow_id = "event".into();
    probe.validate(&s.limits)?;
    Ok(workflows_for_event(s, tenant, event)
        .await?
        .into_iter()
        .collect())
}

/// The notifications `events` start, as the API answers them.
fn triggered(events: &[Event]) -> Vec<api::TriggeredNotification> {
    events
        .iter()
        .filter_map(|e| match &e.payload {
            Payload::Triggered(t) => Some(api::TriggeredNotification {
                notification_id: t.notification_id.clone(),
                workflow_id: t.workflow_id.clone(),
                subscriber_id: t.subscriber_id.clone(),
            }),
            _ => None,
        })
        .collect()
}

impl NotificationApi {
    pub(crate) async fn trigger(
        &self,
        req: Request<api::TriggerRequest>,
    ) -> Result<api::TriggerResponse, ApiError> {
        let s = &self.0;
        let caller = auth::tenant(s, req.metadata()).await?;
        // Tracing (off by default): the notifications' root spans start here.
        let traceparent = req
            .metadata()
            .get("traceparent")
            .and_then(|v| v.to_str().ok());
        let roots = clarion_runtime::telemetry::Roots::begin(traceparent);
        let req = req.into_inner();
        let event = req.event.clone();
        check_event_name(&req)?;
        let when = When::of(&req, s.clock.now_ms())?;
        let base = command(req);
        let flows = resolve_flows(s, &caller.tenant, &base, &event).await?;
        // Every matched workflow starts a notification per recipient.
        s.limits.check_fanout(flows.len(), base.recipients.len())?;
        let accept = |at_ms: i64| {
            let mut events = Vec::new();
            for (workflow_id, head) in &flows {
                let mut cmd = base.clone();
                cmd.workflow_id = workflow_id.clone();
                cmd.send_at_ms = when.send_at_ms(at_ms);
                // Sealed by `GatewayState::append` under each recipient's key.
                cmd.personal_paths = head.personal.clone();
                events.extend(cmd.accept(
                    &caller.tenant,
                    head.version,
                    rand::random(),
                    at_ms,
                    &caller.actor,
                ));
            }
            events
        };
        let at_ms = s.clock.now_ms();
        let mut events = accept(at_ms);
        let mut notifications = triggered(&events);
        let mut replay = false;
        if !base.idempotency_key.is_empty() {
            if let Some(original) = claim_idempotency_key(
                s,
                &caller.tenant,
                (&base, when),
                &event,
                at_ms,
                &notifications,
            )
            .await?
            {
                replay = true;
                // The original request's time fixes its ids: rebuild them.
                if let Some(original_ms) = original.at_ms {
                    events = accept(original_ms);
                }
                notifications = original.notifications;
            }
        }
        // A replay appends again: if the first request died between claiming
        // the key and appending, this completes it; otherwise the events'
        // fixed ids make the router drop them.
        if !events.is_empty() {
            s.append(Topic::Triggers, &events).await?;
        }
        if let Some(roots) = roots {
            roots.end("gateway", &events);
        }
        if replay {
            metrics::counter!("clarion_trigger_replays_total").increment(1);
        } else {
            metrics::counter!("clarion_triggers_accepted_total").increment(events.len() as u64);
            clarion_runtime::live::record(
                caller.tenant.as_str(),
                clarion_runtime::live::Kind::Trigger,
                "",
                events.len() as u64,
                s.clock.now_ms(),
            );
        }
        Ok(api::TriggerResponse {
            notification_ids: notifications
                .iter()
                .map(|n| n.notification_id.clone())
                .collect(),
            notifications,
            replay,
        })
    }

    async fn cancel(
        &self,
        req: Request<api::CancelRequest>,
    ) -> Result<api::CancelResponse, ApiError> {
        let s = &self.0;
        let caller = auth::tenant(s, req.metadata()).await?;
        let r = req.into_inner();
        if r.cancel_key.is_empty() || r.cancel_key.len() > clarion_domain::limits::MAX_KEY_BYTES {
            return Err(Violations::single("cancel_key", "is required (at most 255 bytes)").into());
        }
        // Runs with this key may be on any partition: tell every partition.
        let partitions = s.topics.partitions_of(Topic::Triggers);
        let seed: [u8; 16] = rand::random();
        let mut events = Vec::new();
        for p in 0..partitions {
            let key = (0u32..)
                .map(|i| format!("{}/~cancel/{i}", caller.tenant))
                .find(|k| clarion_log::partition_for(k, partitions) == p)
                .expect("some key hashes to every partition");
            events.push(Event {
                id: clarion_domain::Id(seed).child("cancel", p),
                tenant: caller.tenant.clone(),
                partition_key: key,
                occurred_at_ms: s.clock.now_ms(),
                causation_id: None,
                correlation_id: None,
                actor: caller.actor.clone(),
                payload: Payload::CancelRequested(pb::CancelRequested {
                    cancel_key: r.cancel_key.clone(),
                    reason: r.reason.clone(),
                }),
            });
        }
        s.append(Topic::Triggers, &events).await?;
        Ok(api::CancelResponse {})
    }

    async fn acknowledge(
        &self,
        req: Request<api::AcknowledgeRequest>,
    ) -> Result<api::AcknowledgeResponse, ApiError> {
        let s = &self.0;
        let caller = auth::tenant(s, req.metadata()).await?;
        let r = req.into_inner();
        let mut v = Violations::default();
        if r.notification_id.is_empty() {
            v.push("notification_id", "is required");
        }
        let kind = match clarion_domain::flow::Engagement::parse(&r.kind) {
            Some(k) if k != clarion_domain::flow::Engagement::Delivered => Some(k),
            _ => {
                v.push("kind", "must be one of acknowledged, read, opened, clicked");
                None
            }
        };
        v.into_result()?;
        record_engagement(
            s,
            &caller.tenant,
            &r.notification_id,
            &r.attempt_id,
            kind.expect("validated").as_str(),
            "app",
            caller.actor,
        )
        .await?;
        Ok(api::AcknowledgeResponse {})
    }

    pub(crate) async fn get(
        &self,
        req: Request<api::GetNotificationRequest>,
    ) -> Result<api::Notification, ApiError> {
        let s = &self.0;
        let caller = auth::tenant(s, req.metadata()).await?;
        let id = req.into_inner().notification_id;
        if id.is_empty() {
            return Err(Violations::single("notification_id", "is required").into());
        }
        let events = history_in(s, caller.tenant.as_str(), &id).await?;
        Ok(view(id, &events))
    }
}

/// A notification's history in `tenant`, in the order it happened
/// (`NOT_FOUND` when the tenant has no such notification). gRPC, REST and
/// the console's detail page read it here.
pub async fn history_in(s: &GatewayState, tenant: &str, id: &str) -> Result<Vec<Event>, ApiError> {
    let mut events = history(&*s.store, &*s.log, &s.topics, tenant, id)
        .await
        .map_err(|e| ApiError::Internal(e.to_string()))?;
    s.open_events(&mut events).await?;
    if events.is_empty() {
        return Err(ApiError::NotFound(format!(
            "no notification {id:?} for tenant {tenant:?}"
        )));
    }
    Ok(events)
}

/// The API's view of a notification: its status and every event of its
/// history.
pub fn view(id: String, events: &[Event]) -> api::Notification {
    let triggered = events
        .iter()
        .find_map(|e| match &e.payload {
            Payload::Triggered(p) => Some(p.clone()),
            _ => None,
        })
        .unwrap_or_default();
    api::Notification {
        notification_id: id,
        workflow_id: triggered.workflow_id,
        subscriber_id: triggered.subscriber_id,
        status: status_of(events).to_string(),
        events: events
            .iter()
            .map(|e| api::NotificationEvent {
                event_id: e.id.to_hex(),
                event_type: e.event_type().to_string(),
                occurred_at_ms: e.occurred_at_ms,
                detail_json: e.payload.detail_json().to_string(),
            })
            .collect(),
    }
}

#[tonic::async_trait]
impl api::notification_service_server::NotificationService for NotificationApi {
    async fn trigger(
        &self,
        request: Request<api::TriggerRequest>,
    ) -> Result<Response<api::TriggerResponse>, Status> {
        // The server's share of an acknowledgement (from the decoded request
        // to the encoded answer's hand-off to tonic): with the client's own
        // latency it splits the ack's time between the server and the
        // transport (docs/benchmarks.md).
        let started = std::time::Instant::now();
        let answer = NotificationApi::trigger(self, request).await;
        metrics::histogram!("clarion_trigger_seconds").record(started.elapsed().as_secs_f64());
        Ok(Response::new(answer?))
    }

    async fn get_notification(
        &self,
        request: Request<api::GetNotificationRequest>,
    ) -> Result<Response<api::Notification>, Status> {
        Ok(Response::new(self.get(request).await?))
    }

    async fn cancel(
        &self,
        request: Request<api::CancelRequest>,
    ) -> Result<Response<api::CancelResponse>, Status> {
        Ok(Response::new(NotificationApi::cancel(self, request).await?))
    }

    async fn acknowledge(
        &self,
        request: Request<api::AcknowledgeRequest>,
    ) -> Result<Response<api::AcknowledgeResponse>, Status> {
        Ok(Response::new(
            NotificationApi::acknowledge(self, request).await?,
        ))
    }
}

/// The answer first given to a request with the same idempotency key.
struct OriginalAnswer {
    at_ms: Option<i64>,
    notifications: Vec<api::TriggeredNotification>,
}

/// Claims the request's idempotency key for this answer, atomically: of
/// concurrent duplicates one wins and the others read its answer. `None`:
/// this request is the first. The same key with other parameters is refused.
async fn claim_idempotency_key(
    s: &GatewayState,
    tenant: &clarion_domain::TenantId,
    (base, when): (&TriggerCommand, When),
    event: &str,
    at_ms: i64,
    notifications: &[api::TriggeredNotification],
) -> Result<Option<OriginalAnswer>, ApiError> {
    // Only a keyed request needs its fingerprint (a canonical JSON
    // rendering and a hash: not free on the hot path).
    let request_hash = request_fingerprint(base, when, event);
    let stored = serde_json::json!({
        "hash": request_hash,
        "at_ms": at_ms,
        "notifications": notifications.iter().map(|n| serde_json::json!({
            "notification_id": n.notification_id,
            "workflow_id": n.workflow_id,
            "subscriber_id": n.subscriber_id,
        })).collect::<Vec<_>>(),
    });
    let key = RowKey::new(
        Table::Idempotency,
        tenant.as_str(),
        &base.idempotency_key,
        Vec::new(),
    );
    let Some(existing) = s
        .store
        .insert_if_absent(&key, stored.to_string().into(), Some(s.idempotency_ttl))
        .await?
    else {
        return Ok(None);
    };
    let existing: serde_json::Value = serde_json::from_slice(&existing).unwrap_or_default();
    if existing["hash"] != request_hash.as_str() {
        return Err(Violations::single(
            "idempotency_key",
            format!(
                "{:?} was already used with different parameters (keys are kept {} h)",
                base.idempotency_key,
                s.idempotency_ttl.as_secs() / 3600
            ),
        )
        .into());
    }
    let field = |n: &serde_json::Value, k: &str| n[k].as_str().unwrap_or_default().to_string();
    Ok(Some(OriginalAnswer {
        at_ms: existing["at_ms"].as_i64(),
        notifications: existing["notifications"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|n| api::TriggeredNotification {
                notification_id: field(n, "notification_id"),
                workflow_id: field(n, "workflow_id"),
                subscriber_id: field(n, "subscriber_id"),
            })
            .collect(),
    }))
}

/// Latest versions of the tenant's workflows triggered by `event`.
async fn workflows_for_event(
    s: &GatewayState,
    tenant: &clarion_domain::TenantId,
    event: &str,
) -> Result<Vec<(String, WorkflowHead)>, ApiError> {
    let rows = s
        .store
        .scan(&clarion_store::Scan::partition(
            Table::WorkflowIndex,
            tenant.as_str(),
            &format!("event/{event}"),
            10_000,
        ))
        .await?;
    let mut out = Vec::new();
    for (id, _) in rows {
        let id = String::from_utf8_lossy(&id).into_owned();
        // The index keeps old entries when a later version changed its event.
        if let Some(head) = cached_workflow_version(s, tenant, &id).await? {
            if head.trigger_event == event {
                out.push((id, head));
            }
        }
    }
    Ok(out)
}

/// Appends an engagement fact to the notification's recipient stream, where
/// the router feeds it to the run. Unknown notifications are NOT_FOUND.
pub async fn record_engagement(
    s: &GatewayState,
    tenant: &clarion_domain::TenantId,
    notification_id: &str,
    attempt_id: &str,
    kind: &str,
    source: &str,
    actor: clarion_domain::Actor,
) -> Result<(), ApiError> {
    append_for_notification(
        s,
        tenant,
        notification_id,
        actor,
        Payload::Engaged(pb::EngagementRecorded {
            notification_id: notification_id.to_string(),
            attempt_id: attempt_id.to_string(),
            kind: kind.to_string(),
            source: source.to_string(),
        }),
    )
    .await?;
    metrics::counter!("clarion_engagement_total", "kind" => kind.to_string(), "source" => source.to_string())
        .increment(1);
    Ok(())
}

/// Appends `payload` to the recipient stream of a notification (its
/// partition), where the router applies it in order with the run's other
/// inputs. Unknown notifications are NOT_FOUND.
pub async fn append_for_notification(
    s: &GatewayState,
    tenant: &clarion_domain::TenantId,
    notification_id: &str,
    actor: clarion_domain::Actor,
    payload: Payload,
) -> Result<(), ApiError> {
    // The notification's Triggered event names its partition and correlation.
    let head = history(
        &*s.store,
        &*s.log,
        &s.topics,
        tenant.as_str(),
        notification_id,
    )
    .await
    .map_err(|e| ApiError::Internal(e.to_string()))?
    .into_iter()
    .find(|e| matches!(e.payload, Payload::Triggered(_)));
    let Some(Event {
        payload: Payload::Triggered(t),
        partition_key,
        correlation_id,
        ..
    }) = head
    else {
        return Err(ApiError::NotFound(format!(
            "no notification {notification_id:?} for tenant {:?}",
            tenant.as_str()
        )));
    };
    let event = Event {
        id: clarion_domain::Id(rand::random()),
        tenant: tenant.clone(),
        partition_key,
        occurred_at_ms: s.clock.now_ms(),
        causation_id: None,
        correlation_id,
        actor,
        payload,
    };
    debug_assert_eq!(t.notification_id, notification_id);
    s.append(Topic::Triggers, &[event]).await?;
    Ok(())
}

/// Canonical hash of what a trigger asks for (not of how it was encoded):
/// a repeat with the same key must ask for the same thing.
fn request_fingerprint(cmd: &TriggerCommand, when: When, event: &str) -> String {
    let payload: serde_json::Value = if cmd.payload_json.is_empty() {
        serde_json::json!({})
    } else {
        serde_json::from_str(&cmd.payload_json).unwrap_or(serde_json::Value::Null)
    };
    let recipients: Vec<serde_json::Value> = cmd
        .recipients
        .iter()
        .map(|r| {
            let c = r.contact.clone().unwrap_or_default();
            serde_json::json!([
                r.subscriber_id,
                c.email,
                c.phone,
                c.locale,
                c.timezone,
                c.webhook_url
            ])
        })
        .collect();
    let mut parts = serde_json::json!([cmd.workflow_id, event, recipients, payload]);
    // Only when set, so the hashes of requests without them stay as they were.
    if when != When::Now || cmd.critical {
        let timing = match when {
            When::Now => serde_json::json!(null),
            When::At(t) => serde_json::json!({ "send_at": t }),
            When::After(d) => serde_json::json!({ "delay": d }),
        };
        if let Some(a) = parts.as_array_mut() {
            a.push(serde_json::json!([timing, cmd.critical]));
        }
    }
    let text = canonical(&parts);
    clarion_domain::tenant::sha256_hex(text.as_bytes())
}

/// JSON text with object keys sorted at every level, whatever order they came in.
fn canonical(v: &serde_json::Value) -> String {
    match v {
        serde_json::Value::Object(m) => {
            let sorted: std::collections::BTreeMap<&String, String> =
                m.iter().map(|(k, v)| (k, canonical(v))).collect();
            let parts: Vec<String> = sorted
                .into_iter()
                .map(|(k, v)| format!("{}:{v}", serde_json::Value::String(k.clone())))
                .collect();
            format!("{{{}}}", parts.join(","))
        }
        serde_json::Value::Array(a) => {
            format!(
                "[{}]",
                a.iter().map(canonical).collect::<Vec<_>>().join(",")
            )
        }
        other => other.to_string(),
    }
}
