//! What Kubernetes checks on `apps/v1` workloads (Deployments, DaemonSets) beyond their
//! OpenAPI schema, the checks a chart most often trips over: the selector is not empty, it
//! selects the pod template's labels, and it never changes after creation.

use serde_json::{Value, json};

use crate::error::Cause;
use crate::selector::LabelSelector;

/// The causes for a workload of `kind` (`obj`, already schema-valid) replacing `old`, if any.
pub(super) fn check(kind: &str, obj: &Value, old: Option<&Value>) -> Vec<Cause> {
    let mut causes = Vec::new();
    let Some(selector) = obj.pointer("/spec/selector") else {
        return causes;
    };
    if let Some(old_selector) = old.and_then(|o| o.pointer("/spec/selector"))
        && old_selector != selector
    {
        causes.push(Cause::invalid(
            "spec.selector",
            format!("Invalid value: {selector}: field is immutable"),
        ));
    }
    match selector_text(selector) {
        None => causes.push(Cause::invalid(
            "spec.selector",
            format!("Invalid value: {selector}: invalid label selector"),
        )),
        Some(text) if text.is_empty() => causes.push(Cause::invalid(
            "spec.selector",
            format!(
                "Invalid value: {selector}: empty selector is invalid for {}",
                kind.to_lowercase()
            ),
        )),
        Some(text) => {
            let labels = obj
                .pointer("/spec/template/metadata/labels")
                .cloned()
                .unwrap_or_else(|| json!({}));
            let template = json!({"metadata": {"labels": labels}});
            let selects = LabelSelector::parse(&text).is_ok_and(|s| s.matches(&template));
            if !selects {
                causes.push(Cause::invalid(
                    "spec.template.metadata.labels",
                    format!("Invalid value: {labels}: `selector` does not match template `labels`"),
                ));
            }
        }
    }
    causes
}

/// A `LabelSelector` object in the text form Kubernetes writes (`a=b,c in (d,e),!f`, terms
/// and set values sorted), or `None` when an operator is unknown or a value could not be
/// written in that form.
pub(super) fn selector_text(selector: &Value) -> Option<String> {
    let mut terms: Vec<(&str, String)> = Vec::new();
    for (k, v) in selector
        .get("matchLabels")
        .and_then(Value::as_object)
        .into_iter()
        .flatten()
    {
        terms.push((k, format!("{k}={}", v.as_str()?)));
    }
    for e in selector
        .get("matchExpressions")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let key = e.get("key").and_then(Value::as_str)?;
        let mut values: Vec<&str> = e
            .get("values")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .map(Value::as_str)
            .collect::<Option<_>>()?;
        values.sort_unstable();
        let term = match e.get("operator").and_then(Value::as_str)? {
            "In" => format!("{key} in ({})", values.join(",")),
            "NotIn" => format!("{key} notin ({})", values.join(",")),
            "Exists" => key.to_string(),
            "DoesNotExist" => format!("!{key}"),
            _ => return None,
        };
        terms.push((key, term));
    }
    terms.sort_by_key(|(key, _)| *key);
    let terms: Vec<String> = terms.into_iter().map(|(_, t)| t).collect();
    Some(terms.join(","))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn deployment(selector: &Value, labels: &Value) -> Value {
        json!({"spec": {"selector": selector, "template": {"metadata": {"labels": labels}}}})
    }

    #[test]
    fn a_selector_must_select_the_template() {
        let selector = json!({"matchLabels": {"app": "web"}, "matchExpressions": [{"key": "tier", "operator": "In", "values": ["a", "b"]}]});
        assert!(
            check(
                "Deployment",
                &deployment(&selector, &json!({"app": "web", "tier": "a"})),
                None
            )
            .is_empty()
        );
        let causes = check(
            "Deployment",
            &deployment(&selector, &json!({"app": "api", "tier": "a"})),
            None,
        );
        assert_eq!(causes.len(), 1);
        assert_eq!(causes[0].field, "spec.template.metadata.labels");
        let empty = check(
            "Deployment",
            &deployment(&json!({}), &json!({"app": "web"})),
            None,
        );
        assert_eq!(empty[0].field, "spec.selector");
    }

    #[test]
    fn a_selector_never_changes() {
        let old = deployment(
            &json!({"matchLabels": {"app": "web"}}),
            &json!({"app": "web"}),
        );
        let new = deployment(
            &json!({"matchLabels": {"app": "web", "v": "2"}}),
            &json!({"app": "web", "v": "2"}),
        );
        let causes = check("Deployment", &new, Some(&old));
        assert_eq!(causes.len(), 1);
        assert!(causes[0].message.ends_with("field is immutable"));
        assert!(check("Deployment", &old, Some(&old)).is_empty());
    }

    #[test]
    fn selector_text_sorts_terms_by_key_and_set_values() {
        let selector = json!({"matchLabels": {"tier": "web", "app": "a"},
            "matchExpressions": [{"key": "env", "operator": "NotIn", "values": ["prod", "dev"]},
                {"key": "zz", "operator": "DoesNotExist"}, {"key": "b", "operator": "Exists"}]});
        assert_eq!(
            selector_text(&selector).as_deref(),
            Some("app=a,b,env notin (dev,prod),tier=web,!zz")
        );
        assert_eq!(selector_text(&json!({})).as_deref(), Some(""));
    }
}
