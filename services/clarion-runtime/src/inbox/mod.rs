//! The in-app inbox's read side: the feed projection
//! ([`projection::InboxProjector`]), its rows and the reads the gateway
//! serves from them ([`rows`]), and the hub that wakes live streams
//! ([`hub::InboxHub`]). docs/inbox.md describes the model.

pub mod hub;
mod pending;
pub mod projection;
pub mod rows;

pub use hub::{HubEffects, InboxHub};
pub use projection::{InboxProjector, Mark, INBOX_PROJECTOR};
