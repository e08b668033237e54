//! API errors and their gRPC form. Validation problems become
//! `INVALID_ARGUMENT` with a `google.rpc.BadRequest` detail listing every field.
//!
//! An error travels in HTTP/2 headers (`grpc-message`, percent-encoded, and
//! `grpc-status-details-bin`, base64), and standard gRPC clients refuse more
//! than 8 KiB of them: a longer error reaches the caller as
//! `RESOURCE_EXHAUSTED`, hiding what was wrong. Whatever the input, the
//! message and details stay within the budgets below (about 6 KiB encoded at
//! worst): each field and description is an excerpt, and at most
//! [`MAX_VIOLATIONS`] are listed, then how many more there were.

use clarion_domain::error::excerpt;
use clarion_domain::{FieldViolation, Violations};
use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt};

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    Invalid(Violations),
    #[error("{0}")]
    Unauthenticated(String),
    #[error("{0}")]
    PermissionDenied(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    AlreadyExists(String),
    /// The request cannot be done in the current state (e.g. a legal hold
    /// covers it): gRPC FAILED_PRECONDITION, HTTP 409.
    #[error("{0}")]
    FailedPrecondition(String),
    #[error("{0}")]
    Unavailable(String),
    #[error("{0}")]
    Internal(String),
}

impl From<Violations> for ApiError {
    fn from(v: Violations) -> Self {
        ApiError::Invalid(v)
    }
}

impl From<clarion_store::StoreError> for ApiError {
    fn from(e: clarion_store::StoreError) -> Self {
        ApiError::Unavailable(format!("store: {e}"))
    }
}

/// Most field violations one error lists.
pub const MAX_VIOLATIONS: usize = 20;
const MAX_FIELD_BYTES: usize = 120;
const MAX_DESCRIPTION_BYTES: usize = 240;
/// All listed violations together (before base64, which adds a third).
const MAX_DETAILS_BYTES: usize = 3 * 1024;
/// The status message (percent-encoding can triple non-ASCII bytes).
const MAX_MESSAGE_BYTES: usize = 512;

/// The violations an error lists: excerpts, within [`MAX_VIOLATIONS`] and
/// the details budget, and a last one saying how many were left out.
pub fn bounded(v: &Violations) -> Vec<FieldViolation> {
    let mut out = Vec::new();
    let mut bytes = 0;
    for f in &v.0 {
        let f = FieldViolation::new(
            excerpt(&f.field, MAX_FIELD_BYTES),
            excerpt(&f.description, MAX_DESCRIPTION_BYTES),
        );
        bytes += f.field.len() + f.description.len();
        if out.len() == MAX_VIOLATIONS || bytes > MAX_DETAILS_BYTES {
            break;
        }
        out.push(f);
    }
    let left = v.0.len() - out.len();
    if left > 0 {
        out.push(FieldViolation::new(
            "",
            format!("and {left} more problems not listed"),
        ));
    }
    out
}

impl From<ApiError> for Status {
    fn from(e: ApiError) -> Status {
        let cut = |m: String| excerpt(&m, MAX_MESSAGE_BYTES).into_owned();
        match e {
            ApiError::Invalid(v) => {
                let listed = bounded(&v);
                let mut details = ErrorDetails::new();
                for f in &listed {
                    details.add_bad_request_violation(f.field.clone(), f.description.clone());
                }
                Status::with_error_details(
                    Code::InvalidArgument,
                    cut(format!("invalid request: {}", Violations(listed))),
                    details,
                )
            }
            ApiError::Unauthenticated(m) => Status::unauthenticated(cut(m)),
            ApiError::PermissionDenied(m) => Status::permission_denied(cut(m)),
            ApiError::NotFound(m) => Status::not_found(cut(m)),
            ApiError::AlreadyExists(m) => Status::already_exists(cut(m)),
            ApiError::FailedPrecondition(m) => Status::failed_precondition(cut(m)),
            ApiError::Unavailable(m) => Status::unavailable(cut(m)),
            ApiError::Internal(m) => Status::internal(cut(m)),
        }
    }
}

/// An RFC 9457 `application/problem+json` response for the HTTP side.
pub fn problem(status: axum::http::StatusCode, detail: &str) -> axum::response::Response {
    axum::response::IntoResponse::into_response(crate::problem::Problem::new(status, detail))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn invalid_argument_stays_small_whatever_the_input() {
        let huge = "é".repeat(50_000);
        let mut v = Violations::default();
        for i in 0..500 {
            v.push(format!("steps[{i}].{huge}"), format!("bad value {huge}"));
        }
        let status = Status::from(ApiError::Invalid(v));
        assert_eq!(status.code(), Code::InvalidArgument);
        assert!(status.message().len() <= MAX_MESSAGE_BYTES + 4);
        let details = status.get_error_details();
        let listed = &details
            .bad_request()
            .expect("bad request details")
            .field_violations;
        assert!(listed.len() <= MAX_VIOLATIONS + 1);
        assert!(listed
            .last()
            .unwrap()
            .description
            .contains("more problems not listed"));
        assert!(
            status.details().len() < 4 * 1024,
            "{}",
            status.details().len()
        );
        // What goes on the wire: message and details as HTTP/2 headers.
        let mut headers = tonic::metadata::MetadataMap::new().into_headers();
        status.add_header(&mut headers).unwrap();
        let total: usize = headers
            .iter()
            .map(|(k, v)| k.as_str().len() + v.len())
            .sum();
        assert!(total < 7 * 1024, "{total} bytes of headers");
        // Other errors are cut too.
        let nf = Status::from(ApiError::NotFound(format!("no workflow {huge:?}")));
        assert!(nf.message().len() <= MAX_MESSAGE_BYTES + 4);
    }

    #[test]
    fn small_errors_are_listed_whole() {
        let mut v = Violations::default();
        v.push("email", "is not an email address");
        v.push("phone", "must be E.164");
        let listed = bounded(&v);
        assert_eq!(listed, v.0);
    }
}
