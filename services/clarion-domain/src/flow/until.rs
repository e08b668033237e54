//! A delay `until` a time in the payload (`payload.appointment_at`, RFC 3339
//! or milliseconds since the epoch) plus a signed `offset` (`-24h`).
//!
//! The offset is elapsed time, not wall-clock time: "-24h" before an
//! appointment at 10:00 local on the day after a daylight-saving change is
//! exactly 86,400 s earlier, which reads 09:00 or 11:00 local on the clock.
//! An RFC 3339 time carries its own offset, so the instant is exact and no
//! zone rule is needed (docs/scheduling.md).

use serde_json::Value;

use crate::error::quote;

/// The instant (ms) a delay `until` waits for: the payload's time at
/// `path` plus `offset`. `Err` says why there is none (missing, not a time).
pub fn due(payload: &Value, path: &str, offset: Option<&str>) -> Result<i64, String> {
    let at = at_path(payload, path)?;
    let shift = match offset {
        Some(text) => crate::time::parse_signed_duration(text)
            .map_err(|e| format!("offset {}: {e}", quote(text)))?,
        None => 0,
    };
    Ok(at.saturating_add(shift))
}

/// The time at a `payload.` path.
fn at_path(payload: &Value, path: &str) -> Result<i64, String> {
    let rest = path.strip_prefix("payload.").unwrap_or(path);
    let mut v = payload;
    for part in rest.split('.') {
        v = v
            .get(part)
            .ok_or_else(|| format!("{path} is missing from the payload"))?;
    }
    match v {
        Value::String(s) => crate::time::parse_instant(s)
            .map_err(|e| format!("{path} {} is not a time: {e}", quote(s))),
        Value::Number(n) => n
            .as_i64()
            .ok_or_else(|| format!("{path} {n} is not milliseconds since the epoch")),
        other => Err(format!(
            "{path} is not a time (an RFC 3339 string or milliseconds since the epoch): {other}"
        )),
    }
}

/// An instant as RFC 3339 in UTC, to the second (notes in the history).
pub use crate::time::format_instant as rfc3339;

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_payload_time_with_an_offset() {
        let p = json!({"appointment_at": "2026-03-09T10:00:00-04:00", "ms": 1_000_000, "x": true});
        let at = due(&p, "payload.appointment_at", Some("-24h")).unwrap();
        assert_eq!(rfc3339(at), "2026-03-08T14:00:00Z");
        assert_eq!(due(&p, "payload.ms", Some("1s")), Ok(1_001_000));
        assert_eq!(due(&p, "payload.ms", None), Ok(1_000_000));
        assert!(due(&p, "payload.gone", None)
            .unwrap_err()
            .contains("payload.gone is missing"));
        assert!(due(&p, "payload.x", None)
            .unwrap_err()
            .contains("not a time"));
        assert!(due(&json!({"a": "soon"}), "payload.a", None)
            .unwrap_err()
            .contains("\"soon\" is not a time"));
    }
}
