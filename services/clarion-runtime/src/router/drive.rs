//! Driving a run: applying an input to it (the workflow engine,
//! `flow::run`) and carrying out what it asks for — sends (throttled,
//! rendered), timers, notes and its end — feeding what happened on the way
//! (a throttled send, a render failure) back into it.

use std::collections::VecDeque;
use std::sync::Arc;

use clarion_domain::flow::run::{FailureStage, Purpose};
use clarion_domain::flow::throttle::Hold;
use clarion_domain::flow::{Ctx, Flow, Input as RunInput, Output, SendSpec, Terminal};
use clarion_domain::push::App;
use clarion_domain::recipient::dlq;
use clarion_domain::recipient::timing::Gate;
use clarion_domain::router::{render_send, SendInput};
use clarion_domain::subscriber::Subscriber;
use clarion_domain::{Channel, Event, Id, Payload};
use clarion_proto::events as pb;
use clarion_store::Store;
use serde_json::{json, Value};

use super::throttle::Sending;
use super::timing::SendAt;
use super::{actor, dead_letter_key, Router, RunRecord};
use crate::notification_index::{self, Status};
use crate::processor::{Batch, Emit, ProcessError};
use crate::topics::Topic;

/// One pass of inputs through a run: where its emits come from, what is
/// still to feed it, and what its end needs.
struct Pass<'a> {
    cause: &'a Event,
    flow: &'a Flow,
    /// The next output index of the cause (output ids derive from it).
    index: &'a mut u32,
    queue: VecDeque<RunInput>,
    /// The recipient, built at the first send.
    subscriber: Option<Subscriber>,
    dead_lettered_now: bool,
    /// The `Ended` of a dead letter: the dead-letter queue's row.
    dead_letter: Option<Event>,
    /// A digest the run leads that closed as it opened (`max_items: 1`).
    digest: Option<clarion_domain::digest::Batch>,
    /// The run's status in the console's index before the pass: its row
    /// is rewritten only when the pass changes it.
    index_before: Status,
}

impl Pass<'_> {
    fn emit(&mut self, batch: &mut Batch, topic: Topic, payload: Payload) {
        let ev = self
            .cause
            .caused(*self.index, batch.now_ms, actor(), payload);
        *self.index += 1;
        batch.emit(topic, ev);
    }
}

impl Router {
    /// Feeds a fact about an existing run into it.
    pub(super) async fn feed(
        &mut self,
        store: &dyn Store,
        batch: &mut Batch,
        cause: &Event,
        nid: &str,
        input: impl FnOnce(&RunRecord) -> Option<RunInput>,
        out_index: &mut u32,
    ) -> Result<(), ProcessError> {
        let tenant = cause.tenant.as_str();
        let Some(rec) = self.take_run_record(store, tenant, nid).await? else {
            return Ok(()); // not a workflow run of ours (or already purged)
        };
        let Some(input) = input(&rec) else {
            self.remember(tenant, nid.to_string(), rec, false);
            return Ok(());
        };
        let flow = self
            .flow(
                store,
                tenant,
                &rec.run.workflow_id,
                rec.run.workflow_version,
            )
            .await;
        let Ok(Some(flow)) = flow else {
            self.remember(tenant, nid.to_string(), rec, false);
            return flow.map(|_| ());
        };
        self.drive(store, batch, cause, &flow, rec, input, out_index)
            .await
    }

    /// Applies `first` to a run and carries out everything it asks for,
    /// feeding throttled sends and render failures back into it.
    #[allow(clippy::too_many_arguments)]
    pub(super) async fn drive(
        &mut self,
        store: &dyn Store,
        batch: &mut Batch,
        cause: &Event,
        flow: &Flow,
        mut rec: Box<RunRecord>,
        first: RunInput,
        out_index: &mut u32,
    ) -> Result<(), ProcessError> {
        let tenant = cause.tenant.as_str();
        let was_in_dlq = rec.in_dlq;
        // A new run is written anyway, and so is one given the outcome it
        // waits for (the common case: a send's `sent`) or an engagement that
        // raises its status (the `delivered` behind it); only other inputs,
        // which often change nothing, need the state before to compare with.
        let fresh = matches!(first, RunInput::Start | RunInput::StartAt { .. });
        // A new run's row was written as its trigger was accepted.
        let index_before = match first {
            RunInput::Start => Status::Running,
            RunInput::StartAt { .. } => Status::Scheduled,
            _ => Status::of_run(&rec.run, rec.in_dlq),
        };
        let run_before = (!fresh && !rec.run.surely_changes(&first)).then(|| rec.run.clone());
        // The subscriber (with the trigger's contact data) is built when a
        // send needs it or a condition reads it: most inputs (a send's
        // `sent`, `delivered`) only advance the run.
        let (sub_json, tenant_json) = if flow.has_branch_conditions() {
            let s = self.recipient(store, tenant, &rec).await?;
            (s.template_context(), json!({"id": tenant}))
        } else {
            (Value::Null, Value::Null)
        };
        let mut pass = Pass {
            cause,
            flow,
            index: out_index,
            queue: VecDeque::from([first]),
            subscriber: None,
            dead_lettered_now: false,
            dead_letter: None,
            digest: None,
            index_before,
        };
        while let Some(input) = pass.queue.pop_front() {
            if let Some(closed) = pass.digest.take() {
                rec.digest = Some(closed);
            }
            // Failures are retried by the policy of the channel being sent on.
            let channel = rec.run.attempts.last().map_or("", |a| a.channel.as_str());
            let retry = self.retry.for_send(tenant, channel).clone();
            let ctx = Ctx {
                now_ms: batch.now_ms,
                payload: &rec.payload,
                subscriber: &sub_json,
                tenant: &tenant_json,
                retry: &retry,
            };
            for output in rec.run.apply(flow, input, &ctx) {
                self.carry_out(store, batch, &rec, output, &mut pass)
                    .await?;
            }
        }
        let changed = run_before.is_none_or(|before| before != rec.run);
        self.settle(store, batch, rec, was_in_dlq, changed, pass)
            .await
    }

    /// Carries out one output of a run.
    async fn carry_out(
        &mut self,
        store: &dyn Store,
        batch: &mut Batch,
        rec: &RunRecord,
        output: Output,
        pass: &mut Pass<'_>,
    ) -> Result<(), ProcessError> {
        let nid = &rec.run.notification_id;
        match output {
            Output::Send {
                step,
                attempt_id,
                spec,
            } => {
                let (cause, flow) = (pass.cause, pass.flow);
                let tenant = cause.tenant.as_str();
                if let Some(reason) = self
                    .preferences_deny(store, tenant, flow, rec, &spec, &mut pass.subscriber)
                    .await?
                {
                    // The run notes it and goes on: nothing else is emitted.
                    pass.queue
                        .push_back(RunInput::Suppressed { attempt_id, reason });
                    return Ok(());
                }
                let at = SendAt {
                    tenant,
                    rec,
                    spec: &spec,
                    step: &step,
                    attempt_id: &attempt_id,
                };
                let gate = self
                    .send_gate(store, batch, flow, at, &mut pass.subscriber)
                    .await?;
                if !gated(batch, nid, &attempt_id, gate, pass) {
                    return Ok(());
                }
                let send = Sending {
                    tenant,
                    subscriber: &rec.subscriber_id,
                    channel: &spec.channel,
                    attempt_id: &attempt_id,
                };
                match self.throttle(store, batch, pass.flow, send).await? {
                    Some(hold) => held(batch, nid, step, attempt_id, hold, pass),
                    None => {
                        self.send(store, batch, rec, step, attempt_id, &spec, pass)
                            .await?
                    }
                }
            }
            Output::Timer {
                seq,
                due_ms,
                purpose,
            } => schedule(batch, pass.cause, rec, seq, due_ms, purpose),
            Output::Note(message) => pass.emit(
                batch,
                Topic::Notifications,
                Payload::Noted(pb::RunNoted {
                    notification_id: nid.clone(),
                    message,
                }),
            ),
            Output::End { terminal, reason } => self.end(batch, rec, terminal, reason, pass),
            Output::Digest { step, key } => {
                let tenant = pass.cause.tenant.as_str();
                let (answers, closed) = self
                    .digest_arrival(store, batch, tenant, rec, pass.flow, &step, key)
                    .await?;
                pass.queue.extend(answers);
                if closed.is_some() {
                    pass.digest = closed;
                }
            }
        }
        Ok(())
    }

    /// Renders a send that may go: `Routed` and the `DispatchRequested`, or
    /// a failed attempt (stage `route`) fed back to the run.
    #[allow(clippy::too_many_arguments)]
    async fn send(
        &mut self,
        store: &dyn Store,
        batch: &mut Batch,
        rec: &RunRecord,
        step: String,
        attempt_id: String,
        spec: &SendSpec,
        pass: &mut Pass<'_>,
    ) -> Result<(), ProcessError> {
        let cause: &Event = pass.cause;
        let tenant = cause.tenant.as_str();
        let template = self.template(store, tenant, &spec.template).await?;
        let subscriber = match &mut pass.subscriber {
            Some(s) => s,
            None => pass
                .subscriber
                .insert(self.recipient(store, tenant, rec).await?),
        };
        let (app, push_targets) = self.push_context(store, batch, tenant, rec, spec).await?;
        let default_provider = |c: Channel| self.default_provider(c);
        let nid = &rec.run.notification_id;
        let digest = rec.digest.as_ref().map(|d| d.template_value());
        let rendered = render_send(&SendInput {
            tenant,
            notification_id: nid,
            workflow_id: &rec.run.workflow_id,
            workflow_version: rec.run.workflow_version,
            step: &step,
            step_index: pass.flow.step_index(&step).unwrap_or(0) as u32,
            attempt_id: &attempt_id,
            spec,
            subscriber,
            payload: &rec.payload,
            template: template.as_deref(),
            default_provider: &default_provider,
            app: app.as_deref(),
            push_targets: &push_targets,
            digest: digest.as_ref(),
        });
        match rendered {
            Ok((routed, dispatch)) => {
                pass.emit(batch, Topic::Notifications, Payload::Routed(routed));
                pass.emit(batch, Topic::Dispatch, Payload::DispatchRequested(dispatch));
            }
            Err(reason) => {
                let failed = pb::NotificationFailed {
                    notification_id: nid.clone(),
                    attempt_id: attempt_id.clone(),
                    provider: String::new(),
                    reason: reason.clone(),
                    retryable: false,
                    stage: FailureStage::Route.as_str().into(),
                    context: None,
                };
                pass.emit(batch, Topic::Notifications, Payload::Failed(failed));
                pass.queue.push_back(RunInput::Failed {
                    attempt_id,
                    retryable: false,
                    reason,
                });
            }
        }
        Ok(())
    }

    /// What a push or in-app send needs besides the message: the step's
    /// app (`None` when it names none or the tenant has no such app; the
    /// render says which) and, for a push, the devices it goes to.
    async fn push_context(
        &mut self,
        store: &dyn Store,
        batch: &Batch,
        tenant: &str,
        rec: &RunRecord,
        spec: &SendSpec,
    ) -> Result<(Option<Arc<App>>, Vec<pb::PushTarget>), ProcessError> {
        let channel = spec.channel.parse::<Channel>().ok();
        if !matches!(channel, Some(Channel::Push | Channel::InApp)) {
            return Ok((None, Vec::new()));
        }
        let app = match &spec.app {
            Some(id) => self.app(store, tenant, id).await?,
            None => None,
        };
        let targets = match (&app, channel) {
            (Some(app), Some(Channel::Push)) => {
                self.push_targets(store, tenant, &rec.subscriber_id, &app.app_id, batch.now_ms)
                    .await?
            }
            _ => Vec::new(),
        };
        Ok((app, targets))
    }

    /// The run's end: its `RunEnded` (with the attempts, for the history and
    /// the dead-letter queue) and the metric.
    fn end(
        &mut self,
        batch: &mut Batch,
        rec: &RunRecord,
        terminal: Terminal,
        reason: String,
        pass: &mut Pass<'_>,
    ) {
        let dead = terminal == Terminal::DeadLettered;
        pass.dead_lettered_now |= dead;
        self.count_run_ended(terminal.as_str());
        let run = &rec.run;
        let ended = pb::RunEnded {
            notification_id: run.notification_id.clone(),
            outcome: terminal.as_str().into(),
            reason,
            workflow_id: run.workflow_id.clone(),
            workflow_version: run.workflow_version,
            step: run
                .attempts
                .last()
                .map(|a| a.step.clone())
                .unwrap_or_default(),
            attempts: run
                .attempts
                .iter()
                .map(|a| pb::AttemptRecord {
                    attempt_id: a.attempt_id.clone(),
                    step: a.step.clone(),
                    channel: a.channel.clone(),
                    provider: a.provider.clone(),
                    at_ms: a.at_ms,
                    error: a.error.clone().unwrap_or_default(),
                    retryable: a.retryable,
                    sent: a.sent,
                })
                .collect(),
            subscriber_id: rec.subscriber_id.clone(),
        };
        pass.emit(batch, Topic::Notifications, Payload::Ended(ended));
        if dead {
            pass.dead_letter = batch.emits.last().map(|e| e.event.clone());
        }
    }

    /// After a pass: the run's place in the dead-letter queue (its row is
    /// the router's to write, in the commit that moves the run in or out, so
    /// a listing never disagrees with the runs), and the run kept for its
    /// next input.
    async fn settle(
        &mut self,
        store: &dyn Store,
        batch: &mut Batch,
        mut rec: Box<RunRecord>,
        was_in_dlq: bool,
        changed: bool,
        pass: Pass<'_>,
    ) -> Result<(), ProcessError> {
        let cause: &Event = pass.cause;
        let tenant = cause.tenant.as_str();
        let nid = rec.run.notification_id.clone();
        let (in_dlq, delta) = dlq::membership(was_in_dlq, pass.dead_lettered_now, rec.run.terminal);
        rec.in_dlq = in_dlq;
        index_if_changed(batch, tenant, &rec, pass.index_before);
        match pass.dead_letter {
            Some(ended) => batch
                .writes
                .put(dead_letter_key(tenant, &nid), ended.encode()),
            None if delta < 0 => batch.writes.delete(dead_letter_key(tenant, &nid)),
            None => &mut batch.writes,
        };
        // Late engagement, stale timers and repeats often change nothing: the
        // run record is the biggest row per notification, so skip the rewrite.
        self.remember(tenant, nid, rec, changed || delta != 0);
        if delta != 0 {
            self.dlq_changed(store, batch, cause, tenant, delta).await?;
        }
        Ok(())
    }
}

/// Rewrites the run's row in the console's index when its status is no
/// longer `before` (most inputs, a send's `sent` among them, leave it).
pub(super) fn index_if_changed(batch: &mut Batch, tenant: &str, rec: &RunRecord, before: Status) {
    let now = Status::of_run(&rec.run, rec.in_dlq);
    if now == before {
        return;
    }
    let run = &rec.run;
    if let Some(key) = notification_index::row(tenant, &run.notification_id) {
        let entry =
            notification_index::Entry::new(&run.workflow_id, &rec.subscriber_id, now, batch.now_ms);
        batch.writes.put(key, bytes::Bytes::from(entry.encode()));
    }
}

/// A send held back by a limit: deferred (noted, and tried again at the
/// time) or dropped; either way the run hears that it never went out.
fn held(
    batch: &mut Batch,
    nid: &str,
    step: String,
    attempt_id: String,
    hold: Hold,
    pass: &mut Pass<'_>,
) {
    let (defer_until, reason) = match hold {
        Hold::Drop(reason) => (None, reason),
        Hold::Defer(at, reason) => (Some(at), reason),
    };
    if let Some(at) = defer_until {
        let noted = pb::RunNoted {
            notification_id: nid.to_string(),
            message: format!("{reason}; step {step} deferred to {at}"),
        };
        pass.emit(batch, Topic::Notifications, Payload::Noted(noted));
    }
    pass.queue.push_back(RunInput::Throttled {
        attempt_id,
        defer_until,
        reason,
    });
}

/// A send's send windows and quiet hours: `true` when it goes now (noted
/// when critical bypassed quiet hours); otherwise the run hears that it
/// waits (same attempt id, noted) or was dropped.
fn gated(batch: &mut Batch, nid: &str, attempt_id: &str, gate: Gate, pass: &mut Pass<'_>) -> bool {
    let note = |pass: &mut Pass<'_>, batch: &mut Batch, message: String| {
        let noted = pb::RunNoted {
            notification_id: nid.to_string(),
            message,
        };
        pass.emit(batch, Topic::Notifications, Payload::Noted(noted));
    };
    let attempt_id = attempt_id.to_string();
    match gate {
        Gate::Go { note: None } => return true,
        Gate::Go { note: Some(n) } => {
            note(pass, batch, n);
            return true;
        }
        Gate::Wait {
            until_ms,
            purpose,
            note: n,
        } => {
            note(pass, batch, n);
            pass.queue.push_back(RunInput::Deferred {
                attempt_id,
                until_ms,
                purpose,
            });
        }
        Gate::Drop { reason } => {
            pass.queue
                .push_back(RunInput::Suppressed { attempt_id, reason });
        }
    }
    false
}

/// A timer of the run: its `TimerFired` (fixed id) appended when due.
fn schedule(
    batch: &mut Batch,
    cause: &Event,
    rec: &RunRecord,
    seq: u32,
    due_ms: i64,
    purpose: Purpose,
) {
    let nid = &rec.run.notification_id;
    let fired = Event {
        id: Id::derive(&[
            b"timer",
            cause.tenant.as_str().as_bytes(),
            nid.as_bytes(),
            &seq.to_le_bytes(),
        ]),
        tenant: cause.tenant.clone(),
        partition_key: rec.key.clone(),
        occurred_at_ms: due_ms,
        causation_id: Some(cause.id),
        correlation_id: cause.correlation_id,
        actor: actor(),
        payload: Payload::TimerFired(pb::TimerFired {
            notification_id: nid.clone(),
            seq,
            purpose: purpose.as_str().into(),
        }),
    };
    let emit = Emit {
        topic: Topic::Triggers,
        event: fired,
    };
    batch.timers.push((due_ms, emit));
}
