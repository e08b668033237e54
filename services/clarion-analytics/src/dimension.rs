//! What a row is counted under: the tenant as a whole, or one channel,
//! provider, workflow or template. Every send is counted once under each.

use std::fmt;
use std::str::FromStr;

/// A grouping of the counts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Dimension {
    /// The tenant's totals (one value: `all`).
    All,
    Channel,
    Provider,
    Workflow,
    Template,
}

impl Dimension {
    pub const ALL: [Dimension; 5] = [
        Dimension::All,
        Dimension::Channel,
        Dimension::Provider,
        Dimension::Workflow,
        Dimension::Template,
    ];

    /// Every accepted name, for error messages.
    pub const NAMES: &'static str = "all, channel, provider, workflow, template";

    pub fn as_str(self) -> &'static str {
        match self {
            Dimension::All => "all",
            Dimension::Channel => "channel",
            Dimension::Provider => "provider",
            Dimension::Workflow => "workflow",
            Dimension::Template => "template",
        }
    }
}

impl fmt::Display for Dimension {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Dimension {
    type Err = ();
    fn from_str(s: &str) -> Result<Self, ()> {
        Dimension::ALL
            .into_iter()
            .find(|d| d.as_str() == s)
            .ok_or(())
    }
}

/// The value a send has under each dimension: what its dispatch named.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Dims {
    pub channel: String,
    pub provider: String,
    pub workflow: String,
    pub template: String,
}

/// Shown for a send that names no value (a contact verification has no
/// workflow; a dead letter's retry no template).
pub const NONE: &str = "(none)";

impl Dims {
    /// (dimension, value) pairs a send is counted under.
    pub fn pairs(&self) -> [(Dimension, &str); 5] {
        fn v(s: &str) -> &str {
            if s.is_empty() {
                NONE
            } else {
                s
            }
        }
        [
            (Dimension::All, "all"),
            (Dimension::Channel, v(&self.channel)),
            (Dimension::Provider, v(&self.provider)),
            (Dimension::Workflow, v(&self.workflow)),
            (Dimension::Template, v(&self.template)),
        ]
    }
}
