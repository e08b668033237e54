//! Time arithmetic in the recipient's zone: a pure function of (instant,
//! IANA zone). Nothing here reads the clock or the server's `TZ`.
//!
//! The rule for local times a zone skips or repeats (docs/scheduling.md):
//! * a local time that does not exist (spring forward: 02:30 on a day whose
//!   clocks jump from 02:00 to 03:00) is shifted forward by the gap (03:30);
//! * a local time that occurs twice (fall back) is the earlier instant.
//!
//! Recurrences ([`Recurrence`]) and windows ([`Windows`]) work on local wall
//! times and map each to an instant by that rule, so "09:00 every Monday"
//! stays 09:00 local across transitions.

use chrono::{
    DateTime, Duration, LocalResult, NaiveDate, NaiveDateTime, NaiveTime, Offset, TimeZone, Utc,
};
pub use chrono_tz::Tz;

mod recurrence;
mod windows;

pub use recurrence::Recurrence;
pub use windows::Windows;

/// A day name ("mon", "Monday") as its index, Monday 0.
pub fn day_index(text: &str) -> Result<usize, String> {
    windows::day(text)
}

/// An IANA zone by name.
pub fn zone(name: &str) -> Result<Tz, String> {
    name.parse::<Tz>().map_err(|_| {
        format!(
            "unknown time zone {name:?} (an IANA name such as Europe/Paris or America/New_York)"
        )
    })
}

/// The first of `candidates` that names a zone (the subscriber's, the
/// trigger's, the tenant's default, ...), else UTC.
pub fn recipient_zone(candidates: &[&str]) -> Tz {
    candidates
        .iter()
        .filter(|c| !c.is_empty())
        .find_map(|c| zone(c).ok())
        .unwrap_or(Tz::UTC)
}

/// The instant (ms) of a local wall time in `tz`, by the rule above.
pub fn instant_of(local: NaiveDateTime, tz: Tz) -> i64 {
    match tz.from_local_datetime(&local) {
        LocalResult::Single(t) => t.timestamp_millis(),
        LocalResult::Ambiguous(earlier, _) => earlier.timestamp_millis(),
        LocalResult::None => {
            // In a gap: read the wall time with the offset in force just
            // before it, which lands it past the gap by exactly the time it
            // was into it (02:30 in a 02:00→03:00 gap is 03:30). Gaps are
            // hours apart, so three hours earlier is before this one.
            let before = tz
                .from_local_datetime(&(local - Duration::hours(3)))
                .earliest()
                .map(|t| t.offset().fix())
                .unwrap_or(Utc.fix());
            (local - before).and_utc().timestamp_millis()
        }
    }
}

/// The local wall time of an instant (ms) in `tz`.
pub fn local_of(ms: i64, tz: Tz) -> NaiveDateTime {
    let utc = DateTime::<Utc>::from_timestamp_millis(ms).unwrap_or_default();
    utc.with_timezone(&tz).naive_local()
}

/// An RFC 3339 instant ("2026-03-08T09:00:00-05:00") in ms.
pub fn parse_instant(text: &str) -> Result<i64, String> {
    DateTime::parse_from_rfc3339(text.trim())
        .map(|t| t.timestamp_millis())
        .map_err(|e| format!("not an RFC 3339 time ({e}): expected e.g. 2026-03-08T09:00:00Z"))
}

/// An instant (ms) as RFC 3339 in UTC, to the second.
pub fn format_instant(ms: i64) -> String {
    DateTime::<Utc>::from_timestamp_millis(ms)
        .unwrap_or_default()
        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

/// An instant (ms) as RFC 3339 with the zone's offset ("2026-03-09T09:00:00-04:00").
pub fn format_local(ms: i64, tz: Tz) -> String {
    DateTime::<Utc>::from_timestamp_millis(ms)
        .unwrap_or_default()
        .with_timezone(&tz)
        .to_rfc3339_opts(chrono::SecondsFormat::Secs, false)
}

/// A signed duration of elapsed time: "-24h", "90m", "1d", "2h30m", "45s",
/// "+1d12h". Units d, h, m, s, ms; at least one part.
pub fn parse_signed_duration(text: &str) -> Result<i64, String> {
    let t = text.trim();
    let (sign, body) = match t.as_bytes().first() {
        Some(b'-') => (-1i64, &t[1..]),
        Some(b'+') => (1, &t[1..]),
        _ => (1, t),
    };
    let bad = || format!("{text:?} is not a duration (e.g. -24h, 90m, 1d, 2h30m)");
    if body.is_empty() {
        return Err(bad());
    }
    let mut total: i64 = 0;
    let mut rest = body;
    while !rest.is_empty() {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return Err(bad());
        }
        let n: i64 = rest[..digits].parse().map_err(|_| bad())?;
        rest = &rest[digits..];
        let unit = rest.bytes().take_while(u8::is_ascii_alphabetic).count();
        let ms = match &rest[..unit] {
            "ms" => 1,
            "s" => 1_000,
            "m" => 60_000,
            "h" => 3_600_000,
            "d" => 86_400_000,
            _ => return Err(bad()),
        };
        rest = &rest[unit..];
        total = n
            .checked_mul(ms)
            .and_then(|v| total.checked_add(v))
            .ok_or_else(bad)?;
    }
    Ok(sign * total)
}

/// A calendar date "YYYY-MM-DD".
pub fn parse_date(text: &str) -> Result<NaiveDate, String> {
    NaiveDate::parse_from_str(text.trim(), "%Y-%m-%d")
        .map_err(|_| format!("{text:?} is not a date (YYYY-MM-DD)"))
}

/// A local time of day "HH:MM" (or "HH:MM:SS"); "24:00" is the end of the day.
pub fn parse_local_time(text: &str) -> Result<NaiveTime, String> {
    let t = text.trim();
    NaiveTime::parse_from_str(t, "%H:%M")
        .or_else(|_| NaiveTime::parse_from_str(t, "%H:%M:%S"))
        .map_err(|_| format!("{text:?} is not a time of day (HH:MM, 00:00 to 23:59)"))
}

#[cfg(test)]
mod tests;
