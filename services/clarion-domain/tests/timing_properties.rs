//! Properties of quiet hours as the router enforces them
//! (`recipient::timing::decide`, a pure function): for random zones,
//! quiet-hour settings, channels and event times, following the decisions
//! the way the router does (a held send is tried again at its release
//! time, checked again) —
//! * nothing non-critical is sent inside quiet hours;
//! * a held send is sent exactly once, after its quiet period, unless a
//!   drop rule ends it; a dropped one is never sent;
//! * a critical send goes at once.

use clarion_domain::flow::run::Purpose;
use clarion_domain::quiet::QuietHours;
use clarion_domain::recipient::timing::{decide, Check, Gate, Scope};
use clarion_domain::time::{self, Tz};
use clarion_proto::events as pb;
use proptest::prelude::*;

const ZONES: &[&str] = &[
    "UTC",
    "Europe/Paris",
    "America/New_York",
    "Australia/Lord_Howe",
    "Asia/Kolkata",
    "America/Sao_Paulo",
    "Pacific/Auckland",
    "Asia/Kathmandu",
];
const CHANNELS: &[&str] = &["sms", "email", "push"];
const DAYS: &[&str] = &["mon", "tue", "wed", "thu", "fri", "sat", "sun"];
/// 2026-01-01T00:00:00Z and two years on: both DST changes, twice.
const FROM: i64 = 1_767_225_600_000;
const SPAN: i64 = 2 * 365 * 86_400_000;

fn hhmm(minutes: u32) -> String {
    format!("{:02}:{:02}", minutes / 60, minutes % 60)
}

fn rule() -> impl Strategy<Value = pb::QuietRule> {
    (
        0u32..1440,
        1u32..1440,
        prop::sample::subsequence(CHANNELS, 0..=2),
        prop::sample::subsequence(DAYS, 0..=7),
        prop::bool::ANY,
    )
        .prop_map(|(start, len, channels, days, hold)| pb::QuietRule {
            channels: channels.iter().map(|c| c.to_string()).collect(),
            days: days.iter().map(|d| d.to_string()).collect(),
            start: hhmm(start),
            // An end at or before the start runs over midnight.
            end: hhmm((start + len) % 1440),
            policy: if hold { "hold" } else { "drop" }.into(),
        })
}

fn setting() -> impl Strategy<Value = pb::QuietHoursSet> {
    (
        prop::collection::vec(rule(), 1..4),
        prop::option::of(prop::sample::select(ZONES)),
        1u32..10,
    )
        .prop_map(|(rules, tz, version)| pb::QuietHoursSet {
            subscriber_id: "ana".into(),
            rules,
            timezone: tz.unwrap_or_default().into(),
            enabled: true,
            version,
            origin: None,
        })
}

/// What became of one send, following the router.
#[derive(Debug)]
enum Fate {
    Sent { at_ms: i64, held: Option<i64> },
    Dropped,
}

fn follow(q: &QuietHours, zone: Tz, channel: &str, at: i64, critical: bool) -> Fate {
    let mut now = at;
    let mut held = None;
    // Each hold moves past a quiet period; a day has a bounded number.
    for _ in 0..64 {
        let gate = decide(&Check {
            now_ms: now,
            step: "s",
            channel,
            attempt_id: "n1-attempt",
            zone,
            windows: None,
            holidays: &[],
            quiet: Some((q, Scope::Subscriber)),
            critical,
            spread_ms: 300_000,
        });
        match gate {
            Gate::Go { .. } => return Fate::Sent { at_ms: now, held },
            Gate::Drop { .. } => return Fate::Dropped,
            Gate::Wait {
                until_ms, purpose, ..
            } => {
                assert_eq!(purpose, Purpose::QuietHours);
                assert!(until_ms > now, "a hold moves time forward");
                held.get_or_insert(until_ms);
                now = until_ms;
            }
        }
    }
    panic!("still held after 64 releases from {at} on {channel}: {q:?}");
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(400))]

    #[test]
    fn nothing_non_critical_is_sent_inside_quiet_hours(
        set in setting(),
        zone in prop::sample::select(ZONES),
        channel in prop::sample::select(CHANNELS),
        offset in 0..SPAN,
        critical in prop::bool::ANY,
    ) {
        let q = match QuietHours::from_event(&set) {
            Ok(q) => q,
            // Rules that close a channel all week are refused (a send
            // there could never leave); everything else generated is valid.
            Err(e) if e.0.len() == 1 && e.0[0].field == "rules" => return Ok(()),
            Err(e) => panic!("generated settings are valid: {e:?}"),
        };
        let zone = time::zone(zone).unwrap();
        let at = FROM + offset;
        let quiet_then = q.check(at, zone, channel);
        match follow(&q, zone, channel, at, critical) {
            Fate::Sent { at_ms, held } => {
                if critical {
                    prop_assert_eq!(at_ms, at, "critical goes at once");
                } else {
                    prop_assert!(q.check(at_ms, zone, channel).is_none(),
                        "sent at {} inside quiet hours", at_ms);
                    if let Some(q0) = &quiet_then {
                        // Held: once, after the period it was held in.
                        prop_assert!(at_ms >= q0.ends_at_ms);
                        prop_assert!(held.is_some());
                    } else {
                        prop_assert_eq!(at_ms, at, "outside quiet hours it goes at once");
                    }
                }
            }
            Fate::Dropped => {
                prop_assert!(!critical, "critical is never dropped");
                prop_assert!(quiet_then.is_some(), "dropped only from inside quiet hours");
            }
        }
    }
}
