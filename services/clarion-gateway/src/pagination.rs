//! Cursor pagination of REST lists: `?limit=&cursor=` in, `next_cursor`
//! out (absent on the last page).
//!
//! A cursor is opaque to clients: base64url of a version byte, a binding
//! to the list it came from, and the position (the store clustering key of
//! the last item given). The binding is a hash of the tenant and the list
//! (e.g. one subscriber's notifications), so a cursor presented on another
//! list or by another tenant is refused with 400 naming `cursor`. A forged
//! cursor gains nothing: lists are always read in the caller's own tenant
//! partition, so a position can only point into the caller's own rows.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use clarion_domain::Violations;
use serde::Deserialize;
use sha2::{Digest, Sha256};
use utoipa::IntoParams;

use crate::error::ApiError;

/// Items per page when the request does not say.
pub const DEFAULT_LIMIT: u32 = 50;
/// Most items per page.
pub const MAX_LIMIT: u32 = 200;

const VERSION: u8 = 1;
const BINDING_BYTES: usize = 8;
/// Longest position a cursor carries (clustering keys are short).
const MAX_POSITION_BYTES: usize = 512;

/// `?limit=&cursor=` of every list route.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct PageParams {
    /// Items per page (default 50).
    #[param(minimum = 1, maximum = 200)]
    pub limit: Option<u32>,
    /// `next_cursor` of the previous page; absent for the first page.
    #[param(pattern = "^[A-Za-z0-9_-]*$")]
    pub cursor: Option<String>,
}

/// What a list read needs: how many items, after which position.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Page {
    pub limit: usize,
    /// Clustering key of the last item already given.
    pub after: Option<Vec<u8>>,
}

/// The list a cursor is bound to.
#[derive(Debug, Clone, Copy)]
pub struct List<'a> {
    pub tenant: &'a str,
    /// The list and its scope, e.g. `dead-letters` or `subscriber-notifications/<id>`.
    pub name: &'a str,
}

impl List<'_> {
    fn binding(&self) -> [u8; BINDING_BYTES] {
        let mut h = Sha256::new();
        h.update(self.tenant.as_bytes());
        h.update([0]);
        h.update(self.name.as_bytes());
        let digest = h.finalize();
        let mut out = [0; BINDING_BYTES];
        out.copy_from_slice(&digest[..BINDING_BYTES]);
        out
    }

    /// Checks `params` and decodes their cursor.
    pub fn page(&self, params: &PageParams) -> Result<Page, ApiError> {
        let limit = match params.limit {
            None => DEFAULT_LIMIT,
            Some(n) if (1..=MAX_LIMIT).contains(&n) => n,
            Some(n) => {
                return Err(Violations::single(
                    "limit",
                    format!("is {n}: must be between 1 and {MAX_LIMIT}"),
                )
                .into())
            }
        };
        let after = match params.cursor.as_deref() {
            None | Some("") => None,
            Some(c) => Some(self.decode(c)?),
        };
        Ok(Page {
            limit: limit as usize,
            after,
        })
    }

    fn decode(&self, cursor: &str) -> Result<Vec<u8>, ApiError> {
        let bad = |why: &str| ApiError::from(Violations::single("cursor", why));
        let raw = URL_SAFE_NO_PAD
            .decode(cursor)
            .map_err(|_| bad("is not a cursor this API gave (not base64url)"))?;
        if raw.len() <= BINDING_BYTES || raw[0] != VERSION {
            return Err(bad("is not a cursor this API gave"));
        }
        if raw[1..=BINDING_BYTES] != self.binding() {
            return Err(bad(
                "belongs to another list: pass the next_cursor of a page of this list",
            ));
        }
        Ok(raw[1 + BINDING_BYTES..].to_vec())
    }

    /// The cursor of the page after the one ending at `position`.
    pub fn cursor(&self, position: &[u8]) -> String {
        let mut raw = Vec::with_capacity(1 + BINDING_BYTES + position.len());
        raw.push(VERSION);
        raw.extend_from_slice(&self.binding());
        raw.extend_from_slice(&position[..position.len().min(MAX_POSITION_BYTES)]);
        URL_SAFE_NO_PAD.encode(raw)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(limit: Option<u32>, cursor: Option<&str>) -> PageParams {
        PageParams {
            limit,
            cursor: cursor.map(str::to_string),
        }
    }

    fn field(e: ApiError) -> String {
        match e {
            ApiError::Invalid(v) => v.0[0].field.clone(),
            other => panic!("expected a violation, got {other:?}"),
        }
    }

    #[test]
    fn a_cursor_round_trips_on_its_own_list_only() {
        let acme = List {
            tenant: "acme",
            name: "dead-letters",
        };
        let c = acme.cursor(b"0193abc");
        assert!(c
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'));
        let page = acme.page(&params(Some(10), Some(&c))).unwrap();
        assert_eq!(page.after.as_deref(), Some(&b"0193abc"[..]));
        assert_eq!(page.limit, 10);

        // Another tenant, or another list of the same tenant: refused.
        let globex = List {
            tenant: "globex",
            name: "dead-letters",
        };
        assert_eq!(
            field(globex.page(&params(None, Some(&c))).unwrap_err()),
            "cursor"
        );
        let other = List {
            tenant: "acme",
            name: "subscriber-notifications/ana",
        };
        assert_eq!(
            field(other.page(&params(None, Some(&c))).unwrap_err()),
            "cursor"
        );
        // Garbage and truncations.
        for bad in ["%%%", "AQ", "", "bm90IGEgY3Vyc29y"] {
            let got = acme.page(&params(None, Some(bad)));
            if bad.is_empty() {
                assert_eq!(got.unwrap().after, None);
            } else {
                assert_eq!(field(got.unwrap_err()), "cursor", "{bad}");
            }
        }
    }

    #[test]
    fn limits_default_and_are_bounded() {
        let l = List {
            tenant: "acme",
            name: "x",
        };
        assert_eq!(l.page(&params(None, None)).unwrap().limit, 50);
        assert_eq!(l.page(&params(Some(200), None)).unwrap().limit, 200);
        assert_eq!(field(l.page(&params(Some(0), None)).unwrap_err()), "limit");
        assert_eq!(
            field(l.page(&params(Some(201), None)).unwrap_err()),
            "limit"
        );
    }
}
