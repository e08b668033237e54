//! `clarion providers ...` and `clarion slas ...`: a tenant's own provider
//! credentials and routes, and its SLAs, over gRPC (`ProviderService`,
//! `SlaService`; docs/providers.md, docs/slas.md).

use std::collections::HashMap;

use anyhow::Context;
use clap::Subcommand;
use clarion_proto::api;
use serde_json::json;
use tonic::transport::Channel;

use crate::client::{connect, explain, from_cli, print_json, ClientArgs};

type Providers = api::provider_service_client::ProviderServiceClient<Channel>;
type Slas = api::sla_service_client::SlaServiceClient<Channel>;

#[derive(Subcommand)]
pub enum ProvidersCmd {
    /// Set the tenant's credentials for a provider, e.g.
    /// `clarion providers set-credentials sendgrid api_key=SG.xxx from_email=a@b.c`.
    /// A value `@FILE` is read from the file (keeps secrets off the
    /// command line and shell history).
    SetCredentials {
        /// sendgrid, vonage or twilio.
        provider: String,
        /// FIELD=VALUE pairs.
        #[arg(required = true, value_name = "FIELD=VALUE")]
        fields: Vec<String>,
    },
    /// Which credential fields are set (never their values).
    Credentials { provider: String },
    /// Every provider with credentials of the tenant.
    List,
    /// Remove the tenant's credentials: the operator's provider applies.
    DeleteCredentials { provider: String },
    /// Set the tenant's route of a channel: `clarion providers set-route sms twilio vonage`.
    SetRoute {
        channel: String,
        #[arg(required = true)]
        providers: Vec<String>,
    },
    /// The tenant's route of a channel, with providers a breached SLA demoted.
    Route { channel: String },
    /// Remove the tenant's route: the operator's applies.
    DeleteRoute { channel: String },
}

fn parse_fields(pairs: &[String]) -> anyhow::Result<HashMap<String, String>> {
    let mut out = HashMap::new();
    for p in pairs {
        let (k, v) = p
            .split_once('=')
            .with_context(|| format!("{p:?}: expected FIELD=VALUE"))?;
        let v = match v.strip_prefix('@') {
            Some(file) => std::fs::read_to_string(file)
                .with_context(|| format!("{k}: reading {file}"))?
                .trim_end()
                .to_string(),
            None => v.to_string(),
        };
        out.insert(k.to_string(), v);
    }
    Ok(out)
}

fn creds_json(c: &api::ProviderCredentials) -> serde_json::Value {
    json!({"provider": c.provider, "fields_set": c.fields_set, "version": c.version,
        "master_key_id": c.master_key_id})
}

fn route_json(r: &api::ProviderRoute) -> serde_json::Value {
    json!({"channel": r.channel, "providers": r.providers, "demoted": r.demoted})
}

pub async fn providers(c: ClientArgs, cmd: ProvidersCmd) -> anyhow::Result<()> {
    let mut client = Providers::new(connect(&c).await?);
    let key = c.key()?;
    let out = match cmd {
        ProvidersCmd::SetCredentials { provider, fields } => {
            let req = api::SetProviderCredentialsRequest {
                provider,
                credentials: parse_fields(&fields)?,
            };
            let r = client.set_credentials(from_cli(key, req)?).await;
            creds_json(&r.map_err(explain)?.into_inner())
        }
        ProvidersCmd::Credentials { provider } => {
            let req = api::GetProviderCredentialsRequest { provider };
            let r = client.get_credentials(from_cli(key, req)?).await;
            creds_json(&r.map_err(explain)?.into_inner())
        }
        ProvidersCmd::List => {
            let req = api::ListProviderCredentialsRequest {};
            let r = client.list_credentials(from_cli(key, req)?).await;
            let all = r.map_err(explain)?.into_inner().providers;
            json!({"credentials": all.iter().map(creds_json).collect::<Vec<_>>()})
        }
        ProvidersCmd::DeleteCredentials { provider } => {
            let req = api::DeleteProviderCredentialsRequest { provider };
            let r = client.delete_credentials(from_cli(key, req)?).await;
            creds_json(&r.map_err(explain)?.into_inner())
        }
        ProvidersCmd::SetRoute { channel, providers } => {
            let req = api::ProviderRoute {
                channel,
                providers,
                demoted: Vec::new(),
            };
            let r = client.set_route(from_cli(key, req)?).await;
            route_json(&r.map_err(explain)?.into_inner())
        }
        ProvidersCmd::Route { channel } => {
            let req = api::GetProviderRouteRequest { channel };
            let r = client.get_route(from_cli(key, req)?).await;
            route_json(&r.map_err(explain)?.into_inner())
        }
        ProvidersCmd::DeleteRoute { channel } => {
            let req = api::DeleteProviderRouteRequest { channel };
            let r = client.delete_route(from_cli(key, req)?).await;
            route_json(&r.map_err(explain)?.into_inner())
        }
    };
    print_json(&out)
}

#[derive(Subcommand)]
pub enum SlasCmd {
    /// Create or replace an SLA: `clarion slas set critical-sms --channel sms
    /// --target 0.99 --threshold-ms 60000 --window-ms 3600000`.
    Set {
        id: String,
        #[arg(long)]
        channel: String,
        /// 0.99 for 99 %.
        #[arg(long)]
        target: f64,
        #[arg(long)]
        threshold_ms: u64,
        #[arg(long, default_value_t = 3_600_000)]
        window_ms: u64,
        /// delivered or sent.
        #[arg(long, default_value = "delivered")]
        milestone: String,
        #[arg(long, default_value = "")]
        workflow: String,
        #[arg(long, default_value = "")]
        topic: String,
        #[arg(long, default_value_t = 1)]
        min_samples: u32,
        #[arg(long, default_value = "")]
        name: String,
    },
    Get {
        id: String,
    },
    List,
    Delete {
        id: String,
    },
    /// The SLA's compliance now.
    Status {
        id: String,
    },
}

fn sla_json(s: &api::Sla) -> serde_json::Value {
    json!({"sla_id": s.sla_id, "name": s.name, "channel": s.channel,
        "workflow_id": s.workflow_id, "topic": s.topic, "target_ratio": s.target_ratio,
        "threshold_ms": s.threshold_ms, "window_ms": s.window_ms, "milestone": s.milestone,
        "min_samples": s.min_samples})
}

fn status_json(s: &api::SlaStatus) -> serde_json::Value {
    json!({"sla": s.sla.as_ref().map(sla_json), "compliance": s.compliance, "met": s.met,
        "missed": s.missed, "overdue": s.overdue, "pending": s.pending, "breached": s.breached,
        "predicted": s.predicted, "window_start_ms": s.window_start_ms,
        "demoted_provider": s.demoted_provider, "runbook": s.runbook,
        "missed_by_provider": s.missed_by_provider.iter()
            .map(|m| json!({"provider": m.provider, "missed": m.missed})).collect::<Vec<_>>()})
}

pub async fn slas(c: ClientArgs, cmd: SlasCmd) -> anyhow::Result<()> {
    let mut client = Slas::new(connect(&c).await?);
    let key = c.key()?;
    let out = match cmd {
        SlasCmd::Set {
            id,
            channel,
            target,
            threshold_ms,
            window_ms,
            milestone,
            workflow,
            topic,
            min_samples,
            name,
        } => {
            let req = api::Sla {
                sla_id: id,
                name,
                channel,
                workflow_id: workflow,
                topic,
                target_ratio: target,
                threshold_ms,
                window_ms,
                milestone,
                min_samples,
            };
            let r = client.set_sla(from_cli(key, req)?).await;
            sla_json(&r.map_err(explain)?.into_inner())
        }
        SlasCmd::Get { id } => {
            let r = client
                .get_sla(from_cli(key, api::GetSlaRequest { sla_id: id })?)
                .await;
            sla_json(&r.map_err(explain)?.into_inner())
        }
        SlasCmd::List => {
            let r = client
                .list_slas(from_cli(key, api::ListSlasRequest {})?)
                .await;
            let all = r.map_err(explain)?.into_inner().slas;
            json!({"slas": all.iter().map(sla_json).collect::<Vec<_>>()})
        }
        SlasCmd::Delete { id } => {
            let r = client
                .delete_sla(from_cli(key, api::DeleteSlaRequest { sla_id: id })?)
                .await;
            sla_json(&r.map_err(explain)?.into_inner())
        }
        SlasCmd::Status { id } => {
            let r = client
                .get_sla_status(from_cli(key, api::GetSlaRequest { sla_id: id })?)
                .await;
            status_json(&r.map_err(explain)?.into_inner())
        }
    };
    print_json(&out)
}
