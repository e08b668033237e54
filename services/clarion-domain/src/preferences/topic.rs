//! Topics: what a tenant's notifications are about (`appointments`,
//! `invoices`, `marketing`), and the rules subscribers choose within.
//!
//! A topic is tenant configuration (`TopicRegistered` on `config`, the
//! latest event of a topic in force). Other modules register their own
//! topics through the API; workflows name theirs.

use std::collections::BTreeSet;

use clarion_proto::events as pb;
use serde::{Deserialize, Serialize};

use crate::channel::Channel;
use crate::error::Violations;
use crate::limits::{self, check_len};
use crate::workflow::validate_id;

/// Topics a tenant may register (bounds the preference state per subscriber).
pub const MAX_TOPICS: usize = 500;
/// A topic description's size.
pub const MAX_DESCRIPTION_BYTES: usize = 1024;

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Topic {
    pub id: String,
    pub name: String,
    pub description: String,
    /// Channels the topic may use; empty: every channel.
    pub channels: BTreeSet<ChannelName>,
    /// Whether a subscriber who never chose receives it.
    pub default_opt_in: bool,
    /// Transactional: no opt-out, only a choice among its channels.
    pub required: bool,
    /// Commercial: blocked by a subscriber's marketing unsubscribe, always.
    pub marketing: bool,
    pub version: u32,
}

/// A channel by its wire name, ordered by that name (sets print sorted).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct ChannelName(pub Channel);

impl PartialOrd for ChannelName {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for ChannelName {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.0.as_str().cmp(other.0.as_str())
    }
}

impl TryFrom<String> for ChannelName {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        s.parse().map(ChannelName)
    }
}

impl From<ChannelName> for String {
    fn from(c: ChannelName) -> String {
        c.0.as_str().to_string()
    }
}

impl Topic {
    /// Whether the topic may use `channel`.
    pub fn allows(&self, channel: Channel) -> bool {
        self.channels.is_empty() || self.channels.contains(&ChannelName(channel))
    }

    /// The channels it may use, in name order.
    pub fn usable_channels(&self) -> Vec<Channel> {
        if self.channels.is_empty() {
            let mut all = Channel::ALL.to_vec();
            all.sort_by_key(|c| c.as_str());
            all
        } else {
            self.channels.iter().map(|c| c.0).collect()
        }
    }

    pub fn from_event(e: &pb::TopicRegistered) -> Topic {
        Topic {
            id: e.topic_id.clone(),
            name: e.name.clone(),
            description: e.description.clone(),
            channels: e
                .channels
                .iter()
                .filter_map(|c| c.parse().ok().map(ChannelName))
                .collect(),
            default_opt_in: e.default_opt_in,
            required: e.required,
            marketing: e.marketing,
            version: e.version,
        }
    }

    /// The event registering this definition (as version `self.version`),
    /// recording the one it replaces.
    pub fn to_event(&self, previous: Option<&Topic>, origin: pb::Origin) -> pb::TopicRegistered {
        pb::TopicRegistered {
            topic_id: self.id.clone(),
            name: self.name.clone(),
            description: self.description.clone(),
            channels: self.channels.iter().map(|c| String::from(*c)).collect(),
            default_opt_in: self.default_opt_in,
            required: self.required,
            marketing: self.marketing,
            previous_json: previous
                .map(|p| serde_json::to_string(p).expect("a topic is JSON"))
                .unwrap_or_default(),
            origin: Some(origin),
            version: self.version,
        }
    }
}

/// A topic as a caller writes it (channels by name, unchecked).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TopicInput {
    pub id: String,
    pub name: String,
    pub description: String,
    pub channels: Vec<String>,
    pub default_opt_in: bool,
    pub required: bool,
    pub marketing: bool,
}

/// Checks a topic definition; `known` is how many topics the tenant has
/// (a new one beyond [`MAX_TOPICS`] is refused) and `previous` the version
/// it replaces. Returns the topic to register.
pub fn validate(
    input: &TopicInput,
    previous: Option<&Topic>,
    known: usize,
) -> Result<Topic, Violations> {
    let mut v = Violations::default();
    validate_id(&mut v, "topic_id", &input.id);
    check_len(&mut v, "name", &input.name, limits::MAX_NAME_BYTES);
    check_len(
        &mut v,
        "description",
        &input.description,
        MAX_DESCRIPTION_BYTES,
    );
    let mut channels = BTreeSet::new();
    for (i, c) in input.channels.iter().enumerate() {
        match c.parse::<Channel>() {
            Ok(c) => {
                if !channels.insert(ChannelName(c)) {
                    v.push(format!("channels[{i}]"), format!("{c} is listed twice"));
                }
            }
            Err(e) => v.push(format!("channels[{i}]"), e),
        }
    }
    if input.required && input.marketing {
        v.push(
            "required",
            "a marketing topic cannot be required: subscribers may always unsubscribe from marketing",
        );
    }
    if previous.is_none() && known >= MAX_TOPICS {
        v.push(
            "topic_id",
            format!("the tenant already has {MAX_TOPICS} topics, the most it may have"),
        );
    }
    v.into_result()?;
    Ok(Topic {
        id: input.id.clone(),
        name: if input.name.is_empty() {
            input.id.clone()
        } else {
            input.name.clone()
        },
        description: input.description.clone(),
        channels,
        default_opt_in: input.default_opt_in,
        required: input.required,
        marketing: input.marketing,
        version: previous.map_or(1, |p| p.version + 1),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn input(id: &str) -> TopicInput {
        TopicInput {
            id: id.into(),
            channels: vec!["sms".into(), "email".into()],
            default_opt_in: true,
            ..TopicInput::default()
        }
    }

    #[test]
    fn a_valid_topic_gets_version_one_then_the_next() {
        let t = validate(&input("invoices"), None, 3).unwrap();
        assert_eq!(t.version, 1);
        assert_eq!(t.name, "invoices", "the id names an unnamed topic");
        assert!(t.allows(Channel::Sms) && !t.allows(Channel::Push));
        assert_eq!(t.usable_channels(), vec![Channel::Email, Channel::Sms]);
        let again = validate(&input("invoices"), Some(&t), 500).unwrap();
        assert_eq!(again.version, 2, "an update is not a new topic");
        let back = Topic::from_event(&again.to_event(Some(&t), pb::Origin::default()));
        assert_eq!(back, again);
    }

    #[test]
    fn bad_topics_name_their_fields() {
        let bad = TopicInput {
            id: "has space".into(),
            channels: vec!["fax".into(), "sms".into(), "sms".into()],
            required: true,
            marketing: true,
            ..TopicInput::default()
        };
        let v = validate(&bad, None, 0).unwrap_err();
        let fields: Vec<&str> = v.0.iter().map(|f| f.field.as_str()).collect();
        assert_eq!(
            fields,
            ["topic_id", "channels[0]", "channels[2]", "required"]
        );
        let full = validate(&input("one-more"), None, MAX_TOPICS).unwrap_err();
        assert_eq!(full.0[0].field, "topic_id");
    }
}
