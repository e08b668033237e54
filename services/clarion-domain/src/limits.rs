//! Bounds on everything a tenant sends or runs: sizes of fields, templates
//! and definitions, the work a template render or a condition may do, and
//! how far in the future a duration may reach.
//!
//! Templates and conditions run inside shared router partitions, and every
//! field is stored, logged, indexed and sometimes echoed back: nothing a tenant
//! controls may be unbounded. One place for the numbers, so the validators,
//! the docs (`docs/limits.md`) and the tests agree. Every refusal names the
//! field it is about and the limit it crossed.

use crate::error::Violations;

// ---- identifiers and contact fields (bytes) ----

/// Workflow, template and step ids.
pub const MAX_ID_BYTES: usize = 64;
/// Subscriber ids (they are part of every recipient key).
pub const MAX_SUBSCRIBER_ID_BYTES: usize = 128;
/// RFC 5321 caps a forward path at 256 octets including the brackets.
pub const MAX_EMAIL_BYTES: usize = 254;
/// E.164: '+' and at most 15 digits (the format check enforces it too).
pub const MAX_PHONE_BYTES: usize = 16;
/// RFC 5646 §4.4.1: implementations need not keep tags longer than 35.
pub const MAX_LOCALE_BYTES: usize = 35;
/// The longest IANA zone name is 32 bytes; room to spare.
pub const MAX_TIMEZONE_BYTES: usize = 64;
/// What browsers and most HTTP servers accept in a request line.
pub const MAX_URL_BYTES: usize = 2048;
/// Display names (workflow `name`).
pub const MAX_NAME_BYTES: usize = 256;
/// Business event names a workflow reacts to (`trigger.event`).
pub const MAX_EVENT_NAME_BYTES: usize = 128;
/// Idempotency and cancellation keys.
pub const MAX_KEY_BYTES: usize = 255;
/// Dotted paths into the payload or subscriber (`to`, `cancel_key`).
pub const MAX_PATH_BYTES: usize = 256;

// ---- requests ----

/// A trigger's `payload_json` (also the default of the gateway's config).
pub const MAX_PAYLOAD_BYTES: usize = 64 * 1024;
/// A subscriber's `attributes_json`.
pub const MAX_ATTRIBUTES_BYTES: usize = 64 * 1024;
/// Recipients named in one Trigger request.
pub const MAX_RECIPIENTS: usize = 1000;
/// Notifications one Trigger request may start: workflows matched by its
/// event times its recipients. Each is a run, a log record and a send.
pub const MAX_FANOUT: usize = 5000;

// ---- definitions ----

/// A workflow definition's text (YAML or JSON).
pub const MAX_DEFINITION_BYTES: usize = 256 * 1024;
/// Steps in one workflow.
pub const MAX_STEPS: usize = 100;
/// Sends in one fallback chain.
pub const MAX_FALLBACK_CHAIN: usize = 10;
/// Throttle rules in one workflow or tenant limits.
pub const MAX_THROTTLE_RULES: usize = 20;

// ---- templates ----

/// Locale variants of one template.
pub const MAX_TEMPLATE_VARIANTS: usize = 64;
/// A template subject's source.
pub const MAX_SUBJECT_BYTES: usize = 2 * 1024;
/// A template body's source.
pub const MAX_BODY_BYTES: usize = 64 * 1024;
/// minijinja instructions one render of one part may run. A typical
/// notification text takes tens to a few thousand; a loop over a 100-item
/// payload list with some formatting about 2,000. At roughly 10-50 ns an
/// instruction this stops a runaway template within milliseconds.
pub const RENDER_FUEL: u64 = 200_000;
/// Rendered output of one part (subject or body). Larger than any email a
/// provider accepts; a render that goes past it stops as soon as it does.
pub const MAX_RENDERED_BYTES: usize = 512 * 1024;
/// minijinja's runtime recursion (nested loops, ifs, macro calls).
pub const RENDER_RECURSION: usize = 64;

// ---- conditions (CEL) ----

/// A condition's source.
pub const MAX_CONDITION_BYTES: usize = 4 * 1024;
/// Depth of a condition's expression tree (after macro expansion).
pub const MAX_CONDITION_DEPTH: usize = 32;
/// Comprehensions (`all`, `exists`, `exists_one`, `map`, `filter`) nested
/// inside one another.
pub const MAX_COMPREHENSION_NESTING: usize = 2;
/// Cost units one evaluation may spend (see `flow::condition`): about one
/// per operation plus the size of every value an operation reads. A
/// million units is a few tens of milliseconds of evaluation.
pub const CONDITION_BUDGET: u64 = 1_000_000;

// ---- durations (milliseconds) ----

const DAY_MS: u64 = 86_400_000;
/// Delays, wait and acknowledgement timeouts.
pub const MAX_DELAY_MS: u64 = 366 * DAY_MS;
/// Items a digest may hold (`max_items`; a digest closes at this many).
pub const MAX_DIGEST_ITEMS: u32 = 10_000;
/// Content dedup windows (kept as a TTL'd row per trigger).
pub const MAX_DEDUP_WINDOW_MS: u64 = 30 * DAY_MS;
/// Throttle windows (a timestamp per counted send is kept for the window).
pub const MAX_THROTTLE_WINDOW_MS: u64 = 30 * DAY_MS;

/// Checks that `value` is at most `max` bytes; the refusal names `field`.
pub fn check_len(v: &mut Violations, field: &str, value: &str, max: usize) -> bool {
    if value.len() > max {
        v.push(
            field,
            format!("is {} bytes, over the limit of {max} bytes", value.len()),
        );
        return false;
    }
    true
}

/// Checks that a list has at most `max` entries; the refusal names `field`.
pub fn check_count(v: &mut Violations, field: &str, count: usize, max: usize) -> bool {
    if count > max {
        v.push(
            field,
            format!("has {count} entries, over the limit of {max}"),
        );
        return false;
    }
    true
}

/// A human form of a millisecond bound for messages: `30d`, `366d`.
pub fn describe_ms(ms: u64) -> String {
    if ms.checked_rem(DAY_MS) == Some(0) {
        format!("{}d", ms / DAY_MS)
    } else {
        format!("{ms}ms")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checks_name_the_field_and_the_limit() {
        let mut v = Violations::default();
        assert!(check_len(&mut v, "email", "a@b.co", MAX_EMAIL_BYTES));
        assert!(!check_len(
            &mut v,
            "email",
            &"a".repeat(255),
            MAX_EMAIL_BYTES
        ));
        assert!(!check_count(&mut v, "steps", 101, MAX_STEPS));
        assert_eq!(v.0.len(), 2);
        assert_eq!(v.0[0].field, "email");
        assert!(v.0[0].description.contains("limit of 254"), "{v}");
        assert_eq!(v.0[1].field, "steps");
        assert_eq!(describe_ms(MAX_DEDUP_WINDOW_MS), "30d");
    }
}
