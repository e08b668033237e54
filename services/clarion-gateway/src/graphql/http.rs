//! `POST /graphql` over HTTP: admission (key, scope, rate), a bounded body
//! holding one operation (`{"query", "variables", "operationName"}`; a
//! batch is refused), execution, and the answer as `application/json`
//! (status 200 once the operation ran, errors and all; a refused request
//! gets 400, 401, 403, 413 or 429 with a GraphQL-shaped body).
//!
//! Our own glue rather than async-graphql-axum: its 7.x releases target
//! axum 0.8, and the part we need is this page.

use axum::body::Body;
use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

use super::errors::{label, refusal, CODE_BAD_REQUEST};
use super::limits::MAX_BODY_BYTES;
use super::{Call, ClarionSchema};
use crate::access;
use crate::state::GatewayState;

/// Where the schema is served.
pub const PATH: &str = "/graphql";

/// The route's state: the gateway's and the schema.
#[derive(Clone)]
pub struct Graphql {
    pub gateway: GatewayState,
    pub schema: ClarionSchema,
}

pub async fn serve(State(g): State<Graphql>, headers: HeaderMap, body: Body) -> Response {
    let caller = match access::graphql_admit(&g.gateway, &headers).await {
        Ok(c) => c,
        Err(refused) => return refused,
    };
    let bytes = match axum::body::to_bytes(body, MAX_BODY_BYTES).await {
        Ok(b) => b,
        Err(_) => {
            return refusal(
                StatusCode::PAYLOAD_TOO_LARGE,
                CODE_BAD_REQUEST,
                &format!("the request body is larger than {MAX_BODY_BYTES} bytes"),
            )
        }
    };
    let request = match parse(&bytes) {
        Ok(r) => r,
        Err(message) => return refusal(StatusCode::BAD_REQUEST, CODE_BAD_REQUEST, &message),
    };
    let call = Call::new(g.gateway, &caller, headers);
    let mut response = g.schema.execute(request.data(call).data(caller)).await;
    label(&mut response);
    match serde_json::to_vec(&response) {
        Ok(json) => (
            StatusCode::OK,
            [(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            )],
            json,
        )
            .into_response(),
        Err(e) => refusal(
            StatusCode::INTERNAL_SERVER_ERROR,
            "INTERNAL",
            &format!("encoding the answer: {e}"),
        ),
    }
}

/// One GraphQL request from a JSON body; the error says what is wrong.
fn parse(body: &[u8]) -> Result<async_graphql::Request, String> {
    let first = body.iter().find(|b| !b.is_ascii_whitespace());
    match first {
        None => return Err("a JSON body {\"query\": …} is required".into()),
        // Batches would make one HTTP request (one unit of the rate limit)
        // any number of operations.
        Some(b'[') => {
            return Err("batched requests are not accepted: send one operation per request".into())
        }
        _ => {}
    }
    let request: async_graphql::Request = serde_json::from_slice(body)
        .map_err(|e| format!("the body is not a GraphQL request: {e}"))?;
    if request.query.trim().is_empty() {
        return Err("query is required".into());
    }
    Ok(request)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_are_one_operation() {
        assert!(parse(br#"{"query":"{ topics { id } }"}"#).is_ok());
        let with_vars = parse(
            br#"{"query":"query($id: String!) { topic(id: $id) { id } }","variables":{"id":"t"},"operationName":null}"#,
        )
        .unwrap();
        assert_eq!(with_vars.variables.to_string(), r#"{id: "t"}"#);
        for (body, says) in [
            (&b"  "[..], "required"),
            (br#"[{"query":"{ topics { id } }"}]"#, "batched"),
            (b"{not json", "not a GraphQL request"),
            (br#"{"query":""}"#, "query is required"),
        ] {
            let e = parse(body).unwrap_err();
            assert!(e.contains(says), "{e}");
        }
    }
}
