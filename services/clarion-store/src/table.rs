//! The logical tables. Each is a SQLite table in the embedded backend and a CQL
//! table of the same name in `schemas/cql/clarion.cql`; both have the columns
//! `tenant, pk, ck, value`.

use std::fmt;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Table {
    /// Next input offset of each processor partition (pk `processor/topic/partition`).
    ProcessorOffsets,
    /// Event ids a processor has applied (pk processor name, ck event id), with TTL.
    Dedup,
    /// Effects committed but not yet performed (pk processor partition, ck sequence).
    Outbox,
    /// Due times of scheduled inputs (pk processor partition, ck due time + id).
    Timers,
    /// Tenant records (pk tenant id) and limit versions (pk `limits/`, ck big-endian version).
    Tenants,
    /// API keys by secret hash (pk sha256 of the secret).
    ApiKeys,
    /// Template versions (pk template id, ck big-endian version).
    Templates,
    /// Workflow versions (pk workflow id, ck big-endian version).
    Workflows,
    /// Subscriber records (pk subscriber id).
    Subscribers,
    /// Notification history (pk notification id, ck event id); the
    /// notification's Triggered event is its head.
    NotificationEvents,
    /// Deliveries recorded by the sink provider (pk notification id, ck input position).
    SinkDeliveries,
    /// Operator settings: admin token hash, demo tenant (system tenant).
    Settings,
    /// Workflow run state, owned by the router (pk notification id).
    Runs,
    /// Dead-lettered notifications (pk "dlq", ck notification id).
    DeadLetters,
    /// Latest workflow versions by trigger event and by id (pk "event/<name>" or "all", ck workflow id).
    WorkflowIndex,
    /// Trigger idempotency keys with the request hash and original response (pk key), with TTL.
    Idempotency,
    /// Content hashes of recent triggers for the dedup window (pk hash), owned by the router, with TTL.
    ContentDedup,
    /// Records that stopped a processor partition (system tenant; pk
    /// "stopped", ck the partition) and those an operator parked (pk
    /// "parked", ck the partition then the offset): see
    /// `clarion_runtime::quarantine`.
    Quarantine,
    /// Subscribers' preference settings and contact verification state
    /// (pk subscriber id), owned by the router.
    Preferences,
    /// Every preference and contact change of a subscriber, the event as
    /// logged (pk subscriber id, ck big-endian time then event id), owned by
    /// the router.
    PreferenceHistory,
    /// Topics (pk "topics", ck topic id: the latest version), from the
    /// projector. Its SQL name is `preference_topics`.
    Topics,
    /// Each subscriber's notifications (pk subscriber id, ck notification
    /// id: ids lead with their creation time, so newest last), written by
    /// the router when it accepts a trigger.
    SubscriberNotifications,
    /// Tenants' apps (pk "apps", ck app id: the latest version), from the
    /// projector.
    Apps,
    /// Each subscriber's devices (pk subscriber id, ck device id), owned by
    /// the router. Tokens only sealed.
    Devices,
    /// Which device holds a token (pk hex of the token's keyed hash), owned
    /// by the router: finds the device a token was registered to before.
    DeviceTokens,
    /// Each subscriber's inbox feed (pk subscriber id, ck big-endian
    /// creation time then item id), from the projector.
    InboxItems,
    /// Each subscriber's inbox counts with their version (pk subscriber
    /// id), from the projector.
    InboxCounts,
    /// Recurring reminders, one row per schedule and subscriber (pk
    /// "schedules", ck schedule id, 0x00, subscriber id; value a
    /// `ScheduleRecord`), owned by the router.
    Schedules,
    /// Subscribers' quiet-hour overrides (pk subscriber id; value the
    /// `QuietHoursSet` event as logged), owned by the router. The tenant's
    /// default is in `tenants` (pk `quiet_hours/`).
    QuietHours,
    /// Open digests (pk subscriber id, ck workflow id, 0x00, digest key,
    /// 0x00, then 0x00 for the header or 0x01 and a big-endian item
    /// number), owned by the router.
    Digests,
    /// The console's notification search (issue #29): one row per
    /// notification in its tenant's day (pk `d/<yyyymmdd>` of the UTC day
    /// its id was made, ck notification id: newest last), value its
    /// workflow, subscriber and run status, written by the router when it
    /// accepts a trigger and when the run's status changes.
    NotificationIndex,
    /// The warehouse exporter's state (issue #30): per input partition, the
    /// files committed and the log offsets they cover (the manifest), and
    /// the open file's progress. Owned by the exporter.
    Warehouse,
    /// Delivery analytics (issue #30): counters and latency histograms per
    /// tenant, dimension and time bucket. Owned by the analytics processor.
    Analytics,
    /// Anomaly alerting (issue #30): each series' baseline, open anomalies
    /// and the alert sinks' deduplication and cool-down marks. Owned by the
    /// alerts processor.
    Alerts,
    /// Personal-data keys (issue #32): each subscriber's data keys (pk
    /// `s/<subscriber>`, ck big-endian generation) and the tenant's body
    /// keys (pk `bodies`, ck `<yyyymmdd>/<channel>/<country>`), wrapped by
    /// the master keyring; an empty value is a destroyed key. See
    /// `clarion_runtime::personal`.
    DataKeys,
    /// The audit chain (issue #32): per tenant, pk `<topic>/<partition>`,
    /// ck the big-endian first offset of a notary batch, value the batch's
    /// links (offset, hash) and any signed checkpoint; the notary's
    /// position and heads under the system tenant (pk
    /// `notary/<topic>/<partition>`). Owned by the notary.
    Chain,
    /// Compliance (issue #32): each tenant's retention policy, legal holds
    /// in force and deferred erasures (pk `policy`, `holds`, `deferred`),
    /// owned by the retention processor; its shredding cursor.
    Compliance,
}

impl Table {
    pub const ALL: [Table; 37] = [
        Table::ProcessorOffsets,
        Table::Dedup,
        Table::Outbox,
        Table::Timers,
        Table::Tenants,
        Table::ApiKeys,
        Table::Templates,
        Table::Workflows,
        Table::Subscribers,
        Table::NotificationEvents,
        Table::SinkDeliveries,
        Table::Settings,
        Table::Runs,
        Table::DeadLetters,
        Table::WorkflowIndex,
        Table::Idempotency,
        Table::ContentDedup,
        Table::Quarantine,
        Table::Preferences,
        Table::PreferenceHistory,
        Table::Topics,
        Table::SubscriberNotifications,
        Table::Apps,
        Table::Devices,
        Table::DeviceTokens,
        Table::InboxItems,
        Table::InboxCounts,
        Table::Schedules,
        Table::QuietHours,
        Table::Digests,
        Table::NotificationIndex,
        Table::Warehouse,
        Table::Analytics,
        Table::Alerts,
        Table::DataKeys,
        Table::Chain,
        Table::Compliance,
    ];

    pub fn name(&self) -> &'static str {
        match self {
            Table::ProcessorOffsets => "processor_offsets",
            Table::Dedup => "dedup",
            Table::Outbox => "outbox",
            Table::Timers => "timers",
            Table::Tenants => "tenants",
            Table::ApiKeys => "api_keys",
            Table::Templates => "templates",
            Table::Workflows => "workflows",
            Table::Subscribers => "subscribers",
            Table::NotificationEvents => "notification_events",
            Table::SinkDeliveries => "sink_deliveries",
            Table::Settings => "settings",
            Table::Runs => "runs",
            Table::DeadLetters => "dead_letters",
            Table::WorkflowIndex => "workflow_index",
            Table::Idempotency => "idempotency",
            Table::ContentDedup => "content_dedup",
            Table::Quarantine => "quarantine",
            Table::Preferences => "preferences",
            Table::PreferenceHistory => "preference_history",
            // Not `topics`: the embedded log has a table of that name, and
            // on the default both share one SQLite file.
            Table::Topics => "preference_topics",
            Table::SubscriberNotifications => "subscriber_notifications",
            Table::Apps => "apps",
            Table::Devices => "devices",
            Table::DeviceTokens => "device_tokens",
            Table::InboxItems => "inbox_items",
            Table::InboxCounts => "inbox_counts",
            Table::Schedules => "schedules",
            Table::QuietHours => "quiet_hours",
            Table::Digests => "digests",
            Table::NotificationIndex => "notification_index",
            Table::Warehouse => "warehouse",
            Table::Analytics => "analytics",
            Table::Alerts => "alerts",
            Table::DataKeys => "data_keys",
            Table::Chain => "audit_chain",
            Table::Compliance => "compliance",
        }
    }
}

impl fmt::Display for Table {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}
