//! The Mutation root: each mutation is an event appended to the log and
//! answered once its processor applied it (the preference operations'
//! read-your-writes); mutations of one request run in order.

use async_graphql::{Context, Object, Result};
use clarion_domain::preferences::Requested;

use super::errors::{api_error, camel};
use super::limits::WRITE;
use super::types::{
    ContactChange, PreferenceChangeInput, Preferences, Topic, TopicInput, VerifiedContact,
};
use super::Call;
use crate::preferences;

pub struct Mutation;

#[Object]
impl Mutation {
    /// Changes the named settings (only those) and returns the settings
    /// after. `changes[i].path`: `channels.<channel>`, `topics.<topic>`,
    /// `topics.<topic>.<channel>` or `marketing`; at most 100 changes.
    #[graphql(complexity = "WRITE + child_complexity")]
    async fn update_preferences(
        &self,
        ctx: &Context<'_>,
        subscriber_id: String,
        changes: Vec<PreferenceChangeInput>,
    ) -> Result<Option<Preferences>> {
        let r = Call::of(ctx)?;
        let requested: Vec<Requested> = changes
            .into_iter()
            .map(|c| Requested {
                path: c.path,
                value: c.value.value(),
            })
            .collect();
        let after = preferences::update(&r.gateway, &r.who, &subscriber_id, &requested)
            .await
            .map_err(|e| api_error(e, camel))?;
        Ok(Some(Preferences::from(&after)))
    }

    /// Creates or replaces a topic; returns it as registered (a repeated
    /// identical registration keeps its version).
    #[graphql(complexity = "WRITE + child_complexity")]
    async fn register_topic(&self, ctx: &Context<'_>, input: TopicInput) -> Result<Option<Topic>> {
        let r = Call::of(ctx)?;
        let t = preferences::register_topic(&r.gateway, &r.who, &input.into())
            .await
            .map_err(|e| api_error(e, topic_input_field))?;
        Ok(Some(t.into()))
    }

    /// Changes a subscriber's email (`channel: "email"`) or phone
    /// (`"sms"`); a code goes to the new one, which receives nothing else
    /// until `verifyContact` confirms it.
    #[graphql(complexity = "WRITE + child_complexity")]
    async fn change_contact(
        &self,
        ctx: &Context<'_>,
        subscriber_id: String,
        channel: String,
        value: String,
    ) -> Result<Option<ContactChange>> {
        let r = Call::of(ctx)?;
        let expires =
            preferences::change_contact(&r.gateway, &r.who, &subscriber_id, &channel, &value)
                .await
                .map_err(|e| api_error(e, camel))?;
        Ok(Some(ContactChange {
            channel,
            value,
            verified: false,
            code_expires_at_ms: expires,
        }))
    }

    /// Confirms the code sent to a changed contact.
    #[graphql(complexity = "WRITE + child_complexity")]
    async fn verify_contact(
        &self,
        ctx: &Context<'_>,
        subscriber_id: String,
        channel: String,
        code: String,
    ) -> Result<Option<VerifiedContact>> {
        let r = Call::of(ctx)?;
        let value =
            preferences::verify_contact(&r.gateway, &r.who, &subscriber_id, &channel, &code)
                .await
                .map_err(|e| api_error(e, camel))?;
        Ok(Some(VerifiedContact {
            channel,
            value,
            verified: true,
        }))
    }
}

/// The topic checks' field names in `registerTopic(input: …)`.
fn topic_input_field(f: &str) -> String {
    match f {
        "topic_id" => "input.id".into(),
        other => format!("input.{}", camel(other)),
    }
}
