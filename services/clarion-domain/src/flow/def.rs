//! Workflow definitions: what tenant admins write (YAML or JSON) and publish.
//!
//! A definition is a list of steps executed in order; steps jump with `next`
//! (default), `end`, or a step id. Validation reports every problem with its
//! path (`steps[2].timeout`), rejects jumps to unknown steps and cycles, and
//! compiles every condition, so nothing invalid is ever published.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use crate::channel::Channel;
use crate::error::{excerpt, quote, Violations};
use crate::flow::condition::Condition;
use crate::flow::duration::parse_bounded_ms;
use crate::flow::throttle::{validate_throttle, Owner, ThrottleDef};
use crate::limits::{self, check_count, check_len};
use crate::workflow::{validate_id, KNOWN_PROVIDERS};

/// Engagement a run can wait for or stop on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Engagement {
    Delivered,
    Opened,
    Clicked,
    Acknowledged,
    Read,
}

impl Engagement {
    pub fn as_str(&self) -> &'static str {
        match self {
            Engagement::Delivered => "delivered",
            Engagement::Opened => "opened",
            Engagement::Clicked => "clicked",
            Engagement::Acknowledged => "acknowledged",
            Engagement::Read => "read",
        }
    }

    pub fn parse(s: &str) -> Option<Engagement> {
        [
            Engagement::Delivered,
            Engagement::Opened,
            Engagement::Clicked,
            Engagement::Acknowledged,
            Engagement::Read,
        ]
        .into_iter()
        .find(|e| e.as_str() == s)
    }

    /// A click implies the message was opened; reading an inbox item or
    /// acknowledging implies delivery. Waiting for X is satisfied by anything
    /// that implies X.
    pub fn satisfies(&self, wanted: Engagement) -> bool {
        *self == wanted
            || matches!(
                (self, wanted),
                (Engagement::Clicked, Engagement::Opened)
                    | (
                        Engagement::Opened
                            | Engagement::Clicked
                            | Engagement::Acknowledged
                            | Engagement::Read,
                        Engagement::Delivered
                    )
            )
    }
}

/// Where to go after a step.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(from = "String", into = "String")]
pub enum Next {
    /// The following step (or the end after the last one).
    #[default]
    Continue,
    End,
    Step(String),
}

impl From<String> for Next {
    fn from(s: String) -> Next {
        match s.as_str() {
            "next" | "" => Next::Continue,
            "end" => Next::End,
            _ => Next::Step(s),
        }
    }
}

impl From<Next> for String {
    fn from(n: Next) -> String {
        match n {
            Next::Continue => "next".into(),
            Next::End => "end".into(),
            Next::Step(s) => s,
        }
    }
}

/// One message to send.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SendSpec {
    pub channel: String,
    pub template: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provider: Option<String>,
    /// Alternate contact: a path into the trigger payload or the subscriber,
    /// e.g. `payload.backup_technician.phone` or `subscriber.attributes.manager_email`.
    /// Empty: the recipient's own address on the channel.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to: Option<String>,
    /// push: the tenant's app whose devices receive it (required on push).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub app: Option<String>,
    /// push and in_app: what the message opens (docs/push.md).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub link: Option<crate::push::LinkSpec>,
    /// push: provider options (priority, TTL, collapse key, sound, badge,
    /// Android channel, client-side localization keys).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub push: Option<crate::push::PushSpec>,
    /// in_app: the item's category in the feed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub category: Option<String>,
    /// push and in_app: extra data for the client, a path to a JSON object
    /// in the payload (`payload.push_data`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<String>,
    /// Send windows in the recipient's zone ("Mon-Fri 09:00-17:00"); a send
    /// outside them waits for the next opening. Replaces the workflow's.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub windows: Vec<String>,
}

/// What a delay `until` a payload time does when that time has passed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum IfPast {
    /// Go on at once (noted).
    #[default]
    Send,
    /// End the run suppressed (noted).
    Skip,
}

/// A digest step: collects one subscriber's events with the same key into
/// one message (docs/scheduling.md).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DigestSpec {
    /// Payload path whose value keys the digest (`payload.project_id`).
    pub key: String,
    /// Open from the first event for this long (`1h`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub window: Option<String>,
    /// Or: closes at the next occurrence of this recurrence, in the
    /// recipient's zone (an RRULE like `FREQ=DAILY;BYHOUR=8;BYMINUTE=0`, or cron).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schedule: Option<String>,
    /// Closes early at this many items.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_items: Option<u32>,
    /// CEL over `payload` and `subscriber`: only events for which it holds
    /// are digested; others go on at once.
    #[serde(default, rename = "if", skip_serializing_if = "Option::is_none")]
    pub condition: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AckSpec {
    #[serde(rename = "for")]
    pub event: Engagement,
    pub timeout: String,
}

/// Branch condition: a CEL expression over `payload`, `subscriber` and
/// `steps` (each step's status), or a step-status shorthand.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StepStatusCheck {
    pub step: String,
    pub is: String,
}

// Sends (with their push and link fields) are most steps: boxing them
// would add an allocation per step for the rare small ones' sake.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug, PartialEq)]
pub enum StepKind {
    Send {
        send: SendSpec,
        next: Next,
    },
    /// Wait `duration`, or `until` a payload time (plus `offset`).
    Delay {
        duration: Option<String>,
        until: Option<String>,
        offset: Option<String>,
        if_past: IfPast,
        next: Next,
    },
    /// Collect the subscriber's events with the same key; the leader's run
    /// goes on with all of them when the digest closes.
    Digest {
        digest: DigestSpec,
        next: Next,
    },
    /// Wait until `step`'s message gets the engagement, at most `timeout`.
    Wait {
        event: Engagement,
        step: String,
        timeout: String,
        on_event: Next,
        on_timeout: Next,
    },
    /// Branch on a CEL condition over `payload`, `subscriber`, `tenant` and
    /// `steps` (step id → status), or on one step's status.
    Branch {
        condition: Option<String>,
        step_status: Option<StepStatusCheck>,
        then: Next,
        otherwise: Next,
    },
    /// Try each send in turn until one is sent (and, with `ack`, engaged with
    /// in time); when all fail the notification is dead-lettered.
    Fallback {
        chain: Vec<SendSpec>,
        ack: Option<AckSpec>,
        next: Next,
    },
    Stop,
}

/// A step as written: `type` selects the kind, the other keys are its fields.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "RawStep", into = "RawStep")]
pub struct StepDef {
    pub id: String,
    pub kind: StepKind,
}

/// The written form of a step (one flat map per step, checked for unknown keys).
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
#[allow(clippy::large_enum_variant)]
enum RawStep {
    Send {
        id: String,
        channel: String,
        template: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        provider: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        to: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        app: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        link: Option<crate::push::LinkSpec>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        push: Option<crate::push::PushSpec>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        category: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        data: Option<String>,
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        windows: Vec<String>,
        #[serde(default)]
        next: Next,
    },
    Delay {
        id: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        duration: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        until: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        offset: Option<String>,
        #[serde(default, skip_serializing_if = "is_default")]
        if_past: IfPast,
        #[serde(default)]
        next: Next,
    },
    Digest {
        id: String,
        key: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        window: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        schedule: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        max_items: Option<u32>,
        #[serde(default, rename = "if", skip_serializing_if = "Option::is_none")]
        condition: Option<String>,
        #[serde(default)]
        next: Next,
    },
    Wait {
        id: String,
        #[serde(rename = "for")]
        event: Engagement,
        step: String,
        timeout: String,
        #[serde(default)]
        on_event: Next,
        #[serde(default)]
        on_timeout: Next,
    },
    Branch {
        id: String,
        #[serde(default, rename = "if", skip_serializing_if = "Option::is_none")]
        condition: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        step_status: Option<StepStatusCheck>,
        then: Next,
        #[serde(default, rename = "else")]
        otherwise: Next,
    },
    Fallback {
        id: String,
        chain: Vec<SendSpec>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        ack: Option<AckSpec>,
        #[serde(default)]
        next: Next,
    },
    Stop {
        id: String,
    },
}

impl TryFrom<RawStep> for StepDef {
    type Error = String;
    fn try_from(r: RawStep) -> Result<StepDef, String> {
        Ok(match r {
            r @ RawStep::Send { .. } => send_step(r),
            RawStep::Delay {
                id,
                duration,
                until,
                offset,
                if_past,
                next,
            } => StepDef {
                id,
                kind: StepKind::Delay {
                    duration,
                    until,
                    offset,
                    if_past,
                    next,
                },
            },
            r @ RawStep::Digest { .. } => digest_step(r),
            RawStep::Wait {
                id,
                event,
                step,
                timeout,
                on_event,
                on_timeout,
            } => StepDef {
                id,
                kind: StepKind::Wait {
                    event,
                    step,
                    timeout,
                    on_event,
                    on_timeout,
                },
            },
            RawStep::Branch {
                id,
                condition,
                step_status,
                then,
                otherwise,
            } => StepDef {
                id,
                kind: StepKind::Branch {
                    condition,
                    step_status,
                    then,
                    otherwise,
                },
            },
            RawStep::Fallback {
                id,
                chain,
                ack,
                next,
            } => StepDef {
                id,
                kind: StepKind::Fallback { chain, ack, next },
            },
            RawStep::Stop { id } => StepDef {
                id,
                kind: StepKind::Stop,
            },
        })
    }
}

/// A written send step as a [`StepDef`].
fn send_step(r: RawStep) -> StepDef {
    match r {
        RawStep::Send {
            id,
            channel,
            template,
            provider,
            to,
            app,
            link,
            push,
            category,
            data,
            windows,
            next,
        } => StepDef {
            id,
            kind: StepKind::Send {
                send: SendSpec {
                    channel,
                    template,
                    provider,
                    to,
                    app,
                    link,
                    push,
                    category,
                    data,
                    windows,
                },
                next,
            },
        },
        _ => unreachable!("called with a send step"),
    }
}

/// A written digest step as a [`StepDef`].
fn digest_step(r: RawStep) -> StepDef {
    match r {
        RawStep::Digest {
            id,
            key,
            window,
            schedule,
            max_items,
            condition,
            next,
        } => StepDef {
            id,
            kind: StepKind::Digest {
                digest: DigestSpec {
                    key,
                    window,
                    schedule,
                    max_items,
                    condition,
                },
                next,
            },
        },
        _ => unreachable!("called with a digest step"),
    }
}

impl From<StepDef> for RawStep {
    fn from(s: StepDef) -> RawStep {
        let id = s.id;
        match s.kind {
            StepKind::Send { send, next } => RawStep::Send {
                id,
                channel: send.channel,
                template: send.template,
                provider: send.provider,
                to: send.to,
                app: send.app,
                link: send.link,
                push: send.push,
                category: send.category,
                data: send.data,
                windows: send.windows,
                next,
            },
            StepKind::Delay {
                duration,
                until,
                offset,
                if_past,
                next,
            } => RawStep::Delay {
                id,
                duration,
                until,
                offset,
                if_past,
                next,
            },
            StepKind::Digest { digest, next } => RawStep::Digest {
                id,
                key: digest.key,
                window: digest.window,
                schedule: digest.schedule,
                max_items: digest.max_items,
                condition: digest.condition,
                next,
            },
            StepKind::Wait {
                event,
                step,
                timeout,
                on_event,
                on_timeout,
            } => RawStep::Wait {
                id,
                event,
                step,
                timeout,
                on_event,
                on_timeout,
            },
            StepKind::Branch {
                condition,
                step_status,
                then,
                otherwise,
            } => RawStep::Branch {
                id,
                condition,
                step_status,
                then,
                otherwise,
            },
            StepKind::Fallback { chain, ack, next } => RawStep::Fallback {
                id,
                chain,
                ack,
                next,
            },
            StepKind::Stop => RawStep::Stop { id },
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TriggerDef {
    /// Business event name this workflow reacts to (e.g. `appointment.booked`).
    /// Empty: only triggered by workflow id.
    #[serde(default)]
    pub event: String,
    /// CEL over `payload` and `subscriber`; the run starts only when true.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub condition: Option<String>,
}

/// A workflow definition as written by a tenant admin.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FlowDef {
    pub id: String,
    #[serde(default)]
    pub name: String,
    #[serde(default = "default_trigger")]
    pub trigger: TriggerDef,
    /// Payload field whose value is the run's cancellation key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cancel_key: Option<String>,
    /// Engagement that completes the run as soon as it happens.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub goal: Option<Engagement>,
    /// Content dedup: a trigger with the same workflow, recipient and payload
    /// as one accepted within this window (e.g. `10m`) is suppressed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dedup_window: Option<String>,
    /// Sliding-window limits checked before every send.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub throttle: Vec<ThrottleDef>,
    /// The topic its notifications are about: subscribers' preferences for
    /// it decide which sends go (docs/preferences.md).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub topic: Option<String>,
    /// Critical notifications bypass subscribers' opt-outs, never a legal
    /// block (a marketing unsubscribe) or an unverified contact.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub critical: bool,
    /// Send windows in the recipient's zone for every send of the workflow
    /// (a step's own `windows` replace them): "Mon-Fri 09:00-17:00".
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub windows: Vec<String>,
    /// Payload paths whose values are personal data: sealed under the
    /// recipient's data key when a trigger enters the log, so an erasure
    /// reaches them (`crate::personal::paths`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub personal: Vec<String>,
    pub steps: Vec<StepDef>,
}

fn is_default<T: Default + PartialEq>(v: &T) -> bool {
    *v == T::default()
}

fn default_trigger() -> TriggerDef {
    TriggerDef {
        event: String::new(),
        condition: None,
    }
}

/// A validated definition with everything resolved for execution.
#[derive(Debug)]
pub struct Flow {
    pub def: FlowDef,
    pub version: u32,
    pub(crate) index: HashMap<String, usize>,
    pub(crate) trigger_condition: Option<Condition>,
    pub(crate) conditions: HashMap<usize, Condition>,
    pub(crate) durations: HashMap<(usize, &'static str), u64>,
    /// The content dedup window, in milliseconds.
    pub dedup_window_ms: Option<u64>,
    /// Throttle windows in milliseconds, parallel to `def.throttle`.
    pub throttle_windows_ms: Vec<u64>,
}

impl Flow {
    /// Parses YAML or JSON (JSON is YAML) and validates.
    pub fn parse(
        text: &str,
        version: u32,
        template_channel: impl Fn(&str) -> Option<Channel>,
    ) -> Result<Flow, Violations> {
        let mut v = Violations::default();
        if !check_len(&mut v, "definition", text, limits::MAX_DEFINITION_BYTES) {
            return Err(v);
        }
        let def: FlowDef = serde_norway::from_str(text).map_err(|e| parse_error(&e))?;
        Flow::new(def, version, template_channel)
    }

    /// Validates a definition for publication: everything [`Flow::from_json`]
    /// checks, and the [`limits`] on sizes and durations.
    pub fn new(
        def: FlowDef,
        version: u32,
        template_channel: impl Fn(&str) -> Option<Channel>,
    ) -> Result<Flow, Violations> {
        Flow::build(def, version, template_channel, true)
    }

    /// `publishing`: refuse what is over the [`limits`]. A definition
    /// published before a limit existed is rebuilt with its durations
    /// clamped instead, so it still runs and no time arithmetic overflows.
    fn build(
        def: FlowDef,
        version: u32,
        template_channel: impl Fn(&str) -> Option<Channel>,
        publishing: bool,
    ) -> Result<Flow, Violations> {
        let mut v = Violations::default();
        if publishing && !within_limits(&mut v, &def) {
            return Err(v);
        }
        validate_id(&mut v, "id", &def.id);
        if let Some(topic) = &def.topic {
            validate_id(&mut v, "topic", topic);
        }
        if def.steps.is_empty() {
            v.push("steps", "at least one step is required");
        }
        crate::personal::paths::validate(&mut v, "personal", &def.personal);
        let index = step_index(&mut v, &def.steps);
        let trigger_condition = match &def.trigger.condition {
            Some(c) => match Condition::compile(c) {
                Ok(c) => Some(c),
                Err(e) => {
                    v.push("trigger.condition", e);
                    None
                }
            },
            None => None,
        };
        let mut steps = StepChecker {
            def: &def,
            index: &index,
            template_channel: &template_channel,
            publishing,
            v: &mut v,
            conditions: HashMap::new(),
            durations: HashMap::new(),
        };
        for (i, s) in def.steps.iter().enumerate() {
            steps.step(i, s);
        }
        if !def.windows.is_empty() {
            steps.windows("windows", &def.windows);
        }
        let (conditions, durations) = (steps.conditions, steps.durations);
        let dedup_window_ms = match &def.dedup_window {
            Some(w) => match parse_bounded_ms(w, limits::MAX_DEDUP_WINDOW_MS, publishing) {
                Ok(ms) => Some(ms),
                Err(e) => {
                    v.push("dedup_window", e);
                    None
                }
            },
            None => None,
        };
        let throttle_windows_ms =
            validate_throttle(&mut v, &def.throttle, Owner::Workflow, publishing);
        if v.is_empty() {
            if let Some(cycle) = find_cycle(&def, &index) {
                v.push(
                    "steps",
                    format!("steps form a cycle: {}", cycle.join(" → ")),
                );
            }
        }
        v.into_result()?;
        Ok(Flow {
            def,
            version,
            index,
            trigger_condition,
            conditions,
            durations,
            dedup_window_ms,
            throttle_windows_ms,
        })
    }

    /// A digest step's definition and its window in milliseconds (`None`
    /// for a scheduled digest); `None` if `step` is not a digest step.
    pub fn digest_step(&self, step: &str) -> Option<(&DigestSpec, Option<u64>)> {
        let i = self.step_index(step)?;
        match &self.def.steps[i].kind {
            StepKind::Digest { digest, .. } => {
                Some((digest, self.durations.get(&(i, "window")).copied()))
            }
            _ => None,
        }
    }

    /// Whether the trigger has a condition (without one every trigger starts
    /// a run, and its variables need not be built).
    pub fn has_trigger_condition(&self) -> bool {
        self.trigger_condition.is_some()
    }

    /// Whether a step branches on a condition that reads the run's
    /// variables (`payload`, `subscriber`, `tenant`); without one they need
    /// not be built to advance a run.
    pub fn has_branch_conditions(&self) -> bool {
        !self.conditions.is_empty()
    }

    /// Whether a trigger starts a run: the trigger condition over `payload`,
    /// `subscriber` and `tenant` (true when there is none).
    pub fn matches(
        &self,
        payload: &serde_json::Value,
        subscriber: &serde_json::Value,
        tenant: &serde_json::Value,
    ) -> Result<bool, String> {
        match &self.trigger_condition {
            Some(c) => c.eval(&[
                ("payload", payload),
                ("subscriber", subscriber),
                ("tenant", tenant),
            ]),
            None => Ok(true),
        }
    }

    /// Like [`Flow::matches`], with variables already converted (see
    /// [`Bindings`](crate::flow::condition::Bindings)): one trigger is matched
    /// against many workflows with one conversion.
    pub fn matches_with(&self, b: &crate::flow::condition::Bindings) -> Result<bool, String> {
        match &self.trigger_condition {
            Some(c) => c.eval_with(b),
            None => Ok(true),
        }
    }

    pub fn step_index(&self, id: &str) -> Option<usize> {
        self.index.get(id).copied()
    }

    /// Canonical JSON of the definition (what the log stores).
    pub fn to_json(&self) -> String {
        serde_json::to_string(&self.def).expect("definitions serialize")
    }

    /// Rebuilds a published definition. Templates were checked at publish
    /// time against the tenant's templates; here each send's own channel is
    /// taken as its template's.
    pub fn from_json(json: &str, version: u32) -> Result<Flow, Violations> {
        let def: FlowDef = serde_json::from_str(json).map_err(|e| {
            Violations::single("definition", excerpt(&e.to_string(), 300).into_owned())
        })?;
        Flow::new_unchecked_templates(def, version)
    }

    fn new_unchecked_templates(def: FlowDef, version: u32) -> Result<Flow, Violations> {
        let channels: HashMap<String, Channel> = def
            .steps
            .iter()
            .flat_map(|s| match &s.kind {
                StepKind::Send { send, .. } => vec![send.clone()],
                StepKind::Fallback { chain, .. } => chain.clone(),
                _ => vec![],
            })
            .filter_map(|s| s.channel.parse().ok().map(|c| (s.template, c)))
            .collect();
        Flow::build(def, version, |t| channels.get(t).copied(), false)
    }

    /// The step after `i` for a `Next`; `None` means the run ends.
    pub(crate) fn resolve(&self, i: usize, next: &Next) -> Option<usize> {
        match next {
            Next::Continue => (i + 1 < self.def.steps.len()).then_some(i + 1),
            Next::End => None,
            Next::Step(id) => self.index.get(id).copied(),
        }
    }
}

/// A definition that does not parse, as one violation: serde's message
/// can quote the input (an unknown key, a bad value), so it is excerpted.
pub(crate) fn parse_error(e: &serde_norway::Error) -> Violations {
    Violations::single(error_path(e), excerpt(&e.to_string(), 300).into_owned())
}

/// The size and count limits of a definition (checked before anything
/// else: a definition over them is not worth validating further).
fn within_limits(v: &mut Violations, def: &FlowDef) -> bool {
    let mut ok = check_len(v, "name", &def.name, limits::MAX_NAME_BYTES);
    ok &= check_len(
        v,
        "trigger.event",
        &def.trigger.event,
        limits::MAX_EVENT_NAME_BYTES,
    );
    if let Some(k) = &def.cancel_key {
        ok &= check_len(v, "cancel_key", k, limits::MAX_PATH_BYTES);
    }
    ok &= check_count(v, "steps", def.steps.len(), limits::MAX_STEPS);
    ok &= check_count(
        v,
        "throttle",
        def.throttle.len(),
        limits::MAX_THROTTLE_RULES,
    );
    for (i, s) in def.steps.iter().enumerate() {
        let sends: Vec<(String, &SendSpec)> = match &s.kind {
            StepKind::Send { send, .. } => vec![(format!("steps[{i}]"), send)],
            StepKind::Fallback { chain, .. } => {
                ok &= check_count(
                    v,
                    &format!("steps[{i}].chain"),
                    chain.len(),
                    limits::MAX_FALLBACK_CHAIN,
                );
                chain
                    .iter()
                    .enumerate()
                    .map(|(k, c)| (format!("steps[{i}].chain[{k}]"), c))
                    .collect()
            }
            _ => vec![],
        };
        for (f, send) in sends {
            if let Some(to) = &send.to {
                ok &= check_len(v, &format!("{f}.to"), to, limits::MAX_PATH_BYTES);
            }
        }
    }
    ok
}

pub(crate) fn error_path(e: &serde_norway::Error) -> String {
    match e.location() {
        Some(l) => format!("definition (line {}, column {})", l.line(), l.column()),
        None => "definition".into(),
    }
}

/// Any cycle in the jump graph, as step ids. Runs are bounded by design:
/// repetition belongs to recurring schedules, not to workflow loops.
fn find_cycle(def: &FlowDef, index: &HashMap<String, usize>) -> Option<Vec<String>> {
    let n = def.steps.len();
    let succ = |i: usize| -> Vec<usize> {
        let to = |next: &Next| match next {
            Next::Continue => (i + 1 < n).then_some(i + 1),
            Next::End => None,
            Next::Step(id) => index.get(id).copied(),
        };
        let nexts: Vec<&Next> = match &def.steps[i].kind {
            StepKind::Send { next, .. }
            | StepKind::Delay { next, .. }
            | StepKind::Digest { next, .. }
            | StepKind::Fallback { next, .. } => vec![next],
            StepKind::Wait {
                on_event,
                on_timeout,
                ..
            } => vec![on_event, on_timeout],
            StepKind::Branch {
                then, otherwise, ..
            } => vec![then, otherwise],
            StepKind::Stop => vec![],
        };
        nexts.into_iter().filter_map(to).collect()
    };
    // 0 = unvisited, 1 = on stack, 2 = done
    let mut state = vec![0u8; n];
    let mut stack: Vec<usize> = Vec::new();
    fn dfs(
        i: usize,
        succ: &dyn Fn(usize) -> Vec<usize>,
        state: &mut [u8],
        stack: &mut Vec<usize>,
    ) -> Option<Vec<usize>> {
        state[i] = 1;
        stack.push(i);
        for j in succ(i) {
            if state[j] == 1 {
                let from = stack.iter().position(|x| *x == j).unwrap_or(0);
                let mut c = stack[from..].to_vec();
                c.push(j);
                return Some(c);
            }
            if state[j] == 0 {
                if let Some(c) = dfs(j, succ, state, stack) {
                    return Some(c);
                }
            }
        }
        stack.pop();
        state[i] = 2;
        None
    }
    for i in 0..n {
        if state[i] == 0 {
            if let Some(c) = dfs(i, &succ, &mut state, &mut stack) {
                return Some(c.into_iter().map(|x| def.steps[x].id.clone()).collect());
            }
        }
    }
    None
}

/// Each step's position by id, checking the ids (valid, not reserved, unique).
fn step_index(v: &mut Violations, steps: &[StepDef]) -> HashMap<String, usize> {
    let mut index = HashMap::new();
    for (i, s) in steps.iter().enumerate() {
        validate_id(v, &format!("steps[{i}].id"), &s.id);
        if s.id == "next" || s.id == "end" {
            v.push(
                format!("steps[{i}].id"),
                "\"next\" and \"end\" are reserved",
            );
        }
        if index.insert(s.id.clone(), i).is_some() {
            v.push(
                format!("steps[{i}].id"),
                format!("duplicate step id {}", quote(&s.id)),
            );
        }
    }
    index
}

/// The per-step checks of [`Flow::build`], collecting the compiled branch
/// conditions and parsed durations on the way.
struct StepChecker<'a, F> {
    def: &'a FlowDef,
    index: &'a HashMap<String, usize>,
    template_channel: &'a F,
    publishing: bool,
    v: &'a mut Violations,
    conditions: HashMap<usize, Condition>,
    durations: HashMap<(usize, &'static str), u64>,
}

impl<F: Fn(&str) -> Option<Channel>> StepChecker<'_, F> {
    fn step(&mut self, i: usize, s: &StepDef) {
        let f = format!("steps[{i}]");
        match &s.kind {
            StepKind::Send { send, next } => {
                self.send(&f, send);
                self.next(format!("{f}.next"), next);
            }
            StepKind::Delay {
                duration,
                until,
                offset,
                next,
                ..
            } => {
                match (duration, until) {
                    (Some(d), None) => {
                        self.duration(i, "duration", &format!("{f}.duration"), d);
                    }
                    (None, Some(path)) => self.until(&f, path, offset.as_deref()),
                    _ => self.v.push(
                        f.clone(),
                        "a delay needs exactly one of `duration` or `until`",
                    ),
                }
                if offset.is_some() && until.is_none() {
                    self.v
                        .push(format!("{f}.offset"), "an offset needs `until`");
                }
                self.next(format!("{f}.next"), next);
            }
            StepKind::Digest { digest, next } => {
                self.digest(i, &f, digest);
                self.next(format!("{f}.next"), next);
            }
            StepKind::Wait {
                step,
                timeout,
                on_event,
                on_timeout,
                ..
            } => {
                self.waited_step(i, &f, step);
                self.duration(i, "timeout", &format!("{f}.timeout"), timeout);
                self.next(format!("{f}.on_event"), on_event);
                self.next(format!("{f}.on_timeout"), on_timeout);
            }
            StepKind::Branch {
                condition,
                step_status,
                then,
                otherwise,
            } => {
                self.branch(i, &f, condition.as_deref(), step_status.as_ref());
                self.next(format!("{f}.then"), then);
                self.next(format!("{f}.else"), otherwise);
            }
            StepKind::Fallback { chain, ack, next } => {
                if chain.len() < 2 {
                    self.v
                        .push(format!("{f}.chain"), "a fallback needs at least two sends");
                }
                for (k, s) in chain.iter().enumerate() {
                    self.send(&format!("{f}.chain[{k}]"), s);
                }
                if let Some(a) = ack {
                    self.duration(i, "ack", &format!("{f}.ack.timeout"), &a.timeout);
                }
                self.next(format!("{f}.next"), next);
            }
            StepKind::Stop => {}
        }
    }

    /// A digest step: a `payload.` key, exactly one of `window` or
    /// `schedule` (parsed), `max_items` in range, and its `if` compiled.
    fn digest(&mut self, i: usize, f: &str, d: &DigestSpec) {
        match d.key.strip_prefix("payload.") {
            _ if d.key.is_empty() => self.v.push(
                format!("{f}.key"),
                "a digest needs a key (a payload path such as payload.project_id)",
            ),
            Some(rest) if !rest.is_empty() && rest.split('.').all(|p| !p.is_empty()) => {}
            _ => self.v.push(
                format!("{f}.key"),
                format!(
                    "{} is not a payload path (such as payload.project_id)",
                    quote(&d.key)
                ),
            ),
        }
        match (&d.window, &d.schedule) {
            (Some(w), None) => self.duration(i, "window", &format!("{f}.window"), w),
            (None, Some(s)) => {
                let utc = crate::time::zone("UTC").expect("UTC is a zone");
                if let Err(e) = crate::time::Recurrence::parse(s, 0, utc) {
                    self.v.push(format!("{f}.schedule"), e);
                }
            }
            (Some(_), Some(_)) => self.v.push(
                format!("{f}.schedule"),
                "a digest has a `window` or a `schedule`, not both",
            ),
            (None, None) => self.v.push(
                format!("{f}.window"),
                "a digest needs a `window` (such as 1h) or a `schedule`",
            ),
        }
        if let Some(n) = d.max_items {
            if !(1..=limits::MAX_DIGEST_ITEMS).contains(&n) {
                self.v.push(
                    format!("{f}.max_items"),
                    format!("must be 1 to {}", limits::MAX_DIGEST_ITEMS),
                );
            }
        }
        if let Some(c) = &d.condition {
            match Condition::compile(c) {
                Ok(c) => {
                    self.conditions.insert(i, c);
                }
                Err(e) => self.v.push(format!("{f}.if"), e),
            }
        }
    }

    fn next(&mut self, field: String, n: &Next) {
        if let Next::Step(id) = n {
            if !self.index.contains_key(id) {
                self.v
                    .push(field, format!("jumps to unknown step {}", quote(id)));
            }
        }
    }

    fn duration(&mut self, i: usize, key: &'static str, field: &str, text: &str) {
        match parse_bounded_ms(text, limits::MAX_DELAY_MS, self.publishing) {
            Ok(ms) => {
                self.durations.insert((i, key), ms);
            }
            Err(e) => self.v.push(field, e),
        }
    }

    /// A delay `until` a payload time: the path, and the signed offset
    /// (elapsed time, bounded like other durations).
    fn until(&mut self, f: &str, path: &str, offset: Option<&str>) {
        if !path.starts_with("payload.") || path.len() == "payload.".len() {
            self.v.push(
                format!("{f}.until"),
                "must be a path starting with payload. (e.g. payload.appointment_at)",
            );
        }
        if let Some(text) = offset {
            match crate::time::parse_signed_duration(text) {
                Ok(ms) if self.publishing && ms.unsigned_abs() > limits::MAX_DELAY_MS => {
                    self.v.push(
                        format!("{f}.offset"),
                        format!(
                            "{} is longer than the maximum of {} days",
                            quote(text),
                            limits::MAX_DELAY_MS / 86_400_000
                        ),
                    )
                }
                Ok(_) => {}
                Err(e) => self.v.push(format!("{f}.offset"), e),
            }
        }
    }

    /// Send windows (`field` is the list's path): each parses, end after start.
    fn windows(&mut self, field: &str, specs: &[String]) {
        if let Err((k, reason)) = crate::time::Windows::parse(specs) {
            self.v.push(format!("{field}[{k}]"), reason);
        }
    }

    /// A wait's step: an earlier step that sends.
    fn waited_step(&mut self, i: usize, f: &str, step: &str) {
        match self.index.get(step) {
            None => self
                .v
                .push(format!("{f}.step"), format!("unknown step {}", quote(step))),
            Some(j)
                if !matches!(
                    self.def.steps[*j].kind,
                    StepKind::Send { .. } | StepKind::Fallback { .. }
                ) =>
            {
                self.v.push(
                    format!("{f}.step"),
                    format!("step {} sends nothing to wait on", quote(step)),
                )
            }
            Some(j) if *j >= i => self.v.push(
                format!("{f}.step"),
                format!("step {} does not come before this wait", quote(step)),
            ),
            _ => {}
        }
    }

    fn branch(
        &mut self,
        i: usize,
        f: &str,
        condition: Option<&str>,
        status: Option<&StepStatusCheck>,
    ) {
        match (condition, status) {
            (Some(c), None) => match Condition::compile(c) {
                Ok(c) => {
                    self.conditions.insert(i, c);
                }
                Err(e) => self.v.push(format!("{f}.if"), e),
            },
            (None, Some(sc)) => {
                if !self.index.contains_key(&sc.step) {
                    self.v.push(
                        format!("{f}.step_status.step"),
                        format!("unknown step {}", quote(&sc.step)),
                    );
                }
                if !super::run::STEP_STATUSES.contains(&sc.is.as_str()) {
                    self.v.push(
                        format!("{f}.step_status.is"),
                        format!(
                            "unknown status {} (one of {})",
                            quote(&sc.is),
                            super::run::STEP_STATUSES.join(", ")
                        ),
                    );
                }
            }
            _ => self
                .v
                .push(f, "a branch needs exactly one of `if` or `step_status`"),
        }
    }

    fn send(&mut self, field: &str, s: &SendSpec) {
        let v = &mut *self.v;
        let channel = match s.channel.parse::<Channel>() {
            Ok(c) => Some(c),
            Err(e) => {
                v.push(format!("{field}.channel"), e);
                None
            }
        };
        match ((self.template_channel)(&s.template), channel) {
            (None, _) => v.push(
                format!("{field}.template"),
                format!("no template {} exists for this tenant", quote(&s.template)),
            ),
            (Some(tc), Some(c)) if tc != c => v.push(
                format!("{field}.template"),
                format!(
                    "template {} is for channel {tc}, the step sends on {c}",
                    quote(&s.template)
                ),
            ),
            _ => {}
        }
        if let Some(p) = &s.provider {
            if !KNOWN_PROVIDERS.contains(&p.as_str()) {
                v.push(
                    format!("{field}.provider"),
                    format!(
                        "unknown provider {} (known: {})",
                        quote(p),
                        KNOWN_PROVIDERS.join(", ")
                    ),
                );
            }
        }
        check_push_fields(v, field, s, channel);
        if let Some(to) = &s.to {
            if !(to.starts_with("payload.") || to.starts_with("subscriber.")) {
                v.push(
                    format!("{field}.to"),
                    "must be a path starting with payload. or subscriber.",
                );
            }
        }
        if !s.windows.is_empty() {
            self.windows(&format!("{field}.windows"), &s.windows);
        }
    }
}

/// The push and in-app fields of a send: only on the channels that use
/// them, an app on every push (and on an in_app step whose link needs the
/// app's pattern), and their shapes (whether the app exists and
/// links to the type is checked at publication, [`FlowDef::check_apps`]).
fn check_push_fields(v: &mut Violations, field: &str, s: &SendSpec, channel: Option<Channel>) {
    let push = channel == Some(Channel::Push);
    let in_app = channel == Some(Channel::InApp);
    if push && s.app.is_none() {
        v.push(
            format!("{field}.app"),
            "a push step names the app whose devices receive it",
        );
    }
    if !push && channel.is_some() && s.push.is_some() {
        v.push(format!("{field}.push"), "only push steps take it");
    }
    if !(push || in_app) && channel.is_some() {
        let fields = [
            ("app", s.app.is_some()),
            ("link", s.link.is_some()),
            ("data", s.data.is_some()),
        ];
        for (name, set) in fields {
            if set {
                v.push(
                    format!("{field}.{name}"),
                    "only push and in_app steps take it",
                );
            }
        }
    }
    if !in_app && s.category.is_some() && channel.is_some() {
        v.push(format!("{field}.category"), "only in_app steps take it");
    }
    if let Some(d) = &s.data {
        if !d.starts_with("payload.") {
            v.push(
                format!("{field}.data"),
                "must be a path starting with payload.",
            );
        }
    }
    crate::push::check_step(
        v,
        field,
        s.app.as_deref(),
        s.link.as_ref(),
        s.push.as_ref(),
        None,
    );
}

impl FlowDef {
    /// Every send of the definition (steps and fallback chains) with its
    /// field path.
    pub fn sends(&self) -> Vec<(String, &SendSpec)> {
        let mut out = Vec::new();
        for (i, step) in self.steps.iter().enumerate() {
            match &step.kind {
                StepKind::Send { send, .. } => out.push((format!("steps[{i}]"), send)),
                StepKind::Fallback { chain, .. } => {
                    for (j, send) in chain.iter().enumerate() {
                        out.push((format!("steps[{i}].chain[{j}]"), send));
                    }
                }
                _ => {}
            }
        }
        out
    }

    /// Publication's check of the sends' apps and links against the
    /// tenant's apps (`apps` finds one by id).
    pub fn check_apps(&self, apps: &dyn Fn(&str) -> Option<crate::push::App>) -> Violations {
        let mut v = Violations::default();
        for (field, s) in self.sends() {
            crate::push::check_step(
                &mut v,
                &field,
                s.app.as_deref(),
                s.link.as_ref(),
                None,
                Some(apps),
            );
        }
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::flow::{Ctx, Input, Output, RetryPolicy, Run};
    use serde_json::json;

    fn parse(text: &str) -> Result<Flow, Violations> {
        Flow::parse(text, 1, |_| Some(Channel::Email))
    }

    fn fields(e: &Violations) -> Vec<&str> {
        e.0.iter().map(|v| v.field.as_str()).collect()
    }

    const SEND: &str = "{id: e, type: send, channel: email, template: t}";

    #[test]
    fn delay_until_offsets_and_send_windows_are_checked_by_field() {
        let text = "id: w\nwindows: [\"Mon-Fri 09:00-17:00\", \"Sun 12:00-11:00\"]\nsteps:\n  - {id: a, type: delay, until: appointment_at}\n  - {id: b, type: delay, until: payload.at, offset: -367d}\n  - {id: c, type: delay, until: payload.at, offset: soon}\n  - {id: d, type: delay, duration: 1h, offset: 1h}\n  - {id: e, type: send, channel: email, template: t, windows: [\"Mon 09:00-08:00\"]}\n  - {id: f, type: fallback, chain: [{channel: email, template: t}, {channel: email, template: t, windows: [\"Xyz 09:00-10:00\"]}]}\n";
        let err = parse(text).unwrap_err();
        assert_eq!(
            fields(&err),
            [
                "steps[0].until",
                "steps[1].offset",
                "steps[2].offset",
                "steps[3].offset",
                "steps[4].windows[0]",
                "steps[5].chain[1].windows[0]",
                "windows[1]",
            ],
            "{err}"
        );
        assert!(
            err.0[1].description.contains("maximum of 366 days"),
            "{err}"
        );
        let ok = "id: w\nwindows: [\"Mon-Fri 09:00-17:00\"]\nsteps:\n  - {id: b, type: delay, until: payload.appointment_at, offset: -24h, if_past: skip}\n  - {id: e, type: send, channel: email, template: t, windows: [\"Daily 10:00-20:00\"]}\n";
        let flow = parse(ok).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(flow.def.windows, ["Mon-Fri 09:00-17:00"]);
    }

    #[test]
    fn durations_over_their_bounds_are_refused_by_field() {
        let text = format!(
            "id: w\ndedup_window: 31d\nthrottle:\n  - {{scope: recipient, limit: 1, window: 31d}}\nsteps:\n  - {SEND}\n  - {{id: d, type: delay, duration: 367d}}\n  - {{id: x, type: wait, for: opened, step: e, timeout: 400d}}\n"
        );
        let err = parse(&text).unwrap_err();
        assert_eq!(
            fields(&err),
            [
                "steps[1].duration",
                "steps[2].timeout",
                "dedup_window",
                "throttle[0].window"
            ],
            "{err}"
        );
        assert!(err.0[2].description.contains("maximum of 30d"), "{err}");
        // At the bounds they are accepted.
        let ok = format!("id: w\ndedup_window: 30d\nsteps:\n  - {SEND}\n  - {{id: d, type: delay, duration: 366d}}\n");
        assert_eq!(
            parse(&ok).unwrap().dedup_window_ms,
            Some(limits::MAX_DEDUP_WINDOW_MS)
        );
    }

    #[test]
    fn published_definitions_over_a_bound_are_clamped_when_rebuilt() {
        let def: FlowDef = serde_norway::from_str(&format!(
            "id: w\ndedup_window: 36500d\nsteps:\n  - {SEND}\n  - {{id: d, type: delay, duration: 99999d}}\n"
        ))
        .unwrap();
        let json = serde_json::to_string(&def).unwrap();
        let flow = Flow::from_json(&json, 1).unwrap();
        assert_eq!(flow.dedup_window_ms, Some(limits::MAX_DEDUP_WINDOW_MS));
        assert_eq!(flow.durations[&(1, "duration")], limits::MAX_DELAY_MS);
    }

    #[test]
    fn sizes_and_counts_are_refused_by_field() {
        let steps: String = (0..=limits::MAX_STEPS)
            .map(|i| format!("  - {{id: s{i}, type: send, channel: email, template: t}}\n"))
            .collect();
        let err = parse(&format!("id: w\nsteps:\n{steps}")).unwrap_err();
        assert_eq!(fields(&err), ["steps"], "{err}");
        let name = "n".repeat(limits::MAX_NAME_BYTES + 1);
        let to = format!("payload.{}", "p".repeat(limits::MAX_PATH_BYTES));
        let text = format!("id: w\nname: {name}\nsteps:\n  - {{id: e, type: send, channel: email, template: t, to: {to}}}\n");
        let err = parse(&text).unwrap_err();
        assert_eq!(fields(&err), ["name", "steps[0].to"], "{err}");
        let huge = format!(
            "id: w\nname: {}\nsteps: []\n",
            "n".repeat(limits::MAX_DEFINITION_BYTES)
        );
        assert_eq!(fields(&parse(&huge).unwrap_err()), ["definition"]);
    }

    #[test]
    fn parse_errors_quote_only_an_excerpt() {
        let key = "k".repeat(100_000);
        let err = parse(&format!("{{\"id\": \"w\", \"steps\": [], \"{key}\": 1}}")).unwrap_err();
        assert!(err.0[0].description.contains("unknown field"), "{err}");
        assert!(
            err.0[0].description.len() < 400,
            "{}",
            err.0[0].description.len()
        );
        let err = parse(&format!(
            "id: w\nsteps:\n  - {{id: e, type: send, channel: email, template: t, next: {key}}}\n"
        ))
        .unwrap_err();
        assert!(err.0[0].description.len() < 400, "{err:.300}");
    }

    #[test]
    fn a_branch_condition_over_budget_takes_else_with_the_reason() {
        let text = format!(
            "id: w\nsteps:\n  - {{id: b, type: branch, if: 'payload.l.exists(a, payload.l.exists(b, a != b))', then: end}}\n  - {SEND}\n"
        );
        let flow = parse(&text).unwrap();
        let payload = json!({"l": vec![1; 30_000]});
        let ctx = Ctx {
            now_ms: 0,
            payload: &payload,
            subscriber: &json!({}),
            tenant: &json!({}),
            retry: &RetryPolicy::default(),
        };
        let out = Run::new("n1", &flow).apply(&flow, Input::Start, &ctx);
        let note = out.iter().find_map(|o| match o {
            Output::Note(n) => Some(n.clone()),
            _ => None,
        });
        let note = note.expect("a note for the condition");
        assert!(note.contains("exceeded its evaluation budget"), "{note}");
        // The else branch: the send after the branch.
        assert!(out
            .iter()
            .any(|o| matches!(o, Output::Send { step, .. } if step == "e")));
    }
}
