//! Scenarios: given holds placed/extended/released, when an erasure or a
//! day's redaction is asked, then it is blocked or not.

use super::*;

const NOW: i64 = 1_700_000_000_000;

fn scope(sub: &str, wf: &str, from: i64, until: i64) -> HoldScope {
    HoldScope::from_pb(Some(&pb::HoldScope {
        subscriber_id: sub.into(),
        workflow_id: wf.into(),
        from_ms: from,
        until_ms: until,
    }))
}

fn given(holds: &[(&str, HoldScope, i64)]) -> HoldBook {
    let mut book = HoldBook::default();
    for (id, s, expires) in holds {
        let e = book
            .place(id, s, "litigation 42", *expires, NOW)
            .expect("valid hold");
        book.placed(&e, "api_key:k1", NOW);
    }
    book
}

fn subject<'a>(sub: &'a str, n: &'a [(String, i64)]) -> Subject<'a> {
    Subject {
        subscriber: sub,
        notifications: n,
        truncated: false,
    }
}

#[test]
fn a_whole_tenant_hold_blocks_every_erasure_and_every_day() {
    let book = given(&[("h1", HoldScope::default(), 0)]);
    let hold = book.blocking_erasure(&subject("ann", &[]), NOW).unwrap();
    assert_eq!(
        (hold.id.as_str(), hold.actor.as_str()),
        ("h1", "api_key:k1")
    );
    assert!(book.blocks_day(0, NOW));
    assert!(book.blocks_day(NOW / DAY_MS + 400, NOW));
}

#[test]
fn a_subscriber_hold_blocks_that_subscriber_only_but_every_day() {
    let book = given(&[("h1", scope("ann", "", 0, 0), 0)]);
    assert!(book.blocking_erasure(&subject("ann", &[]), NOW).is_some());
    assert!(book.blocking_erasure(&subject("bob", &[]), NOW).is_none());
    // Body keys are per day, shared by every subscriber: kept.
    assert!(book.blocks_day(NOW / DAY_MS, NOW));
}

#[test]
fn a_workflow_hold_blocks_subscribers_who_got_that_workflow() {
    let book = given(&[("h1", scope("", "invoices", 0, 0), 0)]);
    let ann = [("invoices".to_string(), NOW - 5)];
    let bob = [("welcome".to_string(), NOW - 5)];
    assert!(book.blocking_erasure(&subject("ann", &ann), NOW).is_some());
    assert!(book.blocking_erasure(&subject("bob", &bob), NOW).is_none());
    let cut = Subject {
        truncated: true,
        ..subject("bob", &bob)
    };
    assert!(
        book.blocking_erasure(&cut, NOW).is_some(),
        "unknown history: safe side"
    );
}

#[test]
fn a_time_range_hold_blocks_the_days_it_overlaps_only() {
    let day = NOW / DAY_MS;
    let from = day * DAY_MS + 3_600_000; // 01:00 of `day`
    let book = given(&[("h1", scope("", "", from, from + DAY_MS), 0)]);
    assert!(!book.blocks_day(day - 1, NOW));
    assert!(book.blocks_day(day, NOW));
    assert!(book.blocks_day(day + 1, NOW));
    assert!(!book.blocks_day(day + 2, NOW));
    let inside = [("any".to_string(), from + 10)];
    let before = [("any".to_string(), from - 10)];
    assert!(book
        .blocking_erasure(&subject("ann", &inside), NOW)
        .is_some());
    assert!(book
        .blocking_erasure(&subject("ann", &before), NOW)
        .is_none());
}

#[test]
fn an_expired_hold_blocks_nothing_and_an_extension_keeps_it() {
    let mut book = given(&[("h1", HoldScope::default(), NOW + 1000)]);
    assert!(book.blocks_day(0, NOW + 999));
    assert!(!book.blocks_day(0, NOW + 1000));
    let e = book.extend("h1", "still open", NOW + 5000, NOW).unwrap();
    book.extended(&e);
    assert!(book.blocks_day(0, NOW + 1000));
    let shorter = book.extend("h1", "x", NOW + 10, NOW).unwrap_err();
    assert_eq!(fields(shorter), ["expires_at_ms"]);
}

#[test]
fn a_release_lifts_the_hold() {
    let mut book = given(&[
        ("h1", HoldScope::default(), 0),
        ("h2", scope("ann", "", 0, 0), 0),
    ]);
    let e = book.release("h1", "case closed").unwrap();
    book.released(&e);
    assert!(book.blocking_erasure(&subject("bob", &[]), NOW).is_none());
    assert_eq!(
        book.blocking_erasure(&subject("ann", &[]), NOW).unwrap().id,
        "h2"
    );
    assert_eq!(
        book.release("h1", "again"),
        Err(HoldError::Unknown("h1".into()))
    );
}

fn fields(e: HoldError) -> Vec<String> {
    match e {
        HoldError::Invalid(v) => v.0.into_iter().map(|f| f.field).collect(),
        other => panic!("{other:?}"),
    }
}

#[test]
fn bad_holds_name_the_field() {
    let book = HoldBook::default();
    let bad = scope("a b", "", 10, 5);
    let e = book.place("h", &bad, "", NOW - 1, NOW).unwrap_err();
    assert_eq!(
        fields(e),
        [
            "scope.subscriber_id",
            "scope.until_ms",
            "reason",
            "expires_at_ms"
        ]
    );
    let long = "x".repeat(MAX_REASON_BYTES + 1);
    let e = book
        .place("h", &HoldScope::default(), &long, 0, NOW)
        .unwrap_err();
    assert_eq!(fields(e), ["reason"]);
}

#[test]
fn holds_are_bounded_per_tenant() {
    let mut book = HoldBook::default();
    for i in 0..MAX_HOLDS {
        let e = book
            .place(&format!("h{i}"), &HoldScope::default(), "r", 0, NOW)
            .unwrap();
        book.placed(&e, "a", NOW);
    }
    let e = book
        .place("one-more", &HoldScope::default(), "r", 0, NOW)
        .unwrap_err();
    assert_eq!(fields(e), ["hold_id"]);
}
