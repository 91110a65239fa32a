//! A small stand-in for the API server's schema validation, enough to check fixtures, examples
//! and the CEL rules without a cluster: types, enums, bounds, lengths, patterns, required and
//! unknown fields, and `x-kubernetes-validations` (evaluated with the `cel` crate). No defaulting.

use serde_json::Value;

/// Every violation of `schema` by `value`, as `path: message` strings.
pub fn validate(schema: &Value, value: &Value) -> Vec<String> {
    let mut errors = Vec::new();
    check(schema, value, "", &mut errors);
    errors
}

/// Evaluates one CEL rule with `self` bound to `value`.
pub fn eval_rule(rule: &str, value: &Value) -> Result<bool, String> {
    let program = cel::Program::compile(rule).map_err(|e| format!("{rule}: {e}"))?;
    let mut context = cel::Context::default();
    context.add_variable_from_value("self", cel::to_value(value).map_err(|e| e.to_string())?);
    match program.execute(&context) {
        Ok(cel::Value::Bool(result)) => Ok(result),
        other => Err(format!("{rule}: evaluated to {other:?}")),
    }
}

fn check(schema: &Value, value: &Value, path: &str, errors: &mut Vec<String>) {
    let mut fail = |message: String| errors.push(format!("{path}: {message}"));
    if let Some(expected) = schema.get("type").and_then(Value::as_str) {
        let ok = match expected {
            "object" => value.is_object(),
            "array" => value.is_array(),
            "string" => value.is_string(),
            "integer" => value.is_i64() || value.is_u64(),
            "number" => value.is_number(),
            "boolean" => value.is_boolean(),
            _ => false,
        };
        if !ok {
            fail(format!("expected {expected}, got {value}"));
            return;
        }
    }
    if let Some(allowed) = schema.get("enum").and_then(Value::as_array)
        && !allowed.contains(value)
    {
        fail(format!("{value} is not one of {allowed:?}"));
    }
    if let Some(n) = value.as_f64() {
        if let Some(min) = schema.get("minimum").and_then(Value::as_f64)
            && n < min
        {
            fail(format!("{n} is less than {min}"));
        }
        if let Some(max) = schema.get("maximum").and_then(Value::as_f64)
            && n > max
        {
            fail(format!("{n} is greater than {max}"));
        }
    }
    if let Some(s) = value.as_str() {
        check_string(schema, s, &mut fail);
    }
    if let Some(items) = value.as_array() {
        check_count(schema, "Items", items.len(), &mut fail);
    }
    if let Some(object) = value.as_object() {
        check_count(schema, "Properties", object.len(), &mut fail);
        for required in schema
            .get("required")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            if !object.contains_key(required.as_str().unwrap_or_default()) {
                fail(format!("{required} is required"));
            }
        }
    }
    for rule in schema
        .get("x-kubernetes-validations")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let (Some(expr), Some(message)) = (rule["rule"].as_str(), rule["message"].as_str()) else {
            fail(format!("malformed rule {rule}"));
            continue;
        };
        match eval_rule(expr, value) {
            Ok(true) => {}
            Ok(false) => fail(message.to_owned()),
            Err(e) => fail(format!("rule error: {e}")),
        }
    }
    recurse(schema, value, path, errors);
}

fn check_string(schema: &Value, s: &str, fail: &mut impl FnMut(String)) {
    let len = s.chars().count() as u64;
    if let Some(min) = schema.get("minLength").and_then(Value::as_u64)
        && len < min
    {
        fail(format!("shorter than {min}"));
    }
    if let Some(max) = schema.get("maxLength").and_then(Value::as_u64)
        && len > max
    {
        fail(format!("longer than {max}"));
    }
    if let Some(pattern) = schema.get("pattern").and_then(Value::as_str) {
        let rule = format!("self.matches({})", Value::from(pattern));
        if eval_rule(&rule, &Value::from(s)) != Ok(true) {
            fail(format!("{s:?} does not match {pattern}"));
        }
    }
}

fn check_count(schema: &Value, what: &str, n: usize, fail: &mut impl FnMut(String)) {
    let n = n as u64;
    if let Some(min) = schema.get(format!("min{what}")).and_then(Value::as_u64)
        && n < min
    {
        fail(format!("fewer than {min} {what}"));
    }
    if let Some(max) = schema.get(format!("max{what}")).and_then(Value::as_u64)
        && n > max
    {
        fail(format!("more than {max} {what}"));
    }
}

fn recurse(schema: &Value, value: &Value, path: &str, errors: &mut Vec<String>) {
    if let (Some(items), Some(values)) = (schema.get("items"), value.as_array()) {
        for (i, item) in values.iter().enumerate() {
            check(items, item, &format!("{path}[{i}]"), errors);
        }
    }
    let Some(object) = value.as_object() else {
        return;
    };
    let properties = schema.get("properties").and_then(Value::as_object);
    let additional = schema.get("additionalProperties");
    let open = schema.get("x-kubernetes-preserve-unknown-fields") == Some(&Value::Bool(true));
    for (key, child) in object {
        // The API server itself owns these; CRD schemas do not describe them.
        if path.is_empty() && ["apiVersion", "kind", "metadata"].contains(&key.as_str()) {
            continue;
        }
        let child_path = if path.is_empty() {
            key.clone()
        } else {
            format!("{path}.{key}")
        };
        match (properties.and_then(|p| p.get(key)), additional) {
            (Some(child_schema), _) | (None, Some(child_schema)) => {
                check(child_schema, child, &child_path, errors);
            }
            (None, None) if properties.is_some() && !open => {
                errors.push(format!("{child_path}: unknown field"));
            }
            (None, None) => {}
        }
    }
}
