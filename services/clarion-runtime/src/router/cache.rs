//! The router's caches of tenant configuration (workflows, templates,
//! limits, topics) and of subscriber profiles. Published workflow versions are
//! immutable and cached for good; templates and limits are re-read at most
//! every `template_refresh`, so configuration changes apply within it.
//! Topics likewise, all of a tenant's in one read (a tenant has at most
//! `MAX_TOPICS`).

use std::sync::Arc;
use std::time::Instant;

use clarion_domain::flow::{throttle, Flow, TenantLimits};
use clarion_domain::preferences::topic::{Topic, MAX_TOPICS};
use clarion_domain::recipient::Pair;
use clarion_domain::subscriber::Subscriber;
use clarion_domain::template::{CompiledTemplate, Template};
use clarion_domain::{Event, Payload};
use clarion_proto::events as pb;
use clarion_store::{RowKey, Scan, Store, Table};
use prost::Message;

use super::{Router, RunRecord, TenantTopics};
use crate::processor::ProcessError;
use crate::projector::{version_ck, TENANT_LIMITS_PK, TOPICS_PK};

/// A `(tenant, workflow, version)` key, borrowed (see [`Pair`]).
#[derive(Hash)]
pub(super) struct Versioned<'a>(pub &'a str, pub &'a str, pub u32);

impl hashbrown::Equivalent<(String, String, u32)> for Versioned<'_> {
    fn equivalent(&self, k: &(String, String, u32)) -> bool {
        self.0 == k.0 && self.1 == k.1 && self.2 == k.2
    }
}

impl Router {
    /// The tenant's limits across its workflows, re-read at most every
    /// `template_refresh` (like templates: config changes apply within it).
    pub(super) async fn tenant_limits(
        &mut self,
        store: &dyn Store,
        tenant: &str,
    ) -> Result<Option<Arc<TenantLimits>>, ProcessError> {
        if let Some((at, l)) = self.tenant_limits.get(tenant) {
            if at.elapsed() < self.template_refresh {
                return Ok(l.clone());
            }
        }
        let l = store
            .scan(&Scan::partition(Table::Tenants, tenant, TENANT_LIMITS_PK, 1).reversed())
            .await?
            .into_iter()
            .next()
            .and_then(|(_, b)| Event::decode(&b).ok())
            .and_then(|e| match e.payload {
                Payload::TenantLimitsSet(p) => throttle::from_event(&p).ok(),
                _ => None,
            })
            .filter(|l| !l.def.throttle.is_empty())
            .map(Arc::new);
        self.tenant_limits
            .insert(tenant.to_string(), (Instant::now(), l.clone()));
        Ok(l)
    }

    /// A tenant's topic, from all its topics re-read at most every
    /// `template_refresh` (a changed topic applies within it). `None`: not
    /// registered.
    pub(super) async fn topic(
        &mut self,
        store: &dyn Store,
        tenant: &str,
        id: &str,
    ) -> Result<Option<Arc<Topic>>, ProcessError> {
        if let Some((at, topics)) = self.topics.get(tenant) {
            if at.elapsed() < self.template_refresh {
                return Ok(topics.get(id).cloned());
            }
        }
        let rows = store
            .scan(&Scan::partition(
                Table::Topics,
                tenant,
                TOPICS_PK,
                MAX_TOPICS * 2,
            ))
            .await?;
        let topics: TenantTopics = rows
            .iter()
            .filter_map(|(_, b)| pb::TopicRegistered::decode(&b[..]).ok())
            .map(|e| (e.topic_id.clone(), Arc::new(Topic::from_event(&e))))
            .collect();
        let found = topics.get(id).cloned();
        self.topics
            .insert(tenant.to_string(), (Instant::now(), Arc::new(topics)));
        Ok(found)
    }

    pub(super) async fn subscriber(
        &mut self,
        store: &dyn Store,
        tenant: &str,
        id: &str,
    ) -> Result<Option<Subscriber>, ProcessError> {
        if let Some(s) = self.recipients.profiles.get(tenant, id) {
            return Ok(s.clone());
        }
        let s = match store
            .get(&RowKey::new(Table::Subscribers, tenant, id, Vec::new()))
            .await?
        {
            Some(b) => self.open_profile(tenant, &b).await?,
            None => None,
        };
        self.recipients.profiles.load(tenant, id, s.clone());
        Ok(s)
    }

    pub(super) async fn flow(
        &mut self,
        store: &dyn Store,
        tenant: &str,
        id: &str,
        version: u32,
    ) -> Result<Option<Arc<Flow>>, ProcessError> {
        if let Some(f) = self.flows.get(&Versioned(tenant, id, version)) {
            return Ok(Some(f.clone()));
        }
        let f = store
            .get(&RowKey::new(
                Table::Workflows,
                tenant,
                id,
                version_ck(version),
            ))
            .await?
            .and_then(|b| Event::decode(&b).ok())
            .and_then(|e| match e.payload {
                Payload::WorkflowPublished(p) => clarion_domain::workflow::from_published(&p)
                    .ok()
                    .map(Arc::new),
                _ => None,
            });
        // Only hits are cached: a miss may be a version not projected yet.
        if let Some(f) = &f {
            self.flows
                .insert((tenant.to_string(), id.to_string(), version), f.clone());
        }
        Ok(f)
    }

    pub(super) async fn template(
        &mut self,
        store: &dyn Store,
        tenant: &str,
        id: &str,
    ) -> Result<Option<Arc<CompiledTemplate>>, ProcessError> {
        if let Some((at, t)) = self.templates.get(&Pair(tenant, id)) {
            if at.elapsed() < self.template_refresh {
                return Ok(t.clone());
            }
        }
        let t = store
            .scan(&Scan::partition(Table::Templates, tenant, id, 1).reversed())
            .await?
            .into_iter()
            .next()
            .and_then(|(_, b)| Event::decode(&b).ok())
            .and_then(|e| match e.payload {
                Payload::TemplatePublished(p) => {
                    Template::from_event(&p).ok().map(|t| Arc::new(t.compile()))
                }
                _ => None,
            });
        self.templates.insert(
            (tenant.to_string(), id.to_string()),
            (Instant::now(), t.clone()),
        );
        Ok(t)
    }

    /// The run's recipient: the stored subscriber with the contact data
    /// given with the trigger over it.
    pub(super) async fn recipient(
        &mut self,
        store: &dyn Store,
        tenant: &str,
        rec: &RunRecord,
    ) -> Result<Subscriber, ProcessError> {
        let stored = self.subscriber(store, tenant, &rec.subscriber_id).await?;
        Ok(stored
            .unwrap_or_else(|| Subscriber {
                subscriber_id: rec.subscriber_id.clone(),
                ..Default::default()
            })
            .with_override(&rec.contact.to_pb()))
    }
}
