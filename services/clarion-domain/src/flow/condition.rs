//! Conditions in CEL (Common Expression Language), via the `cel` crate: the
//! standard, sandboxed, non-Turing-complete language used by Kubernetes,
//! Envoy and Google APIs for exactly this kind of rule.
//!
//! Variables: `payload` (the trigger payload), `subscriber` (id, email,
//! locale, timezone, attributes), `tenant` (tenant data), and in branches
//! `steps` (step id → status, e.g. `steps.email == "failed"`).

use std::fmt;
use std::sync::{Arc, OnceLock};

use cel::{Context, Env, Program, Value};

fn env() -> Arc<Env> {
    static ENV: OnceLock<Arc<Env>> = OnceLock::new();
    ENV.get_or_init(|| Arc::new(Env::stdlib())).clone()
}

pub struct Condition {
    source: String,
    program: Program,
}

impl fmt::Debug for Condition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Condition({:?})", self.source)
    }
}

pub const VARIABLES: &[&str] = &["payload", "subscriber", "tenant", "steps"];

impl Condition {
    /// Compiles `source`, and refuses variables the engine never provides (a
    /// typo like `paylaod.x` is an error at publish time, not a silent false).
    pub fn compile(source: &str) -> Result<Condition, String> {
        let program = env()
            .compile(source)
            .map_err(|e| format!("does not compile: {e}"))?;
        let refs = program.references();
        for var in refs.variables() {
            if !VARIABLES.contains(&var) {
                return Err(format!(
                    "unknown variable {var:?} (available: {})",
                    VARIABLES.join(", ")
                ));
            }
        }
        Ok(Condition {
            source: source.to_string(),
            program,
        })
    }

    pub fn source(&self) -> &str {
        &self.source
    }

    /// Evaluates to a boolean. A non-boolean result or a runtime error (e.g. a
    /// missing field) is an error the caller records, never a silent false.
    pub fn eval(&self, vars: &[(&str, &serde_json::Value)]) -> Result<bool, String> {
        self.eval_with(&Bindings::new(vars)?)
    }

    /// Evaluates against variables converted once (matching one trigger
    /// against many workflows converts its payload once, not per condition).
    pub fn eval_with(&self, b: &Bindings) -> Result<bool, String> {
        match self.program.execute(&b.0) {
            Ok(Value::Bool(b)) => Ok(b),
            Ok(other) => Err(format!(
                "condition {:?} gave {other:?}, not a boolean",
                self.source
            )),
            Err(e) => Err(format!("condition {:?} failed: {e}", self.source)),
        }
    }
}

/// Variables converted to CEL values, reusable across conditions.
pub struct Bindings(Context<'static, 'static>);

impl Bindings {
    pub fn new(vars: &[(&str, &serde_json::Value)]) -> Result<Bindings, String> {
        let mut ctx = Context::with_env(env());
        for (name, value) in vars {
            let v = cel::to_value(value).map_err(|e| format!("{name}: {e}"))?;
            ctx.add_variable_from_value(*name, v);
        }
        Ok(Bindings(ctx))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn evaluates_over_payload_and_subscriber() {
        let c = Condition::compile(
            r#"payload.priority == "high" && subscriber.attributes.tier in ["gold", "platinum"]"#,
        )
        .unwrap();
        let p = json!({"priority": "high"});
        let s = json!({"attributes": {"tier": "gold"}});
        assert_eq!(c.eval(&[("payload", &p), ("subscriber", &s)]), Ok(true));
        let s2 = json!({"attributes": {"tier": "bronze"}});
        assert_eq!(c.eval(&[("payload", &p), ("subscriber", &s2)]), Ok(false));
    }

    #[test]
    fn bad_conditions_are_rejected_with_a_reason() {
        assert!(Condition::compile("payload.x ==")
            .unwrap_err()
            .contains("does not compile"));
        assert!(Condition::compile("paylaod.x == 1")
            .unwrap_err()
            .contains("unknown variable \"paylaod\""));
        let c = Condition::compile("payload.name + \"!\"").unwrap();
        assert!(c
            .eval(&[("payload", &json!({"name": "ana"}))])
            .unwrap_err()
            .contains("not a boolean"));
        let c = Condition::compile("payload.missing == 1").unwrap();
        assert!(c.eval(&[("payload", &json!({}))]).is_err());
    }
}
