//! Label selectors (`=`, `==`, `!=`, `in`, `notin`, `key`, `!key`) and field selectors
//! (`=`, `==`, `!=` on the fields each resource supports), parsed like apimachinery does.

use serde_json::Value;

use super::errors::ApiError;
use super::objects::{meta, path_str};

#[derive(Debug, Clone, PartialEq)]
enum LabelReq {
    Eq(String, String),
    NotEq(String, String),
    In(String, Vec<String>),
    NotIn(String, Vec<String>),
    Exists(String),
    NotExists(String),
}

#[derive(Debug, Clone, Default)]
pub struct LabelSelector(Vec<LabelReq>);

impl LabelSelector {
    pub fn parse(s: &str) -> Result<LabelSelector, ApiError> {
        let mut reqs = Vec::new();
        for term in split_top_level(s) {
            let t = term.trim();
            if t.is_empty() {
                continue;
            }
            reqs.push(parse_label_term(t).ok_or_else(|| {
                ApiError::bad_request(format!(
                    "unable to parse requirement: found '{t}', expected: valid label selector"
                ))
            })?);
        }
        Ok(LabelSelector(reqs))
    }

    pub fn matches(&self, obj: &Value) -> bool {
        let labels = meta(obj).and_then(|m| m.get("labels")).and_then(Value::as_object);
        let get = |k: &str| labels.and_then(|l| l.get(k)).and_then(Value::as_str);
        self.0.iter().all(|r| match r {
            LabelReq::Eq(k, v) => get(k) == Some(v.as_str()),
            LabelReq::NotEq(k, v) => get(k) != Some(v.as_str()),
            LabelReq::In(k, vs) => get(k).is_some_and(|x| vs.iter().any(|v| v == x)),
            LabelReq::NotIn(k, vs) => get(k).is_none_or(|x| !vs.iter().any(|v| v == x)),
            LabelReq::Exists(k) => get(k).is_some(),
            LabelReq::NotExists(k) => get(k).is_none(),
        })
    }
}

/// Splits on commas outside parentheses (`a in (x,y),b`).
fn split_top_level(s: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let (mut depth, mut start) = (0i32, 0usize);
    for (i, c) in s.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            ',' if depth == 0 => {
                out.push(&s[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    out.push(&s[start..]);
    out
}

fn valid_key(k: &str) -> bool {
    !k.is_empty() && k.chars().all(|c| c.is_ascii_alphanumeric() || "-_./".contains(c))
}

fn valid_value(v: &str) -> bool {
    v.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
}

fn parse_label_term(t: &str) -> Option<LabelReq> {
    if let Some(k) = t.strip_prefix('!') {
        let k = k.trim();
        return valid_key(k).then(|| LabelReq::NotExists(k.to_string()));
    }
    for (op, is_in) in [(" notin ", false), (" in ", true)] {
        if let Some(idx) = t.find(op) {
            let k = t[..idx].trim();
            let rest = t[idx + op.len()..].trim();
            let inner = rest.strip_prefix('(')?.strip_suffix(')')?;
            let vals: Vec<String> = inner.split(',').map(|v| v.trim().to_string()).collect();
            if !valid_key(k) || !vals.iter().all(|v| valid_value(v)) {
                return None;
            }
            return Some(if is_in {
                LabelReq::In(k.into(), vals)
            } else {
                LabelReq::NotIn(k.into(), vals)
            });
        }
    }
    for (op, neg) in [("!=", true), ("==", false), ("=", false)] {
        if let Some(idx) = t.find(op) {
            let k = t[..idx].trim();
            let v = t[idx + op.len()..].trim();
            if !valid_key(k) || !valid_value(v) {
                return None;
            }
            return Some(if neg {
                LabelReq::NotEq(k.into(), v.into())
            } else {
                LabelReq::Eq(k.into(), v.into())
            });
        }
    }
    valid_key(t).then(|| LabelReq::Exists(t.to_string()))
}

#[derive(Debug, Clone, Default)]
pub struct FieldSelector(Vec<(String, bool, String)>);

impl FieldSelector {
    /// Parses and checks each field is one the resource supports ("field label not supported").
    pub fn parse(s: &str, bucket: &str, api_version: &str) -> Result<FieldSelector, ApiError> {
        let mut reqs = Vec::new();
        for term in s.split(',') {
            let t = term.trim();
            if t.is_empty() {
                continue;
            }
            let (k, neg, v) = if let Some((k, v)) = t.split_once("!=") {
                (k, true, v)
            } else if let Some((k, v)) = t.split_once("==") {
                (k, false, v)
            } else if let Some((k, v)) = t.split_once('=') {
                (k, false, v)
            } else {
                return Err(ApiError::bad_request(format!(
                    "invalid selector: '{s}'; can't understand '{t}'"
                )));
            };
            let k = canonical_field(bucket, api_version, k.trim());
            if !supported_fields(bucket).contains(&k.as_str()) {
                return Err(ApiError::bad_request(format!("field label not supported: {}", k)));
            }
            reqs.push((k, neg, v.trim().to_string()));
        }
        Ok(FieldSelector(reqs))
    }

    pub fn matches(&self, bucket: &str, obj: &Value) -> bool {
        self.0
            .iter()
            .all(|(k, neg, v)| (field_value(bucket, obj, k) == *v) != *neg)
    }
}

/// events.k8s.io field labels are converted to the core Event ones before matching.
fn canonical_field(bucket: &str, api_version: &str, k: &str) -> String {
    if bucket == "events" && api_version == "events.k8s.io/v1" {
        if let Some(rest) = k.strip_prefix("regarding.") {
            return format!("involvedObject.{rest}");
        }
        match k {
            "reportingController" => return "reportingComponent".into(),
            "deprecatedSource" => return "source".into(),
            _ => {}
        }
    }
    k.to_string()
}

fn supported_fields(bucket: &str) -> &'static [&'static str] {
    match bucket {
        "pods" => &[
            "metadata.name",
            "metadata.namespace",
            "spec.nodeName",
            "spec.restartPolicy",
            "spec.schedulerName",
            "spec.serviceAccountName",
            "spec.hostNetwork",
            "status.phase",
            "status.podIP",
            "status.podIPs",
            "status.nominatedNodeName",
        ],
        "events" => &[
            "metadata.name",
            "metadata.namespace",
            "involvedObject.kind",
            "involvedObject.namespace",
            "involvedObject.name",
            "involvedObject.uid",
            "involvedObject.apiVersion",
            "involvedObject.resourceVersion",
            "involvedObject.fieldPath",
            "reason",
            "reportingComponent",
            "source",
            "type",
        ],
        "nodes" => &["metadata.name", "spec.unschedulable"],
        "namespaces" => &["metadata.name", "status.phase"],
        "secrets" => &["metadata.name", "metadata.namespace", "type"],
        _ => &["metadata.name", "metadata.namespace"],
    }
}

fn field_value(bucket: &str, obj: &Value, k: &str) -> String {
    match (bucket, k) {
        ("pods", "spec.hostNetwork") => obj
            .pointer("/spec/hostNetwork")
            .and_then(Value::as_bool)
            .unwrap_or(false)
            .to_string(),
        ("nodes", "spec.unschedulable") => obj
            .pointer("/spec/unschedulable")
            .and_then(Value::as_bool)
            .unwrap_or(false)
            .to_string(),
        ("pods", "status.podIPs") => path_str(obj, "status.podIP").to_string(),
        ("events", "source") => {
            let c = path_str(obj, "source.component");
            if c.is_empty() {
                path_str(obj, "reportingComponent").to_string()
            } else {
                c.to_string()
            }
        }
        _ => path_str(obj, k).to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn obj(labels: Value) -> Value {
        json!({"metadata": {"name": "x", "labels": labels}, "spec": {"nodeName": "n1"}, "status": {"phase": "Running"}})
    }

    #[test]
    fn label_selector_operators() {
        let o = obj(json!({"app": "web", "tier": "fe"}));
        let cases = [
            ("app=web", true),
            ("app==web", true),
            ("app!=web", false),
            ("app in (web, db)", true),
            ("app notin (web)", false),
            ("tier", true),
            ("!tier", false),
            ("!missing", true),
            ("app=web,tier=be", false),
            ("missing notin (a)", true),
            ("", true),
        ];
        for (sel, want) in cases {
            assert_eq!(LabelSelector::parse(sel).unwrap().matches(&o), want, "{sel}");
        }
        assert!(LabelSelector::parse("a in b").is_err());
    }

    #[test]
    fn field_selector_on_pods() {
        let o = obj(json!({}));
        let f = |s: &str| FieldSelector::parse(s, "pods", "v1").unwrap().matches("pods", &o);
        assert!(f("spec.nodeName=n1"));
        assert!(!f("spec.nodeName!=n1"));
        assert!(f("status.phase==Running,metadata.name=x"));
        assert!(!f("spec.nodeName="));
        let err = FieldSelector::parse("spec.foo=1", "pods", "v1").unwrap_err();
        assert_eq!(err.code, 400);
        assert_eq!(err.message, "field label not supported: spec.foo");
    }
}
