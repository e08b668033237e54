//! Subscribers: a lookup by id, and one subscriber's page: profile and
//! contacts (with their verification state), the notifications they
//! received (newest first), their preferences, devices and inbox.
//!
//! Every part is read through the gateway function its REST route calls
//! (`subscriber::get`, `rest_subscribers::notifications_of`,
//! `preferences::get`, `devices::list`, `inbox::list`) with the session's
//! caller, so the tenant's isolation is the API's: another tenant's
//! subscriber id is not found, exactly as an unknown one.
//!
//! There is no list of every subscriber: the store keeps subscribers by id
//! (a partition each), with no index to page through them.

use axum::extract::{Path, Query, State};
use axum::response::Response;
use axum::routing::get;
use axum::Router;
use clarion_domain::preferences::Preferences;
use clarion_domain::tenant::Scope;
use clarion_domain::Violations;
use clarion_gateway::auth::Caller;
use clarion_gateway::inbox::{self, ListRequest, REST_FIELDS};
use clarion_gateway::pagination::PageParams;
use clarion_gateway::preference_input::value_name;
use clarion_gateway::preferences::{self, Interface, Who};
use clarion_gateway::rest_inbox::{counts_view, item_view};
use clarion_gateway::rest_subscribers::notifications_of;
use clarion_gateway::{devices, subscriber};
use clarion_proto::api;
use minijinja::context;
use serde::{Deserialize, Serialize};

use crate::page::{self, PageError};
use crate::session::Session;
use crate::Console;

/// This module's templates (name, source), added to the console's set.
pub const TEMPLATES: &[(&str, &str)] = &[
    (
        "subscribers/lookup.html",
        include_str!("../templates/subscribers/lookup.html"),
    ),
    (
        "subscribers/view.html",
        include_str!("../templates/subscribers/view.html"),
    ),
];

/// Notifications and inbox items shown per page.
const PAGE_SIZE: u32 = 25;

pub fn routes() -> Router<Console> {
    Router::new()
        .route("/subscribers", get(lookup))
        .route("/subscribers/:id", get(view))
}

/// The path of a subscriber's page (ids may hold `@`, `+`, `:` …).
pub fn href(id: &str) -> String {
    let encoded = crate::page::path_segment(id);
    format!("{}/subscribers/{encoded}", crate::BASE)
}

#[derive(Deserialize)]
struct LookupQuery {
    id: Option<String>,
}

/// `GET /subscribers` (`?id=` goes to that subscriber's page).
async fn lookup(
    State(c): State<Console>,
    session: Session,
    Query(q): Query<LookupQuery>,
) -> Result<Response, PageError> {
    session.caller_with(Scope::Read)?;
    if let Some(id) = q.id.as_deref().map(str::trim).filter(|i| !i.is_empty()) {
        let mut v = Violations::default();
        clarion_domain::subscriber::validate_subscriber_id(&mut v, "id", id);
        if let Some(f) = v.0.first() {
            return Err(PageError::bad_request("id", f.description.clone()));
        }
        return Ok(page::see_other(&href(id)));
    }
    page::render(&c, &session, "subscribers/lookup.html", context! {})
}

#[derive(Deserialize)]
struct ViewQuery {
    /// The notifications list's page.
    cursor: Option<String>,
}

/// One contact and whether it is verified.
#[derive(Serialize)]
struct ContactRow {
    channel: &'static str,
    value: String,
    /// `verified`, `pending` (changed through the preference APIs, its code
    /// not yet confirmed) or `trusted` (set by the tenant's back end).
    state: &'static str,
}

/// The contacts of a profile, with the verification state the
/// preferences keep for those changed through the preference APIs.
fn contacts(p: &api::Subscriber, prefs: &Preferences) -> Vec<ContactRow> {
    [("email", "email", &p.email), ("sms", "phone", &p.phone)]
        .into_iter()
        .filter(|(_, _, value)| !value.is_empty())
        .map(|(channel, label, value)| {
            let state = match prefs.contacts.get(channel) {
                Some(c) if c.value == *value && c.verified => "verified",
                Some(c) if c.value == *value => "pending",
                _ => "trusted",
            };
            ContactRow {
                channel: label,
                value: value.clone(),
                state,
            }
        })
        .collect()
}

/// The preferences as the REST view names them (`on`, `off`, `inherit`).
fn preferences_view(p: &Preferences) -> minijinja::Value {
    let on_off = |m: &std::collections::BTreeMap<String, bool>| {
        m.iter()
            .map(|(k, b)| (k.clone(), value_name(Some(*b))))
            .collect::<Vec<_>>()
    };
    let topics: Vec<_> = p
        .topics
        .iter()
        .map(|(id, t)| {
            context! { id, enabled => value_name(t.enabled), channels => on_off(&t.channels) }
        })
        .collect();
    context! {
        channels => on_off(&p.channels),
        topics,
        marketing => value_name(p.marketing),
    }
}

/// A device without its token (the API never gives it back either).
#[derive(Serialize)]
struct DeviceRow {
    device_id: String,
    app_id: String,
    platform: String,
    provider: String,
    status: String,
    revoked_reason: String,
    registered_at_ms: i64,
    last_seen_at_ms: i64,
    token_fingerprint: String,
}

fn device_row(d: api::Device) -> DeviceRow {
    DeviceRow {
        device_id: d.device_id,
        app_id: d.app_id,
        platform: d.platform,
        provider: d.provider,
        status: d.status,
        revoked_reason: d.revoked_reason,
        registered_at_ms: d.registered_at_ms,
        last_seen_at_ms: d.last_seen_at_ms,
        token_fingerprint: d.token_fingerprint,
    }
}

async fn view(
    State(c): State<Console>,
    session: Session,
    Path(id): Path<String>,
    Query(q): Query<ViewQuery>,
) -> Result<Response, PageError> {
    let caller = session.caller_with(Scope::Read)?;
    let profile = subscriber::get(&c.gw, &caller, &id)
        .await
        .map_err(|e| rename(e.into(), "subscriber_id", "id"))?;
    let sections = sections(&c, &caller, &id, q.cursor).await?;
    let attributes = serde_json::from_str::<serde_json::Value>(&profile.attributes_json)
        .ok()
        .filter(|a| a.as_object().is_some_and(|o| !o.is_empty()))
        .map(|a| serde_json::to_string_pretty(&a).unwrap_or_default());
    page::render(
        &c,
        &session,
        "subscribers/view.html",
        context! {
            contacts => contacts(&profile, &sections.preferences),
            preferences => preferences_view(&sections.preferences),
            profile => context! {
                id => profile.subscriber_id,
                locale => profile.locale,
                timezone => profile.timezone,
                webhook_url => profile.webhook_url,
                attributes,
            },
            notifications => sections.notifications,
            devices => sections.devices,
            inbox => sections.inbox,
            href => crate::workflows::link(href(&id)),
        },
    )
}

/// What the page shows besides the profile.
struct Sections {
    preferences: Preferences,
    notifications: clarion_gateway::rest_subscribers::SubscriberNotificationPage,
    devices: Vec<DeviceRow>,
    inbox: minijinja::Value,
}

async fn sections(
    c: &Console,
    caller: &Caller,
    id: &str,
    cursor: Option<String>,
) -> Result<Sections, PageError> {
    let who = Who::of(caller.clone(), Interface::Console);
    let paging = PageParams {
        limit: Some(PAGE_SIZE),
        cursor: cursor.filter(|c| !c.is_empty()),
    };
    let notifications = notifications_of(&c.gw, &who, "id", id, &paging).await?;
    let preferences = preferences::get(&c.gw, &who, id).await?;
    let devices = devices::list(&c.gw, &who, id, true)
        .await?
        .into_iter()
        .map(device_row)
        .collect();
    let feed = ListRequest {
        status: String::new(),
        archived: false,
        category: String::new(),
        paging: PageParams {
            limit: Some(PAGE_SIZE),
            cursor: None,
        },
    };
    let page = inbox::list(&c.gw, &who, REST_FIELDS, id, &feed).await?;
    let items: Vec<_> = page.items.into_iter().map(item_view).collect();
    let inbox = context! {
        items,
        counts => counts_view(&page.counts),
        more => page.next_cursor.is_some(),
    };
    Ok(Sections {
        preferences,
        notifications,
        devices,
        inbox,
    })
}

/// The gateway names the id `subscriber_id`; here it is the page's `id`.
fn rename(e: PageError, from: &str, to: &str) -> PageError {
    match e {
        PageError::BadRequest { field, message } if field == from => PageError::BadRequest {
            field: to.to_string(),
            message: message.replacen(from, to, 1),
        },
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clarion_domain::preferences::verification::ContactState;

    #[test]
    fn contacts_say_whether_they_are_verified() {
        let p = api::Subscriber {
            subscriber_id: "ana".into(),
            email: "ana@example.com".into(),
            phone: "+15145550123".into(),
            ..Default::default()
        };
        let mut prefs = Preferences::default();
        prefs.contacts.insert(
            "sms".into(),
            ContactState {
                value: "+15145550123".into(),
                verified: false,
                ..Default::default()
            },
        );
        let rows = contacts(&p, &prefs);
        assert_eq!(rows.len(), 2);
        assert_eq!((rows[0].channel, rows[0].state), ("email", "trusted"));
        assert_eq!((rows[1].channel, rows[1].state), ("phone", "pending"));
        prefs.contacts.get_mut("sms").unwrap().verified = true;
        assert_eq!(contacts(&p, &prefs)[1].state, "verified");
    }

    #[test]
    fn hrefs_encode_the_id() {
        assert_eq!(href("a+b@x"), "/console/subscribers/a%2Bb%40x");
    }
}
