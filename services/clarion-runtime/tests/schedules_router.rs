//! Recurring reminders in the router, over the real embedded parts (the log
//! and the store in one SQLite file, runners stepped by hand on a manual
//! clock): a schedule's occurrences fire at 09:00 local and repeat, pause
//! and resume and delete take effect, and after days of downtime the
//! catch-up policy fires one occurrence or none, never a burst.
//!
//! Two tenants, `acme` and `globex`, each with a subscriber of the same id
//! and a schedule of the same id: each tenant's occurrences are its own.

mod support;

use std::time::Duration;

use chrono::{Datelike, Timelike};
use clarion_domain::flow::Flow;
use clarion_domain::ids::recipient_key;
use clarion_domain::subscriber::Subscriber;
use clarion_domain::template::Template;
use clarion_domain::time::{self, Tz};
use clarion_domain::{Actor, Event, Id, Payload, TenantId};
use clarion_proto::events as pb;
use clarion_runtime::router::schedule_key;
use clarion_runtime::{Clock, Topic};
use prost::Message;
use support::{config_event, Env, PARTITIONS, T0};

const SUB: &str = "sub-1";
const HOUR: i64 = 3_600_000;
const DAY: i64 = 24 * HOUR;

fn tenant(name: &str) -> TenantId {
    TenantId::parse(name).expect("tenant id")
}

impl Env {
    /// Appends to the subscribers' streams, then fires due timers and runs
    /// the routers until nothing more happens.
    async fn on_streams(&mut self, events: Vec<Event>) {
        self.append(Topic::Triggers, &events).await;
        self.settle().await;
    }

    async fn settle(&mut self) {
        for _ in 0..20 {
            let before = self.events(Topic::Triggers).await.len();
            for p in 0..PARTITIONS {
                let recs = self.records(Topic::Triggers, p).await;
                self.routers[p as usize].step(recs).await.expect("routes");
            }
            let mut fired = 0;
            for r in &self.routers {
                fired += r.fire_timers().await.expect("timers fire");
            }
            if fired == 0 && self.events(Topic::Triggers).await.len() == before {
                return;
            }
        }
        panic!("the pipeline did not settle");
    }

    /// Moves the clock and lets what came due happen.
    async fn advance_to(&mut self, at_ms: i64) {
        let now = self.clock.now_ms();
        assert!(at_ms >= now, "the clock only moves forward");
        self.clock
            .advance(Duration::from_millis((at_ms - now) as u64));
        self.settle().await;
    }

    fn stream_event(&mut self, t: &TenantId, payload: Payload) -> Event {
        self.seq += 1;
        Event {
            id: Id::derive(&[b"stream", t.as_str().as_bytes(), &self.seq.to_le_bytes()]),
            tenant: t.clone(),
            partition_key: recipient_key(t, SUB),
            occurred_at_ms: self.clock.now_ms(),
            causation_id: None,
            correlation_id: None,
            actor: Actor::ApiKey("k1".into()),
            payload,
        }
    }

    fn upsert(&mut self, t: &TenantId, timezone: &str) -> Event {
        let s = Subscriber {
            subscriber_id: SUB.into(),
            phone: "+15550000001".into(),
            timezone: timezone.into(),
            ..Default::default()
        };
        self.stream_event(t, Payload::SubscriberUpserted(s.to_event()))
    }

    fn schedule(&mut self, t: &TenantId, rule: &str, catch_up: &str) -> Event {
        let (rrule, cron) = if rule.contains("FREQ=") {
            (rule.to_string(), String::new())
        } else {
            (String::new(), rule.to_string())
        };
        let set = pb::ScheduleSet {
            schedule_id: "weekly".into(),
            subscriber_id: SUB.into(),
            workflow_id: "remind".into(),
            rrule,
            cron,
            start_at_ms: self.clock.now_ms(),
            payload_json: format!(r#"{{"site":"{t}"}}"#),
            catch_up: catch_up.into(),
            ..Default::default()
        };
        self.stream_event(t, Payload::ScheduleSet(set))
    }

    fn state(&mut self, t: &TenantId, state: &str) -> Event {
        let c = pb::ScheduleStateChanged {
            schedule_id: "weekly".into(),
            subscriber_id: SUB.into(),
            state: state.into(),
            origin: None,
        };
        self.stream_event(t, Payload::ScheduleStateChanged(c))
    }

    async fn record(&self, t: &str) -> Option<pb::ScheduleRecord> {
        self.store
            .get(&schedule_key(t, "weekly", SUB))
            .await
            .unwrap()
            .map(|b| pb::ScheduleRecord::decode(&b[..]).expect("record decodes"))
    }

    /// The SMS dispatched to a tenant's subscriber: (occurrence, body).
    async fn texts(&self, t: &str) -> Vec<(i64, String)> {
        let occurrences: std::collections::HashMap<String, i64> = self
            .events(Topic::Triggers)
            .await
            .into_iter()
            .filter_map(|e| match e.payload {
                Payload::Triggered(tr) if e.tenant.as_str() == t => {
                    Some((tr.notification_id, tr.occurrence_at_ms))
                }
                _ => None,
            })
            .collect();
        let mut out: Vec<(i64, String)> = self
            .events(Topic::Dispatch)
            .await
            .into_iter()
            .filter(|e| e.tenant.as_str() == t)
            .filter_map(|e| match e.payload {
                Payload::DispatchRequested(d) => Some((occurrences[&d.notification_id], d.body)),
                _ => None,
            })
            .collect();
        out.sort();
        out
    }
}

async fn given(env: &mut Env) {
    let mut config = Vec::new();
    for t in [tenant("acme"), tenant("globex")] {
        let variant = pb::TemplateVariant {
            locale: "default".into(),
            subject: String::new(),
            body: "Weekly check at {{ payload.site }}".into(),
        };
        let tpl = Template::new("sms-tpl", 1, "sms", &[variant]).expect("template");
        config.push(config_event(
            &t,
            "tpl",
            Payload::TemplatePublished(tpl.to_event()),
        ));
        let yaml =
            "id: remind\nsteps:\n  - { id: text, type: send, channel: sms, template: sms-tpl }\n";
        let flow = Flow::parse(yaml, 1, |_| Some(clarion_domain::Channel::Sms)).expect("flow");
        let published = clarion_domain::workflow::published(&flow);
        config.push(config_event(
            &t,
            "wf",
            Payload::WorkflowPublished(published),
        ));
    }
    env.configure(config).await;
}

/// The next `weekday` at `hour`:00 local after `after_ms`.
fn next_local(after_ms: i64, tz: Tz, weekday: chrono::Weekday, hour: u32) -> i64 {
    let mut day = time::local_of(after_ms, tz).date();
    loop {
        let at = time::instant_of(day.and_hms_opt(hour, 0, 0).unwrap(), tz);
        if day.weekday() == weekday && at > after_ms {
            return at;
        }
        day = day.succ_opt().unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_weekly_reminder_fires_at_0900_local_repeats_and_obeys_pause_resume_delete() {
    let mut env = Env::new().await;
    given(&mut env).await;
    let (acme, globex) = (tenant("acme"), tenant("globex"));
    let paris = Tz::Europe__Paris;
    let ny = Tz::America__New_York;
    let rule = "FREQ=WEEKLY;BYDAY=MO;BYHOUR=9;BYMINUTE=0;BYSECOND=0";
    let events = vec![
        env.upsert(&acme, "Europe/Paris"),
        env.upsert(&globex, "America/New_York"),
    ];
    env.on_streams(events).await;
    let events = vec![
        env.schedule(&acme, rule, ""),
        env.schedule(&globex, rule, ""),
    ];
    env.on_streams(events).await;

    // Each read in its subscriber's zone.
    let first_paris = next_local(T0, paris, chrono::Weekday::Mon, 9);
    let first_ny = next_local(T0, ny, chrono::Weekday::Mon, 9);
    let rec = env.record("acme").await.expect("acme's schedule");
    assert_eq!(
        (rec.state.as_str(), rec.next_at_ms),
        ("active", first_paris)
    );
    assert_eq!(rec.resolved_timezone, "Europe/Paris");
    assert_eq!(env.record("globex").await.unwrap().next_at_ms, first_ny);

    // A millisecond early: nothing. At 09:00 Paris: acme's text only.
    env.advance_to(first_paris - 1).await;
    assert!(env.texts("acme").await.is_empty());
    env.advance_to(first_paris).await;
    assert_eq!(
        env.texts("acme").await,
        [(first_paris, "Weekly check at acme".to_string())]
    );
    assert!(
        env.texts("globex").await.is_empty(),
        "09:00 in New York is later"
    );
    env.advance_to(first_ny).await;
    assert_eq!(env.texts("globex").await.len(), 1);
    let local = time::local_of(env.texts("globex").await[0].0, ny);
    assert_eq!((local.weekday(), local.hour()), (chrono::Weekday::Mon, 9));

    // A week later: once more each.
    env.advance_to(first_ny + 7 * DAY).await;
    assert_eq!(env.texts("acme").await.len(), 2);
    assert_eq!(env.texts("globex").await.len(), 2);

    // acme pauses: its next Monday passes silently; globex goes on.
    let pause = vec![env.state(&acme, "paused")];
    env.on_streams(pause).await;
    assert_eq!(env.record("acme").await.unwrap().state, "paused");
    env.advance_to(first_ny + 14 * DAY).await;
    assert_eq!(env.texts("acme").await.len(), 2);
    assert_eq!(env.texts("globex").await.len(), 3);

    // Resumed on Wednesday: no catch-up of the paused Monday; next Monday fires.
    env.advance_to(first_ny + 16 * DAY).await;
    let resume = vec![env.state(&acme, "active")];
    env.on_streams(resume).await;
    let next = env.record("acme").await.unwrap().next_at_ms;
    assert_eq!(next, first_paris + 21 * DAY);
    assert_eq!(env.texts("acme").await.len(), 2);
    env.advance_to(next).await;
    assert_eq!(env.texts("acme").await.len(), 3);

    // Deleted: the row goes and nothing fires any more.
    let delete = vec![env.state(&acme, "deleted")];
    env.on_streams(delete).await;
    assert!(env.record("acme").await.is_none());
    // Week by week (a jump over several occurrences would be downtime,
    // caught up once).
    for week in [21, 28, 35] {
        env.advance_to(first_ny + week * DAY).await;
    }
    assert_eq!(env.texts("acme").await.len(), 3);
    assert_eq!(env.texts("globex").await.len(), 6);
}

/// A daily 09:00 reminder, then the routers stop for three days and come
/// back: what fired for it.
async fn after_three_days_down(catch_up: &str) -> (Vec<(i64, String)>, pb::ScheduleRecord, i64) {
    let mut env = Env::new().await;
    given(&mut env).await;
    let (acme, globex) = (tenant("acme"), tenant("globex"));
    let paris = Tz::Europe__Paris;
    let events = vec![
        env.upsert(&acme, "Europe/Paris"),
        env.upsert(&globex, "Europe/Paris"),
    ];
    env.on_streams(events).await;
    let events = vec![
        env.schedule(&acme, "0 9 * * *", catch_up),
        env.schedule(&globex, "0 9 * * *", "latest_once"),
    ];
    env.on_streams(events).await;
    let first = env.record("acme").await.unwrap().next_at_ms;
    assert_eq!(time::local_of(first, paris).hour(), 9);
    env.advance_to(first).await;
    assert_eq!(env.texts("acme").await.len(), 1);

    // Down from just before the next occurrence until 3 days and 1 hour later.
    let back = first + 3 * DAY + HOUR;
    env.clock
        .advance(Duration::from_millis((back - env.clock.now_ms()) as u64));
    env.restart_routers().await;
    env.settle().await;
    // Twice more for good measure: repeated timer passes add nothing.
    env.settle().await;
    // A timer event appended again (a replay, a duplicate publish): nothing more.
    let dues: Vec<Event> = env
        .events(Topic::Triggers)
        .await
        .into_iter()
        .filter(|e| matches!(e.payload, Payload::ScheduleDue(_)))
        .collect();
    env.on_streams(dues).await;
    let texts = env.texts("acme").await;
    // globex (latest_once) fired exactly once more, whatever acme's policy.
    assert_eq!(env.texts("globex").await.len(), 2);
    // The decision after the downtime is an event: what fired, what was missed.
    let occurred: Vec<pb::ScheduleOccurred> = env
        .events(Topic::Triggers)
        .await
        .into_iter()
        .filter(|e| e.tenant.as_str() == "acme")
        .filter_map(|e| match e.payload {
            Payload::ScheduleOccurred(o) => Some(o),
            _ => None,
        })
        .collect();
    assert_eq!(occurred.len(), 2, "{occurred:?}");
    // The second decision: the one taken after the downtime.
    let late = &occurred[1];
    assert_eq!(late.next_at_ms, first + 4 * DAY);
    if catch_up == "skip" {
        // Nothing fired: late from the first missed occurrence.
        assert_eq!((late.missed, late.notification_id.as_str()), (3, ""));
        assert_eq!(late.late_by_ms, 2 * DAY + HOUR);
    } else {
        assert_eq!((late.missed, late.late_by_ms), (2, HOUR));
        assert_eq!(late.occurrence_at_ms, first + 3 * DAY);
        assert!(!late.notification_id.is_empty());
    }
    (texts, env.record("acme").await.unwrap(), first)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_three_days_down_latest_once_fires_exactly_one_occurrence() {
    let (texts, rec, first) = after_three_days_down("latest_once").await;
    assert_eq!(
        texts.iter().map(|t| t.0).collect::<Vec<_>>(),
        [first, first + 3 * DAY],
        "the first, then only the latest missed one"
    );
    assert_eq!((rec.fired, rec.next_at_ms), (2, first + 4 * DAY));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_three_days_down_skip_fires_none_of_the_missed_occurrences() {
    let (texts, rec, first) = after_three_days_down("skip").await;
    assert_eq!(texts.iter().map(|t| t.0).collect::<Vec<_>>(), [first]);
    assert_eq!((rec.fired, rec.next_at_ms), (1, first + 4 * DAY));
}
