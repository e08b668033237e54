//! RFC 9457 problem details: the one error shape of every REST answer
//! (`application/problem+json`), whether a handler, the access guard, an
//! extractor (bad JSON, wrong content type, bad query) or the router itself
//! (unknown route, wrong method) refused the request.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use clarion_domain::error::excerpt;
use clarion_domain::Violations;
use serde::Serialize;
use utoipa::ToSchema;

use crate::error::{bounded, ApiError};

pub const PROBLEM_JSON: &str = "application/problem+json";

/// Longest `detail` sent (error texts can quote the caller's input).
const MAX_DETAIL_BYTES: usize = 6 * 1024;

/// An RFC 9457 problem.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[schema(example = json!({
    "type": "about:blank",
    "title": "Bad Request",
    "status": 400,
    "detail": "invalid request: recipients[0].subscriber_id: is required",
    "errors": [{"field": "recipients[0].subscriber_id", "detail": "is required"}]
}))]
pub struct Problem {
    /// Always `about:blank`: the status says what kind of problem it is.
    #[serde(rename = "type")]
    pub kind: String,
    /// The status's reason phrase.
    pub title: String,
    /// The HTTP status, repeated.
    pub status: u16,
    /// What was wrong, for a person.
    pub detail: String,
    /// The fields at fault (invalid requests only), each with what is wrong.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    #[schema(required = false)]
    pub errors: Vec<FieldError>,
}

/// One field at fault.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct FieldError {
    /// The field, as a path into the request (`recipients[0].email`), or
    /// the parameter or header name (`cursor`, `Idempotency-Key`).
    pub field: String,
    pub detail: String,
}

impl Problem {
    pub fn new(status: StatusCode, detail: impl AsRef<str>) -> Problem {
        Problem {
            kind: "about:blank".into(),
            title: status.canonical_reason().unwrap_or("Error").into(),
            status: status.as_u16(),
            detail: excerpt(detail.as_ref(), MAX_DETAIL_BYTES).into_owned(),
            errors: Vec::new(),
        }
    }

    /// A 400 naming the fields at fault.
    pub fn invalid(v: &Violations) -> Problem {
        let listed = bounded(v);
        let mut p = Problem::new(
            StatusCode::BAD_REQUEST,
            format!("invalid request: {}", Violations(listed.clone())),
        );
        p.errors = listed
            .into_iter()
            .map(|f| FieldError {
                field: f.field,
                detail: f.description,
            })
            .collect();
        p
    }

    /// A problem of `status` about one field.
    pub fn field(status: StatusCode, field: &str, detail: impl AsRef<str>) -> Problem {
        let detail = excerpt(detail.as_ref(), MAX_DETAIL_BYTES).into_owned();
        let mut p = Problem::new(status, format!("{field}: {detail}"));
        p.errors = vec![FieldError {
            field: field.to_string(),
            detail,
        }];
        p
    }

    pub fn status_code(&self) -> StatusCode {
        StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
    }
}

impl From<ApiError> for Problem {
    fn from(e: ApiError) -> Problem {
        let status = match &e {
            ApiError::Invalid(v) => return Problem::invalid(v),
            ApiError::Unauthenticated(_) => StatusCode::UNAUTHORIZED,
            ApiError::PermissionDenied(_) => StatusCode::FORBIDDEN,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::AlreadyExists(_) | ApiError::FailedPrecondition(_) => StatusCode::CONFLICT,
            ApiError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        };
        Problem::new(status, e.to_string())
    }
}

impl From<Violations> for Problem {
    fn from(v: Violations) -> Problem {
        Problem::invalid(&v)
    }
}

impl From<clarion_store::StoreError> for Problem {
    fn from(e: clarion_store::StoreError) -> Problem {
        ApiError::from(e).into()
    }
}

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        let mut resp = (self.status_code(), axum::Json(&self)).into_response();
        resp.headers_mut()
            .insert(header::CONTENT_TYPE, HeaderValue::from_static(PROBLEM_JSON));
        // A 401 says how to authenticate (RFC 9110 §11.6.1).
        if self.status == 401 {
            resp.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"clarion\""),
            );
        }
        resp
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        Problem::from(self).into_response()
    }
}

/// Router fallback: an unknown route.
pub async fn not_found(uri: axum::http::Uri) -> Problem {
    Problem::new(
        StatusCode::NOT_FOUND,
        format!("no route {}: see /openapi.json", excerpt(uri.path(), 200)),
    )
}

/// Router fallback: a known route asked with a method it does not serve
/// (axum adds the `Allow` header).
pub async fn method_not_allowed(method: axum::http::Method, uri: axum::http::Uri) -> Problem {
    Problem::new(
        StatusCode::METHOD_NOT_ALLOWED,
        format!(
            "{method} is not served on {}: see the Allow header",
            excerpt(uri.path(), 200)
        ),
    )
}

/// Both fallbacks, on a router whose routes are all registered.
pub fn with_fallbacks(router: axum::Router) -> axum::Router {
    router
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn invalid_requests_list_their_fields_and_others_do_not() {
        let mut v = Violations::default();
        v.push("recipients[0].email", "is not an email address");
        let p = Problem::from(ApiError::Invalid(v));
        assert_eq!(p.status, 400);
        assert_eq!(p.errors[0].field, "recipients[0].email");
        let json = serde_json::to_value(&p).unwrap();
        assert_eq!(json["type"], "about:blank");
        assert_eq!(json["title"], "Bad Request");

        let p = Problem::from(ApiError::NotFound("no such thing".into()));
        let json = serde_json::to_value(&p).unwrap();
        assert_eq!(json["status"], 404);
        assert!(json.get("errors").is_none(), "{json}");
        let resp = p.into_response();
        assert_eq!(resp.headers()[header::CONTENT_TYPE], PROBLEM_JSON);
    }
}
