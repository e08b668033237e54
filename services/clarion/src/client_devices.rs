//! `clarion apps put|get|list` and `clarion devices
//! register|list|rotate|revoke`: a tenant's apps and its subscribers'
//! devices over gRPC (`DeviceService`; docs/push.md). A device token is
//! read from the command line or, with `-`, from standard input (so it
//! stays out of shell history and process lists); it is never printed.

use std::collections::HashMap;
use std::io::Read;

use anyhow::Context;
use clap::Subcommand;
use clarion_proto::api;
use tonic::transport::Channel;

use crate::client::{connect, explain, from_cli, ms_text, print_json, ClientArgs};

type Devices = api::device_service_client::DeviceServiceClient<Channel>;

#[derive(Subcommand)]
pub enum AppsCmd {
    /// Create or replace an app (a changed definition is a new version).
    Put {
        app_id: String,
        #[arg(long, default_value = "")]
        name: String,
        /// ios, android, web (repeat or comma-separate).
        #[arg(long = "platform", value_delimiter = ',', required = true)]
        platforms: Vec<String>,
        /// The iOS bundle id (the APNs topic); required on ios.
        #[arg(long, default_value = "")]
        ios_bundle_id: String,
        /// sandbox or production (default).
        #[arg(long, default_value = "")]
        apns_environment: String,
        /// A deep-link pattern, TYPE=PATTERN, e.g.
        /// job_card=fieldapp://jobs/{id} (repeat for each type).
        #[arg(long = "link", value_name = "TYPE=PATTERN")]
        links: Vec<String>,
    },
    /// One app (as JSON).
    Get { app_id: String },
    /// The tenant's apps.
    List,
}

#[derive(Subcommand)]
pub enum DevicesCmd {
    /// Register a subscriber's device (the same token again is the same device).
    Register {
        subscriber: String,
        #[arg(long)]
        app: String,
        /// ios, android or web.
        #[arg(long)]
        platform: String,
        /// The APNs or FCM token; `-` reads it from standard input.
        #[arg(long)]
        token: String,
        /// apns or fcm (default: apns on ios, fcm otherwise).
        #[arg(long, default_value = "")]
        provider: String,
        #[arg(long, default_value = "")]
        locale: String,
        #[arg(long, default_value = "")]
        timezone: String,
        #[arg(long, default_value = "")]
        app_version: String,
    },
    /// A subscriber's devices (active ones unless --all).
    List {
        subscriber: String,
        /// Also revoked and expired devices.
        #[arg(long)]
        all: bool,
    },
    /// Replace a device's token; the device keeps its id.
    Rotate {
        subscriber: String,
        device_id: String,
        /// The new token; `-` reads it from standard input.
        #[arg(long)]
        token: String,
    },
    /// Revoke a device (recorded as revoked by an operator).
    Revoke {
        subscriber: String,
        device_id: String,
    },
}

/// A token argument: itself, or standard input for `-`.
fn token_arg(arg: String) -> anyhow::Result<String> {
    if arg != "-" {
        return Ok(arg);
    }
    let mut t = String::new();
    std::io::stdin()
        .read_to_string(&mut t)
        .context("reading the token from standard input")?;
    Ok(t.trim().to_string())
}

fn links(args: &[String]) -> anyhow::Result<HashMap<String, String>> {
    args.iter()
        .map(|a| {
            a.split_once('=')
                .map(|(t, p)| (t.to_string(), p.to_string()))
                .ok_or_else(|| {
                    anyhow::anyhow!(
                        "{a:?}: expected TYPE=PATTERN, e.g. job_card=fieldapp://jobs/{{id}}"
                    )
                })
        })
        .collect()
}

fn app_json(a: &api::App) -> serde_json::Value {
    serde_json::json!({
        "app_id": a.app_id,
        "name": a.name,
        "platforms": a.platforms,
        "ios_bundle_id": a.ios_bundle_id,
        "apns_environment": a.apns_environment,
        "deep_links": a.deep_links.iter().collect::<std::collections::BTreeMap<_, _>>(),
        "version": a.version,
    })
}

fn print_device(d: &api::Device) {
    let revoked = if d.status == "revoked" {
        format!("\t{} by {}", d.revoked_reason, d.revoked_detail)
    } else {
        String::new()
    };
    println!(
        "{}\t{}\t{}/{}\t{}\ttoken …{}\tseen {}{}",
        d.device_id,
        d.app_id,
        d.platform,
        d.provider,
        d.status,
        d.token_fingerprint,
        ms_text(d.last_seen_at_ms),
        revoked
    );
}

pub async fn apps(c: ClientArgs, cmd: AppsCmd) -> anyhow::Result<()> {
    let mut client = Devices::new(connect(&c).await?);
    let key = c.key()?;
    match cmd {
        AppsCmd::Put {
            app_id,
            name,
            platforms,
            ios_bundle_id,
            apns_environment,
            links: link_args,
        } => {
            let app = api::App {
                app_id,
                name,
                platforms,
                ios_bundle_id,
                apns_environment,
                deep_links: links(&link_args)?,
                version: 0,
            };
            let a = client
                .configure_app(from_cli(key, app)?)
                .await
                .map_err(explain)?
                .into_inner();
            print_json(&app_json(&a))?;
        }
        AppsCmd::Get { app_id } => {
            let a = client
                .get_app(from_cli(key, api::GetAppRequest { app_id })?)
                .await
                .map_err(explain)?
                .into_inner();
            print_json(&app_json(&a))?;
        }
        AppsCmd::List => {
            let r = client
                .list_apps(from_cli(key, api::ListAppsRequest {})?)
                .await
                .map_err(explain)?
                .into_inner();
            for a in &r.apps {
                println!(
                    "{}\tv{}\t{}\t{}",
                    a.app_id,
                    a.version,
                    a.platforms.join(","),
                    a.name
                );
            }
        }
    }
    Ok(())
}

pub async fn devices(c: ClientArgs, cmd: DevicesCmd) -> anyhow::Result<()> {
    let mut client = Devices::new(connect(&c).await?);
    let key = c.key()?;
    let device = match cmd {
        DevicesCmd::Register {
            subscriber,
            app,
            platform,
            token,
            provider,
            locale,
            timezone,
            app_version,
        } => {
            let r = api::RegisterDeviceRequest {
                subscriber_id: subscriber,
                app_id: app,
                platform,
                token: token_arg(token)?,
                provider,
                locale,
                timezone,
                app_version,
            };
            client.register_device(from_cli(key, r)?).await
        }
        DevicesCmd::List { subscriber, all } => {
            let r = api::ListDevicesRequest {
                subscriber_id: subscriber,
                include_inactive: all,
            };
            let listed = client
                .list_devices(from_cli(key, r)?)
                .await
                .map_err(explain)?
                .into_inner();
            listed.devices.iter().for_each(print_device);
            return Ok(());
        }
        DevicesCmd::Rotate {
            subscriber,
            device_id,
            token,
        } => {
            let r = api::RotateDeviceRequest {
                subscriber_id: subscriber,
                device_id,
                new_token: token_arg(token)?,
            };
            client.rotate_device(from_cli(key, r)?).await
        }
        DevicesCmd::Revoke {
            subscriber,
            device_id,
        } => {
            let r = api::RevokeDeviceRequest {
                subscriber_id: subscriber,
                device_id,
            };
            client.revoke_device(from_cli(key, r)?).await
        }
    };
    print_device(&device.map_err(explain)?.into_inner());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn links_are_type_equals_pattern() {
        let l = links(&["job_card=fieldapp://jobs/{id}".into()]).unwrap();
        assert_eq!(l["job_card"], "fieldapp://jobs/{id}");
        assert!(links(&["job_card".into()]).is_err());
    }
}
