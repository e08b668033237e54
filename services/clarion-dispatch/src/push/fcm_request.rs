//! A rendered push as an FCM HTTP v1 message: `notification` (title and
//! body), `data` (strings, with the deep link as `link`), and the override
//! block of the device's platform where the step's options ask for one:
//! `android` (priority, TTL, collapse key, channel, sound, localization
//! keys), `apns` (an iOS device reached through FCM: headers and `aps`),
//! `webpush` (TTL, urgency, the link to open).

use std::collections::BTreeMap;

use clarion_domain::push::Platform;
use clarion_proto::events as pb;
use serde_json::{json, Map, Value};

use crate::fcm::{
    AndroidConfig, AndroidNotification, AndroidPriority, ApnsOverride, FcmMessage, Notification,
    WebpushConfig,
};

fn some(s: &str) -> Option<String> {
    (!s.is_empty()).then(|| s.to_string())
}

fn background(o: &pb::PushOptions) -> bool {
    o.push_type == "background"
}

/// The message to one registration token. `data` is the step's data
/// already converted to strings.
pub fn message(
    token: String,
    platform: Platform,
    msg: &pb::DispatchRequested,
    o: &pb::PushOptions,
    data: &BTreeMap<String, String>,
    now_ms: i64,
) -> FcmMessage {
    let mut m = FcmMessage::new(token);
    // A background push is a data message: the app handles it silently.
    let has_text = !msg.subject.is_empty() || !msg.body.is_empty();
    if has_text && !background(o) {
        m.notification = Some(Notification {
            title: some(&msg.subject),
            body: some(&msg.body),
        });
    }
    m.data = data.clone();
    if !msg.link.is_empty() {
        m.data.insert("link".into(), msg.link.clone());
    }
    match platform {
        Platform::Android => m.android = android(o),
        Platform::Ios => m.apns = apns(o, now_ms),
        Platform::Web => m.webpush = webpush(msg, o),
    }
    m
}

fn android(o: &pb::PushOptions) -> Option<AndroidConfig> {
    let notification = AndroidNotification {
        channel_id: some(&o.android_channel_id),
        sound: some(&o.sound),
        title_loc_key: some(&o.title_loc_key),
        body_loc_key: some(&o.body_loc_key),
        title_loc_args: o.title_loc_args.clone(),
        body_loc_args: o.body_loc_args.clone(),
    };
    let config = AndroidConfig {
        priority: match o.priority.as_str() {
            "high" => Some(AndroidPriority::High),
            "normal" => Some(AndroidPriority::Normal),
            _ => None,
        },
        ttl: (o.ttl_seconds > 0).then_some(u64::from(o.ttl_seconds)),
        collapse_key: some(&o.collapse_key),
        notification: (notification != AndroidNotification::default()).then_some(notification),
    };
    (config != AndroidConfig::default()).then_some(config)
}

/// What FCM forwards to Apple for an iOS token.
fn apns(o: &pb::PushOptions, now_ms: i64) -> Option<ApnsOverride> {
    let mut headers = BTreeMap::new();
    let bg = background(o);
    if bg {
        headers.insert("apns-push-type".into(), "background".into());
        headers.insert("apns-priority".into(), "5".into());
    } else if let Some(p) = match o.priority.as_str() {
        "high" => Some("10"),
        "normal" => Some("5"),
        _ => None,
    } {
        headers.insert("apns-priority".into(), p.into());
    }
    if o.ttl_seconds > 0 {
        let exp = now_ms.div_euclid(1000) + i64::from(o.ttl_seconds);
        headers.insert("apns-expiration".into(), exp.to_string());
    }
    if !o.collapse_key.is_empty() {
        headers.insert("apns-collapse-id".into(), o.collapse_key.clone());
    }
    let mut aps = Map::new();
    if bg {
        aps.insert("content-available".into(), 1.into());
    } else {
        let mut alert = Map::new();
        if !o.title_loc_key.is_empty() {
            alert.insert("title-loc-key".into(), o.title_loc_key.clone().into());
            alert.insert("title-loc-args".into(), json!(o.title_loc_args));
        }
        if !o.body_loc_key.is_empty() {
            alert.insert("loc-key".into(), o.body_loc_key.clone().into());
            alert.insert("loc-args".into(), json!(o.body_loc_args));
        }
        if !alert.is_empty() {
            aps.insert("alert".into(), Value::Object(alert));
        }
        if !o.sound.is_empty() {
            aps.insert("sound".into(), o.sound.clone().into());
        }
        if let Some(b) = o.badge {
            aps.insert("badge".into(), b.into());
        }
    }
    if headers.is_empty() && aps.is_empty() {
        return None;
    }
    Some(ApnsOverride {
        headers,
        payload: (!aps.is_empty()).then(|| json!({ "aps": aps })),
    })
}

fn webpush(msg: &pb::DispatchRequested, o: &pb::PushOptions) -> Option<WebpushConfig> {
    let mut headers = BTreeMap::new();
    if o.ttl_seconds > 0 {
        headers.insert("TTL".into(), o.ttl_seconds.to_string());
    }
    if matches!(o.priority.as_str(), "high" | "normal") {
        headers.insert("Urgency".into(), o.priority.clone());
    }
    if !o.collapse_key.is_empty() {
        headers.insert("Topic".into(), o.collapse_key.clone());
    }
    // FCM opens only an https link when the notification is clicked.
    let fcm_options = msg
        .link
        .starts_with("https://")
        .then(|| json!({ "link": msg.link }));
    if headers.is_empty() && fcm_options.is_none() {
        return None;
    }
    Some(WebpushConfig {
        headers,
        notification: None,
        fcm_options,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg() -> pb::DispatchRequested {
        pb::DispatchRequested {
            subject: "Job assigned".into(),
            body: "Boiler repair".into(),
            link: "fieldapp://jobs/J-1".into(),
            ..Default::default()
        }
    }

    #[test]
    fn android_gets_its_block_only_when_options_ask() {
        let data = BTreeMap::from([("job".to_string(), "J-1".to_string())]);
        let plain = message(
            "t".into(),
            Platform::Android,
            &msg(),
            &pb::PushOptions::default(),
            &data,
            0,
        );
        assert_eq!(
            plain.body(),
            json!({"message": {"token": "t",
                "notification": {"title": "Job assigned", "body": "Boiler repair"},
                "data": {"job": "J-1", "link": "fieldapp://jobs/J-1"}}})
        );
        let o = pb::PushOptions {
            priority: "high".into(),
            ttl_seconds: 600,
            collapse_key: "jobs".into(),
            android_channel_id: "jobs".into(),
            body_loc_key: "job_body".into(),
            body_loc_args: vec!["J-1".into()],
            ..Default::default()
        };
        let m = message("t".into(), Platform::Android, &msg(), &o, &data, 0);
        assert_eq!(
            m.body()["message"]["android"],
            json!({"priority": "HIGH", "ttl": "600s", "collapse_key": "jobs",
                   "notification": {"channel_id": "jobs", "body_loc_key": "job_body",
                                    "body_loc_args": ["J-1"]}})
        );
        assert!(m.apns.is_none() && m.webpush.is_none());
    }

    #[test]
    fn ios_and_web_tokens_get_their_blocks_and_background_is_data_only() {
        let o = pb::PushOptions {
            push_type: "background".into(),
            ttl_seconds: 60,
            ..Default::default()
        };
        let m = message(
            "t".into(),
            Platform::Ios,
            &msg(),
            &o,
            &BTreeMap::new(),
            1_000,
        );
        assert!(m.notification.is_none());
        assert_eq!(
            m.body()["message"]["apns"],
            json!({"headers": {"apns-push-type": "background", "apns-priority": "5",
                               "apns-expiration": "61"},
                   "payload": {"aps": {"content-available": 1}}})
        );
        let mut https = msg();
        https.link = "https://acme.example/jobs/J-1".into();
        let o = pb::PushOptions {
            priority: "normal".into(),
            ..Default::default()
        };
        let m = message("t".into(), Platform::Web, &https, &o, &BTreeMap::new(), 0);
        assert_eq!(
            m.body()["message"]["webpush"],
            json!({"headers": {"Urgency": "normal"},
                   "fcm_options": {"link": "https://acme.example/jobs/J-1"}})
        );
    }
}
