//! First start of `clarion serve`: an operator admin token and a demo tenant
//! with a ready-to-use template and workflow, so a new user can trigger a
//! notification with nothing but the printed key.

use clarion_domain::tenant::sha256_hex;
use clarion_domain::Actor;
use clarion_gateway::GatewayState;
use clarion_proto::api;
use clarion_store::{RowKey, Table, SYSTEM_TENANT};

pub const DEMO_TENANT: &str = "demo";

/// What the first start created; printed once, never stored in plaintext.
pub struct Credentials {
    pub admin_token: String,
    pub demo_api_key: String,
}

fn admin_key() -> RowKey {
    RowKey::new(
        Table::Settings,
        SYSTEM_TENANT,
        "admin-token-sha256",
        Vec::new(),
    )
}

/// The stored admin token hash, if a first start happened.
pub async fn admin_token_hash(state: &GatewayState) -> anyhow::Result<Option<String>> {
    Ok(state
        .store
        .get(&admin_key())
        .await?
        .map(|b| String::from_utf8_lossy(&b).into_owned()))
}

/// Creates the admin token and demo tenant unless done before.
pub async fn first_start(state: &GatewayState) -> anyhow::Result<Option<Credentials>> {
    let admin_token = format!("adm_{}", hex_random());
    let claimed = state
        .store
        .insert_if_absent(
            &admin_key(),
            sha256_hex(admin_token.as_bytes()).into(),
            None,
        )
        .await?;
    if claimed.is_some() {
        return Ok(None);
    }
    let actor = Actor::Operator("bootstrap".into());
    let demo_api_key =
        clarion_gateway::tenant::create_tenant(state, DEMO_TENANT, "Demo tenant", &actor).await?;
    demo_content(state, &demo_api_key).await?;
    Ok(Some(Credentials {
        admin_token,
        demo_api_key,
    }))
}

fn hex_random() -> String {
    let b: [u8; 24] = rand::random();
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// A `welcome` email template (English, French, Canadian French) and workflow.
async fn demo_content(state: &GatewayState, key: &str) -> anyhow::Result<()> {
    use api::tenant_service_server::TenantService;
    let api = clarion_gateway::tenant::TenantApi(state.clone());
    fn with_key<T>(key: &str, msg: T) -> tonic::Request<T> {
        let mut r = tonic::Request::new(msg);
        r.metadata_mut().insert(
            "authorization",
            format!("Bearer {key}").parse().expect("ascii key"),
        );
        r
    }
    let v = |locale: &str, subject: &str, body: &str| api::TemplateVariant {
        locale: locale.into(),
        subject: subject.into(),
        body: body.into(),
    };
    api.put_template(with_key(
        key,
        api::Template {
            template_id: "welcome".into(),
            channel: "email".into(),
            variants: vec![
                v(
                    "default",
                    "Welcome, {{ payload.name }}",
                    "Hello {{ payload.name }}, welcome aboard.",
                ),
                v(
                    "fr",
                    "Bienvenue, {{ payload.name }}",
                    "Bonjour {{ payload.name }}, bienvenue à bord.",
                ),
                v(
                    "fr-CA",
                    "Bienvenue, {{ payload.name }}",
                    "Allô {{ payload.name }}, bienvenue à bord!",
                ),
            ],
        },
    ))
    .await
    .map_err(|s| anyhow::anyhow!("demo template: {}", s.message()))?;
    api.put_workflow(with_key(
        key,
        api::Workflow {
            workflow_id: "welcome".into(),
            name: "Welcome email".into(),
            steps: vec![api::WorkflowStep {
                channel: "email".into(),
                template_id: "welcome".into(),
                provider: String::new(),
            }],
        },
    ))
    .await
    .map_err(|s| anyhow::anyhow!("demo workflow: {}", s.message()))?;
    Ok(())
}
