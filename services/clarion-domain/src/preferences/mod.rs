//! The preference center: topics, each subscriber's settings, contact
//! verification, and the one function that says whether a send may go
//! ([`evaluate`]).
//!
//! A subscriber's settings are state on the subscriber's stream: the router
//! applies `PreferencesChanged` in order with that subscriber's triggers and
//! checks them with no remote read; the APIs read the same state from the
//! row the router writes. A change names only the settings it touches, so a
//! coarser setting (a global channel switch) never deletes a finer one (a
//! topic × channel choice): the finer one simply ranks lower while the
//! coarser one is off, and is back in force when it is on again.

pub mod evaluate;
pub mod topic;
pub mod verification;

use std::collections::BTreeMap;
use std::fmt;

use clarion_proto::events as pb;
use serde::{Deserialize, Serialize};

use crate::channel::Channel;
use crate::error::{quote, Violations};
use topic::Topic;

pub use evaluate::{evaluate, Question, Rule, Verdict};

/// Settings a subscriber may hold per topic beyond the topic switch (one
/// per channel), and changes one request may make.
pub const MAX_CHANGES: usize = 100;

/// One subscriber's settings. Absent entries inherit.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Preferences {
    /// Global channel switches by channel name.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub channels: BTreeMap<String, bool>,
    /// Topic settings by topic id.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub topics: BTreeMap<String, TopicSettings>,
    /// `Some(false)`: unsubscribed from marketing (a legal block no workflow
    /// overrides).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub marketing: Option<bool>,
    /// Contacts changed through the preference APIs, by channel
    /// (`email`, `sms`): their verification state.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub contacts: BTreeMap<String, verification::ContactState>,
}

/// A subscriber's choices for one topic.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TopicSettings {
    /// Opted in (`true`) or out (`false`) of the whole topic.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
    /// Per channel, by channel name.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub channels: BTreeMap<String, bool>,
}

impl TopicSettings {
    fn is_empty(&self) -> bool {
        self.enabled.is_none() && self.channels.is_empty()
    }
}

/// Which setting a change is about.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Path {
    /// `channels.<channel>`: the global switch of a channel.
    Channel(Channel),
    /// `topics.<topic>`: opted in or out of a topic.
    Topic(String),
    /// `topics.<topic>.<channel>`: a channel of a topic.
    TopicChannel(String, Channel),
    /// `marketing`: off is the legal unsubscribe from marketing.
    Marketing,
}

impl fmt::Display for Path {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Path::Channel(c) => write!(f, "channels.{c}"),
            Path::Topic(t) => write!(f, "topics.{t}"),
            Path::TopicChannel(t, c) => write!(f, "topics.{t}.{c}"),
            Path::Marketing => f.write_str("marketing"),
        }
    }
}

impl Path {
    /// Parses a path. Topic ids may contain dots, so a path ending in a
    /// channel name is a topic × channel setting.
    pub fn parse(s: &str) -> Result<Path, String> {
        if s == "marketing" {
            return Ok(Path::Marketing);
        }
        if let Some(c) = s.strip_prefix("channels.") {
            return c.parse().map(Path::Channel);
        }
        let Some(rest) = s.strip_prefix("topics.") else {
            return Err(format!(
                "unknown setting {}: expected channels.<channel>, topics.<topic>, topics.<topic>.<channel> or marketing",
                quote(s)
            ));
        };
        if let Some((topic, channel)) = rest.rsplit_once('.') {
            if let Ok(c) = channel.parse::<Channel>() {
                return Ok(Path::TopicChannel(topic.to_string(), c));
            }
        }
        if rest.is_empty() {
            return Err("topics. needs a topic id".into());
        }
        Ok(Path::Topic(rest.to_string()))
    }

    fn topic(&self) -> Option<&str> {
        match self {
            Path::Topic(t) | Path::TopicChannel(t, _) => Some(t),
            _ => None,
        }
    }
}

/// A setting's value: `None` inherits.
pub type Value = Option<bool>;

fn to_pb(v: Value) -> pb::Setting {
    match v {
        None => pb::Setting::Inherit,
        Some(true) => pb::Setting::On,
        Some(false) => pb::Setting::Off,
    }
}

fn from_pb(s: i32) -> Value {
    match pb::Setting::try_from(s).unwrap_or(pb::Setting::Inherit) {
        pb::Setting::Inherit => None,
        pb::Setting::On => Some(true),
        pb::Setting::Off => Some(false),
    }
}

impl Preferences {
    /// The current value of a setting.
    pub fn get(&self, path: &Path) -> Value {
        match path {
            Path::Channel(c) => self.channels.get(c.as_str()).copied(),
            Path::Topic(t) => self.topics.get(t).and_then(|s| s.enabled),
            Path::TopicChannel(t, c) => self
                .topics
                .get(t)
                .and_then(|s| s.channels.get(c.as_str()).copied()),
            Path::Marketing => self.marketing,
        }
    }

    /// Sets one setting (`None`: back to inherit), dropping what became empty.
    pub fn set(&mut self, path: &Path, value: Value) {
        fn put(map: &mut BTreeMap<String, bool>, key: &str, value: Value) {
            match value {
                Some(b) => {
                    map.insert(key.to_string(), b);
                }
                None => {
                    map.remove(key);
                }
            }
        }
        match path {
            Path::Channel(c) => put(&mut self.channels, c.as_str(), value),
            Path::Marketing => self.marketing = value,
            Path::Topic(t) | Path::TopicChannel(t, _) => {
                let s = self.topics.entry(t.clone()).or_default();
                match path {
                    Path::Topic(_) => s.enabled = value,
                    Path::TopicChannel(_, c) => put(&mut s.channels, c.as_str(), value),
                    _ => unreachable!("matched above"),
                }
                if s.is_empty() {
                    self.topics.remove(t);
                }
            }
        }
    }

    /// Applies a `PreferencesChanged`: each named setting takes its new
    /// value; nothing else changes. Paths that do not parse (written by a
    /// later version) are skipped rather than stopping the subscriber.
    pub fn apply(&mut self, e: &pb::PreferencesChanged) {
        for c in &e.changes {
            if let Ok(path) = Path::parse(&c.path) {
                self.set(&path, from_pb(c.new));
            }
        }
    }

    /// The stored form (the preferences table's value).
    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("preferences are JSON")
    }

    pub fn decode(bytes: &[u8]) -> Result<Preferences, serde_json::Error> {
        serde_json::from_slice(bytes)
    }
}

/// A requested change: a setting path (as written) and its new value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Requested {
    pub path: String,
    pub value: Value,
}

/// Checks requested changes against the tenant's topics and the
/// subscriber's current settings and returns the changes to record (old and
/// new value of each setting that actually changes). `field` names the list
/// in the request, e.g. `changes`, so errors read `changes[2].path`.
pub fn validate_changes(
    field: &str,
    requested: &[Requested],
    current: &Preferences,
    topics: &dyn Fn(&str) -> Option<Topic>,
) -> Result<Vec<pb::PreferenceChange>, Violations> {
    let mut v = Violations::default();
    if requested.len() > MAX_CHANGES {
        v.push(
            field,
            format!(
                "at most {MAX_CHANGES} changes per request, got {}",
                requested.len()
            ),
        );
        return Err(v);
    }
    let mut next = current.clone();
    let mut paths = Vec::new();
    for (i, r) in requested.iter().enumerate() {
        let at = format!("{field}[{i}].path");
        let path = match Path::parse(&r.path) {
            Ok(p) => p,
            Err(e) => {
                v.push(at, e);
                continue;
            }
        };
        if let Some(id) = path.topic() {
            let Some(t) = topics(id) else {
                v.push(at, format!("unknown topic {}", quote(id)));
                continue;
            };
            if let Err(e) = check_topic_setting(&t, &path, r.value) {
                v.push(format!("{field}[{i}].value"), e);
                continue;
            }
        }
        next.set(&path, r.value);
        paths.push(path);
    }
    // A required topic must keep a channel its subscriber receives it on.
    for (i, path) in paths.iter().enumerate() {
        if let Path::TopicChannel(id, _) = path {
            if let Some(t) = topics(id).filter(|t| t.required) {
                let open = t
                    .usable_channels()
                    .into_iter()
                    .any(|c| next.get(&Path::TopicChannel(id.clone(), c)) != Some(false));
                if !open {
                    v.push(
                        format!("{field}[{i}].value"),
                        format!(
                            "topic {} is required: at least one of its channels must stay on",
                            quote(id)
                        ),
                    );
                }
            }
        }
    }
    v.into_result()?;
    let mut seen = std::collections::HashSet::new();
    Ok(paths
        .into_iter()
        .filter(|p| seen.insert(p.clone()))
        .filter_map(|p| {
            let (old, new) = (current.get(&p), next.get(&p));
            (old != new).then(|| pb::PreferenceChange {
                path: p.to_string(),
                old: to_pb(old) as i32,
                new: to_pb(new) as i32,
            })
        })
        .collect())
}

/// Whether a subscriber may choose `value` for a setting of topic `t`.
fn check_topic_setting(t: &Topic, path: &Path, value: Value) -> Result<(), String> {
    match path {
        Path::Topic(_) if t.required && value == Some(false) => Err(format!(
            "topic {} is required (transactional): it cannot be opted out of; choose its channels instead",
            quote(&t.id)
        )),
        Path::TopicChannel(_, c) if !t.allows(*c) => Err(format!(
            "topic {} does not use {c} (its channels: {})",
            quote(&t.id),
            t.usable_channels()
                .iter()
                .map(|c| c.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        )),
        _ => Ok(()),
    }
}

/// The audit view of a change: its path and values as text.
pub fn describe(c: &pb::PreferenceChange) -> (String, &'static str, &'static str) {
    let name = |v: Value| match v {
        None => "inherit",
        Some(true) => "on",
        Some(false) => "off",
    };
    (c.path.clone(), name(from_pb(c.old)), name(from_pb(c.new)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn topics(id: &str) -> Option<Topic> {
        let t = |id: &str, required: bool, channels: &[Channel]| Topic {
            id: id.into(),
            name: id.into(),
            channels: channels.iter().map(|c| topic::ChannelName(*c)).collect(),
            default_opt_in: true,
            required,
            ..Topic::default()
        };
        match id {
            "marketing" => Some(t(id, false, &[])),
            "appointments" => Some(t(id, true, &[Channel::Sms, Channel::Email])),
            "ops.alerts" => Some(t(id, false, &[])),
            _ => None,
        }
    }

    fn req(path: &str, value: Value) -> Requested {
        Requested {
            path: path.into(),
            value,
        }
    }

    #[test]
    fn paths_parse_and_print_alike() {
        for p in [
            "channels.sms",
            "topics.marketing",
            "topics.marketing.in_app",
            "topics.ops.alerts",
            "topics.ops.alerts.email",
            "marketing",
        ] {
            assert_eq!(Path::parse(p).unwrap().to_string(), p);
        }
        assert_eq!(
            Path::parse("topics.ops.alerts").unwrap(),
            Path::Topic("ops.alerts".into())
        );
        assert!(Path::parse("channels.fax").is_err());
        assert!(Path::parse("volume").is_err());
        assert!(Path::parse("topics.").is_err());
    }

    #[test]
    fn a_global_switch_keeps_the_finer_settings() {
        let mut p = Preferences::default();
        let changes = validate_changes(
            "changes",
            &[req("topics.marketing.sms", Some(false))],
            &p,
            &topics,
        )
        .unwrap();
        p.apply(&pb::PreferencesChanged {
            changes,
            ..Default::default()
        });
        let off =
            validate_changes("changes", &[req("channels.sms", Some(false))], &p, &topics).unwrap();
        p.apply(&pb::PreferencesChanged {
            changes: off,
            ..Default::default()
        });
        assert_eq!(p.get(&Path::Channel(Channel::Sms)), Some(false));
        assert_eq!(
            p.get(&Path::TopicChannel("marketing".into(), Channel::Sms)),
            Some(false),
            "the topic × channel choice survives the global switch"
        );
        let back = Preferences::decode(&p.encode()).unwrap();
        assert_eq!(back, p);
    }

    #[test]
    fn changes_record_old_and_new_and_skip_no_ops() {
        let mut p = Preferences::default();
        p.set(&Path::Channel(Channel::Email), Some(true));
        let c = validate_changes(
            "changes",
            &[
                req("channels.email", Some(true)),
                req("channels.email", None),
                req("topics.marketing", Some(false)),
            ],
            &p,
            &topics,
        )
        .unwrap();
        let described: Vec<_> = c.iter().map(describe).collect();
        assert_eq!(
            described,
            vec![
                ("channels.email".to_string(), "on", "inherit"),
                ("topics.marketing".to_string(), "inherit", "off"),
            ]
        );
    }

    #[test]
    fn bad_changes_name_the_field() {
        let p = Preferences::default();
        let v = validate_changes(
            "changes",
            &[
                req("topics.unknown", Some(false)),
                req("channels.fax", Some(false)),
                req("topics.appointments", Some(false)),
                req("topics.appointments.push", Some(true)),
            ],
            &p,
            &topics,
        )
        .unwrap_err();
        let fields: Vec<&str> = v.0.iter().map(|f| f.field.as_str()).collect();
        assert_eq!(
            fields,
            [
                "changes[0].path",
                "changes[1].path",
                "changes[2].value",
                "changes[3].value"
            ]
        );
        assert!(v.0[2].description.contains("required"), "{v:?}");
    }

    #[test]
    fn a_required_topic_keeps_one_channel() {
        let p = Preferences::default();
        assert!(validate_changes(
            "changes",
            &[req("topics.appointments.sms", Some(false))],
            &p,
            &topics
        )
        .is_ok());
        let v = validate_changes(
            "changes",
            &[
                req("topics.appointments.sms", Some(false)),
                req("topics.appointments.email", Some(false)),
            ],
            &p,
            &topics,
        )
        .unwrap_err();
        assert!(v.0[0].description.contains("at least one"), "{v:?}");
    }
}
