//! Subscribers: the people (and systems) notifications go to.

use clarion_proto::events as pb;
use serde_json::{Map, Value};

use crate::channel::Channel;
use crate::error::Violations;
use crate::limits::{self, check_len};
use crate::template::{walk, Found};

/// What the router knows about one recipient.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Subscriber {
    pub subscriber_id: String,
    pub email: String,
    pub phone: String,
    /// BCP 47 tag; empty means the tenant default.
    pub locale: String,
    /// IANA time zone name.
    pub timezone: String,
    pub attributes: Map<String, Value>,
    pub webhook_url: String,
    /// ISO 3166-1 alpha-2; empty when not given (retention is per country).
    pub country: String,
}

impl Subscriber {
    pub fn from_event(e: &pb::SubscriberUpserted) -> Subscriber {
        Subscriber {
            subscriber_id: e.subscriber_id.clone(),
            email: e.email.clone(),
            phone: e.phone.clone(),
            locale: e.locale.clone(),
            timezone: e.timezone.clone(),
            attributes: serde_json::from_str(&e.attributes_json).unwrap_or_default(),
            webhook_url: e.webhook_url.clone(),
            country: e.country.clone(),
        }
    }

    pub fn to_event(&self) -> pb::SubscriberUpserted {
        pb::SubscriberUpserted {
            subscriber_id: self.subscriber_id.clone(),
            email: self.email.clone(),
            phone: self.phone.clone(),
            locale: self.locale.clone(),
            timezone: self.timezone.clone(),
            attributes_json: Value::Object(self.attributes.clone()).to_string(),
            webhook_url: self.webhook_url.clone(),
            country: self.country.clone(),
        }
    }

    /// Contact data given with a trigger takes precedence over stored data.
    pub fn with_override(mut self, o: &pb::RecipientOverride) -> Subscriber {
        let set = |dst: &mut String, src: &String| {
            if !src.is_empty() {
                *dst = src.clone();
            }
        };
        set(&mut self.email, &o.email);
        set(&mut self.phone, &o.phone);
        set(&mut self.locale, &o.locale);
        set(&mut self.timezone, &o.timezone);
        set(&mut self.webhook_url, &o.webhook_url);
        self
    }

    /// The address to use on `channel`, if the subscriber has one.
    pub fn address(&self, channel: Channel) -> Option<&str> {
        let a = match channel {
            Channel::Email => &self.email,
            Channel::Sms => &self.phone,
            Channel::Webhook => &self.webhook_url,
            // Push and in-app address the subscriber itself (devices, inbox).
            Channel::Push | Channel::InApp => &self.subscriber_id,
        };
        (!a.is_empty()).then_some(a.as_str())
    }

    /// JSON view given to conditions (and templates) as `subscriber`.
    pub fn template_context(&self) -> Value {
        serde_json::to_value(self.view()).expect("a subscriber view is JSON")
    }

    /// The same view as a template variable, converted in one pass (through
    /// a JSON tree first, the conversion was about 2 % of the server's time).
    pub fn template_value(&self) -> minijinja::Value {
        minijinja::Value::from_serialize(self.view())
    }

    /// A value of [`Subscriber::template_context`] by its path below
    /// `subscriber`, read from the fields.
    pub fn lookup(&self, path: &[String]) -> Option<Found<'_>> {
        let (field, rest) = path.split_first()?;
        let s = match (field.as_str(), rest) {
            ("attributes", _) => {
                let (key, rest) = rest.split_first()?;
                return walk(self.attributes.get(key)?, rest).map(Found::Json);
            }
            ("email", []) => &self.email,
            ("id", []) => &self.subscriber_id,
            ("locale", []) => &self.locale,
            ("phone", []) => &self.phone,
            ("timezone", []) => &self.timezone,
            _ => return None,
        };
        Some(Found::Str(s))
    }

    fn view(&self) -> SubscriberView<'_> {
        SubscriberView {
            attributes: &self.attributes,
            email: &self.email,
            id: &self.subscriber_id,
            locale: &self.locale,
            phone: &self.phone,
            timezone: &self.timezone,
        }
    }
}

/// What templates and conditions see of a subscriber. Fields in name order,
/// the order of a JSON object's keys, so both views print alike.
#[derive(serde::Serialize)]
struct SubscriberView<'a> {
    attributes: &'a Map<String, Value>,
    email: &'a str,
    id: &'a str,
    locale: &'a str,
    phone: &'a str,
    timezone: &'a str,
}

/// The contact fields of a subscriber record or an inline recipient.
#[derive(Clone, Copy, Debug, Default)]
pub struct Contact<'a> {
    pub email: &'a str,
    pub phone: &'a str,
    pub locale: &'a str,
    pub timezone: &'a str,
    pub webhook_url: &'a str,
}

/// Checks the fields a subscriber record or inline recipient may carry:
/// each within its size limit, then its format. `prefix` is the path of the
/// record in the request, e.g. `recipients[3].`.
pub fn validate_contact(v: &mut Violations, prefix: &str, c: Contact<'_>) {
    let Contact {
        email,
        phone,
        locale,
        timezone,
        webhook_url,
    } = c;
    let f = |name: &str| format!("{prefix}{name}");
    let sized = [
        check_len(v, &f("email"), email, limits::MAX_EMAIL_BYTES),
        check_len(v, &f("phone"), phone, limits::MAX_PHONE_BYTES),
        check_len(v, &f("locale"), locale, limits::MAX_LOCALE_BYTES),
        check_len(v, &f("timezone"), timezone, limits::MAX_TIMEZONE_BYTES),
        check_len(v, &f("webhook_url"), webhook_url, limits::MAX_URL_BYTES),
    ];
    if sized.contains(&false) {
        return;
    }
    if !timezone.is_empty() && !is_zone_name(timezone) {
        v.push(
            f("timezone"),
            "must be an IANA time zone name such as 'Europe/Paris' or 'UTC'",
        );
    }
    if !email.is_empty() && !is_plausible_email(email) {
        v.push(
            format!("{prefix}email"),
            "is not an email address (expected local@domain)",
        );
    }
    if !phone.is_empty() && !is_e164(phone) {
        v.push(
            format!("{prefix}phone"),
            "must be E.164: '+' then 8 to 15 digits",
        );
    }
    if !locale.is_empty() && !is_bcp47ish(locale) {
        v.push(
            format!("{prefix}locale"),
            "must be a BCP 47 tag such as 'fr' or 'fr-CA'",
        );
    }
    let is_http = webhook_url.starts_with("https://") || webhook_url.starts_with("http://");
    if !webhook_url.is_empty() && !is_http {
        v.push(format!("{prefix}webhook_url"), "must be an http(s) URL");
    }
}

/// Subscriber ids: 1-128 printable characters without '/' (it separates key parts).
pub fn validate_subscriber_id(v: &mut Violations, field: &str, id: &str) {
    if id.is_empty() {
        v.push(field, "is required");
    } else if id.len() > limits::MAX_SUBSCRIBER_ID_BYTES {
        v.push(
            field,
            format!(
                "is {} bytes, over the limit of {} bytes",
                id.len(),
                limits::MAX_SUBSCRIBER_ID_BYTES
            ),
        );
    } else if id
        .chars()
        .any(|c| c == '/' || c.is_control() || c.is_whitespace())
    {
        v.push(
            field,
            "must not contain '/', whitespace or control characters",
        );
    }
}

fn is_plausible_email(s: &str) -> bool {
    match s.split_once('@') {
        Some((local, domain)) => {
            !local.is_empty()
                && domain.contains('.')
                && !domain.starts_with('.')
                && !domain.ends_with('.')
                && !s.chars().any(|c| c.is_whitespace() || c == '<' || c == '>')
        }
        None => false,
    }
}

/// IANA zone names are ASCII letters, digits, '/', '_', '+' and '-'
/// (`America/Port-au-Prince`, `Etc/GMT+5`).
fn is_zone_name(s: &str) -> bool {
    s.chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '/' | '_' | '+' | '-'))
}

fn is_e164(s: &str) -> bool {
    let digits = s.strip_prefix('+').unwrap_or("");
    (8..=15).contains(&digits.len()) && digits.chars().all(|c| c.is_ascii_digit())
}

fn is_bcp47ish(s: &str) -> bool {
    s.split('-').all(|part| {
        (1..=8).contains(&part.len()) && part.chars().all(|c| c.is_ascii_alphanumeric())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn templates_and_conditions_see_the_same_subscriber() {
        let s = Subscriber {
            subscriber_id: "tech-7".into(),
            email: "t7@example.test".into(),
            locale: "fr-CA".into(),
            attributes: serde_json::from_str(r#"{"tier":"gold","shifts":[1,2]}"#).unwrap(),
            ..Default::default()
        };
        let json = s.template_context();
        assert_eq!(json["id"], "tech-7");
        assert_eq!(json["attributes"]["tier"], "gold");
        assert_eq!(json["phone"], "");
        // Converted directly, the template variable equals the JSON view
        // converted, and prints alike.
        let direct = s.template_value();
        let via_json = minijinja::Value::from_serialize(&json);
        assert_eq!(direct, via_json);
        assert_eq!(direct.to_string(), via_json.to_string());
        assert_eq!(
            direct
                .get_attr("attributes")
                .unwrap()
                .get_attr("tier")
                .unwrap()
                .as_str(),
            Some("gold")
        );
    }

    #[test]
    fn contact_validation_names_fields() {
        let mut v = Violations::default();
        let bad = Contact {
            email: "nope",
            phone: "123",
            locale: "fr_CA",
            timezone: "Europe/Paris; drop",
            webhook_url: "ftp://x",
        };
        validate_contact(&mut v, "recipients[0].", bad);
        let fields: Vec<_> = v.0.iter().map(|f| f.field.as_str()).collect();
        assert_eq!(
            fields,
            [
                "recipients[0].timezone",
                "recipients[0].email",
                "recipients[0].phone",
                "recipients[0].locale",
                "recipients[0].webhook_url"
            ]
        );
        let mut ok = Violations::default();
        let good = Contact {
            email: "a@b.co",
            phone: "+15145550100",
            locale: "fr-CA",
            timezone: "America/Port-au-Prince",
            webhook_url: "https://x.test/h",
        };
        validate_contact(&mut ok, "", good);
        assert!(ok.is_empty(), "{ok}");
    }

    #[test]
    fn oversize_contact_fields_are_refused_by_name() {
        let long = |n: usize| "a".repeat(n);
        let email = format!("{}@example.test", long(limits::MAX_EMAIL_BYTES));
        let url = format!("https://x.test/{}", long(limits::MAX_URL_BYTES));
        let c = Contact {
            email: &email,
            phone: "+1234567890123456789",
            locale: &long(limits::MAX_LOCALE_BYTES + 1),
            timezone: &long(limits::MAX_TIMEZONE_BYTES + 1),
            webhook_url: &url,
        };
        let mut v = Violations::default();
        validate_contact(&mut v, "", c);
        let fields: Vec<_> = v.0.iter().map(|f| f.field.as_str()).collect();
        assert_eq!(
            fields,
            ["email", "phone", "locale", "timezone", "webhook_url"]
        );
        assert!(
            v.0.iter().all(|f| f.description.contains("over the limit")),
            "{v}"
        );
        let mut v = Violations::default();
        validate_subscriber_id(&mut v, "subscriber_id", &long(129));
        assert!(v.0[0].description.contains("limit of 128"), "{v}");
    }

    #[test]
    fn override_wins_only_where_given() {
        let s = Subscriber {
            subscriber_id: "u1".into(),
            email: "old@x.io".into(),
            locale: "en".into(),
            ..Default::default()
        };
        let o = pb::RecipientOverride {
            email: "new@x.io".into(),
            ..Default::default()
        };
        let s = s.with_override(&o);
        assert_eq!(s.email, "new@x.io");
        assert_eq!(s.locale, "en");
    }
}
