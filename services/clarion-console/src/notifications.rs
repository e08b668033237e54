//! (Issue #29: to be built; see docs/console.md.)

use axum::Router;

use crate::Console;

/// This module's templates (name, source), added to the console's set.
pub const TEMPLATES: &[(&str, &str)] = &[];

pub fn routes() -> Router<Console> {
    Router::new()
}
