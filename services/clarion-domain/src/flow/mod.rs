//! The workflow engine: definitions ([`def`]), conditions in CEL
//! ([`condition`]), and the run state machine ([`run`]).

pub mod condition;
pub mod def;
pub mod duration;
pub mod run;
pub mod throttle;
pub mod until;

pub use def::{Engagement, Flow, FlowDef, Next, SendSpec, StepDef, StepKind};
pub use run::{Ctx, Digested, Input, Output, RetryPolicy, Run, Terminal};
pub use throttle::{OnExceed, TenantLimits, ThrottleDef, ThrottleScope};
