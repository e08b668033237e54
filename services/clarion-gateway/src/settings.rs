//! Quiet-hour and calendar settings (docs/scheduling.md): what
//! `QuietHoursService`, `CalendarService` and their REST routes do.
//!
//! Each is an event like every other change, numbered per scope (1, 2, …:
//! history notes name it, "subscriber setting v3"): the tenant's quiet
//! hours and calendar go to the config topic (the projector keeps them in
//! `Table::Tenants`, `clarion_runtime::tenant_settings`), a subscriber's
//! quiet hours to the subscriber's stream (the router keeps them in
//! `Table::QuietHours`). A write returns once applied.

use clarion_domain::quiet::QuietHours;
use clarion_domain::time;
use clarion_domain::{Payload, Violations};
use clarion_proto::api;
use clarion_proto::events as pb;
use clarion_runtime::tenant_settings;

use crate::error::ApiError;
use crate::preferences::{profile, to_subscriber, Who};
use crate::state::GatewayState;
use crate::tenant::{config_event, publish};

/// Most holidays in a tenant's calendar.
pub const MAX_HOLIDAYS: usize = 1000;
/// Most quiet-hour rules in one setting.
pub const MAX_RULES: usize = 50;

fn rule_to_event(r: api::QuietHoursRule) -> pb::QuietRule {
    pb::QuietRule {
        channels: r.channels,
        days: r.days,
        start: r.start,
        end: r.end,
        policy: r.policy,
    }
}

fn rule_to_api(r: pb::QuietRule) -> api::QuietHoursRule {
    api::QuietHoursRule {
        channels: r.channels,
        days: r.days,
        start: r.start,
        end: r.end,
        policy: r.policy,
    }
}

fn quiet_to_api(q: Option<pb::QuietHoursSet>, subscriber: &str) -> api::QuietHoursSettings {
    let q = q.unwrap_or_default();
    api::QuietHoursSettings {
        subscriber_id: subscriber.to_string(),
        enabled: q.enabled,
        timezone: q.timezone,
        rules: q.rules.into_iter().map(rule_to_api).collect(),
        version: q.version,
    }
}

/// The event of a setting, checked (`rules[0].start`, `timezone`, …).
fn quiet_event(
    who: &Who,
    input: api::QuietHoursSettings,
    subscriber: &str,
    version: u32,
) -> Result<pb::QuietHoursSet, ApiError> {
    if input.rules.len() > MAX_RULES {
        return Err(Violations::single("rules", format!("at most {MAX_RULES} rules")).into());
    }
    // Day names are ASCII; anything else is refused here, before the
    // domain's parser (which slices the name by bytes) sees it.
    let mut v = Violations::default();
    for (i, r) in input.rules.iter().enumerate() {
        for (j, d) in r.days.iter().enumerate() {
            if !d.is_ascii() {
                v.push(
                    format!("rules[{i}].days[{j}]"),
                    format!("{d:?} is not a day (mon, tue, wed, thu, fri, sat, sun)"),
                );
            }
        }
    }
    v.into_result()?;
    let e = pb::QuietHoursSet {
        subscriber_id: subscriber.to_string(),
        rules: input.rules.into_iter().map(rule_to_event).collect(),
        timezone: input.timezone,
        enabled: input.enabled,
        version,
        origin: Some(who.origin()),
    };
    QuietHours::from_event(&e)?;
    Ok(e)
}

fn tenant_only(who: &Who) -> Result<(), ApiError> {
    match who.subscriber {
        Some(_) => Err(ApiError::PermissionDenied(
            "a subscriber token cannot change tenant settings".into(),
        )),
        None => Ok(()),
    }
}

/// The tenant's default quiet hours (version 0, disabled: never set).
pub async fn tenant_quiet_hours(
    s: &GatewayState,
    who: &Who,
) -> Result<api::QuietHoursSettings, ApiError> {
    let q = tenant_settings::tenant_quiet_hours(&*s.store, who.tenant.as_str()).await?;
    Ok(quiet_to_api(q, ""))
}

/// Replaces the tenant's default quiet hours.
pub async fn set_tenant_quiet_hours(
    s: &GatewayState,
    who: &Who,
    input: api::QuietHoursSettings,
) -> Result<api::QuietHoursSettings, ApiError> {
    tenant_only(who)?;
    let _guard = s.config_lock.lock().await;
    let prev = tenant_settings::tenant_quiet_hours(&*s.store, who.tenant.as_str()).await?;
    let e = quiet_event(who, input, "", prev.map_or(1, |p| p.version + 1))?;
    let event = config_event(
        s,
        &who.tenant,
        &who.actor,
        Payload::QuietHoursSet(e.clone()),
    );
    publish(s, &[event]).await?;
    Ok(quiet_to_api(Some(e), ""))
}

/// A subscriber's own quiet hours (version 0: none; the tenant's apply).
/// The subscriber must exist.
pub async fn subscriber_quiet_hours(
    s: &GatewayState,
    who: &Who,
    id: &str,
) -> Result<api::QuietHoursSettings, ApiError> {
    who.reach("subscriber_id", id)?;
    profile(s, who, id).await?;
    let q = tenant_settings::subscriber_quiet_hours(&*s.store, who.tenant.as_str(), id).await?;
    Ok(quiet_to_api(q, id))
}

/// Replaces a subscriber's quiet hours (they override the tenant's whole).
pub async fn set_subscriber_quiet_hours(
    s: &GatewayState,
    who: &Who,
    id: &str,
    input: api::QuietHoursSettings,
) -> Result<api::QuietHoursSettings, ApiError> {
    who.reach("subscriber_id", id)?;
    profile(s, who, id).await?;
    let prev = tenant_settings::subscriber_quiet_hours(&*s.store, who.tenant.as_str(), id).await?;
    let e = quiet_event(who, input, id, prev.map_or(1, |p| p.version + 1))?;
    to_subscriber(s, who, id, Payload::QuietHoursSet(e.clone())).await?;
    Ok(quiet_to_api(Some(e), id))
}

fn calendar_to_api(c: Option<pb::TenantCalendarSet>) -> api::TenantCalendar {
    let c = c.unwrap_or_default();
    api::TenantCalendar {
        default_timezone: c.default_timezone,
        holidays: c.holidays,
        version: c.version,
    }
}

/// The tenant's calendar (version 0: never set; UTC, no holidays).
pub async fn calendar(s: &GatewayState, who: &Who) -> Result<api::TenantCalendar, ApiError> {
    let c = tenant_settings::calendar(&*s.store, who.tenant.as_str()).await?;
    Ok(calendar_to_api(c))
}

/// Checks a calendar: a known zone (or none: UTC), real dates, each once.
/// Holidays are kept sorted.
fn check_calendar(input: &mut api::TenantCalendar) -> Result<(), Violations> {
    let mut v = Violations::default();
    if !input.default_timezone.is_empty() {
        if let Err(e) = time::zone(&input.default_timezone) {
            v.push("default_timezone", e);
        }
    }
    if input.holidays.len() > MAX_HOLIDAYS {
        v.push("holidays", format!("at most {MAX_HOLIDAYS} dates"));
    }
    let mut seen = std::collections::BTreeSet::new();
    for (i, d) in input.holidays.iter().enumerate() {
        match time::parse_date(d) {
            Ok(date) if !seen.insert(date) => {
                v.push(format!("holidays[{i}]"), format!("{d:?} is listed twice"))
            }
            Ok(_) => {}
            Err(e) => v.push(format!("holidays[{i}]"), e),
        }
    }
    v.into_result()?;
    input.holidays = seen
        .iter()
        .map(|d| d.format("%Y-%m-%d").to_string())
        .collect();
    Ok(())
}

/// Replaces the tenant's calendar.
pub async fn set_calendar(
    s: &GatewayState,
    who: &Who,
    mut input: api::TenantCalendar,
) -> Result<api::TenantCalendar, ApiError> {
    tenant_only(who)?;
    check_calendar(&mut input)?;
    let _guard = s.config_lock.lock().await;
    let prev = tenant_settings::calendar(&*s.store, who.tenant.as_str()).await?;
    let e = pb::TenantCalendarSet {
        default_timezone: input.default_timezone,
        holidays: input.holidays,
        version: prev.map_or(1, |p| p.version + 1),
        origin: Some(who.origin()),
    };
    let event = config_event(
        s,
        &who.tenant,
        &who.actor,
        Payload::TenantCalendarSet(e.clone()),
    );
    publish(s, &[event]).await?;
    Ok(calendar_to_api(Some(e)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_calendar_names_the_bad_field() {
        let mut c = api::TenantCalendar {
            default_timezone: "Mars/Olympus".into(),
            holidays: vec![
                "2026-12-25".into(),
                "2026-02-30".into(),
                "2026-12-25".into(),
            ],
            version: 0,
        };
        let v = check_calendar(&mut c).unwrap_err();
        let fields: Vec<&str> = v.0.iter().map(|f| f.field.as_str()).collect();
        assert_eq!(fields, ["default_timezone", "holidays[1]", "holidays[2]"]);
        let mut ok = api::TenantCalendar {
            default_timezone: "Europe/Paris".into(),
            holidays: vec!["2026-12-25".into(), "2026-01-01".into()],
            version: 0,
        };
        check_calendar(&mut ok).unwrap();
        assert_eq!(ok.holidays, ["2026-01-01", "2026-12-25"]);
    }

    #[test]
    fn a_day_that_is_not_ascii_is_a_field_error_not_a_panic() {
        let who = Who {
            tenant: clarion_domain::TenantId::parse("acme").unwrap(),
            actor: clarion_domain::Actor::ApiKey("k".into()),
            interface: crate::preferences::Interface::Rest,
            subscriber: None,
        };
        let input = api::QuietHoursSettings {
            enabled: true,
            rules: vec![api::QuietHoursRule {
                days: vec!["mon".into(), "é€x".into()],
                start: "22:00".into(),
                end: "07:00".into(),
                policy: "hold".into(),
                ..Default::default()
            }],
            ..Default::default()
        };
        match quiet_event(&who, input, "", 1) {
            Err(ApiError::Invalid(v)) => assert_eq!(v.0[0].field, "rules[0].days[1]"),
            other => panic!("{other:?}"),
        }
    }
}
