//! `clarion subscriber erase`, `clarion holds place|list|extend|release`
//! and `clarion retention set|show`: compliance over gRPC
//! (`SubscriberService.Erase`, `ComplianceService`; docs/compliance.md).

use anyhow::Context;
use clap::Subcommand;
use clarion_proto::api;
use tonic::transport::Channel;

use crate::client::{connect, explain, from_cli, print_json, ClientArgs};

type Compliance = api::compliance_service_client::ComplianceServiceClient<Channel>;

/// RFC 3339 (or empty: 0) as ms since the epoch; `flag` names it in errors.
fn ms_of(flag: &str, text: &str) -> anyhow::Result<i64> {
    if text.is_empty() {
        return Ok(0);
    }
    chrono::DateTime::parse_from_rfc3339(text)
        .map(|t| t.timestamp_millis())
        .with_context(|| format!("{flag}: {text:?} is not an RFC 3339 time (2026-12-31T00:00:00Z)"))
}

/// Erases a subscriber; prints the receipt (JSON).
pub async fn erase(c: &ClientArgs, subscriber: String, reason: String) -> anyhow::Result<()> {
    let mut client =
        api::subscriber_service_client::SubscriberServiceClient::new(connect(c).await?);
    let req = api::EraseSubscriberRequest {
        subscriber_id: subscriber,
        reason,
    };
    let r = client
        .erase(from_cli(c.key()?, req)?)
        .await
        .map_err(explain)?
        .into_inner();
    print_json(&serde_json::json!({
        "subscriber_id": r.subscriber_id, "request_id": r.request_id,
        "erased_at_ms": r.erased_at_ms, "key_generations_destroyed": r.key_generations_destroyed,
        "notifications": r.notifications, "inbox_items": r.inbox_items, "devices": r.devices,
        "preference_history": r.preference_history, "projections_touched": r.projections_touched,
        "actor": r.actor, "reason": r.reason,
    }))
}

#[derive(Subcommand)]
pub enum HoldsCmd {
    /// Place a hold (no scope flag: the whole tenant).
    Place {
        /// Why (required).
        #[arg(long)]
        reason: String,
        #[arg(long, default_value = "")]
        subscriber: String,
        #[arg(long, default_value = "")]
        workflow: String,
        /// Data from this time (RFC 3339).
        #[arg(long, default_value = "")]
        from: String,
        /// Data before this time (RFC 3339).
        #[arg(long, default_value = "")]
        until: String,
        /// When the hold lapses (RFC 3339; default: until released).
        #[arg(long, default_value = "")]
        expires: String,
    },
    /// The holds not yet released.
    List,
    /// A new expiry (RFC 3339; absent: until released).
    Extend {
        id: String,
        #[arg(long)]
        reason: String,
        #[arg(long, default_value = "")]
        expires: String,
    },
    /// Release: retention proceeds and deferred erasures run.
    Release {
        id: String,
        #[arg(long)]
        reason: String,
    },
}

fn hold_json(h: &api::LegalHold) -> serde_json::Value {
    let s = h.scope.clone().unwrap_or_default();
    serde_json::json!({
        "hold_id": h.hold_id, "state": h.state, "reason": h.reason, "actor": h.actor,
        "placed_at_ms": h.placed_at_ms, "expires_at_ms": h.expires_at_ms,
        "scope": {"subscriber_id": s.subscriber_id, "workflow_id": s.workflow_id,
            "from_ms": s.from_ms, "until_ms": s.until_ms},
    })
}

pub async fn holds(c: ClientArgs, cmd: HoldsCmd) -> anyhow::Result<()> {
    let mut client = Compliance::new(connect(&c).await?);
    let key = c.key()?;
    let hold = match cmd {
        HoldsCmd::Place {
            reason,
            subscriber,
            workflow,
            from,
            until,
            expires,
        } => {
            let req = api::PlaceHoldRequest {
                scope: Some(api::HoldScope {
                    subscriber_id: subscriber,
                    workflow_id: workflow,
                    from_ms: ms_of("--from", &from)?,
                    until_ms: ms_of("--until", &until)?,
                }),
                reason,
                expires_at_ms: ms_of("--expires", &expires)?,
            };
            client.place_hold(from_cli(key, req)?).await
        }
        HoldsCmd::List => {
            let req = from_cli(key, api::ListHoldsRequest {})?;
            let list = client.list_holds(req).await.map_err(explain)?.into_inner();
            let all: Vec<_> = list.holds.iter().map(hold_json).collect();
            return print_json(&all);
        }
        HoldsCmd::Extend {
            id,
            reason,
            expires,
        } => {
            let req = api::ExtendHoldRequest {
                hold_id: id,
                reason,
                expires_at_ms: ms_of("--expires", &expires)?,
            };
            client.extend_hold(from_cli(key, req)?).await
        }
        HoldsCmd::Release { id, reason } => {
            let req = api::ReleaseHoldRequest {
                hold_id: id,
                reason,
            };
            client.release_hold(from_cli(key, req)?).await
        }
    };
    print_json(&hold_json(&hold.map_err(explain)?.into_inner()))
}

#[derive(Subcommand)]
pub enum RetentionCmd {
    /// Replace the policy: rules CHANNEL:COUNTRY:REDACT_DAYS[:SHRED_DAYS]
    /// ("*" for any), e.g. `email:*:30 sms:DE:7 *:*:365:730`.
    Set {
        #[arg(value_name = "RULE")]
        rules: Vec<String>,
    },
    /// The policy in force.
    Show,
}

/// A rule of `clarion retention set`.
fn rule_of(text: &str) -> anyhow::Result<api::RetentionRule> {
    let parts: Vec<&str> = text.split(':').collect();
    let days = |i: usize| -> anyhow::Result<u32> {
        parts.get(i).map_or(Ok(0), |d| {
            d.parse()
                .with_context(|| format!("rule {text:?}: {d:?} is not a number of days"))
        })
    };
    if !(3..=4).contains(&parts.len()) {
        anyhow::bail!("rule {text:?}: expected CHANNEL:COUNTRY:REDACT_DAYS[:SHRED_DAYS]");
    }
    Ok(api::RetentionRule {
        channel: parts[0].to_string(),
        country: parts[1].to_string(),
        redact_bodies_after_days: days(2)?,
        shred_subscriber_after_days: days(3)?,
    })
}

pub async fn retention(c: ClientArgs, cmd: RetentionCmd) -> anyhow::Result<()> {
    let mut client = Compliance::new(connect(&c).await?);
    let key = c.key()?;
    let p = match cmd {
        RetentionCmd::Set { rules } => {
            let rules = rules
                .iter()
                .map(|r| rule_of(r))
                .collect::<anyhow::Result<_>>()?;
            let req = api::RetentionPolicy { rules, version: 0 };
            client.set_retention_policy(from_cli(key, req)?).await
        }
        RetentionCmd::Show => {
            let req = api::GetRetentionPolicyRequest {};
            client.get_retention_policy(from_cli(key, req)?).await
        }
    };
    let p = p.map_err(explain)?.into_inner();
    print_json(&serde_json::json!({
        "version": p.version,
        "rules": p.rules.iter().map(|r| serde_json::json!({
            "channel": r.channel, "country": r.country,
            "redact_bodies_after_days": r.redact_bodies_after_days,
            "shred_subscriber_after_days": r.shred_subscriber_after_days,
        })).collect::<Vec<_>>(),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules_read_from_the_command_line() {
        let r = rule_of("sms:DE:7").unwrap();
        assert_eq!(
            (
                r.channel.as_str(),
                r.country.as_str(),
                r.redact_bodies_after_days
            ),
            ("sms", "DE", 7)
        );
        assert_eq!(
            rule_of("*:*:0:365").unwrap().shred_subscriber_after_days,
            365
        );
        assert!(rule_of("sms:DE").is_err());
        assert!(rule_of("sms:DE:x").is_err());
        assert!(ms_of("--from", "yesterday").is_err());
        assert_eq!(ms_of("--from", "1970-01-01T00:00:01Z").unwrap(), 1000);
    }
}
