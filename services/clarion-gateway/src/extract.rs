//! Extractors of the REST handlers: axum's `Json`, `Query` and `Path`, with
//! their rejections as problem+json naming the field at fault (axum's own
//! answer is plain text, and a bad query value does not name its parameter).

use axum::async_trait;
use axum::body::Bytes;
use axum::extract::rejection::PathRejection;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, StatusCode};
use serde::de::DeserializeOwned;

use crate::problem::Problem;

/// Largest REST request body: far above the largest valid trigger (1,000
/// recipients and a 64 KiB payload); beyond it, 413.
pub const MAX_BODY_BYTES: usize = 2 * 1024 * 1024;

/// A JSON request body (`content-type: application/json`), required.
pub struct JsonBody<T>(pub T);

/// A JSON request body that may be left out (an empty body, or `null`, is `None`).
pub struct OptionalJsonBody<T>(pub Option<T>);

/// Query parameters.
pub struct QueryParams<T>(pub T);

/// Path parameters.
pub struct PathParams<T>(pub T);

async fn body<S: Send + Sync>(req: Request, state: &S) -> Result<(HeaderMap, Bytes), Problem> {
    let headers = req.headers().clone();
    let bytes = Bytes::from_request(req, state).await.map_err(|r| {
        let status = r.status();
        if status == StatusCode::PAYLOAD_TOO_LARGE {
            Problem::new(
                status,
                format!("the request body is over the limit of {MAX_BODY_BYTES} bytes"),
            )
        } else {
            Problem::field(status, "body", r.body_text())
        }
    })?;
    Ok((headers, bytes))
}

/// `application/json`, or a `+json` type, with any parameters.
fn is_json(headers: &HeaderMap) -> bool {
    let Some(ct) = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
    else {
        return false;
    };
    let essence = ct.split(';').next().unwrap_or_default().trim();
    essence.eq_ignore_ascii_case("application/json")
        || essence.to_ascii_lowercase().ends_with("+json")
}

fn unsupported_media_type() -> Problem {
    Problem::field(
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "content-type",
        "the body must be JSON: send `content-type: application/json`",
    )
}

/// Parses a JSON object body, naming the field at fault: `recipients[0].email`
/// for a value of the wrong type, the field itself for a missing or
/// unknown one, `body` for text that is not JSON at all.
pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, Problem> {
    // Every body is an object (serde would read an array as a struct's
    // fields in order, and blame `[0]`).
    if bytes.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
        return Err(Problem::field(
            StatusCode::BAD_REQUEST,
            "body",
            "a JSON object is required",
        ));
    }
    let de = &mut serde_json::Deserializer::from_slice(bytes);
    let parsed: Result<T, _> = serde_path_to_error::deserialize(de);
    parsed.map_err(|e| {
        let inner = e.inner();
        let field = if inner.is_data() {
            field_of(&e.path().to_string(), &inner.to_string())
        } else {
            "body".to_string()
        };
        Problem::field(StatusCode::BAD_REQUEST, &field, inner.to_string())
    })
}

/// The field an error is about: serde's path to the value, and the field a
/// "missing field `x`" or "unknown field `x`" message names.
fn field_of(path: &str, message: &str) -> String {
    let named = ["missing field `", "unknown field `"]
        .iter()
        .find_map(|p| message.split_once(p))
        .and_then(|(_, rest)| rest.split('`').next());
    let path = if path == "." { "" } else { path };
    match named {
        Some(n) if path == n || path.ends_with(&format!(".{n}")) => path.to_string(),
        Some(n) if path.is_empty() => n.to_string(),
        Some(n) => format!("{path}.{n}"),
        None if path.is_empty() => "body".to_string(),
        None => path.to_string(),
    }
}

#[async_trait]
impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for JsonBody<T> {
    type Rejection = Problem;

    async fn from_request(req: Request, state: &S) -> Result<Self, Problem> {
        let (headers, bytes) = body(req, state).await?;
        if !is_json(&headers) {
            return Err(unsupported_media_type());
        }
        parse_json(&bytes).map(JsonBody)
    }
}

#[async_trait]
impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for OptionalJsonBody<T> {
    type Rejection = Problem;

    async fn from_request(req: Request, state: &S) -> Result<Self, Problem> {
        let (headers, bytes) = body(req, state).await?;
        // No body, or JSON `null`, is no body.
        let text = bytes.trim_ascii();
        if text.is_empty() || text == b"null" {
            return Ok(OptionalJsonBody(None));
        }
        if !is_json(&headers) {
            return Err(unsupported_media_type());
        }
        parse_json(&bytes).map(|v| OptionalJsonBody(Some(v)))
    }
}

/// Parses a query string, naming the parameter at fault.
pub fn parse_query<T: DeserializeOwned>(query: &str) -> Result<T, Problem> {
    let de = serde_urlencoded::Deserializer::new(form_urlencoded::parse(query.as_bytes()));
    let parsed: Result<T, _> = serde_path_to_error::deserialize(de);
    parsed.map_err(|e| {
        let field = field_of(&e.path().to_string(), &e.inner().to_string());
        let field = if field == "body" { "query" } else { &field };
        Problem::field(StatusCode::BAD_REQUEST, field, e.inner().to_string())
    })
}

#[async_trait]
impl<S: Send + Sync, T: DeserializeOwned> FromRequestParts<S> for QueryParams<T> {
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Problem> {
        parse_query(parts.uri.query().unwrap_or_default()).map(QueryParams)
    }
}

#[async_trait]
impl<S: Send + Sync, T: DeserializeOwned + Send> FromRequestParts<S> for PathParams<T> {
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Problem> {
        match axum::extract::Path::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Path(v)) => Ok(PathParams(v)),
            Err(PathRejection::FailedToDeserializePathParams(e)) => {
                use axum::extract::path::ErrorKind;
                let field = match e.kind() {
                    ErrorKind::InvalidUtf8InPathParam { key }
                    | ErrorKind::ParseErrorAtKey { key, .. } => key.clone(),
                    _ => "path".to_string(),
                };
                Err(Problem::field(
                    StatusCode::BAD_REQUEST,
                    &field,
                    e.body_text(),
                ))
            }
            Err(e) => Err(Problem::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                e.body_text(),
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Deserialize, Debug)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Body {
        #[serde(default)]
        workflow_id: String,
        #[serde(default)]
        recipients: Vec<Recipient>,
    }

    #[derive(Deserialize, Debug)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Recipient {
        subscriber_id: String,
        #[serde(default)]
        email: String,
    }

    fn field(body: &str) -> String {
        let p = parse_json::<Body>(body.as_bytes()).unwrap_err();
        assert_eq!(p.status, 400);
        p.errors[0].field.clone()
    }

    #[test]
    fn bad_bodies_name_the_field_at_fault() {
        assert_eq!(field(r#"{"workflow":"x"}"#), "workflow");
        assert_eq!(field(r#"{"workflow_id":7}"#), "workflow_id");
        assert_eq!(
            field(r#"{"recipients":[{"email":"a@b.c"}]}"#),
            "recipients[0].subscriber_id"
        );
        assert_eq!(
            field(r#"{"recipients":[{"subscriber_id":"a","email":1}]}"#),
            "recipients[0].email"
        );
        assert_eq!(
            field(r#"{"recipients":[{"subscriber_id":"a","nope":1}]}"#),
            "recipients[0].nope"
        );
        assert_eq!(field("{not json"), "body");
        assert_eq!(field("[1]"), "body");
        assert_eq!(field(" "), "body");
    }

    #[derive(Deserialize, Debug)]
    #[allow(dead_code)]
    struct Q {
        limit: Option<u32>,
        #[serde(default)]
        cursor: String,
    }

    #[test]
    fn bad_query_values_name_their_parameter() {
        let q: Q = parse_query("limit=5&cursor=abc&other=1").unwrap();
        assert_eq!((q.limit, q.cursor.as_str()), (Some(5), "abc"));
        let p = parse_query::<Q>("limit=lots").unwrap_err();
        assert_eq!(p.errors[0].field, "limit");
        let p = parse_query::<Q>("limit=-1").unwrap_err();
        assert_eq!(p.errors[0].field, "limit");
    }

    #[test]
    fn json_content_types_are_recognised() {
        let mut h = HeaderMap::new();
        assert!(!is_json(&h));
        h.insert(
            header::CONTENT_TYPE,
            "application/json; charset=utf-8".parse().unwrap(),
        );
        assert!(is_json(&h));
        h.insert(
            header::CONTENT_TYPE,
            "application/merge-patch+json".parse().unwrap(),
        );
        assert!(is_json(&h));
        h.insert(header::CONTENT_TYPE, "text/plain".parse().unwrap());
        assert!(!is_json(&h));
    }
}
