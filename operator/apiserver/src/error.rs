//! Errors as Kubernetes `Status` objects.
//!
//! Every failure the server reports is an [`ApiError`]; it renders as the `Status` body, HTTP
//! code and `reason` that a real API server would send, so kubectl and kube-rs print the same
//! messages they would against a real cluster.

use serde_json::{Value, json};

/// One field-level cause inside an `Invalid` error.
#[derive(Debug, Clone, PartialEq)]
pub struct Cause {
    /// `FieldValueInvalid`, `FieldValueRequired`, `FieldValueNotSupported`, ...
    pub reason: &'static str,
    /// Field path such as `spec.cpus`.
    pub field: String,
    pub message: String,
}

impl Cause {
    pub fn invalid(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            reason: "FieldValueInvalid",
            field: field.into(),
            message: message.into(),
        }
    }

    pub fn required(field: impl Into<String>) -> Self {
        Self {
            reason: "FieldValueRequired",
            field: field.into(),
            message: "Required value".into(),
        }
    }

    pub fn unsupported(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            reason: "FieldValueNotSupported",
            field: field.into(),
            message: message.into(),
        }
    }

    pub fn unknown(field: impl Into<String>) -> Self {
        let field = field.into();
        let message = format!("unknown field \"{field}\"");
        Self {
            reason: "FieldValueInvalid",
            field,
            message,
        }
    }

    /// The one-line form used in the Status message: `spec.cpus: Invalid value: ...`.
    pub fn line(&self) -> String {
        if self.field.is_empty() {
            return self.message.clone();
        }
        format!("{}: {}", self.field, self.message)
    }
}

/// A Kubernetes API error.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{reason} ({code}): {message}")]
pub struct ApiError {
    pub code: u16,
    pub reason: &'static str,
    pub message: String,
    pub details: Option<Box<Details>>,
}

/// The `details` block of a `Status`.
#[derive(Debug, Clone, Default)]
pub struct Details {
    pub name: String,
    pub group: String,
    pub kind: String,
    pub causes: Vec<Cause>,
}

pub type Result<T, E = ApiError> = std::result::Result<T, E>;

impl ApiError {
    pub fn new(code: u16, reason: &'static str, message: impl Into<String>) -> Self {
        Self {
            code,
            reason,
            message: message.into(),
            details: None,
        }
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(400, "BadRequest", message)
    }

    pub fn unauthorized() -> Self {
        Self::new(401, "Unauthorized", "Unauthorized")
    }

    /// `microvms.quiver.dev "demo" is forbidden: <why>` (`forbidden: <why>` for paths), the
    /// 403 of Kubernetes' authorizer.
    pub fn forbidden(group: &str, resource: &str, name: &str, why: &str) -> Self {
        let message = match (resource, name) {
            ("", _) => format!("forbidden: {why}"),
            (_, "") => format!("{} is forbidden: {why}", group_resource(group, resource)),
            _ => format!(
                "{} \"{name}\" is forbidden: {why}",
                group_resource(group, resource)
            ),
        };
        Self::new(403, "Forbidden", message).with_details(name, group, resource, Vec::new())
    }

    pub fn not_found_path(path: &str) -> Self {
        Self::new(
            404,
            "NotFound",
            format!("the server could not find the requested resource ({path})"),
        )
    }

    /// `microvms.quiver.dev "demo" not found`.
    pub fn not_found(group: &str, resource: &str, name: &str) -> Self {
        let gr = group_resource(group, resource);
        Self::new(404, "NotFound", format!("{gr} \"{name}\" not found")).with_details(
            name,
            group,
            resource,
            Vec::new(),
        )
    }

    pub fn already_exists(group: &str, resource: &str, name: &str) -> Self {
        let gr = group_resource(group, resource);
        Self::new(
            409,
            "AlreadyExists",
            format!("{gr} \"{name}\" already exists"),
        )
        .with_details(name, group, resource, Vec::new())
    }

    pub fn conflict(group: &str, resource: &str, name: &str, why: &str) -> Self {
        let gr = group_resource(group, resource);
        Self::new(
            409,
            "Conflict",
            format!("Operation cannot be fulfilled on {gr} \"{name}\": {why}"),
        )
        .with_details(name, group, resource, Vec::new())
    }

    /// `MicroVM.quiver.dev "demo" is invalid: spec.cpus: Invalid value: ...`.
    pub fn invalid(group: &str, kind: &str, name: &str, causes: Vec<Cause>) -> Self {
        let gk = group_resource(group, kind);
        let lines: Vec<String> = causes.iter().map(Cause::line).collect();
        let message = match lines.len() {
            0 => format!("{gk} \"{name}\" is invalid"),
            1 => format!("{gk} \"{name}\" is invalid: {}", lines[0]),
            _ => format!("{gk} \"{name}\" is invalid: [{}]", lines.join(", ")),
        };
        Self::new(422, "Invalid", message).with_details(name, group, kind, causes)
    }

    pub fn method_not_allowed(message: impl Into<String>) -> Self {
        Self::new(405, "MethodNotAllowed", message)
    }

    pub fn not_acceptable(message: impl Into<String>) -> Self {
        Self::new(406, "NotAcceptable", message)
    }

    pub fn gone(message: impl Into<String>) -> Self {
        Self::new(410, "Expired", message)
    }

    pub fn too_large(limit: usize) -> Self {
        Self::new(
            413,
            "RequestEntityTooLarge",
            format!("request body too large: limit is {limit} bytes"),
        )
    }

    pub fn unsupported_media_type(message: impl Into<String>) -> Self {
        Self::new(415, "UnsupportedMediaType", message)
    }

    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(500, "InternalError", message)
    }

    /// Details that hold only causes (an apply conflict's fields, for one).
    pub fn with_causes(self, causes: Vec<Cause>) -> Self {
        self.with_details("", "", "", causes)
    }

    fn with_details(mut self, name: &str, group: &str, kind: &str, causes: Vec<Cause>) -> Self {
        self.details = Some(Box::new(Details {
            name: name.to_string(),
            group: group.to_string(),
            kind: kind.to_string(),
            causes,
        }));
        self
    }

    /// The `Status` object sent as the response body.
    pub fn to_status(&self) -> Value {
        let mut status = json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.code,
        });
        if let Some(d) = &self.details {
            let causes: Vec<Value> = d
                .causes
                .iter()
                .map(|c| json!({"reason": c.reason, "message": c.message, "field": c.field}))
                .collect();
            // Empty fields are left out, as Go's `omitempty` leaves them out.
            let mut details = serde_json::Map::new();
            for (key, value) in [("name", &d.name), ("group", &d.group), ("kind", &d.kind)] {
                if !value.is_empty() {
                    details.insert(key.into(), json!(value));
                }
            }
            let mut details = Value::Object(details);
            if !causes.is_empty() {
                details["causes"] = Value::Array(causes);
            }
            status["details"] = details;
        }
        status
    }

    /// Short label for metrics and logs.
    pub fn metric_label(&self) -> &'static str {
        self.reason
    }
}

fn group_resource(group: &str, resource: &str) -> String {
    if group.is_empty() {
        resource.to_string()
    } else {
        format!("{resource}.{group}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn invalid_status_names_the_field() {
        let err = ApiError::invalid(
            "quiver.dev",
            "MicroVM",
            "demo",
            vec![Cause::invalid(
                "spec.cpus",
                "Invalid value: 0: should be greater than or equal to 1",
            )],
        );
        let status = err.to_status();
        assert_eq!(status["code"], 422);
        assert_eq!(status["reason"], "Invalid");
        assert_eq!(status["details"]["causes"][0]["field"], "spec.cpus");
        assert!(
            status["message"]
                .as_str()
                .unwrap_or_default()
                .contains("MicroVM.quiver.dev \"demo\" is invalid: spec.cpus")
        );
    }

    #[test]
    fn core_group_has_no_dot() {
        let err = ApiError::not_found("", "configmaps", "x");
        assert_eq!(err.message, "configmaps \"x\" not found");
    }
}
