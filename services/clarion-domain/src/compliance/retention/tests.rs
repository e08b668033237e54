//! Scenarios: given a policy and holds, when the retention job looks at the
//! body keys on day N+k, then these are due and these held back.

use super::*;
use crate::compliance::holds::HoldScope;

fn rule(channel: &str, country: &str, redact: u32, shred: u32) -> pb::RetentionRule {
    pb::RetentionRule {
        channel: channel.into(),
        country: country.into(),
        redact_bodies_after_days: redact,
        shred_subscriber_after_days: shred,
    }
}

fn key(day: NaiveDate, channel: &str, country: &str) -> BodyKey {
    BodyKey {
        day,
        channel: channel.into(),
        country: country.into(),
    }
}

fn start_of(d: NaiveDate) -> i64 {
    day_number(d) * DAY_MS
}

fn fields(v: Violations) -> Vec<String> {
    v.0.into_iter().map(|f| f.field).collect()
}

#[test]
fn the_most_specific_rule_wins() {
    let p = Policy::check(
        &[
            rule("*", "*", 90, 0),
            rule("sms", "*", 30, 0),
            rule("*", "de", 14, 0),
            rule("sms", "DE", 7, 0),
        ],
        1,
    )
    .unwrap();
    let days = |c: &str, k: &str| p.rule_for(c, k).unwrap().redact_bodies_after_days;
    assert_eq!(days("sms", "DE"), 7);
    assert_eq!(days("sms", "FR"), 30);
    assert_eq!(days("email", "DE"), 14);
    assert_eq!(days("email", "FR"), 90);
    assert!(Policy::default().rule_for("email", "FR").is_none());
}

#[test]
fn day_n_plus_one_redacts_per_channel_and_country() {
    let p = Policy::check(&[rule("email", "*", 1, 0), rule("sms", "DE", 2, 0)], 1).unwrap();
    let d = NaiveDate::from_ymd_opt(2026, 3, 10).unwrap();
    let keys = [
        key(d, "email", "FR"),
        key(d, "sms", "DE"),
        key(d, "sms", "FR"),
    ];
    let on_day_n = due_body_keys(
        start_of(d) + 23 * 3_600_000,
        &p,
        &HoldBook::default(),
        &keys,
    );
    assert!(on_day_n.due.is_empty());
    let n1 = start_of(d) + DAY_MS;
    let due = due_body_keys(n1, &p, &HoldBook::default(), &keys);
    assert_eq!(
        due.due,
        [key(d, "email", "FR")],
        "sms/DE waits 2 days, sms/FR has no rule"
    );
    let due = due_body_keys(n1 + DAY_MS, &p, &HoldBook::default(), &keys);
    assert_eq!(due.due, [key(d, "email", "FR"), key(d, "sms", "DE")]);
}

#[test]
fn a_hold_keeps_the_day_and_its_release_lets_it_go() {
    let p = Policy::check(&[rule("*", "*", 1, 0)], 1).unwrap();
    let d = NaiveDate::from_ymd_opt(2026, 3, 10).unwrap();
    let keys = [key(d, "email", "FR")];
    let now = start_of(d) + DAY_MS;
    let mut holds = HoldBook::default();
    let scope = HoldScope {
        subscriber: Some("ann".into()),
        ..HoldScope::default()
    };
    let e = holds.place("h1", &scope, "case 7", 0, now).unwrap();
    holds.placed(&e, "api_key:k", now);
    let kept = due_body_keys(now, &p, &holds, &keys);
    assert_eq!((kept.due.len(), kept.held_back.len()), (0, 1));
    let r = holds.release("h1", "closed").unwrap();
    holds.released(&r);
    assert_eq!(due_body_keys(now, &p, &holds, &keys).due.len(), 1);
}

#[test]
fn shredding_is_tenant_wide() {
    let p = Policy::check(&[rule("*", "*", 0, 365)], 1).unwrap();
    assert_eq!(p.shred_cutoff_ms(400 * DAY_MS), Some(35 * DAY_MS));
    assert_eq!(Policy::default().shred_cutoff_ms(400 * DAY_MS), None);
    let e = Policy::check(&[rule("sms", "*", 0, 30)], 1).unwrap_err();
    assert_eq!(fields(e), ["rules[0].shred_subscriber_after_days"]);
}

#[test]
fn bad_rules_name_the_field() {
    let e = Policy::check(
        &[
            rule("fax", "*", 1, 0),
            rule("*", "Deutschland", MAX_DAYS + 1, 0),
            rule("fax", "*", 1, 0),
        ],
        1,
    )
    .unwrap_err();
    assert_eq!(
        fields(e),
        [
            "rules[0].channel",
            "rules[1].country",
            "rules[1].redact_bodies_after_days",
            "rules[2].channel",
            "rules[2]"
        ]
    );
    let many: Vec<_> = (0..=MAX_RULES).map(|_| rule("*", "*", 1, 0)).collect();
    assert_eq!(fields(Policy::check(&many, 1).unwrap_err()), ["rules"]);
}
