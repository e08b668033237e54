//! The REST API's OpenAPI 3.1 document, generated from the handlers'
//! `#[utoipa::path]` annotations and served at `GET /openapi.json`.
//!
//! Each REST module declares its paths (`#[derive(OpenApi)] struct Paths`)
//! and is listed once in `rest::MODULES`; [`document`] merges them and then
//! applies the conventions every route shares, so no route has to repeat
//! them: the security schemes, the problem+json error answers (401, 403,
//! 429, 5xx; 400; 404 on routes with an id; 413 and 415 on routes with a
//! body), the `RateLimit-Policy`/`RateLimit` headers of successful answers,
//! `Retry-After` on 429, and `Idempotency-Key` on POSTs.

use std::sync::OnceLock;

use axum::http::header;
use axum::response::IntoResponse;
use utoipa::openapi::link::LinkBuilder;
use utoipa::openapi::path::{Operation, ParameterBuilder, ParameterIn};
use utoipa::openapi::response::{Response, ResponseBuilder};
use utoipa::openapi::schema::{ObjectBuilder, Type};
use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{ContentBuilder, Header, Ref, RefOr, Required};
use utoipa::OpenApi;

use crate::problem::{FieldError, Problem, PROBLEM_JSON};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Clarion REST API",
        description = "Multi-tenant notifications over JSON/HTTP: the REST door of the gRPC API \
                       (same auth, validation and code paths). Conventions (errors, pagination, \
                       idempotency, rate limits): docs/api.md."
    ),
    components(schemas(Problem, FieldError)),
    security(("bearer" = []), ("apiKey" = [])),
    tags(
        (name = "notifications", description = "Trigger workflows and follow notifications"),
        (name = "subscribers", description = "Subscribers and their notifications"),
        (name = "dead-letters", description = "Notifications whose runs stopped for good"),
    )
)]
struct Base;

/// The whole document: every module's paths with the shared conventions.
pub fn document() -> utoipa::openapi::OpenApi {
    let mut doc = Base::openapi();
    for m in crate::rest::MODULES {
        doc.merge((m.openapi)());
    }
    conventions(&mut doc);
    add_links(&mut doc);
    doc
}

/// OpenAPI links: where an answer's ids lead (clients and schemathesis'
/// stateful tests follow them). (operation, status, target operation,
/// target parameter, runtime expression for its value.)
const LINKS: &[(&str, &str, &str, &str, &str)] = &[
    (
        "triggerNotification",
        "202",
        "getNotification",
        "id",
        "$response.body#/notifications/0/notification_id",
    ),
    (
        "triggerNotification",
        "202",
        "recordEngagement",
        "id",
        "$response.body#/notifications/0/notification_id",
    ),
    (
        "triggerNotification",
        "202",
        "listSubscriberNotifications",
        "id",
        "$response.body#/notifications/0/subscriber_id",
    ),
    (
        "upsertSubscriber",
        "200",
        "getSubscriber",
        "id",
        "$response.body#/subscriber_id",
    ),
    (
        "upsertSubscriber",
        "200",
        "listSubscriberNotifications",
        "id",
        "$response.body#/subscriber_id",
    ),
    (
        "listDeadLetters",
        "200",
        "getDeadLetter",
        "id",
        "$response.body#/dead_letters/0/notification_id",
    ),
    (
        "listDeadLetters",
        "200",
        "retryDeadLetter",
        "id",
        "$response.body#/dead_letters/0/notification_id",
    ),
    (
        "listDeadLetters",
        "200",
        "discardDeadLetter",
        "id",
        "$response.body#/dead_letters/0/notification_id",
    ),
];

fn add_links(doc: &mut utoipa::openapi::OpenApi) {
    for item in doc.paths.paths.values_mut() {
        let ops = [
            &mut item.get,
            &mut item.put,
            &mut item.post,
            &mut item.delete,
            &mut item.patch,
        ];
        for op in ops.into_iter().flatten() {
            let from = op.operation_id.clone().unwrap_or_default();
            for (_, status, to, param, value) in LINKS.iter().filter(|l| l.0 == from) {
                if let Some(RefOr::T(r)) = op.responses.responses.get_mut(*status) {
                    let link = LinkBuilder::new()
                        .operation_id(*to)
                        .parameter(*param, *value)
                        .build();
                    r.links
                        .insert(format!("{to}By{}", capitalized(param)), RefOr::T(link));
                }
            }
        }
    }
}

fn capitalized(s: &str) -> String {
    let mut c = s.chars();
    c.next()
        .map(|f| f.to_uppercase().chain(c).collect())
        .unwrap_or_default()
}

/// The document as served.
pub fn document_json() -> serde_json::Value {
    let mut doc = serde_json::to_value(document()).expect("the OpenAPI document serializes");
    fix_link_keys(&mut doc);
    doc
}

/// utoipa 5 writes a link's `operationId` as `operation_id` (fixed in
/// utoipa 6): renamed here.
fn fix_link_keys(doc: &mut serde_json::Value) {
    let Some(paths) = doc["paths"].as_object_mut() else {
        return;
    };
    let responses = paths
        .values_mut()
        .filter_map(|item| item.as_object_mut())
        .flat_map(|item| item.values_mut())
        .filter_map(|op| op.get_mut("responses").and_then(|r| r.as_object_mut()))
        .flat_map(|r| r.values_mut());
    for response in responses {
        let links = response.get_mut("links").and_then(|l| l.as_object_mut());
        for link in links.into_iter().flat_map(|l| l.values_mut()) {
            let Some(link) = link.as_object_mut() else {
                continue;
            };
            if let Some(id) = link.remove("operation_id") {
                link.insert("operationId".into(), id);
            }
        }
    }
}

/// `GET /openapi.json` (no authentication).
pub async fn serve() -> impl IntoResponse {
    static JSON: OnceLock<String> = OnceLock::new();
    let json = JSON.get_or_init(|| document_json().to_string());
    ([(header::CONTENT_TYPE, "application/json")], json.as_str())
}

fn conventions(doc: &mut utoipa::openapi::OpenApi) {
    let components = doc.components.get_or_insert_with(Default::default);
    components.security_schemes.insert(
        "bearer".into(),
        SecurityScheme::Http(
            HttpBuilder::new()
                .scheme(HttpAuthScheme::Bearer)
                .bearer_format("ck_<tenant>_<secret>")
                .description(Some("A tenant API key: `authorization: Bearer <key>`"))
                .build(),
        ),
    );
    components.security_schemes.insert(
        "apiKey".into(),
        SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::with_description(
            "x-api-key",
            "A tenant API key in the `x-api-key` header",
        ))),
    );
    for (path, item) in doc.paths.paths.iter_mut() {
        let ops = [
            ("GET", &mut item.get),
            ("PUT", &mut item.put),
            ("POST", &mut item.post),
            ("DELETE", &mut item.delete),
            ("PATCH", &mut item.patch),
        ];
        for (method, op) in ops {
            if let Some(op) = op {
                operation_conventions(method, path, op);
            }
        }
    }
}

fn operation_conventions(method: &str, path: &str, op: &mut Operation) {
    let route = axum_route(path);
    let has_body = op.request_body.is_some();
    let mut errors = vec![
        (400, "Invalid request: `errors` names each field at fault"),
        (401, "Missing or invalid API key"),
        (403, "The key lacks the scope this route needs"),
        (
            429,
            "The tenant's request rate limit is exceeded: see Retry-After",
        ),
        (500, "Internal error"),
        (503, "A backend (log, store) is unavailable: retry later"),
    ];
    if path.contains('{') {
        errors.push((404, "Not found for this tenant"));
    }
    if has_body {
        errors.push((413, "The body is over the size limit"));
        errors.push((415, "The body is not `application/json`"));
    }
    if crate::idempotency::applies(method, &route) {
        errors.push((409, "A request with this Idempotency-Key is in progress"));
        errors.push((
            422,
            "This Idempotency-Key was used with a different request",
        ));
    }
    if method == "POST" {
        idempotency_header(op);
    }
    for (status, description) in errors {
        op.responses
            .responses
            .entry(status.to_string())
            .or_insert_with(|| RefOr::T(problem_response(description)));
    }
    for (status, response) in op.responses.responses.iter_mut() {
        let RefOr::T(r) = response else { continue };
        if status.starts_with('2') || status == "429" {
            rate_limit_headers(r);
        }
        if status == "429" {
            r.headers.insert(
                "Retry-After".into(),
                described(Header::new(integer_schema()), "Seconds to wait"),
            );
        }
    }
}

/// The `Idempotency-Key` header of a POST: the route's own description
/// when it has one (the trigger's mechanism), the generic one otherwise.
fn idempotency_header(op: &mut Operation) {
    let params = op.parameters.get_or_insert_with(Vec::new);
    let schema = string_schema()
        .min_length(Some(1))
        .max_length(Some(crate::idempotency::MAX_KEY_BYTES))
        .pattern(Some(crate::idempotency::KEY_PATTERN));
    if let Some(p) = params.iter_mut().find(|p| p.name == "Idempotency-Key") {
        p.schema = Some(schema.into());
        return;
    }
    params.push(
        ParameterBuilder::new()
            .name("Idempotency-Key")
            .parameter_in(ParameterIn::Header)
            .required(Required::False)
            .description(Some(
                "Makes a retry safe: a repeat with the same key (and the same request) \
                 gets the first answer again, with `Idempotency-Replayed: true`, \
                 instead of acting twice.",
            ))
            .schema(Some(schema))
            .build(),
    );
}

fn problem_response(description: &str) -> Response {
    ResponseBuilder::new()
        .description(description)
        .content(
            PROBLEM_JSON,
            ContentBuilder::new()
                .schema(Some(Ref::from_schema_name("Problem")))
                .build(),
        )
        .build()
}

fn rate_limit_headers(r: &mut Response) {
    r.headers.insert(
        "RateLimit-Policy".into(),
        described(
            Header::new(string_schema()),
            "The tenant's quota, e.g. `\"default\";q=20000;w=2` (absent for unlimited tenants)",
        ),
    );
    r.headers.insert(
        "RateLimit".into(),
        described(
            Header::new(string_schema()),
            "What is left, e.g. `\"default\";r=19999;t=1`: requests left now, seconds until the quota is whole again",
        ),
    );
}

fn described(mut h: Header, description: &str) -> Header {
    h.description = Some(description.into());
    h
}

fn string_schema() -> ObjectBuilder {
    ObjectBuilder::new().schema_type(Type::String)
}

fn integer_schema() -> ObjectBuilder {
    ObjectBuilder::new().schema_type(Type::Integer)
}

/// An axum route (`/v1/x/:id`) in OpenAPI's path syntax (`/v1/x/{id}`).
pub fn openapi_path(route: &str) -> String {
    route
        .split('/')
        .map(|seg| match seg.strip_prefix(':') {
            Some(name) => format!("{{{name}}}"),
            None => seg.to_string(),
        })
        .collect::<Vec<_>>()
        .join("/")
}

/// An OpenAPI path (`/v1/x/{id}`) in axum's route syntax (`/v1/x/:id`).
pub fn axum_route(path: &str) -> String {
    path.split('/')
        .map(
            |seg| match seg.strip_prefix('{').and_then(|s| s.strip_suffix('}')) {
                Some(name) => format!(":{name}"),
                None => seg.to_string(),
            },
        )
        .collect::<Vec<_>>()
        .join("/")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    fn documented() -> BTreeSet<(String, String)> {
        let doc: serde_json::Value = document_json();
        let mut out = BTreeSet::new();
        for (path, item) in doc["paths"].as_object().unwrap() {
            for (method, _) in item.as_object().unwrap() {
                if ["get", "put", "post", "delete", "patch"].contains(&method.as_str()) {
                    out.insert((method.to_uppercase(), axum_route(path)));
                }
            }
        }
        out
    }

    #[test]
    fn every_rest_route_is_documented_and_every_documented_route_has_a_rule() {
        let described = crate::access::REST_ROUTES
            .iter()
            .filter(|(_, p, _)| !crate::access::OUTSIDE_OPENAPI.contains(p));
        let table: BTreeSet<(String, String)> = described
            .clone()
            .map(|(m, p, _)| (m.to_string(), p.to_string()))
            .collect();
        assert_eq!(table.len(), described.count(), "a route is listed twice");
        let documented = documented();
        let undocumented: Vec<_> = table.difference(&documented).collect();
        assert!(
            undocumented.is_empty(),
            "routes missing from /openapi.json: {undocumented:?}"
        );
        let unruled: Vec<_> = documented.difference(&table).collect();
        assert!(
            unruled.is_empty(),
            "documented routes without an access rule: {unruled:?}"
        );
    }

    #[test]
    fn the_document_is_openapi_3_1_with_problems_security_and_conventions() {
        let doc: serde_json::Value = document_json();
        assert!(
            doc["openapi"].as_str().unwrap().starts_with("3.1."),
            "{}",
            doc["openapi"]
        );
        let problem = &doc["components"]["schemas"]["Problem"]["properties"];
        for f in ["type", "title", "status", "detail", "errors"] {
            assert!(problem.get(f).is_some(), "Problem.{f}");
        }
        let schemes = &doc["components"]["securitySchemes"];
        assert_eq!(schemes["bearer"]["scheme"], "bearer");
        assert_eq!(schemes["apiKey"]["name"], "x-api-key");
        for (path, item) in doc["paths"].as_object().unwrap() {
            for (method, op) in item.as_object().unwrap() {
                let r = &op["responses"];
                for status in ["400", "401", "403", "429", "500", "503"] {
                    let problem = &r[status]["content"][PROBLEM_JSON]["schema"]["$ref"];
                    assert_eq!(
                        problem, "#/components/schemas/Problem",
                        "{method} {path} {status}"
                    );
                }
                assert!(r["429"]["headers"].get("Retry-After").is_some());
                let ok = r
                    .as_object()
                    .unwrap()
                    .iter()
                    .find(|(s, _)| s.starts_with('2'));
                let (_, ok) = ok.unwrap_or_else(|| panic!("{method} {path} has no 2xx"));
                assert!(ok["headers"].get("RateLimit").is_some(), "{method} {path}");
                let idempotency_header = op["parameters"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .any(|p| p["name"] == "Idempotency-Key" && p["in"] == "header");
                assert_eq!(idempotency_header, method == "post", "{method} {path}");
            }
        }
    }

    #[test]
    fn every_link_joins_two_documented_operations() {
        let doc: serde_json::Value = document_json();
        let ids: BTreeSet<String> = doc["paths"]
            .as_object()
            .unwrap()
            .values()
            .flat_map(|item| item.as_object().unwrap().values())
            .filter_map(|op| op["operationId"].as_str().map(str::to_string))
            .collect();
        for (from, status, to, ..) in LINKS {
            assert!(ids.contains(*from) && ids.contains(*to), "{from} -> {to}");
            let links = doc["paths"]
                .as_object()
                .unwrap()
                .values()
                .flat_map(|item| item.as_object().unwrap().values())
                .find(|op| op["operationId"] == *from)
                .map(|op| op["responses"][status]["links"].clone())
                .unwrap_or_default();
            assert!(
                links
                    .as_object()
                    .unwrap()
                    .values()
                    .any(|l| l["operationId"] == *to),
                "{from} {status} links to {to}: {links}"
            );
            let n = doc["paths"]
                .as_object()
                .unwrap()
                .values()
                .flat_map(|item| item.as_object().unwrap().values())
                .filter(|op| op["operationId"] == *from)
                .filter(|op| op["responses"][status]["links"].is_object())
                .count();
            assert_eq!(n, 1, "{from} {status} carries its links");
        }
    }

    #[test]
    fn paths_translate_to_axum_routes() {
        assert_eq!(
            axum_route("/v1/dead-letters/{id}/retry"),
            "/v1/dead-letters/:id/retry"
        );
        assert_eq!(axum_route("/v1/notifications"), "/v1/notifications");
        assert_eq!(
            openapi_path("/v1/dead-letters/:id/retry"),
            "/v1/dead-letters/{id}/retry"
        );
    }
}
