//! A rendered push as an APNs request: the `aps` dictionary (alert or
//! client-side localization keys, sound, badge, `content-available` for a
//! background push), the custom keys `link` and `data`, and the headers
//! the step's options ask for.

use clarion_proto::events as pb;
use serde_json::{json, Map, Value};

use crate::apns::{apns_id_for_attempt, ApnsRequest, Priority, PushType};

/// The push type a step named (checked when the workflow was published;
/// anything else is an alert).
pub fn push_type(name: &str) -> PushType {
    match name {
        "background" => PushType::Background,
        "voip" => PushType::Voip,
        "location" => PushType::Location,
        "complication" => PushType::Complication,
        "fileprovider" => PushType::Fileprovider,
        "mdm" => PushType::Mdm,
        "liveactivity" => PushType::Liveactivity,
        "pushtotalk" => PushType::Pushtotalk,
        _ => PushType::Alert,
    }
}

/// Apple wants some push types on a topic derived from the bundle id.
fn topic_for(bundle: &str, ty: PushType) -> String {
    let suffix = match ty {
        PushType::Voip => ".voip",
        PushType::Complication => ".complication",
        PushType::Fileprovider => ".pushkit.fileprovider",
        PushType::Location => ".location-query",
        PushType::Liveactivity => ".push-type.liveactivity",
        PushType::Pushtotalk => ".voip-ptt",
        _ => "",
    };
    format!("{bundle}{suffix}")
}

/// The `aps.alert` dictionary: the rendered title and body, or the app's
/// localization keys (and arguments) where the step gives them.
fn alert(msg: &pb::DispatchRequested, o: &pb::PushOptions) -> Map<String, Value> {
    let mut alert = Map::new();
    if !o.title_loc_key.is_empty() {
        alert.insert("title-loc-key".into(), o.title_loc_key.clone().into());
        if !o.title_loc_args.is_empty() {
            alert.insert("title-loc-args".into(), json!(o.title_loc_args));
        }
    } else if !msg.subject.is_empty() {
        alert.insert("title".into(), msg.subject.clone().into());
    }
    if !o.body_loc_key.is_empty() {
        alert.insert("loc-key".into(), o.body_loc_key.clone().into());
        if !o.body_loc_args.is_empty() {
            alert.insert("loc-args".into(), json!(o.body_loc_args));
        }
    } else if !msg.body.is_empty() {
        alert.insert("body".into(), msg.body.clone().into());
    }
    alert
}

/// The JSON payload: `{"aps": {...}, "link": ..., "data": {...}}`.
pub fn payload(
    msg: &pb::DispatchRequested,
    o: &pb::PushOptions,
    ty: PushType,
    data: Option<&Map<String, Value>>,
) -> Value {
    let mut aps = Map::new();
    if ty == PushType::Background {
        // Apple: a background push carries no alert, sound or badge.
        aps.insert("content-available".into(), 1.into());
    } else {
        let alert = alert(msg, o);
        if !alert.is_empty() {
            aps.insert("alert".into(), Value::Object(alert));
        }
        if !o.sound.is_empty() {
            aps.insert("sound".into(), o.sound.clone().into());
        }
        if let Some(badge) = o.badge {
            aps.insert("badge".into(), badge.into());
        }
    }
    let mut root = Map::new();
    root.insert("aps".into(), Value::Object(aps));
    if !msg.link.is_empty() {
        root.insert("link".into(), msg.link.clone().into());
    }
    if let Some(data) = data.filter(|d| !d.is_empty()) {
        root.insert("data".into(), Value::Object(data.clone()));
    }
    Value::Object(root)
}

/// The request to one device. `default_topic` is the configured bundle id,
/// used when the tenant's app names none. `apns-id` derives from the
/// attempt and the device, so a repeat after a crash carries the same id
/// and two devices of one attempt do not.
pub fn request(
    msg: &pb::DispatchRequested,
    o: &pb::PushOptions,
    data: Option<&Map<String, Value>>,
    device_id: &str,
    default_topic: &str,
    now_ms: i64,
) -> ApnsRequest {
    let ty = push_type(&o.push_type);
    let apns_id = apns_id_for_attempt(&format!("{}/{device_id}", msg.attempt_id));
    let mut req = ApnsRequest::new(payload(msg, o, ty, data), ty, apns_id);
    req.priority = match (ty, o.priority.as_str()) {
        // Apple refuses a background push at priority 10.
        (PushType::Background, _) | (_, "normal") => Some(Priority::PowerConsiderate),
        (_, "high") => Some(Priority::Immediate),
        _ => None,
    };
    if o.ttl_seconds > 0 {
        req.expiration = Some(now_ms.div_euclid(1000) + i64::from(o.ttl_seconds));
    }
    if !o.collapse_key.is_empty() {
        req.collapse_id = Some(o.collapse_key.clone());
    }
    let bundle = if o.apns_topic.is_empty() {
        default_topic
    } else {
        o.apns_topic.as_str()
    };
    req.topic = Some(topic_for(bundle, ty));
    req
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg() -> pb::DispatchRequested {
        pb::DispatchRequested {
            attempt_id: "0123456789abcdef0123456789abcdef".into(),
            subject: "Job assigned".into(),
            body: "Boiler repair at 10:00".into(),
            link: "fieldapp://jobs/J-1".into(),
            ..Default::default()
        }
    }

    #[test]
    fn an_alert_carries_title_body_link_data_and_the_options_headers() {
        let o = pb::PushOptions {
            priority: "high".into(),
            ttl_seconds: 3600,
            collapse_key: "job-J-1".into(),
            sound: "default".into(),
            badge: Some(3),
            apns_topic: "com.acme.field".into(),
            ..Default::default()
        };
        let data = json!({"job": "J-1"});
        let r = request(&msg(), &o, data.as_object(), "d1", "com.default", 1_000_500);
        assert_eq!(
            r.payload,
            json!({"aps": {"alert": {"title": "Job assigned", "body": "Boiler repair at 10:00"},
                           "sound": "default", "badge": 3},
                   "link": "fieldapp://jobs/J-1", "data": {"job": "J-1"}})
        );
        assert_eq!(r.priority, Some(Priority::Immediate));
        assert_eq!(r.expiration, Some(1_000 + 3600));
        assert_eq!(r.collapse_id.as_deref(), Some("job-J-1"));
        assert_eq!(r.topic.as_deref(), Some("com.acme.field"));
        assert_eq!(r.push_type, PushType::Alert);
        // Deterministic per attempt and device, distinct across devices.
        let again = request(&msg(), &o, None, "d1", "com.default", 0);
        assert_eq!(again.apns_id, r.apns_id);
        assert_ne!(request(&msg(), &o, None, "d2", "x", 0).apns_id, r.apns_id);
    }

    #[test]
    fn localization_keys_replace_the_rendered_text_and_background_has_no_alert() {
        let o = pb::PushOptions {
            title_loc_key: "JOB_TITLE".into(),
            title_loc_args: vec!["J-1".into()],
            body_loc_key: "JOB_BODY".into(),
            body_loc_args: vec!["10:00".into(), "Boiler".into()],
            ..Default::default()
        };
        let r = request(&msg(), &o, None, "d1", "com.default", 0);
        assert_eq!(
            r.payload["aps"]["alert"],
            json!({"title-loc-key": "JOB_TITLE", "title-loc-args": ["J-1"],
                   "loc-key": "JOB_BODY", "loc-args": ["10:00", "Boiler"]})
        );
        assert_eq!(r.topic.as_deref(), Some("com.default"));
        assert_eq!(r.priority, None);

        let bg = pb::PushOptions {
            push_type: "background".into(),
            priority: "high".into(),
            sound: "default".into(),
            ..Default::default()
        };
        let r = request(&msg(), &bg, None, "d1", "com.default", 0);
        assert_eq!(
            r.payload,
            json!({"aps": {"content-available": 1}, "link": "fieldapp://jobs/J-1"})
        );
        assert_eq!(r.priority, Some(Priority::PowerConsiderate));
        let voip = pb::PushOptions {
            push_type: "voip".into(),
            ..Default::default()
        };
        let r = request(&msg(), &voip, None, "d1", "com.default", 0);
        assert_eq!(r.topic.as_deref(), Some("com.default.voip"));
    }
}
