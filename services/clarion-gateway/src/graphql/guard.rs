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

use super::errors::api_error;
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
        if let Err(e) = allowed(ctx.data_opt::<Caller>(), &info) {
            let pos = info.field.name.pos;
            let mut err: ServerError = api_error(e, str::to_string).into_server_error(pos);
            err.path = path_of(info.path_node);
            return Err(err);
        }
        next.run(ctx, info).await
    }
}

/// Whether `caller` may resolve the field `info` names.
fn allowed(caller: Option<&Caller>, info: &ResolveInfo<'_>) -> Result<(), ApiError> {
    let root = ROOTS.contains(&info.parent_type) && info.path_node.parent.is_none();
    // Introspection (`__schema`, `__type` and what is below them) describes
    // the schema, not a tenant's data.
    if info.is_for_introspection || (root && info.name.starts_with("__")) {
        return Ok(());
    }
    let field = format!("{}.{}", info.parent_type, info.name);
    let scopes = match access::graphql_scopes(&field) {
        Some(s) => s,
        None if root => {
            return Err(ApiError::PermissionDenied(format!(
                "{field} has no access rule on this gateway"
            )))
        }
        None => return Ok(()),
    };
    let caller = caller.ok_or_else(|| ApiError::Unauthenticated("no API key".into()))?;
    access::require_any(caller, scopes)
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
