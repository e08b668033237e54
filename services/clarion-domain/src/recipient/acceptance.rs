//! Trigger acceptance: whether a `Triggered` starts a run of its workflow,
//! and how its notification ends when it does not.
//!
//! In order, as the router meets them (each needs something loaded first):
//! 1. a notification that has a run already is a repeat (a retried
//!    request), and nothing happens;
//! 2. a workflow version that does not exist ends it suppressed, with no run;
//! 3. content seen within the workflow's dedup window ends it suppressed,
//!    with no run ([`super::dedup`]);
//! 4. a trigger condition that is false, or cannot be evaluated, ends it
//!    suppressed, recorded as a run that ended (so that a repeat finds it);
//! 5. otherwise the run starts.
//!
//! Every ending is a `RunEnded` with outcome `suppressed` and the reason,
//! so the notification always reaches a terminal state.

use clarion_proto::events as pb;
use serde_json::Value;

use crate::flow::{Ctx as RunCtx, Flow, Input, RetryPolicy, Run, Terminal};

/// What the trigger condition said, as far as acceptance is concerned.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    Start,
    /// The run is recorded as ended suppressed, with this reason.
    Suppress(String),
}

/// Step 4: the trigger condition's result (`Ok(true)` when there is none).
pub fn verdict(matched: Result<bool, String>) -> Verdict {
    match matched {
        Ok(true) => Verdict::Start,
        Ok(false) => Verdict::Suppress("trigger condition is false".to_string()),
        Err(err) => Verdict::Suppress(format!("trigger condition could not be evaluated: {err}")),
    }
}

/// Step 2: the ending of a trigger naming a workflow version that does not
/// exist (or is not projected yet).
pub fn unknown_version(t: &pb::NotificationTriggered) -> pb::RunEnded {
    ended(
        t,
        &t.workflow_id,
        t.workflow_version,
        format!(
            "workflow {:?} version {} does not exist",
            t.workflow_id, t.workflow_version
        ),
    )
}

/// The ending of a trigger its workflow did not start (steps 3 and 4).
pub fn suppressed(t: &pb::NotificationTriggered, flow: &Flow, reason: String) -> pb::RunEnded {
    ended(t, &flow.def.id, flow.version, reason)
}

fn ended(
    t: &pb::NotificationTriggered,
    workflow_id: &str,
    version: u32,
    reason: String,
) -> pb::RunEnded {
    pb::RunEnded {
        notification_id: t.notification_id.clone(),
        outcome: Terminal::Suppressed.as_str().into(),
        reason,
        workflow_id: workflow_id.to_string(),
        workflow_version: version,
        subscriber_id: t.subscriber_id.clone(),
        ..Default::default()
    }
}

/// Records a run that never started as ended suppressed (step 4): its
/// record then answers a repeated trigger.
pub fn suppress(run: &mut Run, flow: &Flow, reason: String, now_ms: i64) {
    let retry = RetryPolicy::default();
    let ctx = RunCtx {
        now_ms,
        payload: &Value::Null,
        subscriber: &Value::Null,
        tenant: &Value::Null,
        retry: &retry,
    };
    // Cancelling a run that has not started ends it at once (and sends
    // nothing); the ending is then called what it is.
    let _ = run.apply(flow, Input::Cancel { reason }, &ctx);
    run.terminal = Some(Terminal::Suppressed);
}

/// The value of the workflow's cancellation key in a payload, under which
/// the run is indexed (`None`: the workflow has no key, or the payload no
/// value for it).
pub fn cancel_key(flow: &Flow, payload: &Value) -> Option<String> {
    let field = flow.def.cancel_key.as_deref()?;
    crate::router::resolve_path(payload, field)
}
