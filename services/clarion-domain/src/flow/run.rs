//! A workflow run: the pure state machine that executes a [`Flow`] for one
//! notification. Inputs are facts (started, a send's outcome, engagement, a
//! timer firing, a cancellation, an operator's retry); outputs are what to do
//! (send, schedule a timer, end). Time is `ctx.now_ms`; nothing else is read.
//!
//! Invariants (checked by the property tests below):
//! * a run reaches exactly one terminal state, once;
//! * every send has a distinct attempt id, and an attempt is never re-sent
//!   by the engine (retries are new attempts);
//! * stale or duplicate inputs (an old timer, a repeated outcome) change nothing.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::def::{Engagement, Flow, IfPast, SendSpec, StepKind};
use super::until::{self, rfc3339};

/// Statuses a step can have, as seen by `step_status` branches and `steps.x`
/// in CEL: the names of [`StepStatus::ALL`], in order.
pub const STEP_STATUSES: &[&str] = &[
    "pending",
    "sent",
    "failed",
    "delivered",
    "opened",
    "read",
    "clicked",
    "acknowledged",
    "timed_out",
    "suppressed",
];

/// A step's status. Stored in run records by name (`as_str`), as the
/// strings were before it, so records of either age read alike.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StepStatus {
    Pending,
    Sent,
    Failed,
    Delivered,
    Opened,
    Read,
    Clicked,
    Acknowledged,
    TimedOut,
    /// Not sent: the subscriber's preferences did not allow it.
    Suppressed,
}

impl StepStatus {
    pub const ALL: [StepStatus; 10] = [
        StepStatus::Pending,
        StepStatus::Sent,
        StepStatus::Failed,
        StepStatus::Delivered,
        StepStatus::Opened,
        StepStatus::Read,
        StepStatus::Clicked,
        StepStatus::Acknowledged,
        StepStatus::TimedOut,
        StepStatus::Suppressed,
    ];

    pub fn as_str(&self) -> &'static str {
        match self {
            StepStatus::Pending => "pending",
            StepStatus::Sent => "sent",
            StepStatus::Failed => "failed",
            StepStatus::Delivered => "delivered",
            StepStatus::Opened => "opened",
            StepStatus::Read => "read",
            StepStatus::Clicked => "clicked",
            StepStatus::Acknowledged => "acknowledged",
            StepStatus::TimedOut => "timed_out",
            StepStatus::Suppressed => "suppressed",
        }
    }

    pub fn parse(s: &str) -> Option<StepStatus> {
        StepStatus::ALL.into_iter().find(|st| st.as_str() == s)
    }

    /// How far a step got: a status only ever rises (a late `sent` does not
    /// undo `delivered`), except to `timed_out`.
    fn rank(self) -> u8 {
        match self {
            StepStatus::Failed | StepStatus::Suppressed => 1,
            StepStatus::Sent => 2,
            StepStatus::Delivered => 3,
            StepStatus::Opened | StepStatus::Read => 4,
            StepStatus::Clicked | StepStatus::Acknowledged => 5,
            StepStatus::Pending | StepStatus::TimedOut => 0,
        }
    }

    /// The engagement a status records, if it is one.
    pub fn engagement(self) -> Option<Engagement> {
        Engagement::parse(self.as_str())
    }
}

impl From<Engagement> for StepStatus {
    fn from(e: Engagement) -> StepStatus {
        match e {
            Engagement::Delivered => StepStatus::Delivered,
            Engagement::Opened => StepStatus::Opened,
            Engagement::Clicked => StepStatus::Clicked,
            Engagement::Acknowledged => StepStatus::Acknowledged,
            Engagement::Read => StepStatus::Read,
        }
    }
}

impl std::fmt::Display for StepStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A status compares with its name (`run.step_status["email"] == "sent"`).
impl PartialEq<str> for StepStatus {
    fn eq(&self, other: &str) -> bool {
        self.as_str() == other
    }
}

impl PartialEq<&str> for StepStatus {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

/// Where a send failed: rendering it in the router (`route`), at the
/// provider (`dispatch`), or reported after delivery (`delivery`, a bounce).
/// The `stage` of `NotificationFailed`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum FailureStage {
    Route,
    Dispatch,
    Delivery,
}

impl FailureStage {
    pub fn as_str(&self) -> &'static str {
        match self {
            FailureStage::Route => "route",
            FailureStage::Dispatch => "dispatch",
            FailureStage::Delivery => "delivery",
        }
    }

    pub fn parse(s: &str) -> Option<FailureStage> {
        [
            FailureStage::Route,
            FailureStage::Dispatch,
            FailureStage::Delivery,
        ]
        .into_iter()
        .find(|st| st.as_str() == s)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Terminal {
    /// Every step ran (or a stop step / the goal ended it).
    Completed,
    Cancelled,
    /// Could not be delivered: parked for operators (retry or discard).
    DeadLettered,
    /// Not started: condition false, throttled away or a duplicate.
    Suppressed,
}

impl Terminal {
    pub fn as_str(&self) -> &'static str {
        match self {
            Terminal::Completed => "completed",
            Terminal::Cancelled => "cancelled",
            Terminal::DeadLettered => "dead_lettered",
            Terminal::Suppressed => "suppressed",
        }
    }
}

/// Retry policy for retryable provider errors: exponential backoff from
/// `base_ms`, each delay capped at `max_ms`, until the delays add up to more
/// than `horizon_ms` or `max_attempts` were made; then the next fallback or
/// the dead-letter queue. The defaults ride out an outage of about an hour:
/// delays of 1, 2, 4, … 256 s, then every 5 min, 20 attempts over ~59 min.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, rename_all = "kebab-case", deny_unknown_fields)]
pub struct RetryPolicy {
    /// Attempts per send, the first included (a cap on top of the horizon).
    pub max_attempts: u32,
    pub base_ms: u64,
    pub max_ms: u64,
    /// Fraction of the delay randomised (deterministically, from the attempt id).
    pub jitter: f64,
    /// No retry is scheduled once the (nominal) delays so far would exceed
    /// this: how long an outage the policy rides out.
    pub horizon_ms: u64,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_attempts: 25,
            base_ms: 1_000,
            max_ms: 300_000,
            jitter: 0.2,
            horizon_ms: 3_600_000,
        }
    }
}

impl RetryPolicy {
    /// The delay before attempt `n + 1` after `n` failed ones, without jitter.
    fn nominal_ms(&self, failed_attempts: u32) -> u64 {
        self.base_ms
            .saturating_mul(1u64 << failed_attempts.saturating_sub(1).min(30))
            .min(self.max_ms)
    }

    /// Delay before attempt `n + 1` after `n` failed ones: exponential, capped,
    /// with jitter derived from the attempt id so replay computes the same.
    pub fn backoff_ms(&self, failed_attempts: u32, attempt_id: &str) -> u64 {
        let capped = self.nominal_ms(failed_attempts) as f64;
        let h = crate::ids::Id::derive(&[attempt_id.as_bytes()]).0;
        let unit = u16::from_le_bytes([h[0], h[1]]) as f64 / u16::MAX as f64; // 0..=1
        let factor = 1.0 - self.jitter + 2.0 * self.jitter * unit;
        (capped * factor).round().max(1.0) as u64
    }

    /// Whether a send that failed `failed_attempts` times (retryably) is
    /// tried again: under `max_attempts`, and the nominal delays up to and
    /// including the next one within `horizon_ms`.
    pub fn allows_retry(&self, failed_attempts: u32) -> bool {
        if failed_attempts >= self.max_attempts {
            return false;
        }
        let waited =
            (1..=failed_attempts).fold(0u64, |sum, k| sum.saturating_add(self.nominal_ms(k)));
        waited <= self.horizon_ms
    }
}

#[cfg(test)]
mod retry_policy_tests {
    use super::RetryPolicy;

    /// Attempts a policy makes, and the nominal time from the first to the last.
    fn schedule(p: &RetryPolicy) -> (u32, u64) {
        let (mut failures, mut waited) = (1, 0);
        while p.allows_retry(failures) {
            waited += p.nominal_ms(failures);
            failures += 1;
        }
        (failures, waited)
    }

    #[test]
    fn the_default_rides_out_an_hour_long_outage_and_no_more() {
        let (attempts, waited) = schedule(&RetryPolicy::default());
        assert_eq!(attempts, 20);
        assert!(
            (55 * 60_000..=60 * 60_000).contains(&waited),
            "last attempt {waited} ms after the first"
        );
    }

    #[test]
    fn max_attempts_and_the_horizon_each_end_the_retries() {
        let short = RetryPolicy {
            max_attempts: 3,
            ..RetryPolicy::default()
        };
        assert_eq!(schedule(&short).0, 3);
        let tight = RetryPolicy {
            horizon_ms: 10_000,
            ..RetryPolicy::default()
        };
        // 1 + 2 + 4 s = 7 s; the next (8 s) would pass 10 s.
        assert_eq!(schedule(&tight), (4, 7_000));
        let huge = RetryPolicy {
            max_attempts: u32::MAX,
            base_ms: u64::MAX,
            max_ms: u64::MAX,
            horizon_ms: u64::MAX,
            jitter: 1.0,
        };
        assert!(huge.allows_retry(1_000), "saturates, no overflow");
        assert!(huge.backoff_ms(64, "a") > 0);
    }

    #[test]
    fn backoff_doubles_up_to_the_cap_with_bounded_jitter() {
        let p = RetryPolicy::default();
        for (n, nominal) in [
            (1u32, 1_000u64),
            (2, 2_000),
            (9, 256_000),
            (10, 300_000),
            (40, 300_000),
        ] {
            let d = p.backoff_ms(n, "attempt-x");
            assert!(
                (nominal * 8 / 10..=nominal * 12 / 10).contains(&d),
                "after {n} failures: {d} ms, nominal {nominal}"
            );
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Purpose {
    Delay,
    Retry,
    WaitTimeout,
    AckTimeout,
    /// The trigger's `send_at` (the run starts then).
    SendAt,
    /// A send outside its windows waits for the next opening.
    Window,
    /// A send held by quiet hours is released.
    QuietHours,
    /// A digest the run leads closes.
    Digest,
}

impl Purpose {
    /// The name in `TimerFired.purpose` (and in run records).
    pub fn as_str(&self) -> &'static str {
        match self {
            Purpose::Delay => "delay",
            Purpose::Retry => "retry",
            Purpose::WaitTimeout => "wait_timeout",
            Purpose::AckTimeout => "ack_timeout",
            Purpose::SendAt => "send_at",
            Purpose::Window => "window",
            Purpose::QuietHours => "quiet_hours",
            Purpose::Digest => "digest",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Waiting {
    Nothing,
    Outcome { attempt_id: String },
    Timer { seq: u32, purpose: Purpose },
}

/// One send attempt, kept for the history and the dead-letter record.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Attempt {
    pub attempt_id: String,
    pub step: String,
    pub channel: String,
    pub provider: String,
    pub at_ms: i64,
    /// `None` while in flight or when sent.
    pub error: Option<String>,
    pub retryable: bool,
    pub sent: bool,
}

/// The state of one run.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Run {
    pub notification_id: String,
    pub workflow_id: String,
    pub workflow_version: u32,
    /// Current step; `None` once terminal.
    pub pc: Option<usize>,
    /// Position in the current fallback chain.
    pub chain: usize,
    /// Failed attempts of the current send.
    pub failures: u32,
    /// Operator retries (`dlq retry`) so far; part of attempt ids.
    pub generation: u32,
    pub waiting: Waiting,
    pub timer_seq: u32,
    pub step_status: BTreeMap<String, StepStatus>,
    pub attempts: Vec<Attempt>,
    pub terminal: Option<Terminal>,
    pub reason: String,
}

/// A fact the run reacts to.
#[derive(Clone, Debug, PartialEq)]
pub enum Input {
    Start,
    /// Start, but not before `at_ms` (the trigger's `send_at`): the run
    /// waits for it (a `send_at` timer) before its first step.
    StartAt {
        at_ms: i64,
    },
    Sent {
        attempt_id: String,
        /// The provider that took the send: after a failover, not the one
        /// the attempt was requested of (empty: unknown, keep the request's).
        provider: String,
    },
    Failed {
        attempt_id: String,
        retryable: bool,
        reason: String,
    },
    Engaged {
        attempt_id: String,
        kind: Engagement,
    },
    Timer {
        seq: u32,
    },
    Cancel {
        reason: String,
    },
    /// Operator re-drive of a dead-lettered run: re-enters the failed step.
    Retry,
    /// A send was held back by a throttle limit: it never went out. With
    /// `defer_until` it is tried again then; without, the run ends suppressed.
    Throttled {
        attempt_id: String,
        defer_until: Option<i64>,
        reason: String,
    },
    /// The subscriber's preferences do not allow a send (`reason` names the
    /// topic, channel and setting): it never went out. A fallback chain
    /// goes on to its next channel, otherwise the run goes on past the
    /// step; a run that ends having sent nothing ends suppressed.
    Suppressed {
        attempt_id: String,
        reason: String,
    },
    /// A send that may not go yet (outside its send windows, or held by
    /// quiet hours; the router notes why): it never went out, and is tried
    /// again at `until_ms` with the same attempt id (a `purpose` timer).
    Deferred {
        attempt_id: String,
        until_ms: i64,
        purpose: Purpose,
    },
    /// The digest accumulator's answer to an [`Output::Digest`], or the
    /// close of the digest the run leads.
    Digested(Digested),
}

/// What became of a run at a digest step (`crate::digest`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Digested {
    /// It leads a new digest: it waits until `closes_at_ms` (or an earlier close).
    Leads { closes_at_ms: i64 },
    /// Its item joined the digest `leader` leads: the run ends.
    Joined { leader: String },
    /// Not digested (`reason` is noted): the run goes on at once.
    Bypassed { reason: String },
    /// The digest it leads closed early (full or flushed): it goes on.
    Closed,
}

/// What the run wants done.
// Mostly sends, consumed at once: not worth a box.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug, PartialEq)]
pub enum Output {
    Send {
        step: String,
        attempt_id: String,
        spec: SendSpec,
    },
    Timer {
        seq: u32,
        due_ms: i64,
        purpose: Purpose,
    },
    /// Recorded in the history (e.g. a condition that could not be evaluated).
    Note(String),
    /// The run reached digest step `step` with key value `key`: the
    /// accumulator answers with an [`Input::Digested`].
    Digest {
        step: String,
        key: String,
    },
    End {
        terminal: Terminal,
        reason: String,
    },
}

/// What a step sees besides the run.
pub struct Ctx<'a> {
    pub now_ms: i64,
    pub payload: &'a Value,
    pub subscriber: &'a Value,
    pub tenant: &'a Value,
    pub retry: &'a RetryPolicy,
}

impl Run {
    pub fn new(notification_id: &str, flow: &Flow) -> Run {
        Run {
            notification_id: notification_id.to_string(),
            workflow_id: flow.def.id.clone(),
            workflow_version: flow.version,
            pc: Some(0),
            chain: 0,
            failures: 0,
            generation: 0,
            waiting: Waiting::Nothing,
            timer_seq: 0,
            step_status: BTreeMap::new(),
            attempts: Vec::new(),
            terminal: None,
            reason: String::new(),
        }
    }

    pub fn is_terminal(&self) -> bool {
        self.terminal.is_some()
    }

    /// Applies one input; returns what to do.
    pub fn apply(&mut self, flow: &Flow, input: Input, ctx: &Ctx<'_>) -> Vec<Output> {
        let mut out = Vec::new();
        if self.terminal.is_some() && input != Input::Retry {
            // Engagement after the end still counts for the history.
            if let Input::Engaged { attempt_id, kind } = &input {
                self.record_engagement(attempt_id, *kind);
            }
            return out;
        }
        match input {
            Input::Start => {
                if self.attempts.is_empty() && self.waiting == Waiting::Nothing {
                    self.advance(flow, ctx, &mut out);
                }
            }
            Input::StartAt { at_ms } => {
                if self.attempts.is_empty() && self.waiting == Waiting::Nothing {
                    if at_ms > ctx.now_ms {
                        out.push(Output::Note(format!("waiting until {}", rfc3339(at_ms))));
                        self.schedule(at_ms, Purpose::SendAt, &mut out);
                    } else {
                        self.advance(flow, ctx, &mut out);
                    }
                }
            }
            Input::Sent {
                attempt_id,
                provider,
            } => {
                // Only the first outcome of the attempt counts: a late
                // report (a provider that answered after the send failed
                // over to the next) finds the run no longer waiting.
                if self.waiting_on(&attempt_id) {
                    self.on_sent(flow, &attempt_id, &provider, ctx, &mut out);
                }
            }
            Input::Failed {
                attempt_id,
                retryable,
                reason,
            } => {
                if self.waiting_on(&attempt_id) {
                    self.on_failed(flow, &attempt_id, retryable, reason, ctx, &mut out);
                }
            }
            Input::Engaged { attempt_id, kind } => {
                self.on_engaged(flow, &attempt_id, kind, ctx, &mut out);
            }
            Input::Timer { seq } => {
                if let Waiting::Timer { seq: s, purpose } = self.waiting.clone() {
                    if s == seq {
                        self.waiting = Waiting::Nothing;
                        self.on_timer(flow, purpose, ctx, &mut out);
                    }
                }
            }
            Input::Cancel { reason } => self.end(Terminal::Cancelled, reason, &mut out),
            Input::Throttled {
                attempt_id,
                defer_until,
                reason,
            } => {
                if self.waiting_on(&attempt_id) {
                    // The attempt never happened: forget it, so the retry reuses its id.
                    self.forget_attempt(&attempt_id);
                    self.waiting = Waiting::Nothing;
                    match defer_until {
                        Some(at) => self.schedule(at, Purpose::Retry, &mut out),
                        None => self.end(Terminal::Suppressed, reason, &mut out),
                    }
                }
            }
            Input::Suppressed { attempt_id, reason } => {
                if self.waiting_on(&attempt_id) {
                    self.forget_attempt(&attempt_id);
                    self.waiting = Waiting::Nothing;
                    self.on_suppressed(flow, reason, ctx, &mut out);
                }
            }
            Input::Digested(d) => self.on_digested(flow, d, ctx, &mut out),
            Input::Deferred {
                attempt_id,
                until_ms,
                purpose,
            } => {
                if self.waiting_on(&attempt_id) {
                    // Like a throttle deferral: the retry reuses the attempt id.
                    self.forget_attempt(&attempt_id);
                    self.waiting = Waiting::Nothing;
                    self.schedule(until_ms, purpose, &mut out);
                }
            }
            Input::Retry => {
                if self.terminal == Some(Terminal::DeadLettered) {
                    if let Some(pc) = self.failed_step(flow) {
                        self.terminal = None;
                        self.reason.clear();
                        self.pc = Some(pc);
                        self.chain = 0;
                        self.failures = 0;
                        self.generation += 1;
                        self.waiting = Waiting::Nothing;
                        self.advance(flow, ctx, &mut out);
                    }
                }
            }
        }
        out
    }

    /// Whether `input` is the outcome of the attempt this run waits for.
    /// Such an input always changes the run (the attempt is marked sent, or
    /// a failure is counted), so a caller that skips rewriting unchanged
    /// runs need not copy this one to compare; were it ever wrong, the cost
    /// would be one rewrite of an unchanged record.
    pub fn awaits(&self, input: &Input) -> bool {
        self.terminal.is_none()
            && self.pc.is_some()
            && match input {
                Input::Sent { attempt_id, .. } | Input::Failed { attempt_id, .. } => {
                    self.waiting_on(attempt_id)
                }
                _ => false,
            }
    }

    /// Whether `input` is sure to change the run: it [`Run::awaits`] it, or
    /// it is an engagement that raises its attempt's step status (a sink's
    /// `delivered` after the `sent` that ended the run). A caller that must
    /// know whether anything changed compares with a copy only otherwise.
    pub fn surely_changes(&self, input: &Input) -> bool {
        if self.awaits(input) {
            return true;
        }
        let Input::Engaged { attempt_id, kind } = input else {
            return false;
        };
        self.attempt_step(attempt_id)
            .is_some_and(|step| StepStatus::from(*kind).rank() > self.status(step).rank())
    }

    /// The step an attempt of this run belongs to.
    fn attempt_step(&self, attempt_id: &str) -> Option<&str> {
        self.attempts
            .iter()
            .find(|a| a.attempt_id == attempt_id)
            .map(|a| a.step.as_str())
    }

    /// A step's recorded status (`pending` until it has one).
    fn status(&self, step: &str) -> StepStatus {
        self.step_status
            .get(step)
            .copied()
            .unwrap_or(StepStatus::Pending)
    }

    fn waiting_on(&self, attempt_id: &str) -> bool {
        matches!(&self.waiting, Waiting::Outcome { attempt_id: a } if a == attempt_id)
    }

    fn end(&mut self, terminal: Terminal, reason: String, out: &mut Vec<Output>) {
        if self.terminal.is_none() {
            self.terminal = Some(terminal);
            self.reason = reason.clone();
            self.pc = None;
            self.waiting = Waiting::Nothing;
            out.push(Output::End { terminal, reason });
        }
    }

    /// The step a dead-lettered run failed at (kept in `reason`'s step).
    fn failed_step(&self, flow: &Flow) -> Option<usize> {
        self.attempts.last().and_then(|a| flow.step_index(&a.step))
    }

    fn set_status(&mut self, step: &str, status: StepStatus) {
        if status.rank() > self.status(step).rank() || status == StepStatus::TimedOut {
            self.step_status.insert(step.to_string(), status);
        }
    }

    fn schedule(&mut self, due_ms: i64, purpose: Purpose, out: &mut Vec<Output>) {
        self.timer_seq += 1;
        self.waiting = Waiting::Timer {
            seq: self.timer_seq,
            purpose,
        };
        out.push(Output::Timer {
            seq: self.timer_seq,
            due_ms,
            purpose,
        });
    }

    fn send(
        &mut self,
        flow: &Flow,
        pc: usize,
        spec: &SendSpec,
        ctx: &Ctx<'_>,
        out: &mut Vec<Output>,
    ) {
        let step = flow.def.steps[pc].id.clone();
        let n = self.generation * 1_000_000 + (self.chain as u32) * 1_000 + self.failures;
        let attempt_id = crate::router::attempt_id(&self.notification_id, pc as u32, n);
        self.attempts.push(Attempt {
            attempt_id: attempt_id.clone(),
            step: step.clone(),
            channel: spec.channel.clone(),
            provider: spec.provider.clone().unwrap_or_default(),
            at_ms: ctx.now_ms,
            error: None,
            retryable: false,
            sent: false,
        });
        self.waiting = Waiting::Outcome {
            attempt_id: attempt_id.clone(),
        };
        out.push(Output::Send {
            step,
            attempt_id,
            spec: spec.clone(),
        });
    }

    /// Runs steps from `pc` until one has to wait or the run ends.
    fn advance(&mut self, flow: &Flow, ctx: &Ctx<'_>, out: &mut Vec<Output>) {
        // Bounded: definitions are acyclic, so each step is visited at most once per advance.
        for _ in 0..=flow.def.steps.len() {
            let Some(pc) = self.pc else {
                self.end_after_last_step(out);
                return;
            };
            let step = &flow.def.steps[pc];
            match &step.kind {
                StepKind::Send { send, .. } => {
                    self.send(flow, pc, send, ctx, out);
                    return;
                }
                StepKind::Fallback { chain, .. } => {
                    let spec = chain[self.chain.min(chain.len() - 1)].clone();
                    self.send(flow, pc, &spec, ctx, out);
                    return;
                }
                StepKind::Delay {
                    until: Some(path),
                    offset,
                    if_past,
                    next,
                    ..
                } => {
                    let why = match until::due(ctx.payload, path, offset.as_deref()) {
                        Ok(at) if at > ctx.now_ms => {
                            out.push(Output::Note(format!(
                                "step {}: waiting until {}",
                                step.id,
                                rfc3339(at)
                            )));
                            self.schedule(at, Purpose::Delay, out);
                            return;
                        }
                        Ok(at) => format!("{} has passed", rfc3339(at)),
                        Err(e) => e,
                    };
                    if *if_past == IfPast::Skip {
                        let reason = format!("step {}: {why}; skipped (if_past: skip)", step.id);
                        self.end(Terminal::Suppressed, reason, out);
                        return;
                    }
                    out.push(Output::Note(format!(
                        "step {}: {why}; going on at once",
                        step.id
                    )));
                    self.pc = flow.resolve(pc, next);
                }
                StepKind::Delay { .. } => {
                    let ms = flow.durations.get(&(pc, "duration")).copied().unwrap_or(0);
                    self.schedule(ctx.now_ms + ms as i64, Purpose::Delay, out);
                    return;
                }
                StepKind::Wait {
                    event,
                    step: target,
                    on_event,
                    ..
                } => {
                    let already = self
                        .step_status
                        .get(target)
                        .and_then(|s| s.engagement())
                        .is_some_and(|got| got.satisfies(*event));
                    if already {
                        self.pc = flow.resolve(pc, on_event);
                        continue;
                    }
                    let ms = flow.durations[&(pc, "timeout")];
                    self.schedule(ctx.now_ms + ms as i64, Purpose::WaitTimeout, out);
                    return;
                }
                StepKind::Branch {
                    step_status,
                    then,
                    otherwise,
                    ..
                } => {
                    let taken = match step_status {
                        Some(check) => self.status(&check.step).as_str() == check.is,
                        None => {
                            let steps = serde_json::to_value(&self.step_status).unwrap_or_default();
                            match flow.conditions[&pc].eval(&[
                                ("payload", ctx.payload),
                                ("subscriber", ctx.subscriber),
                                ("tenant", ctx.tenant),
                                ("steps", &steps),
                            ]) {
                                Ok(b) => b,
                                Err(e) => {
                                    out.push(Output::Note(format!(
                                        "step {}: {e}; taking the else branch",
                                        step.id
                                    )));
                                    false
                                }
                            }
                        }
                    };
                    self.pc = flow.resolve(pc, if taken { then } else { otherwise });
                }
                StepKind::Digest { digest, next } => {
                    match self.digest_key(flow, pc, &digest.key, ctx, out) {
                        Some(key) => {
                            let step = step.id.clone();
                            out.push(Output::Digest { step, key });
                            return;
                        }
                        None => self.pc = flow.resolve(pc, next),
                    }
                }
                StepKind::Stop => {
                    self.end(
                        Terminal::Completed,
                        format!("stopped at step {}", step.id),
                        out,
                    );
                    return;
                }
            }
        }
    }

    /// The last step is done. A run that sent nothing because preferences
    /// suppressed its sends ends suppressed, with the first reason (kept in
    /// `reason` while the run goes on).
    fn end_after_last_step(&mut self, out: &mut Vec<Output>) {
        let suppressed = self
            .step_status
            .values()
            .any(|s| *s == StepStatus::Suppressed);
        if suppressed && !self.attempts.iter().any(|a| a.sent) {
            let reason = std::mem::take(&mut self.reason);
            self.end(Terminal::Suppressed, reason, out);
        } else {
            self.end(Terminal::Completed, "all steps done".into(), out);
        }
    }

    /// A deferred send is tried again (checked again before it goes).
    fn released(&self, step: &str, purpose: Purpose, out: &mut Vec<Output>) {
        let why = match purpose {
            Purpose::QuietHours => "released: quiet hours over",
            _ => "send window open",
        };
        out.push(Output::Note(format!("step {step}: {why}")));
    }

    /// An attempt that never went out is forgotten, so a later try reuses its id.
    fn forget_attempt(&mut self, attempt_id: &str) {
        if self
            .attempts
            .last()
            .is_some_and(|a| a.attempt_id == attempt_id)
        {
            self.attempts.pop();
        }
    }

    /// A send the subscriber's preferences do not allow: the next channel of
    /// a fallback chain, else past the step.
    fn on_suppressed(&mut self, flow: &Flow, reason: String, ctx: &Ctx<'_>, out: &mut Vec<Output>) {
        let Some(pc) = self.pc else { return };
        let step = flow.def.steps[pc].clone();
        out.push(Output::Note(format!(
            "step {}: suppressed: {reason}",
            step.id
        )));
        if self.reason.is_empty() {
            self.reason = reason;
        }
        match &step.kind {
            StepKind::Fallback { chain, .. } if self.chain + 1 < chain.len() => {
                self.chain += 1;
                self.failures = 0;
                let spec = chain[self.chain].clone();
                self.send(flow, pc, &spec, ctx, out);
            }
            StepKind::Send { next, .. } | StepKind::Fallback { next, .. } => {
                self.set_status(&step.id, StepStatus::Suppressed);
                self.pc = flow.resolve(pc, next);
                self.chain = 0;
                self.failures = 0;
                self.advance(flow, ctx, out);
            }
            _ => {}
        }
    }

    fn on_sent(
        &mut self,
        flow: &Flow,
        attempt_id: &str,
        provider: &str,
        ctx: &Ctx<'_>,
        out: &mut Vec<Output>,
    ) {
        let Some(pc) = self.pc else { return };
        if let Some(a) = self
            .attempts
            .iter_mut()
            .find(|a| a.attempt_id == attempt_id)
        {
            a.sent = true;
            // The run records which provider's attempt won.
            if !provider.is_empty() && a.provider != provider {
                a.provider = provider.to_string();
            }
        }
        let step = flow.def.steps[pc].clone();
        self.set_status(&step.id, StepStatus::Sent);
        self.waiting = Waiting::Nothing;
        match &step.kind {
            StepKind::Fallback { ack: Some(_), .. } => {
                let ms = flow.durations[&(pc, "ack")];
                self.schedule(ctx.now_ms + ms as i64, Purpose::AckTimeout, out);
            }
            StepKind::Send { next, .. } | StepKind::Fallback { next, .. } => {
                self.pc = flow.resolve(pc, next);
                self.chain = 0;
                self.failures = 0;
                self.advance(flow, ctx, out);
            }
            _ => {}
        }
    }

    fn on_failed(
        &mut self,
        flow: &Flow,
        attempt_id: &str,
        retryable: bool,
        reason: String,
        ctx: &Ctx<'_>,
        out: &mut Vec<Output>,
    ) {
        let Some(pc) = self.pc else { return };
        if let Some(a) = self
            .attempts
            .iter_mut()
            .find(|a| a.attempt_id == attempt_id)
        {
            a.error = Some(reason.clone());
            a.retryable = retryable;
        }
        self.waiting = Waiting::Nothing;
        self.failures += 1;
        if retryable && ctx.retry.allows_retry(self.failures) {
            let delay = ctx.retry.backoff_ms(self.failures, attempt_id);
            self.schedule(ctx.now_ms + delay as i64, Purpose::Retry, out);
            return;
        }
        self.next_in_chain_or_dead_letter(flow, pc, reason, ctx, out);
    }

    fn next_in_chain_or_dead_letter(
        &mut self,
        flow: &Flow,
        pc: usize,
        reason: String,
        ctx: &Ctx<'_>,
        out: &mut Vec<Output>,
    ) {
        let step = flow.def.steps[pc].clone();
        if let StepKind::Fallback { chain, .. } = &step.kind {
            if self.chain + 1 < chain.len() {
                self.chain += 1;
                self.failures = 0;
                let spec = chain[self.chain].clone();
                self.send(flow, pc, &spec, ctx, out);
                return;
            }
        }
        self.set_status(&step.id, StepStatus::Failed);
        self.end(
            Terminal::DeadLettered,
            format!("step {} failed: {reason}", step.id),
            out,
        );
    }

    fn record_engagement(&mut self, attempt_id: &str, kind: Engagement) -> Option<String> {
        let step = self.attempt_step(attempt_id)?.to_string();
        self.set_status(&step, kind.into());
        Some(step)
    }

    fn on_engaged(
        &mut self,
        flow: &Flow,
        attempt_id: &str,
        kind: Engagement,
        ctx: &Ctx<'_>,
        out: &mut Vec<Output>,
    ) {
        let Some(step) = self.record_engagement(attempt_id, kind) else {
            return;
        };
        if flow.def.goal.is_some_and(|g| kind.satisfies(g)) {
            self.end(
                Terminal::Completed,
                format!("goal {} reached", kind.as_str()),
                out,
            );
            return;
        }
        let Some(pc) = self.pc else { return };
        let Waiting::Timer { purpose, .. } = self.waiting.clone() else {
            return;
        };
        match (&flow.def.steps[pc].kind, purpose) {
            (
                StepKind::Wait {
                    event,
                    step: target,
                    on_event,
                    ..
                },
                Purpose::WaitTimeout,
            ) if *target == step && kind.satisfies(*event) => {
                self.waiting = Waiting::Nothing;
                self.pc = flow.resolve(pc, on_event);
                self.advance(flow, ctx, out);
            }
            (
                StepKind::Fallback {
                    ack: Some(ack),
                    next,
                    ..
                },
                Purpose::AckTimeout,
            ) if flow.def.steps[pc].id == step
                && self
                    .attempts
                    .last()
                    .is_some_and(|a| a.attempt_id == attempt_id)
                && kind.satisfies(ack.event) =>
            {
                self.waiting = Waiting::Nothing;
                self.pc = flow.resolve(pc, next);
                self.chain = 0;
                self.failures = 0;
                self.advance(flow, ctx, out);
            }
            _ => {}
        }
    }

    /// At a digest step: the key value the run is digested under, or `None`
    /// when it goes on undigested (its `if` is false, or it has no key
    /// value: noted).
    fn digest_key(
        &self,
        flow: &Flow,
        pc: usize,
        key_path: &str,
        ctx: &Ctx<'_>,
        out: &mut Vec<Output>,
    ) -> Option<String> {
        let id = &flow.def.steps[pc].id;
        if let Some(condition) = flow.conditions.get(&pc) {
            let vars = [
                ("payload", ctx.payload),
                ("subscriber", ctx.subscriber),
                ("tenant", ctx.tenant),
            ];
            match condition.eval(&vars) {
                Ok(true) => {}
                Ok(false) => return None,
                Err(e) => {
                    out.push(Output::Note(format!("step {id}: {e}; not digested")));
                    return None;
                }
            }
        }
        let path = key_path.strip_prefix("payload.").unwrap_or(key_path);
        let key = crate::router::resolve_path(ctx.payload, path);
        if key.is_none() {
            out.push(Output::Note(format!(
                "step {id}: no value at {key_path}; not digested"
            )));
        }
        key
    }

    /// The accumulator's answer at a digest step, or the close of the
    /// digest the run leads. Anything else (a repeat, a stale close) is ignored.
    fn on_digested(&mut self, flow: &Flow, d: Digested, ctx: &Ctx<'_>, out: &mut Vec<Output>) {
        let Some(pc) = self.pc else { return };
        let StepKind::Digest { next, .. } = &flow.def.steps[pc].kind else {
            return;
        };
        let asked = self.waiting == Waiting::Nothing;
        let leading = matches!(
            self.waiting,
            Waiting::Timer {
                purpose: Purpose::Digest,
                ..
            }
        );
        match d {
            Digested::Leads { closes_at_ms } if asked => {
                self.schedule(closes_at_ms, Purpose::Digest, out);
            }
            Digested::Joined { leader } if asked => {
                let reason = crate::digest::joined_reason(&leader);
                out.push(Output::Note(reason.clone()));
                self.end(Terminal::Completed, reason, out);
            }
            Digested::Bypassed { reason } if asked => {
                let id = &flow.def.steps[pc].id;
                out.push(Output::Note(format!("step {id}: {reason}")));
                self.pc = flow.resolve(pc, next);
                self.advance(flow, ctx, out);
            }
            Digested::Closed if leading => {
                self.waiting = Waiting::Nothing;
                self.pc = flow.resolve(pc, next);
                self.advance(flow, ctx, out);
            }
            _ => {}
        }
    }

    fn on_timer(&mut self, flow: &Flow, purpose: Purpose, ctx: &Ctx<'_>, out: &mut Vec<Output>) {
        let Some(pc) = self.pc else { return };
        let step = flow.def.steps[pc].clone();
        match (purpose, &step.kind) {
            (Purpose::Delay, StepKind::Delay { next, .. }) => {
                self.pc = flow.resolve(pc, next);
                self.advance(flow, ctx, out);
            }
            (Purpose::Retry, StepKind::Send { send, .. }) => self.send(flow, pc, send, ctx, out),
            (Purpose::Retry, StepKind::Fallback { chain, .. }) => {
                let spec = chain[self.chain].clone();
                self.send(flow, pc, &spec, ctx, out);
            }
            (Purpose::Digest, StepKind::Digest { next, .. }) => {
                self.pc = flow.resolve(pc, next);
                self.advance(flow, ctx, out);
            }
            (Purpose::WaitTimeout, StepKind::Wait { on_timeout, .. }) => {
                self.set_status(&step.id, StepStatus::TimedOut);
                self.pc = flow.resolve(pc, on_timeout);
                self.advance(flow, ctx, out);
            }
            (Purpose::AckTimeout, StepKind::Fallback { ack: Some(ack), .. }) => {
                let reason = format!("no {} within {}", ack.event.as_str(), ack.timeout);
                self.next_in_chain_or_dead_letter(flow, pc, reason, ctx, out);
            }
            // Scheduling (#33): the trigger's send_at came; a deferred send
            // (send window, quiet hours) is tried again, same attempt id.
            (Purpose::SendAt, _) => self.advance(flow, ctx, out),
            (Purpose::Window | Purpose::QuietHours, StepKind::Send { send, .. }) => {
                self.released(&step.id, purpose, out);
                self.send(flow, pc, send, ctx, out);
            }
            (Purpose::Window | Purpose::QuietHours, StepKind::Fallback { chain, .. }) => {
                self.released(&step.id, purpose, out);
                let spec = chain[self.chain].clone();
                self.send(flow, pc, &spec, ctx, out);
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A run with every step status, as records stored before the statuses
    /// were an enum hold it (MessagePack inside run records, and JSON).
    const STORED_MSGPACK: &str = "9dac303139306161303066666565a57669736974030201020181a574696d65729204ab61636b5f74696d656f75740589a27330a770656e64696e67a27331a473656e74a27332a66661696c6564a27333a964656c697665726564a27334a66f70656e6564a27335a472656164a27336a7636c69636b6564a27337ac61636b6e6f776c6564676564a27338a974696d65645f6f75749198a26131a46d61696ca5656d61696ca4736d7470cf0000018bcfe5687ba3353530c2c2ad646561645f6c65747465726564b070726f76696465722072656675736564";
    const STORED_JSON: &str = r#"{"notification_id":"0190aa00ffee","workflow_id":"visit","workflow_version":3,"pc":2,"chain":1,"failures":2,"generation":1,"waiting":{"timer":{"seq":4,"purpose":"ack_timeout"}},"timer_seq":5,"step_status":{"s0":"pending","s1":"sent","s2":"failed","s3":"delivered","s4":"opened","s5":"read","s6":"clicked","s7":"acknowledged","s8":"timed_out"},"attempts":[{"attempt_id":"a1","step":"mail","channel":"email","provider":"smtp","at_ms":1700000000123,"error":"550","retryable":false,"sent":false}],"terminal":"dead_lettered","reason":"provider refused"}"#;

    #[test]
    fn stored_runs_read_and_write_as_before_the_status_enum() {
        let bytes = hex::decode(STORED_MSGPACK).unwrap();
        let run: Run = rmp_serde::from_slice(&bytes).expect("old record reads");
        let names: Vec<&str> = run.step_status.values().map(StepStatus::as_str).collect();
        assert_eq!(names, STEP_STATUSES[..9], "the statuses there were then");
        assert_eq!(
            run.waiting,
            Waiting::Timer {
                seq: 4,
                purpose: Purpose::AckTimeout
            }
        );
        assert_eq!(run.terminal, Some(Terminal::DeadLettered));
        assert_eq!(
            rmp_serde::to_vec(&run).unwrap(),
            bytes,
            "written byte for byte alike"
        );
        let from_json: Run = serde_json::from_str(STORED_JSON).expect("old JSON reads");
        assert_eq!(from_json, run);
        assert_eq!(serde_json::to_string(&run).unwrap(), STORED_JSON);
    }

    #[test]
    fn every_status_has_one_name() {
        let names: Vec<&str> = StepStatus::ALL.iter().map(StepStatus::as_str).collect();
        assert_eq!(names, STEP_STATUSES);
        for s in StepStatus::ALL {
            assert_eq!(StepStatus::parse(s.as_str()), Some(s));
            assert_eq!(s, s.as_str());
        }
        assert_eq!(StepStatus::parse("bounced"), None);
        for stage in [
            FailureStage::Route,
            FailureStage::Dispatch,
            FailureStage::Delivery,
        ] {
            assert_eq!(FailureStage::parse(stage.as_str()), Some(stage));
        }
        // An engagement is recorded as the status of the same name.
        for e in ["delivered", "opened", "read", "clicked", "acknowledged"] {
            let kind = Engagement::parse(e).unwrap();
            assert_eq!(StepStatus::from(kind).as_str(), e);
            assert_eq!(StepStatus::from(kind).engagement(), Some(kind));
        }
    }
}
