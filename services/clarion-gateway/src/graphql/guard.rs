//! The scope of every field, checked as it resolves: the GraphQL side of
//! `access::GRAPHQL_FIELDS`, as the tower layer and the REST middleware
//! are for gRPC methods and REST routes. An extension rather than a guard
//! per resolver so that a root field without a rule is refused, not
//! forgotten.

use std::sync::Arc;

use async_graphql::extensions::{
    Extension, ExtensionContext, ExtensionFactory, NextResolve, ResolveInfo,
};
use async_graphql::{
    PathSegment, QueryPathNode, QueryPathSegment, ServerError, ServerResult, Value,
};

use clarion_domain::tenant::Scopes;

use super::errors::api_error;
use super::Call;
use crate::access;
use crate::auth::Caller;
use crate::error::ApiError;

pub struct ScopeCheck;

impl ExtensionFactory for ScopeCheck {
    fn create(&self) -> Arc<dyn Extension> {
        Arc::new(ScopeCheck)
    }
}

/// The root types' names.
const ROOTS: [&str; 2] = ["Query", "Mutation"];

#[async_trait::async_trait]
impl Extension for ScopeCheck {
    async fn resolve(
        &self,
        ctx: &ExtensionContext<'_>,
        info: ResolveInfo<'_>,
        next: NextResolve<'_>,
    ) -> ServerResult<Option<Value>> {
        let root = ROOTS.contains(&info.parent_type) && info.path_node.parent.is_none();
        // Introspection (`__schema`, `__type` and what is below them)
        // describes the schema, not a tenant's data.
        if !(info.is_for_introspection || (root && info.name.starts_with("__"))) {
            let field = format!("{}.{}", info.parent_type, info.name);
            let asker =
                ctx.data_opt::<Call>()
                    .zip(ctx.data_opt::<Caller>())
                    .map(|(call, caller)| Asker {
                        scopes: caller.grant.scopes,
                        subscriber_token: call.who.subscriber.is_some(),
                    });
            if let Err(e) = decide(&field, root, asker) {
                let mut err: ServerError =
                    api_error(e, str::to_string).into_server_error(info.field.name.pos);
                err.path = path_of(info.path_node);
                return Err(err);
            }
        }
        next.run(ctx, info).await
    }
}

/// What the field check needs to know of who asks.
#[derive(Clone, Copy, Debug)]
struct Asker {
    scopes: Scopes,
    subscriber_token: bool,
}

/// Whether `asker` may resolve `field` (`Type.field`; `root`: a field of
/// Query or Mutation). A root field without a rule is refused; a nested
/// one without a rule needs nothing beyond its root's.
fn decide(field: &str, root: bool, asker: Option<Asker>) -> Result<(), ApiError> {
    let scopes = match access::graphql_scopes(field) {
        Some(s) => s,
        None if root => {
            return Err(ApiError::PermissionDenied(format!(
                "{field} has no access rule on this gateway"
            )))
        }
        None => return Ok(()),
    };
    let asker = asker.ok_or_else(|| ApiError::Unauthenticated("no API key".into()))?;
    if asker.subscriber_token {
        return if access::GRAPHQL_SUBSCRIBER_FIELDS.contains(&field) {
            Ok(())
        } else {
            Err(ApiError::PermissionDenied(format!(
                "a subscriber token reaches only its subscriber's preferences: {field} needs an API key"
            )))
        };
    }
    access::require_any(asker.scopes, scopes)
}

/// The response path of the field (`["subscriber", "notifications"]`).
fn path_of(node: &QueryPathNode<'_>) -> Vec<PathSegment> {
    let mut nodes: Vec<&QueryPathNode<'_>> = std::iter::once(node).chain(node.parents()).collect();
    nodes.reverse();
    nodes
        .into_iter()
        .map(|n| match n.segment {
            QueryPathSegment::Index(i) => PathSegment::Index(i),
            QueryPathSegment::Name(s) => PathSegment::Field(s.to_string()),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use clarion_domain::tenant::Scope::{self, Admin, Preferences, Read, Trigger};

    fn key(scopes: &[Scope]) -> Option<Asker> {
        Some(Asker {
            scopes: Scopes::of(scopes),
            subscriber_token: false,
        })
    }

    fn code(r: Result<(), ApiError>) -> &'static str {
        match r {
            Ok(()) => "OK",
            Err(e) => super::super::errors::code(&e),
        }
    }

    #[test]
    fn each_field_needs_its_scope() {
        assert_eq!(code(decide("Query.subscriber", true, key(&[Read]))), "OK");
        assert_eq!(
            code(decide("Query.subscriber", true, key(&[Preferences]))),
            "OK"
        );
        assert_eq!(
            code(decide("Query.subscriber", true, key(&[Trigger, Admin]))),
            "PERMISSION_DENIED"
        );
        assert_eq!(
            code(decide("Mutation.updatePreferences", true, key(&[Read]))),
            "PERMISSION_DENIED"
        );
        assert_eq!(
            code(decide(
                "Mutation.updatePreferences",
                true,
                key(&[Preferences])
            )),
            "OK"
        );
        assert_eq!(
            code(decide(
                "Subscriber.notifications",
                false,
                key(&[Preferences])
            )),
            "PERMISSION_DENIED"
        );
        // Fields below a root field need nothing more unless listed.
        assert_eq!(
            code(decide("Subscriber.preferences", false, key(&[Preferences]))),
            "OK"
        );
        // Fails closed: a root field without a rule, a request without a caller.
        assert_eq!(
            code(decide("Query.secret", true, key(&[Read, Admin]))),
            "PERMISSION_DENIED"
        );
        assert_eq!(code(decide("Query.topics", true, None)), "UNAUTHENTICATED");
    }

    #[test]
    fn a_subscriber_token_reaches_only_its_fields() {
        let token = Some(Asker {
            scopes: Scopes::default(),
            subscriber_token: true,
        });
        for f in access::GRAPHQL_SUBSCRIBER_FIELDS {
            assert_eq!(code(decide(f, true, token)), "OK", "{f}");
        }
        for f in [
            "Query.evaluate",
            "Query.notification",
            "Query.notifications",
            "Mutation.registerTopic",
        ] {
            assert_eq!(code(decide(f, true, token)), "PERMISSION_DENIED", "{f}");
        }
        assert_eq!(
            code(decide("Subscriber.notifications", false, token)),
            "PERMISSION_DENIED"
        );
    }
}
