//! Email over SMTP (lettre).
//!
//! The Message-ID is derived from the attempt id, and the attempt id is also
//! sent as `X-Clarion-Idempotency-Key`: if a crash makes us send the same
//! attempt twice, the receiving side sees the same Message-ID and can drop the
//! copy (most mail stores do).

use async_trait::async_trait;
use clarion_proto::events::DispatchRequested;
use lettre::message::header::{ContentType, Header, HeaderName, HeaderValue};
use lettre::message::{Mailbox, MultiPart};
use lettre::transport::smtp::client::Tls;
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use serde::Deserialize;

use crate::provider::{Provider, SendError, SendOutcome};

pub const IDEMPOTENCY_HEADER: &str = "X-Clarion-Idempotency-Key";

#[derive(Clone, Debug, Deserialize, serde::Serialize, PartialEq)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct SmtpConfig {
    pub host: String,
    #[serde(default = "default_port")]
    pub port: u16,
    /// Envelope and header sender.
    pub from: String,
    /// Domain part of generated Message-IDs.
    #[serde(default = "default_domain")]
    pub message_id_domain: String,
    /// Require STARTTLS (off for local test servers).
    #[serde(default)]
    pub starttls: bool,
    /// Connections kept open to the server.
    #[serde(default = "default_pool")]
    pub pool_size: u32,
}

fn default_port() -> u16 {
    25
}
fn default_domain() -> String {
    "clarion.local".into()
}
fn default_pool() -> u32 {
    8
}

/// `X-Clarion-Idempotency-Key`.
#[derive(Clone, Debug)]
struct IdempotencyKey(String);

impl Header for IdempotencyKey {
    fn name() -> HeaderName {
        HeaderName::new_from_ascii_str(IDEMPOTENCY_HEADER)
    }

    fn parse(s: &str) -> Result<Self, Box<dyn std::error::Error + Send + Sync>> {
        Ok(IdempotencyKey(s.to_string()))
    }

    fn display(&self) -> HeaderValue {
        HeaderValue::new(Self::name(), self.0.clone())
    }
}

pub struct SmtpProvider {
    transport: AsyncSmtpTransport<Tokio1Executor>,
    from: Mailbox,
    domain: String,
    tracking: Option<Tracking>,
}

/// Open tracking: where the pixel is served, the key that signs it and how
/// long its links work.
#[derive(Clone)]
pub struct Tracking {
    pub base_url: String,
    pub secret: Vec<u8>,
    pub token_ttl: std::time::Duration,
}

/// The HTML alternative of a text body: escaped, line breaks kept, and every
/// http(s) link made clickable through `link` (the signed click redirect).
fn linkify(text: &str, link: impl Fn(&str) -> String) -> String {
    let mut out = String::with_capacity(text.len() * 2);
    let mut rest = text;
    while let Some(start) = ["https://", "http://"]
        .iter()
        .filter_map(|p| rest.find(p))
        .min()
    {
        out.push_str(&html_escape(&rest[..start]));
        let tail = &rest[start..];
        let mut end = tail
            .find(|c: char| c.is_whitespace() || matches!(c, '<' | '>' | '"' | '\''))
            .unwrap_or(tail.len());
        // Sentence punctuation after a link is not part of it.
        while end > 0 && tail[..end].ends_with(['.', ',', ';', ':', '!', '?', ')']) {
            end -= 1;
        }
        let url = &tail[..end];
        out.push_str(&format!(
            "<a href=\"{}\">{}</a>",
            html_escape(&link(url)),
            html_escape(url)
        ));
        rest = &tail[end..];
    }
    out.push_str(&html_escape(rest));
    out.replace('\n', "<br>")
}

fn html_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

impl SmtpProvider {
    pub fn new(cfg: &SmtpConfig, tracking: Option<Tracking>) -> Result<SmtpProvider, String> {
        let from: Mailbox = cfg
            .from
            .parse()
            .map_err(|e| format!("providers.smtp.from {:?}: {e}", cfg.from))?;
        let mut b = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(&cfg.host)
            .port(cfg.port)
            .pool_config(lettre::transport::smtp::PoolConfig::new().max_size(cfg.pool_size));
        if cfg.starttls {
            let tls = lettre::transport::smtp::client::TlsParameters::new(cfg.host.clone())
                .map_err(|e| format!("providers.smtp TLS: {e}"))?;
            b = b.tls(Tls::Required(tls));
        }
        Ok(SmtpProvider {
            transport: b.build(),
            from,
            domain: cfg.message_id_domain.clone(),
            tracking,
        })
    }

    /// The Message-ID of an attempt: the same for every send of that attempt.
    pub fn message_id(&self, attempt_id: &str) -> String {
        format!("<{attempt_id}@{}>", self.domain)
    }
}

#[async_trait]
impl Provider for SmtpProvider {
    fn name(&self) -> &'static str {
        "smtp"
    }

    async fn send(&self, tenant: &str, msg: &DispatchRequested) -> Result<SendOutcome, SendError> {
        let to: Mailbox = msg
            .to
            .parse()
            .map_err(|e| SendError::terminal(format!("recipient {:?}: {e}", msg.to)))?;
        let message_id = self.message_id(&msg.attempt_id);
        let builder = Message::builder()
            .from(self.from.clone())
            .to(to)
            .subject(msg.subject.clone())
            .message_id(Some(message_id.clone()))
            .header(IdempotencyKey(msg.attempt_id.clone()));
        let email = match &self.tracking {
            // With tracking, an HTML alternative carries the open pixel.
            Some(t) => {
                let now_s = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_secs() as i64)
                    .unwrap_or(0);
                let expires_at_s = now_s.saturating_add(t.token_ttl.as_secs() as i64).max(1);
                // Only links found in the rendered body get a (signed) click
                // token: the redirect can lead nowhere else.
                let tracked = |url: &str| clarion_domain::tracking::TrackingRef {
                    tenant: tenant.to_string(),
                    subscriber_id: msg.subscriber_id.clone(),
                    notification_id: msg.notification_id.clone(),
                    attempt_id: msg.attempt_id.clone(),
                    url: url.to_string(),
                    expires_at_s,
                };
                let pixel = tracked("").open_url(&t.base_url, &t.secret);
                let body = linkify(&msg.body, |url| tracked(url).click_url(&t.base_url, &t.secret));
                let html = format!(
                    "<!doctype html><html><body><p>{body}</p><img src=\"{}\" width=\"1\" height=\"1\" alt=\"\"></body></html>",
                    html_escape(&pixel)
                );
                builder.multipart(MultiPart::alternative_plain_html(msg.body.clone(), html))
            }
            None => builder.header(ContentType::TEXT_PLAIN).body(msg.body.clone()),
        }
        .map_err(|e| SendError::terminal(format!("building the message: {e}")))?;
        match self.transport.send(email).await {
            Ok(_) => Ok(SendOutcome {
                provider_message_id: message_id,
                delivered: false,
            }),
            // 5xx: the server refused this message for good.
            Err(e) if e.is_permanent() => Err(SendError::terminal(format!(
                "smtp: {}",
                crate::ssrf::excerpt(&e.to_string(), crate::webhook::ANSWER_EXCERPT_BYTES)
            ))),
            Err(e) => Err(SendError::retryable(format!(
                "smtp: {}",
                crate::ssrf::excerpt(&e.to_string(), crate::webhook::ANSWER_EXCERPT_BYTES)
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn links_become_tracked_anchors_and_text_is_escaped() {
        let html = linkify(
            "See https://example.test/job/7?a=1&b=2. Or <http://x.test>\nBye & thanks",
            |u| format!("https://t.test/c/{}", u.len()),
        );
        assert_eq!(
            html,
            "See <a href=\"https://t.test/c/34\">https://example.test/job/7?a=1&amp;b=2</a>. Or &lt;<a href=\"https://t.test/c/13\">http://x.test</a>&gt;<br>Bye &amp; thanks"
        );
    }
}
