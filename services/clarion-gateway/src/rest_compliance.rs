//! REST door to compliance (docs/compliance.md): the GDPR erasure of a
//! subscriber (`DELETE /v1/subscribers/{id}`, routed with the subscriber's
//! other methods in `rest_subscribers`), legal holds (`/v1/legal-holds`)
//! and the retention policy (`/v1/retention-policy`). The operations are
//! [`crate::compliance`]; bad input names the field (`scope.from_ms`,
//! `rules[0].country`, `reason`).

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::{get, post};
use axum::{Json, Router};
use clarion_proto::api;
use serde::{Deserialize, Serialize};
use tonic::metadata::MetadataMap;
use utoipa::{IntoParams, OpenApi, ToSchema};

use crate::auth::{self, Caller};
use crate::compliance as ops;
use crate::error::ApiError;
use crate::extract::{JsonBody, PathParams, QueryParams};
use crate::problem::Problem;
use crate::state::GatewayState;

/// What an erasure destroyed and the rows whose personal fields are now
/// unreadable (they stay: counts, times and statuses survive).
#[derive(Serialize, ToSchema)]
pub struct ErasureReceipt {
    pub subscriber_id: String,
    pub request_id: String,
    /// ms since the Unix epoch.
    pub erased_at_ms: i64,
    /// Data key generations destroyed (empty: the subscriber had no key).
    pub key_generations_destroyed: Vec<u32>,
    pub notifications: u64,
    pub inbox_items: u64,
    pub devices: u64,
    pub preference_history: u64,
    /// Projections (store tables) holding rows of the subscriber.
    pub projections_touched: Vec<String>,
    /// Who asked (`api_key:<key id>`).
    pub actor: String,
    pub reason: String,
}

/// `?reason=` of an erasure.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct EraseParams {
    /// Why (kept with the erasure's event); at most 1000 bytes.
    #[serde(default)]
    #[param(max_length = 1000)]
    pub reason: String,
}

/// What a hold covers. Nothing set: the whole tenant; several: all of them.
#[derive(Deserialize, Serialize, ToSchema, Default)]
#[serde(deny_unknown_fields)]
pub struct ScopeBody {
    #[serde(default)]
    pub subscriber_id: String,
    #[serde(default)]
    pub workflow_id: String,
    /// Data from this time on (ms since the epoch; 0: open).
    #[serde(default)]
    pub from_ms: i64,
    /// Data before this time (ms; 0: open).
    #[serde(default)]
    pub until_ms: i64,
}

/// Body of `POST /v1/legal-holds`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PlaceHoldBody {
    #[serde(default)]
    pub scope: Option<ScopeBody>,
    /// Why (required, at most 1000 bytes).
    pub reason: String,
    /// When it lapses (ms since the epoch); 0 or absent: until released.
    #[serde(default)]
    pub expires_at_ms: i64,
}

/// Body of `POST /v1/legal-holds/{id}/extend`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ExtendHoldBody {
    pub reason: String,
    /// The new expiry (ms; 0: until released). Never shorter than before.
    #[serde(default)]
    pub expires_at_ms: i64,
}

/// Body of `POST /v1/legal-holds/{id}/release`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReleaseHoldBody {
    pub reason: String,
}

/// A legal hold.
#[derive(Serialize, ToSchema)]
pub struct HoldView {
    pub hold_id: String,
    pub scope: ScopeBody,
    pub reason: String,
    /// Who placed it.
    pub actor: String,
    pub placed_at_ms: i64,
    /// 0: until released.
    pub expires_at_ms: i64,
    /// `in_force`, `expired` or `released`.
    pub state: String,
}

/// The tenant's holds not yet released.
#[derive(Serialize, ToSchema)]
pub struct HoldList {
    pub holds: Vec<HoldView>,
}

/// One retention rule.
#[derive(Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RuleBody {
    /// `email`, `sms`, `push`, `in_app`, `webhook` or `*`.
    pub channel: String,
    /// ISO 3166-1 alpha-2 of the recipient (`DE`) or `*`.
    pub country: String,
    /// Bodies of day D are redacted from day D + N (0: kept).
    #[serde(default)]
    pub redact_bodies_after_days: u32,
    /// Only on the `*`/`*` rule: subscribers without a notification for N
    /// days are shredded (0: never).
    #[serde(default)]
    pub shred_subscriber_after_days: u32,
}

/// `PUT` body and answer of the retention policy.
#[derive(Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PolicyBody {
    /// At most 200; the most specific rule for a channel and country wins.
    #[serde(default)]
    pub rules: Vec<RuleBody>,
    /// Set by the server (0: never set).
    #[serde(default)]
    pub version: u32,
}

fn receipt_view(r: api::ErasureReceipt) -> ErasureReceipt {
    ErasureReceipt {
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

fn hold_view(h: api::LegalHold) -> HoldView {
    let s = h.scope.unwrap_or_default();
    HoldView {
        hold_id: h.hold_id,
        scope: ScopeBody {
            subscriber_id: s.subscriber_id,
            workflow_id: s.workflow_id,
            from_ms: s.from_ms,
            until_ms: s.until_ms,
        },
        reason: h.reason,
        actor: h.actor,
        placed_at_ms: h.placed_at_ms,
        expires_at_ms: h.expires_at_ms,
        state: h.state,
    }
}

fn policy_view(p: api::RetentionPolicy) -> PolicyBody {
    PolicyBody {
        rules: p
            .rules
            .into_iter()
            .map(|r| RuleBody {
                channel: r.channel,
                country: r.country,
                redact_bodies_after_days: r.redact_bodies_after_days,
                shred_subscriber_after_days: r.shred_subscriber_after_days,
            })
            .collect(),
        version: p.version,
    }
}

async fn caller(s: &GatewayState, headers: HeaderMap) -> Result<Caller, Problem> {
    Ok(auth::tenant(s, &MetadataMap::from_headers(headers)).await?)
}

/// Erase a subscriber (GDPR): their data key is destroyed, so their
/// personal fields read `[erased]` everywhere; counts and statuses remain.
/// Under a legal hold: 409 naming the hold, and the request is deferred
/// until the hold's release.
#[utoipa::path(delete, path = "/v1/subscribers/{id}", tag = "compliance",
    operation_id = "eraseSubscriber",
    params(("id" = String, Path, description = "Subscriber id", pattern = r"^[^/\s\x00-\x1F\x7F-\x9F]+$"), EraseParams),
    responses(
        (status = 200, description = "The receipt", body = ErasureReceipt),
        (status = 404, description = "No such subscriber", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "A legal hold covers the subscriber: deferred", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn erase_subscriber(
    State(s): State<GatewayState>,
    headers: HeaderMap,
    PathParams(id): PathParams<String>,
    QueryParams(q): QueryParams<EraseParams>,
) -> Result<Json<ErasureReceipt>, Problem> {
    let c = caller(&s, headers).await?;
    let r = ops::erase_subscriber(&s, &c.tenant, &c.actor, &id, &q.reason)
        .await
        .map_err(|e| match e {
            // The id is the path's here.
            ApiError::Invalid(mut v) => {
                for f in v.0.iter_mut().filter(|f| f.field == "subscriber_id") {
                    f.field = "id".into();
                }
                ApiError::Invalid(v)
            }
            other => other,
        })?;
    Ok(Json(receipt_view(ops::receipt_to_api(r))))
}

/// Place a legal hold: retention and erasure are suspended for what it covers.
#[utoipa::path(post, path = "/v1/legal-holds", tag = "compliance",
    operation_id = "placeLegalHold", request_body = PlaceHoldBody,
    responses((status = 201, description = "The hold", body = HoldView)))]
pub async fn place_hold(
    State(s): State<GatewayState>,
    headers: HeaderMap,
    JsonBody(b): JsonBody<PlaceHoldBody>,
) -> Result<(StatusCode, Json<HoldView>), Problem> {
    let c = caller(&s, headers).await?;
    let scope = b.scope.unwrap_or_default();
    let req = api::PlaceHoldRequest {
        scope: Some(api::HoldScope {
            subscriber_id: scope.subscriber_id,
            workflow_id: scope.workflow_id,
            from_ms: scope.from_ms,
            until_ms: scope.until_ms,
        }),
        reason: b.reason,
        expires_at_ms: b.expires_at_ms,
    };
    let h = ops::place_hold(&s, &c.tenant, &c.actor, req).await?;
    Ok((StatusCode::CREATED, Json(hold_view(h))))
}

/// The tenant's legal holds not yet released (in force or expired).
#[utoipa::path(get, path = "/v1/legal-holds", tag = "compliance",
    operation_id = "listLegalHolds",
    responses((status = 200, description = "The holds, oldest first", body = HoldList)))]
pub async fn list_holds(
    State(s): State<GatewayState>,
    headers: HeaderMap,
) -> Result<Json<HoldList>, Problem> {
    let c = caller(&s, headers).await?;
    let holds = ops::list_holds(&s, &c.tenant).await?;
    Ok(Json(HoldList {
        holds: holds.into_iter().map(hold_view).collect(),
    }))
}

/// Extend a legal hold (a new expiry, never shorter; 0: until released).
#[utoipa::path(post, path = "/v1/legal-holds/{id}/extend", tag = "compliance",
    operation_id = "extendLegalHold", request_body = ExtendHoldBody,
    params(("id" = String, Path, description = "Hold id")),
    responses(
        (status = 200, description = "The hold", body = HoldView),
        (status = 404, description = "No such hold in force", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn extend_hold(
    State(s): State<GatewayState>,
    headers: HeaderMap,
    PathParams(id): PathParams<String>,
    JsonBody(b): JsonBody<ExtendHoldBody>,
) -> Result<Json<HoldView>, Problem> {
    let c = caller(&s, headers).await?;
    let req = api::ExtendHoldRequest {
        hold_id: id,
        reason: b.reason,
        expires_at_ms: b.expires_at_ms,
    };
    Ok(Json(hold_view(
        ops::extend_hold(&s, &c.tenant, &c.actor, req).await?,
    )))
}

/// Release a legal hold: retention proceeds, deferred erasures run.
#[utoipa::path(post, path = "/v1/legal-holds/{id}/release", tag = "compliance",
    operation_id = "releaseLegalHold", request_body = ReleaseHoldBody,
    params(("id" = String, Path, description = "Hold id")),
    responses(
        (status = 200, description = "The hold, released", body = HoldView),
        (status = 404, description = "No such hold in force", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn release_hold(
    State(s): State<GatewayState>,
    headers: HeaderMap,
    PathParams(id): PathParams<String>,
    JsonBody(b): JsonBody<ReleaseHoldBody>,
) -> Result<Json<HoldView>, Problem> {
    let c = caller(&s, headers).await?;
    let req = api::ReleaseHoldRequest {
        hold_id: id,
        reason: b.reason,
    };
    Ok(Json(hold_view(
        ops::release_hold(&s, &c.tenant, &c.actor, req).await?,
    )))
}

/// The tenant's retention policy (version 0: never set, everything kept).
#[utoipa::path(get, path = "/v1/retention-policy", tag = "compliance",
    operation_id = "getRetentionPolicy",
    responses((status = 200, description = "The policy", body = PolicyBody)))]
pub async fn get_policy(
    State(s): State<GatewayState>,
    headers: HeaderMap,
) -> Result<Json<PolicyBody>, Problem> {
    let c = caller(&s, headers).await?;
    Ok(Json(policy_view(ops::policy(&s, &c.tenant).await?)))
}

/// Replace the tenant's retention policy.
#[utoipa::path(put, path = "/v1/retention-policy", tag = "compliance",
    operation_id = "setRetentionPolicy", request_body = PolicyBody,
    responses((status = 200, description = "The policy as stored, with its version", body = PolicyBody)))]
pub async fn put_policy(
    State(s): State<GatewayState>,
    headers: HeaderMap,
    JsonBody(b): JsonBody<PolicyBody>,
) -> Result<Json<PolicyBody>, Problem> {
    let c = caller(&s, headers).await?;
    let input = api::RetentionPolicy {
        rules: b
            .rules
            .into_iter()
            .map(|r| api::RetentionRule {
                channel: r.channel,
                country: r.country,
                redact_bodies_after_days: r.redact_bodies_after_days,
                shred_subscriber_after_days: r.shred_subscriber_after_days,
            })
            .collect(),
        version: 0,
    };
    Ok(Json(policy_view(
        ops::set_policy(&s, &c.tenant, &c.actor, input).await?,
    )))
}

/// The paths of this module in the OpenAPI document.
#[derive(OpenApi)]
#[openapi(
    paths(
        erase_subscriber,
        place_hold,
        list_holds,
        extend_hold,
        release_hold,
        get_policy,
        put_policy
    ),
    components(schemas(
        ErasureReceipt,
        ScopeBody,
        PlaceHoldBody,
        ExtendHoldBody,
        ReleaseHoldBody,
        HoldView,
        HoldList,
        RuleBody,
        PolicyBody
    ))
)]
pub struct Paths;

/// The routes (merged into `rest::routes`); `DELETE /v1/subscribers/{id}`
/// is routed by `rest_subscribers` with the path's other methods.
pub fn routes() -> Router<GatewayState> {
    Router::new()
        .route("/v1/legal-holds", get(list_holds).post(place_hold))
        .route("/v1/legal-holds/:id/extend", post(extend_hold))
        .route("/v1/legal-holds/:id/release", post(release_hold))
        .route("/v1/retention-policy", get(get_policy).put(put_policy))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::extract::parse_json;

    #[test]
    fn bad_bodies_name_the_field() {
        match parse_json::<PlaceHoldBody>(br#"{"scope":{"from_ms":"x"},"reason":"r"}"#) {
            Err(p) => assert_eq!(p.errors[0].field, "scope.from_ms"),
            Ok(_) => panic!("accepted"),
        }
        match parse_json::<PolicyBody>(
            br#"{"rules":[{"channel":"email","country":"*","redact_bodies_after_days":-1}]}"#,
        ) {
            Err(p) => assert_eq!(p.errors[0].field, "rules[0].redact_bodies_after_days"),
            Ok(_) => panic!("accepted"),
        }
    }
}
