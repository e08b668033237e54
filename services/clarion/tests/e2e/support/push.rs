//! Local APNs and FCM servers for end-to-end tests (the servers are the
//! `clarion-push-servers` crate, shared with the dispatcher's tests and the
//! benchmark), and the `providers.push` configuration that points a node at
//! them: in-process (`configure`) or as TOML for `clarion serve` (`toml`).

use std::path::Path;
use std::time::Duration;

use clarion::Config;
use clarion_dispatch::apns::Environment;
use clarion_dispatch::push::{ApnsAppConfig, FcmAppConfig, PushAppConfig, PushConfig};
pub use clarion_push_servers::apns::{self, ApnsServer, ProviderKey};
pub use clarion_push_servers::fcm::{self, FcmServer};

/// The bundle id the configuration gives (an app's `ios_bundle_id` wins).
pub const DEFAULT_TOPIC: &str = "com.example.default";

/// One APNs and one FCM server, and the key Apple would hold.
pub struct PushServers {
    pub apns: ApnsServer,
    pub fcm: FcmServer,
    pub key: ProviderKey,
}

impl PushServers {
    pub async fn start() -> PushServers {
        let key = ProviderKey::generate();
        PushServers {
            apns: ApnsServer::start(key.public.clone()).await,
            fcm: FcmServer::start(3600).await,
            key,
        }
    }

    /// `[[providers.push.apps]]` for `tenant`'s `app`: APNs (sandbox by
    /// default) and FCM, both at the local servers.
    pub fn app(&self, tenant: &str, app: &str) -> PushAppConfig {
        PushAppConfig {
            tenant: tenant.into(),
            app: app.into(),
            apns: Some(ApnsAppConfig {
                team_id: apns::TEAM_ID.into(),
                key_id: apns::KEY_ID.into(),
                key_pem: self.key.pem.clone(),
                topic: DEFAULT_TOPIC.into(),
                environment: Environment::Sandbox,
                base_url: Some(self.apns.base_url.clone()),
                ca_pem: Some(self.apns.ca_pem.clone()),
                timeout_ms: 10_000,
            }),
            fcm: Some(FcmAppConfig {
                service_account_json: self.fcm.service_account_json(),
                project_id: None,
                base_url: Some(self.fcm.base_url.clone()),
                token_url: None,
                timeout_ms: 10_000,
            }),
        }
    }

    /// Adds the apps (tenant, app) to an in-process node's configuration.
    pub fn configure(&self, cfg: &mut Config, apps: &[(&str, &str)]) {
        let push = cfg.providers.push.get_or_insert_with(PushConfig::default);
        push.apps
            .extend(apps.iter().map(|(tenant, app)| self.app(tenant, app)));
    }

    /// The same as TOML for `clarion serve`, with the keys and the
    /// certificate written as files into `dir` (`key-file`,
    /// `service-account-file`, `ca-file`), as an operator would.
    pub fn toml(&self, dir: &Path, apps: &[(&str, &str)]) -> String {
        let write = |name: &str, text: &str| {
            let path = dir.join(name);
            std::fs::write(&path, text).unwrap();
            path
        };
        let key = write("apns-key.p8", &self.key.pem);
        let ca = write("apns-ca.pem", &self.apns.ca_pem);
        let account = write("fcm-service-account.json", &self.fcm.service_account_json());
        let mut out = String::new();
        for (tenant, app) in apps {
            out.push_str(&format!(
                "[[providers.push.apps]]\ntenant = {tenant:?}\napp = {app:?}\n\
                 [providers.push.apps.apns]\nteam-id = {:?}\nkey-id = {:?}\nkey-file = {key:?}\n\
                 topic = {DEFAULT_TOPIC:?}\nenvironment = \"sandbox\"\nbase-url = {:?}\n\
                 ca-file = {ca:?}\n\
                 [providers.push.apps.fcm]\nservice-account-file = {account:?}\nbase-url = {:?}\n\n",
                apns::TEAM_ID,
                apns::KEY_ID,
                self.apns.base_url,
                self.fcm.base_url,
            ));
        }
        out
    }

    /// Waits for `n` pushes at APNs and `m` messages at FCM.
    pub async fn wait_for(
        &self,
        apns: usize,
        fcm: usize,
        timeout: Duration,
    ) -> (Vec<apns::Seen>, Vec<fcm::Sent>) {
        (
            self.apns.wait_for(apns, timeout).await,
            self.fcm.wait_for(fcm, timeout).await,
        )
    }
}
