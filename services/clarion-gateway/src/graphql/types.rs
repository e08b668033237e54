//! The schema's object and input types, converted from the preference
//! center's own (`clarion_domain::preferences`) and the notification read.
//! Timestamps are milliseconds since the Unix epoch (`Int`, 64-bit).

use async_graphql::{Enum, InputObject, Json, SimpleObject};
use clarion_domain::preferences::topic::{Topic as DomainTopic, TopicInput as DomainTopicInput};
use clarion_domain::preferences::{self, Preferences as DomainPreferences};
use clarion_proto::api;

use crate::preferences::{ChangeView, Explained, HistoryEntry as DomainEntry};

/// A setting's value: on, off, or inherit (no choice: the coarser setting
/// or the topic's default decides).
#[derive(Enum, Copy, Clone, Debug, PartialEq, Eq)]
pub enum Setting {
    On,
    Off,
    Inherit,
}

impl Setting {
    pub fn of(v: preferences::Value) -> Setting {
        match v {
            Some(true) => Setting::On,
            Some(false) => Setting::Off,
            None => Setting::Inherit,
        }
    }

    pub fn value(self) -> preferences::Value {
        match self {
            Setting::On => Some(true),
            Setting::Off => Some(false),
            Setting::Inherit => None,
        }
    }
}

/// A channel's setting (only channels the subscriber chose are listed).
#[derive(SimpleObject, Clone, Debug)]
pub struct ChannelSetting {
    /// email | sms | push | in_app | webhook
    pub channel: String,
    pub value: Setting,
}

fn channel_settings(m: &std::collections::BTreeMap<String, bool>) -> Vec<ChannelSetting> {
    m.iter()
        .map(|(c, on)| ChannelSetting {
            channel: c.clone(),
            value: Setting::of(Some(*on)),
        })
        .collect()
}

/// A subscriber's choices for one topic.
#[derive(SimpleObject, Clone, Debug)]
pub struct TopicPreference {
    pub topic_id: String,
    /// Opted in (ON), out (OFF), or the topic's default (INHERIT).
    pub enabled: Setting,
    /// Per channel, only those chosen.
    pub channels: Vec<ChannelSetting>,
}

/// A contact changed through the preference APIs, and whether its owner
/// confirmed it. Contacts the tenant's back end set are trusted and not
/// listed.
#[derive(SimpleObject, Clone, Debug)]
#[graphql(name = "ContactStatus")]
pub struct ContactStatus {
    /// email | sms
    pub channel: String,
    pub value: String,
    pub verified: bool,
    /// While unverified: when the code sent to it stops working.
    pub code_expires_at_ms: Option<i64>,
}

/// A subscriber's settings: global channel switches, topics, the
/// marketing unsubscribe, contacts.
#[derive(SimpleObject, Clone, Debug)]
pub struct Preferences {
    /// Global channel switches the subscriber chose.
    pub channels: Vec<ChannelSetting>,
    pub topics: Vec<TopicPreference>,
    /// OFF: unsubscribed from marketing (a legal block no workflow overrides).
    pub marketing: Setting,
    pub contacts: Vec<ContactStatus>,
}

impl From<&DomainPreferences> for Preferences {
    fn from(p: &DomainPreferences) -> Preferences {
        Preferences {
            channels: channel_settings(&p.channels),
            topics: p
                .topics
                .iter()
                .map(|(id, s)| TopicPreference {
                    topic_id: id.clone(),
                    enabled: Setting::of(s.enabled),
                    channels: channel_settings(&s.channels),
                })
                .collect(),
            marketing: Setting::of(p.marketing),
            contacts: p
                .contacts
                .iter()
                .map(|(channel, c)| ContactStatus {
                    channel: channel.clone(),
                    value: c.value.clone(),
                    verified: c.verified,
                    code_expires_at_ms: (!c.verified).then_some(c.expires_at_ms),
                })
                .collect(),
        }
    }
}

/// One change to make: a setting's path and its new value.
#[derive(InputObject, Clone, Debug)]
pub struct PreferenceChangeInput {
    /// `channels.<channel>`, `topics.<topic>`, `topics.<topic>.<channel>` or `marketing`.
    pub path: String,
    pub value: Setting,
}

/// What notifications are about, and the rules subscribers choose within.
#[derive(SimpleObject, Clone, Debug)]
pub struct Topic {
    pub id: String,
    pub name: String,
    pub description: String,
    /// Channels it may use; empty: every channel.
    pub channels: Vec<String>,
    /// Whether a subscriber who never chose receives it.
    pub default_opt_in: bool,
    /// Transactional: no opt-out, only a choice among its channels.
    pub required: bool,
    /// Commercial: a marketing unsubscribe blocks it, always.
    pub marketing: bool,
    pub version: u32,
}

impl From<DomainTopic> for Topic {
    fn from(t: DomainTopic) -> Topic {
        Topic {
            channels: t.channels.iter().map(|c| String::from(*c)).collect(),
            id: t.id,
            name: t.name,
            description: t.description,
            default_opt_in: t.default_opt_in,
            required: t.required,
            marketing: t.marketing,
            version: t.version,
        }
    }
}

/// A topic to create or replace.
#[derive(InputObject, Clone, Debug)]
pub struct TopicInput {
    pub id: String,
    /// Display name; the id when empty.
    #[graphql(default)]
    pub name: String,
    #[graphql(default)]
    pub description: String,
    /// Channels it may use; empty: every channel.
    #[graphql(default)]
    pub channels: Vec<String>,
    #[graphql(default = true)]
    pub default_opt_in: bool,
    #[graphql(default)]
    pub required: bool,
    #[graphql(default)]
    pub marketing: bool,
}

impl From<TopicInput> for DomainTopicInput {
    fn from(t: TopicInput) -> DomainTopicInput {
        DomainTopicInput {
            id: t.id,
            name: t.name,
            description: t.description,
            channels: t.channels,
            default_opt_in: t.default_opt_in,
            required: t.required,
            marketing: t.marketing,
        }
    }
}

/// Would a send go out, and which rule of the precedence table decided.
#[derive(SimpleObject, Clone, Debug)]
pub struct Evaluation {
    pub allowed: bool,
    /// contact_unverified | legal_block | topic_channels | critical_workflow |
    /// required_topic | global_channel | topic_channel | topic_opt |
    /// topic_default | no_topic
    pub rule: String,
    /// A sentence naming the topic, the channel and the setting.
    pub reason: String,
    /// The workflow's topic, if it names one.
    pub topic_id: Option<String>,
    pub workflow_version: u32,
}

impl From<Explained> for Evaluation {
    fn from(e: Explained) -> Evaluation {
        Evaluation {
            allowed: e.verdict.allowed,
            rule: e.verdict.rule.as_str().to_string(),
            reason: e.verdict.reason,
            topic_id: e.topic_id,
            workflow_version: e.workflow_version,
        }
    }
}

/// One setting's change in the history.
#[derive(SimpleObject, Clone, Debug)]
pub struct SettingChange {
    pub path: String,
    /// on | off | inherit, or a contact's value.
    pub old: String,
    pub new: String,
}

/// One preference or contact change: who, when, through which door.
#[derive(SimpleObject, Clone, Debug)]
pub struct HistoryEntry {
    pub event_id: String,
    pub at_ms: i64,
    /// preferences_changed | contact_changed | contact_verified | contact_verification_failed
    pub kind: String,
    /// rest | graphql | grpc | console | cli
    pub interface: String,
    /// `api_key:<id>`, `operator:<id>` or `subscriber:<id>`.
    pub actor: String,
    pub changes: Vec<SettingChange>,
}

impl From<DomainEntry> for HistoryEntry {
    fn from(e: DomainEntry) -> HistoryEntry {
        HistoryEntry {
            event_id: e.event_id,
            at_ms: e.at_ms,
            kind: e.kind.to_string(),
            interface: e.interface,
            actor: e.actor,
            changes: e
                .changes
                .into_iter()
                .map(|ChangeView { path, old, new }| SettingChange { path, old, new })
                .collect(),
        }
    }
}

/// A page of a subscriber's preference history, oldest first.
#[derive(SimpleObject, Clone, Debug)]
pub struct PreferenceHistoryPage {
    pub entries: Vec<HistoryEntry>,
    /// Pass as `after` for the next page; null on the last.
    pub next_cursor: Option<String>,
}

/// One event in a notification's life.
#[derive(SimpleObject, Clone, Debug)]
pub struct NotificationEvent {
    pub event_id: String,
    /// The event's type, e.g. `clarion.notification.triggered.v1`.
    pub event_type: String,
    pub occurred_at_ms: i64,
    /// The event's details (JSON).
    pub detail: Json<serde_json::Value>,
}

/// A notification: its status and every event of its history.
#[derive(SimpleObject, Clone, Debug)]
pub struct Notification {
    pub id: String,
    pub workflow_id: String,
    pub subscriber_id: String,
    /// triggered | routed | dispatching | sent | delivered | failed |
    /// dead_lettered | cancelled | suppressed
    pub status: String,
    pub events: Vec<NotificationEvent>,
}

impl From<api::Notification> for Notification {
    fn from(n: api::Notification) -> Notification {
        Notification {
            id: n.notification_id,
            workflow_id: n.workflow_id,
            subscriber_id: n.subscriber_id,
            status: n.status,
            events: n
                .events
                .into_iter()
                .map(|e| NotificationEvent {
                    event_id: e.event_id,
                    event_type: e.event_type,
                    occurred_at_ms: e.occurred_at_ms,
                    detail: Json(serde_json::from_str(&e.detail_json).unwrap_or_default()),
                })
                .collect(),
        }
    }
}

/// The answer of `changeContact`.
#[derive(SimpleObject, Clone, Debug)]
pub struct ContactChange {
    pub channel: String,
    pub value: String,
    pub verified: bool,
    /// When the code sent to the new contact stops working.
    pub code_expires_at_ms: i64,
}

/// The answer of `verifyContact`.
#[derive(SimpleObject, Clone, Debug)]
pub struct VerifiedContact {
    pub channel: String,
    pub value: String,
    pub verified: bool,
}
