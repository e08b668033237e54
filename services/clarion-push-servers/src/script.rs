//! What the HTTP provider stand-ins ([`crate::sendgrid`], [`crate::vonage`])
//! share: a scripted outage and a per-request hook.

use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::{Arc, Mutex};

/// Run on every request before it is answered.
pub type Hook = Arc<dyn Fn() + Send + Sync>;

#[derive(Default)]
pub(crate) struct Script {
    /// The status every request is answered with (0: none, serve normally).
    failing: AtomicU16,
    hook: Mutex<Option<Hook>>,
}

impl Script {
    pub(crate) fn fail_with(&self, status: u16) {
        self.failing.store(status, Ordering::SeqCst);
    }

    pub(crate) fn recover(&self) {
        self.failing.store(0, Ordering::SeqCst);
    }

    pub(crate) fn failing(&self) -> Option<u16> {
        match self.failing.load(Ordering::SeqCst) {
            0 => None,
            s => Some(s),
        }
    }

    pub(crate) fn on_request(&self, hook: Hook) {
        *self.hook.lock().unwrap() = Some(hook);
    }

    pub(crate) fn run_hook(&self) {
        let hook = self.hook.lock().unwrap().clone();
        if let Some(h) = hook {
            h();
        }
    }
}
