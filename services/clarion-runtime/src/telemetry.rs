//! OpenTelemetry traces of notifications (issue #30): one trace per
//! notification, from the API call through the router and the dispatcher
//! to the provider. Off unless `telemetry.otlp-endpoint` is set; the binary
//! installs the exporting tracer ([`install`]) and everything here is a
//! no-op until then, so the spine pays one branch per batch.
//!
//! The context travels in the events themselves, with no new envelope
//! field: a notification's trace id is its id (both are 16 bytes; every
//! event of the notification carries it as its correlation id), and the
//! span that produced an event has an id derived from the event's id. A
//! component that turns event A into event B records B's span with parent
//! A's span: the parent is named by B's causation id. Ids that follow from
//! the events make a re-run after a crash report the same spans, and any
//! process (every role can run on its own) can continue a trace from the
//! log alone.

use std::borrow::Cow;
use std::sync::OnceLock;
use std::time::SystemTime;

use clarion_domain::{Event, Id};
use opentelemetry::global::BoxedTracer;
use opentelemetry::trace::{
    Link, Span as _, SpanBuilder, SpanContext, SpanId, SpanKind, TraceContextExt, TraceFlags,
    TraceId, TraceState, Tracer as _,
};
use opentelemetry::{Context, KeyValue};
use sha2::{Digest, Sha256};

static TRACER: OnceLock<BoxedTracer> = OnceLock::new();

/// Turns tracing on for the process (once; later calls are ignored).
pub fn install(tracer: BoxedTracer) {
    let _ = TRACER.set(tracer);
}

/// Whether spans are recorded: checked before any work is done for them.
pub fn enabled() -> bool {
    TRACER.get().is_some()
}

/// The trace of the notification `e` belongs to (`None` for events of no
/// notification: configuration, subscribers).
pub fn trace_id(e: &Event) -> Option<TraceId> {
    e.correlation_id.map(|c| TraceId::from_bytes(c.0))
}

/// The id of the span that produced the event with id `event_id`: the
/// first 8 bytes of its SHA-256 (event ids lead with time, so their own
/// bytes would repeat between events of one millisecond).
pub fn span_id(event_id: &Id) -> SpanId {
    let digest = Sha256::digest(event_id.0);
    let mut b = [0u8; 8];
    b.copy_from_slice(&digest[..8]);
    if b == [0; 8] {
        b[7] = 1; // the invalid span id
    }
    SpanId::from_bytes(b)
}

/// The context of the span that produced the event `event_id` of `trace`,
/// as a remote parent.
pub fn parent_context(trace: TraceId, event_id: &Id) -> Context {
    Context::new().with_remote_span_context(SpanContext::new(
        trace,
        span_id(event_id),
        TraceFlags::SAMPLED,
        true,
        TraceState::default(),
    ))
}

/// The caller's span from a W3C `traceparent` header, if valid: the root
/// span of each notification a request starts links to it (the
/// notification's own trace is keyed by its id, see the module's comment).
pub fn caller(traceparent: Option<&str>) -> Option<SpanContext> {
    use opentelemetry::propagation::TextMapPropagator;
    let carrier =
        std::collections::HashMap::from([("traceparent".to_string(), traceparent?.to_string())]);
    let cx = opentelemetry_sdk::propagation::TraceContextPropagator::new().extract(&carrier);
    let sc = cx.span().span_context().clone();
    sc.is_valid().then_some(sc)
}

/// The root spans of an API call that accepts notifications: begun when
/// the call arrives, reported once its events are in the log.
pub struct Roots {
    started: SystemTime,
    caller: Option<SpanContext>,
}

impl Roots {
    /// `None` when tracing is off; `traceparent` is the caller's W3C header.
    pub fn begin(traceparent: Option<&str>) -> Option<Roots> {
        enabled().then(|| Roots {
            started: SystemTime::now(),
            caller: caller(traceparent),
        })
    }

    /// Reports a root span, by `component`, for each notification `events`
    /// start.
    pub fn end(self, component: &'static str, events: &[Event]) {
        let root = || Parent::Root {
            caller: self.caller.clone(),
        };
        end_all(
            events
                .iter()
                .filter_map(|e| Pending::of(component, e, root(), self.started))
                .collect(),
        );
    }
}

/// Makes `span` (a `tracing` span) a child of the span that produced `e`,
/// so the `tracing` spans and events inside it join the notification's
/// trace (through the `tracing-opentelemetry` layer the binary adds when
/// tracing is on).
pub fn join(span: &tracing::Span, e: &Event) {
    use tracing_opentelemetry::OpenTelemetrySpanExt;
    if let Some(trace) = trace_id(e) {
        span.set_parent(parent_context(trace, &e.id));
    }
}

/// Where a span hangs.
#[derive(Clone, Debug)]
pub enum Parent {
    /// Under the span of the event's cause (its causation id).
    Cause,
    /// The root of the notification's trace (the API call that accepted
    /// it), linked to the caller's span if the request carried one.
    Root { caller: Option<SpanContext> },
}

/// A span to report once its work is done (the batch committed).
#[derive(Debug)]
pub struct Pending {
    name: Cow<'static, str>,
    trace: TraceId,
    span: SpanId,
    parent: Option<Id>,
    caller: Option<SpanContext>,
    started: SystemTime,
    attributes: Vec<KeyValue>,
}

impl Pending {
    /// The span of `component` producing `e`, begun at `started`; `None`
    /// when tracing is off or the event belongs to no notification.
    pub fn of(
        component: &'static str,
        e: &Event,
        parent: Parent,
        started: SystemTime,
    ) -> Option<Pending> {
        if !enabled() {
            return None;
        }
        let trace = trace_id(e)?;
        let (parent, caller) = match parent {
            Parent::Cause => (e.causation_id, None),
            Parent::Root { caller } => (None, caller),
        };
        let event_type = e.payload.event_type();
        Some(Pending {
            name: Cow::Owned(format!("{component} {}", short_type(event_type))),
            trace,
            span: span_id(&e.id),
            parent,
            caller,
            started,
            attributes: vec![
                KeyValue::new("clarion.component", component),
                KeyValue::new("clarion.tenant", e.tenant.as_str().to_string()),
                KeyValue::new("clarion.event_type", event_type),
                KeyValue::new("clarion.notification_id", Id(trace.to_bytes()).to_hex()),
            ],
        })
    }

    /// Adds an attribute (e.g. the provider that answered).
    pub fn with(mut self, kv: KeyValue) -> Pending {
        self.attributes.push(kv);
        self
    }

    /// Reports the span, ended at `ended`.
    pub fn end(self, ended: SystemTime) {
        let Some(tracer) = TRACER.get() else {
            return;
        };
        let mut builder = SpanBuilder::from_name(self.name)
            .with_kind(SpanKind::Internal)
            .with_span_id(self.span)
            .with_start_time(self.started)
            .with_attributes(self.attributes);
        let cx = match self.parent {
            Some(cause) => parent_context(self.trace, &cause),
            None => {
                builder = builder
                    .with_trace_id(self.trace)
                    .with_kind(SpanKind::Server);
                if let Some(caller) = self.caller {
                    builder = builder.with_links(vec![Link::with_context(caller)]);
                }
                Context::new()
            }
        };
        let mut span = tracer.build_with_context(builder, &cx);
        span.end_with_timestamp(ended.max(self.started));
    }
}

/// Reports the spans of a batch's outputs, ended now.
pub fn end_all(spans: Vec<Pending>) {
    if spans.is_empty() {
        return;
    }
    let now = SystemTime::now();
    for s in spans {
        s.end(now);
    }
}

/// `clarion.notification.sent.v1` → `notification.sent`.
fn short_type(t: &str) -> &str {
    let t = t.strip_prefix("clarion.").unwrap_or(t);
    t.rsplit_once(".v").map(|(head, _)| head).unwrap_or(t)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn span_ids_follow_from_event_ids() {
        let a = Id::time_ordered(1_700_000_000_000, &[b"a"]);
        let b = Id::time_ordered(1_700_000_000_000, &[b"b"]);
        assert_eq!(span_id(&a), span_id(&a));
        assert_ne!(span_id(&a), span_id(&b));
        assert_ne!(span_id(&a), SpanId::INVALID);
    }

    #[test]
    fn short_names_drop_the_namespace_and_version() {
        assert_eq!(
            short_type("clarion.notification.sent.v1"),
            "notification.sent"
        );
        assert_eq!(short_type("other"), "other");
    }

    #[test]
    fn a_callers_traceparent_is_read_and_a_bad_one_ignored() {
        let sc = caller(Some(
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        ))
        .expect("a valid traceparent");
        assert_eq!(
            sc.trace_id(),
            TraceId::from_hex("4bf92f3577b34da6a3ce929d0e0e4736").unwrap()
        );
        assert_eq!(sc.span_id(), SpanId::from_hex("00f067aa0ba902b7").unwrap());
        assert!(caller(Some("00-zz-00f067aa0ba902b7-01")).is_none());
        assert!(caller(None).is_none());
    }

    #[test]
    fn nothing_is_recorded_while_tracing_is_off() {
        // No tracer is installed in unit tests.
        assert!(!enabled());
    }
}
