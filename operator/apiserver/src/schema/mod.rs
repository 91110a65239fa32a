//! Structural schemas: pruning, defaulting and validation of custom resources.
//!
//! A CRD's `openAPIV3Schema` is compiled once into a [`Schema`] tree. Writes then go through
//! the same order a real API server uses: unknown fields are pruned (or reported, per the
//! request's `fieldValidation`), defaults are applied, and the object is validated against
//! types, formats, ranges, enums and the CEL rules in `x-kubernetes-validations`.

use std::collections::BTreeMap;

use regex::Regex;
use serde_json::{Map, Value};

mod validate;

use crate::cel::Rule;
use crate::error::Cause;

pub use self::validate::describe;
use self::validate::validate_node;

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

#[cfg(test)]
mod tests;
