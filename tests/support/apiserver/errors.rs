//! API errors as the real server reports them: a `v1 Status` with reason, code, message and
//! details, worded like `pods "x" not found`.

use serde_json::{json, Value};

/// One failed API request, rendered as a `Status` body with `code` as the HTTP status.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{code} {reason}: {message}")]
pub struct ApiError {
    pub code: u16,
    pub reason: &'static str,
    pub message: String,
    pub details: Option<Value>,
}

/// A field error of an `Invalid` Status (`field.Error` in apimachinery).
pub struct FieldError {
    pub kind: FieldErrorKind,
    pub field: String,
    pub detail: String,
    pub value: Option<Value>,
}

#[derive(Clone, Copy)]
pub enum FieldErrorKind {
    Required,
    Invalid,
    Duplicate,
    NotSupported,
    Forbidden,
}

impl FieldError {
    pub fn required(field: impl Into<String>, detail: impl Into<String>) -> FieldError {
        FieldError {
            kind: FieldErrorKind::Required,
            field: field.into(),
            detail: detail.into(),
            value: None,
        }
    }
    pub fn invalid(field: impl Into<String>, value: Value, detail: impl Into<String>) -> FieldError {
        FieldError {
            kind: FieldErrorKind::Invalid,
            field: field.into(),
            detail: detail.into(),
            value: Some(value),
        }
    }
    pub fn duplicate(field: impl Into<String>, value: Value) -> FieldError {
        FieldError {
            kind: FieldErrorKind::Duplicate,
            field: field.into(),
            detail: String::new(),
            value: Some(value),
        }
    }
    pub fn not_supported(field: impl Into<String>, value: Value, valid: &[&str]) -> FieldError {
        let quoted: Vec<String> = valid.iter().map(|v| format!("\"{v}\"")).collect();
        FieldError {
            kind: FieldErrorKind::NotSupported,
            field: field.into(),
            detail: format!("supported values: {}", quoted.join(", ")),
            value: Some(value),
        }
    }
    pub fn forbidden(field: impl Into<String>, detail: impl Into<String>) -> FieldError {
        FieldError {
            kind: FieldErrorKind::Forbidden,
            field: field.into(),
            detail: detail.into(),
            value: None,
        }
    }

    fn type_text(&self) -> (&'static str, &'static str) {
        match self.kind {
            FieldErrorKind::Required => ("FieldValueRequired", "Required value"),
            FieldErrorKind::Invalid => ("FieldValueInvalid", "Invalid value"),
            FieldErrorKind::Duplicate => ("FieldValueDuplicate", "Duplicate value"),
            FieldErrorKind::NotSupported => ("FieldValueNotSupported", "Unsupported value"),
            FieldErrorKind::Forbidden => ("FieldValueForbidden", "Forbidden"),
        }
    }

    /// `field.Error.ErrorBody()`: "Invalid value: \"x\": detail".
    fn body(&self) -> String {
        let (_, text) = self.type_text();
        let mut s = text.to_string();
        if let Some(v) = &self.value {
            if !matches!(self.kind, FieldErrorKind::Required | FieldErrorKind::Forbidden) {
                s.push_str(": ");
                s.push_str(&v.to_string());
            }
        }
        if !self.detail.is_empty() {
            s.push_str(": ");
            s.push_str(&self.detail);
        }
        s
    }
}

impl ApiError {
    pub fn new(code: u16, reason: &'static str, message: impl Into<String>) -> ApiError {
        ApiError {
            code,
            reason,
            message: message.into(),
            details: None,
        }
    }

    pub fn not_found(resource: &str, group: &str, name: &str) -> ApiError {
        let qualified = qualified(resource, group);
        ApiError {
            code: 404,
            reason: "NotFound",
            message: format!("{qualified} \"{name}\" not found"),
            details: Some(details(name, group, resource)),
        }
    }

    pub fn already_exists(resource: &str, group: &str, name: &str) -> ApiError {
        let qualified = qualified(resource, group);
        ApiError {
            code: 409,
            reason: "AlreadyExists",
            message: format!("{qualified} \"{name}\" already exists"),
            details: Some(details(name, group, resource)),
        }
    }

    pub fn conflict(resource: &str, group: &str, name: &str, why: &str) -> ApiError {
        let qualified = qualified(resource, group);
        ApiError {
            code: 409,
            reason: "Conflict",
            message: format!("Operation cannot be fulfilled on {qualified} \"{name}\": {why}"),
            details: Some(details(name, group, resource)),
        }
    }

    pub fn modified(resource: &str, group: &str, name: &str) -> ApiError {
        ApiError::conflict(
            resource,
            group,
            name,
            "the object has been modified; please apply your changes to the latest version and try again",
        )
    }

    pub fn invalid(kind: &str, group: &str, name: &str, errors: Vec<FieldError>) -> ApiError {
        let bodies: Vec<String> = errors.iter().map(|e| format!("{}: {}", e.field, e.body())).collect();
        let list = if bodies.len() == 1 {
            bodies[0].clone()
        } else {
            format!("[{}]", bodies.join(", "))
        };
        let causes: Vec<Value> = errors
            .iter()
            .map(|e| json!({"reason": e.type_text().0, "message": e.body(), "field": e.field}))
            .collect();
        let mut d = json!({"name": name, "kind": kind, "causes": causes});
        if !group.is_empty() {
            d["group"] = json!(group);
        }
        ApiError {
            code: 422,
            reason: "Invalid",
            message: format!("{kind} \"{name}\" is invalid: {list}"),
            details: Some(d),
        }
    }

    pub fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError::new(400, "BadRequest", message)
    }

    pub fn method_not_allowed() -> ApiError {
        ApiError::new(
            405,
            "MethodNotAllowed",
            "the server does not allow this method on the requested resource",
        )
    }

    pub fn unsupported_media_type(content_type: &str) -> ApiError {
        ApiError::new(415, "UnsupportedMediaType", format!("the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml, application/strategic-merge-patch+json (got {content_type:?})"))
    }

    pub fn gone(message: impl Into<String>) -> ApiError {
        ApiError::new(410, "Expired", message)
    }

    pub fn unavailable(message: impl Into<String>) -> ApiError {
        ApiError::new(503, "ServiceUnavailable", message)
    }

    pub fn page_not_found() -> ApiError {
        ApiError {
            code: 404,
            reason: "NotFound",
            message: "the server could not find the requested resource".into(),
            details: Some(json!({})),
        }
    }

    pub fn to_status(&self) -> Value {
        let mut s = json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "code": self.code,
        });
        // A plain (non-Status) error in kube-apiserver has no reason (StatusReasonUnknown, omitted).
        if !self.reason.is_empty() {
            s["reason"] = json!(self.reason);
        }
        if let Some(d) = &self.details {
            s["details"] = d.clone();
        }
        s
    }
}

fn qualified(resource: &str, group: &str) -> String {
    if group.is_empty() {
        resource.to_string()
    } else {
        format!("{resource}.{group}")
    }
}

fn details(name: &str, group: &str, resource: &str) -> Value {
    let mut d = json!({"name": name, "kind": resource});
    if !group.is_empty() {
        d["group"] = json!(group);
    }
    d
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_match_the_real_server() {
        assert_eq!(ApiError::not_found("pods", "", "x").message, "pods \"x\" not found");
        assert_eq!(
            ApiError::not_found("leases", "coordination.k8s.io", "n1").message,
            "leases.coordination.k8s.io \"n1\" not found"
        );
        let e = ApiError::invalid("Pod", "", "p", vec![FieldError::required("spec.containers", "")]);
        assert_eq!(e.message, "Pod \"p\" is invalid: spec.containers: Required value");
        assert_eq!(e.to_status()["details"]["causes"][0]["reason"], "FieldValueRequired");
    }
}
