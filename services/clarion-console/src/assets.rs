//! The console's stylesheet and script, compiled into the binary. Their
//! URLs carry a digest of their content, so they are cached for a year and
//! a new release never meets a stale copy.

use std::sync::OnceLock;

use axum::extract::Path;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;

use crate::Console;

const CSS: &str = include_str!("../assets/console.css");
const JS: &str = include_str!("../assets/console.js");

pub fn routes() -> Router<Console> {
    Router::new().route("/assets/:name", get(asset))
}

/// A short digest of an asset (its cache-busting name).
fn digest(body: &str) -> String {
    clarion_domain::tenant::sha256_hex(body.as_bytes())[..12].to_string()
}

/// The versioned names of the stylesheet and the script.
pub fn names() -> &'static (String, String) {
    static NAMES: OnceLock<(String, String)> = OnceLock::new();
    NAMES.get_or_init(|| {
        (
            format!("console.{}.css", digest(CSS)),
            format!("console.{}.js", digest(JS)),
        )
    })
}

async fn asset(Path(name): Path<String>) -> Response {
    let (css, js) = names();
    let (body, kind) = if name == *css {
        (CSS, "text/css; charset=utf-8")
    } else if name == *js {
        (JS, "text/javascript; charset=utf-8")
    } else {
        return (StatusCode::NOT_FOUND, "no such asset").into_response();
    };
    (
        [
            (header::CONTENT_TYPE, kind),
            (header::CACHE_CONTROL, "public, max-age=31536000, immutable"),
        ],
        body,
    )
        .into_response()
}
