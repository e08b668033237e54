//! The router processor: applies subscriber upserts and routes triggers.
//!
//! It owns the subscriber state of its partition (upserts arrive on the same
//! partition as that subscriber's triggers, in order), and reads tenant
//! configuration (workflows, templates) from the projection, caching it:
//! workflow versions are immutable, templates are re-read at most every
//! `template_refresh`.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;
use clarion_domain::router::{route, RouteInput};
use clarion_domain::subscriber::Subscriber;
use clarion_domain::template::{CompiledTemplate, Template};
use clarion_domain::workflow::Workflow;
use clarion_domain::{Channel, Event, Payload};
use clarion_store::{RowKey, Scan, Store, Table};
use prost::Message;

use crate::processor::{Batch, Input, ProcessError, Processor};
use crate::projector::version_ck;
use crate::topics::Topic;

pub const ROUTER: &str = clarion_domain::router::ROUTER;

type TemplateEntry = (Instant, Option<Arc<CompiledTemplate>>);

pub struct Router {
    default_providers: HashMap<Channel, String>,
    subscribers: HashMap<(String, String), Option<Subscriber>>,
    workflows: HashMap<(String, String, u32), Option<Arc<Workflow>>>,
    templates: HashMap<(String, String), TemplateEntry>,
    template_refresh: Duration,
}

impl Router {
    pub fn new(default_providers: HashMap<Channel, String>) -> Router {
        Router {
            default_providers,
            subscribers: HashMap::new(),
            workflows: HashMap::new(),
            templates: HashMap::new(),
            template_refresh: Duration::from_secs(1),
        }
    }

    async fn subscriber(
        &mut self,
        store: &dyn Store,
        tenant: &str,
        id: &str,
    ) -> Result<Option<Subscriber>, ProcessError> {
        let k = (tenant.to_string(), id.to_string());
        if let Some(s) = self.subscribers.get(&k) {
            return Ok(s.clone());
        }
        let s = store
            .get(&RowKey::new(Table::Subscribers, tenant, id, Vec::new()))
            .await?
            .and_then(|b| clarion_domain::event::decode_subscriber(&b));
        self.subscribers.insert(k, s.clone());
        Ok(s)
    }

    async fn workflow(
        &mut self,
        store: &dyn Store,
        tenant: &str,
        id: &str,
        version: u32,
    ) -> Result<Option<Arc<Workflow>>, ProcessError> {
        let k = (tenant.to_string(), id.to_string(), version);
        if let Some(w) = self.workflows.get(&k) {
            return Ok(w.clone());
        }
        let w = store
            .get(&RowKey::new(
                Table::Workflows,
                tenant,
                id,
                version_ck(version),
            ))
            .await?
            .and_then(|b| Event::decode(&b).ok())
            .and_then(|e| match e.payload {
                Payload::WorkflowPublished(p) => Workflow::from_event(&p).ok().map(Arc::new),
                _ => None,
            });
        // Only cache hits: a miss may be a version not yet projected.
        if w.is_some() {
            self.workflows.insert(k, w.clone());
        }
        Ok(w)
    }

    async fn template(
        &mut self,
        store: &dyn Store,
        tenant: &str,
        id: &str,
    ) -> Result<Option<Arc<CompiledTemplate>>, ProcessError> {
        let k = (tenant.to_string(), id.to_string());
        if let Some((at, t)) = self.templates.get(&k) {
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
        self.templates.insert(k, (Instant::now(), t.clone()));
        Ok(t)
    }
}

#[async_trait]
impl Processor for Router {
    fn name(&self) -> &'static str {
        ROUTER
    }

    async fn process(
        &mut self,
        store: &dyn Store,
        batch: &mut Batch,
        inputs: &[Input],
    ) -> Result<(), ProcessError> {
        for input in inputs {
            let e = &input.event;
            let tenant = e.tenant.as_str().to_string();
            match &e.payload {
                Payload::SubscriberUpserted(s) => {
                    batch.writes.put(
                        RowKey::new(Table::Subscribers, &tenant, &s.subscriber_id, Vec::new()),
                        Bytes::from(s.encode_to_vec()),
                    );
                    self.subscribers.insert(
                        (tenant, s.subscriber_id.clone()),
                        Some(Subscriber::from_event(s)),
                    );
                }
                Payload::Triggered(t) => {
                    let subscriber = self.subscriber(store, &tenant, &t.subscriber_id).await?;
                    let workflow = self
                        .workflow(store, &tenant, &t.workflow_id, t.workflow_version)
                        .await?;
                    let template = match workflow.as_ref().and_then(|w| w.steps.first()) {
                        Some(step) => self.template(store, &tenant, &step.template_id).await?,
                        None => None,
                    };
                    let defaults = &self.default_providers;
                    let default_provider = |c: Channel| {
                        defaults
                            .get(&c)
                            .cloned()
                            .unwrap_or_else(|| "sink".to_string())
                    };
                    let out = route(&RouteInput {
                        trigger: e,
                        subscriber: subscriber.as_ref(),
                        workflow: workflow.as_deref(),
                        template: template.as_deref(),
                        default_provider: &default_provider,
                        now_ms: batch.now_ms,
                    });
                    for ev in out {
                        let topic = match ev.payload {
                            Payload::DispatchRequested(_) => Topic::Dispatch,
                            _ => Topic::Notifications,
                        };
                        batch.emit(topic, ev);
                    }
                }
                // Other events on this topic are not the router's business.
                _ => {}
            }
        }
        Ok(())
    }
}
