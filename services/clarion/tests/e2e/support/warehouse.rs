//! The warehouse tests' helpers: workflows with a mix of outcomes, and
//! DuckDB (the PyPI package in `$CLARION_VENV`, installed by
//! scripts/test-deps.sh) reading the exporter's Parquet files.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use clarion_proto::api;
use tonic::transport::Channel;

use super::{authed, Notifications, Tenants};

/// The virtualenv's python, with duckdb importable.
pub fn duckdb_python() -> PathBuf {
    let venv = std::env::var_os("CLARION_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var_os("HOME").expect("HOME")).join(".cache/clarion-venv")
        });
    let python = venv.join("bin/python");
    let ok = std::process::Command::new(&python)
        .args(["-c", "import duckdb"])
        .status()
        .is_ok_and(|s| s.success());
    assert!(
        ok,
        "{} cannot import duckdb: run scripts/test-deps.sh (make test-deps)",
        python.display()
    );
    python
}

/// Reads the three tables with DuckDB (Hive partitioning: `tenant` and
/// `date` come from the directories) and prints what the tests compare.
const DUCKDB_SCRIPT: &str = r#"
import duckdb, json, sys
root = sys.argv[1]
con = duckdb.connect()
def rel(t):
    return f"read_parquet('{root}/{t}/**/*.parquet', hive_partitioning = true, hive_types = {{'tenant': VARCHAR, 'date': VARCHAR}})"
def q(sql):
    try:
        return [list(r) for r in con.execute(sql).fetchall()]
    except duckdb.IOException:
        return []  # no file yet
out = {
  "notifications": q(f"SELECT tenant, status, count(*) FROM {rel('notifications')} GROUP BY ALL ORDER BY ALL"),
  "messages": q(f"SELECT tenant, channel, outcome, count(*) FROM {rel('messages')} GROUP BY ALL ORDER BY ALL"),
  "engagement": q(f"SELECT tenant, kind, count(*) FROM {rel('engagement')} GROUP BY ALL ORDER BY ALL"),
  "notification_ids": q(f"SELECT tenant, notification_id, count(*) FROM {rel('notifications')} GROUP BY ALL ORDER BY ALL"),
  "message_dups": q(f"SELECT count(*) FROM (SELECT attempt_id, outcome FROM {rel('messages')} GROUP BY ALL HAVING count(*) > 1)"),
  "dates": q(f"SELECT DISTINCT date FROM {rel('notifications')} ORDER BY ALL"),
  "columns": {},
}
for t in ["notifications", "messages", "engagement"]:
    # The files' own columns (no partition columns), as DuckDB types them.
    out["columns"][t] = q(f"SELECT column_name, column_type FROM (DESCRIBE SELECT * FROM read_parquet('{root}/{t}/**/*.parquet', hive_partitioning = false))")
print(json.dumps(out, default=str))
"#;

/// What DuckDB read from the warehouse.
#[derive(Debug, Default, PartialEq)]
pub struct Read {
    /// (tenant, status) → rows
    pub notifications: BTreeMap<(String, String), u64>,
    /// (tenant, channel, outcome) → rows
    pub messages: BTreeMap<(String, String, String), u64>,
    /// (tenant, kind) → rows
    pub engagement: BTreeMap<(String, String), u64>,
    /// (tenant, notification id) → rows
    pub notification_ids: BTreeMap<(String, String), u64>,
    /// (attempt, outcome) pairs in more than one row
    pub message_dups: u64,
    pub dates: Vec<String>,
    /// table → (column, DuckDB type)
    pub columns: BTreeMap<String, Vec<(String, String)>>,
}

fn s(v: &serde_json::Value) -> String {
    v.as_str()
        .map(str::to_string)
        .unwrap_or_else(|| v.to_string())
}

fn n(v: &serde_json::Value) -> u64 {
    v.as_u64().expect("a count")
}

/// Runs DuckDB over the warehouse at `root`.
pub fn duckdb_read(root: &Path) -> Read {
    let out = std::process::Command::new(duckdb_python())
        .args(["-c", DUCKDB_SCRIPT])
        .arg(root)
        .output()
        .expect("running python");
    assert!(
        out.status.success(),
        "duckdb failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("duckdb's JSON");
    let rows = |k: &str| v[k].as_array().cloned().unwrap_or_default();
    let arr = |r: &serde_json::Value| r.as_array().cloned().unwrap();
    Read {
        notifications: rows("notifications")
            .iter()
            .map(|r| {
                let r = arr(r);
                ((s(&r[0]), s(&r[1])), n(&r[2]))
            })
            .collect(),
        messages: rows("messages")
            .iter()
            .map(|r| {
                let r = arr(r);
                ((s(&r[0]), s(&r[1]), s(&r[2])), n(&r[3]))
            })
            .collect(),
        engagement: rows("engagement")
            .iter()
            .map(|r| {
                let r = arr(r);
                ((s(&r[0]), s(&r[1])), n(&r[2]))
            })
            .collect(),
        notification_ids: rows("notification_ids")
            .iter()
            .map(|r| {
                let r = arr(r);
                ((s(&r[0]), s(&r[1])), n(&r[2]))
            })
            .collect(),
        message_dups: rows("message_dups").first().map_or(0, |r| n(&arr(r)[0])),
        dates: rows("dates").iter().map(|r| s(&arr(r)[0])).collect(),
        columns: v["columns"]
            .as_object()
            .unwrap()
            .iter()
            .map(|(t, cols)| {
                let cols = cols
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|c| {
                        let c = arr(c);
                        (s(&c[0]), s(&c[1]))
                    })
                    .collect();
                (t.clone(), cols)
            })
            .collect(),
    }
}

/// Polls DuckDB until `done` holds or `timeout` passes; returns the last read.
pub async fn wait_read(root: &Path, timeout: Duration, done: impl Fn(&Read) -> bool) -> Read {
    let deadline = Instant::now() + timeout;
    loop {
        let root = root.to_path_buf();
        let read = tokio::task::spawn_blocking(move || duckdb_read(&root))
            .await
            .unwrap();
        if done(&read) || Instant::now() > deadline {
            return read;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The columns `schemas/warehouse/<table>.md` documents, as DuckDB types.
pub fn documented_columns(table: &str) -> Vec<(String, String)> {
    let path = format!(
        "{}/../../schemas/warehouse/{table}.md",
        env!("CARGO_MANIFEST_DIR")
    );
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    text.lines()
        .filter(|l| l.starts_with("| `"))
        .map(|l| {
            let cells: Vec<&str> = l.split('|').map(str::trim).collect();
            let ty = match cells[2].trim_matches('`') {
                "string" => "VARCHAR",
                "int32" => "INTEGER",
                "int64" => "BIGINT",
                "bool" => "BOOLEAN",
                "timestamp_ms_utc" => "TIMESTAMP WITH TIME ZONE",
                other => panic!("{path}: unknown type {other}"),
            };
            (cells[1].trim_matches('`').to_string(), ty.to_string())
        })
        .collect()
}

/// A one-step workflow sending on `channel` through `provider`, with a
/// template of its own.
pub async fn one_step_workflow(ch: &Channel, key: &str, id: &str, channel: &str, provider: &str) {
    Tenants::new(ch.clone())
        .put_template(authed(
            key,
            api::Template {
                template_id: format!("{id}-tpl"),
                channel: channel.into(),
                variants: vec![api::TemplateVariant {
                    locale: "default".into(),
                    subject: "Hello".into(),
                    body: "Hello {{ subscriber.id }}".into(),
                }],
            },
        ))
        .await
        .expect("put template");
    Tenants::new(ch.clone())
        .put_workflow(authed(
            key,
            api::Workflow {
                workflow_id: id.into(),
                name: id.into(),
                steps: vec![api::WorkflowStep {
                    channel: channel.into(),
                    template_id: format!("{id}-tpl"),
                    provider: provider.into(),
                }],
            },
        ))
        .await
        .expect("put workflow");
}

/// Triggers `workflow` for a recipient with an email and a phone.
pub async fn trigger(ch: &Channel, key: &str, workflow: &str, subscriber: &str) -> String {
    Notifications::new(ch.clone())
        .trigger(authed(
            key,
            api::TriggerRequest {
                workflow_id: workflow.into(),
                recipients: vec![api::Recipient {
                    subscriber_id: subscriber.into(),
                    email: format!("{subscriber}@example.test"),
                    phone: "+15550100".into(),
                    ..Default::default()
                }],
                payload_json: "{}".into(),
                ..Default::default()
            },
        ))
        .await
        .expect("trigger")
        .into_inner()
        .notification_ids[0]
        .clone()
}

/// Records an engagement (opened, clicked, ...) with the latest sent attempt.
pub async fn engage(ch: &Channel, key: &str, notification_id: &str, kind: &str) {
    Notifications::new(ch.clone())
        .acknowledge(authed(
            key,
            api::AcknowledgeRequest {
                notification_id: notification_id.into(),
                kind: kind.into(),
                attempt_id: String::new(),
            },
        ))
        .await
        .expect("acknowledge");
}
