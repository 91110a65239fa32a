//! CEL validation rules (`x-kubernetes-validations`).
//!
//! Rules are compiled when a CRD is registered, so a broken rule is reported against the CRD
//! and never against the objects that use it. `self` is the value at the rule's node; `oldSelf`
//! (transition rules) is the previous value, and such rules are skipped on create, as in
//! Kubernetes.

use std::collections::HashMap;
use std::sync::{Arc, LazyLock};

use cel::objects::{Key, Value as Cel};
use cel::{Context, Env, Program};
use serde_json::Value;

use crate::error::Cause;
use crate::schema::{Schema, describe};

/// CEL's standard library, built once: building it for every rule check was a tenth of the
/// control plane's CPU while 10,000 MicroVMs were written.
fn stdlib() -> Arc<Env> {
    static STDLIB: LazyLock<Arc<Env>> = LazyLock::new(|| Arc::new(Env::stdlib()));
    STDLIB.clone()
}

/// One compiled `x-kubernetes-validations` entry.
#[derive(Clone)]
pub struct Rule {
    source: String,
    program: Arc<Program>,
    message: String,
    /// `messageExpression`: a CEL expression whose string result replaces `message`.
    message_expression: Option<Arc<Program>>,
    field_path: String,
    reason: &'static str,
    transition: bool,
}

impl std::fmt::Debug for Rule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Rule")
            .field("rule", &self.source)
            .field("message", &self.message)
            .finish()
    }
}

/// Most operators (and calls, member accesses, indexes) a rule may have. The CEL parser and
/// interpreter recurse once per nesting level, so an expression like `1+1+...+1` with a few
/// thousand terms would overflow the stack and abort the whole server; real rules use a few.
const MAX_RULE_OPERATORS: usize = 256;

impl Rule {
    pub fn compile(raw: &Value) -> Result<Self, String> {
        let source = raw
            .get("rule")
            .and_then(Value::as_str)
            .ok_or("Required value: rule")?;
        let program = compile_bounded(source)?;
        let message_expression = match raw.get("messageExpression").and_then(Value::as_str) {
            Some(e) if !e.trim().is_empty() => Some(Arc::new(compile_bounded(e)?)),
            _ => None,
        };
        let text = |k: &str| {
            raw.get(k)
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string()
        };
        let message = match text("message") {
            m if m.is_empty() => format!("failed rule: {source}"),
            m => m,
        };
        let reason = match text("reason").as_str() {
            "FieldValueRequired" => "FieldValueRequired",
            "FieldValueDuplicate" => "FieldValueDuplicate",
            "FieldValueForbidden" => "FieldValueForbidden",
            _ => "FieldValueInvalid",
        };
        Ok(Self {
            transition: source.contains("oldSelf"),
            source: source.to_string(),
            program: Arc::new(program),
            message,
            message_expression,
            field_path: text("fieldPath"),
            reason,
        })
    }

    /// Evaluates the rule on `value` (typed by `schema`), pushing a cause when it fails.
    pub fn check(
        &self,
        schema: &Schema,
        value: &Value,
        old: Option<&Value>,
        path: &str,
        causes: &mut Vec<Cause>,
    ) {
        if self.transition && old.is_none() {
            return;
        }
        let mut ctx = Context::with_env(stdlib());
        ctx.add_variable_from_value("self", to_cel(value, Some(schema)));
        if let Some(o) = old {
            ctx.add_variable_from_value("oldSelf", to_cel(o, Some(schema)));
        }
        let field = format!("{path}{}", self.field_path);
        let field = field.trim_start_matches('.').to_string();
        match self.program.execute(&ctx) {
            Ok(Cel::Bool(true)) => {}
            Ok(Cel::Bool(false)) => {
                let detail = self.failure_message(&ctx);
                let message = match self.reason {
                    "FieldValueForbidden" => format!("Forbidden: {detail}"),
                    "FieldValueRequired" => format!("Required value: {detail}"),
                    "FieldValueDuplicate" => format!("Duplicate value: {}", describe(value)),
                    _ => format!("Invalid value: {}: {detail}", describe(value)),
                };
                causes.push(Cause {
                    reason: self.reason,
                    field,
                    message,
                });
            }
            Ok(other) => causes.push(Cause::invalid(
                field,
                format!(
                    "Invalid value: {}: rule {:?} returned {other:?}, not a bool",
                    describe(value),
                    self.source
                ),
            )),
            Err(e) => causes.push(Cause::invalid(
                field,
                format!(
                    "Invalid value: {}: rule {:?} failed: {e}",
                    describe(value),
                    self.source
                ),
            )),
        }
    }
}

impl Rule {
    /// The message of a failed rule: `messageExpression`'s result when it evaluates to a
    /// non-blank single-line string, otherwise `message` (Kubernetes falls back the same way
    /// when the expression fails or yields an unusable string).
    fn failure_message(&self, ctx: &Context) -> String {
        if let Some(expr) = &self.message_expression
            && let Ok(Cel::String(text)) = expr.execute(ctx)
            && !text.trim().is_empty()
            && !text.contains('\n')
        {
            return text.to_string();
        }
        self.message.clone()
    }
}

/// Compiles a rule or message expression, refusing those over the operator limit.
fn compile_bounded(source: &str) -> Result<Program, String> {
    let operators = source
        .chars()
        .filter(|c| "+-*/%!&|<>=?:.[(,".contains(*c))
        .count();
    if operators > MAX_RULE_OPERATORS {
        return Err(format!(
            "Invalid value: the rule has {operators} operators; at most {MAX_RULE_OPERATORS} are allowed"
        ));
    }
    Program::compile(source)
        .map_err(|e| format!("Invalid value: {source:?}: compilation failed: {e}"))
}

/// Converts JSON to a CEL value, using the schema to type numbers as Kubernetes does.
fn to_cel(v: &Value, schema: Option<&Schema>) -> Cel {
    match v {
        Value::Null => Cel::Null,
        Value::Bool(b) => Cel::Bool(*b),
        Value::Number(n) => {
            let integer = schema.and_then(|s| s.type_.as_deref()) == Some("integer") || !n.is_f64();
            match n.as_i64() {
                Some(i) if integer => Cel::Int(i),
                _ => Cel::Float(n.as_f64().unwrap_or_default()),
            }
        }
        Value::String(s) => Cel::String(Arc::new(s.clone())),
        Value::Array(items) => {
            let item_schema = schema.and_then(|s| s.items.as_deref());
            Cel::List(Arc::new(
                items.iter().map(|i| to_cel(i, item_schema)).collect(),
            ))
        }
        Value::Object(map) => {
            let mut out: HashMap<Key, Cel> = HashMap::with_capacity(map.len());
            for (k, cv) in map {
                let child = schema.and_then(|s| s.properties.get(k).or(s.additional.as_deref()));
                out.insert(Key::String(Arc::new(k.clone())), to_cel(cv, child));
            }
            Cel::Map(out.into())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn schema() -> Schema {
        Schema::compile(&json!({
            "type": "object",
            "properties": {
                "spec": {
                    "type": "object",
                    "properties": {"setWeight": {"type": "integer"}, "pause": {"type": "object"}},
                    "x-kubernetes-validations": [{
                        "rule": "has(self.setWeight) != has(self.pause)",
                        "message": "exactly one of setWeight or pause must be set"
                    }]
                }
            }
        }))
        .expect("schema compiles")
    }

    #[test]
    fn failing_rule_reports_its_message_at_the_node() {
        let causes = schema().validate(&json!({"spec": {"setWeight": 5, "pause": {}}}), None);
        assert_eq!(causes.len(), 1, "{causes:?}");
        assert_eq!(causes[0].field, "spec");
        assert!(
            causes[0]
                .message
                .contains("exactly one of setWeight or pause")
        );
    }

    #[test]
    fn message_expression_and_reason_render_as_kubernetes_does() {
        let schema = Schema::compile(&json!({
            "type": "object",
            "properties": {"spec": {"type": "object",
                "properties": {"x": {"type": "integer"}},
                "x-kubernetes-validations": [{
                    "rule": "self.x < 10",
                    "messageExpression": "'x is ' + string(self.x) + ', at most 9'",
                    "reason": "FieldValueForbidden",
                    "fieldPath": ".x"
                }]}}
        }))
        .expect("schema");
        let causes = schema.validate(&json!({"spec": {"x": 12}}), None);
        assert_eq!(causes.len(), 1, "{causes:?}");
        assert_eq!(causes[0].field, "spec.x");
        assert_eq!(causes[0].reason, "FieldValueForbidden");
        assert_eq!(causes[0].message, "Forbidden: x is 12, at most 9");
    }

    #[test]
    fn blank_message_expression_falls_back_to_message() {
        let rule = Rule::compile(
            &json!({"rule": "false", "message": "static", "messageExpression": "' '"}),
        )
        .expect("compiles");
        let mut causes = Vec::new();
        rule.check(&Schema::default(), &json!(1), None, "spec", &mut causes);
        assert_eq!(causes[0].message, "Invalid value: 1: static");
    }

    #[test]
    fn passing_rule_is_silent() {
        assert!(
            schema()
                .validate(&json!({"spec": {"setWeight": 5}}), None)
                .is_empty()
        );
    }

    #[test]
    fn transition_rules_are_skipped_on_create_and_run_on_update() {
        let s = Schema::compile(&json!({
            "type": "object",
            "properties": {"spec": {"type": "object", "properties": {"n": {"type": "integer"}},
                "x-kubernetes-validations": [{"rule": "self.n >= oldSelf.n", "message": "n may not decrease"}]}}
        }))
        .expect("schema compiles");
        assert!(s.validate(&json!({"spec": {"n": 1}}), None).is_empty());
        let causes = s.validate(&json!({"spec": {"n": 1}}), Some(&json!({"spec": {"n": 2}})));
        assert_eq!(causes.len(), 1);
    }

    #[test]
    fn rule_nested_thousands_deep_is_refused_not_overflowing_the_stack() {
        for source in [
            format!("1{}", "+1".repeat(5000)),
            format!("{}true", "!".repeat(5000)),
            format!("self{}", ".a".repeat(5000)),
        ] {
            let err = Rule::compile(&json!({"rule": source})).expect_err("too deep");
            assert!(err.contains("operators"), "{err}");
        }
        let long_but_flat = format!("self.n < {}", "9".repeat(10));
        Rule::compile(&json!({"rule": long_but_flat})).expect("a plain rule compiles");
    }

    #[test]
    fn rules_at_the_operator_limit_compile_and_run() {
        let source = format!("1{} > 0", "+1".repeat(MAX_RULE_OPERATORS - 2));
        let rule = Rule::compile(&json!({"rule": source})).expect("within the limit");
        let mut causes = Vec::new();
        rule.check(&Schema::default(), &json!({}), None, "", &mut causes);
        assert!(causes.is_empty(), "{causes:?}");
    }

    #[test]
    fn broken_rule_fails_at_compile_time() {
        let err = Schema::compile(
            &json!({"type": "object", "x-kubernetes-validations": [{"rule": "self.("}]}),
        )
        .expect_err("bad rule");
        assert!(err[0].field.contains("x-kubernetes-validations[0].rule"));
    }
}
