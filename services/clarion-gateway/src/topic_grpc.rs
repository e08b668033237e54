//! `TopicService` over gRPC: proto topics to and from the operations of
//! [`crate::preferences`].

use clarion_domain::preferences::topic::{Topic, TopicInput};
use clarion_proto::api;
use tonic::{Request, Response, Status};

use crate::error::ApiError;
use crate::preference_input::who;
use crate::preferences::{self as ops, Interface};
use crate::state::GatewayState;

pub struct TopicApi(pub GatewayState);

pub fn to_api(t: &Topic) -> api::Topic {
    api::Topic {
        topic_id: t.id.clone(),
        name: t.name.clone(),
        description: t.description.clone(),
        channels: t.channels.iter().map(|c| String::from(*c)).collect(),
        default_opt_in: t.default_opt_in,
        required: t.required,
        marketing: t.marketing,
        version: t.version,
    }
}

fn input(t: api::Topic) -> TopicInput {
    TopicInput {
        id: t.topic_id,
        name: t.name,
        description: t.description,
        channels: t.channels,
        default_opt_in: t.default_opt_in,
        required: t.required,
        marketing: t.marketing,
    }
}

impl TopicApi {
    async fn register(&self, req: Request<api::Topic>) -> Result<api::Topic, ApiError> {
        let who = who(&self.0, req.metadata(), Interface::Grpc).await?;
        let t = ops::register_topic(&self.0, &who, &input(req.into_inner())).await?;
        Ok(to_api(&t))
    }

    async fn get(&self, req: Request<api::GetTopicRequest>) -> Result<api::Topic, ApiError> {
        let who = who(&self.0, req.metadata(), Interface::Grpc).await?;
        let t = ops::get_topic(&self.0, &who, &req.into_inner().topic_id).await?;
        Ok(to_api(&t))
    }

    async fn list(
        &self,
        req: Request<api::ListTopicsRequest>,
    ) -> Result<api::ListTopicsResponse, ApiError> {
        let who = who(&self.0, req.metadata(), Interface::Grpc).await?;
        let topics = ops::topics_by_id(&self.0, &who.tenant).await?;
        Ok(api::ListTopicsResponse {
            topics: topics.values().map(to_api).collect(),
        })
    }
}

#[tonic::async_trait]
impl api::topic_service_server::TopicService for TopicApi {
    async fn register(&self, r: Request<api::Topic>) -> Result<Response<api::Topic>, Status> {
        Ok(Response::new(TopicApi::register(self, r).await?))
    }

    async fn get(&self, r: Request<api::GetTopicRequest>) -> Result<Response<api::Topic>, Status> {
        Ok(Response::new(TopicApi::get(self, r).await?))
    }

    async fn list(
        &self,
        r: Request<api::ListTopicsRequest>,
    ) -> Result<Response<api::ListTopicsResponse>, Status> {
        Ok(Response::new(TopicApi::list(self, r).await?))
    }
}
