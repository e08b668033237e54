//! REST door to the preference center: a subscriber's settings, their
//! history, contact changes and verification, subscriber tokens, topics,
//! and `evaluate`. Handlers parse JSON and call the operations of
//! [`crate::preferences`] that gRPC and GraphQL call too; errors are RFC 9457
//! `application/problem+json` naming the field (`changes[2].value`,
//! `cursor`, `code`). Bodies are bounded ([`MAX_BODY_BYTES`], else 413).
//!
//! Every route is in `access::REST_ROUTES`; the ones a subscriber token
//! may use are in `access::SUBSCRIBER_REST`.

use std::collections::{BTreeMap, HashMap};

use axum::body::{Body, Bytes};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use clarion_domain::preferences::topic::{Topic, TopicInput};
use clarion_domain::preferences::Preferences;
use clarion_domain::Violations;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use tonic::metadata::MetadataMap;
use utoipa::{IntoParams, ToSchema};

use crate::error::ApiError;
use crate::preference_input::{requested, value_name, who};
use crate::preferences::{self as ops, Interface, Who};
use crate::rest::problem;
use crate::state::GatewayState;
use crate::{auth, subscriber_token};

/// Largest request body these routes read.
pub const MAX_BODY_BYTES: usize = 64 * 1024;

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

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct HistoryParams {
    /// Entries per page (default 100, at most 500).
    pub limit: Option<u32>,
    /// `next_cursor` of the previous page.
    pub cursor: Option<String>,
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

// --- plumbing ---------------------------------------------------------------

/// Reads a body of at most [`MAX_BODY_BYTES`]; a larger one is answered
/// 413 (problem+json) without reading the rest.
async fn read_body(body: Body) -> Result<Bytes, Response> {
    axum::body::to_bytes(body, MAX_BODY_BYTES)
        .await
        .map_err(|_| {
            crate::error::problem(
                StatusCode::PAYLOAD_TOO_LARGE,
                &format!("the request body exceeds {MAX_BODY_BYTES} bytes"),
            )
        })
}

/// Parses a JSON body, naming the offending field in the error; `empty` is
/// what an empty body means (`None`: an error).
fn parse_json<T: DeserializeOwned>(bytes: &Bytes, empty: Option<T>) -> Result<T, ApiError> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return empty.ok_or_else(|| Violations::single("body", "a JSON object is required").into());
    }
    serde_json::from_slice(bytes).map_err(|e| {
        // serde names unknown and missing fields between backquotes.
        let field = e
            .to_string()
            .split('`')
            .nth(1)
            .filter(|_| e.is_data())
            .map(str::to_string)
            .unwrap_or_else(|| "body".into());
        Violations::single(field, e.to_string()).into()
    })
}

async fn rest_who(s: &GatewayState, headers: HeaderMap) -> Result<Who, ApiError> {
    who(s, &MetadataMap::from_headers(headers), Interface::Rest).await
}

fn answer<T: Serialize>(r: Result<T, ApiError>, ok: StatusCode) -> Response {
    match r {
        Ok(v) => (ok, Json(v)).into_response(),
        Err(e) => problem(e),
    }
}

// --- handlers ----------------------------------------------------------------

/// A subscriber's settings.
#[utoipa::path(get, path = "/v1/subscribers/{id}/preferences", tag = "preferences",
    params(("id" = String, Path, description = "Subscriber id")),
    responses((status = 200, body = PreferencesView),
        (status = 404, description = "No such subscriber (or not the token's)")))]
pub async fn get_preferences(
    State(s): State<GatewayState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    let run = async {
        let who = rest_who(&s, headers).await?;
        let p = ops::get(&s, &who, &id).await?;
        Ok(preferences_view(&id, &p))
    };
    answer(run.await, StatusCode::OK)
}

/// Changes the named settings only; answers the settings after the change.
#[utoipa::path(patch, path = "/v1/subscribers/{id}/preferences", tag = "preferences",
    params(("id" = String, Path, description = "Subscriber id")),
    request_body = PatchPreferences,
    responses((status = 200, body = PreferencesView),
        (status = 400, description = "A change names an unknown setting, topic or channel, a bad value, or opts out of a required topic (`errors[].field`: `changes[i].path` / `changes[i].value`)"),
        (status = 404, description = "No such subscriber")))]
pub async fn patch_preferences(
    State(s): State<GatewayState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Body,
) -> Response {
    let body = match read_body(body).await {
        Ok(b) => b,
        Err(too_large) => return too_large,
    };
    let run = async {
        let who = rest_who(&s, headers).await?;
        let b: PatchPreferences = parse_json(&body, None)?;
        let changes = requested(
            "changes",
            b.changes
                .iter()
                .map(|c| (c.path.as_str(), c.value.as_str())),
        )?;
        let p = ops::update(&s, &who, &id, &changes).await?;
        Ok(preferences_view(&id, &p))
    };
    answer(run.await, StatusCode::OK)
}

/// A query parameter as a number, or an error naming it.
fn number(q: &HashMap<String, String>, name: &str) -> Result<u32, ApiError> {
    match q.get(name) {
        None => Ok(0),
        Some(v) => v
            .parse()
            .map_err(|_| Violations::single(name, "must be a non-negative whole number").into()),
    }
}

/// The subscriber's preference and contact changes, oldest first.
#[utoipa::path(get, path = "/v1/subscribers/{id}/preferences/history", tag = "preferences",
    params(("id" = String, Path, description = "Subscriber id"), HistoryParams),
    responses((status = 200, body = HistoryPage),
        (status = 400, description = "A bad `limit` or `cursor`"),
        (status = 404, description = "No such subscriber")))]
pub async fn history(
    State(s): State<GatewayState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    q: Option<Query<HashMap<String, String>>>,
) -> Response {
    let run = async {
        let who = rest_who(&s, headers).await?;
        let q = q.map(|q| q.0).unwrap_or_default();
        let limit = number(&q, "limit")?;
        let cursor = q.get("cursor").map(String::as_str).unwrap_or("");
        let (entries, next) = ops::history(&s, &who, &id, limit, cursor).await?;
        Ok(HistoryPage {
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
        })
    };
    answer(run.await, StatusCode::OK)
}

/// Would a send of this workflow on this channel go out now, and which rule
/// decides? The router's own function over the same rows.
#[utoipa::path(post, path = "/v1/preferences/evaluate", tag = "preferences",
    request_body = EvaluateBody,
    responses((status = 200, body = EvaluateView),
        (status = 400, description = "A bad channel or subscriber id"),
        (status = 404, description = "No such subscriber or workflow")))]
pub async fn evaluate(State(s): State<GatewayState>, headers: HeaderMap, body: Body) -> Response {
    let body = match read_body(body).await {
        Ok(b) => b,
        Err(too_large) => return too_large,
    };
    let run = async {
        let who = rest_who(&s, headers).await?;
        let b: EvaluateBody = parse_json(&body, None)?;
        let e = ops::evaluate(&s, &who, &b.subscriber_id, &b.workflow_id, &b.channel).await?;
        Ok(EvaluateView {
            allowed: e.verdict.allowed,
            rule: e.verdict.rule.as_str().into(),
            reason: e.verdict.reason,
            topic_id: e.topic_id,
            workflow_version: e.workflow_version,
        })
    };
    answer(run.await, StatusCode::OK)
}

/// Changes an email (`email`) or phone (`sms`): a code goes to the new
/// contact, which receives nothing else until it is verified. With an
/// `Idempotency-Key`, a repeat answers the first answer and sends no
/// second code.
#[utoipa::path(post, path = "/v1/subscribers/{id}/contacts/{channel}", tag = "preferences",
    params(("id" = String, Path, description = "Subscriber id"),
        ("channel" = String, Path, description = "`email` or `sms`"),
        ("Idempotency-Key" = Option<String>, Header, description = "Repeats answer the first answer")),
    request_body = ContactBody,
    responses((status = 202, body = ContactChanged),
        (status = 200, body = ContactChanged, description = "A repeat of an idempotency key"),
        (status = 400, description = "A bad `channel` or `value`"),
        (status = 404, description = "No such subscriber")))]
pub async fn change_contact(
    State(s): State<GatewayState>,
    headers: HeaderMap,
    Path((id, channel)): Path<(String, String)>,
    body: Body,
) -> Response {
    let body = match read_body(body).await {
        Ok(b) => b,
        Err(too_large) => return too_large,
    };
    let key = headers
        .get("idempotency-key")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let run = async {
        let who = rest_who(&s, headers).await?;
        let b: ContactBody = parse_json(&body, None)?;
        match key {
            None => {
                let expires = ops::change_contact(&s, &who, &id, &channel, &b.value).await?;
                Ok((StatusCode::ACCEPTED, expires))
            }
            Some(key) => {
                crate::contact_idempotency::change_once(&s, &who, &id, &channel, &b.value, &key)
                    .await
            }
        }
    };
    match run.await {
        Ok((status, expires)) => (
            status,
            Json(ContactChanged {
                code_expires_at_ms: expires,
            }),
        )
            .into_response(),
        Err(e) => problem(e),
    }
}

/// Confirms the code sent to a changed contact.
#[utoipa::path(post, path = "/v1/subscribers/{id}/contacts/{channel}/verify", tag = "preferences",
    params(("id" = String, Path, description = "Subscriber id"),
        ("channel" = String, Path, description = "`email` or `sms`")),
    request_body = VerifyBody,
    responses((status = 200, body = ContactVerified),
        (status = 400, description = "A wrong, expired or exhausted `code`, or nothing pending on `channel`"),
        (status = 404, description = "No such subscriber")))]
pub async fn verify_contact(
    State(s): State<GatewayState>,
    headers: HeaderMap,
    Path((id, channel)): Path<(String, String)>,
    body: Body,
) -> Response {
    let body = match read_body(body).await {
        Ok(b) => b,
        Err(too_large) => return too_large,
    };
    let run = async {
        let who = rest_who(&s, headers).await?;
        let b: VerifyBody = parse_json(&body, None)?;
        let value = ops::verify_contact(&s, &who, &id, &channel, &b.code).await?;
        Ok(ContactVerified {
            value,
            verified: true,
        })
    };
    answer(run.await, StatusCode::OK)
}

/// Mints a subscriber token for an end user's app (admin scope; an API key
/// only).
#[utoipa::path(post, path = "/v1/subscribers/{id}/token", tag = "preferences",
    params(("id" = String, Path, description = "Subscriber id")),
    request_body(content = TokenBody, description = "Optional"),
    responses((status = 201, body = TokenView),
        (status = 400, description = "A bad `ttl_seconds`"),
        (status = 404, description = "No such subscriber")))]
pub async fn create_token(
    State(s): State<GatewayState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Body,
) -> Response {
    let body = match read_body(body).await {
        Ok(b) => b,
        Err(too_large) => return too_large,
    };
    let run = async {
        let caller = auth::tenant(&s, &MetadataMap::from_headers(headers)).await?;
        let b: TokenBody = parse_json(&body, Some(TokenBody::default()))?;
        let m = subscriber_token::mint(&s, &caller.tenant, &id, b.ttl_seconds).await?;
        Ok(TokenView {
            token: m.token,
            expires_at_ms: m.expires_at_ms,
        })
    };
    answer(run.await, StatusCode::CREATED)
}

/// The tenant's topics.
#[utoipa::path(get, path = "/v1/topics", tag = "topics",
    responses((status = 200, body = TopicList)))]
pub async fn list_topics(State(s): State<GatewayState>, headers: HeaderMap) -> Response {
    let run = async {
        let who = rest_who(&s, headers).await?;
        let topics = ops::topics_by_id(&s, &who.tenant).await?;
        Ok(TopicList {
            topics: topics.values().map(topic_view).collect(),
        })
    };
    answer(run.await, StatusCode::OK)
}

/// One topic.
#[utoipa::path(get, path = "/v1/topics/{id}", tag = "topics",
    params(("id" = String, Path, description = "Topic id")),
    responses((status = 200, body = TopicView), (status = 404, description = "No such topic")))]
pub async fn get_topic(
    State(s): State<GatewayState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    let run = async {
        let who = rest_who(&s, headers).await?;
        Ok(topic_view(&ops::get_topic(&s, &who, &id).await?))
    };
    answer(run.await, StatusCode::OK)
}

/// Creates or replaces a topic (a changed definition is a new version; the
/// same definition again changes nothing).
#[utoipa::path(put, path = "/v1/topics/{id}", tag = "topics",
    params(("id" = String, Path, description = "Topic id")),
    request_body = TopicBody,
    responses((status = 200, body = TopicView),
        (status = 400, description = "A bad field: `topic_id`, `channels[i]`, `description`, `required` (a marketing topic cannot be required)")))]
pub async fn put_topic(
    State(s): State<GatewayState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Body,
) -> Response {
    let body = match read_body(body).await {
        Ok(b) => b,
        Err(too_large) => return too_large,
    };
    let run = async {
        let who = rest_who(&s, headers).await?;
        let b: TopicBody = parse_json(&body, None)?;
        let input = TopicInput {
            id,
            name: b.name,
            description: b.description,
            channels: b.channels,
            default_opt_in: b.default_opt_in,
            required: b.required,
            marketing: b.marketing,
        };
        Ok(topic_view(&ops::register_topic(&s, &who, &input).await?))
    };
    answer(run.await, StatusCode::OK)
}

/// The OpenAPI description of these routes (merged into the gateway's
/// document).
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
pub struct PreferencesDoc;

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

    fn field<T: DeserializeOwned>(body: &'static [u8]) -> String {
        match parse_json::<T>(&Bytes::from_static(body), None) {
            Err(ApiError::Invalid(v)) => v.0[0].field.clone(),
            Err(e) => panic!("{e}"),
            Ok(_) => panic!("accepted {}", String::from_utf8_lossy(body)),
        }
    }

    #[test]
    fn bad_bodies_name_the_field() {
        assert_eq!(field::<PatchPreferences>(br#"{"change":[]}"#), "change");
        assert_eq!(field::<PatchPreferences>(br#"{}"#), "changes");
        assert_eq!(field::<PatchPreferences>(b"{not json"), "body");
        assert_eq!(field::<PatchPreferences>(b"  "), "body");
        assert_eq!(field::<VerifyBody>(br#"{"value":"1"}"#), "value");
        assert_eq!(field::<TopicBody>(br#"{"colour":"red"}"#), "colour");
        let empty: TokenBody = parse_json(&Bytes::new(), Some(TokenBody::default())).unwrap();
        assert_eq!(empty.ttl_seconds, 0);
    }

    #[test]
    fn every_route_is_described_in_openapi() {
        use utoipa::OpenApi;
        let doc = PreferencesDoc::openapi();
        let mut described: Vec<(String, String)> = Vec::new();
        for (path, item) in &doc.paths.paths {
            // OpenAPI writes {id}; axum (0.7) :id.
            let axum_path = path.replace('{', ":").replace('}', "");
            for (method, op) in [
                ("GET", &item.get),
                ("PUT", &item.put),
                ("POST", &item.post),
                ("PATCH", &item.patch),
            ] {
                if op.is_some() {
                    described.push((method.to_string(), axum_path.clone()));
                }
            }
        }
        described.sort();
        let mut ours: Vec<(String, String)> = crate::access::REST_ROUTES
            .iter()
            .filter(|(_, p, _)| {
                p.contains("preferences") || p.contains("topics") || p.contains("/subscribers/")
            })
            .map(|(m, p, _)| (m.to_string(), p.to_string()))
            .collect();
        ours.sort();
        assert_eq!(described, ours);
        let json = doc.to_json().unwrap();
        assert!(json.contains("PreferencesView"), "{json}");
    }

    #[test]
    fn a_query_number_names_its_parameter() {
        let q = HashMap::from([("limit".to_string(), "ten".to_string())]);
        match number(&q, "limit") {
            Err(ApiError::Invalid(v)) => assert_eq!(v.0[0].field, "limit"),
            other => panic!("{other:?}"),
        }
        assert_eq!(number(&HashMap::new(), "limit").unwrap(), 0);
    }
}
