//! Compliance operations (issue #32, docs/compliance.md), shared by the
//! REST routes (`rest_compliance`) and gRPC (`compliance_grpc`): GDPR
//! erasure of a subscriber, legal holds, the retention policy.
//!
//! Holds and the policy are config events; the retention processor keeps
//! them in `Table::Compliance` and a write returns once it applied them.
//! Holds are placed and erasures decided under the gateway's config lock,
//! so an erasure cannot slip between a hold's placement and its projection
//! (one gateway writes config, docs/architecture.md).

use clarion_domain::compliance::{HoldBook, HoldError, HoldScope, Policy, MAX_REASON_BYTES};
use clarion_domain::limits::check_len;
use clarion_domain::subscriber::validate_subscriber_id;
use clarion_domain::{Actor, Event, Id, Payload, TenantId, Violations};
use clarion_proto::api;
use clarion_proto::events as pb;
use clarion_runtime::retention::erasure::{subject, Request};
use clarion_runtime::retention::{erase, rows, subject_of, ErasureError, Receipt, RETENTION};
use clarion_runtime::Topic;
use clarion_store::{RowKey, Table};

use crate::error::ApiError;
use crate::state::GatewayState;
use crate::tenant::config_event;

/// Appends config events and waits until the retention processor has them.
async fn publish(s: &GatewayState, events: &[Event]) -> Result<(), ApiError> {
    let at = s.append(Topic::Config, events).await?;
    if let Some(last) = at.last() {
        s.wait_applied(RETENTION, Topic::Config, *last).await;
    }
    Ok(())
}

fn hold_error(e: HoldError) -> ApiError {
    match e {
        HoldError::Invalid(v) => ApiError::Invalid(v),
        HoldError::Unknown(m) => ApiError::NotFound(HoldError::Unknown(m).to_string()),
    }
}

fn erasure_error(e: ErasureError) -> ApiError {
    ApiError::Unavailable(format!("erasure: {e}"))
}

pub fn receipt_to_api(r: Receipt) -> api::ErasureReceipt {
    api::ErasureReceipt {
        subscriber_id: r.subscriber_id,
        request_id: r.request_id,
        erased_at_ms: r.erased_at_ms,
        key_generations_destroyed: r.key_generations_destroyed,
        notifications: r.notifications,
        inbox_items: r.inbox_items,
        devices: r.devices,
        preference_history: r.preference_history,
        projections_touched: r.projections_touched,
        actor: r.actor,
        reason: r.reason,
    }
}

/// Erases subscriber `id` of the tenant, or — under a legal hold —
/// records the request as deferred and refuses naming the hold.
pub async fn erase_subscriber(
    s: &GatewayState,
    tenant: &TenantId,
    actor: &Actor,
    id: &str,
    reason: &str,
) -> Result<Receipt, ApiError> {
    let mut v = Violations::default();
    validate_subscriber_id(&mut v, "subscriber_id", id);
    check_len(&mut v, "reason", reason, MAX_REASON_BYTES);
    v.into_result()?;
    let t = tenant.as_str();
    let _guard = s.config_lock.lock().await;
    let found = subject_of(&*s.store, t, id).await?;
    // Known by their record, or by notifications sent with contact data
    // given in the trigger (sealed under their key all the same).
    let known = !found.0.is_empty()
        || s.store
            .get(&RowKey::new(Table::Subscribers, t, id, Vec::new()))
            .await?
            .is_some();
    if !known {
        return Err(ApiError::NotFound(format!(
            "no subscriber {id:?} for tenant {t:?}"
        )));
    }
    let book = rows::holds(&*s.store, t).await?;
    let now = s.clock.now_ms();
    let request_id = Id(rand::random()).to_hex();
    if let Some(hold) = book.blocking_erasure(&subject(id, &found), now) {
        let hold_id = hold.id.clone();
        let deferred = pb::ErasureDeferred {
            subscriber_id: id.to_string(),
            request_id: request_id.clone(),
            hold_id: hold_id.clone(),
            reason: reason.to_string(),
        };
        publish(
            s,
            &[config_event(
                s,
                tenant,
                actor,
                Payload::ErasureDeferred(deferred),
            )],
        )
        .await?;
        return Err(ApiError::FailedPrecondition(format!(
            "legal hold {hold_id} covers subscriber {id:?}: erasure request {request_id} is \
             deferred and will be executed when the hold is released"
        )));
    }
    let req = Request {
        tenant,
        subscriber: id,
        request_id: &request_id,
        reason,
        actor,
        now_ms: now,
    };
    erase(&*s.shredder, &*s.store, &*s.log, &s.topics, req)
        .await
        .map_err(erasure_error)
}

fn scope_of(s: Option<api::HoldScope>) -> HoldScope {
    let s = s.unwrap_or_default();
    HoldScope::from_pb(Some(&pb::HoldScope {
        subscriber_id: s.subscriber_id,
        workflow_id: s.workflow_id,
        from_ms: s.from_ms,
        until_ms: s.until_ms,
    }))
}

fn hold_to_api(h: &clarion_domain::compliance::Hold, now_ms: i64) -> api::LegalHold {
    let s = h.scope.to_pb();
    api::LegalHold {
        hold_id: h.id.clone(),
        scope: Some(api::HoldScope {
            subscriber_id: s.subscriber_id,
            workflow_id: s.workflow_id,
            from_ms: s.from_ms,
            until_ms: s.until_ms,
        }),
        reason: h.reason.clone(),
        actor: h.actor.clone(),
        placed_at_ms: h.placed_at_ms,
        expires_at_ms: h.expires_at_ms.unwrap_or(0),
        state: if h.in_force(now_ms) {
            "in_force"
        } else {
            "expired"
        }
        .into(),
    }
}

/// Places a hold; returns it.
pub async fn place_hold(
    s: &GatewayState,
    tenant: &TenantId,
    actor: &Actor,
    req: api::PlaceHoldRequest,
) -> Result<api::LegalHold, ApiError> {
    let scope = scope_of(req.scope);
    let _guard = s.config_lock.lock().await;
    let mut book = rows::holds(&*s.store, tenant.as_str()).await?;
    let now = s.clock.now_ms();
    let id = format!("hold-{}", &Id(rand::random()).to_hex()[..20]);
    let placed = book
        .place(&id, &scope, &req.reason, req.expires_at_ms, now)
        .map_err(hold_error)?;
    let event = config_event(s, tenant, actor, Payload::LegalHoldPlaced(placed.clone()));
    publish(s, &[event]).await?;
    book.placed(&placed, &rows::actor_label(actor), now);
    Ok(hold_to_api(&book.holds[&id], now))
}

/// The tenant's holds not yet released, oldest first.
pub async fn list_holds(
    s: &GatewayState,
    tenant: &TenantId,
) -> Result<Vec<api::LegalHold>, ApiError> {
    let book = rows::holds(&*s.store, tenant.as_str()).await?;
    let now = s.clock.now_ms();
    let mut out: Vec<_> = book.holds.values().map(|h| hold_to_api(h, now)).collect();
    out.sort_by(|a, b| (a.placed_at_ms, &a.hold_id).cmp(&(b.placed_at_ms, &b.hold_id)));
    Ok(out)
}

/// Extends a hold to a new expiry (0: until released).
pub async fn extend_hold(
    s: &GatewayState,
    tenant: &TenantId,
    actor: &Actor,
    req: api::ExtendHoldRequest,
) -> Result<api::LegalHold, ApiError> {
    let _guard = s.config_lock.lock().await;
    let mut book: HoldBook = rows::holds(&*s.store, tenant.as_str()).await?;
    let now = s.clock.now_ms();
    let e = book
        .extend(&req.hold_id, &req.reason, req.expires_at_ms, now)
        .map_err(hold_error)?;
    publish(
        s,
        &[config_event(
            s,
            tenant,
            actor,
            Payload::LegalHoldExtended(e.clone()),
        )],
    )
    .await?;
    book.extended(&e);
    Ok(hold_to_api(&book.holds[&req.hold_id], now))
}

/// Releases a hold; deferred erasures it kept run after (the retention role).
pub async fn release_hold(
    s: &GatewayState,
    tenant: &TenantId,
    actor: &Actor,
    req: api::ReleaseHoldRequest,
) -> Result<api::LegalHold, ApiError> {
    let _guard = s.config_lock.lock().await;
    let book = rows::holds(&*s.store, tenant.as_str()).await?;
    let now = s.clock.now_ms();
    let e = book
        .release(&req.hold_id, &req.reason)
        .map_err(hold_error)?;
    publish(
        s,
        &[config_event(
            s,
            tenant,
            actor,
            Payload::LegalHoldReleased(e),
        )],
    )
    .await?;
    let mut out = hold_to_api(&book.holds[&req.hold_id], now);
    out.state = "released".into();
    Ok(out)
}

fn policy_to_api(p: &Policy) -> api::RetentionPolicy {
    api::RetentionPolicy {
        rules: p
            .rules
            .iter()
            .map(|r| api::RetentionRule {
                channel: r.channel.clone(),
                country: r.country.clone(),
                redact_bodies_after_days: r.redact_bodies_after_days,
                shred_subscriber_after_days: r.shred_subscriber_after_days,
            })
            .collect(),
        version: p.version,
    }
}

/// The tenant's retention policy (version 0, no rules: never set).
pub async fn policy(s: &GatewayState, tenant: &TenantId) -> Result<api::RetentionPolicy, ApiError> {
    Ok(policy_to_api(
        &rows::policy(&*s.store, tenant.as_str()).await?,
    ))
}

/// Replaces the tenant's retention policy.
pub async fn set_policy(
    s: &GatewayState,
    tenant: &TenantId,
    actor: &Actor,
    input: api::RetentionPolicy,
) -> Result<api::RetentionPolicy, ApiError> {
    let rules: Vec<pb::RetentionRule> = input
        .rules
        .into_iter()
        .map(|r| pb::RetentionRule {
            channel: r.channel,
            country: r.country,
            redact_bodies_after_days: r.redact_bodies_after_days,
            shred_subscriber_after_days: r.shred_subscriber_after_days,
        })
        .collect();
    let _guard = s.config_lock.lock().await;
    let prev = rows::policy(&*s.store, tenant.as_str()).await?;
    let p = Policy::check(&rules, prev.version + 1)?;
    publish(
        s,
        &[config_event(
            s,
            tenant,
            actor,
            Payload::RetentionPolicySet(p.to_event()),
        )],
    )
    .await?;
    Ok(policy_to_api(&p))
}
