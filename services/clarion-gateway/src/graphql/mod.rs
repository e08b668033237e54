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

/// Whether a caller may send GraphQL at all: a subscriber token (its
/// fields are checked one by one), or a key with a scope some field accepts.
pub(crate) fn admits(caller: &Caller) -> Result<(), crate::error::ApiError> {
    if who(caller).subscriber.is_some() {
        return Ok(());
    }
    crate::access::require_any(caller.grant.scopes, &crate::access::graphql_any_scope())
}

/// The one place an authenticated caller becomes the preference center's
/// `Who` (and so whether it is a subscriber token: admission and the field
/// guard read it from here).
fn who(caller: &Caller) -> Who {
    Who {
        tenant: caller.tenant.clone(),
        actor: caller.actor.clone(),
        interface: Interface::Graphql,
        // A subscriber token: every operation reaches only its subscriber.
        subscriber: caller.subscriber.clone(),
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;
    use std::sync::{Arc, Mutex};

    use async_graphql::extensions::{
        Extension, ExtensionContext, ExtensionFactory, NextValidation,
    };
    use async_graphql::{ServerError, ValidationResult};

    use super::*;
    use crate::access::GRAPHQL_FIELDS;

    const INTROSPECTION: &str = include_str!("testdata/introspection.graphql");

    async fn run(schema: &ClarionSchema, query: &str) -> serde_json::Value {
        let mut r = schema.execute(query).await;
        errors::label(&mut r);
        serde_json::to_value(&r).unwrap()
    }

    fn names(v: &serde_json::Value) -> BTreeSet<String> {
        v.as_array()
            .unwrap()
            .iter()
            .map(|f| f["name"].as_str().unwrap().to_string())
            .collect()
    }

    #[tokio::test]
    async fn every_root_field_has_exactly_one_rule_and_every_rule_a_field() {
        let schema = schema();
        let r = run(
            &schema,
            "{ __schema { queryType { fields { name } } mutationType { fields { name } } }
               subscriber: __type(name: \"Subscriber\") { fields { name } } }",
        )
        .await;
        assert!(r.get("errors").is_none(), "{r}");
        let s = &r["data"]["__schema"];
        let mut roots = BTreeSet::new();
        for (ty, key) in [("Query", "queryType"), ("Mutation", "mutationType")] {
            for f in names(&s[key]["fields"]) {
                roots.insert(format!("{ty}.{f}"));
            }
        }
        let rules: BTreeSet<String> = GRAPHQL_FIELDS.iter().map(|(f, _)| f.to_string()).collect();
        assert_eq!(rules.len(), GRAPHQL_FIELDS.len(), "a field is listed twice");
        let missing: Vec<_> = roots.difference(&rules).collect();
        assert!(
            missing.is_empty(),
            "root fields without a rule: {missing:?}"
        );
        let subscriber_fields = names(&r["data"]["subscriber"]["fields"]);
        for rule in &rules {
            let (ty, field) = rule.split_once('.').unwrap();
            let exists = match ty {
                "Query" | "Mutation" => roots.contains(rule),
                "Subscriber" => subscriber_fields.contains(field),
                _ => false,
            };
            assert!(exists, "a rule for a field that does not exist: {rule}");
        }
        // Mutations need the preferences scope, never read alone.
        for (field, scopes) in GRAPHQL_FIELDS {
            if field.starts_with("Mutation.") {
                assert_eq!(
                    *scopes,
                    [clarion_domain::tenant::Scope::Preferences],
                    "{field}"
                );
            }
        }
    }

    /// Records the depth and complexity validation computed.
    #[derive(Clone, Default)]
    struct Measure(Arc<Mutex<Option<(usize, usize)>>>);

    impl ExtensionFactory for Measure {
        fn create(&self) -> Arc<dyn Extension> {
            Arc::new(self.clone())
        }
    }

    #[async_trait::async_trait]
    impl Extension for Measure {
        async fn validation(
            &self,
            ctx: &ExtensionContext<'_>,
            next: NextValidation<'_>,
        ) -> Result<ValidationResult, Vec<ServerError>> {
            let r = next.run(ctx).await;
            if let Ok(v) = &r {
                *self.0.lock().unwrap() = Some((v.depth, v.complexity));
            }
            r
        }
    }

    async fn measure(query: &str) -> (usize, usize) {
        let m = Measure::default();
        let unlimited = Schema::build(query::Query, mutation::Mutation, EmptySubscription)
            .extension(m.clone())
            .finish();
        let _ = unlimited.execute(query).await;
        let got = *m.0.lock().unwrap();
        got.expect("the query validated")
    }

    #[tokio::test]
    async fn tools_introspect_within_the_limits_and_deeper_or_costlier_queries_are_refused() {
        let (depth, complexity) = measure(INTROSPECTION).await;
        println!("introspection: depth {depth}, complexity {complexity}");
        assert!((13..=limits::MAX_DEPTH).contains(&depth), "{depth}");
        assert!(complexity <= limits::MAX_COMPLEXITY / 2, "{complexity}");
        let schema = schema();
        let r = run(&schema, INTROSPECTION).await;
        assert!(r.get("errors").is_none(), "{}", r["errors"]);
        assert!(r["data"]["__schema"]["types"].as_array().unwrap().len() > 20);

        // Introspection is recursive: nesting it past the limit is refused.
        let mut deep = String::from("{ __schema { types { name } } __type(name: \"Query\") { ");
        deep.push_str(&"fields { type { ".repeat(8));
        deep.push_str("name");
        deep.push_str(&" } }".repeat(8));
        deep.push_str(" } }");
        assert!(measure(&deep).await.0 > limits::MAX_DEPTH);
        let r = run(&schema, &deep).await;
        assert_eq!(
            r["errors"][0]["extensions"]["code"], "QUERY_TOO_DEEP",
            "{r}"
        );
        let msg = r["errors"][0]["message"].as_str().unwrap();
        assert!(msg.contains(&limits::MAX_DEPTH.to_string()), "{msg}");
        assert!(r["data"].is_null(), "nothing ran: {r}");

        // Aliases repeat a store read: a hundred are refused.
        let many: String = (0..100)
            .map(|i| format!("t{i}: topics {{ id name }} "))
            .collect();
        let many = format!("{{ {many} }}");
        assert!(measure(&many).await.1 > limits::MAX_COMPLEXITY);
        let r = run(&schema, &many).await;
        assert_eq!(
            r["errors"][0]["extensions"]["code"], "QUERY_TOO_COMPLEX",
            "{r}"
        );

        // A preference-center screen in one request fits easily.
        let screen = "{ topics { id name description channels required marketing defaultOptIn }
            subscriber(id: \"s\") { id preferences { marketing channels { channel value }
              topics { topicId enabled channels { channel value } }
              contacts { channel value verified codeExpiresAtMs } } }
            preferenceHistory(subscriberId: \"s\", first: 20) { nextCursor
              entries { eventId atMs kind interface actor changes { path old new } } } }";
        let (depth, complexity) = measure(screen).await;
        assert!(
            depth <= 5 && complexity < limits::MAX_COMPLEXITY / 5,
            "{depth} {complexity}"
        );
        println!("settings screen: depth {depth}, complexity {complexity}");
        // Nine mutations in one request at most.
        let writes = |n: usize| -> String {
            let ms: String = (0..n)
                .map(|i| format!("m{i}: updatePreferences(subscriberId: \"s\", changes: []) {{ marketing }} "))
                .collect();
            format!("mutation {{ {ms} }}")
        };
        let r = run(&schema, &writes(10)).await;
        assert_eq!(
            r["errors"][0]["extensions"]["code"], "QUERY_TOO_COMPLEX",
            "{r}"
        );
        let r = run(&schema, &writes(9)).await;
        // Past the limits; here it stops at the missing caller.
        assert_eq!(
            r["errors"][0]["extensions"]["code"], "UNAUTHENTICATED",
            "{r}"
        );
    }

    #[tokio::test]
    async fn a_request_without_a_caller_resolves_no_data_field() {
        // The handler always adds the caller; without one the field guard
        // refuses rather than resolving with no tenant.
        let r = run(&schema(), "{ topics { id } }").await;
        assert_eq!(
            r["errors"][0]["extensions"]["code"], "UNAUTHENTICATED",
            "{r}"
        );
        assert_eq!(r["errors"][0]["path"][0], "topics", "{r}");
    }
}
