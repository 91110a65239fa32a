//! Structural schemas: pruning, defaulting and validation of custom resources.
//!
//! A CRD's `openAPIV3Schema` is compiled once into a [`Schema`] tree. Writes then go through
//! the same order a real API server uses: unknown fields are pruned (or reported, per the
//! request's `fieldValidation`), defaults are applied, and the object is validated against
//! types, formats, ranges, enums and the CEL rules in `x-kubernetes-validations`.

use std::collections::BTreeMap;

use regex::Regex;
use serde_json::{Map, Value};

use crate::cel::Rule;
use crate::error::Cause;

/// A compiled structural schema node.
#[derive(Debug, Clone, Default)]
pub struct Schema {
    pub type_: Option<String>,
    pub description: String,
    pub properties: BTreeMap<String, Schema>,
    pub additional: Option<Box<Schema>>,
    pub items: Option<Box<Schema>>,
    pub required: Vec<String>,
    pub enum_: Vec<Value>,
    pub default: Option<Value>,
    pub nullable: bool,
    pub preserve_unknown: bool,
    pub int_or_string: bool,
    pub embedded: bool,
    /// `x-kubernetes-list-type` (`atomic`, `set`, `map`).
    pub list_type: Option<String>,
    /// `x-kubernetes-list-map-keys` for `map` lists.
    pub list_map_keys: Vec<String>,
    minimum: Option<f64>,
    maximum: Option<f64>,
    exclusive_minimum: bool,
    exclusive_maximum: bool,
    min_length: Option<u64>,
    max_length: Option<u64>,
    pattern: Option<Regex>,
    min_items: Option<u64>,
    max_items: Option<u64>,
    min_properties: Option<u64>,
    max_properties: Option<u64>,
    unique_items: bool,
    any_of: Vec<Schema>,
    one_of: Vec<Schema>,
    all_of: Vec<Schema>,
    not: Option<Box<Schema>>,
    rules: Vec<Rule>,
}

const TYPES: &[&str] = &["object", "array", "string", "integer", "number", "boolean"];

impl Schema {
    /// Compiles an `openAPIV3Schema`, reporting every structural problem with its path.
    pub fn compile(raw: &Value) -> Result<Self, Vec<Cause>> {
        let mut errors = Vec::new();
        let schema = compile_node(raw, "", &mut errors);
        if schema.type_.as_deref() != Some("object") {
            errors.push(Cause::unsupported(
                "type",
                "Unsupported value: must be \"object\" at the root",
            ));
        }
        if errors.is_empty() {
            Ok(schema)
        } else {
            Err(errors)
        }
    }

    /// Removes fields the schema does not know. Returns their paths.
    pub fn prune(&self, value: &mut Value) -> Vec<String> {
        let mut removed = Vec::new();
        if let Value::Object(map) = value {
            // The root always keeps the object envelope; metadata is not governed by the schema.
            let keep = ["apiVersion", "kind", "metadata"];
            prune_object(self, map, "", &keep, &mut removed);
        }
        removed
    }

    /// Fills in `default` values for absent fields.
    pub fn apply_defaults(&self, value: &mut Value) {
        default_node(self, value);
    }

    /// Validates a pruned, defaulted object. `old` enables CEL transition rules.
    pub fn validate(&self, value: &Value, old: Option<&Value>) -> Vec<Cause> {
        let mut causes = Vec::new();
        if let Value::Object(map) = value {
            for (k, child) in &self.properties {
                if matches!(k.as_str(), "metadata" | "apiVersion" | "kind") {
                    continue;
                }
                if let Some(v) = map.get(k) {
                    validate_node(child, v, old.and_then(|o| o.get(k)), k, &mut causes);
                }
            }
            for r in &self.required {
                if !map.contains_key(r) {
                    causes.push(Cause::required(r.clone()));
                }
            }
            for rule in &self.rules {
                rule.check(self, value, old, "", &mut causes);
            }
        }
        causes
    }
}

fn compile_node(raw: &Value, path: &str, errors: &mut Vec<Cause>) -> Schema {
    let Some(obj) = raw.as_object() else {
        errors.push(Cause::invalid(path, "must be an object"));
        return Schema::default();
    };
    let text = |k: &str| obj.get(k).and_then(Value::as_str).map(str::to_string);
    let num = |k: &str| obj.get(k).and_then(Value::as_f64);
    let count = |k: &str| obj.get(k).and_then(Value::as_u64);
    let flag = |k: &str| obj.get(k).and_then(Value::as_bool).unwrap_or(false);
    let strings = |k: &str| -> Vec<String> {
        obj.get(k)
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(|v| v.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default()
    };
    let mut s = Schema {
        type_: text("type"),
        description: text("description").unwrap_or_default(),
        required: strings("required"),
        enum_: obj
            .get("enum")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default(),
        default: obj.get("default").cloned(),
        nullable: flag("nullable"),
        preserve_unknown: flag("x-kubernetes-preserve-unknown-fields"),
        int_or_string: flag("x-kubernetes-int-or-string"),
        embedded: flag("x-kubernetes-embedded-resource"),
        list_type: text("x-kubernetes-list-type"),
        list_map_keys: strings("x-kubernetes-list-map-keys"),
        minimum: num("minimum"),
        maximum: num("maximum"),
        exclusive_minimum: flag("exclusiveMinimum"),
        exclusive_maximum: flag("exclusiveMaximum"),
        min_length: count("minLength"),
        max_length: count("maxLength"),
        min_items: count("minItems"),
        max_items: count("maxItems"),
        min_properties: count("minProperties"),
        max_properties: count("maxProperties"),
        unique_items: flag("uniqueItems"),
        ..Schema::default()
    };
    if let Some(t) = &s.type_ {
        if !TYPES.contains(&t.as_str()) {
            errors.push(Cause::unsupported(
                join(path, "type"),
                format!("Unsupported value: \"{t}\""),
            ));
        }
    } else if !s.int_or_string && !s.preserve_unknown && !path.is_empty() && has_structure(obj) {
        errors.push(Cause::required(join(path, "type")));
    }
    if let Some(p) = text("pattern") {
        match Regex::new(&p) {
            Ok(re) => s.pattern = Some(re),
            Err(e) => errors.push(Cause::invalid(
                join(path, "pattern"),
                format!("invalid pattern: {e}"),
            )),
        }
    }
    if let Some(props) = obj.get("properties").and_then(Value::as_object) {
        for (k, v) in props {
            s.properties.insert(
                k.clone(),
                compile_node(v, &join(path, &format!("properties[{k}]")), errors),
            );
        }
    }
    if let Some(add) = obj.get("additionalProperties").filter(|v| v.is_object()) {
        s.additional = Some(Box::new(compile_node(
            add,
            &join(path, "additionalProperties"),
            errors,
        )));
    }
    if let Some(items) = obj.get("items") {
        s.items = Some(Box::new(compile_node(items, &join(path, "items"), errors)));
    }
    let list = |k: &str, errors: &mut Vec<Cause>| -> Vec<Schema> {
        obj.get(k)
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .enumerate()
                    .map(|(i, v)| compile_node(v, &join(path, &format!("{k}[{i}]")), errors))
                    .collect()
            })
            .unwrap_or_default()
    };
    s.any_of = list("anyOf", errors);
    s.one_of = list("oneOf", errors);
    s.all_of = list("allOf", errors);
    if let Some(n) = obj.get("not") {
        s.not = Some(Box::new(compile_node(n, &join(path, "not"), errors)));
    }
    for (i, r) in obj
        .get("x-kubernetes-validations")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .enumerate()
    {
        match Rule::compile(r) {
            Ok(rule) => s.rules.push(rule),
            Err(e) => errors.push(Cause::invalid(
                join(path, &format!("x-kubernetes-validations[{i}].rule")),
                e,
            )),
        }
    }
    s
}

/// A node that constrains structure (rather than only values) must declare its type.
fn has_structure(obj: &Map<String, Value>) -> bool {
    obj.contains_key("properties")
        || obj.contains_key("items")
        || obj.contains_key("additionalProperties")
}

fn join(path: &str, field: &str) -> String {
    if path.is_empty() {
        field.to_string()
    } else {
        format!("{path}.{field}")
    }
}

fn prune_object(
    s: &Schema,
    map: &mut Map<String, Value>,
    path: &str,
    keep: &[&str],
    removed: &mut Vec<String>,
) {
    if s.preserve_unknown && s.properties.is_empty() && s.additional.is_none() {
        return;
    }
    let keys: Vec<String> = map.keys().cloned().collect();
    for k in keys {
        let child_path = join(path, &k);
        if keep.contains(&k.as_str()) {
            continue;
        }
        let child = s.properties.get(&k).or(s.additional.as_deref());
        match child {
            // A null for a field that is not nullable is dropped (and may then be defaulted).
            Some(c) if map.get(&k).is_some_and(Value::is_null) && !c.nullable => {
                map.remove(&k);
            }
            Some(c) => {
                if let Some(v) = map.get_mut(&k) {
                    prune_value(c, v, &child_path, removed);
                }
            }
            None if s.preserve_unknown => {}
            None => {
                map.remove(&k);
                removed.push(child_path);
            }
        }
    }
}

fn prune_value(s: &Schema, v: &mut Value, path: &str, removed: &mut Vec<String>) {
    match v {
        Value::Object(map) if !s.embedded => prune_object(s, map, path, &[], removed),
        Value::Object(map) => {
            prune_object(s, map, path, &["apiVersion", "kind", "metadata"], removed);
        }
        Value::Array(items) => {
            if let Some(item_schema) = &s.items {
                for (i, item) in items.iter_mut().enumerate() {
                    prune_value(item_schema, item, &format!("{path}[{i}]"), removed);
                }
            }
        }
        _ => {}
    }
}

fn default_node(s: &Schema, v: &mut Value) {
    match v {
        Value::Object(map) => {
            for (k, child) in &s.properties {
                if !map.contains_key(k)
                    && let Some(d) = &child.default
                {
                    map.insert(k.clone(), d.clone());
                }
                if let Some(cv) = map.get_mut(k) {
                    default_node(child, cv);
                }
            }
            if let Some(add) = &s.additional {
                for (k, cv) in map.iter_mut() {
                    if !s.properties.contains_key(k) {
                        default_node(add, cv);
                    }
                }
            }
        }
        Value::Array(items) => {
            if let Some(item_schema) = &s.items {
                items.iter_mut().for_each(|i| default_node(item_schema, i));
            }
        }
        _ => {}
    }
}

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

pub(crate) fn validate_node(
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
        for (i, a) in items.iter().enumerate() {
            if items[..i].contains(a) {
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

#[cfg(test)]
#[path = "schema_tests.rs"]
mod tests;
