//! What a send was, as the outcomes of its request carry it
//! ([`pb::SendContext`]): the dispatcher copies it from each
//! `DispatchRequested` into the `NotificationSent`, `-Delivered` and
//! `-Failed` it reports, so the roles that count outcomes (analytics) need
//! not join them with the request — a row written per request and read
//! back per outcome, through the store's one writer.

use clarion_proto::events as pb;

/// Whether a request is the operator's own send, not a tenant's message:
/// a dead-letter alert names no workflow and no subscriber.
pub fn is_operators(d: &pb::DispatchRequested) -> bool {
    d.workflow_id.is_empty() && d.subscriber_id.is_empty()
}

/// The context of the outcomes of `d`, requested at `requested_at_ms` (the
/// request event's time).
pub fn context(d: &pb::DispatchRequested, requested_at_ms: i64) -> pb::SendContext {
    pb::SendContext {
        channel: d.channel.clone(),
        provider: d.provider.clone(),
        workflow_id: d.workflow_id.clone(),
        template_id: d.template_id.clone(),
        requested_at_ms,
        operator: is_operators(d),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_context_is_what_the_request_named() {
        let d = pb::DispatchRequested {
            channel: "email".into(),
            provider: "smtp".into(),
            workflow_id: "welcome".into(),
            template_id: "hello".into(),
            subscriber_id: "ana".into(),
            to: "ana@example.com".into(),
            ..Default::default()
        };
        let c = context(&d, 1_000);
        assert_eq!(
            (
                c.channel.as_str(),
                c.provider.as_str(),
                c.workflow_id.as_str()
            ),
            ("email", "smtp", "welcome")
        );
        assert_eq!(
            (c.template_id.as_str(), c.requested_at_ms),
            ("hello", 1_000)
        );
        assert!(!c.operator);
        // A verification has a subscriber and no workflow: a tenant's.
        let verify = pb::DispatchRequested {
            workflow_id: String::new(),
            ..d.clone()
        };
        assert!(!context(&verify, 1).operator);
        // A dead-letter alert has neither: the operator's.
        let alert = pb::DispatchRequested {
            subscriber_id: String::new(),
            ..verify
        };
        assert!(context(&alert, 1).operator);
    }
}
