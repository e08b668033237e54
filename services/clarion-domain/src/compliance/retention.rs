//! Retention policies: per channel × country (of the recipient), after how
//! many days message bodies are redacted (the day's body key destroyed) and,
//! tenant-wide, after how many days without a notification a subscriber's
//! personal data is shredded (their data key destroyed).
//!
//! A rule names a channel (`email`, ...) or `*`, and a country (ISO 3166-1
//! alpha-2) or `*`. The most specific rule wins: channel and country, then
//! channel with `*`, then `*` with country, then `*`/`*`. No rule: kept.

use chrono::NaiveDate;
use clarion_proto::events as pb;

use super::holds::HoldBook;
use super::DAY_MS;
use crate::channel::Channel;
use crate::error::Violations;

/// Most rules in a policy.
pub const MAX_RULES: usize = 200;
/// Longest retention: 100 years.
pub const MAX_DAYS: u32 = 36_500;
pub const ANY: &str = "*";

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rule {
    pub channel: String,
    pub country: String,
    /// 0: bodies kept.
    pub redact_bodies_after_days: u32,
    /// 0: no shredding for inactivity. Only on the `*`/`*` rule.
    pub shred_subscriber_after_days: u32,
}

impl Rule {
    fn specificity(&self) -> u8 {
        2 * u8::from(self.channel != ANY) + u8::from(self.country != ANY)
    }

    fn matches(&self, channel: &str, country: &str) -> bool {
        (self.channel == ANY || self.channel == channel)
            && (self.country == ANY || self.country.eq_ignore_ascii_case(country))
    }
}

/// A tenant's policy (version 0 and no rules: never set, everything kept).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Policy {
    pub rules: Vec<Rule>,
    pub version: u32,
}

fn check_country(v: &mut Violations, field: &str, c: &str) -> String {
    if c == ANY {
        return c.to_string();
    }
    let up = c.to_ascii_uppercase();
    if up.len() != 2 || !up.bytes().all(|b| b.is_ascii_uppercase()) {
        v.push(
            field,
            format!("{c:?} is not a country: an ISO 3166-1 alpha-2 code (\"DE\") or \"*\""),
        );
    }
    up
}

fn check_rule(v: &mut Violations, i: usize, r: &pb::RetentionRule) -> Rule {
    let at = |f: &str| format!("rules[{i}].{f}");
    if r.channel != ANY {
        if let Err(e) = r.channel.parse::<Channel>() {
            v.push(at("channel"), format!("{e}, or \"*\""));
        }
    }
    let country = check_country(v, &at("country"), &r.country);
    for (f, d) in [
        ("redact_bodies_after_days", r.redact_bodies_after_days),
        ("shred_subscriber_after_days", r.shred_subscriber_after_days),
    ] {
        if d > MAX_DAYS {
            v.push(at(f), format!("at most {MAX_DAYS} days"));
        }
    }
    let tenant_wide = r.channel == ANY && country == ANY;
    if r.shred_subscriber_after_days > 0 && !tenant_wide {
        v.push(
            at("shred_subscriber_after_days"),
            "is tenant-wide: set it on the rule with channel \"*\" and country \"*\"",
        );
    }
    Rule {
        channel: r.channel.clone(),
        country,
        redact_bodies_after_days: r.redact_bodies_after_days,
        shred_subscriber_after_days: r.shred_subscriber_after_days,
    }
}

impl Policy {
    /// Checks rules given by a caller (`rules[2].country`, ...).
    pub fn check(rules: &[pb::RetentionRule], version: u32) -> Result<Policy, Violations> {
        let mut v = Violations::default();
        if rules.len() > MAX_RULES {
            v.push("rules", format!("at most {MAX_RULES} rules"));
            return Err(v);
        }
        let mut out: Vec<Rule> = Vec::with_capacity(rules.len());
        for (i, r) in rules.iter().enumerate() {
            let rule = check_rule(&mut v, i, r);
            if out
                .iter()
                .any(|o| o.channel == rule.channel && o.country == rule.country)
            {
                v.push(
                    format!("rules[{i}]"),
                    "a rule for this channel and country is given twice",
                );
            }
            out.push(rule);
        }
        v.into_result()?;
        Ok(Policy {
            rules: out,
            version,
        })
    }

    /// The policy of its event (already checked when it was set).
    pub fn from_event(e: &pb::RetentionPolicySet) -> Policy {
        Policy {
            rules: e
                .rules
                .iter()
                .map(|r| Rule {
                    channel: r.channel.clone(),
                    country: r.country.clone(),
                    redact_bodies_after_days: r.redact_bodies_after_days,
                    shred_subscriber_after_days: r.shred_subscriber_after_days,
                })
                .collect(),
            version: e.version,
        }
    }

    pub fn to_event(&self) -> pb::RetentionPolicySet {
        pb::RetentionPolicySet {
            rules: self
                .rules
                .iter()
                .map(|r| pb::RetentionRule {
                    channel: r.channel.clone(),
                    country: r.country.clone(),
                    redact_bodies_after_days: r.redact_bodies_after_days,
                    shred_subscriber_after_days: r.shred_subscriber_after_days,
                })
                .collect(),
            version: self.version,
        }
    }

    /// The rule in force for a channel and country: the most specific.
    pub fn rule_for(&self, channel: &str, country: &str) -> Option<&Rule> {
        self.rules
            .iter()
            .filter(|r| r.matches(channel, country))
            .max_by_key(|r| r.specificity())
    }

    /// Subscribers without a notification since this time are shredded
    /// (`None`: no shredding).
    pub fn shred_cutoff_ms(&self, now_ms: i64) -> Option<i64> {
        let days = self.rule_for(ANY, ANY)?.shred_subscriber_after_days;
        (days > 0).then(|| now_ms - i64::from(days) * DAY_MS)
    }
}

/// One body key: the tenant's key of a day, channel and country.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct BodyKey {
    pub day: NaiveDate,
    pub channel: String,
    pub country: String,
}

/// Which body keys to destroy now, and which a hold keeps.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DueKeys {
    pub due: Vec<BodyKey>,
    pub held_back: Vec<BodyKey>,
}

/// Days since the epoch of a date.
pub fn day_number(d: NaiveDate) -> i64 {
    (d - NaiveDate::from_ymd_opt(1970, 1, 1).expect("epoch")).num_days()
}

/// The keys among `existing` whose bodies are past their rule's days at
/// `now` (day D with N days: due from the start of day D + N, UTC), split
/// by whether a hold in force keeps their day.
pub fn due_body_keys(
    now_ms: i64,
    policy: &Policy,
    holds: &HoldBook,
    existing: &[BodyKey],
) -> DueKeys {
    let today = now_ms.div_euclid(DAY_MS);
    let mut out = DueKeys::default();
    for k in existing {
        let Some(rule) = policy.rule_for(&k.channel, &k.country) else {
            continue;
        };
        let days = i64::from(rule.redact_bodies_after_days);
        let day = day_number(k.day);
        if days == 0 || today - day < days {
            continue;
        }
        if holds.blocks_day(day, now_ms) {
            out.held_back.push(k.clone());
        } else {
            out.due.push(k.clone());
        }
    }
    out
}

#[cfg(test)]
mod tests;
