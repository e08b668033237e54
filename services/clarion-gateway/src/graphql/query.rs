//! The Query root. Root fields are nullable: one failing field (a
//! subscriber of another tenant: NOT_FOUND) leaves the others' data.

use async_graphql::{Context, Object, Result};
use clarion_domain::Violations;

use super::errors::{api_error, camel};
use super::limits::{MAX_NOTIFICATIONS_PAGE, STORE_READ};
use super::notifications::{self, SubscriberNotificationPage};
use super::types::{Evaluation, Notification, PreferenceHistoryPage, Preferences, Topic};
use super::Call;
use crate::error::ApiError;
use crate::preferences;

pub struct Query;

/// A subscriber as the preference center sees it.
pub struct Subscriber {
    id: String,
    preferences: Preferences,
}

#[Object]
impl Subscriber {
    async fn id(&self) -> &str {
        &self.id
    }

    /// The subscriber's settings as the router last applied them.
    async fn preferences(&self) -> &Preferences {
        &self.preferences
    }

    /// The subscriber's notifications, newest first (`first`: 1 to 50).
    #[graphql(
        complexity = "STORE_READ + first.clamp(1, MAX_NOTIFICATIONS_PAGE) as usize * (STORE_READ + child_complexity)"
    )]
    async fn notifications(
        &self,
        ctx: &Context<'_>,
        #[graphql(default = 20)] first: i32,
        after: Option<String>,
    ) -> Result<SubscriberNotificationPage> {
        subscriber_notifications(ctx, &self.id, first, after).await
    }
}

/// `first` of a page: 1 to `max`.
pub(super) fn page_size(first: i32, max: i32) -> Result<usize, ApiError> {
    if (1..=max).contains(&first) {
        Ok(first as usize)
    } else {
        Err(Violations::single("first", format!("must be between 1 and {max}, got {first}")).into())
    }
}

async fn subscriber_notifications(
    ctx: &Context<'_>,
    id: &str,
    first: i32,
    after: Option<String>,
) -> Result<SubscriberNotificationPage> {
    let r = Call::of(ctx)?;
    let run = async {
        let limit = page_size(first, MAX_NOTIFICATIONS_PAGE)?;
        notifications::list_for_subscriber(&r.gateway, &r.who, id, limit, after.as_deref()).await
    };
    run.await.map_err(|e| api_error(e, history_field))
}

/// The operations' field names in this schema's arguments.
fn history_field(f: &str) -> String {
    match f {
        "cursor" => "after".into(),
        other => camel(other),
    }
}

#[Object]
impl Query {
    /// A subscriber's preferences (NOT_FOUND for a subscriber the tenant
    /// does not have).
    #[graphql(complexity = "STORE_READ + child_complexity")]
    async fn subscriber(&self, ctx: &Context<'_>, id: String) -> Result<Option<Subscriber>> {
        let r = Call::of(ctx)?;
        let prefs = preferences::get(&r.gateway, &r.who, &id)
            .await
            .map_err(|e| api_error(e, id_field))?;
        Ok(Some(Subscriber {
            preferences: Preferences::from(&prefs),
            id,
        }))
    }

    /// A subscriber's preference and contact changes, oldest first
    /// (`first`: 1 to 500).
    #[graphql(complexity = "STORE_READ + child_complexity")]
    async fn preference_history(
        &self,
        ctx: &Context<'_>,
        subscriber_id: String,
        #[graphql(default = 100)] first: i32,
        after: Option<String>,
    ) -> Result<Option<PreferenceHistoryPage>> {
        let r = Call::of(ctx)?;
        let run = async {
            let limit = page_size(first, preferences::MAX_PAGE as i32)?;
            let cursor = after.as_deref().unwrap_or("");
            preferences::history(&r.gateway, &r.who, &subscriber_id, limit as u32, cursor).await
        };
        let (entries, next_cursor) = run.await.map_err(|e| api_error(e, history_field))?;
        Ok(Some(PreferenceHistoryPage {
            entries: entries.into_iter().map(Into::into).collect(),
            next_cursor,
        }))
    }

    /// The tenant's topics.
    #[graphql(complexity = "STORE_READ + child_complexity")]
    async fn topics(&self, ctx: &Context<'_>) -> Result<Option<Vec<Topic>>> {
        let r = Call::of(ctx)?;
        let topics = preferences::topics_by_id(&r.gateway, &r.who.tenant)
            .await
            .map_err(|e| api_error(e, camel))?;
        Ok(Some(topics.into_values().map(Topic::from).collect()))
    }

    /// One topic (NOT_FOUND when the tenant has none of that id).
    #[graphql(complexity = "STORE_READ + child_complexity")]
    async fn topic(&self, ctx: &Context<'_>, id: String) -> Result<Option<Topic>> {
        let r = Call::of(ctx)?;
        let t = preferences::get_topic(&r.gateway, &r.who, &id)
            .await
            .map_err(|e| api_error(e, id_field))?;
        Ok(Some(t.into()))
    }

    /// Would a send of `workflowId` on `channel` go out now, and which rule
    /// decides? The function the router calls before every send.
    #[graphql(complexity = "STORE_READ + child_complexity")]
    async fn evaluate(
        &self,
        ctx: &Context<'_>,
        subscriber_id: String,
        workflow_id: String,
        channel: String,
    ) -> Result<Option<Evaluation>> {
        let r = Call::of(ctx)?;
        let e = preferences::evaluate(&r.gateway, &r.who, &subscriber_id, &workflow_id, &channel)
            .await
            .map_err(|e| api_error(e, camel))?;
        Ok(Some(e.into()))
    }

    /// A notification: its status and every event of its history.
    #[graphql(complexity = "STORE_READ + child_complexity")]
    async fn notification(&self, ctx: &Context<'_>, id: String) -> Result<Option<Notification>> {
        let r = Call::of(ctx)?;
        let n = notifications::get(&r.gateway, &r.who, &r.headers, &id)
            .await
            .map_err(|e| api_error(e, id_field))?;
        Ok(Some(n.into()))
    }

    /// A subscriber's notifications, newest first (as
    /// `subscriber(id) { notifications }`).
    #[graphql(
        complexity = "STORE_READ + first.clamp(1, MAX_NOTIFICATIONS_PAGE) as usize * (STORE_READ + child_complexity)"
    )]
    async fn notifications(
        &self,
        ctx: &Context<'_>,
        subscriber_id: String,
        #[graphql(default = 20)] first: i32,
        after: Option<String>,
    ) -> Result<Option<SubscriberNotificationPage>> {
        subscriber_notifications(ctx, &subscriber_id, first, after)
            .await
            .map(Some)
    }
}

/// A field the operations name `subscriber_id`, `topic_id` or
/// `notification_id` is this query's `id`.
fn id_field(f: &str) -> String {
    match f {
        "subscriber_id" | "topic_id" | "notification_id" => "id".into(),
        other => camel(other),
    }
}
