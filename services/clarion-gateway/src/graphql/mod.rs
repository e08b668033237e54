//! GraphQL at `POST /graphql`: the preference center (subscribers'
//! settings, their history, topics, contact verification, the precedence
//! table's answer) and notifications, for apps that want one round trip
//! per screen.
//!
//! Every resolver calls the transport-neutral operations of
//! [`crate::preferences`] (and the notification read of
//! [`crate::notification`]), so validation, tenant scoping and the audit
//! origin are the ones gRPC and REST have; this module only maps arguments,
//! results and errors.
//!
//! Access: the same API keys as REST. One HTTP route carries queries and
//! mutations, which need different scopes, so the route admits a key with
//! any scope a root field accepts (`access::graphql_admit`, with the
//! tenant's rate limit) and each field is then checked against
//! `access::GRAPHQL_FIELDS` ([`guard`]). Limits (depth, complexity, body
//! size, no batches) are in [`limits`] and docs/graphql.md.

mod errors;
mod guard;
mod http;
pub mod limits;
pub mod mutation;
pub mod notifications;
pub mod query;
pub mod types;

use async_graphql::{Context, EmptySubscription, Schema};
use axum::routing::post;
use axum::Router;

use crate::auth::Caller;
use crate::preferences::{Interface, Who};
use crate::state::GatewayState;

pub use errors::{api_error, refusal, refused, CODE_RATE_LIMITED};
pub use http::PATH;

/// The schema type served at `/graphql`.
pub type ClarionSchema = Schema<query::Query, mutation::Mutation, EmptySubscription>;

/// The schema with its limits and the per-field scope check.
pub fn schema() -> ClarionSchema {
    Schema::build(query::Query, mutation::Mutation, EmptySubscription)
        .limit_depth(limits::MAX_DEPTH)
        .limit_complexity(limits::MAX_COMPLEXITY)
        .limit_recursive_depth(limits::MAX_PARSER_RECURSION)
        .limit_directives(limits::MAX_DIRECTIVES)
        .extension(guard::ScopeCheck)
        .finish()
}

/// The `/graphql` route. Not behind `access::rest_guard`: admission, scopes
/// and the rate limit are checked by the handler and the field guard, and
/// refusals are GraphQL-shaped.
pub fn routes(state: GatewayState) -> Router {
    Router::new()
        .route(PATH, post(http::serve))
        .with_state(http::Graphql {
            gateway: state,
            schema: schema(),
        })
}

/// What every resolver of one request shares: the gateway, who is asking,
/// and the request's headers (the notification read authenticates them
/// again, a cache hit).
pub(crate) struct Call {
    pub gateway: GatewayState,
    pub who: Who,
    pub headers: axum::http::HeaderMap,
}

impl Call {
    fn new(gateway: GatewayState, caller: &Caller, headers: axum::http::HeaderMap) -> Call {
        Call {
            gateway,
            who: who(caller),
            headers,
        }
    }

    fn of<'a>(ctx: &Context<'a>) -> async_graphql::Result<&'a Call> {
        ctx.data::<Call>()
    }
}

/// The one place an authenticated caller becomes the preference center's
/// `Who`.
fn who(caller: &Caller) -> Who {
    Who {
        tenant: caller.tenant.clone(),
        actor: caller.actor.clone(),
        interface: Interface::Graphql,
        // SUBSCRIBER TOKENS (branch prefs-api): when `auth::Caller` carries
        // `subscriber: Option<String>`, map it here
        // (`subscriber: caller.subscriber.clone()`): every preference
        // operation and `notification(id)` then reach only that subscriber.
        subscriber: None,
    }
}
