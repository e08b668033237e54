//! Run records: what the router keeps per notification (the `runs` table),
//! and how they are stored.

use bytes::Bytes;
use clarion_domain::flow::{Run, Terminal};
use clarion_domain::payload::SharedPayload;
use clarion_proto::events as pb;
use clarion_store::{RowKey, Store, Table};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::processor::ProcessError;

/// What the router keeps per notification (the `runs` table; see [`encode_run`]).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RunRecord {
    pub run: Run,
    pub subscriber_id: String,
    /// Shared with the other runs of its Trigger request while in memory.
    pub payload: SharedPayload,
    /// Contact data given with the trigger (overrides the stored subscriber).
    pub contact: ContactOverride,
    /// Partition key of the recipient stream (for timers).
    pub key: String,
    /// In the dead-letter queue (dead-lettered, not yet retried or discarded).
    #[serde(default)]
    pub in_dlq: bool,
    /// The trigger or its workflow is critical: quiet hours and digests
    /// do not apply.
    #[serde(default)]
    pub critical: bool,
    /// The digest this run leads, once closed (its sends render it).
    #[serde(default)]
    pub digest: Option<clarion_domain::digest::Batch>,
    /// The payload paths the workflow marks personal: sealed in the stored
    /// record (`super::sealed_runs`).
    #[serde(default)]
    pub personal_paths: Vec<String>,
    /// `contact` as the log holds it (sealed), when it came so: a run
    /// record stored again reuses it instead of sealing the same values
    /// at every write. In memory only.
    #[serde(skip)]
    pub sealed_contact: Option<ContactOverride>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ContactOverride {
    pub email: String,
    pub phone: String,
    pub locale: String,
    pub timezone: String,
    pub webhook_url: String,
}

impl ContactOverride {
    pub(super) fn to_pb(&self) -> pb::RecipientOverride {
        pb::RecipientOverride {
            email: self.email.clone(),
            phone: self.phone.clone(),
            locale: self.locale.clone(),
            timezone: self.timezone.clone(),
            webhook_url: self.webhook_url.clone(),
        }
    }
}

impl From<pb::RecipientOverride> for ContactOverride {
    fn from(c: pb::RecipientOverride) -> ContactOverride {
        ContactOverride {
            email: c.email,
            phone: c.phone,
            locale: c.locale,
            timezone: c.timezone,
            webhook_url: c.webhook_url,
        }
    }
}

/// First byte of a MessagePack run record (positional fields, version 1).
/// Records written before it are JSON objects and start with `{`.
const RUN_RECORD_V1: u8 = 1;

/// The dead-letter queue's row of a notification (its value: the `Ended`
/// event that put it there).
pub fn dead_letter_key(tenant: &str, notification_id: &str) -> RowKey {
    RowKey::new(
        Table::DeadLetters,
        tenant,
        "dlq",
        notification_id.as_bytes().to_vec(),
    )
}

/// A run record as stored. Rewritten on every change of the run, it is the
/// router's biggest write: MessagePack with positional fields is about 35 %
/// smaller than JSON (no field names) and cheaper to produce. Fields are
/// only ever appended (with `#[serde(default)]`), or the version byte bumps.
///
/// A run that ended for good (anything but a dead letter, which an operator
/// may retry) is stored without the trigger's payload and contact data:
/// nothing renders for it again, and the ended record is what the table
/// keeps for every notification (a repeated trigger must find it), so at
/// about a third of its size it is cheaper to write, to checkpoint and to
/// search past (docs/architecture.md, "Ended runs are stored slim").
pub fn encode_run(rec: &RunRecord) -> Bytes {
    encode_run_with(rec, rec.payload.json(), &rec.contact)
}

/// Whether a run ended for good: stored without payload and contact data.
pub fn settled(rec: &RunRecord) -> bool {
    rec.run
        .terminal
        .is_some_and(|t| t != Terminal::DeadLettered)
        && !rec.in_dlq
}

/// [`encode_run`] with the payload and contact data given (the router's
/// sealed copies, issue #32: `super::sealed_runs`).
pub fn encode_run_with(rec: &RunRecord, payload: &Value, contact: &ContactOverride) -> Bytes {
    /// [`RunRecord`]'s fields in its order, borrowed: the same MessagePack.
    #[derive(Serialize)]
    struct Stored<'a> {
        run: &'a Run,
        subscriber_id: &'a str,
        payload: &'a Value,
        contact: &'a ContactOverride,
        key: &'a str,
        in_dlq: bool,
        critical: bool,
        digest: Option<&'a clarion_domain::digest::Batch>,
        personal_paths: &'a [String],
    }
    let settled = settled(rec);
    let no_contact = ContactOverride::default();
    let stored = Stored {
        run: &rec.run,
        subscriber_id: &rec.subscriber_id,
        payload: if settled { &Value::Null } else { payload },
        contact: if settled { &no_contact } else { contact },
        key: &rec.key,
        in_dlq: rec.in_dlq,
        critical: rec.critical,
        digest: if settled { None } else { rec.digest.as_ref() },
        personal_paths: if settled { &[] } else { &rec.personal_paths },
    };
    // Room for a typical record (the trigger's payload is most of it): grown
    // from one byte, the buffer was reallocated and copied several times.
    let mut out = Vec::with_capacity(if settled { 256 } else { 512 });
    out.push(RUN_RECORD_V1);
    rmp_serde::encode::write(&mut out, &stored).expect("run records serialize");
    Bytes::from(out)
}

/// Reads a stored run record (MessagePack, or JSON from before it).
pub fn decode_run(b: &[u8]) -> Option<RunRecord> {
    match b.first() {
        Some(&RUN_RECORD_V1) => rmp_serde::from_slice(&b[1..]).ok(),
        Some(b'{') => serde_json::from_slice(b).ok(),
        _ => None,
    }
}

/// Reads a stored run.
pub async fn load_run(
    store: &dyn Store,
    tenant: &str,
    notification_id: &str,
) -> Result<Option<RunRecord>, ProcessError> {
    Ok(store
        .get(&RowKey::new(
            Table::Runs,
            tenant,
            notification_id,
            Vec::new(),
        ))
        .await?
        .and_then(|b| decode_run(&b)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clarion_domain::flow::run::{Attempt, Purpose, StepStatus, Waiting};
    use serde_json::json;

    fn record(waiting: Waiting, terminal: Option<Terminal>, in_dlq: bool) -> RunRecord {
        let mut run = Run {
            notification_id: "0190aa00ffee".into(),
            workflow_id: "visit".into(),
            workflow_version: 3,
            pc: terminal.is_none().then_some(2),
            chain: 1,
            failures: 2,
            generation: 1,
            waiting,
            timer_seq: 5,
            step_status: Default::default(),
            attempts: Vec::new(),
            terminal,
            reason: "provider refused".into(),
        };
        run.step_status.insert("mail".into(), StepStatus::Failed);
        run.attempts.push(Attempt {
            attempt_id: "a1".into(),
            step: "mail".into(),
            channel: "email".into(),
            provider: "smtp".into(),
            at_ms: 1_700_000_000_123,
            error: Some("550 mailbox unavailable".into()),
            retryable: false,
            sent: false,
        });
        RunRecord {
            run,
            subscriber_id: "tech-7".into(),
            payload: json!({"day": "Friday", "n": 3, "nested": {"ok": true, "x": [1.5, null]}})
                .into(),
            contact: ContactOverride {
                email: "t@example.test".into(),
                locale: "fr-CA".into(),
                ..Default::default()
            },
            key: "acme/tech-7".into(),
            in_dlq,
            critical: false,
            digest: None,
            personal_paths: vec!["day".into()],
            sealed_contact: None,
        }
    }

    #[test]
    fn run_records_round_trip_and_are_smaller_than_json() {
        for rec in [
            record(Waiting::Nothing, None, false),
            record(
                Waiting::Outcome {
                    attempt_id: "a1".into(),
                },
                None,
                false,
            ),
            record(
                Waiting::Timer {
                    seq: 4,
                    purpose: Purpose::WaitTimeout,
                },
                None,
                false,
            ),
            record(Waiting::Nothing, Some(Terminal::DeadLettered), true),
        ] {
            let bytes = encode_run(&rec);
            assert_eq!(decode_run(&bytes).as_ref(), Some(&rec));
            let json = serde_json::to_vec(&rec).unwrap();
            assert!(
                bytes.len() * 4 < json.len() * 3,
                "{} vs {}",
                bytes.len(),
                json.len()
            );
            // Records written before the binary format still read.
            assert_eq!(decode_run(&json).as_ref(), Some(&rec));
        }
        assert_eq!(decode_run(b"\x07garbage"), None);
    }

    #[test]
    fn ended_runs_are_stored_without_payload_and_contact() {
        for terminal in [
            Terminal::Completed,
            Terminal::Cancelled,
            Terminal::Suppressed,
        ] {
            let rec = record(Waiting::Nothing, Some(terminal), false);
            let full = encode_run(&record(Waiting::Nothing, None, false));
            let bytes = encode_run(&rec);
            let back = decode_run(&bytes).expect("decodes");
            assert_eq!(back.run, rec.run, "{terminal:?}: the run itself is kept");
            assert_eq!(back.subscriber_id, rec.subscriber_id);
            assert_eq!(back.key, rec.key);
            assert_eq!(*back.payload.json(), Value::Null, "{terminal:?}");
            assert_eq!(back.contact, ContactOverride::default(), "{terminal:?}");
            assert!(
                bytes.len() < full.len(),
                "{} vs {}",
                bytes.len(),
                full.len()
            );
        }
        // A dead letter may be retried: it keeps everything, in or out of
        // the queue (discarded ones are dead letters too).
        for in_dlq in [true, false] {
            let rec = record(Waiting::Nothing, Some(Terminal::DeadLettered), in_dlq);
            assert_eq!(decode_run(&encode_run(&rec)).as_ref(), Some(&rec));
        }
    }
}
