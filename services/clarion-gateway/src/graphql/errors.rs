//! Errors the GraphQL way: `{"message", "path", "extensions": {"code",
//! "fields": [{"field", "detail"}]}}`, the code mapped from [`ApiError`]
//! (`INVALID_ARGUMENT`, `NOT_FOUND`, `UNAUTHENTICATED`,
//! `PERMISSION_DENIED`, …), the fields named as the request's arguments
//! (`subscriberId`, `changes[2].path`, `input.channels[0]`).

use async_graphql::{ErrorExtensionValues, ErrorExtensions, Value};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use clarion_domain::error::excerpt;

use super::limits;
use crate::error::{bounded, ApiError};

pub const CODE_INVALID_ARGUMENT: &str = "INVALID_ARGUMENT";
pub const CODE_NOT_FOUND: &str = "NOT_FOUND";
pub const CODE_UNAUTHENTICATED: &str = "UNAUTHENTICATED";
pub const CODE_PERMISSION_DENIED: &str = "PERMISSION_DENIED";
pub const CODE_RATE_LIMITED: &str = "RATE_LIMITED";
/// Not yet served by this build (see [`super::notifications`]).
pub const CODE_UNAVAILABLE: &str = "UNAVAILABLE";
/// The query does not parse or does not fit the schema.
pub const CODE_INVALID_QUERY: &str = "INVALID_QUERY";
pub const CODE_QUERY_TOO_DEEP: &str = "QUERY_TOO_DEEP";
pub const CODE_QUERY_TOO_COMPLEX: &str = "QUERY_TOO_COMPLEX";
/// The HTTP request itself: not JSON, a batch, too large.
pub const CODE_BAD_REQUEST: &str = "BAD_REQUEST";

/// The longest message an error carries (a tenant's text may be quoted).
const MAX_MESSAGE_BYTES: usize = 1024;

pub fn code(e: &ApiError) -> &'static str {
    match e {
        ApiError::Invalid(_) => CODE_INVALID_ARGUMENT,
        ApiError::Unauthenticated(_) => CODE_UNAUTHENTICATED,
        ApiError::PermissionDenied(_) => CODE_PERMISSION_DENIED,
        ApiError::NotFound(_) => CODE_NOT_FOUND,
        ApiError::AlreadyExists(_) => "ALREADY_EXISTS",
        ApiError::FailedPrecondition(_) => "FAILED_PRECONDITION",
        ApiError::Unavailable(_) => CODE_UNAVAILABLE,
        ApiError::Internal(_) => "INTERNAL",
    }
}

/// `e` as a GraphQL error. `rename` maps the operations' field names
/// (`subscriber_id`, `changes[0].path`) to the request's argument paths.
pub fn api_error(e: ApiError, rename: impl Fn(&str) -> String) -> async_graphql::Error {
    let code = code(&e);
    let (message, fields) = match &e {
        ApiError::Invalid(v) => {
            let listed: Vec<(String, String)> = bounded(v)
                .into_iter()
                .map(|f| {
                    let field = if f.field.is_empty() {
                        f.field
                    } else {
                        rename(&f.field)
                    };
                    (field, f.description)
                })
                .collect();
            let summary: Vec<String> = listed
                .iter()
                .map(|(f, d)| {
                    if f.is_empty() {
                        d.clone()
                    } else {
                        format!("{f}: {d}")
                    }
                })
                .collect();
            (format!("invalid argument: {}", summary.join("; ")), listed)
        }
        other => (other.to_string(), Vec::new()),
    };
    let message = excerpt(&message, MAX_MESSAGE_BYTES).into_owned();
    async_graphql::Error::new(message).extend_with(|_, ext| {
        ext.set("code", code);
        if !fields.is_empty() {
            ext.set("fields", fields_value(&fields));
        }
    })
}

fn fields_value(fields: &[(String, String)]) -> Value {
    Value::List(
        fields
            .iter()
            .map(|(field, detail)| {
                let mut o = async_graphql::indexmap::IndexMap::new();
                o.insert(
                    async_graphql::Name::new("field"),
                    Value::from(field.as_str()),
                );
                o.insert(
                    async_graphql::Name::new("detail"),
                    Value::from(detail.as_str()),
                );
                Value::Object(o)
            })
            .collect(),
    )
}

/// A field name of the operations in the schema's spelling: each
/// snake_case word camelCased (`subscriber_id` → `subscriberId`,
/// `changes[0].path` unchanged).
pub fn camel(field: &str) -> String {
    let mut out = String::with_capacity(field.len());
    let mut upper = false;
    for c in field.chars() {
        match c {
            '_' => upper = true,
            c if upper => {
                out.extend(c.to_uppercase());
                upper = false;
            }
            c => out.push(c),
        }
    }
    out
}

/// Codes on the errors no resolver made (parse, validation, limits), and
/// the limits' messages with their numbers.
pub fn label(response: &mut async_graphql::Response) {
    for e in &mut response.errors {
        let ext = e
            .extensions
            .get_or_insert_with(ErrorExtensionValues::default);
        if ext.get("code").is_some() {
            continue;
        }
        let code = match e.message.as_str() {
            "Query is nested too deep." => {
                e.message = format!(
                    "the query is nested too deep: at most {} levels of fields (docs/graphql.md#limits)",
                    limits::MAX_DEPTH
                );
                CODE_QUERY_TOO_DEEP
            }
            "Query is too complex." => {
                e.message = format!(
                    "the query is too complex: its fields cost more than {} (docs/graphql.md#limits)",
                    limits::MAX_COMPLEXITY
                );
                CODE_QUERY_TOO_COMPLEX
            }
            _ if e.path.is_empty() => CODE_INVALID_QUERY,
            _ => "INTERNAL",
        };
        ext.set("code", code);
    }
}

/// A request refused before any field ran: an HTTP status and
/// `{"errors": [{"message", "extensions": {"code"}}]}`.
pub fn refusal(status: StatusCode, code: &str, message: &str) -> Response {
    let body = serde_json::json!({
        "errors": [{
            "message": excerpt(message, MAX_MESSAGE_BYTES),
            "extensions": {"code": code},
        }]
    });
    (
        status,
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        body.to_string(),
    )
        .into_response()
}

/// [`refusal`] for an [`ApiError`] (authentication, admission).
pub fn refused(e: ApiError) -> Response {
    let status = match &e {
        ApiError::Unauthenticated(_) => StatusCode::UNAUTHORIZED,
        ApiError::PermissionDenied(_) => StatusCode::FORBIDDEN,
        ApiError::Invalid(_) => StatusCode::BAD_REQUEST,
        ApiError::NotFound(_) => StatusCode::NOT_FOUND,
        ApiError::AlreadyExists(_) | ApiError::FailedPrecondition(_) => StatusCode::CONFLICT,
        ApiError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
        ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
    };
    refusal(status, code(&e), &e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clarion_domain::Violations;

    #[test]
    fn field_names_follow_the_schema() {
        assert_eq!(camel("subscriber_id"), "subscriberId");
        assert_eq!(camel("changes[0].path"), "changes[0].path");
        assert_eq!(camel("default_opt_in"), "defaultOptIn");
    }

    #[test]
    fn invalid_arguments_list_every_field_with_the_code() {
        let mut v = Violations::default();
        v.push("subscriber_id", "is required");
        v.push("changes[1].path", "unknown setting");
        let e = api_error(ApiError::Invalid(v), camel).into_server_error(Default::default());
        let json = serde_json::to_value(&e).unwrap();
        assert_eq!(json["extensions"]["code"], "INVALID_ARGUMENT");
        assert_eq!(json["extensions"]["fields"][0]["field"], "subscriberId");
        assert_eq!(json["extensions"]["fields"][1]["field"], "changes[1].path");
        assert_eq!(json["extensions"]["fields"][1]["detail"], "unknown setting");
        assert!(
            json["message"]
                .as_str()
                .unwrap()
                .contains("subscriberId: is required"),
            "{json}"
        );
        let nf = api_error(ApiError::NotFound("no subscriber".into()), camel)
            .into_server_error(Default::default());
        let json = serde_json::to_value(&nf).unwrap();
        assert_eq!(json["extensions"]["code"], "NOT_FOUND");
        assert!(json["extensions"].get("fields").is_none());
    }
}
