//! The workflow engine: definitions ([`def`]), conditions in CEL
//! ([`condition`]), and the run state machine ([`run`]).

pub mod condition;
pub mod def;
pub mod duration;
pub mod run;

pub use def::{
    Engagement, Flow, FlowDef, Next, OnExceed, SendSpec, StepDef, StepKind, ThrottleDef,
    ThrottleScope,
};
pub use run::{Ctx, Input, Output, RetryPolicy, Run, Terminal};
