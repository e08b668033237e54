//! Recurrences: an RFC 5545 RRULE (the `rrule` crate) or a cron expression
//! (the `croner` crate, POSIX fields: Sunday is 0), read in a zone.
//!
//! Both are evaluated on the *floating* local timeline — wall times with no
//! zone, carried as UTC values — and each occurrence is then mapped to an
//! instant by the module's rule ([`super::instant_of`]). So "09:00 every
//! Monday" is 09:00 local before and after a DST change, a 02:30 that a
//! spring-forward day skips fires at 03:30, and a 01:30 a fall-back day
//! repeats fires once, at the earlier instant. Neither crate's own DST
//! handling is used, so one rule holds for both syntaxes.

use std::str::FromStr;

use chrono::{DateTime, Duration, NaiveDateTime, TimeZone, Utc};
use rrule::{RRule, RRuleSet, Unvalidated};

use super::{instant_of, local_of, Tz};

/// Occurrences looked at per query at most: bounds the work one tenant's
/// rule (say, every second for years) can cost.
const MAX_SCAN: usize = 100_000;

#[derive(Clone, Debug)]
pub struct Recurrence {
    rule: Rule,
    tz: Tz,
    /// Floating local start: no occurrence before it.
    start: NaiveDateTime,
}

#[derive(Clone, Debug)]
enum Rule {
    RRule(Box<RRuleSet>),
    Cron(Box<croner::Cron>),
}

impl Recurrence {
    /// An RRULE value ("FREQ=WEEKLY;BYDAY=MO;BYHOUR=9;BYMINUTE=0", an
    /// optional "RRULE:" prefix accepted) from `start_ms` on, in `tz`.
    /// Times the rule leaves open (BYHOUR, BYMINUTE, BYSECOND) are those of
    /// the start in `tz`; UNTIL is compared with local wall time.
    pub fn rrule(text: &str, start_ms: i64, tz: Tz) -> Result<Recurrence, String> {
        let body = text.trim();
        let body = body
            .strip_prefix("RRULE:")
            .or_else(|| body.strip_prefix("rrule:"))
            .unwrap_or(body);
        if body.is_empty() {
            return Err("an empty RRULE".into());
        }
        let start = floor_second(local_of(start_ms, tz));
        let rule: RRule<Unvalidated> = body
            .parse()
            .map_err(|e: rrule::RRuleError| format!("not a valid RRULE: {e}"))?;
        let dtstart = rrule::Tz::UTC.from_utc_datetime(&start);
        let set = rule
            .build(dtstart)
            .map_err(|e| format!("not a valid RRULE: {e}"))?;
        Ok(Recurrence {
            rule: Rule::RRule(Box::new(set)),
            tz,
            start,
        })
    }

    /// A cron expression: 5 fields (minute hour day-of-month month
    /// day-of-week, Sunday 0 or 7), or 6 with seconds first.
    pub fn cron(text: &str, start_ms: i64, tz: Tz) -> Result<Recurrence, String> {
        let fields = text.split_whitespace().count();
        if !(5..=6).contains(&fields) {
            return Err(format!(
                "a cron expression has 5 fields (minute hour day month weekday) or 6 \
                 (seconds first); {fields} given"
            ));
        }
        let cron =
            croner::Cron::from_str(text.trim()).map_err(|e| format!("not a valid cron: {e}"))?;
        Ok(Recurrence {
            rule: Rule::Cron(Box::new(cron)),
            tz,
            start: floor_second(local_of(start_ms, tz)),
        })
    }

    /// An RRULE when it has `FREQ=`, else cron.
    pub fn parse(text: &str, start_ms: i64, tz: Tz) -> Result<Recurrence, String> {
        if text.to_ascii_uppercase().contains("FREQ=") {
            Recurrence::rrule(text, start_ms, tz)
        } else {
            Recurrence::cron(text, start_ms, tz)
        }
    }

    pub fn zone(&self) -> Tz {
        self.tz
    }

    /// The first occurrence strictly after `after_ms`.
    pub fn next_after(&self, after_ms: i64) -> Option<i64> {
        self.next_n(after_ms, 1).into_iter().next()
    }

    /// The next `n` occurrences strictly after `after_ms`, in order.
    pub fn next_n(&self, after_ms: i64, n: usize) -> Vec<i64> {
        let mut out = Vec::with_capacity(n.min(64));
        if n == 0 {
            return out;
        }
        // From a little before the local time of `after_ms`: around a
        // fall-back the mapping is not monotonic, and an occurrence whose
        // wall time reads earlier may still come later.
        let from = local_of(after_ms, self.tz) - Duration::hours(3);
        let mut last = after_ms;
        self.scan(from, |at| {
            if at > last {
                out.push(at);
                last = at;
            }
            out.len() < n
        });
        out
    }

    /// The occurrences in `(after_ms, upto_ms]`: how many (counted up to
    /// 100,000), and the latest.
    pub fn missed(&self, after_ms: i64, upto_ms: i64) -> (u32, Option<i64>) {
        let (mut count, mut latest) = (0u32, None);
        if upto_ms <= after_ms {
            return (0, None);
        }
        let from = local_of(after_ms, self.tz) - Duration::hours(3);
        let mut last = after_ms;
        self.scan(from, |at| {
            if at > upto_ms {
                return false;
            }
            if at > last {
                count += 1;
                latest = Some(at);
                last = at;
            }
            true
        });
        (count, latest)
    }

    /// Calls `f` with the instant of each occurrence at or after the
    /// floating local time `from` (and the start), in order of wall time,
    /// until it returns false or [`MAX_SCAN`] were seen.
    fn scan(&self, from: NaiveDateTime, mut f: impl FnMut(i64) -> bool) {
        let from = from.max(self.start);
        match &self.rule {
            Rule::RRule(set) => {
                // `after` is exclusive: start one second earlier.
                let after = rrule::Tz::UTC.from_utc_datetime(&(from - Duration::seconds(1)));
                let mut seen = 0;
                // The crate iterates lazily; take in chunks.
                for occ in set.clone().after(after).into_iter() {
                    seen += 1;
                    if seen > MAX_SCAN || !f(instant_of(occ.naive_utc(), self.tz)) {
                        return;
                    }
                }
            }
            Rule::Cron(cron) => {
                let start: DateTime<Utc> = Utc.from_utc_datetime(&from);
                let mut at = start;
                let mut inclusive = true;
                for _ in 0..MAX_SCAN {
                    let Ok(next) = cron.find_next_occurrence(&at, inclusive) else {
                        return;
                    };
                    if !f(instant_of(next.naive_utc(), self.tz)) {
                        return;
                    }
                    at = next;
                    inclusive = false;
                }
            }
        }
    }
}

fn floor_second(t: NaiveDateTime) -> NaiveDateTime {
    t.with_nanosecond(0).unwrap_or(t)
}

use chrono::Timelike;
