//! Personal data in the warehouse. A Parquet file cannot be
//! crypto-shredded (docs/personal-data.md): once written, a clear value in
//! it outlives any erasure. So no clear personal value is written, by a
//! fixed policy per column (docs/warehouse.md, "Personal data"):
//!
//! - the send's address (`DispatchRequested.to`, sealed in the log) is
//!   opened only to be turned into `messages.recipient`: a keyed hash,
//!   `hmac-sha256:<64 hex>`, under the tenant's export hash key (the `hash`
//!   mask of `clarion export`, so the two join). Analysts count and join
//!   recipients without reading them; without the deployment's master key
//!   the hash cannot be brute-forced;
//! - subjects, bodies, push and in-app data are kept out;
//! - free texts that may quote an address (a provider's error, a run's
//!   reason) are scrubbed: email-shaped words and phone-shaped digit runs
//!   become `[email]` / `[phone]` ([`scrub`]).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use clarion_domain::TenantId;
use clarion_export::mask::{MaskRules, Masker, Target};
use clarion_export::signing::TenantKeys;
use clarion_proto::events as pb;
use clarion_runtime::personal::Personal;
use clarion_runtime::secrets::Keyring;

use crate::WarehouseError;

/// What a recipient whose data was erased before the export reads.
pub use clarion_domain::personal::ERASED;

/// Opens send addresses and hashes them per tenant.
pub struct Recipients {
    personal: Arc<Personal>,
    ring: Arc<Keyring>,
    /// Per tenant: its hash key (derivation is an HKDF; cheap, but per row).
    maskers: Mutex<HashMap<String, Arc<Masker>>>,
}

impl Recipients {
    pub fn new(personal: Arc<Personal>, ring: Arc<Keyring>) -> Arc<Recipients> {
        Arc::new(Recipients {
            personal,
            ring,
            maskers: Mutex::default(),
        })
    }

    /// The `recipient` column of a send: `None` without an address (push
    /// sends go to devices), [`ERASED`] when the subscriber's key is gone,
    /// otherwise the keyed hash of the opened address.
    pub async fn recipient(
        &self,
        tenant: &TenantId,
        d: &pb::DispatchRequested,
    ) -> Result<Option<String>, WarehouseError> {
        if d.to.is_empty() {
            return Ok(None);
        }
        let clear = if Personal::is_sealed(&d.to) {
            self.personal
                .open(tenant, &d.subscriber_id, &d.to)
                .await
                .map_err(|e| WarehouseError::Personal(e.to_string()))?
        } else {
            d.to.clone()
        };
        if clear.starts_with(ERASED) || clear.starts_with(clarion_domain::personal::REDACTED) {
            return Ok(Some(ERASED.to_string()));
        }
        let masker = self.masker(tenant)?;
        Ok(Some(
            masker.apply(Target::of_address(&d.channel, &clear), &clear),
        ))
    }

    fn masker(&self, tenant: &TenantId) -> Result<Arc<Masker>, WarehouseError> {
        let mut cache = self.maskers.lock().expect("not poisoned");
        if let Some(m) = cache.get(tenant.as_str()) {
            return Ok(m.clone());
        }
        let keys = TenantKeys::derive(&self.ring, tenant)
            .map_err(|e| WarehouseError::Personal(e.to_string()))?;
        let rules = MaskRules::parse(&["to=hash"]).expect("a valid rule");
        let m = Arc::new(Masker::new(rules, keys.hash_key));
        cache.insert(tenant.as_str().to_string(), m.clone());
        Ok(m)
    }
}

/// `text` with every email-shaped word replaced by `[email]` and every run
/// of digits (with `+`, spaces, dots, dashes, parentheses between them)
/// holding at least 7 digits by `[phone]`. Over-masks on purpose (a long
/// number that is not a phone goes too): an address must not get through.
pub fn scrub(text: &str) -> String {
    if !text.bytes().any(|b| b == b'@' || b.is_ascii_digit()) {
        return text.to_string();
    }
    let emails = scrub_emails(text);
    scrub_phones(&emails)
}

/// Characters that end a word around an email address.
fn is_email_char(c: char) -> bool {
    !(c.is_whitespace() || "<>()[]{},;:\"'`".contains(c))
}

fn scrub_emails(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut word = String::new();
    let flush = |word: &mut String, out: &mut String| {
        let looks_like_email = word
            .split_once('@')
            .is_some_and(|(l, d)| !l.is_empty() && !d.is_empty());
        out.push_str(if looks_like_email { "[email]" } else { word });
        word.clear();
    };
    for c in text.chars() {
        if is_email_char(c) {
            word.push(c);
        } else {
            flush(&mut word, &mut out);
            out.push(c);
        }
    }
    flush(&mut word, &mut out);
    out
}

fn scrub_phones(text: &str) -> String {
    const MIN_DIGITS: usize = 7;
    let chars: Vec<char> = text.chars().collect();
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    while i < chars.len() {
        let starts = chars[i].is_ascii_digit() || (chars[i] == '+' || chars[i] == '(');
        if !starts {
            out.push(chars[i]);
            i += 1;
            continue;
        }
        // The longest run of phone characters from here, ending on a digit.
        let (mut j, mut last_digit, mut digits) = (i, None, 0);
        while j < chars.len() && (chars[j].is_ascii_digit() || " +-.()".contains(chars[j])) {
            if chars[j].is_ascii_digit() {
                digits += 1;
                last_digit = Some(j);
            }
            j += 1;
        }
        match last_digit {
            Some(end) if digits >= MIN_DIGITS => {
                out.push_str("[phone]");
                i = end + 1;
            }
            _ => {
                out.push(chars[i]);
                i += 1;
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scrub_hides_addresses_and_keeps_the_rest() {
        assert_eq!(
            scrub("550 5.1.1 <alice@example.com>: user unknown"),
            "550 5.1.1 <[email]>: user unknown"
        );
        assert_eq!(
            scrub("number +1 (555) 010-0123 is not reachable"),
            "number [phone] is not reachable"
        );
        assert_eq!(scrub("+15550100 opted out"), "[phone] opted out");
        assert_eq!(scrub("HTTP 503 after 2 tries"), "HTTP 503 after 2 tries");
        assert_eq!(scrub("no address"), "no address");
        assert_eq!(scrub("to: bob@x.io, carol@y.org"), "to: [email], [email]");
        assert_eq!(scrub("a @ sign alone"), "a @ sign alone");
    }
}
