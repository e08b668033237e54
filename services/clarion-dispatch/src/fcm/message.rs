//! The HTTP v1 message: `{"message": {"token", "notification", "data",
//! "android", "apns", "webpush"}}`. Override blocks are serialized only when
//! asked for; FCM's own defaults apply otherwise.

use std::collections::BTreeMap;

use serde::Serialize;

/// FCM refuses these data keys (they collide with its own fields).
const RESERVED_KEYS: &[&str] = &["from", "notification", "message_type"];
const RESERVED_PREFIXES: &[&str] = &["google", "gcm"];

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DataError {
    #[error("{field}: FCM data values are strings; {kind} cannot be converted")]
    NotAString { field: String, kind: &'static str },
    #[error("{field}: reserved by FCM")]
    ReservedKey { field: String },
    #[error("data: must be a JSON object of strings")]
    NotAnObject,
}

/// FCM `data` from a JSON object: strings as-is, numbers and booleans
/// written as JSON would (`3`, `true`), anything else refused with the
/// offending field named, since a silent `"[object]"` would break the app.
pub fn data_from_json(value: &serde_json::Value) -> Result<BTreeMap<String, String>, DataError> {
    use serde_json::Value;
    let obj = value.as_object().ok_or(DataError::NotAnObject)?;
    let mut out = BTreeMap::new();
    for (k, v) in obj {
        let field = format!("data.{k}");
        let lower = k.to_ascii_lowercase();
        if RESERVED_KEYS.contains(&lower.as_str())
            || RESERVED_PREFIXES.iter().any(|p| lower.starts_with(p))
        {
            return Err(DataError::ReservedKey { field });
        }
        let s = match v {
            Value::String(s) => s.clone(),
            Value::Number(n) => n.to_string(),
            Value::Bool(b) => b.to_string(),
            Value::Null => {
                return Err(DataError::NotAString {
                    field,
                    kind: "null",
                })
            }
            Value::Array(_) => {
                return Err(DataError::NotAString {
                    field,
                    kind: "an array",
                })
            }
            Value::Object(_) => {
                return Err(DataError::NotAString {
                    field,
                    kind: "an object",
                })
            }
        };
        out.insert(k.clone(), s);
    }
    Ok(out)
}

#[derive(Clone, Debug, Default, Serialize, PartialEq)]
pub struct Notification {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub body: Option<String>,
}

#[derive(Clone, Copy, Debug, Serialize, PartialEq, Eq)]
#[serde(rename_all = "UPPERCASE")]
pub enum AndroidPriority {
    Normal,
    High,
}

#[derive(Clone, Debug, Default, Serialize, PartialEq)]
pub struct AndroidNotification {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub channel_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sound: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub title_loc_key: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub body_loc_key: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub title_loc_args: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub body_loc_args: Vec<String>,
}

#[derive(Clone, Debug, Default, Serialize, PartialEq)]
pub struct AndroidConfig {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub priority: Option<AndroidPriority>,
    /// Seconds FCM keeps the message for an offline device; sent as the
    /// protobuf Duration string (`"3600s"`).
    #[serde(
        skip_serializing_if = "Option::is_none",
        serialize_with = "duration_seconds"
    )]
    pub ttl: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub collapse_key: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub notification: Option<AndroidNotification>,
}

fn duration_seconds<S: serde::Serializer>(ttl: &Option<u64>, s: S) -> Result<S::Ok, S::Error> {
    match ttl {
        Some(secs) => s.serialize_str(&format!("{secs}s")),
        None => s.serialize_none(),
    }
}

/// The `apns` block: what FCM forwards to Apple for iOS tokens.
#[derive(Clone, Debug, Default, Serialize, PartialEq)]
pub struct ApnsOverride {
    /// e.g. `apns-priority`, `apns-collapse-id`.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub headers: BTreeMap<String, String>,
    /// The APNs payload (`{"aps": {"sound", "badge"}}`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub payload: Option<serde_json::Value>,
}

impl ApnsOverride {
    /// The common case: a sound and a badge count.
    pub fn aps(sound: Option<&str>, badge: Option<u32>) -> ApnsOverride {
        let mut aps = serde_json::Map::new();
        if let Some(s) = sound {
            aps.insert("sound".into(), s.into());
        }
        if let Some(b) = badge {
            aps.insert("badge".into(), b.into());
        }
        ApnsOverride {
            headers: BTreeMap::new(),
            payload: Some(serde_json::json!({ "aps": aps })),
        }
    }
}

#[derive(Clone, Debug, Default, Serialize, PartialEq)]
pub struct WebpushConfig {
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub headers: BTreeMap<String, String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub notification: Option<serde_json::Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fcm_options: Option<serde_json::Value>,
}

/// One message to one registration token.
#[derive(Clone, Debug, Default, Serialize, PartialEq)]
pub struct FcmMessage {
    pub token: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub notification: Option<Notification>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub data: BTreeMap<String, String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub android: Option<AndroidConfig>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub apns: Option<ApnsOverride>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub webpush: Option<WebpushConfig>,
}

impl FcmMessage {
    pub fn new(token: impl Into<String>) -> FcmMessage {
        FcmMessage {
            token: token.into(),
            ..FcmMessage::default()
        }
    }

    /// The request body of `messages:send`.
    pub fn body(&self) -> serde_json::Value {
        serde_json::json!({ "message": self })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn data_values_become_strings_or_are_refused_by_field() {
        let d = data_from_json(&json!({"a": "x", "n": 3, "f": 1.5, "b": true})).unwrap();
        assert_eq!(d["a"], "x");
        assert_eq!(d["n"], "3");
        assert_eq!(d["f"], "1.5");
        assert_eq!(d["b"], "true");
        let e = data_from_json(&json!({"ok": "1", "o": {"x": 1}})).unwrap_err();
        assert_eq!(
            e.to_string(),
            "data.o: FCM data values are strings; an object cannot be converted"
        );
        assert!(matches!(
            data_from_json(&json!({"n": null})),
            Err(DataError::NotAString { kind: "null", .. })
        ));
        assert_eq!(
            data_from_json(&json!({"google.x": "1"})),
            Err(DataError::ReservedKey {
                field: "data.google.x".into()
            })
        );
        assert_eq!(data_from_json(&json!(["a"])), Err(DataError::NotAnObject));
    }

    #[test]
    fn only_asked_for_blocks_are_serialized() {
        let mut m = FcmMessage::new("tok");
        assert_eq!(m.body(), json!({"message": {"token": "tok"}}));
        m.android = Some(AndroidConfig {
            ttl: Some(3600),
            priority: Some(AndroidPriority::High),
            ..Default::default()
        });
        assert_eq!(
            m.body()["message"]["android"],
            json!({"ttl": "3600s", "priority": "HIGH"})
        );
    }
}
