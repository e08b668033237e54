//! Live: what is happening now — triggers, sends and failures per second
//! (per channel), the dead-letter queue's size, and (for the operator) how
//! far the processors are behind; refreshed every 2 s without a reload.
//!
//! `GET /live` is the page; its `#live` region is refreshed from
//! `GET /live/fragment` by `console.js` (`data-refresh-url`), announced to
//! screen readers politely. Without script the page is current when loaded
//! (reload for more).
//!
//! The rates are this process's ([`clarion_runtime::live`]): with
//! `clarion serve` the whole pipeline's; in a distributed deployment, those
//! of the roles running beside this gateway (each process's `/metrics` has
//! the rest). The tenant sees its own; the processor lag is deployment-wide
//! and shown to the operator only.

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use clarion_domain::tenant::Scope;
use clarion_runtime::live::{self, Kind, Rate};
use clarion_runtime::Topic;
use minijinja::{context, Value};
use serde::Serialize;

use crate::page::{self, PageError};
use crate::session::Session;
use crate::Console;

/// This module's templates (name, source), added to the console's set.
pub const TEMPLATES: &[(&str, &str)] = &[
    (
        "live/page.html",
        include_str!("../templates/live/page.html"),
    ),
    (
        "live/fragment.html",
        include_str!("../templates/live/fragment.html"),
    ),
];

/// How often the page refreshes its figures.
pub const REFRESH_MS: u64 = 2_000;

pub fn routes() -> Router<Console> {
    Router::new()
        .route("/live", get(page))
        .route("/live/fragment", get(fragment))
}

/// A channel's sends and failures.
#[derive(Serialize, Default)]
struct ChannelRow {
    channel: String,
    sent_per_s: String,
    sent_minute: u64,
    failed_per_s: String,
    failed_minute: u64,
}

/// One processor's lag on one of its input topics.
#[derive(Serialize)]
struct LagRow {
    processor: &'static str,
    topic: String,
    lag: u64,
}

fn per_s(x: f64) -> String {
    format!("{x:.1}")
}

/// The figures of `rates` as the fragment shows them: triggers/s, sends/s
/// and failures/s (all channels), and a row per channel.
fn figures(rates: &[Rate]) -> Value {
    let total = |k: Kind| -> (f64, u64) {
        rates
            .iter()
            .filter(|r| r.kind == k)
            .fold((0.0, 0), |(s, m), r| (s + r.per_s(), m + r.last_60s))
    };
    let mut channels: Vec<ChannelRow> = Vec::new();
    for r in rates.iter().filter(|r| r.kind != Kind::Trigger) {
        let row = match channels.iter_mut().find(|c| c.channel == r.channel) {
            Some(row) => row,
            None => {
                channels.push(ChannelRow {
                    channel: r.channel.clone(),
                    sent_per_s: per_s(0.0),
                    failed_per_s: per_s(0.0),
                    ..Default::default()
                });
                channels.last_mut().expect("just pushed")
            }
        };
        if r.kind == Kind::Sent {
            row.sent_per_s = per_s(r.per_s());
            row.sent_minute = r.last_60s;
        } else {
            row.failed_per_s = per_s(r.per_s());
            row.failed_minute = r.last_60s;
        }
    }
    let (triggers, triggers_minute) = total(Kind::Trigger);
    let (sends, sends_minute) = total(Kind::Sent);
    let (failures, failures_minute) = total(Kind::Failed);
    context! {
        triggers_per_s => per_s(triggers), triggers_minute,
        sends_per_s => per_s(sends), sends_minute,
        failures_per_s => per_s(failures), failures_minute,
        channels,
    }
}

/// What each processor reads (see `roles.rs`): the projector reads the
/// recipient streams only when the log keeps no index of its own.
fn pipeline(log_keeps_index: bool) -> Vec<(&'static str, Topic)> {
    let mut of = vec![
        (clarion_runtime::router::ROUTER, Topic::Triggers),
        (clarion_runtime::router::ROUTER, Topic::Deliveries),
        (clarion_dispatch::DISPATCHER, Topic::Dispatch),
        (clarion_runtime::inbox::INBOX_PROJECTOR, Topic::Deliveries),
        (clarion_runtime::projector::PROJECTOR, Topic::Config),
        (clarion_analytics::ANALYTICS, Topic::Dispatch),
        (clarion_analytics::ANALYTICS, Topic::Deliveries),
        (clarion_analytics::ANALYTICS, Topic::Triggers),
        (clarion_runtime::alerts::ALERTS, Topic::Deliveries),
    ];
    if !log_keeps_index {
        for t in [
            Topic::Triggers,
            Topic::Notifications,
            Topic::Dispatch,
            Topic::Deliveries,
        ] {
            of.push((clarion_runtime::projector::PROJECTOR, t));
        }
    }
    of
}

async fn processor_lag(console: &Console) -> Result<(u64, Vec<LagRow>), PageError> {
    let gw = &console.gw;
    let of = pipeline(gw.log.keeps_index());
    let lags = live::processor_lag(&*gw.log, &*gw.store, &gw.topics, &of)
        .await
        .map_err(|e| PageError::Unavailable(format!("processor lag: {e}")))?;
    let rows: Vec<LagRow> = of
        .iter()
        .zip(lags)
        .map(|((processor, topic), lag)| LagRow {
            processor,
            topic: topic.to_string(),
            lag,
        })
        .collect();
    Ok((rows.iter().map(|r| r.lag).sum(), rows))
}

/// Everything the fragment shows.
async fn fragment_context(console: &Console, session: &Session) -> Result<Value, PageError> {
    let caller = session.caller_with(Scope::Read)?;
    let now = console.gw.clock.now_ms();
    let rates = live::counters().rates(Some(caller.tenant.as_str()), now);
    let (dlq_size, dlq_threshold) =
        crate::dead_letters::queue_size(console, &caller.tenant).await?;
    let (lag, lag_rows) = if session.is_operator() {
        let (total, rows) = processor_lag(console).await?;
        (Some(total), rows)
    } else {
        (None, Vec::new())
    };
    Ok(context! {
        now_ms => now,
        tenant => caller.tenant.as_str(),
        dlq_size, dlq_threshold,
        dlq_over => dlq_threshold > 0 && dlq_size >= dlq_threshold,
        lag, lag_rows,
        operator => session.is_operator(),
        ..figures(&rates)
    })
}

async fn page(State(console): State<Console>, session: Session) -> Result<Response, PageError> {
    let ctx = fragment_context(&console, &session).await?;
    page::render(
        &console,
        &session,
        "live/page.html",
        context! { refresh_ms => REFRESH_MS, ..ctx },
    )
}

/// The `#live` region's content alone (no layout): what the script puts in.
async fn fragment(State(console): State<Console>, session: Session) -> Result<Response, PageError> {
    let ctx = fragment_context(&console, &session).await?;
    let html = page::render_plain(
        "live/fragment.html",
        context! { base => crate::BASE, ..ctx },
    )?;
    Ok(html.into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rate(kind: Kind, channel: &str, last_10s: u64, last_60s: u64) -> Rate {
        Rate {
            kind,
            channel: channel.into(),
            last_10s,
            last_60s,
        }
    }

    #[test]
    fn figures_add_channels_up_and_keep_a_row_each() {
        let v = figures(&[
            rate(Kind::Trigger, "", 50, 300),
            rate(Kind::Sent, "email", 30, 200),
            rate(Kind::Sent, "sms", 5, 20),
            rate(Kind::Failed, "sms", 2, 4),
        ]);
        let get = |k: &str| v.get_attr(k).unwrap().to_string();
        assert_eq!(get("triggers_per_s"), "5.0");
        assert_eq!(get("sends_per_s"), "3.5");
        assert_eq!(get("failures_per_s"), "0.2");
        assert_eq!(get("sends_minute"), "220");
        let channels = v.get_attr("channels").unwrap();
        assert_eq!(channels.len(), Some(2));
        let sms = channels.get_item(&Value::from(1)).unwrap();
        assert_eq!(sms.get_attr("channel").unwrap().to_string(), "sms");
        assert_eq!(sms.get_attr("sent_per_s").unwrap().to_string(), "0.5");
        assert_eq!(sms.get_attr("failed_per_s").unwrap().to_string(), "0.2");
    }

    #[test]
    fn the_projector_reads_the_streams_only_without_a_log_index() {
        assert_eq!(pipeline(true).len(), 9);
        assert_eq!(pipeline(false).len(), 13);
    }
}
