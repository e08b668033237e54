//! Send windows: when a workflow may send, in the recipient's zone
//! ("Mon-Fri 09:00-17:00"), closed on the tenant's holidays.

use chrono::{Datelike, Duration, NaiveDate, NaiveTime, Weekday};

use super::{instant_of, local_of, parse_local_time, Tz};

/// How far ahead an opening is looked for.
const HORIZON_DAYS: i64 = 400;
/// Windows per definition at most (tenant input is bounded).
pub const MAX_WINDOWS: usize = 32;

#[derive(Clone, Debug, PartialEq)]
pub struct Windows {
    ranges: Vec<Range>,
}

#[derive(Clone, Debug, PartialEq)]
struct Range {
    /// Days it is open, Monday first.
    days: [bool; 7],
    from: NaiveTime,
    to: NaiveTime,
    /// `to` is the end of the day ("24:00").
    to_midnight: bool,
}

impl Windows {
    /// "Mon-Fri 09:00-17:00", "Sat 10:00-12:30", "Mon,Wed 08:00-12:00",
    /// "Daily 09:00-21:00" (also "Weekdays", "Weekends"); the end must be
    /// after the start ("24:00" is the end of the day; no overnight range:
    /// write two). An error names the entry's index and the reason.
    pub fn parse(specs: &[String]) -> Result<Windows, (usize, String)> {
        if specs.len() > MAX_WINDOWS {
            return Err((
                MAX_WINDOWS,
                format!("at most {MAX_WINDOWS} windows ({} given)", specs.len()),
            ));
        }
        let ranges = specs
            .iter()
            .enumerate()
            .map(|(i, s)| Range::parse(s).map_err(|e| (i, e)))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Windows { ranges })
    }

    pub fn is_empty(&self) -> bool {
        self.ranges.is_empty()
    }

    /// Whether a send at `at_ms` is inside a window (no windows: always).
    pub fn is_open(&self, at_ms: i64, tz: Tz, holidays: &[NaiveDate]) -> bool {
        if self.ranges.is_empty() {
            return true;
        }
        let local = local_of(at_ms, tz);
        let (date, time) = (local.date(), local.time());
        !holidays.contains(&date)
            && self
                .ranges
                .iter()
                .any(|r| r.on(date.weekday()) && r.from <= time && (r.to_midnight || time < r.to))
    }

    /// `at_ms` when open, else the next opening (the earliest window start
    /// after it); `None` when nothing opens within 400 days.
    pub fn next_open(&self, at_ms: i64, tz: Tz, holidays: &[NaiveDate]) -> Option<i64> {
        if self.is_open(at_ms, tz, holidays) {
            return Some(at_ms);
        }
        let today = local_of(at_ms, tz).date();
        (0..HORIZON_DAYS).find_map(|d| {
            let date = today + Duration::days(d);
            if holidays.contains(&date) {
                return None;
            }
            self.ranges
                .iter()
                .filter(|r| r.on(date.weekday()))
                .map(|r| instant_of(date.and_time(r.from), tz))
                .filter(|&start| start > at_ms)
                .min()
        })
    }
}

impl std::fmt::Display for Windows {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (i, r) in self.ranges.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            write!(f, "{r}")?;
        }
        Ok(())
    }
}

const DAY_NAMES: [&str; 7] = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"];

impl Range {
    fn parse(spec: &str) -> Result<Range, String> {
        let mut parts = spec.split_whitespace();
        let (Some(days), Some(times), None) = (parts.next(), parts.next(), parts.next()) else {
            return Err(format!(
                "{spec:?}: expected days and a time range, e.g. \"Mon-Fri 09:00-17:00\""
            ));
        };
        let days = parse_days(days)?;
        let (from, to) = times
            .split_once('-')
            .ok_or_else(|| format!("{times:?}: expected a range like 09:00-17:00"))?;
        let from = parse_local_time(from)?;
        let (to, to_midnight) = match to.trim() {
            "24:00" => (NaiveTime::MIN, true),
            t => (parse_local_time(t)?, false),
        };
        if !to_midnight && to <= from {
            return Err(format!(
                "{times:?}: the end must be after the start (for a range over midnight, \
                 write two windows)"
            ));
        }
        Ok(Range {
            days,
            from,
            to,
            to_midnight,
        })
    }

    fn on(&self, d: Weekday) -> bool {
        self.days[d.num_days_from_monday() as usize]
    }
}

impl std::fmt::Display for Range {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let days: Vec<&str> = (0..7)
            .filter(|&i| self.days[i])
            .map(|i| DAY_NAMES[i])
            .collect();
        let to = if self.to_midnight {
            "24:00".to_string()
        } else {
            self.to.format("%H:%M").to_string()
        };
        write!(f, "{} {}-{to}", days.join(","), self.from.format("%H:%M"))
    }
}

/// "Mon-Fri", "Mon,Wed,Fri", "Sat", "Daily", "Weekdays", "Weekends"
/// (case-insensitive; a range may wrap: "Fri-Mon").
pub(crate) fn parse_days(text: &str) -> Result<[bool; 7], String> {
    let mut days = [false; 7];
    match text.to_ascii_lowercase().as_str() {
        "daily" | "everyday" => return Ok([true; 7]),
        "weekdays" => return Ok([true, true, true, true, true, false, false]),
        "weekends" => return Ok([false, false, false, false, false, true, true]),
        _ => {}
    }
    for part in text.split(',') {
        match part.split_once('-') {
            Some((a, b)) => {
                let (a, b) = (day(a)?, day(b)?);
                let mut i = a;
                loop {
                    days[i] = true;
                    if i == b {
                        break;
                    }
                    i = (i + 1) % 7;
                }
            }
            None => days[day(part)?] = true,
        }
    }
    Ok(days)
}

/// A day name ("Mon", "monday") as its index, Monday 0.
pub(crate) fn day(text: &str) -> Result<usize, String> {
    let t = text.trim().to_ascii_lowercase();
    DAY_NAMES
        .iter()
        .position(|d| t.len() >= 3 && d.starts_with(&t[..3]) && day_word_ok(&t))
        .ok_or_else(|| format!("{text:?} is not a day (mon, tue, wed, thu, fri, sat, sun)"))
}

fn day_word_ok(t: &str) -> bool {
    const FULL: [&str; 7] = [
        "monday",
        "tuesday",
        "wednesday",
        "thursday",
        "friday",
        "saturday",
        "sunday",
    ];
    t.len() == 3 || FULL.contains(&t)
}
