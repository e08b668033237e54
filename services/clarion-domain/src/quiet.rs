//! Quiet hours: periods in the recipient's zone when non-critical sends are
//! held (sent when the period ends) or dropped, per channel. A tenant sets a
//! default; a subscriber's setting, when it exists, replaces it whole.

use chrono::{Datelike, Duration, NaiveDateTime, NaiveTime, Timelike};
use clarion_proto::events as pb;

use crate::error::Violations;
use crate::time::{self, Tz};
use crate::Channel;

/// Rules per setting at most (tenant input is bounded).
pub const MAX_RULES: usize = 20;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Policy {
    /// Send when the period ends.
    Hold,
    /// End the send suppressed.
    Drop,
}

impl Policy {
    pub fn as_str(&self) -> &'static str {
        match self {
            Policy::Hold => "hold",
            Policy::Drop => "drop",
        }
    }
}

/// A validated quiet-hours setting.
#[derive(Clone, Debug, PartialEq)]
pub struct QuietHours {
    pub version: u32,
    /// The setting's own zone; `None`: the recipient's.
    pub timezone: Option<Tz>,
    pub enabled: bool,
    /// A subscriber's override (`false`: the tenant's default).
    pub subscriber: bool,
    rules: Vec<Rule>,
}

#[derive(Clone, Debug, PartialEq)]
struct Rule {
    /// Empty: every channel.
    channels: Vec<Channel>,
    /// Days a period starts on, Monday first.
    days: [bool; 7],
    start: NaiveTime,
    end: NaiveTime,
    policy: Policy,
}

/// A send inside a quiet period.
#[derive(Clone, Debug, PartialEq)]
pub struct Quiet {
    pub policy: Policy,
    /// When the period ends (ms).
    pub ends_at_ms: i64,
    /// "22:00-07:00 Europe/Paris".
    pub period: String,
}

impl QuietHours {
    /// Validates a setting; violations name the field (`rules[0].start`).
    pub fn from_event(e: &pb::QuietHoursSet) -> Result<QuietHours, Violations> {
        let mut v = Violations::default();
        let timezone = match e.timezone.trim() {
            "" => None,
            z => match time::zone(z) {
                Ok(tz) => Some(tz),
                Err(reason) => {
                    v.push("timezone", reason);
                    None
                }
            },
        };
        if e.rules.len() > MAX_RULES {
            v.push(
                "rules",
                format!("at most {MAX_RULES} rules ({} given)", e.rules.len()),
            );
            return Err(v);
        }
        let rules: Vec<Rule> = e
            .rules
            .iter()
            .enumerate()
            .filter_map(|(i, r)| Rule::parse(&mut v, &format!("rules[{i}]"), r))
            .collect();
        v.into_result()?;
        if let Some(c) = quiet_all_week(&rules) {
            // Holds would chain from one period into the next for ever (or
            // every send would be dropped): the channel is off, and
            // preferences are where a channel is turned off.
            return Err(Violations::single(
                "rules",
                format!(
                    "the rules leave no minute of the week open on channel {c}: nothing \
                     non-critical would ever be sent there (leave a gap, or turn the channel \
                     off in preferences)"
                ),
            ));
        }
        Ok(QuietHours {
            version: e.version,
            timezone,
            enabled: e.enabled,
            subscriber: !e.subscriber_id.is_empty(),
            rules,
        })
    }

    /// Whether a send on `channel` at `at_ms` falls in a quiet period, read
    /// in the setting's zone if it has one, else in `tz` (the recipient's).
    /// When several periods hold, the one that ends last decides.
    pub fn check(&self, at_ms: i64, tz: Tz, channel: &str) -> Option<Quiet> {
        if !self.enabled {
            return None;
        }
        let tz = self.timezone.unwrap_or(tz);
        let channel = channel.parse::<Channel>().ok();
        let local = time::local_of(at_ms, tz);
        self.rules
            .iter()
            .filter(|r| r.channels.is_empty() || channel.is_some_and(|c| r.channels.contains(&c)))
            .filter_map(|r| r.period_around(local).map(|end| (r, end)))
            .max_by_key(|(_, end)| *end)
            .map(|(r, end)| Quiet {
                policy: r.policy,
                ends_at_ms: time::instant_of(end, tz).max(at_ms + 1),
                period: format!("{}-{} {tz}", r.start.format("%H:%M"), r.end.format("%H:%M")),
            })
    }

    /// "subscriber setting v3" / "tenant setting v2", for history notes.
    pub fn describe(&self) -> String {
        let scope = if self.subscriber {
            "subscriber"
        } else {
            "tenant"
        };
        format!("{scope} setting v{}", self.version)
    }
}

const WEEK_MINUTES: usize = 7 * 1440;

/// The first channel the rules keep quiet every minute of the week (local
/// time, as the rules read), if any.
fn quiet_all_week(rules: &[Rule]) -> Option<Channel> {
    let minute = |t: NaiveTime| (t.num_seconds_from_midnight() / 60) as usize;
    Channel::ALL.into_iter().find(|c| {
        let mut quiet = vec![false; WEEK_MINUTES];
        for r in rules
            .iter()
            .filter(|r| r.channels.is_empty() || r.channels.contains(c))
        {
            let (start, end) = (minute(r.start), minute(r.end));
            let len = if end > start {
                end - start
            } else {
                end + 1440 - start
            };
            for day in (0..7).filter(|&d| r.days[d]) {
                for m in 0..len {
                    quiet[(day * 1440 + start + m) % WEEK_MINUTES] = true;
                }
            }
        }
        quiet.iter().all(|&q| q)
    })
}

impl Rule {
    fn parse(v: &mut Violations, f: &str, r: &pb::QuietRule) -> Option<Rule> {
        let before = v.0.len();
        let mut channels = Vec::new();
        for (k, c) in r.channels.iter().enumerate() {
            match c.parse::<Channel>() {
                Ok(c) => channels.push(c),
                Err(e) => v.push(format!("{f}.channels[{k}]"), e),
            }
        }
        let mut days = [r.days.is_empty(); 7];
        for (k, d) in r.days.iter().enumerate() {
            match time::day_index(d) {
                Ok(i) => days[i] = true,
                Err(e) => v.push(format!("{f}.days[{k}]"), e),
            }
        }
        let start = time::parse_local_time(&r.start)
            .map_err(|e| v.push(format!("{f}.start"), e))
            .ok();
        let end = time::parse_local_time(&r.end)
            .map_err(|e| v.push(format!("{f}.end"), e))
            .ok();
        if let (Some(s), Some(e)) = (start, end) {
            if s == e {
                v.push(
                    format!("{f}.end"),
                    "the end equals the start: an empty period (use 00:00-23:59 for a whole day)",
                );
            }
        }
        let policy = match r.policy.as_str() {
            "hold" | "" => Some(Policy::Hold),
            "drop" => Some(Policy::Drop),
            other => {
                v.push(
                    format!("{f}.policy"),
                    format!("unknown policy {other:?} (hold or drop)"),
                );
                None
            }
        };
        if v.0.len() > before {
            return None;
        }
        Some(Rule {
            channels,
            days,
            start: start?,
            end: end?,
            policy: policy?,
        })
    }

    /// The end (local) of this rule's period containing `local`, if any: a
    /// period starts on an allowed day and runs over midnight when its end
    /// is not after its start.
    fn period_around(&self, local: NaiveDateTime) -> Option<NaiveDateTime> {
        let overnight = self.end <= self.start;
        [local.date(), local.date() - Duration::days(1)]
            .into_iter()
            .filter(|d| self.days[d.weekday().num_days_from_monday() as usize])
            .find_map(|d| {
                let start = d.and_time(self.start);
                let end_day = if overnight { d + Duration::days(1) } else { d };
                let end = end_day.and_time(self.end);
                (start <= local && local < end).then_some(end)
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn rule(
        channels: &[&str],
        days: &[&str],
        start: &str,
        end: &str,
        policy: &str,
    ) -> pb::QuietRule {
        pb::QuietRule {
            channels: channels.iter().map(|s| s.to_string()).collect(),
            days: days.iter().map(|s| s.to_string()).collect(),
            start: start.into(),
            end: end.into(),
            policy: policy.into(),
        }
    }

    fn setting(rules: Vec<pb::QuietRule>, timezone: &str) -> QuietHours {
        QuietHours::from_event(&pb::QuietHoursSet {
            subscriber_id: "s1".into(),
            rules,
            timezone: timezone.into(),
            enabled: true,
            version: 3,
            origin: None,
        })
        .unwrap()
    }

    fn at(s: &str) -> i64 {
        time::parse_instant(s).unwrap()
    }

    #[test]
    fn an_overnight_period_holds_until_morning_in_the_recipient_zone() {
        let q = setting(vec![rule(&[], &[], "22:00", "07:00", "hold")], "");
        let paris = time::zone("Europe/Paris").unwrap();
        // 23:30 Paris on a Tuesday in winter.
        let got = q.check(at("2026-12-08T22:30:00Z"), paris, "sms").unwrap();
        assert_eq!(got.policy, Policy::Hold);
        assert_eq!(got.ends_at_ms, at("2026-12-09T06:00:00Z"));
        assert_eq!(got.period, "22:00-07:00 Europe/Paris");
        assert_eq!(q.describe(), "subscriber setting v3");
        // After midnight, still the same period; at 07:00 it is over.
        assert!(q
            .check(at("2026-12-09T05:59:59Z"), paris, "email")
            .is_some());
        assert!(q
            .check(at("2026-12-09T06:00:00Z"), paris, "email")
            .is_none());
        // The same instant is afternoon in Tokyo.
        let tokyo = time::zone("Asia/Tokyo").unwrap();
        assert!(q.check(at("2026-12-08T22:30:00Z"), tokyo, "sms").is_none());
    }

    #[test]
    fn channels_days_zones_and_the_switch() {
        let q = setting(
            vec![
                rule(&["sms"], &["fri"], "20:00", "08:00", "drop"),
                rule(&["email"], &["sat", "sun"], "00:00", "23:59", "hold"),
            ],
            "America/New_York",
        );
        let ignored = Tz::UTC; // the setting's own zone wins
                               // Friday 21:00 New York = Saturday 02:00 UTC.
        let fri = at("2026-12-05T02:00:00Z");
        assert_eq!(q.check(fri, ignored, "sms").unwrap().policy, Policy::Drop);
        assert!(q.check(fri, ignored, "push").is_none(), "other channels go");
        assert!(
            q.check(fri, ignored, "email").is_none(),
            "email is quiet on weekends only"
        );
        // Thursday 21:00: the sms rule starts on Fridays only.
        assert!(q
            .check(at("2026-12-04T02:00:00Z"), ignored, "sms")
            .is_none());
        let mut off = q.clone();
        off.enabled = false;
        assert!(off.check(fri, ignored, "sms").is_none());
    }

    #[test]
    fn bad_settings_name_the_field() {
        let e = QuietHours::from_event(&pb::QuietHoursSet {
            rules: vec![
                rule(&["fax"], &["someday"], "25:00", "07:00", "hold"),
                rule(&[], &[], "22:00", "22:00", "maybe"),
            ],
            timezone: "Nowhere/Special".into(),
            enabled: true,
            ..Default::default()
        })
        .unwrap_err();
        let fields: Vec<&str> = e.0.iter().map(|v| v.field.as_str()).collect();
        for f in [
            "timezone",
            "rules[0].channels[0]",
            "rules[0].days[0]",
            "rules[0].start",
            "rules[1].end",
            "rules[1].policy",
        ] {
            assert!(fields.contains(&f), "{f} missing from {fields:?}");
        }
    }

    #[test]
    fn rules_that_close_a_channel_all_week_are_refused() {
        let set = |rules| pb::QuietHoursSet {
            rules,
            enabled: true,
            ..Default::default()
        };
        // Together these cover the whole day for push, every day: a held
        // push would wait for ever (a property test found it).
        let e = QuietHours::from_event(&set(vec![
            rule(&["push"], &[], "01:45", "20:00", "hold"),
            rule(&[], &[], "15:22", "04:48", "hold"),
        ]))
        .unwrap_err();
        assert_eq!(e.0.len(), 1, "{e:?}");
        assert_eq!(e.0[0].field, "rules");
        assert!(e.0[0].description.contains("channel push"), "{e:?}");
        // A minute a day open is enough; so is one day a week.
        QuietHours::from_event(&set(vec![rule(&[], &[], "00:00", "23:59", "hold")])).unwrap();
        QuietHours::from_event(&set(vec![
            rule(&["push"], &[], "01:45", "20:00", "hold"),
            rule(
                &[],
                &["mon", "tue", "wed", "thu", "fri", "sat"],
                "15:22",
                "04:48",
                "hold",
            ),
        ]))
        .unwrap();
    }

    const ZONES: [&str; 8] = [
        "UTC",
        "Europe/Paris",
        "America/New_York",
        "Asia/Kolkata",
        "Australia/Lord_Howe",
        "Pacific/Chatham",
        "America/Sao_Paulo",
        "Asia/Tokyo",
    ];

    proptest! {
        /// Inside a period, its end is later and outside it; outside every
        /// period nothing is reported.
        #[test]
        fn a_reported_period_contains_the_instant_and_ends_outside(
            z in 0usize..ZONES.len(),
            start_min in 0u32..1440,
            end_min in 0u32..1440,
            t in 1_767_225_600_000i64..1_830_297_600_000i64, // 2026..2028
        ) {
            prop_assume!(start_min != end_min);
            let hm = |m: u32| format!("{:02}:{:02}", m / 60, m % 60);
            let q = setting(vec![rule(&[], &[], &hm(start_min), &hm(end_min), "hold")], "");
            let tz = time::zone(ZONES[z]).unwrap();
            let local = time::local_of(t, tz).time();
            let (s, e) = (
                NaiveTime::from_hms_opt(start_min / 60, start_min % 60, 0).unwrap(),
                NaiveTime::from_hms_opt(end_min / 60, end_min % 60, 0).unwrap(),
            );
            let inside = if s < e { s <= local && local < e } else { local >= s || local < e };
            match q.check(t, tz, "sms") {
                Some(quiet) => {
                    prop_assert!(inside, "reported quiet at {local} for {s}-{e}");
                    prop_assert!(quiet.ends_at_ms > t);
                    prop_assert!(q.check(quiet.ends_at_ms, tz, "sms").is_none()
                        || quiet.ends_at_ms - t > 23 * 3_600_000,
                        "the end is outside the period");
                }
                None => prop_assert!(!inside, "missed quiet at {local} for {s}-{e}"),
            }
        }
    }
}
