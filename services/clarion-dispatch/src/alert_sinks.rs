//! Where anomaly alerts go (issue #30, `[alerts]` configuration): a signed
//! webhook, a Slack-shaped incoming webhook, email.
//!
//! The URLs are the operator's, yet they pass the SSRF guard like a
//! tenant's (`outbound.allow` lets an internal receiver through): an alert
//! carries tenant data, and a typo must not reach the metadata endpoint.
//! The webhook is signed as every Clarion webhook is ([`crate::webhook`]:
//! `Clarion-Signature`, HMAC-SHA256 over `<t>.<body>`) with
//! `alerts.signing-secret`, and carries the alert id as
//! `Clarion-Idempotency-Key`: a send repeated after a crash or a failure
//! is the same alert, which the receiver drops. Email goes through the SMTP
//! provider the dispatcher uses.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use clarion_proto::events as pb;
use clarion_runtime::alerts::{Alert, AlertSink};
use clarion_runtime::Clock;
use serde_json::{json, Value};

use crate::provider::Provider;
use crate::smtp::{SmtpConfig, SmtpProvider};
use crate::ssrf::{Guard, GuardedResolver, OutboundConfig};
use crate::webhook::{sign, IDEMPOTENCY_HEADER, SIGNATURE_HEADER};

const TIMEOUT: Duration = Duration::from_secs(10);

/// An HTTP client through the SSRF guard, following no redirect.
fn client(guard: Arc<Guard>) -> Result<reqwest::Client, String> {
    reqwest::Client::builder()
        .timeout(TIMEOUT)
        .connect_timeout(Duration::from_secs(3))
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .dns_resolver(Arc::new(GuardedResolver::new(guard)))
        .build()
        .map_err(|e| format!("alert sink client: {e}"))
}

/// A signal's value for people: rates in percent, latency in ms.
fn value(signal: &str, v: f64) -> String {
    match signal {
        "delivery_rate" | "failure_rate" => format!("{:.1} %", v * 100.0),
        "latency" => format!("{v:.0} ms"),
        _ => format!("{v:.0}/min"),
    }
}

/// The signal of an SLA breach (issue #31, docs/slas.md): observed is the
/// window's compliance, baseline the target.
pub const SLA_BREACH: &str = "sla_breach";

/// One line saying what happened, for chat and mail subjects.
pub fn headline(a: &Alert) -> String {
    let x = &a.anomaly;
    if x.signal == SLA_BREACH {
        return format!(
            "tenant {}: SLA {} breached ({:.2} % against a target of {:.2} %); moved past provider {}",
            a.tenant,
            x.series.trim_start_matches("sla:"),
            x.observed * 100.0,
            x.baseline * 100.0,
            if x.provider.is_empty() { "(none)" } else { &x.provider },
        );
    }
    let what = match x.signal.as_str() {
        "delivery_rate" => "delivery rate dropped",
        "failure_rate" => "failure rate spiked",
        "latency" => "latency rose",
        _ if x.z_score < 0.0 => "volume dropped",
        _ => "volume spiked",
    };
    let scope = match x.provider.as_str() {
        "" => "all providers".to_string(),
        p => format!("provider {p}"),
    };
    format!("tenant {}: {what} ({scope})", a.tenant)
}

/// The details: observed against the baseline, when, and the runbook.
pub fn details(a: &Alert) -> String {
    let x = &a.anomaly;
    if x.signal == SLA_BREACH {
        return format!(
            "{} sends judged in the window, {:.2} % in time (target {:.2} %). Later sends of the \
             channel go to the next provider of the route until the SLA recovers. Runbook: {}",
            x.attempts,
            x.observed * 100.0,
            x.baseline * 100.0,
            a.runbook_url
        );
    }
    let at = chrono::DateTime::from_timestamp_millis(x.minute_start_ms)
        .map(|t| t.format("%Y-%m-%d %H:%M UTC").to_string())
        .unwrap_or_default();
    let mut out = format!(
        "{} in the minute from {at}: {} against a baseline of {} (z = {:.1}, {} attempts).",
        x.signal.replace('_', " "),
        value(&x.signal, x.observed),
        value(&x.signal, x.baseline),
        x.z_score,
        x.attempts,
    );
    for r in &a.related {
        let scope = match r.provider.as_str() {
            "" => "all providers".to_string(),
            p => format!("provider {p}"),
        };
        out.push_str(&format!(
            " Also {} of {scope}: {} against {}.",
            r.signal.replace('_', " "),
            value(&r.signal, r.observed),
            value(&r.signal, r.baseline),
        ));
    }
    out.push_str(&format!(" Runbook: {}", a.runbook_url));
    out
}

/// The webhook's JSON body.
pub fn webhook_body(a: &Alert) -> Value {
    let x: &pb::AnomalyDetected = &a.anomaly;
    let kind = if x.signal == SLA_BREACH {
        "clarion.alert.sla_breach.v1"
    } else {
        "clarion.alert.anomaly.v1"
    };
    json!({
        "type": kind,
        "alert_id": x.alert_id,
        "tenant": a.tenant,
        "series": x.series,
        "provider": x.provider,
        "signal": x.signal,
        "minute_start_ms": x.minute_start_ms,
        "observed": x.observed,
        "baseline": x.baseline,
        "deviation": x.deviation,
        "z_score": x.z_score,
        "attempts": x.attempts,
        "summary": headline(a),
        "runbook_url": a.runbook_url,
        // The same outage seen by other detectors, told with this alert.
        "related": a.related.iter().map(|r| json!({
            "alert_id": r.alert_id, "series": r.series, "provider": r.provider,
            "signal": r.signal, "observed": r.observed, "baseline": r.baseline,
            "z_score": r.z_score,
        })).collect::<Vec<_>>(),
    })
}

async fn post(
    client: &reqwest::Client,
    guard: &Guard,
    url: &str,
    req: impl FnOnce(reqwest::RequestBuilder) -> reqwest::RequestBuilder,
) -> Result<(), String> {
    let u = guard.check_url(url).map_err(|e| e.to_string())?;
    let resp = req(client.post(u))
        .send()
        .await
        .map_err(|e| format!("POST failed: {e}"))?;
    let status = resp.status();
    if status.is_success() {
        Ok(())
    } else {
        Err(format!("answered {status}"))
    }
}

/// POSTs the alert as signed JSON.
pub struct WebhookSink {
    url: String,
    secret: Vec<u8>,
    client: reqwest::Client,
    guard: Arc<Guard>,
    clock: Arc<dyn Clock>,
}

impl WebhookSink {
    /// `secret`: at least 16 bytes (checked with the configuration).
    pub fn new(
        url: &str,
        secret: &str,
        outbound: &OutboundConfig,
        clock: Arc<dyn Clock>,
    ) -> Result<WebhookSink, String> {
        let guard = Arc::new(Guard::new(outbound)?);
        Ok(WebhookSink {
            url: url.to_string(),
            secret: secret.as_bytes().to_vec(),
            client: client(guard.clone())?,
            guard,
            clock,
        })
    }
}

#[async_trait]
impl AlertSink for WebhookSink {
    fn name(&self) -> &str {
        "webhook"
    }

    async fn send(&self, alert: &Alert) -> Result<(), String> {
        let body = serde_json::to_vec(&webhook_body(alert)).expect("JSON encodes");
        let signature = sign(&self.secret, self.clock.now_ms().div_euclid(1000), &body);
        post(&self.client, &self.guard, &self.url, |r| {
            r.header(reqwest::header::CONTENT_TYPE, "application/json")
                .header(SIGNATURE_HEADER, signature)
                .header(IDEMPOTENCY_HEADER, &alert.anomaly.alert_id)
                .body(body)
        })
        .await
    }
}

/// POSTs the alert as a Slack incoming-webhook message (`text` and a
/// `blocks` section in mrkdwn; Mattermost and others read the same shape).
pub struct SlackSink {
    url: String,
    client: reqwest::Client,
    guard: Arc<Guard>,
}

impl SlackSink {
    pub fn new(url: &str, outbound: &OutboundConfig) -> Result<SlackSink, String> {
        let guard = Arc::new(Guard::new(outbound)?);
        Ok(SlackSink {
            url: url.to_string(),
            client: client(guard.clone())?,
            guard,
        })
    }
}

/// The Slack message.
pub fn slack_body(a: &Alert) -> Value {
    let text = format!(":rotating_light: Clarion: {}", headline(a));
    // A link when the runbooks are served somewhere; else their path.
    let runbook = if a.runbook_url.starts_with("http") {
        format!("<{}|Runbook>", a.runbook_url)
    } else {
        format!("Runbook: `{}`", a.runbook_url)
    };
    json!({
        "text": text,
        "blocks": [
            {"type": "section", "text": {"type": "mrkdwn", "text": format!("*{text}*\n{}", details(a))}},
            {"type": "context", "elements": [{"type": "mrkdwn", "text": format!("{runbook} · alert {}", a.anomaly.alert_id)}]},
        ],
    })
}

#[async_trait]
impl AlertSink for SlackSink {
    fn name(&self) -> &str {
        "slack"
    }

    async fn send(&self, alert: &Alert) -> Result<(), String> {
        let body = slack_body(alert);
        post(&self.client, &self.guard, &self.url, |r| r.json(&body)).await
    }
}

/// Mails the alert to the operator's addresses through SMTP.
pub struct EmailSink {
    smtp: SmtpProvider,
    to: Vec<String>,
}

impl EmailSink {
    pub fn new(smtp: &SmtpConfig, to: Vec<String>) -> Result<EmailSink, String> {
        Ok(EmailSink {
            // No tracking: an operator's alert has no pixel or rewritten link.
            smtp: SmtpProvider::new(smtp, None)?,
            to,
        })
    }
}

#[async_trait]
impl AlertSink for EmailSink {
    fn name(&self) -> &str {
        "email"
    }

    async fn send(&self, alert: &Alert) -> Result<(), String> {
        for (i, to) in self.to.iter().enumerate() {
            // The attempt id makes the Message-ID: a repeat is the same mail.
            let msg = pb::DispatchRequested {
                notification_id: alert.anomaly.alert_id.clone(),
                attempt_id: format!("{}-{i}", alert.anomaly.alert_id),
                channel: "email".into(),
                provider: "smtp".into(),
                to: to.clone(),
                subject: format!("[Clarion alert] {}", headline(alert)),
                body: details(alert),
                ..Default::default()
            };
            self.smtp
                .send(&alert.tenant, &msg)
                .await
                .map_err(|e| format!("mail to {to}: {}", e.message))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn alert() -> Alert {
        Alert {
            tenant: "acme".into(),
            anomaly: pb::AnomalyDetected {
                alert_id: "a1".into(),
                series: "provider:smtp".into(),
                provider: "smtp".into(),
                signal: "delivery_rate".into(),
                minute_start_ms: 1_700_000_040_000,
                observed: 0.6,
                baseline: 0.98,
                z_score: -19.0,
                attempts: 100,
                alerted: true,
                ..Default::default()
            },
            runbook_url: "https://rb.test/delivery-rate-drop.md".into(),
            related: vec![pb::AnomalyDetected {
                signal: "failure_rate".into(),
                observed: 0.4,
                baseline: 0.02,
                ..Default::default()
            }],
        }
    }

    #[test]
    fn messages_say_what_where_and_which_runbook() {
        let a = alert();
        assert_eq!(
            headline(&a),
            "tenant acme: delivery rate dropped (provider smtp)"
        );
        let d = details(&a);
        assert!(d.contains("60.0 % against a baseline of 98.0 %"), "{d}");
        assert!(d.contains("2023-11-14 22:14 UTC"), "{d}");
        assert!(
            d.contains("Also failure rate of all providers: 40.0 % against 2.0 %"),
            "{d}"
        );
        let slack = slack_body(&a);
        assert!(slack["text"]
            .as_str()
            .unwrap()
            .contains("delivery rate dropped"));
        assert!(slack["blocks"][1]["elements"][0]["text"]
            .as_str()
            .unwrap()
            .contains("<https://rb.test/delivery-rate-drop.md|Runbook>"));
        let hook = webhook_body(&a);
        assert_eq!(hook["alert_id"], "a1");
        assert_eq!(hook["runbook_url"], "https://rb.test/delivery-rate-drop.md");
        assert_eq!(hook["related"][0]["signal"], "failure_rate");
    }

    #[tokio::test]
    async fn sinks_refuse_internal_destinations_unless_allowed() {
        let clock: Arc<dyn Clock> = Arc::new(clarion_runtime::ManualClock::new(0));
        let hook = WebhookSink::new(
            "http://169.254.169.254/latest",
            "0123456789abcdef",
            &OutboundConfig::default(),
            clock,
        )
        .unwrap();
        let err = hook.send(&alert()).await.unwrap_err();
        assert!(err.contains("cloud metadata"), "{err}");
        let slack = SlackSink::new("http://127.0.0.1:9/x", &OutboundConfig::default()).unwrap();
        assert!(slack.send(&alert()).await.unwrap_err().contains("loopback"));
    }
}
