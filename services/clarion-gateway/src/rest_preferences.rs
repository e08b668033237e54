//! REST door to the preference center: a subscriber's settings, their
//! history, contact changes and verification, subscriber tokens, topics,
//! and `evaluate`. Handlers parse JSON and call the operations of
//! [`crate::preferences`] that gRPC and GraphQL call too; errors are RFC 9457
//! `application/problem+json` naming the field (`changes[2].value`,
//! `cursor`, `code`), read by `crate::extract` like every REST route's.
//!
//! Every route is in `access::REST_ROUTES`; the ones a subscriber token
//! may use are in `access::SUBSCRIBER_REST`.

use std::collections::BTreeMap;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::{get, post};
use axum::{Json, Router};
use clarion_domain::preferences::topic::{Topic, TopicInput};
use clarion_domain::preferences::Preferences;
use clarion_domain::Violations;
use serde::{Deserialize, Serialize};
use tonic::metadata::MetadataMap;
use utoipa::ToSchema;

use crate::error::ApiError;
use crate::extract::{JsonBody, OptionalJsonBody, PathParams, QueryParams};
use crate::pagination::{PageParams, DEFAULT_LIMIT, MAX_LIMIT};
use crate::preference_input::{requested, value_name, who};
use crate::preferences::{self as ops, Interface, Who};
use crate::problem::Problem;
use crate::state::GatewayState;
use crate::{auth, subscriber_token};

// --- bodies and answers ----------------------------------------------------

/// A subscriber's settings: only what the subscriber chose (absent settings
/// inherit), and the contacts changed through the preference APIs.
#[derive(Serialize, ToSchema)]
pub struct PreferencesView {
    pub subscriber_id: String,
    /// Global channel switches: channel -> `on` | `off`.
    pub channels: BTreeMap<String, String>,
    pub topics: Vec<TopicPreferenceView>,
    /// `off`: unsubscribed from marketing (a legal block); `on` or `inherit`.
    pub marketing: String,
    pub contacts: Vec<ContactView>,
}

#[derive(Serialize, ToSchema)]
pub struct TopicPreferenceView {
    pub topic_id: String,
    /// `on`, `off` or `inherit`.
    pub enabled: String,
    /// channel -> `on` | `off`.
    pub channels: BTreeMap<String, String>,
}

#[derive(Serialize, ToSchema)]
pub struct ContactView {
    /// `email` or `sms`.
    pub channel: String,
    pub value: String,
    pub verified: bool,
}

/// `PATCH /v1/subscribers/{id}/preferences`: the settings to change (only
/// those), e.g. `{"changes":[{"path":"topics.marketing.sms","value":"off"}]}`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PatchPreferences {
    pub changes: Vec<SettingChange>,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SettingChange {
    /// `channels.<channel>`, `topics.<topic>`, `topics.<topic>.<channel>` or `marketing`.
    pub path: String,
    /// `on`, `off` or `inherit` (back to the default).
    pub value: String,
}

#[derive(Serialize, ToSchema)]
pub struct HistoryPage {
    pub entries: Vec<HistoryEntryView>,
    /// Absent on the last page.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_cursor: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct HistoryEntryView {
    pub event_id: String,
    pub at_ms: i64,
    /// `preferences_changed`, `contact_changed`, `contact_verified` or `contact_verification_failed`.
    pub kind: String,
    /// `rest`, `graphql`, `grpc`, `console` or `cli`.
    pub interface: String,
    /// `api_key:<id>`, `subscriber:<id>`, `operator:<id>`.
    pub actor: String,
    pub changes: Vec<ChangeView>,
}

#[derive(Serialize, ToSchema)]
pub struct ChangeView {
    pub path: String,
    pub old: String,
    pub new: String,
}

/// `POST /v1/preferences/evaluate`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EvaluateBody {
    pub subscriber_id: String,
    pub workflow_id: String,
    pub channel: String,
}

/// Whether a send would go out now, and the rule of the precedence table
/// that decides (docs/preferences.md).
#[derive(Serialize, ToSchema)]
pub struct EvaluateView {
    pub allowed: bool,
    pub rule: String,
    pub reason: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub topic_id: Option<String>,
    pub workflow_version: u32,
}

/// `POST /v1/subscribers/{id}/contacts/{channel}`: the new email or phone.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ContactBody {
    pub value: String,
}

#[derive(Serialize, Deserialize, ToSchema)]
pub struct ContactChanged {
    /// When the code sent to the new contact stops working (unix ms).
    pub code_expires_at_ms: i64,
}

/// `POST /v1/subscribers/{id}/contacts/{channel}/verify`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct VerifyBody {
    pub code: String,
}

#[derive(Serialize, ToSchema)]
pub struct ContactVerified {
    pub value: String,
    pub verified: bool,
}

/// `POST /v1/subscribers/{id}/token` (the body may be empty).
#[derive(Deserialize, Default, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TokenBody {
    /// Lifetime in seconds (default 3600, at most 2592000).
    #[serde(default)]
    pub ttl_seconds: u32,
}

#[derive(Serialize, ToSchema)]
pub struct TokenView {
    pub token: String,
    pub expires_at_ms: i64,
}

/// `PUT /v1/topics/{id}`: the topic's definition (the id is in the path).
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TopicBody {
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub description: String,
    /// Channels it may use; empty: every channel.
    #[serde(default)]
    pub channels: Vec<String>,
    #[serde(default)]
    pub default_opt_in: bool,
    /// Transactional: no opt-out, only a choice among its channels.
    #[serde(default)]
    pub required: bool,
    /// Commercial: a marketing unsubscribe blocks it, always.
    #[serde(default)]
    pub marketing: bool,
}

#[derive(Serialize, ToSchema)]
pub struct TopicView {
    pub topic_id: String,
    pub name: String,
    pub description: String,
    pub channels: Vec<String>,
    pub default_opt_in: bool,
    pub required: bool,
    pub marketing: bool,
    pub version: u32,
}

#[derive(Serialize, ToSchema)]
pub struct TopicList {
    pub topics: Vec<TopicView>,
}

fn preferences_view(id: &str, p: &Preferences) -> PreferencesView {
    let on_off = |m: &BTreeMap<String, bool>| {
        m.iter()
            .map(|(c, b)| (c.clone(), value_name(Some(*b)).to_string()))
            .collect()
    };
    PreferencesView {
        subscriber_id: id.to_string(),
        channels: on_off(&p.channels),
        topics: p
            .topics
            .iter()
            .map(|(t, s)| TopicPreferenceView {
                topic_id: t.clone(),
                enabled: value_name(s.enabled).into(),
                channels: on_off(&s.channels),
            })
            .collect(),
        marketing: value_name(p.marketing).into(),
        contacts: p
            .contacts
            .iter()
            .map(|(ch, c)| ContactView {
                channel: ch.clone(),
                value: c.value.clone(),
                verified: c.verified,
            })
            .collect(),
    }
}

fn topic_view(t: &Topic) -> TopicView {
    TopicView {
        topic_id: t.id.clone(),
        name: t.name.clone(),
        description: t.description.clone(),
        channels: t.channels.iter().map(|c| String::from(*c)).collect(),
        default_opt_in: t.default_opt_in,
        required: t.required,
        marketing: t.marketing,
        version: t.version,
    }
}

// --- handlers ----------------------------------------------------------------

async fn rest_who(s: &GatewayState, headers: HeaderMap) -> Result<Who, ApiError> {
    who(s, &MetadataMap::from_headers(headers), Interface::Rest).await
}

/// A subscriber's settings.
#[utoipa::path(get, path = "/v1/subscribers/{id}/preferences", tag = "preferences",
    operation_id = "getPreferences",
    params(("id" = String, Path, description = "Subscriber id", pattern = r"^[^/\s\x00-\x1F\x7F-\x9F]+$")),
    responses((status = 200, description = "The subscriber's settings", body = PreferencesView)))]
pub async fn get_preferences(
    State(s): State<GatewayState>,
    headers: HeaderMap,
    PathParams(id): PathParams<String>,
) -> Result<Json<PreferencesView>, Problem> {
    let who = rest_who(&s, headers).await?;
    let p = ops::get(&s, &who, &id).await?;
    Ok(Json(preferences_view(&id, &p)))
}

/// Changes the named settings only; answers the settings after the change.
/// A refused change (an unknown setting, topic or channel, a bad value, an
/// opt-out of a required topic) names `changes[i].path` or `changes[i].value`.
#[utoipa::path(patch, path = "/v1/subscribers/{id}/preferences", tag = "preferences",
    operation_id = "updatePreferences",
    params(("id" = String, Path, description = "Subscriber id", pattern = r"^[^/\s\x00-\x1F\x7F-\x9F]+$")),
    request_body = PatchPreferences,
    responses((status = 200, description = "The settings after the change", body = PreferencesView)))]
pub async fn patch_preferences(
    State(s): State<GatewayState>,
    headers: HeaderMap,
    PathParams(id): PathParams<String>,
    JsonBody(b): JsonBody<PatchPreferences>,
) -> Result<Json<PreferencesView>, Problem> {
    let who = rest_who(&s, headers).await?;
    let changes = requested(
        "changes",
        b.changes
            .iter()
            .map(|c| (c.path.as_str(), c.value.as_str())),
    )?;
    let p = ops::update(&s, &who, &id, &changes).await?;
    Ok(Json(preferences_view(&id, &p)))
}

/// The page size of `paging`, by the rules of every REST list.
fn page_limit(paging: &PageParams) -> Result<u32, ApiError> {
    match paging.limit {
        None => Ok(DEFAULT_LIMIT),
        Some(n) if (1..=MAX_LIMIT).contains(&n) => Ok(n),
        Some(n) => Err(Violations::single(
            "limit",
            format!("is {n}: must be between 1 and {MAX_LIMIT}"),
        )
        .into()),
    }
}

/// The subscriber's preference and contact changes, oldest first: who
/// changed what, when, through which interface.
#[utoipa::path(get, path = "/v1/subscribers/{id}/preferences/history", tag = "preferences",
    operation_id = "getPreferenceHistory",
    params(("id" = String, Path, description = "Subscriber id", pattern = r"^[^/\s\x00-\x1F\x7F-\x9F]+$"), PageParams),
    responses((status = 200, description = "A page of changes, oldest first", body = HistoryPage)))]
pub async fn history(
    State(s): State<GatewayState>,
    headers: HeaderMap,
    PathParams(id): PathParams<String>,
    QueryParams(paging): QueryParams<PageParams>,
) -> Result<Json<HistoryPage>, Problem> {
    let who = rest_who(&s, headers).await?;
    let limit = page_limit(&paging)?;
    let cursor = paging.cursor.as_deref().unwrap_or("");
    let (entries, next) = ops::history(&s, &who, &id, limit, cursor).await?;
    Ok(Json(HistoryPage {
        entries: entries
            .into_iter()
            .map(|e| HistoryEntryView {
                event_id: e.event_id,
                at_ms: e.at_ms,
                kind: e.kind.into(),
                interface: e.interface,
                actor: e.actor,
                changes: e
                    .changes
                    .into_iter()
                    .map(|c| ChangeView {
                        path: c.path,
                        old: c.old,
                        new: c.new,
                    })
                    .collect(),
            })
            .collect(),
        next_cursor: next,
    }))
}

/// Would a send of this workflow on this channel go out now, and which rule
/// decides? The router's own function over the same rows.
#[utoipa::path(post, path = "/v1/preferences/evaluate", tag = "preferences",
    operation_id = "evaluatePreferences",
    request_body = EvaluateBody,
    responses((status = 200, description = "The verdict and the rule that decides", body = EvaluateView),
        (status = 404, description = "No such subscriber or workflow", body = Problem, content_type = "application/problem+json")))]
pub async fn evaluate(
    State(s): State<GatewayState>,
    headers: HeaderMap,
    JsonBody(b): JsonBody<EvaluateBody>,
) -> Result<Json<EvaluateView>, Problem> {
    let who = rest_who(&s, headers).await?;
    let e = ops::evaluate(&s, &who, &b.subscriber_id, &b.workflow_id, &b.channel).await?;
    Ok(Json(EvaluateView {
        allowed: e.verdict.allowed,
        rule: e.verdict.rule.as_str().into(),
        reason: e.verdict.reason,
        topic_id: e.topic_id,
        workflow_version: e.workflow_version,
    }))
}

/// Changes an email (`email`) or phone (`sms`): a code goes to the new
/// contact, which receives nothing else until it is verified. With an
/// `Idempotency-Key`, a repeat answers the first answer and sends no
/// second code.
#[utoipa::path(post, path = "/v1/subscribers/{id}/contacts/{channel}", tag = "preferences",
    operation_id = "changeContact",
    params(("id" = String, Path, description = "Subscriber id", pattern = r"^[^/\s\x00-\x1F\x7F-\x9F]+$"),
        ("channel" = String, Path, description = "`email` or `sms`")),
    request_body = ContactBody,
    responses((status = 202, description = "The code is on its way", body = ContactChanged)))]
pub async fn change_contact(
    State(s): State<GatewayState>,
    headers: HeaderMap,
    PathParams((id, channel)): PathParams<(String, String)>,
    JsonBody(b): JsonBody<ContactBody>,
) -> Result<(StatusCode, Json<ContactChanged>), Problem> {
    let who = rest_who(&s, headers).await?;
    let expires = ops::change_contact(&s, &who, &id, &channel, &b.value).await?;
    Ok((
        StatusCode::ACCEPTED,
        Json(ContactChanged {
            code_expires_at_ms: expires,
        }),
    ))
}

/// Confirms the code sent to a changed contact. A wrong, expired or
/// exhausted code, or nothing pending on the channel, names `code`.
#[utoipa::path(post, path = "/v1/subscribers/{id}/contacts/{channel}/verify", tag = "preferences",
    operation_id = "verifyContact",
    params(("id" = String, Path, description = "Subscriber id", pattern = r"^[^/\s\x00-\x1F\x7F-\x9F]+$"),
        ("channel" = String, Path, description = "`email` or `sms`")),
    request_body = VerifyBody,
    responses((status = 200, description = "The contact is verified", body = ContactVerified)))]
pub async fn verify_contact(
    State(s): State<GatewayState>,
    headers: HeaderMap,
    PathParams((id, channel)): PathParams<(String, String)>,
    JsonBody(b): JsonBody<VerifyBody>,
) -> Result<Json<ContactVerified>, Problem> {
    let who = rest_who(&s, headers).await?;
    let value = ops::verify_contact(&s, &who, &id, &channel, &b.code).await?;
    Ok(Json(ContactVerified {
        value,
        verified: true,
    }))
}

/// Mints a subscriber token for an end user's app (admin scope; an API key
/// only). The body may be left out.
#[utoipa::path(post, path = "/v1/subscribers/{id}/token", tag = "preferences",
    operation_id = "createSubscriberToken",
    params(("id" = String, Path, description = "Subscriber id", pattern = r"^[^/\s\x00-\x1F\x7F-\x9F]+$")),
    request_body(content = Option<TokenBody>, description = "Optional"),
    responses((status = 201, description = "The token", body = TokenView)))]
pub async fn create_token(
    State(s): State<GatewayState>,
    headers: HeaderMap,
    PathParams(id): PathParams<String>,
    OptionalJsonBody(b): OptionalJsonBody<TokenBody>,
) -> Result<(StatusCode, Json<TokenView>), Problem> {
    let caller = auth::tenant(&s, &MetadataMap::from_headers(headers)).await?;
    let ttl = b.unwrap_or_default().ttl_seconds;
    let m = subscriber_token::mint(&s, &caller.tenant, &id, ttl).await?;
    Ok((
        StatusCode::CREATED,
        Json(TokenView {
            token: m.token,
            expires_at_ms: m.expires_at_ms,
        }),
    ))
}

/// The tenant's topics.
#[utoipa::path(get, path = "/v1/topics", tag = "topics",
    operation_id = "listTopics",
    responses((status = 200, description = "Every topic of the tenant", body = TopicList)))]
pub async fn list_topics(
    State(s): State<GatewayState>,
    headers: HeaderMap,
) -> Result<Json<TopicList>, Problem> {
    let who = rest_who(&s, headers).await?;
    let topics = ops::topics_by_id(&s, &who.tenant).await?;
    Ok(Json(TopicList {
        topics: topics.values().map(topic_view).collect(),
    }))
}

/// One topic.
#[utoipa::path(get, path = "/v1/topics/{id}", tag = "topics",
    operation_id = "getTopic",
    params(("id" = String, Path, description = "Topic id")),
    responses((status = 200, description = "The topic", body = TopicView)))]
pub async fn get_topic(
    State(s): State<GatewayState>,
    headers: HeaderMap,
    PathParams(id): PathParams<String>,
) -> Result<Json<TopicView>, Problem> {
    let who = rest_who(&s, headers).await?;
    Ok(Json(topic_view(&ops::get_topic(&s, &who, &id).await?)))
}

/// Creates or replaces a topic (a changed definition is a new version; the
/// same definition again changes nothing). A bad field is named:
/// `topic_id`, `channels[i]`, `description`, `required` (a marketing topic
/// cannot be required).
#[utoipa::path(put, path = "/v1/topics/{id}", tag = "topics",
    operation_id = "registerTopic",
    params(("id" = String, Path, description = "Topic id")),
    request_body = TopicBody,
    responses((status = 200, description = "The topic as stored", body = TopicView)))]
pub async fn put_topic(
    State(s): State<GatewayState>,
    headers: HeaderMap,
    PathParams(id): PathParams<String>,
    JsonBody(b): JsonBody<TopicBody>,
) -> Result<Json<TopicView>, Problem> {
    let who = rest_who(&s, headers).await?;
    let input = TopicInput {
        id,
        name: b.name,
        description: b.description,
        channels: b.channels,
        default_opt_in: b.default_opt_in,
        required: b.required,
        marketing: b.marketing,
    };
    Ok(Json(topic_view(
        &ops::register_topic(&s, &who, &input).await?,
    )))
}

/// The paths of this module in the OpenAPI document.
#[derive(utoipa::OpenApi)]
#[openapi(
    paths(
        get_preferences,
        patch_preferences,
        history,
        evaluate,
        change_contact,
        verify_contact,
        create_token,
        list_topics,
        get_topic,
        put_topic
    ),
    components(schemas(
        PreferencesView,
        TopicPreferenceView,
        ContactView,
        PatchPreferences,
        SettingChange,
        HistoryPage,
        HistoryEntryView,
        ChangeView,
        EvaluateBody,
        EvaluateView,
        ContactBody,
        ContactChanged,
        VerifyBody,
        ContactVerified,
        TokenBody,
        TokenView,
        TopicBody,
        TopicView,
        TopicList
    ))
)]
pub struct Paths;

/// The routes (merged into `rest::routes`, behind its access guard).
pub fn routes() -> Router<GatewayState> {
    Router::new()
        .route(
            "/v1/subscribers/:id/preferences",
            get(get_preferences).patch(patch_preferences),
        )
        .route("/v1/subscribers/:id/preferences/history", get(history))
        .route("/v1/preferences/evaluate", post(evaluate))
        .route(
            "/v1/subscribers/:id/contacts/:channel",
            post(change_contact),
        )
        .route(
            "/v1/subscribers/:id/contacts/:channel/verify",
            post(verify_contact),
        )
        .route("/v1/subscribers/:id/token", post(create_token))
        .route("/v1/topics", get(list_topics))
        .route("/v1/topics/:id", get(get_topic).put(put_topic))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::extract::parse_json;
    use serde::de::DeserializeOwned;

    fn field<T: DeserializeOwned>(body: &'static [u8]) -> String {
        match parse_json::<T>(body) {
            Err(p) => p.errors[0].field.clone(),
            Ok(_) => panic!("accepted {}", String::from_utf8_lossy(body)),
        }
    }

    #[test]
    fn bad_bodies_name_the_field() {
        assert_eq!(field::<PatchPreferences>(br#"{"change":[]}"#), "change");
        assert_eq!(field::<PatchPreferences>(br#"{}"#), "changes");
        assert_eq!(field::<PatchPreferences>(b"{not json"), "body");
        assert_eq!(
            field::<PatchPreferences>(br#"{"changes":[{"path":"x","value":1}]}"#),
            "changes[0].value"
        );
        assert_eq!(field::<VerifyBody>(br#"{"value":"1"}"#), "value");
        assert_eq!(field::<TopicBody>(br#"{"colour":"red"}"#), "colour");
    }

    #[test]
    fn a_page_limit_outside_the_bounds_names_limit() {
        let p = |limit| PageParams {
            limit,
            cursor: None,
        };
        assert_eq!(page_limit(&p(None)).unwrap(), DEFAULT_LIMIT);
        assert_eq!(page_limit(&p(Some(7))).unwrap(), 7);
        for bad in [0, MAX_LIMIT + 1] {
            match page_limit(&p(Some(bad))) {
                Err(ApiError::Invalid(v)) => assert_eq!(v.0[0].field, "limit"),
                other => panic!("{other:?}"),
            }
        }
    }
}
