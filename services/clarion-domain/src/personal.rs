//! Personal data in events (issue #32): which fields hold it, and the form a
//! sealed value takes in the log and in projections.
//!
//! Personal fields are sealed (AES-256-GCM) where they enter the log and
//! opened only where they are used, so that destroying a key shreds every
//! copy: the log, projections, exports and backups hold only ciphertext.
//! The keys live in the runtime (`clarion_runtime::personal`); this module is
//! the pure part: the list of fields and the text format of a sealed value.
//!
//! A sealed value is a string (proto string fields must stay UTF-8):
//!
//! ```text
//! \u{1}pd1:<generation>:<base64url(nonce || ciphertext+tag)>
//!     a personal field, under the subscriber's data key of that generation
//! \u{1}pb1:<yyyymmdd>:<channel>:<country>:<generation>:<base64url(...)>
//!     a message body, under a key derived from the subscriber's data key
//!     AND the tenant's body key of that day, channel and country: destroying
//!     either (erasure, retention) makes it unreadable
//! ```
//!
//! The leading U+0001 cannot come from a form field or an address, so a
//! plain value is never mistaken for a sealed one.

use crate::event::Payload;

pub mod paths;

/// What a field whose key was destroyed by an erasure reads as.
pub const ERASED: &str = "[erased]";
/// What a body whose day key was destroyed by retention reads as.
pub const REDACTED: &str = "[redacted]";

const FIELD: &str = "\u{1}pd1:";
const BODY: &str = "\u{1}pb1:";

/// A sealed value, parsed.
#[derive(Debug, PartialEq, Eq)]
pub enum Sealed<'a> {
    Field {
        generation: u32,
        blob: &'a str,
    },
    Body {
        day: u32,
        channel: &'a str,
        country: &'a str,
        generation: u32,
        blob: &'a str,
    },
}

impl<'a> Sealed<'a> {
    /// The sealed form in `s`, if it is one.
    pub fn parse(s: &'a str) -> Option<Sealed<'a>> {
        if let Some(rest) = s.strip_prefix(FIELD) {
            let (generation, blob) = rest.split_once(':')?;
            return Some(Sealed::Field {
                generation: generation.parse().ok()?,
                blob,
            });
        }
        let rest = s.strip_prefix(BODY)?;
        let mut parts = rest.splitn(5, ':');
        let day = parts.next()?.parse().ok()?;
        let channel = parts.next()?;
        let country = parts.next()?;
        let generation = parts.next()?.parse().ok()?;
        let blob = parts.next()?;
        Some(Sealed::Body {
            day,
            channel,
            country,
            generation,
            blob,
        })
    }

    /// The text form of a sealed field.
    pub fn field(generation: u32, blob: &str) -> String {
        format!("{FIELD}{generation}:{blob}")
    }

    /// The text form of a sealed body.
    pub fn body(day: u32, channel: &str, country: &str, generation: u32, blob: &str) -> String {
        format!("{BODY}{day}:{channel}:{country}:{generation}:{blob}")
    }
}

/// True when `s` is sealed (either form) — cheap, for the hot path.
pub fn is_sealed(s: &str) -> bool {
    s.starts_with('\u{1}')
}

/// True when a JSON text may hold sealed strings (a payload whose fields the
/// tenant marks personal): U+0001 is written `\u0001` in JSON.
pub fn json_may_hold_sealed(json: &str) -> bool {
    json.contains("\\u0001p")
}

/// How a personal field is sealed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// Under the subscriber's data key.
    Field,
    /// A message body: under the subscriber's and the day's body key.
    Body,
    /// A JSON text whose string values may be sealed fields (opened value
    /// by value; sealed where it enters by whoever marks the fields).
    Json,
}

/// Whose data an event's personal fields are, and how a body is filed for
/// retention.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Owner {
    pub subscriber: String,
    /// The channel of a message body (retention is per channel).
    pub channel: String,
    /// ISO 3166-1 alpha-2 of the recipient, or "*" when not known.
    pub country: String,
}

/// The personal fields of a payload with their owner, or `None` when it
/// holds none (most events: outcomes, timers, configuration).
pub fn fields_mut(payload: &mut Payload) -> Option<(Owner, Vec<(Kind, &mut String)>)> {
    use Kind::*;
    let owner = |subscriber: &str, channel: &str, country: &str| Owner {
        subscriber: subscriber.to_string(),
        channel: channel.to_string(),
        country: country_or_any(country).to_string(),
    };
    match payload {
        Payload::SubscriberUpserted(s) => Some((
            owner(&s.subscriber_id, "", &s.country),
            vec![
                (Field, &mut s.email),
                (Field, &mut s.phone),
                (Field, &mut s.attributes_json),
                (Field, &mut s.webhook_url),
            ],
        )),
        Payload::Triggered(t) => {
            let o = owner(&t.subscriber_id, "", "");
            let mut v = vec![(Json, &mut t.payload_json)];
            if let Some(r) = t.recipient.as_mut() {
                v.extend([
                    (Field, &mut r.email),
                    (Field, &mut r.phone),
                    (Field, &mut r.webhook_url),
                ]);
            }
            Some((o, v))
        }
        Payload::DispatchRequested(d) => {
            let mut v = vec![
                (Field, &mut d.to),
                (Body, &mut d.subject),
                (Body, &mut d.body),
                (Body, &mut d.data_json),
            ];
            // Device tokens come sealed from the registration (a token
            // registered before #32 is master-sealed, `personal` empty).
            v.extend(
                d.push_targets
                    .iter_mut()
                    .filter_map(|t| t.token.as_mut())
                    .map(|t| (Field, &mut t.personal)),
            );
            Some((owner(&d.subscriber_id, &d.channel, &d.country), v))
        }
        Payload::InboxItemWritten(i) => Some((
            owner(&i.subscriber_id, "in_app", ""),
            vec![
                (Body, &mut i.title),
                (Body, &mut i.body),
                (Body, &mut i.data_json),
            ],
        )),
        Payload::ContactChanged(c) => Some((
            owner(&c.subscriber_id, "", ""),
            vec![(Field, &mut c.old_value), (Field, &mut c.new_value)],
        )),
        Payload::ContactVerified(c) => {
            Some((owner(&c.subscriber_id, "", ""), vec![(Field, &mut c.value)]))
        }
        _ => None,
    }
}

/// Whether a payload may carry personal fields to seal (cheap: no walk).
pub fn has_fields(payload: &Payload) -> bool {
    match payload {
        Payload::Triggered(t) => t.recipient.is_some() || !t.personal_paths.is_empty(),
        Payload::SubscriberUpserted(_)
        | Payload::DispatchRequested(_)
        | Payload::InboxItemWritten(_)
        | Payload::ContactChanged(_)
        | Payload::ContactVerified(_) => true,
        _ => false,
    }
}

/// A country code as filed: upper case, "*" when unknown.
pub fn country_or_any(country: &str) -> &str {
    if country.is_empty() {
        "*"
    } else {
        country
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clarion_proto::events as pb;

    #[test]
    fn sealed_forms_round_trip_and_plain_values_are_not_sealed() {
        let f = Sealed::field(3, "QUJD");
        assert!(is_sealed(&f));
        assert_eq!(
            Sealed::parse(&f),
            Some(Sealed::Field {
                generation: 3,
                blob: "QUJD"
            })
        );
        let b = Sealed::body(20261207, "email", "FR", 1, "eHl6");
        assert_eq!(
            Sealed::parse(&b),
            Some(Sealed::Body {
                day: 20261207,
                channel: "email",
                country: "FR",
                generation: 1,
                blob: "eHl6"
            })
        );
        for plain in ["ada@example.com", "pd1:1:x", "", "[erased]"] {
            assert!(!is_sealed(plain));
            assert_eq!(Sealed::parse(plain), None);
        }
        assert_eq!(
            Sealed::parse("\u{1}pd1:x:QUJD"),
            None,
            "generation must be a number"
        );
        let json = serde_json::to_string(&serde_json::json!({"name": f})).unwrap();
        assert!(json_may_hold_sealed(&json));
        assert!(!json_may_hold_sealed(r#"{"name":"Ada"}"#));
    }

    #[test]
    fn a_dispatch_lists_its_address_and_body_with_channel_and_country() {
        let mut p = Payload::DispatchRequested(pb::DispatchRequested {
            subscriber_id: "sub-1".into(),
            channel: "sms".into(),
            to: "+33600000000".into(),
            body: "Hello".into(),
            ..Default::default()
        });
        let (owner, fields) = fields_mut(&mut p).unwrap();
        assert_eq!(owner.subscriber, "sub-1");
        assert_eq!(owner.channel, "sms");
        assert_eq!(owner.country, "*");
        let kinds: Vec<Kind> = fields.iter().map(|(k, _)| *k).collect();
        assert_eq!(kinds, [Kind::Field, Kind::Body, Kind::Body, Kind::Body]);
        for (_, v) in fields {
            v.push('!');
        }
        let Payload::DispatchRequested(d) = p else {
            unreachable!()
        };
        assert_eq!(d.to, "+33600000000!");
        assert_eq!(d.body, "Hello!");
        assert!(fields_mut(&mut Payload::Sent(Default::default())).is_none());
    }
}
