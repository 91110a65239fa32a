//! Validation of a pruned, defaulted object against its schema: types, enums, ranges,
//! lengths, patterns, sizes, uniqueness, combinators, then the CEL rules of each node.

use std::collections::HashSet;

use serde_json::{Map, Value};

use super::{Schema, join};
use crate::error::Cause;

/// A short rendering of a value for error messages, as Kubernetes prints them.
pub fn describe(v: &Value) -> String {
    match v {
        Value::Object(_) => "\"object\"".into(),
        Value::Array(_) => "\"array\"".into(),
        Value::String(s) => format!("{s:?}"),
        other => other.to_string(),
    }
}

fn type_matches(s: &Schema, v: &Value) -> bool {
    if s.int_or_string {
        return v.is_string() || v.is_i64() || v.is_u64();
    }
    match s.type_.as_deref() {
        Some("object") => v.is_object(),
        Some("array") => v.is_array(),
        Some("string") => v.is_string(),
        Some("integer") => v.is_i64() || v.is_u64() || v.as_f64().is_some_and(|f| f.fract() == 0.0),
        Some("number") => v.is_number(),
        Some("boolean") => v.is_boolean(),
        _ => true,
    }
}

pub(super) fn validate_node(
    s: &Schema,
    v: &Value,
    old: Option<&Value>,
    path: &str,
    causes: &mut Vec<Cause>,
) {
    let before = causes.len();
    if v.is_null() {
        if !s.nullable && s.type_.is_some() {
            causes.push(Cause::invalid(
                path,
                format!(
                    "Invalid value: \"null\": {path} in body must be of type {}: \"null\"",
                    s.type_.as_deref().unwrap_or("object")
                ),
            ));
        }
        return;
    }
    if !type_matches(s, v) {
        let want = if s.int_or_string {
            "integer or string"
        } else {
            s.type_.as_deref().unwrap_or("object")
        };
        let got = json_type(v);
        causes.push(Cause::invalid(
            path,
            format!("Invalid value: \"{got}\": {path} in body must be of type {want}: \"{got}\""),
        ));
        return;
    }
    if !s.enum_.is_empty() && !s.enum_.contains(v) {
        let supported: Vec<String> = s.enum_.iter().map(Value::to_string).collect();
        causes.push(Cause::unsupported(
            path,
            format!(
                "Unsupported value: {}: supported values: {}",
                v,
                supported.join(", ")
            ),
        ));
    }
    check_number(s, v, path, causes);
    check_string(s, v, path, causes);
    match v {
        Value::Object(map) => check_object(s, map, old, path, causes),
        Value::Array(items) => check_array(s, items, old, path, causes),
        _ => {}
    }
    check_combinators(s, v, old, path, causes);
    // CEL rules see only values that passed the structural checks, as in Kubernetes.
    if causes.len() == before {
        for rule in &s.rules {
            rule.check(s, v, old, path, causes);
        }
    }
}

fn json_type(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(n) if n.is_f64() => "number",
        Value::Number(_) => "integer",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

fn check_number(s: &Schema, v: &Value, path: &str, causes: &mut Vec<Cause>) {
    let Some(n) = v.as_f64() else { return };
    if let Some(min) = s.minimum
        && (n < min || (s.exclusive_minimum && n <= min))
    {
        let op = if s.exclusive_minimum {
            "greater than"
        } else {
            "greater than or equal to"
        };
        causes.push(Cause::invalid(
            path,
            format!(
                "Invalid value: {v}: {path} in body should be {op} {}",
                fmt_num(min)
            ),
        ));
    }
    if let Some(max) = s.maximum
        && (n > max || (s.exclusive_maximum && n >= max))
    {
        let op = if s.exclusive_maximum {
            "less than"
        } else {
            "less than or equal to"
        };
        causes.push(Cause::invalid(
            path,
            format!(
                "Invalid value: {v}: {path} in body should be {op} {}",
                fmt_num(max)
            ),
        ));
    }
}

fn fmt_num(n: f64) -> String {
    if n.fract() == 0.0 && n.abs() < 1e15 {
        format!("{}", n as i64)
    } else {
        n.to_string()
    }
}

fn check_string(s: &Schema, v: &Value, path: &str, causes: &mut Vec<Cause>) {
    let Some(text) = v.as_str() else { return };
    let len = text.chars().count() as u64;
    if let Some(max) = s.max_length.filter(|m| len > *m) {
        causes.push(Cause {
            reason: "FieldValueTooLong",
            field: path.into(),
            message: format!("Too long: may not be more than {max} bytes"),
        });
    }
    if let Some(min) = s.min_length.filter(|m| len < *m) {
        causes.push(Cause::invalid(
            path,
            format!("Invalid value: {v}: {path} in body should be at least {min} chars long"),
        ));
    }
    if let Some(re) = s.pattern.as_ref().filter(|re| !re.is_match(text)) {
        causes.push(Cause::invalid(
            path,
            format!(
                "Invalid value: {v}: {path} in body should match '{}'",
                re.as_str()
            ),
        ));
    }
}

fn check_object(
    s: &Schema,
    map: &Map<String, Value>,
    old: Option<&Value>,
    path: &str,
    causes: &mut Vec<Cause>,
) {
    for r in &s.required {
        if !map.contains_key(r) {
            causes.push(Cause::required(join(path, r)));
        }
    }
    let n = map.len() as u64;
    check_count(
        n,
        s.min_properties,
        s.max_properties,
        path,
        "properties",
        causes,
    );
    if s.embedded {
        return;
    }
    for (k, cv) in map {
        let child = s.properties.get(k).or(s.additional.as_deref());
        if let Some(c) = child {
            let child_path = if s.properties.contains_key(k) {
                join(path, k)
            } else {
                format!("{path}[{k}]")
            };
            validate_node(c, cv, old.and_then(|o| o.get(k)), &child_path, causes);
        }
    }
}

/// Size limits: `minProperties`/`maxProperties` of objects, `minItems`/`maxItems` of arrays.
fn check_count(
    n: u64,
    min: Option<u64>,
    max: Option<u64>,
    path: &str,
    noun: &str,
    causes: &mut Vec<Cause>,
) {
    if let Some(max) = max.filter(|m| n > *m) {
        causes.push(Cause {
            reason: "FieldValueTooMany",
            field: path.into(),
            message: format!("Too many: {n}: must have at most {max} items"),
        });
    }
    if let Some(min) = min.filter(|m| n < *m) {
        causes.push(Cause::invalid(
            path,
            format!("Invalid value: {n}: {path} in body should have at least {min} {noun}"),
        ));
    }
}

fn check_array(
    s: &Schema,
    items: &[Value],
    old: Option<&Value>,
    path: &str,
    causes: &mut Vec<Cause>,
) {
    let n = items.len() as u64;
    check_count(n, s.min_items, s.max_items, path, "items", causes);
    if s.unique_items {
        let mut seen = HashSet::new();
        for (i, a) in items.iter().enumerate() {
            if !seen.insert(a.to_string()) {
                causes.push(Cause {
                    reason: "FieldValueDuplicate",
                    field: format!("{path}[{i}]"),
                    message: format!("Duplicate value: {a}"),
                });
            }
        }
    }
    if let Some(item_schema) = &s.items {
        let old_items = old.and_then(Value::as_array);
        for (i, item) in items.iter().enumerate() {
            let old_item = old_items.and_then(|o| o.get(i));
            validate_node(item_schema, item, old_item, &format!("{path}[{i}]"), causes);
        }
    }
}

fn check_combinators(
    s: &Schema,
    v: &Value,
    old: Option<&Value>,
    path: &str,
    causes: &mut Vec<Cause>,
) {
    let passes = |sub: &Schema| {
        let mut c = Vec::new();
        validate_node(sub, v, old, path, &mut c);
        c.is_empty()
    };
    for sub in &s.all_of {
        validate_node(sub, v, old, path, causes);
    }
    if !s.any_of.is_empty() && !s.any_of.iter().any(passes) {
        causes.push(Cause::invalid(
            path,
            format!(
                "Invalid value: {}: {path} in body must match at least one schema in anyOf",
                describe(v)
            ),
        ));
    }
    if !s.one_of.is_empty() && s.one_of.iter().filter(|sub| passes(sub)).count() != 1 {
        causes.push(Cause::invalid(
            path,
            format!(
                "Invalid value: {}: {path} in body must match exactly one schema in oneOf",
                describe(v)
            ),
        ));
    }
    if let Some(not) = &s.not
        && passes(not)
    {
        causes.push(Cause::invalid(
            path,
            format!(
                "Invalid value: {}: {path} in body must not match the schema in not",
                describe(v)
            ),
        ));
    }
}
