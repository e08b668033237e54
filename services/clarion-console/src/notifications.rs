//! The Notifications pages: search (by subscriber, workflow, status, time
//! range and id, over the gateway's [`notification_search`]) and a
//! notification's detail — its status, the event history as a timeline,
//! the rendered messages and each attempt with the provider's answer, read
//! with the gateway's [`history_in`] like `GET /v1/notifications/{id}`.
//!
//! Both are GET pages that work without JavaScript: the search form is a
//! GET form, the next page a link carrying the cursor. Tenant content (a
//! message body is often HTML) is shown as escaped text, never rendered.

use axum::extract::rejection::PathRejection;
use axum::extract::{Path, RawQuery, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use clarion_domain::tenant::Scope;
use clarion_domain::{Actor, Event, Id, Payload};
use clarion_gateway::notification::history_in;
use clarion_gateway::notification_search::{self, Filters, Query};
use clarion_runtime::notification_index::Status;
use clarion_runtime::projector::status_of;
use minijinja::context;
use serde::Serialize;

use crate::page::{self, PageError};
use crate::session::Session;
use crate::Console;

/// This module's templates (name, source), added to the console's set.
pub const TEMPLATES: &[(&str, &str)] = &[
    (
        "notifications/search.html",
        include_str!("../templates/notifications/search.html"),
    ),
    (
        "notifications/detail.html",
        include_str!("../templates/notifications/detail.html"),
    ),
];

pub fn routes() -> Router<Console> {
    Router::new()
        .route("/notifications", get(search))
        .route("/notifications/:id", get(detail))
}

/// The filters of the search form, in its order.
const FIELDS: [&str; 6] = ["subscriber", "workflow", "status", "from", "to", "id"];

/// A filter at fault, shown next to its field.
#[derive(Debug, Serialize)]
struct FieldError {
    field: String,
    message: String,
}

/// The query string as the form's filters; a parameter the page does not
/// take is an error naming it (a page number among them: pages follow
/// cursors).
fn parse_query(raw: &str) -> Result<Query, FieldError> {
    let mut q = Query::default();
    for (k, v) in form_urlencoded::parse(raw.as_bytes()) {
        let v = Some(v.into_owned());
        match k.as_ref() {
            "subscriber" => q.subscriber = v,
            "workflow" => q.workflow = v,
            "status" => q.status = v,
            "from" => q.from = v,
            "to" => q.to = v,
            "id" => q.id = v,
            "cursor" => q.cursor = v,
            "limit" => q.limit = v,
            "page" => {
                return Err(FieldError {
                    field: "page".into(),
                    message: "this search has no page numbers: follow its “Next page” link".into(),
                })
            }
            other => {
                return Err(FieldError {
                    field: other.chars().take(64).collect(),
                    message: "is not a filter of this page".into(),
                })
            }
        }
    }
    Ok(q)
}

/// The search page: the form, and the results when it was submitted.
async fn search(
    State(console): State<Console>,
    session: Session,
    RawQuery(raw): RawQuery,
) -> Result<Response, PageError> {
    let caller = session.caller_with(Scope::Read)?;
    let raw = raw.unwrap_or_default();
    let (q, errors) = match parse_query(&raw) {
        Ok(q) => {
            let now = console.gw.clock.now_ms();
            match Filters::parse(&q, now) {
                Ok(f) => {
                    let found = notification_search::search(&console.gw, &caller, &f).await;
                    match found {
                        Ok(page) => return results(&console, &session, &q, &f, page),
                        Err(clarion_gateway::error::ApiError::Invalid(v)) => (q, errors_of(v)),
                        Err(e) => return Err(e.into()),
                    }
                }
                Err(v) => (q, errors_of(v)),
            }
        }
        Err(e) => (Query::default(), vec![e]),
    };
    // Each field's message, shown next to it.
    let bad: std::collections::BTreeMap<&str, &str> = errors
        .iter()
        .map(|e| (e.field.as_str(), e.message.as_str()))
        .collect();
    let ctx = context! { q => form_values(&q), statuses => statuses(), bad, errors };
    let page = page::render(&console, &session, "notifications/search.html", ctx)?;
    Ok((StatusCode::BAD_REQUEST, page).into_response())
}

fn errors_of(v: clarion_domain::Violations) -> Vec<FieldError> {
    v.0.into_iter()
        .map(|f| FieldError {
            field: f.field,
            message: f.description,
        })
        .collect()
}

/// What the form shows back (empty for an absent filter).
fn form_values(q: &Query) -> minijinja::Value {
    let v = |x: &Option<String>| x.clone().unwrap_or_default();
    context! {
        subscriber => v(&q.subscriber), workflow => v(&q.workflow), status => v(&q.status),
        from => v(&q.from), to => v(&q.to), id => v(&q.id),
    }
}

fn statuses() -> Vec<&'static str> {
    Status::ALL.iter().map(Status::as_str).collect()
}

/// The search page with a page of results.
fn results(
    console: &Console,
    session: &Session,
    q: &Query,
    f: &Filters,
    page: notification_search::Page,
) -> Result<Response, PageError> {
    // The next page: the same filters, and the cursor.
    let next_url = page.next_cursor.as_ref().map(|c| {
        let mut s = form_urlencoded::Serializer::new(String::new());
        let values = [&q.subscriber, &q.workflow, &q.status, &q.from, &q.to, &q.id];
        for (name, value) in FIELDS.iter().zip(values) {
            if let Some(v) = value.as_deref().filter(|v| !v.trim().is_empty()) {
                s.append_pair(name, v);
            }
        }
        if let Some(l) = q.limit.as_deref().filter(|v| !v.trim().is_empty()) {
            s.append_pair("limit", l);
        }
        s.append_pair("cursor", c);
        // Percent-encoded: only `&` needs escaping in the attribute (marked
        // safe: escaping would write `/` as `&#x2f;`).
        let url = format!("{}/notifications?{}", crate::BASE, s.finish());
        minijinja::Value::from_safe_string(url.replace('&', "&amp;"))
    });
    // Fewer than a page and a cursor: the budget ran out before the range.
    let partial = next_url.is_some() && page.notifications.len() < f.limit;
    let ctx = context! {
        q => form_values(q),
        statuses => statuses(),
        bad => std::collections::BTreeMap::<String, String>::new(),
        searched => true,
        continued => q.cursor.as_deref().is_some_and(|c| !c.is_empty()),
        items => page.notifications.iter().map(|n| context! {
            subscriber_href => subscriber_href(&n.subscriber_id), ..minijinja::Value::from_serialize(n)
        }).collect::<Vec<_>>(),
        next_url,
        partial,
        scanned => page.scanned,
        back_to_ms => page.searched_back_to_ms,
        exhausted => page.exhausted_range,
    };
    page::render(console, session, "notifications/search.html", ctx)
}

/// One entry of the timeline.
#[derive(Serialize)]
struct TimelineEntry {
    event_type: &'static str,
    at_ms: i64,
    summary: String,
    actor: String,
    details: String,
}

/// A rendered message, as the router handed it to the dispatcher.
#[derive(Serialize)]
struct Message {
    attempt_id: String,
    step: String,
    channel: String,
    provider: String,
    to: String,
    subject: String,
    body: String,
    at_ms: i64,
}

/// One attempt and what its provider answered.
#[derive(Serialize, Default)]
struct Attempt {
    attempt_id: String,
    channel: String,
    provider: String,
    at_ms: i64,
    /// `sent`, `delivered`, `failed` or `pending`.
    outcome: String,
    provider_message_id: String,
    error: String,
    stage: String,
    retryable: bool,
}

/// A notification's page.
async fn detail(
    State(console): State<Console>,
    session: Session,
    id: Result<Path<String>, PathRejection>,
    RawQuery(raw): RawQuery,
) -> Result<Response, PageError> {
    let caller = session.caller_with(Scope::Read)?;
    let bad_id = || PageError::bad_request("id", "is not a notification id (32 hex digits)");
    let Path(id) = id.map_err(|_| bad_id())?;
    if id.len() != 32 || Id::parse_hex(&id).is_none() {
        return Err(bad_id());
    }
    let id = id.to_ascii_lowercase();
    let events = history_in(&console.gw, caller.tenant.as_str(), &id)
        .await
        .map_err(|e| match e {
            clarion_gateway::error::ApiError::NotFound(_) => {
                PageError::NotFound(format!("no notification {id} in this tenant"))
            }
            other => other.into(),
        })?;
    let done = form_urlencoded::parse(raw.unwrap_or_default().as_bytes())
        .find(|(k, _)| k == "done")
        .map(|(_, v)| done_notice(&v));
    let triggered = events.iter().find_map(|e| match &e.payload {
        Payload::Triggered(t) => Some((e.occurred_at_ms, t)),
        _ => None,
    });
    let summary = triggered.map(|(at, t)| {
        context! {
            workflow_id => t.workflow_id, workflow_version => t.workflow_version,
            subscriber_id => t.subscriber_id, created_at_ms => at,
            subscriber_href => subscriber_href(&t.subscriber_id), send_at_ms => t.send_at_ms,
            critical => t.critical, payload => t.payload_json,
        }
    });
    let ctx = context! {
        id,
        status => status_of(&events),
        summary,
        done,
        timeline => timeline(&events),
        messages => messages(&events),
        attempts => attempts(&events),
    };
    page::render(&console, &session, "notifications/detail.html", ctx)
}

/// The console page of a subscriber: the id percent-encoded as a path
/// segment (every byte but letters, digits and `*-._`), so the link has
/// nothing to escape (marked safe: escaping would write `/` as `&#x2f;`).
fn subscriber_href(id: &str) -> minijinja::Value {
    let segment = crate::page::path_segment(id);
    let href = format!(
        "{}/subscribers/{}",
        crate::BASE,
        segment.replace('+', "%20")
    );
    minijinja::Value::from_safe_string(href)
}

/// The notice of a change the page is shown after (`?done=`).
fn done_notice(done: &str) -> String {
    match done {
        "retried" => "Retry requested: the notification resumes from the step it stopped at.",
        "discarded" => "Discarded: the notification left the dead-letter queue.",
        _ => "Done.",
    }
    .to_string()
}

fn timeline(events: &[Event]) -> Vec<TimelineEntry> {
    events
        .iter()
        .map(|e| TimelineEntry {
            event_type: e.event_type(),
            at_ms: e.occurred_at_ms,
            summary: describe(&e.payload),
            actor: actor_label(&e.actor),
            details: e.payload.detail_json().to_string(),
        })
        .collect()
}

fn actor_label(a: &Actor) -> String {
    match a {
        Actor::ApiKey(id) => format!("API key {id}"),
        Actor::Operator(id) => format!("operator {id}"),
        Actor::System(name) => name.to_string(),
    }
}

/// One line for a person.
fn describe(p: &Payload) -> String {
    match p {
        Payload::Triggered(t) => {
            let when = match t.send_at_ms {
                0 => String::new(),
                at => format!(", to start at {}", clarion_domain::time::format_instant(at)),
            };
            format!(
                "Triggered workflow {} v{} for subscriber {}{when}",
                t.workflow_id, t.workflow_version, t.subscriber_id
            )
        }
        Payload::Routed(r) => format!(
            "Routed to {} via {} (template {} v{}, locale {})",
            r.channel, r.provider, r.template_id, r.template_version, r.locale
        ),
        Payload::DispatchRequested(d) => {
            format!("Message rendered for {} to {}", d.channel, or_dash(&d.to))
        }
        Payload::Sent(s) => format!(
            "Accepted by {} (message id {})",
            s.provider,
            or_dash(&s.provider_message_id)
        ),
        Payload::Delivered(d) => format!("Delivered ({})", d.provider),
        Payload::Failed(f) => format!(
            "Failed at {} ({}): {}{}",
            f.stage,
            or_dash(&f.provider),
            f.reason,
            if f.retryable {
                "; will be retried"
            } else {
                "; not retryable"
            }
        ),
        Payload::Engaged(g) => format!("{} (reported by {})", capitalized(&g.kind), g.source),
        Payload::TimerFired(t) => format!("Timer fired ({})", t.purpose.replace('_', " ")),
        Payload::Noted(n) => n.message.clone(),
        Payload::DlqRetried(r) => with_note("Retried from the dead-letter queue", &r.note),
        Payload::DlqDiscarded(d) => with_note("Discarded from the dead-letter queue", &d.note),
        Payload::Ended(e) => {
            let reason = if e.reason.is_empty() {
                String::new()
            } else {
                format!(": {}", e.reason)
            };
            format!("Ended {}{reason}", e.outcome.replace('_', " "))
        }
        other => other.event_type().to_string(),
    }
}

fn or_dash(s: &str) -> &str {
    if s.is_empty() {
        "—"
    } else {
        s
    }
}

fn with_note(what: &str, note: &str) -> String {
    if note.is_empty() {
        what.to_string()
    } else {
        format!("{what}: “{note}”")
    }
}

fn capitalized(s: &str) -> String {
    let mut c = s.chars();
    c.next()
        .map(|f| f.to_uppercase().chain(c).collect())
        .unwrap_or_default()
}

fn messages(events: &[Event]) -> Vec<Message> {
    events
        .iter()
        .filter_map(|e| match &e.payload {
            Payload::DispatchRequested(d) => Some(Message {
                attempt_id: d.attempt_id.clone(),
                step: d.step.clone(),
                channel: d.channel.clone(),
                provider: d.provider.clone(),
                to: d.to.clone(),
                subject: d.subject.clone(),
                body: d.body.clone(),
                at_ms: e.occurred_at_ms,
            }),
            _ => None,
        })
        .collect()
}

/// The attempts in the order they were made, each with its latest answer.
fn attempts(events: &[Event]) -> Vec<Attempt> {
    let mut out: Vec<Attempt> = Vec::new();
    for e in events {
        let (attempt_id, provider) = match &e.payload {
            Payload::DispatchRequested(d) => (&d.attempt_id, &d.provider),
            Payload::Sent(s) => (&s.attempt_id, &s.provider),
            Payload::Delivered(d) => (&d.attempt_id, &d.provider),
            Payload::Failed(f) => (&f.attempt_id, &f.provider),
            _ => continue,
        };
        let i = match out.iter().position(|a| a.attempt_id == *attempt_id) {
            Some(i) => i,
            None => {
                out.push(Attempt {
                    attempt_id: attempt_id.clone(),
                    at_ms: e.occurred_at_ms,
                    outcome: "pending".into(),
                    ..Attempt::default()
                });
                out.len() - 1
            }
        };
        let a = &mut out[i];
        if !provider.is_empty() {
            a.provider = provider.clone();
        }
        match &e.payload {
            Payload::DispatchRequested(d) => a.channel = d.channel.clone(),
            Payload::Sent(s) => {
                a.provider_message_id = s.provider_message_id.clone();
                if a.outcome != "delivered" {
                    a.outcome = "sent".into();
                }
            }
            Payload::Delivered(_) => a.outcome = "delivered".into(),
            Payload::Failed(f) => {
                a.outcome = "failed".into();
                a.error = f.reason.clone();
                a.stage = f.stage.clone();
                a.retryable = f.retryable;
            }
            _ => {}
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_query_takes_the_forms_fields_only() {
        let q = parse_query("subscriber=ana&status=&cursor=abc&limit=5").unwrap();
        assert_eq!(q.subscriber.as_deref(), Some("ana"));
        assert_eq!(q.status.as_deref(), Some(""));
        assert_eq!(q.cursor.as_deref(), Some("abc"));
        let e = parse_query("page=99999999999999999999").unwrap_err();
        assert_eq!(e.field, "page");
        let e = parse_query("subscriber=a&debug=1").unwrap_err();
        assert_eq!(e.field, "debug");
    }

    fn session() -> minijinja::Value {
        context! { tenant => "acme", operator => false, key_id => "k1", csrf => "t",
        csrf_field => "_csrf", path => "/console/notifications" }
    }

    #[test]
    fn the_templates_render_and_escape_tenant_content() {
        let q = parse_query("status=lost&subscriber=<i>ana</i>").unwrap();
        let errors = vec![FieldError {
            field: "status".into(),
            message: "\"lost\" is not a status".into(),
        }];
        let bad: std::collections::BTreeMap<&str, &str> =
            [("status", "\"lost\" is not a status")].into();
        let html = page::render_plain(
            "notifications/search.html",
            context! { session => session(), q => form_values(&q), statuses => statuses(), bad, errors },
        )
        .map_err(|e| e.to_string())
        .unwrap()
        .0;
        assert!(
            html.contains("<strong id=\"error-field\">status</strong>"),
            "{html}"
        );
        assert!(html.contains("&lt;i&gt;ana&lt;&#x2f;i&gt;"), "{html}");

        let html = page::render_plain(
            "notifications/detail.html",
            context! {
                session => session(), id => "0".repeat(32), status => "delivered",
                summary => context! { workflow_id => "w", workflow_version => 1,
                    subscriber_id => "ana", subscriber_href => subscriber_href("a b/c"), created_at_ms => 1, send_at_ms => 0,
                    critical => false, payload => "{}" },
                done => Some("Done."),
                timeline => vec![TimelineEntry { event_type: "clarion.notification.sent.v1",
                    at_ms: 1, summary: "Accepted".into(), actor: "router".into(),
                    details: "{}".into() }],
                messages => vec![Message { attempt_id: "a1".into(), step: "mail".into(),
                    channel: "email".into(), provider: "sink".into(), to: "a@b.c".into(),
                    subject: "Hi".into(), body: "<b>x</b>".into(), at_ms: 1 }],
                attempts => vec![Attempt { attempt_id: "a1".into(), outcome: "sent".into(),
                    ..Attempt::default() }],
            },
        )
        .map_err(|e| e.to_string())
        .unwrap()
        .0;
        assert!(html.contains("&lt;b&gt;x&lt;&#x2f;b&gt;"), "{html}");
        assert!(
            html.contains("href=\"/console/subscribers/a%20b%2Fc\""),
            "{html}"
        );
        assert!(
            html.contains("<li data-event=\"clarion.notification.sent.v1\">"),
            "{html}"
        );
    }
}
