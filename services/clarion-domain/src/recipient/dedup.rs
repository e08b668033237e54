//! Content dedup: a workflow with a `dedup_window` suppresses a trigger
//! whose content (tenant, workflow, subscriber and payload) it accepted
//! within the window, naming the notification that had it first.
//!
//! The state is a mark per content hash: when it was accepted and as which
//! notification. The runtime keeps the marks of its partition in memory (a
//! duplicate in the same batch is not in the store yet) and as store rows
//! with the window as their TTL.

use serde_json::{json, Value};

use super::{Map, Pair};
use crate::flow::Flow;

/// When a content was accepted, and as which notification.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mark {
    pub at_ms: i64,
    /// `None` in a stored mark that lacks it (reported as `?`).
    pub notification_id: Option<String>,
}

impl Mark {
    /// The stored form: `{"at": ms, "notification_id": id}` (JSON).
    pub fn encode(&self) -> String {
        json!({"at": self.at_ms, "notification_id": self.notification_id}).to_string()
    }

    /// Reads a stored mark; a field missing or of another type reads as
    /// absent (time 0), as it always has.
    pub fn decode(b: &[u8]) -> Option<Mark> {
        let v: Value = serde_json::from_slice(b).ok()?;
        Some(Mark {
            at_ms: v["at"].as_i64().unwrap_or(0),
            notification_id: v["notification_id"].as_str().map(str::to_string),
        })
    }
}

/// The content hash of a trigger: what two triggers must share to be
/// duplicates (hex SHA-256, tenant first).
pub fn content_hash(
    tenant: &str,
    workflow_id: &str,
    subscriber_id: &str,
    payload: &Value,
) -> String {
    crate::tenant::sha256_hex(
        format!("{tenant}\n{workflow_id}\n{subscriber_id}\n{payload}").as_bytes(),
    )
}

/// What to do with a trigger of a workflow that dedups by content.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Seen within the window: the notification ends suppressed, with the reason.
    Duplicate { reason: String },
    /// New content: the run may start, and the content is marked (store it
    /// with the window as TTL, and evolve with [`Marked`]).
    Fresh(Mark),
}

/// Decides on a trigger whose content hash was last marked `seen` (if at
/// all), for a workflow whose `dedup_window` is `window_ms`.
pub fn decide(
    flow: &Flow,
    window_ms: u64,
    seen: Option<&Mark>,
    notification_id: &str,
    now_ms: i64,
) -> Decision {
    match seen.filter(|m| now_ms - m.at_ms < window_ms as i64) {
        Some(prev) => Decision::Duplicate {
            reason: format!(
                "same content as notification {} within the {} dedup window",
                prev.notification_id.as_deref().unwrap_or("?"),
                flow.def.dedup_window.as_deref().unwrap_or_default()
            ),
        },
        None => Decision::Fresh(Mark {
            at_ms: now_ms,
            notification_id: Some(notification_id.to_string()),
        }),
    }
}

/// Content marks by `(tenant, hash)`.
#[derive(Debug, Default)]
pub struct Marks {
    map: Map<(String, String), Mark>,
}

/// A content accepted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Marked {
    pub tenant: String,
    pub hash: String,
    pub mark: Mark,
}

impl Marks {
    /// The mark of a content hash, if this partition has it in memory.
    pub fn get(&self, tenant: &str, hash: &str) -> Option<&Mark> {
        self.map.get(&Pair(tenant, hash))
    }

    pub(super) fn evolve(&mut self, e: Marked) {
        self.map.insert((e.tenant, e.hash), e.mark);
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// Forgets every mark (the store keeps them for their window).
    pub fn clear(&mut self) {
        self.map.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn marks_keep_their_stored_form() {
        let m = Mark {
            at_ms: 1_700_000_000_123,
            notification_id: Some("0190aa".into()),
        };
        // Rows written by earlier releases read alike, and new ones are
        // byte for byte what they wrote (json! keys sort).
        assert_eq!(
            m.encode(),
            r#"{"at":1700000000123,"notification_id":"0190aa"}"#
        );
        assert_eq!(Mark::decode(m.encode().as_bytes()), Some(m));
        assert_eq!(
            Mark::decode(br#"{"at":"soon"}"#),
            Some(Mark {
                at_ms: 0,
                notification_id: None
            })
        );
        assert_eq!(Mark::decode(b"not json"), None);
    }

    #[test]
    fn the_hash_covers_tenant_workflow_subscriber_and_payload() {
        let p = json!({"a": 1});
        let h = content_hash("acme", "w", "s", &p);
        assert_eq!(h.len(), 64);
        assert_eq!(h, content_hash("acme", "w", "s", &json!({"a": 1})));
        assert_ne!(h, content_hash("globex", "w", "s", &p));
        assert_ne!(h, content_hash("acme", "v", "s", &p));
        assert_ne!(h, content_hash("acme", "w", "t", &p));
        assert_ne!(h, content_hash("acme", "w", "s", &json!({"a": 2})));
    }
}
