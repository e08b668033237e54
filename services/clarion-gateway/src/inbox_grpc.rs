//! `InboxService` over gRPC: proto messages to and from the operations of
//! [`crate::inbox`], which REST shares. A subscriber token reaches its own
//! feed only.

use std::pin::Pin;

use clarion_proto::api;
use clarion_proto::events as pb;
use futures::Stream;
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::StreamExt;
use tonic::{Request, Response, Status};

use crate::error::ApiError;
use crate::inbox::{self as ops, ListRequest, MarkRequest, Update, GRPC_FIELDS};
use crate::pagination::PageParams;
use crate::preference_input::who;
use crate::preferences::Interface;
use crate::state::GatewayState;

pub struct InboxApi(pub GatewayState);

pub fn item(r: pb::InboxItemRecord) -> api::InboxItem {
    api::InboxItem {
        item_id: r.item_id,
        notification_id: r.notification_id,
        title: r.title,
        body: r.body,
        link: r.link,
        category: r.category,
        workflow_id: r.workflow_id,
        locale: r.locale,
        data_json: r.data_json,
        created_at_ms: r.created_at_ms,
        seen_at_ms: r.seen_at_ms,
        read_at_ms: r.read_at_ms,
        archived_at_ms: r.archived_at_ms,
    }
}

pub fn counts(c: &pb::InboxCountsRecord) -> api::InboxCounts {
    api::InboxCounts {
        unread: c.unread,
        unseen: c.unseen,
        total: c.total,
        version: c.version,
    }
}

impl InboxApi {
    async fn list(
        &self,
        req: Request<api::ListInboxItemsRequest>,
    ) -> Result<api::ListInboxItemsResponse, ApiError> {
        let who = who(&self.0, req.metadata(), Interface::Grpc).await?;
        let r = req.into_inner();
        let list = ListRequest {
            status: r.status,
            archived: r.archived,
            category: r.category,
            paging: PageParams {
                limit: (r.page_size != 0).then_some(r.page_size),
                cursor: (!r.page_token.is_empty()).then_some(r.page_token),
            },
        };
        let page = ops::list(&self.0, &who, GRPC_FIELDS, &r.subscriber_id, &list).await?;
        Ok(api::ListInboxItemsResponse {
            items: page.items.into_iter().map(item).collect(),
            next_page_token: page.next_cursor.unwrap_or_default(),
            counts: Some(counts(&page.counts)),
        })
    }

    async fn counts(
        &self,
        req: Request<api::GetInboxCountsRequest>,
    ) -> Result<api::InboxCounts, ApiError> {
        let who = who(&self.0, req.metadata(), Interface::Grpc).await?;
        let id = req.into_inner().subscriber_id;
        let c = ops::counts(&self.0, &who, GRPC_FIELDS.subscriber, &id).await?;
        Ok(counts(&c))
    }

    async fn mark(
        &self,
        req: Request<api::MarkInboxItemsRequest>,
    ) -> Result<api::InboxCounts, ApiError> {
        let who = who(&self.0, req.metadata(), Interface::Grpc).await?;
        let r = req.into_inner();
        let m = MarkRequest {
            item_ids: r.item_ids,
            all: r.all,
            category: r.category,
            mark: r.mark,
        };
        let c = ops::mark(&self.0, &who, GRPC_FIELDS.subscriber, &r.subscriber_id, &m).await?;
        Ok(counts(&c))
    }

    async fn watch(&self, req: Request<api::WatchInboxRequest>) -> Result<WatchStream, ApiError> {
        let who = who(&self.0, req.metadata(), Interface::Grpc).await?;
        let r = req.into_inner();
        // 0: a fresh client (proto3 cannot tell 0 from absent): the
        // current counts first.
        let after = (r.after_version != 0).then_some(r.after_version);
        let rx = ops::watch(
            &self.0,
            &who,
            GRPC_FIELDS.subscriber,
            &r.subscriber_id,
            after,
        )
        .await?;
        let updates = ReceiverStream::new(rx).map(update).map(Ok);
        Ok(Box::pin(updates))
    }
}

fn update(u: Update) -> api::InboxUpdate {
    match u {
        Update::Item(i) => api::InboxUpdate {
            item: Some(item(*i)),
            counts: None,
        },
        Update::Counts(c) => api::InboxUpdate {
            item: None,
            counts: Some(counts(&c)),
        },
    }
}

pub type WatchStream = Pin<Box<dyn Stream<Item = Result<api::InboxUpdate, Status>> + Send>>;

#[tonic::async_trait]
impl api::inbox_service_server::InboxService for InboxApi {
    async fn list_items(
        &self,
        r: Request<api::ListInboxItemsRequest>,
    ) -> Result<Response<api::ListInboxItemsResponse>, Status> {
        Ok(Response::new(self.list(r).await?))
    }

    async fn get_counts(
        &self,
        r: Request<api::GetInboxCountsRequest>,
    ) -> Result<Response<api::InboxCounts>, Status> {
        Ok(Response::new(self.counts(r).await?))
    }

    async fn mark_items(
        &self,
        r: Request<api::MarkInboxItemsRequest>,
    ) -> Result<Response<api::InboxCounts>, Status> {
        Ok(Response::new(self.mark(r).await?))
    }

    type WatchStream = WatchStream;

    async fn watch(
        &self,
        r: Request<api::WatchInboxRequest>,
    ) -> Result<Response<WatchStream>, Status> {
        Ok(Response::new(InboxApi::watch(self, r).await?))
    }
}
