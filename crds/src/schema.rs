//! Schema adjustments shared by the resource types.

use schemars::Schema;
use schemars::transform::transform_subschemas;
use serde_json::{Value, json};

/// Durations as Kubernetes users write them: one or more `<integer><unit>` groups with unit
/// `s`, `m` or `h` (`30s`, `5m`, `1h30m`).
pub(crate) const DURATION_PATTERN: &str = "^([0-9]+(s|m|h))+$";

/// Adjusts a derived schema to what Kubernetes expects; applied to every top-level spec and
/// status type (nested types are inlined, so the walk reaches them).
///
/// - Unsigned integer formats become the ones Kubernetes knows. OpenAPI 3.0 has only `int32`
///   and `int64`, and API servers since 1.34 warn on every other format. A `u32` becomes `int64`
///   bounded by `u32::MAX` (unless the field sets a tighter maximum), so the API server never
///   stores a value the Rust side cannot read back.
/// - Optional fields are typed as their inner type, not `[T, null]`: an unset field is simply
///   absent, never `null`. Without `nullable: true` the API server prunes an explicit `null` (and
///   applies the default, if any) instead of storing it, and CEL rules never see a null value.
///   `null` is dropped from enums for the same reason.
/// - Descriptions lose the line breaks of the doc comments they come from (paragraphs stay), so
///   `kubectl explain` can wrap them to the terminal.
pub(crate) fn kubernetes_compat(schema: &mut Schema) {
    transform_subschemas(&mut kubernetes_compat, schema);
    let Some(object) = schema.as_object_mut() else {
        return;
    };
    if let Some(Value::String(description)) = object.get_mut("description") {
        *description = unwrap_lines(description);
    }
    if let Some(Value::Array(types)) = object.get("type")
        && let [a, b] = types.as_slice()
        && (a == "null" || b == "null")
    {
        let other = if a == "null" { b.clone() } else { a.clone() };
        object.insert("type".into(), other);
    }
    if let Some(Value::Array(values)) = object.get_mut("enum") {
        values.retain(|v| !v.is_null());
    }
    let (format, max) = match object.get("format").and_then(Value::as_str) {
        Some("uint8") => ("int32", Some(u64::from(u8::MAX))),
        Some("uint16") => ("int32", Some(u64::from(u16::MAX))),
        Some("uint32") => ("int64", Some(u64::from(u32::MAX))),
        Some("uint64" | "uint") => ("int64", None),
        _ => return,
    };
    object.insert("format".into(), json!(format));
    if let Some(max) = max {
        object.entry("maximum").or_insert(json!(max));
    }
}

fn unwrap_lines(text: &str) -> String {
    text.split("\n\n")
        .map(|paragraph| paragraph.split_whitespace().collect::<Vec<_>>().join(" "))
        .collect::<Vec<_>>()
        .join("\n\n")
}

/// Marks a list of `Condition`s as a map keyed by `type`, as Kubernetes' own types do, so that
/// server-side apply merges conditions instead of replacing the list.
pub(crate) fn condition_list(schema: &mut Schema) {
    schema.insert("x-kubernetes-list-type".into(), json!("map"));
    schema.insert("x-kubernetes-list-map-keys".into(), json!(["type"]));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn u32_becomes_bounded_int64() {
        let mut schema: Schema = json!({"type": "integer", "format": "uint32", "minimum": 0})
            .try_into()
            .unwrap();
        kubernetes_compat(&mut schema);
        assert_eq!(
            schema.as_value(),
            &json!({"type": "integer", "format": "int64", "minimum": 0, "maximum": 4_294_967_295_u64})
        );
    }

    #[test]
    fn optional_enum_is_not_nullable() {
        let mut schema: Schema = json!({"type": ["string", "null"], "enum": ["a", "b", null]})
            .try_into()
            .unwrap();
        kubernetes_compat(&mut schema);
        assert_eq!(
            schema.as_value(),
            &json!({"type": "string", "enum": ["a", "b"]})
        );
    }

    #[test]
    fn descriptions_keep_paragraphs_but_not_line_breaks() {
        let mut schema: Schema = json!({"description": "one\ntwo\n\nthree"})
            .try_into()
            .unwrap();
        kubernetes_compat(&mut schema);
        assert_eq!(schema.get("description"), Some(&json!("one two\n\nthree")));
    }

    #[test]
    fn explicit_maximum_is_kept() {
        let mut schema: Schema = json!({"type": "integer", "format": "uint32", "maximum": 64})
            .try_into()
            .unwrap();
        kubernetes_compat(&mut schema);
        assert_eq!(schema.get("maximum"), Some(&json!(64)));
    }
}
