//! The preference center's operations, whatever the door: gRPC
//! (`PreferenceService`, `TopicService`), REST and GraphQL call these, so
//! validation, tenant scoping, the audit origin and read-your-writes are the
//! same everywhere.
//!
//! Reads come from the rows the router (preferences, their history) and
//! the projector (topics) write; changes are events: settings and contacts
//! on the subscriber's stream (the router applies them in order with that
//! subscriber's triggers), topics on `config`. A change returns once its
//! processor applied it.

use std::collections::BTreeMap;
use std::ops::Bound;

use base64::Engine;
use clarion_domain::ids::{recipient_key, tenant_key};
use clarion_domain::preferences::topic::{self, Topic, TopicInput};
use clarion_domain::preferences::verification::{self, Refused};
use clarion_domain::preferences::{self, Preferences, Question, Requested, Verdict};
use clarion_domain::subscriber::{validate_contact, validate_subscriber_id, Contact, Subscriber};
use clarion_domain::{Actor, Channel, Event, Id, Payload, TenantId, Violations};
use clarion_proto::events as pb;
use clarion_runtime::projector::PROJECTOR;
use clarion_runtime::router::ROUTER;
use clarion_runtime::Topic as LogTopic;
use clarion_store::{RowKey, Scan, Table};
use prost::Message;
use serde::Serialize;

use crate::error::ApiError;
use crate::state::GatewayState;

/// The door a change came through (recorded in the audit trail).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Interface {
    Rest,
    Graphql,
    Grpc,
    Console,
    Cli,
}

impl Interface {
    pub fn as_str(self) -> &'static str {
        match self {
            Interface::Rest => "rest",
            Interface::Graphql => "graphql",
            Interface::Grpc => "grpc",
            Interface::Console => "console",
            Interface::Cli => "cli",
        }
    }
}

/// Who is asking: the tenant, the actor (an API key, an operator, or an end
/// user's subscriber token, which reaches only its own subscriber) and the
/// door.
#[derive(Clone, Debug)]
pub struct Who {
    pub tenant: TenantId,
    pub actor: Actor,
    pub interface: Interface,
    /// Set for a subscriber token: the one subscriber it may reach.
    pub subscriber: Option<String>,
}

impl Who {
    /// An authenticated caller asking through `interface`.
    pub fn of(caller: crate::auth::Caller, interface: Interface) -> Who {
        Who {
            tenant: caller.tenant,
            actor: caller.actor,
            interface,
            subscriber: caller.subscriber,
        }
    }

    /// Who made a change, for the audit trail of the event.
    pub(crate) fn origin(&self) -> pb::Origin {
        let actor = match (&self.subscriber, &self.actor) {
            (Some(s), _) => format!("subscriber:{s}"),
            (None, Actor::ApiKey(id)) => format!("api_key:{id}"),
            (None, Actor::Operator(id)) => format!("operator:{id}"),
            (None, Actor::System(id)) => format!("system:{id}"),
        };
        pb::Origin {
            interface: self.interface.as_str().into(),
            actor,
        }
    }

    /// A subscriber token reaches its own subscriber only; any other id is
    /// answered as if it did not exist.
    pub(crate) fn reach(&self, field: &str, subscriber_id: &str) -> Result<(), ApiError> {
        let mut v = Violations::default();
        validate_subscriber_id(&mut v, field, subscriber_id);
        v.into_result()?;
        match &self.subscriber {
            Some(own) if own != subscriber_id => Err(not_found(&self.tenant, subscriber_id)),
            _ => Ok(()),
        }
    }
}

fn not_found(tenant: &TenantId, id: &str) -> ApiError {
    ApiError::NotFound(format!(
        "no subscriber {} for tenant {:?}",
        clarion_domain::error::quote(id),
        tenant.as_str()
    ))
}

/// A subscriber's stored profile; not found when there is none.
pub(crate) async fn profile(s: &GatewayState, who: &Who, id: &str) -> Result<Subscriber, ApiError> {
    let key = RowKey::new(Table::Subscribers, who.tenant.as_str(), id, Vec::new());
    let row = s
        .store
        .get(&key)
        .await?
        .ok_or_else(|| not_found(&who.tenant, id))?;
    let mut e = pb::SubscriberUpserted::decode(&row[..])
        .map_err(|e| ApiError::Internal(format!("stored subscriber: {e}")))?;
    s.open_profile(&who.tenant, &mut e).await?;
    Ok(Subscriber::from_event(&e))
}

/// The subscriber's settings as the router last wrote them.
async fn stored(s: &GatewayState, tenant: &TenantId, id: &str) -> Result<Preferences, ApiError> {
    let key = RowKey::new(Table::Preferences, tenant.as_str(), id, Vec::new());
    let Some(row) = s.store.get(&key).await? else {
        return Ok(Preferences::default());
    };
    let mut p = Preferences::decode(&row)
        .map_err(|e| ApiError::Internal(format!("stored preferences: {e}")))?;
    // A pending contact's new address is sealed in the row (issue #32).
    for c in p.contacts.values_mut() {
        s.open_value(tenant, id, &mut c.value).await?;
    }
    Ok(p)
}

/// A subscriber's settings (the subscriber must exist).
pub async fn get(s: &GatewayState, who: &Who, id: &str) -> Result<Preferences, ApiError> {
    who.reach("subscriber_id", id)?;
    profile(s, who, id).await?;
    stored(s, &who.tenant, id).await
}

/// Appends an event to the subscriber's stream and waits for the router.
pub(crate) async fn to_subscriber(
    s: &GatewayState,
    who: &Who,
    id: &str,
    payload: Payload,
) -> Result<(), ApiError> {
    let event = Event {
        id: Id(rand::random()),
        tenant: who.tenant.clone(),
        partition_key: recipient_key(&who.tenant, id),
        occurred_at_ms: s.clock.now_ms(),
        causation_id: None,
        correlation_id: None,
        actor: who.actor.clone(),
        payload,
    };
    let at = s.append(LogTopic::Triggers, &[event]).await?;
    s.wait_applied(ROUTER, LogTopic::Triggers, at[0]).await;
    Ok(())
}

/// Changes the named settings (only those) and returns the settings after.
pub async fn update(
    s: &GatewayState,
    who: &Who,
    id: &str,
    requested: &[Requested],
) -> Result<Preferences, ApiError> {
    who.reach("subscriber_id", id)?;
    profile(s, who, id).await?;
    let current = stored(s, &who.tenant, id).await?;
    let topics = topics_by_id(s, &who.tenant).await?;
    let changes =
        preferences::validate_changes("changes", requested, &current, &|t| topics.get(t).cloned())?;
    if changes.is_empty() {
        return Ok(current);
    }
    let changed = pb::PreferencesChanged {
        subscriber_id: id.to_string(),
        changes,
        origin: Some(who.origin()),
    };
    to_subscriber(s, who, id, Payload::PreferencesChanged(changed)).await?;
    stored(s, &who.tenant, id).await
}

/// The answer of `evaluate` for a subscriber, a workflow and a channel.
#[derive(Clone, Debug, Serialize)]
pub struct Explained {
    #[serde(flatten)]
    pub verdict: Verdict,
    pub topic_id: Option<String>,
    pub workflow_version: u32,
}

/// Would a send of `workflow_id` on `channel` go out now? The router's own
/// function, over the same rows it reads.
pub async fn evaluate(
    s: &GatewayState,
    who: &Who,
    id: &str,
    workflow_id: &str,
    channel: &str,
) -> Result<Explained, ApiError> {
    who.reach("subscriber_id", id)?;
    let channel: Channel = channel
        .parse()
        .map_err(|e: String| Violations::single("channel", e))?;
    let flow = crate::config_read::latest_workflow(&*s.store, &who.tenant, workflow_id)
        .await?
        .ok_or_else(|| {
            ApiError::NotFound(format!(
                "no workflow {} for tenant {:?}",
                clarion_domain::error::quote(workflow_id),
                who.tenant.as_str()
            ))
        })?;
    let subscriber = profile(s, who, id).await?;
    let prefs = stored(s, &who.tenant, id).await?;
    let topic_id = flow.def.topic.clone();
    let topic = match &topic_id {
        Some(t) => get_topic_row(s, &who.tenant, t).await?,
        None => None,
    };
    let verdict = preferences::evaluate(&Question {
        channel,
        topic_id: topic_id.as_deref(),
        topic: topic.as_ref(),
        critical: flow.def.critical,
        preferences: &prefs,
        address: subscriber.address(channel).unwrap_or(""),
    });
    Ok(Explained {
        verdict,
        topic_id,
        workflow_version: flow.version,
    })
}

/// One entry of a subscriber's preference history.
#[derive(Clone, Debug, Serialize)]
pub struct HistoryEntry {
    pub event_id: String,
    pub at_ms: i64,
    /// preferences_changed | contact_changed | contact_verified | contact_verification_failed
    pub kind: &'static str,
    pub interface: String,
    pub actor: String,
    pub changes: Vec<ChangeView>,
}

#[derive(Clone, Debug, Serialize)]
pub struct ChangeView {
    pub path: String,
    pub old: String,
    pub new: String,
}

/// Most entries one page of history returns.
pub const MAX_PAGE: u32 = 500;

/// A subscriber's preference and contact changes, oldest first, a page at
/// a time. The cursor is the position after the page's last entry.
pub async fn history(
    s: &GatewayState,
    who: &Who,
    id: &str,
    limit: u32,
    cursor: &str,
) -> Result<(Vec<HistoryEntry>, Option<String>), ApiError> {
    who.reach("subscriber_id", id)?;
    let after = decode_cursor(cursor)?;
    profile(s, who, id).await?;
    let limit = if limit == 0 { 100 } else { limit.min(MAX_PAGE) } as usize;
    let mut scan = Scan::partition(Table::PreferenceHistory, who.tenant.as_str(), id, limit + 1);
    if let Some(after) = after {
        scan = scan.range(Bound::Excluded(after), Bound::Unbounded);
    }
    let rows = s.store.scan(&scan).await?;
    let more = rows.len() > limit;
    let mut entries = Vec::with_capacity(limit);
    let mut last = None;
    for (ck, value) in rows.into_iter().take(limit) {
        let mut e = Event::decode(&value)
            .map_err(|e| ApiError::Internal(format!("stored preference history: {e}")))?;
        s.open_event(&mut e).await?;
        // The row is the tenant's; the event must agree (defence in depth).
        if e.tenant.as_str() != who.tenant.as_str() {
            continue;
        }
        if let Some(entry) = entry_of(&e) {
            entries.push(entry);
        }
        last = Some(ck);
    }
    let next = more
        .then(|| last.map(|ck| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(ck)))
        .flatten();
    Ok((entries, next))
}

fn decode_cursor(cursor: &str) -> Result<Option<Vec<u8>>, ApiError> {
    if cursor.is_empty() {
        return Ok(None);
    }
    match base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(cursor) {
        // A history position: 8 bytes of time, 16 of event id.
        Ok(ck) if ck.len() == 24 => Ok(Some(ck)),
        _ => Err(Violations::single("cursor", "is not a cursor this API returned").into()),
    }
}

fn entry_of(e: &Event) -> Option<HistoryEntry> {
    let view = |path: &str, old: &str, new: &str| ChangeView {
        path: path.into(),
        old: old.into(),
        new: new.into(),
    };
    let (kind, origin, changes) = match &e.payload {
        Payload::PreferencesChanged(p) => (
            "preferences_changed",
            &p.origin,
            p.changes
                .iter()
                .map(|c| {
                    let (path, old, new) = preferences::describe(c);
                    view(&path, old, new)
                })
                .collect(),
        ),
        Payload::ContactChanged(c) => (
            "contact_changed",
            &c.origin,
            vec![view(
                &format!("contacts.{}", c.channel),
                &c.old_value,
                &c.new_value,
            )],
        ),
        Payload::ContactVerified(c) => (
            "contact_verified",
            &c.origin,
            vec![view(
                &format!("contacts.{}.verified", c.channel),
                "false",
                "true",
            )],
        ),
        Payload::ContactVerificationFailed(c) => {
            ("contact_verification_failed", &c.origin, Vec::new())
        }
        _ => return None,
    };
    let origin = origin.clone().unwrap_or_default();
    Some(HistoryEntry {
        event_id: e.id.to_hex(),
        at_ms: e.occurred_at_ms,
        kind,
        interface: origin.interface,
        actor: origin.actor,
        changes,
    })
}

/// Changes an email or phone; a code goes to the new one, which stays
/// unverified until [`verify_contact`]. Returns when the code expires.
pub async fn change_contact(
    s: &GatewayState,
    who: &Who,
    id: &str,
    channel: &str,
    value: &str,
) -> Result<i64, ApiError> {
    who.reach("subscriber_id", id)?;
    let ch = verifiable_channel(channel)?;
    let mut v = Violations::default();
    let contact = match ch {
        Channel::Email => Contact {
            email: value,
            ..Contact::default()
        },
        _ => Contact {
            phone: value,
            ..Contact::default()
        },
    };
    validate_contact(&mut v, "", contact);
    if value.is_empty() {
        v.push("value", "is required");
    }
    // The contact checks name the field `email`/`phone`; the request's is `value`.
    for f in &mut v.0 {
        f.field = "value".into();
    }
    v.into_result()?;
    let subscriber = profile(s, who, id).await?;
    let expires = s.clock.now_ms() + verification::CODE_TTL_MS;
    let changed = pb::ContactChanged {
        subscriber_id: id.to_string(),
        channel: ch.as_str().into(),
        old_value: subscriber.address(ch).unwrap_or("").to_string(),
        new_value: value.to_string(),
        code: verification::code_from(rand::random()),
        expires_at_ms: expires,
        origin: Some(who.origin()),
        locale: subscriber.locale.clone(),
    };
    to_subscriber(s, who, id, Payload::ContactChanged(changed)).await?;
    Ok(expires)
}

fn verifiable_channel(channel: &str) -> Result<Channel, ApiError> {
    match channel.parse::<Channel>() {
        Ok(c) if verification::verifiable(c) => Ok(c),
        _ => Err(Violations::single("channel", "must be email or sms").into()),
    }
}

/// Confirms a contact's code; returns the verified value.
pub async fn verify_contact(
    s: &GatewayState,
    who: &Who,
    id: &str,
    channel: &str,
    code: &str,
) -> Result<String, ApiError> {
    who.reach("subscriber_id", id)?;
    let ch = verifiable_channel(channel)?;
    if code.len() > 32 {
        return Err(Violations::single("code", "is not a verification code").into());
    }
    profile(s, who, id).await?;
    let prefs = stored(s, &who.tenant, id).await?;
    let now = s.clock.now_ms();
    match verification::check(&prefs, who.tenant.as_str(), id, ch, code, now) {
        Ok(value) => {
            let verified = pb::ContactVerified {
                subscriber_id: id.to_string(),
                channel: ch.as_str().into(),
                value: value.clone(),
                origin: Some(who.origin()),
            };
            to_subscriber(s, who, id, Payload::ContactVerified(verified)).await?;
            Ok(value)
        }
        Err(Refused::Wrong) => {
            let failed = pb::ContactVerificationFailed {
                subscriber_id: id.to_string(),
                channel: ch.as_str().into(),
                origin: Some(who.origin()),
            };
            to_subscriber(s, who, id, Payload::ContactVerificationFailed(failed)).await?;
            Err(Violations::single("code", Refused::Wrong.to_string()).into())
        }
        Err(e @ Refused::NothingPending(_)) => {
            Err(Violations::single("channel", e.to_string()).into())
        }
        Err(e) => Err(Violations::single("code", e.to_string()).into()),
    }
}

/// Every topic of the tenant, by id.
pub async fn topics_by_id(
    s: &GatewayState,
    tenant: &TenantId,
) -> Result<BTreeMap<String, Topic>, ApiError> {
    let scan = Scan::partition(
        Table::Topics,
        tenant.as_str(),
        "topics",
        topic::MAX_TOPICS + 1,
    );
    let mut out = BTreeMap::new();
    for (_, v) in s.store.scan(&scan).await? {
        let e = pb::TopicRegistered::decode(&v[..])
            .map_err(|e| ApiError::Internal(format!("stored topic: {e}")))?;
        let t = Topic::from_event(&e);
        out.insert(t.id.clone(), t);
    }
    Ok(out)
}

async fn get_topic_row(
    s: &GatewayState,
    tenant: &TenantId,
    id: &str,
) -> Result<Option<Topic>, ApiError> {
    let key = RowKey::new(
        Table::Topics,
        tenant.as_str(),
        "topics",
        id.as_bytes().to_vec(),
    );
    match s.store.get(&key).await? {
        Some(v) => pb::TopicRegistered::decode(&v[..])
            .map(|e| Some(Topic::from_event(&e)))
            .map_err(|e| ApiError::Internal(format!("stored topic: {e}"))),
        None => Ok(None),
    }
}

/// One topic; not found when the tenant has none of that id.
pub async fn get_topic(s: &GatewayState, who: &Who, id: &str) -> Result<Topic, ApiError> {
    let mut v = Violations::default();
    clarion_domain::workflow::validate_id(&mut v, "topic_id", id);
    v.into_result()?;
    get_topic_row(s, &who.tenant, id).await?.ok_or_else(|| {
        ApiError::NotFound(format!(
            "no topic {} for tenant {:?}",
            clarion_domain::error::quote(id),
            who.tenant.as_str()
        ))
    })
}

/// Creates or replaces a topic; returns it as registered (with its version).
pub async fn register_topic(
    s: &GatewayState,
    who: &Who,
    input: &TopicInput,
) -> Result<Topic, ApiError> {
    if who.subscriber.is_some() {
        return Err(ApiError::PermissionDenied(
            "a subscriber token cannot register topics".into(),
        ));
    }
    // Versions are numbered under the gateway's configuration lock, like
    // templates and workflows.
    let _guard = s.config_lock.lock().await;
    let known = topics_by_id(s, &who.tenant).await?;
    let previous = known.get(&input.id);
    let t = topic::validate(input, previous, known.len())?;
    if previous.is_some_and(|p| same_definition(p, &t)) {
        return Ok(previous.cloned().expect("checked"));
    }
    let event = Event {
        id: Id(rand::random()),
        tenant: who.tenant.clone(),
        partition_key: tenant_key(&who.tenant),
        occurred_at_ms: s.clock.now_ms(),
        causation_id: None,
        correlation_id: None,
        actor: who.actor.clone(),
        payload: Payload::TopicRegistered(t.to_event(previous, who.origin())),
    };
    let at = s.append(LogTopic::Config, &[event]).await?;
    s.wait_applied(PROJECTOR, LogTopic::Config, at[0]).await;
    Ok(t)
}

/// Whether two versions define the same topic (a repeated registration is
/// not a new version: modules register their topics at every start).
fn same_definition(a: &Topic, b: &Topic) -> bool {
    Topic {
        version: 0,
        ..a.clone()
    } == Topic {
        version: 0,
        ..b.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_are_history_positions_only() {
        assert_eq!(decode_cursor("").unwrap(), None);
        let ck = [7u8; 24];
        let c = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(ck);
        assert_eq!(decode_cursor(&c).unwrap(), Some(ck.to_vec()));
        for bad in ["!!", "AAAA", "a b"] {
            match decode_cursor(bad) {
                Err(ApiError::Invalid(v)) => assert_eq!(v.0[0].field, "cursor"),
                other => panic!("{bad}: {other:?}"),
            }
        }
    }

    #[test]
    fn the_origin_names_the_actor_and_the_door() {
        let who = Who {
            tenant: TenantId::parse("t1").unwrap(),
            actor: Actor::ApiKey("k1".into()),
            interface: Interface::Rest,
            subscriber: None,
        };
        assert_eq!(who.origin().actor, "api_key:k1");
        assert_eq!(who.origin().interface, "rest");
        let end_user = Who {
            subscriber: Some("s1".into()),
            interface: Interface::Graphql,
            ..who
        };
        assert_eq!(end_user.origin().actor, "subscriber:s1");
        assert!(end_user.reach("subscriber_id", "s1").is_ok());
        assert!(matches!(
            end_user.reach("subscriber_id", "s2"),
            Err(ApiError::NotFound(_))
        ));
    }
}
