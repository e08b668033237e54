//! The templates a workflow's sends use: each one's latest version with its
//! locale variants, and a preview rendered by the router's own renderer.
//!
//! The preview compiles the template as the router does
//! ([`clarion_domain::template::Template::compile`]: strict undefined
//! variables, the render fuel and recursion limits, the output limit) and
//! renders it with the router's variables ([`TemplateVars`]: `payload`,
//! `subscriber`, `tenant_id`, `notification_id`), so what the preview shows
//! is what a send would carry. The answer is an HTML fragment for the page's
//! script; without script the form's own submit shows the whole page with
//! it. Tenant text is always shown escaped, never as HTML.

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use clarion_domain::flow::Flow;
use clarion_domain::payload::SharedPayload;
use clarion_domain::router::TemplateVars;
use clarion_domain::subscriber::Subscriber;
use clarion_domain::template::Template;
use clarion_domain::tenant::Scope;
use clarion_gateway::auth::Caller;
use clarion_gateway::config_read::latest_template;
use clarion_gateway::error::ApiError;
use minijinja::context;
use serde::{Deserialize, Serialize};

use super::{flow, href, link};
use crate::page::{self, PageError};
use crate::session::{Session, Submitted};
use crate::Console;

/// The subscriber a preview renders for when the form names none.
const SAMPLE_SUBSCRIBER: &str = "preview-subscriber";
/// The notification id a preview renders with.
const PREVIEW_NOTIFICATION: &str = "preview";

/// A template a workflow uses, as its page lists it.
#[derive(Serialize)]
pub struct Used {
    pub id: String,
    /// Where the workflow names it (`steps[0]`, `steps[2].chain[1]`).
    pub fields: Vec<String>,
    /// `None`: the tenant has no such template (the sends fail).
    pub version: Option<u32>,
    pub channel: Option<String>,
    pub locales: Vec<String>,
    pub href: minijinja::Value,
}

/// The templates `f`'s sends name, in the order they first appear.
pub async fn used_by(c: &Console, caller: &Caller, f: &Flow) -> Result<Vec<Used>, PageError> {
    let mut out: Vec<Used> = Vec::new();
    for (field, send) in f.def.sends() {
        if let Some(u) = out.iter_mut().find(|u| u.id == send.template) {
            u.fields.push(field);
            continue;
        }
        let t = latest_template(&*c.gw.store, &caller.tenant, &send.template).await?;
        out.push(Used {
            id: send.template.clone(),
            fields: vec![field],
            version: t.as_ref().map(|t| t.version),
            channel: t.as_ref().map(|t| t.channel.to_string()),
            locales: t
                .map(|t| t.variants.into_keys().collect())
                .unwrap_or_default(),
            href: link(format!("{}/templates/{}", href(&f.def.id), send.template)),
        });
    }
    Ok(out)
}

/// The workflow and its template, when the workflow's sends name it.
async fn template_of(
    c: &Console,
    caller: &Caller,
    id: &str,
    template_id: &str,
) -> Result<(Flow, Template), PageError> {
    let f = flow(c, caller, id, 0).await?;
    let missing = || {
        PageError::NotFound(format!(
            "workflow {id:?} uses no template {template_id:?} in this tenant"
        ))
    };
    if !f.def.sends().iter().any(|(_, s)| s.template == template_id) {
        return Err(missing());
    }
    let t = latest_template(&*c.gw.store, &caller.tenant, template_id)
        .await?
        .ok_or_else(missing)?;
    Ok((f, t))
}

#[derive(Serialize)]
struct VariantView {
    locale: String,
    subject: String,
    body: String,
}

/// The preview form's fields.
#[derive(Deserialize, Serialize, Default)]
pub(super) struct PreviewForm {
    #[serde(default)]
    locale: String,
    #[serde(default)]
    payload: String,
    #[serde(default)]
    subscriber: String,
}

/// `?fragment=1`: answer the preview alone (the page's script asks so).
#[derive(Deserialize)]
pub(super) struct PreviewQuery {
    fragment: Option<String>,
}

/// A preview's outcome, as `workflows/preview.html` shows it.
#[derive(Serialize, Default)]
struct Preview {
    locale: String,
    subject: String,
    body: String,
    /// The field at fault (`payload`, `subscriber`, `template`) and why.
    error_field: String,
    error: String,
}

impl Preview {
    fn failed(field: &str, message: impl Into<String>) -> Preview {
        Preview {
            error_field: field.to_string(),
            error: message.into(),
            ..Preview::default()
        }
    }
}

pub(super) async fn page(
    State(c): State<Console>,
    session: Session,
    Path((id, template_id)): Path<(String, String)>,
) -> Result<Response, PageError> {
    let caller = session.caller_with(Scope::Read)?;
    let (f, t) = template_of(&c, &caller, &id, &template_id).await?;
    let form = PreviewForm {
        payload: "{}".into(),
        ..PreviewForm::default()
    };
    render_page(&c, &session, &f, &t, &form, None)
}

fn render_page(
    c: &Console,
    session: &Session,
    f: &Flow,
    t: &Template,
    form: &PreviewForm,
    preview: Option<&Preview>,
) -> Result<Response, PageError> {
    let variants: Vec<VariantView> = t
        .variants
        .iter()
        .map(|(l, v)| VariantView {
            locale: l.clone(),
            subject: v.subject.clone(),
            body: v.body.clone(),
        })
        .collect();
    page::render(
        c,
        session,
        "workflows/template.html",
        context! {
            workflow => f.def.id,
            workflow_href => link(href(&f.def.id)),
            template => context! {
                id => t.template_id,
                version => t.version,
                channel => t.channel.to_string(),
            },
            variants,
            form,
            preview,
            preview_url => link(format!("{}/templates/{}/preview", href(&f.def.id), t.template_id)),
        },
    )
}

pub(super) async fn preview(
    State(c): State<Console>,
    Path((id, template_id)): Path<(String, String)>,
    Query(q): Query<PreviewQuery>,
    Submitted { session, form }: Submitted<PreviewForm>,
) -> Result<Response, PageError> {
    let caller = session.caller_with(Scope::Read)?;
    let (f, t) = template_of(&c, &caller, &id, &template_id).await?;
    let result = render_preview(&c, &caller, &t, &form).await?;
    let status = if result.error.is_empty() {
        StatusCode::OK
    } else {
        StatusCode::BAD_REQUEST
    };
    let body = if q.fragment.is_some() {
        page::render_plain("workflows/preview.html", context! { preview => result })?
            .into_response()
    } else {
        render_page(&c, &session, &f, &t, &form, Some(&result))?
    };
    Ok((status, body).into_response())
}

/// Renders `t` for the form's locale, payload and subscriber.
async fn render_preview(
    c: &Console,
    caller: &Caller,
    t: &Template,
    form: &PreviewForm,
) -> Result<Preview, PageError> {
    let payload = match parse_payload(&form.payload, c.gw.limits.max_payload_bytes) {
        Ok(p) => p,
        Err(message) => return Ok(Preview::failed("payload", message)),
    };
    let subscriber = match form.subscriber.trim() {
        "" => Subscriber {
            subscriber_id: SAMPLE_SUBSCRIBER.into(),
            locale: form.locale.clone(),
            ..Subscriber::default()
        },
        id => match clarion_gateway::subscriber::get(&c.gw, caller, id).await {
            Ok(s) => subscriber_of(s),
            Err(ApiError::NotFound(_)) => {
                return Ok(Preview::failed(
                    "subscriber",
                    format!("no subscriber {id:?} in this tenant"),
                ))
            }
            Err(ApiError::Invalid(v)) => {
                let why = v.0.first().map(|f| f.description.clone());
                return Ok(Preview::failed("subscriber", why.unwrap_or_default()));
            }
            Err(e) => return Err(e.into()),
        },
    };
    // The form's locale, else the subscriber's (what the router uses).
    let locale = match form.locale.trim() {
        "" => subscriber.locale.clone(),
        l => l.to_string(),
    };
    let vars = TemplateVars {
        tenant: caller.tenant.as_str(),
        notification_id: PREVIEW_NOTIFICATION,
        payload: &payload,
        subscriber: &subscriber,
        digest: None,
    };
    Ok(match t.compile().render(&locale, &vars) {
        Ok(r) => Preview {
            locale: r.locale,
            subject: r.subject,
            body: r.body,
            ..Preview::default()
        },
        Err(e) => Preview::failed("template", format!("{} ({})", e.message, e.locale)),
    })
}

/// The sample payload: a JSON object within the trigger's size limit.
fn parse_payload(text: &str, max_bytes: usize) -> Result<SharedPayload, String> {
    let text = if text.trim().is_empty() { "{}" } else { text };
    if text.len() > max_bytes {
        return Err(format!("is larger than {max_bytes} bytes"));
    }
    match serde_json::from_str::<serde_json::Value>(text) {
        Ok(v @ serde_json::Value::Object(_)) => Ok(SharedPayload::new(v)),
        Ok(_) => Err("must be a JSON object, e.g. {\"name\": \"Ana\"}".into()),
        Err(e) => Err(format!("is not valid JSON: {e}")),
    }
}

fn subscriber_of(s: clarion_proto::api::Subscriber) -> Subscriber {
    Subscriber {
        attributes: serde_json::from_str(&s.attributes_json).unwrap_or_default(),
        subscriber_id: s.subscriber_id,
        email: s.email,
        phone: s.phone,
        locale: s.locale,
        timezone: s.timezone,
        webhook_url: s.webhook_url,
        country: s.country,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payloads_must_be_json_objects_within_the_limit() {
        assert!(parse_payload("", 10).is_ok());
        assert!(parse_payload("{\"a\": 1}", 100).is_ok());
        assert!(parse_payload("[1]", 100)
            .unwrap_err()
            .contains("JSON object"));
        let e = parse_payload("{\"a\": ", 100).unwrap_err();
        assert!(e.starts_with("is not valid JSON"), "{e}");
        assert!(parse_payload("{\"a\": 12345}", 5)
            .unwrap_err()
            .contains("larger than 5 bytes"));
    }
}
