//! `clarion schedule create|list|get|pause|resume|delete`: recurring
//! reminders over gRPC (`ScheduleService`; docs/scheduling.md).

use clap::{Args, Subcommand};
use clarion_proto::api;
use tonic::transport::Channel;

use crate::client::{connect, explain, from_cli, print_json, ClientArgs};

type Schedules = api::schedule_service_client::ScheduleServiceClient<Channel>;

#[derive(Subcommand)]
pub enum ScheduleCmd {
    /// Create (or replace) a schedule for one or more subscribers.
    Create(Box<CreateArgs>),
    /// The tenant's schedules.
    List,
    /// One schedule, with each subscriber's next occurrences (as JSON).
    Get {
        id: String,
        /// How many next occurrences (default 5).
        #[arg(long, default_value_t = 0)]
        upcoming: u32,
    },
    /// Stop firing until resumed.
    Pause {
        id: String,
    },
    /// Go on from the next occurrence after now.
    Resume {
        id: String,
    },
    Delete {
        id: String,
    },
}

/// `clarion schedule create` options.
#[derive(Args)]
pub struct CreateArgs {
    /// The workflow each occurrence triggers.
    #[arg(long)]
    workflow: String,
    /// A subscriber (repeat or comma-separate; 1 to 1000).
    #[arg(long = "subscriber", value_delimiter = ',', required = true)]
    subscribers: Vec<String>,
    /// RFC 5545 RRULE, e.g. FREQ=WEEKLY;BYDAY=MO;BYHOUR=9;BYMINUTE=0.
    #[arg(long, default_value = "")]
    rrule: String,
    /// Cron, 5 fields (or 6 with seconds first), e.g. "0 9 * * MON".
    #[arg(long, default_value = "")]
    cron: String,
    /// The schedule's id (generated when absent).
    #[arg(long, default_value = "")]
    id: String,
    /// IANA zone (default: the subscriber's, else the tenant's, else UTC).
    #[arg(long, default_value = "")]
    timezone: String,
    /// RFC 3339 (default: now).
    #[arg(long, default_value = "")]
    start: String,
    /// RFC 3339.
    #[arg(long, default_value = "")]
    end: String,
    /// A JSON object every run gets as `payload`.
    #[arg(long, default_value = "")]
    payload: String,
    /// latest_once (default) or skip.
    #[arg(long, default_value = "")]
    catch_up: String,
}

fn schedule_json(s: &api::Schedule) -> serde_json::Value {
    let subs: Vec<serde_json::Value> = s
        .subscribers
        .iter()
        .map(|x| {
            serde_json::json!({
                "subscriber_id": x.subscriber_id, "state": x.state, "timezone": x.timezone,
                "next_at": x.next_at, "fired": x.fired,
                "last_notification_id": x.last_notification_id,
                "upcoming": x.upcoming.iter().map(|o| o.at.clone()).collect::<Vec<_>>(),
            })
        })
        .collect();
    serde_json::json!({
        "schedule_id": s.schedule_id, "workflow_id": s.workflow_id, "rrule": s.rrule,
        "cron": s.cron, "timezone": s.timezone, "start_at": s.start_at, "end_at": s.end_at,
        "payload": serde_json::from_str::<serde_json::Value>(&s.payload_json).unwrap_or_default(),
        "catch_up": s.catch_up, "subscribers": subs,
    })
}

pub async fn schedule(c: ClientArgs, cmd: ScheduleCmd) -> anyhow::Result<()> {
    let mut client = Schedules::new(connect(&c).await?);
    let key = c.key()?;
    let r = |id: String| api::ScheduleRef { schedule_id: id };
    let shown = match cmd {
        ScheduleCmd::Create(a) => {
            let CreateArgs {
                workflow,
                subscribers,
                rrule,
                cron,
                id,
                timezone,
                start,
                end,
                payload,
                catch_up,
            } = *a;
            let req = api::CreateScheduleRequest {
                schedule_id: id,
                workflow_id: workflow,
                subscriber_ids: subscribers,
                rrule,
                cron,
                timezone,
                start_at: start,
                end_at: end,
                payload_json: payload,
                catch_up,
            };
            client.create(from_cli(key, req)?).await
        }
        ScheduleCmd::List => {
            let mut token = String::new();
            loop {
                let req = api::ListSchedulesRequest {
                    page_size: 200,
                    page_token: token,
                };
                let page = client
                    .list(from_cli(key, req)?)
                    .await
                    .map_err(explain)?
                    .into_inner();
                for s in &page.schedules {
                    let rule = if s.rrule.is_empty() {
                        &s.cron
                    } else {
                        &s.rrule
                    };
                    let states: Vec<String> = s
                        .subscribers
                        .iter()
                        .map(|x| format!("{}:{}", x.subscriber_id, x.state))
                        .collect();
                    println!(
                        "{}\t{}\t{}\t{}",
                        s.schedule_id,
                        s.workflow_id,
                        rule,
                        states.join(",")
                    );
                }
                if page.next_page_token.is_empty() {
                    return Ok(());
                }
                token = page.next_page_token;
            }
        }
        ScheduleCmd::Get { id, upcoming } => {
            let req = api::GetScheduleRequest {
                schedule_id: id,
                upcoming,
            };
            client.get(from_cli(key, req)?).await
        }
        ScheduleCmd::Pause { id } => client.pause(from_cli(key, r(id))?).await,
        ScheduleCmd::Resume { id } => client.resume(from_cli(key, r(id))?).await,
        ScheduleCmd::Delete { id } => {
            client
                .delete(from_cli(key, r(id.clone()))?)
                .await
                .map_err(explain)?;
            println!("deleted {id}");
            return Ok(());
        }
    };
    print_json(&schedule_json(&shown.map_err(explain)?.into_inner()))?;
    Ok(())
}
