//! Compliance (issue #32): the tenant's legal holds (list, place, release
//! with a reason), its retention policy, the erasure of a subscriber after
//! a confirmation (the receipt shown), and the recent exports.
//!
//! Reads and changes go through the gateway's `compliance` functions, as
//! gRPC and REST do, with the session's caller: the page and every action
//! need the `admin` scope (the tenant's compliance officer), so the events
//! name the signed-in key or operator as actor.

use axum::extract::{Path, Query, State};
use axum::response::Response;
use axum::routing::{get, post};
use axum::Router;
use clarion_domain::tenant::Scope;
use clarion_domain::{Payload, TenantId};
use clarion_gateway::compliance as ops;
use clarion_gateway::error::ApiError;
use clarion_gateway::GatewayState;
use clarion_proto::api;
use minijinja::context;
use serde::{Deserialize, Serialize};

use crate::page::{self, PageError};
use crate::session::{Session, Submitted};
use crate::{Console, BASE};

/// This module's templates (name, source), added to the console's set.
pub const TEMPLATES: &[(&str, &str)] = &[
    (
        "compliance/index.html",
        include_str!("../templates/compliance/index.html"),
    ),
    (
        "compliance/confirm_erase.html",
        include_str!("../templates/compliance/confirm_erase.html"),
    ),
    (
        "compliance/receipt.html",
        include_str!("../templates/compliance/receipt.html"),
    ),
];

/// Config records read back from the end of the tenant's config partition
/// for the recent exports (there is no projection of exports: the log is
/// their record). Exports older than that are not listed.
const EXPORT_SCAN: u64 = 20_000;
/// Recent exports shown.
const EXPORTS_SHOWN: usize = 20;
/// Longest reason typed into a form (kept in the events).
const MAX_REASON_BYTES: usize = 1_000;

pub fn routes() -> Router<Console> {
    Router::new()
        .route("/compliance", get(index))
        .route("/compliance/holds", post(place))
        .route("/compliance/holds/:id/release", post(release))
        .route("/compliance/erase", get(confirm_erase).post(erase))
}

#[derive(Deserialize)]
struct IndexQuery {
    done: Option<String>,
}

/// One export as the page lists it.
#[derive(Serialize)]
struct ExportRow {
    export_id: String,
    at_ms: i64,
    requester: String,
    purpose: String,
    format: String,
    rows: u64,
    scope: String,
}

async fn index(
    State(c): State<Console>,
    session: Session,
    Query(q): Query<IndexQuery>,
) -> Result<Response, PageError> {
    let caller = session.caller_with(Scope::Admin)?;
    let holds = ops::list_holds(&c.gw, &caller.tenant).await?;
    let policy = ops::policy(&c.gw, &caller.tenant).await?;
    let exports = recent_exports(&c.gw, &caller.tenant).await?;
    let done = match q.done.as_deref() {
        Some("placed") => "The legal hold is placed.",
        Some("released") => "The legal hold is released: retention and deferred erasures proceed.",
        _ => "",
    };
    page::render(
        &c,
        &session,
        "compliance/index.html",
        context! {
            done,
            holds => holds.iter().map(hold_view).collect::<Vec<_>>(),
            policy => context! {
                version => policy.version,
                rules => policy.rules.iter().map(|r| context! {
                    channel => r.channel, country => r.country,
                    redact => r.redact_bodies_after_days, shred => r.shred_subscriber_after_days,
                }).collect::<Vec<_>>(),
            },
            exports,
            export_scan => EXPORT_SCAN,
        },
    )
}

fn hold_view(h: &api::LegalHold) -> minijinja::Value {
    let s = h.scope.clone().unwrap_or_default();
    let mut scope = Vec::new();
    if !s.subscriber_id.is_empty() {
        scope.push(format!("subscriber {}", s.subscriber_id));
    }
    if !s.workflow_id.is_empty() {
        scope.push(format!("workflow {}", s.workflow_id));
    }
    if s.from_ms > 0 || s.until_ms > 0 {
        scope.push("a time range".to_string());
    }
    context! {
        hold_id => h.hold_id, reason => h.reason, actor => h.actor, state => h.state,
        placed_at_ms => h.placed_at_ms, expires_at_ms => h.expires_at_ms,
        scope => if scope.is_empty() { "the whole tenant".to_string() } else { scope.join(", ") },
        release => format!("{BASE}/compliance/holds/{}/release", page::path_segment(&h.hold_id)),
    }
}

/// The tenant's latest `clarion.export.created.v1` events, newest first,
/// from the last [`EXPORT_SCAN`] records of its config partition.
async fn recent_exports(gw: &GatewayState, tenant: &TenantId) -> Result<Vec<ExportRow>, ApiError> {
    let topic = gw.topics.name(clarion_runtime::Topic::Config);
    let partitions = gw.topics.partitions_of(clarion_runtime::Topic::Config);
    let p = clarion_log::partition_for(&clarion_domain::ids::tenant_key(tenant), partitions);
    let unavailable = |e: clarion_log::LogError| ApiError::Unavailable(format!("event log: {e}"));
    let end = gw.log.end_offset(&topic, p).await.map_err(unavailable)?;
    let mut at = end.saturating_sub(EXPORT_SCAN);
    let mut out = Vec::new();
    while at < end {
        let recs = gw
            .log
            .read(&topic, p, at, 1_000)
            .await
            .map_err(unavailable)?;
        let Some(last) = recs.last() else { break };
        at = last.offset + 1;
        for r in recs {
            let Ok(e) = clarion_domain::Event::decode(&r.value) else {
                continue;
            };
            if e.tenant != *tenant {
                continue;
            }
            if let Payload::ExportCreated(x) = e.payload {
                out.push(ExportRow {
                    rows: x.files.iter().map(|f| f.rows).sum(),
                    export_id: x.export_id,
                    at_ms: e.occurred_at_ms,
                    requester: x.requester,
                    purpose: x.purpose,
                    format: x.format,
                    scope: x.scope_json,
                });
            }
        }
    }
    out.reverse();
    out.truncate(EXPORTS_SHOWN);
    Ok(out)
}

fn reason(field: &str, r: &str) -> Result<String, PageError> {
    let r = r.trim();
    if r.is_empty() {
        return Err(PageError::bad_request(field, "a reason is required"));
    }
    if r.len() > MAX_REASON_BYTES {
        return Err(PageError::bad_request(
            field,
            format!("is {} bytes long: at most {MAX_REASON_BYTES}", r.len()),
        ));
    }
    Ok(r.to_string())
}

#[derive(Deserialize)]
struct PlaceForm {
    #[serde(default)]
    subscriber_id: String,
    #[serde(default)]
    workflow_id: String,
    #[serde(default)]
    reason: String,
}

async fn place(
    State(c): State<Console>,
    Submitted { session, form }: Submitted<PlaceForm>,
) -> Result<Response, PageError> {
    let caller = session.caller_with(Scope::Admin)?;
    let req = api::PlaceHoldRequest {
        scope: Some(api::HoldScope {
            subscriber_id: form.subscriber_id.trim().to_string(),
            workflow_id: form.workflow_id.trim().to_string(),
            from_ms: 0,
            until_ms: 0,
        }),
        reason: reason("reason", &form.reason)?,
        expires_at_ms: 0,
    };
    ops::place_hold(&c.gw, &caller.tenant, &caller.actor, req).await?;
    Ok(page::see_other(&format!("{BASE}/compliance?done=placed")))
}

#[derive(Deserialize)]
struct ReasonForm {
    #[serde(default)]
    reason: String,
}

async fn release(
    State(c): State<Console>,
    Path(id): Path<String>,
    Submitted { session, form }: Submitted<ReasonForm>,
) -> Result<Response, PageError> {
    let caller = session.caller_with(Scope::Admin)?;
    let req = api::ReleaseHoldRequest {
        hold_id: id,
        reason: reason("reason", &form.reason)?,
    };
    ops::release_hold(&c.gw, &caller.tenant, &caller.actor, req).await?;
    Ok(page::see_other(&format!("{BASE}/compliance?done=released")))
}

#[derive(Deserialize)]
struct EraseQuery {
    #[serde(default)]
    subscriber_id: String,
}

/// What erasing the subscriber does, and a form to confirm it.
async fn confirm_erase(
    State(c): State<Console>,
    session: Session,
    Query(q): Query<EraseQuery>,
) -> Result<Response, PageError> {
    session.caller_with(Scope::Admin)?;
    let id = subscriber_id(&q.subscriber_id)?;
    page::render(
        &c,
        &session,
        "compliance/confirm_erase.html",
        context! { subscriber_id => id },
    )
}

fn subscriber_id(id: &str) -> Result<String, PageError> {
    let id = id.trim();
    let mut v = clarion_domain::Violations::default();
    clarion_domain::subscriber::validate_subscriber_id(&mut v, "subscriber_id", id);
    if let Some(f) = v.0.first() {
        return Err(PageError::bad_request(
            "subscriber_id",
            f.description.clone(),
        ));
    }
    Ok(id.to_string())
}

#[derive(Deserialize)]
struct EraseForm {
    #[serde(default)]
    subscriber_id: String,
    /// The subscriber id typed again: an erasure cannot be undone.
    #[serde(default)]
    confirm: String,
    #[serde(default)]
    reason: String,
}

async fn erase(
    State(c): State<Console>,
    Submitted { session, form }: Submitted<EraseForm>,
) -> Result<Response, PageError> {
    let caller = session.caller_with(Scope::Admin)?;
    let id = subscriber_id(&form.subscriber_id)?;
    if form.confirm.trim() != id {
        return Err(PageError::bad_request(
            "confirm",
            "type the subscriber id again to confirm the erasure",
        ));
    }
    let reason = reason("reason", &form.reason)?;
    let receipt = ops::erase_subscriber(&c.gw, &caller.tenant, &caller.actor, &id, &reason).await?;
    let r = ops::receipt_to_api(receipt);
    page::render(
        &c,
        &session,
        "compliance/receipt.html",
        context! { receipt => context! {
            subscriber_id => r.subscriber_id, request_id => r.request_id,
            erased_at_ms => r.erased_at_ms,
            generations => r.key_generations_destroyed.iter().map(u32::to_string).collect::<Vec<_>>().join(", "),
            notifications => r.notifications, inbox_items => r.inbox_items,
            devices => r.devices, preference_history => r.preference_history,
            projections => r.projections_touched.join(", "),
            actor => r.actor, reason => r.reason,
        }},
    )
}
