//! When a send may go: its send windows and the recipient's quiet hours,
//! decided as a pure function of the instant, the recipient's zone and the
//! settings (the router loads them; nothing here reads a clock or the
//! server's `TZ`).
//!
//! The order: send windows first (a send outside them waits for the next
//! opening), then quiet hours (hold: wait for the period's end plus a
//! deterministic spread; drop: suppressed). A critical run passes quiet
//! hours, noted; its workflow's own send windows still apply. A deferred
//! send is checked again when its timer fires, so changed settings apply.

pub use chrono::NaiveDate;

use crate::flow::run::Purpose;
use crate::flow::until::rfc3339;
use crate::ids::Id;
use crate::quiet::{Policy, QuietHours};
use crate::time::{Tz, Windows};

/// Whose quiet hours apply: the subscriber's own replace the tenant's.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scope {
    Tenant,
    Subscriber,
}

impl Scope {
    pub fn as_str(&self) -> &'static str {
        match self {
            Scope::Tenant => "tenant",
            Scope::Subscriber => "subscriber",
        }
    }
}

/// Send windows as declared (for the note) and parsed.
#[derive(Clone, Debug)]
pub struct SendWindows {
    pub specs: Vec<String>,
    pub parsed: Windows,
}

impl SendWindows {
    /// Parses declared windows (validated at publication; a stored
    /// definition that no longer parses has none).
    pub fn parse(specs: &[String]) -> Option<SendWindows> {
        if specs.is_empty() {
            return None;
        }
        Windows::parse(specs).ok().map(|parsed| SendWindows {
            specs: specs.to_vec(),
            parsed,
        })
    }
}

/// Everything the decision reads about one send.
pub struct Check<'a> {
    pub now_ms: i64,
    /// The step, for notes.
    pub step: &'a str,
    pub channel: &'a str,
    /// The jitter of a release derives from it (the same on replay).
    pub attempt_id: &'a str,
    /// The recipient's zone (subscriber's, else the tenant's default, else UTC).
    pub zone: Tz,
    pub windows: Option<&'a SendWindows>,
    /// The tenant's holidays: send windows stay closed on them.
    pub holidays: &'a [NaiveDate],
    pub quiet: Option<(&'a QuietHours, Scope)>,
    pub critical: bool,
    /// Held sends are released up to this long after the period ends.
    pub spread_ms: i64,
}

/// The decision.
#[derive(Clone, Debug, PartialEq)]
pub enum Gate {
    /// It goes (with a note when quiet hours were bypassed).
    Go { note: Option<String> },
    /// Tried again at `until_ms` (a `purpose` timer), same attempt id.
    Wait {
        until_ms: i64,
        purpose: Purpose,
        note: String,
    },
    /// Suppressed (the run goes on as for a preference's opt-out).
    Drop { reason: String },
}

/// Whether the send may go now.
pub fn decide(c: &Check<'_>) -> Gate {
    if let Some(w) = c.windows {
        let zone = c.zone.name();
        let specs = w.specs.join(", ");
        match w.parsed.next_open(c.now_ms, c.zone, c.holidays) {
            Some(at) if at <= c.now_ms => {}
            Some(at) => {
                return Gate::Wait {
                    until_ms: at,
                    purpose: Purpose::Window,
                    note: format!(
                        "outside send windows {specs} {zone}; step {} waits until {}",
                        c.step,
                        rfc3339(at)
                    ),
                }
            }
            None => {
                return Gate::Drop {
                    reason: format!("no send window {specs} {zone} opens within 400 days"),
                }
            }
        }
    }
    let Some((hours, scope)) = c.quiet else {
        return Gate::Go { note: None };
    };
    let Some(quiet) = hours
        .enabled
        .then(|| hours.check(c.now_ms, c.zone, c.channel))
        .flatten()
    else {
        return Gate::Go { note: None };
    };
    let setting = format!("{} setting v{}", scope.as_str(), hours.version);
    if c.critical {
        return Gate::Go {
            note: Some(format!(
                "critical: quiet hours {} bypassed ({setting}); step {}",
                quiet.period, c.step
            )),
        };
    }
    match quiet.policy {
        Policy::Hold => {
            let at = quiet.ends_at_ms.max(c.now_ms + 1) + spread(c.attempt_id, c.spread_ms);
            Gate::Wait {
                until_ms: at,
                purpose: Purpose::QuietHours,
                note: format!(
                    "held: quiet hours {}, {setting}; step {} released at {}",
                    quiet.period,
                    c.step,
                    rfc3339(at)
                ),
            }
        }
        Policy::Drop => Gate::Drop {
            reason: format!("dropped: quiet hours {}, {setting}", quiet.period),
        },
    }
}

/// The release delay of a held send past the period's end, in
/// `[0, spread_ms)`, from its attempt id: the end of quiet hours is not a
/// burst, and replay computes the same.
pub fn spread(attempt_id: &str, spread_ms: i64) -> i64 {
    if spread_ms <= 0 {
        return 0;
    }
    let h = Id::derive(&[b"quiet-release", attempt_id.as_bytes()]).0;
    let n = u64::from_le_bytes(h[..8].try_into().expect("8 bytes"));
    (n % spread_ms as u64) as i64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_spread_is_bounded_and_deterministic() {
        assert_eq!(spread("a", 0), 0);
        let all: Vec<i64> = (0..200)
            .map(|i| spread(&format!("att-{i}"), 300_000))
            .collect();
        assert!(all.iter().all(|d| (0..300_000).contains(d)));
        assert_eq!(spread("att-7", 300_000), all[7]);
        let distinct: std::collections::HashSet<_> = all.iter().collect();
        assert!(distinct.len() > 150, "spread out: {}", distinct.len());
    }
}
