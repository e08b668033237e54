//! What one GraphQL request may cost (docs/graphql.md, docs/limits.md).
//!
//! Clarion's own types are shallow (six levels at most) and not
//! recursive; introspection is (`__Type.ofType`, `fields.type.fields`…),
//! and aliases repeat a field as often as one likes. The depth limit bounds
//! the first, the complexity limit the second; the body bound caps what the
//! parser sees, and batches are refused, so one HTTP request is one
//! operation against the tenant's rate limit.

/// Levels of nested fields. The standard introspection query (graphql-js
/// 16, as GraphiQL, Apollo and Postman send it) is 13 deep.
pub const MAX_DEPTH: usize = 15;

/// The sum of the fields' costs: 1 per field, more for fields that read
/// the store ([`STORE_READ`]) or write ([`WRITE`]); a list whose items each
/// cost a read (a subscriber's notifications) counts its items times the
/// page size. The standard introspection query costs 181.
pub const MAX_COMPLEXITY: usize = 1000;

/// The parser's nesting of selection sets, lists and objects (below the
/// depth limit's count, it bounds the parser's own recursion).
pub const MAX_PARSER_RECURSION: usize = 32;

/// Directives on one field.
pub const MAX_DIRECTIVES: usize = 8;

/// A request body (query text and variables). The largest useful one, an
/// `updatePreferences` with 100 changes, is under 16 KiB.
pub const MAX_BODY_BYTES: usize = 64 * 1024;

/// What a field that reads the store adds to the complexity.
pub const STORE_READ: usize = 10;

/// What a mutation adds: each one is an event appended and waited for, so
/// one request holds at most `MAX_COMPLEXITY / WRITE` of them.
pub const WRITE: usize = 100;

/// Most notifications one page of a subscriber's notifications returns:
/// each is read with its history.
pub const MAX_NOTIFICATIONS_PAGE: i32 = 50;
