//! Whether a send may go out, and which rule decided: the precedence table
//! of docs/preferences.md, in code. The router calls [`evaluate`] before
//! every send and `POST /v1/preferences/evaluate` calls the same function,
//! so the explanation cannot drift from the behaviour.
//!
//! The rows, first match wins:
//!
//! | # | rule | when | verdict |
//! |---|------|------|---------|
//! | 1 | `contact_unverified` | the address is a changed email/phone not yet confirmed | deny (only the verification message goes) |
//! | 2 | `legal_block` | marketing topic and the subscriber unsubscribed from marketing | deny, even for critical workflows |
//! | 3 | `topic_channels` | the topic does not use this channel | deny |
//! | 4 | `critical_workflow` | the workflow is critical | allow |
//! | 5 | `required_topic` | the topic is required: its topic × channel choice if any, else allow | per choice / allow |
//! | 6 | `global_channel` | the subscriber switched the channel off | deny |
//! | 7 | `topic_channel` | the subscriber chose this channel for the topic | per choice |
//! | 8 | `topic_opt` | the subscriber opted in or out of the topic | per choice |
//! | 9 | `topic_default` | the topic's default | per default |
//! | 10 | `no_topic` | the workflow names no topic | allow |

use serde::Serialize;

use super::topic::Topic;
use super::{Path, Preferences};
use crate::channel::Channel;

/// What is asked: may this send go?
#[derive(Clone, Copy, Debug)]
pub struct Question<'a> {
    pub channel: Channel,
    /// The workflow's topic id, if it names one.
    pub topic_id: Option<&'a str>,
    /// The topic's definition (`None` when the workflow names none, or a
    /// topic that is not registered: then its subscriber settings still
    /// count, and the default is opted in).
    pub topic: Option<&'a Topic>,
    pub critical: bool,
    pub preferences: &'a Preferences,
    /// The address the send would go to (checked against unverified
    /// contacts); empty when the channel has none.
    pub address: &'a str,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Rule {
    ContactUnverified,
    LegalBlock,
    TopicChannels,
    CriticalWorkflow,
    RequiredTopic,
    GlobalChannel,
    TopicChannel,
    TopicOpt,
    TopicDefault,
    NoTopic,
}

impl Rule {
    pub fn as_str(&self) -> &'static str {
        match self {
            Rule::ContactUnverified => "contact_unverified",
            Rule::LegalBlock => "legal_block",
            Rule::TopicChannels => "topic_channels",
            Rule::CriticalWorkflow => "critical_workflow",
            Rule::RequiredTopic => "required_topic",
            Rule::GlobalChannel => "global_channel",
            Rule::TopicChannel => "topic_channel",
            Rule::TopicOpt => "topic_opt",
            Rule::TopicDefault => "topic_default",
            Rule::NoTopic => "no_topic",
        }
    }

    /// Every rule in precedence order (the table above).
    pub const ALL: [Rule; 10] = [
        Rule::ContactUnverified,
        Rule::LegalBlock,
        Rule::TopicChannels,
        Rule::CriticalWorkflow,
        Rule::RequiredTopic,
        Rule::GlobalChannel,
        Rule::TopicChannel,
        Rule::TopicOpt,
        Rule::TopicDefault,
        Rule::NoTopic,
    ];
}

/// The answer: allowed or not, the rule that decided, and a sentence naming
/// the topic, the channel and the setting.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Verdict {
    pub allowed: bool,
    pub rule: Rule,
    pub reason: String,
}

fn verdict(allowed: bool, rule: Rule, reason: String) -> Verdict {
    Verdict {
        allowed,
        rule,
        reason,
    }
}

fn on_off(b: bool) -> &'static str {
    if b {
        "on"
    } else {
        "off"
    }
}

/// Decides a send by the precedence table.
pub fn evaluate(q: &Question<'_>) -> Verdict {
    let p = q.preferences;
    let ch = q.channel;
    if let Some(c) = p.contacts.get(ch.as_str()) {
        if !c.verified && !q.address.is_empty() && c.value == q.address {
            return verdict(
                false,
                Rule::ContactUnverified,
                format!("{ch} contact {} is not verified yet", q.address),
            );
        }
    }
    let Some(topic_id) = q.topic_id else {
        return match p.channels.get(ch.as_str()) {
            Some(false) if !q.critical => verdict(
                false,
                Rule::GlobalChannel,
                format!("subscriber turned {ch} off (setting channels.{ch})"),
            ),
            _ if q.critical => verdict(
                true,
                Rule::CriticalWorkflow,
                "critical workflow; no topic".into(),
            ),
            _ => verdict(true, Rule::NoTopic, "the workflow names no topic".into()),
        };
    };
    let marketing = q.topic.is_some_and(|t| t.marketing);
    if marketing && p.marketing == Some(false) {
        return verdict(
            false,
            Rule::LegalBlock,
            format!("subscriber unsubscribed from marketing (setting marketing); topic {topic_id} is marketing"),
        );
    }
    if let Some(t) = q.topic.filter(|t| !t.allows(ch)) {
        return verdict(
            false,
            Rule::TopicChannels,
            format!("topic {} does not use {ch}", t.id),
        );
    }
    if q.critical {
        return verdict(
            true,
            Rule::CriticalWorkflow,
            format!("critical workflow: opt-outs of topic {topic_id} do not apply"),
        );
    }
    let topic_channel = p.get(&Path::TopicChannel(topic_id.to_string(), ch));
    if q.topic.is_some_and(|t| t.required) {
        let allowed = topic_channel.unwrap_or(true);
        let how = match topic_channel {
            Some(b) => format!(
                "subscriber chose {ch} {} for it (setting topics.{topic_id}.{ch})",
                on_off(b)
            ),
            None => "it cannot be opted out of".into(),
        };
        return verdict(
            allowed,
            Rule::RequiredTopic,
            format!("topic {topic_id} is required; {how}"),
        );
    }
    if p.channels.get(ch.as_str()) == Some(&false) {
        return verdict(
            false,
            Rule::GlobalChannel,
            format!("subscriber turned {ch} off (setting channels.{ch})"),
        );
    }
    if let Some(b) = topic_channel {
        return verdict(
            b,
            Rule::TopicChannel,
            format!(
                "subscriber turned {ch} {} for topic {topic_id} (setting topics.{topic_id}.{ch})",
                on_off(b)
            ),
        );
    }
    if let Some(b) = p.get(&Path::Topic(topic_id.to_string())) {
        let how = if b { "in to" } else { "out of" };
        return verdict(
            b,
            Rule::TopicOpt,
            format!("subscriber opted {how} topic {topic_id} (setting topics.{topic_id})"),
        );
    }
    let default = q.topic.is_none_or(|t| t.default_opt_in);
    let how = if default { "opted in" } else { "opted out" };
    verdict(
        default,
        Rule::TopicDefault,
        format!("topic {topic_id} is {how} by default"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::preferences::topic::ChannelName;
    use crate::preferences::verification::ContactState;

    fn topic(id: &str) -> Topic {
        Topic {
            id: id.into(),
            name: id.into(),
            default_opt_in: true,
            ..Topic::default()
        }
    }

    fn ask<'a>(
        p: &'a Preferences,
        t: Option<&'a Topic>,
        channel: Channel,
        critical: bool,
    ) -> Verdict {
        evaluate(&Question {
            channel,
            topic_id: t.map(|t| t.id.as_str()),
            topic: t,
            critical,
            preferences: p,
            address: "+15550000001",
        })
    }

    fn prefs(settings: &[(&str, Option<bool>)]) -> Preferences {
        let mut p = Preferences::default();
        for (path, v) in settings {
            p.set(&Path::parse(path).unwrap(), *v);
        }
        p
    }

    #[test]
    #[allow(clippy::type_complexity)] // one row of the table per tuple
    fn each_row_of_the_table_decides_where_it_stands() {
        let mut marketing = topic("marketing");
        marketing.marketing = true;
        let mut required = topic("appointments");
        required.required = true;
        required.channels = [ChannelName(Channel::Sms), ChannelName(Channel::Email)].into();
        let mut opt_out = topic("digest");
        opt_out.default_opt_in = false;
        let plain = topic("invoices");

        let cases: Vec<(Preferences, Option<&Topic>, Channel, bool, bool, Rule)> = vec![
            (
                prefs(&[("marketing", Some(false))]),
                Some(&marketing),
                Channel::Email,
                true,
                false,
                Rule::LegalBlock,
            ),
            (
                prefs(&[]),
                Some(&required),
                Channel::Push,
                true,
                false,
                Rule::TopicChannels,
            ),
            (
                prefs(&[("topics.invoices", Some(false))]),
                Some(&plain),
                Channel::Sms,
                true,
                true,
                Rule::CriticalWorkflow,
            ),
            (
                prefs(&[("channels.sms", Some(false))]),
                Some(&required),
                Channel::Sms,
                false,
                true,
                Rule::RequiredTopic,
            ),
            (
                prefs(&[("topics.appointments.sms", Some(false))]),
                Some(&required),
                Channel::Sms,
                false,
                false,
                Rule::RequiredTopic,
            ),
            (
                prefs(&[
                    ("channels.sms", Some(false)),
                    ("topics.invoices.sms", Some(true)),
                ]),
                Some(&plain),
                Channel::Sms,
                false,
                false,
                Rule::GlobalChannel,
            ),
            (
                prefs(&[
                    ("topics.invoices", Some(false)),
                    ("topics.invoices.sms", Some(true)),
                ]),
                Some(&plain),
                Channel::Sms,
                false,
                true,
                Rule::TopicChannel,
            ),
            (
                prefs(&[("topics.invoices", Some(false))]),
                Some(&plain),
                Channel::Email,
                false,
                false,
                Rule::TopicOpt,
            ),
            (
                prefs(&[]),
                Some(&opt_out),
                Channel::Email,
                false,
                false,
                Rule::TopicDefault,
            ),
            (
                prefs(&[("topics.digest", Some(true))]),
                Some(&opt_out),
                Channel::Email,
                false,
                true,
                Rule::TopicOpt,
            ),
            (prefs(&[]), None, Channel::Email, false, true, Rule::NoTopic),
            (
                prefs(&[("channels.email", Some(false))]),
                None,
                Channel::Email,
                false,
                false,
                Rule::GlobalChannel,
            ),
            (
                prefs(&[("channels.email", Some(false))]),
                None,
                Channel::Email,
                true,
                true,
                Rule::CriticalWorkflow,
            ),
        ];
        for (i, (p, t, ch, critical, allowed, rule)) in cases.iter().enumerate() {
            let v = ask(p, *t, *ch, *critical);
            assert_eq!((v.allowed, v.rule), (*allowed, *rule), "case {i}: {v:?}");
            assert!(
                v.reason.contains(ch.as_str()) || v.reason.contains("topic"),
                "case {i}: {v:?}"
            );
        }
    }

    #[test]
    fn an_unverified_contact_gets_nothing_until_confirmed() {
        let mut p = Preferences::default();
        p.contacts.insert(
            "sms".into(),
            ContactState {
                value: "+15550000001".into(),
                verified: false,
                ..ContactState::default()
            },
        );
        let t = topic("invoices");
        let v = ask(&p, Some(&t), Channel::Sms, true);
        assert_eq!((v.allowed, v.rule), (false, Rule::ContactUnverified));
        // Another address (the tenant's back end replaced it) is not held back.
        let other = evaluate(&Question {
            address: "+15550000002",
            ..Question {
                channel: Channel::Sms,
                topic_id: Some("invoices"),
                topic: Some(&t),
                critical: false,
                preferences: &p,
                address: "",
            }
        });
        assert!(other.allowed);
        p.contacts.get_mut("sms").unwrap().verified = true;
        assert!(ask(&p, Some(&t), Channel::Sms, false).allowed);
    }

    #[test]
    fn settings_of_an_unregistered_topic_still_count() {
        let p = prefs(&[("topics.gone", Some(false))]);
        let v = evaluate(&Question {
            channel: Channel::Email,
            topic_id: Some("gone"),
            topic: None,
            critical: false,
            preferences: &p,
            address: "",
        });
        assert_eq!((v.allowed, v.rule), (false, Rule::TopicOpt));
    }
}
