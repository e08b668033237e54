//! Conditions in CEL (Common Expression Language), via the `cel` crate: the
//! standard, sandboxed, non-Turing-complete language used by Kubernetes,
//! Envoy and Google APIs for exactly this kind of rule.
//!
//! Variables: `payload` (the trigger payload), `subscriber` (id, email,
//! locale, timezone, attributes), `tenant` (tenant data), and in branches
//! `steps` (step id → status, e.g. `steps.email == "failed"`).
//!
//! ## Budget
//!
//! A condition is tenant code evaluated inside a shared router partition,
//! so its work is bounded twice:
//!
//! - at publish, its source is at most [`limits::MAX_CONDITION_BYTES`], its
//!   expression tree at most [`limits::MAX_CONDITION_DEPTH`] deep, and at most
//!   [`limits::MAX_COMPREHENSION_NESTING`] comprehensions (`all`, `exists`,
//!   `map`, ...) are nested in one another;
//! - at evaluation (conditions with a comprehension or a `+`; without either,
//!   every node runs once on operands no larger than the variables, so the
//!   source limit bounds the work), a meter charges every operation (except the boolean
//!   connectives, which only pass on what their operands computed) one unit
//!   plus the size of each value it reads: list elements and map entries
//!   (counted through nested ones), string and bytes lengths. Each
//!   comprehension's range is charged the same way before it iterates. Past
//!   [`limits::CONDITION_BUDGET`] units the evaluation fails with a budget
//!   reason.
//!
//! `cel` has no fuel of its own, so the meter is a call inserted around the
//! operands of every operation when the condition is compiled. Why it bounds
//! the work: the cost of any CEL operation is at most linear in the size of
//! its operands (equality, `in`, `contains`, concatenation, `size`), and
//! every operand is charged its size before the operation runs, so the work
//! done between two charges is at most a constant times what the second one
//! charged. A comprehension's iterations are charged through its range, and
//! its body's operations on every iteration, so nesting multiplies charges,
//! not uncharged work. Without the meter, two nested `exists` over a
//! 30,000-element payload list would run 10⁹ iterations.

use std::cell::Cell;
use std::fmt;
use std::sync::{Arc, OnceLock};

use cel::common::ast::{operators, CallExpr, EntryExpr, Expr, IdedExpr};
use cel::common::types::{CelBytes, CelList, CelMap, CelString, DYN_TYPE};
use cel::common::value::{CowVal, Val};
use cel::{Context, Env, ExecutionError, Value};

use crate::error::excerpt;
use crate::limits;

/// The meter's function, called around operands (see the module docs).
const METER: &str = "@clarion_meter";

fn env() -> Arc<Env> {
    static ENV: OnceLock<Arc<Env>> = OnceLock::new();
    ENV.get_or_init(|| {
        let mut env = Env::stdlib();
        env.add_overload(METER, "clarion_meter", vec![DYN_TYPE], meter)
            .expect("the meter's name is free");
        Arc::new(env)
    })
    .clone()
}

thread_local! {
    /// Units left to the evaluation running on this thread; negative once
    /// it went over. Evaluations are synchronous and never nest.
    static LEFT: Cell<i64> = const { Cell::new(0) };
}

/// Charges one unit plus the size of the operand, and passes it on.
fn meter<'b, 'v>(mut args: Vec<CowVal<'b, 'v>>) -> Result<CowVal<'b, 'v>, ExecutionError> {
    let v = args
        .pop()
        .ok_or_else(ExecutionError::missing_argument_or_target)?;
    let left = LEFT.get();
    let cost = 1 + weight(&*v, left.max(0) as u64) as i64;
    LEFT.set(left - cost);
    if left - cost < 0 {
        return Err(ExecutionError::function_error(
            "condition",
            "over its evaluation budget",
        ));
    }
    Ok(v)
}

/// The size of a value: string and bytes lengths, and list elements and
/// map entries with the sizes of theirs; counting stops past `cap`.
fn weight(v: &dyn Val, cap: u64) -> u64 {
    if let Some(s) = v.downcast_ref::<CelString>() {
        return s.inner().len() as u64;
    }
    if let Some(b) = v.downcast_ref::<CelBytes>() {
        return b.inner().len() as u64;
    }
    let mut n = 0u64;
    let mut add = |e: &dyn Val| {
        n = n.saturating_add(1 + weight(e, cap.saturating_sub(n)));
        n <= cap
    };
    if let Some(l) = v.downcast_ref::<CelList>() {
        for e in l.inner() {
            if !add(&**e) {
                break;
            }
        }
    } else if let Some(m) = v.downcast_ref::<CelMap>() {
        for e in m.inner().values() {
            if !add(&**e) {
                break;
            }
        }
    }
    n
}

pub struct Condition {
    source: String,
    /// The compiled expression with the meter inserted.
    expr: IdedExpr,
}

impl fmt::Debug for Condition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Condition({:?})", self.source)
    }
}

pub const VARIABLES: &[&str] = &["payload", "subscriber", "tenant", "steps"];

impl Condition {
    /// Compiles `source`, and refuses variables the engine never provides (a
    /// typo like `paylaod.x` is an error at publish time, not a silent false)
    /// and conditions over the size, depth and nesting limits.
    pub fn compile(source: &str) -> Result<Condition, String> {
        if source.len() > limits::MAX_CONDITION_BYTES {
            return Err(format!(
                "is {} bytes, over the limit of {} bytes",
                source.len(),
                limits::MAX_CONDITION_BYTES
            ));
        }
        let program = env()
            .compile(source)
            .map_err(|e| format!("does not compile: {}", excerpt(&e.to_string(), 400)))?;
        let mut free = Vec::new();
        free_variables(program.expression(), &mut Vec::new(), &mut free);
        if let Some(var) = free.iter().find(|v| !VARIABLES.contains(v)) {
            return Err(format!(
                "unknown variable {} (available: {})",
                crate::error::quote(var),
                VARIABLES.join(", ")
            ));
        }
        let shape = Shape::of(program.expression());
        if shape.depth > limits::MAX_CONDITION_DEPTH {
            return Err(format!(
                "is nested {} levels deep, over the limit of {}",
                shape.depth,
                limits::MAX_CONDITION_DEPTH
            ));
        }
        if shape.comprehensions > limits::MAX_COMPREHENSION_NESTING {
            return Err(format!(
                "nests {} comprehensions (all, exists, exists_one, map, filter), over the limit of {}",
                shape.comprehensions,
                limits::MAX_COMPREHENSION_NESTING
            ));
        }
        let mut expr = program.expression().clone();
        // Without comprehensions and concatenation, every operation is
        // linear in operands no larger than the variables (the payload is
        // at most 64 KiB) and each node runs once: the source limit bounds
        // the work, and the meter's cost (a call per operand) is spared.
        if shape.comprehensions > 0 || shape.concatenates {
            let mut ids = Ids(shape.max_id + 1);
            metered(&mut expr, None, &mut ids);
        }
        Ok(Condition {
            source: source.to_string(),
            expr,
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
        LEFT.set(limits::CONDITION_BUDGET as i64);
        let result = Value::resolve(&self.expr, &b.0);
        // Checked whatever the result: `||` and `&&` absorb an operand's
        // error when the other decides, and a budget error must not be lost.
        if LEFT.get() < 0 {
            return Err(format!(
                "condition {} exceeded its evaluation budget ({} units)",
                crate::error::quote(&self.source),
                limits::CONDITION_BUDGET
            ));
        }
        match result {
            Ok(Value::Bool(b)) => Ok(b),
            Ok(other) => Err(format!(
                "condition {} gave {}, not a boolean",
                crate::error::quote(&self.source),
                excerpt(&format!("{other:?}"), 120)
            )),
            Err(e) => Err(format!(
                "condition {} failed: {}",
                crate::error::quote(&self.source),
                excerpt(&e.to_string(), 300)
            )),
        }
    }
}

/// Depth, comprehension nesting and largest node id of an expression.
#[derive(Default)]
struct Shape {
    depth: usize,
    comprehensions: usize,
    /// Whether any `+` appears: the one operation whose result can be
    /// larger than its operands (strings, lists), so chains amplify.
    concatenates: bool,
    max_id: u64,
}

impl Shape {
    fn of(e: &IdedExpr) -> Shape {
        let mut children = Vec::new();
        let mut comprehension = 0;
        match &e.expr {
            Expr::Call(c) => {
                children.extend(c.target.as_deref());
                children.extend(&c.args);
            }
            Expr::Comprehension(c) => {
                comprehension = 1;
                children.extend([
                    &c.iter_range,
                    &c.accu_init,
                    &c.loop_cond,
                    &c.loop_step,
                    &c.result,
                ]);
            }
            Expr::List(l) => children.extend(&l.elements),
            Expr::Map(m) => children.extend(m.entries.iter().flat_map(entry_exprs)),
            Expr::Struct(s) => children.extend(s.entries.iter().flat_map(entry_exprs)),
            Expr::Select(s) => children.push(&s.operand),
            Expr::Ident(_) | Expr::Literal(_) | Expr::Unspecified => {}
        }
        let mut shape = Shape {
            max_id: e.id,
            concatenates: matches!(&e.expr, Expr::Call(c) if c.func_name == operators::ADD),
            ..Shape::default()
        };
        for c in children {
            let s = Shape::of(c);
            shape.concatenates |= s.concatenates;
            shape.depth = shape.depth.max(s.depth);
            shape.comprehensions = shape.comprehensions.max(s.comprehensions);
            shape.max_id = shape.max_id.max(s.max_id);
        }
        shape.depth += 1;
        shape.comprehensions += comprehension;
        shape
    }
}

/// The variables `e` reads that no comprehension around them binds (its
/// iteration variables and accumulator are not the engine's to provide).
fn free_variables<'e>(e: &'e IdedExpr, bound: &mut Vec<&'e str>, free: &mut Vec<&'e str>) {
    match &e.expr {
        Expr::Ident(name) => {
            if !bound.contains(&name.as_str()) {
                free.push(name);
            }
        }
        Expr::Comprehension(c) => {
            free_variables(&c.iter_range, bound, free);
            free_variables(&c.accu_init, bound, free);
            let before = bound.len();
            bound.push(&c.iter_var);
            bound.extend(c.iter_var2.as_deref());
            bound.push(&c.accu_var);
            for x in [&c.loop_cond, &c.loop_step, &c.result] {
                free_variables(x, bound, free);
            }
            bound.truncate(before);
        }
        Expr::Call(c) => {
            for x in c.target.as_deref().into_iter().chain(&c.args) {
                free_variables(x, bound, free);
            }
        }
        Expr::List(l) => l
            .elements
            .iter()
            .for_each(|x| free_variables(x, bound, free)),
        Expr::Map(m) => {
            for x in m.entries.iter().flat_map(entry_exprs) {
                free_variables(x, bound, free);
            }
        }
        Expr::Struct(s) => {
            for x in s.entries.iter().flat_map(entry_exprs) {
                free_variables(x, bound, free);
            }
        }
        Expr::Select(s) => free_variables(&s.operand, bound, free),
        Expr::Literal(_) | Expr::Unspecified => {}
    }
}

fn entry_exprs(e: &cel::common::ast::IdedEntryExpr) -> Vec<&IdedExpr> {
    match &e.expr {
        EntryExpr::StructField(f) => vec![&f.value],
        EntryExpr::MapEntry(m) => vec![&m.key, &m.value],
    }
}

/// Fresh node ids for the meter's calls, above every id of the program.
struct Ids(u64);

impl Ids {
    fn wrap(&mut self, e: &mut IdedExpr) {
        let inner = std::mem::take(e);
        self.0 += 1;
        *e = IdedExpr {
            id: self.0,
            expr: Expr::Call(CallExpr {
                func_name: METER.to_string(),
                target: None,
                args: vec![inner],
            }),
        };
    }
}

/// Inserts the meter around the operands of every operation. Left as they
/// are: the boolean connectives (they only pass on what their operands
/// computed, and `cel` short-circuits them by name), literals (bounded by the
/// source) and any operation on a comprehension's accumulator, whose shape
/// `cel` recognizes to build `map` and `filter` results in place.
fn metered(e: &mut IdedExpr, accu: Option<&str>, ids: &mut Ids) {
    match &mut e.expr {
        Expr::Call(c) => {
            let is_accu =
                |x: &IdedExpr| matches!(&x.expr, Expr::Ident(n) if Some(n.as_str()) == accu);
            let passes_on = matches!(
                c.func_name.as_str(),
                operators::LOGICAL_AND
                    | operators::LOGICAL_OR
                    | operators::LOGICAL_NOT
                    | operators::CONDITIONAL
                    | operators::NOT_STRICTLY_FALSE
            ) || c.target.as_deref().is_some_and(is_accu)
                || c.args.iter().any(is_accu);
            let operands = c.target.as_deref_mut().into_iter().chain(c.args.iter_mut());
            for x in operands {
                metered(x, accu, ids);
                if !passes_on && !matches!(x.expr, Expr::Literal(_)) {
                    ids.wrap(x);
                }
            }
        }
        Expr::Comprehension(c) => {
            metered(&mut c.iter_range, accu, ids);
            ids.wrap(&mut c.iter_range);
            metered(&mut c.accu_init, accu, ids);
            let inner = Some(c.accu_var.as_str());
            metered(&mut c.loop_cond, inner, ids);
            metered(&mut c.loop_step, inner, ids);
            metered(&mut c.result, inner, ids);
        }
        Expr::List(l) => l.elements.iter_mut().for_each(|x| metered(x, accu, ids)),
        Expr::Map(m) => {
            for entry in &mut m.entries {
                if let EntryExpr::MapEntry(me) = &mut entry.expr {
                    metered(&mut me.key, accu, ids);
                    metered(&mut me.value, accu, ids);
                }
            }
        }
        Expr::Struct(s) => {
            for entry in &mut s.entries {
                if let EntryExpr::StructField(f) = &mut entry.expr {
                    metered(&mut f.value, accu, ids);
                }
            }
        }
        Expr::Select(s) => metered(&mut s.operand, accu, ids),
        Expr::Ident(_) | Expr::Literal(_) | Expr::Unspecified => {}
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

    #[test]
    fn comprehensions_still_evaluate_as_cel_defines_them() {
        let p = json!({"items": [{"sku": "a", "n": 1}, {"sku": "b", "n": 5}], "tags": ["x", "y"]});
        for (src, want) in [
            (r#"payload.items.exists(i, i.sku == "b")"#, true),
            (r#"payload.items.all(i, i.n > 0)"#, true),
            (r#"payload.items.exists_one(i, i.n > 2)"#, true),
            (r#"payload.items.map(i, i.sku) == ["a", "b"]"#, true),
            (r#"payload.items.filter(i, i.n > 2).size() == 1"#, true),
            (
                r#"payload.tags.exists(t, payload.items.exists(i, i.sku == t))"#,
                false,
            ),
            (r#"size(payload.tags) == 2 && "x" in payload.tags"#, true),
            (r#"false || payload.tags[1] == "y""#, true),
        ] {
            let c = Condition::compile(src).unwrap();
            assert_eq!(c.eval(&[("payload", &p)]), Ok(want), "{src}");
        }
    }

    #[test]
    fn sources_over_the_size_depth_or_nesting_limits_are_refused() {
        let long = format!(
            "payload.x == \"{}\"",
            "y".repeat(limits::MAX_CONDITION_BYTES)
        );
        assert!(Condition::compile(&long)
            .unwrap_err()
            .contains("over the limit"));
        let deep = format!("{}payload.x{}", "(".repeat(40), ")".repeat(40));
        // Parentheses alone add no depth: the tree is `payload.x`.
        assert!(Condition::compile(&format!("{deep} == 1")).is_ok());
        let deep = format!("{}1{}", "-(".repeat(40), ")".repeat(40));
        let err = Condition::compile(&format!("payload.x == {deep}")).unwrap_err();
        assert!(err.contains("levels deep"), "{err}");
        let two = "payload.l.exists(a, payload.l.exists(b, a == b))";
        assert!(Condition::compile(two).is_ok());
        let three =
            "payload.l.exists(a, payload.l.exists(b, payload.l.exists(c, a == b && b == c)))";
        let err = Condition::compile(three).unwrap_err();
        assert!(err.contains("nests 3 comprehensions"), "{err}");
    }

    #[test]
    fn nested_comprehensions_over_a_large_payload_stop_at_the_budget() {
        let c = Condition::compile("payload.l.exists(a, payload.l.exists(b, a + b < 0))").unwrap();
        // 30,000 × 30,000 iterations unmetered: hours.
        let p = json!({"l": vec![1; 30_000]});
        let started = std::time::Instant::now();
        let err = c.eval(&[("payload", &p)]).unwrap_err();
        assert!(err.contains("exceeded its evaluation budget"), "{err}");
        // A stall detector, not a timing assertion: the budget is tens of
        // milliseconds of work; a broken meter runs for hours.
        assert!(started.elapsed() < std::time::Duration::from_secs(20));
        // The same condition over a small list evaluates.
        let small = json!({"l": vec![1; 50]});
        assert_eq!(c.eval(&[("payload", &small)]), Ok(false));
    }

    #[test]
    fn amplifying_operations_are_charged_by_size() {
        // No comprehension: string concatenation doubling a 60 KiB value.
        let p = json!({"s": "x".repeat(60_000)});
        let mut src = "payload.s".to_string();
        for _ in 0..20 {
            src = format!("({src} + {src})");
            if src.len() > 3000 {
                break;
            }
        }
        let c = Condition::compile(&format!("size({src}) > 0")).unwrap();
        let err = c.eval(&[("payload", &p)]).unwrap_err();
        assert!(err.contains("evaluation budget"), "{err}");
        // A budget error is not absorbed by `||`.
        let c = Condition::compile(&format!("size({src}) > 0 || true")).unwrap();
        let err = c.eval(&[("payload", &p)]).unwrap_err();
        assert!(err.contains("evaluation budget"), "{err}");
    }
}
