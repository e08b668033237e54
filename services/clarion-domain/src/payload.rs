//! A trigger's payload as the router holds it.
//!
//! One Trigger request names many recipients, and each recipient is a
//! notification of its own with its own `Triggered` event, but they all
//! carry the same payload. Parsed once and shared, the runs of one request
//! hold one tree, and templates see it converted once: parsing, converting
//! for minijinja and dropping a tree per recipient were together about 4 %
//! of the server's time at 50 recipients a request (docs/benchmarks.md).

use std::ops::Deref;
use std::sync::{Arc, OnceLock};

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::Value;

/// An immutable JSON payload, cheap to clone. Serializes as the JSON value
/// it holds, so stored run records read the same with or without sharing.
#[derive(Clone)]
pub struct SharedPayload(Arc<Inner>);

struct Inner {
    json: Value,
    /// The payload as templates see it, made on first use.
    template: OnceLock<minijinja::Value>,
}

impl SharedPayload {
    pub fn new(json: Value) -> SharedPayload {
        SharedPayload(Arc::new(Inner {
            json,
            template: OnceLock::new(),
        }))
    }

    /// Parses a producer's payload text; text that does not parse is an
    /// empty object (the gateway rejects it before it is ever logged, so
    /// this is only the log's older records).
    pub fn parse(text: &str) -> SharedPayload {
        SharedPayload::new(
            serde_json::from_str(text).unwrap_or_else(|_| Value::Object(Default::default())),
        )
    }

    pub fn json(&self) -> &Value {
        &self.0.json
    }

    /// The payload as a template variable, converted once for every run
    /// that shares it.
    pub fn template_value(&self) -> minijinja::Value {
        self.0
            .template
            .get_or_init(|| minijinja::Value::from_serialize(&self.0.json))
            .clone()
    }

    /// Whether both hold the very same tree (not merely equal ones).
    pub fn shares(&self, other: &SharedPayload) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

impl Deref for SharedPayload {
    type Target = Value;
    fn deref(&self) -> &Value {
        &self.0.json
    }
}

impl PartialEq for SharedPayload {
    fn eq(&self, other: &SharedPayload) -> bool {
        self.shares(other) || self.0.json == other.0.json
    }
}

impl std::fmt::Debug for SharedPayload {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.json.fmt(f)
    }
}

impl From<Value> for SharedPayload {
    fn from(json: Value) -> SharedPayload {
        SharedPayload::new(json)
    }
}

impl Serialize for SharedPayload {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.0.json.serialize(s)
    }
}

impl<'de> Deserialize<'de> for SharedPayload {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<SharedPayload, D::Error> {
        Value::deserialize(d).map(SharedPayload::new)
    }
}

/// Parses each distinct payload text once while the same text repeats: the
/// `Triggered` events of one request come one after another in a partition.
#[derive(Default)]
pub struct PayloadCache {
    last: Option<(String, SharedPayload)>,
}

impl PayloadCache {
    pub fn get(&mut self, text: &str) -> SharedPayload {
        match &self.last {
            Some((t, p)) if t == text => p.clone(),
            _ => {
                let p = SharedPayload::parse(text);
                self.last = Some((text.to_string(), p.clone()));
                p
            }
        }
    }

    /// Lets go of the last payload (between batches: a cached tree should
    /// not outlive the runs that share it by long).
    pub fn clear(&mut self) {
        self.last = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_same_text_in_a_row_is_parsed_once_and_shared() {
        let mut cache = PayloadCache::default();
        let a = cache.get(r#"{"day":"Friday"}"#);
        let b = cache.get(r#"{"day":"Friday"}"#);
        assert!(a.shares(&b));
        let c = cache.get(r#"{"day":"Monday"}"#);
        assert!(!c.shares(&a));
        assert_eq!(c["day"], "Monday");
        // Equal trees compare equal whether shared or not.
        assert_eq!(a, SharedPayload::new(json!({"day": "Friday"})));
        assert_ne!(a, c);
        cache.clear();
        assert!(!cache.get(r#"{"day":"Friday"}"#).shares(&a));
        // Text that does not parse is an empty object.
        assert_eq!(*cache.get("{nope").json(), json!({}));
    }

    #[test]
    fn serializes_as_the_value_it_holds() {
        let p = SharedPayload::new(json!({"n": 3, "x": [1.5, null]}));
        let packed = rmp_serde::to_vec(&p).unwrap();
        assert_eq!(packed, rmp_serde::to_vec(p.json()).unwrap());
        let back: SharedPayload = rmp_serde::from_slice(&packed).unwrap();
        assert_eq!(back, p);
        assert_eq!(
            serde_json::to_string(&p).unwrap(),
            r#"{"n":3,"x":[1.5,null]}"#
        );
    }

    #[test]
    fn templates_see_the_payload_converted_once() {
        let p = SharedPayload::new(json!({"day": "Friday"}));
        let q = p.clone();
        let v = p.template_value();
        assert_eq!(v.get_attr("day").unwrap().as_str(), Some("Friday"));
        // The clone shares the conversion made for the original.
        assert!(q.0.template.get().is_some());
    }
}
