//! Events are stored once, as core/v1 Events, and served through both APIs with the real
//! conversion (`pkg/apis/events/v1/conversion.go`): note↔message, regarding↔involvedObject,
//! reportingController↔reportingComponent, deprecatedSource↔source,
//! deprecated{First,Last}Timestamp/Count↔{first,last}Timestamp/count.

use serde_json::{json, Map, Value};

use super::errors::FieldError;

/// (events.k8s.io/v1 field, core/v1 field) pairs that only change name.
const RENAMES: &[(&str, &str)] = &[
    ("note", "message"),
    ("regarding", "involvedObject"),
    ("reportingController", "reportingComponent"),
    ("deprecatedSource", "source"),
    ("deprecatedFirstTimestamp", "firstTimestamp"),
    ("deprecatedLastTimestamp", "lastTimestamp"),
    ("deprecatedCount", "count"),
];

/// events.k8s.io/v1 Event → core/v1 Event.
pub fn to_core(obj: &Value) -> Value {
    let mut out = Map::new();
    if let Some(m) = obj.as_object() {
        for (k, v) in m {
            let core = RENAMES
                .iter()
                .find(|(new, _)| new == k)
                .map(|(_, core)| *core)
                .unwrap_or(k);
            out.insert(core.to_string(), v.clone());
        }
    }
    out.insert("apiVersion".into(), Value::from("v1"));
    out.insert("kind".into(), Value::from("Event"));
    Value::Object(out)
}

/// core/v1 Event → events.k8s.io/v1 Event.
pub fn to_events_v1(obj: &Value) -> Value {
    let mut out = Map::new();
    if let Some(m) = obj.as_object() {
        for (k, v) in m {
            let new = RENAMES
                .iter()
                .find(|(_, core)| core == k)
                .map(|(new, _)| *new)
                .unwrap_or(k);
            out.insert(new.to_string(), v.clone());
        }
    }
    out.insert("apiVersion".into(), Value::from("events.k8s.io/v1"));
    out.insert("kind".into(), Value::from("Event"));
    // Empty deprecated fields are dropped on output, like the typed conversion's omitempty.
    for k in [
        "deprecatedSource",
        "deprecatedFirstTimestamp",
        "deprecatedLastTimestamp",
        "deprecatedCount",
    ] {
        let empty = match out.get(k) {
            Some(Value::Object(m)) => m.values().all(|v| v.as_str() == Some("")),
            Some(Value::Null) => true,
            Some(Value::Number(n)) => n.as_i64() == Some(0),
            _ => false,
        };
        if empty {
            out.remove(k);
        }
    }
    Value::Object(out)
}

/// `ValidateEventCreate` for requests through events.k8s.io/v1 (on the events.k8s.io form).
pub fn validate_events_v1(ev: &Value) -> Vec<FieldError> {
    let mut errs = Vec::new();
    let s = |k: &str| ev.get(k).and_then(Value::as_str).unwrap_or("");
    if let Some(series) = ev.get("series").filter(|v| !v.is_null()) {
        if series.get("count").and_then(Value::as_i64).unwrap_or(0) < 2 {
            errs.push(FieldError::invalid("series.count", json!(""), "should be at least 2"));
        }
        if series
            .get("lastObservedTime")
            .and_then(Value::as_str)
            .unwrap_or("")
            .is_empty()
        {
            errs.push(FieldError::required("series.lastObservedTime", ""));
        }
    }
    if s("eventTime").is_empty() {
        errs.push(FieldError::required("eventTime", ""));
    }
    let ty = s("type");
    if ty != "Normal" && ty != "Warning" {
        errs.push(FieldError::invalid(
            "type",
            json!(""),
            format!("has invalid value: {ty}"),
        ));
    }
    // Validation runs on the internal (core) Event, so the messages name the core fields.
    for (k, core) in [
        ("deprecatedFirstTimestamp", "firstTimestamp"),
        ("deprecatedLastTimestamp", "lastTimestamp"),
    ] {
        if !s(k).is_empty() {
            errs.push(FieldError::invalid(core, json!(""), "needs to be unset"));
        }
    }
    if ev.get("deprecatedCount").and_then(Value::as_i64).unwrap_or(0) != 0 {
        errs.push(FieldError::invalid("count", json!(""), "needs to be unset"));
    }
    let src = ev.get("deprecatedSource");
    let src_set = |k: &str| {
        src.and_then(|v| v.get(k))
            .and_then(Value::as_str)
            .is_some_and(|v| !v.is_empty())
    };
    if src_set("component") || src_set("host") {
        errs.push(FieldError::invalid("source", json!(""), "needs to be unset"));
    }
    for (k, max) in [
        ("reportingController", 128),
        ("reportingInstance", 128),
        ("action", 128),
        ("reason", 128),
    ] {
        let v = s(k);
        if v.is_empty() {
            errs.push(FieldError::required(k, ""));
        } else if v.len() > max {
            errs.push(FieldError::invalid(
                k,
                json!(""),
                format!("can have at most {max} characters"),
            ));
        }
    }
    if s("note").len() > 1024 {
        errs.push(FieldError::invalid(
            "message",
            json!(""),
            "can have at most 1024 characters",
        ));
    }
    // legacyValidateEvent: a cluster-scoped subject's events live in default or kube-system.
    let ns = ev.pointer("/metadata/namespace").and_then(Value::as_str).unwrap_or("");
    let regarding_ns = ev.pointer("/regarding/namespace").and_then(Value::as_str).unwrap_or("");
    if regarding_ns.is_empty() && ns != "default" && ns != "kube-system" {
        errs.push(FieldError::invalid(
            "involvedObject.namespace",
            json!(regarding_ns),
            "does not match event.namespace",
        ));
    }
    errs
}

/// `ValidateEventUpdate` for events.k8s.io/v1 (on the core forms of old and new).
pub fn validate_update_events_v1(old: &Value, new: &Value) -> Vec<FieldError> {
    let mut errs = Vec::new();
    if new.get("series") != old.get("series") {
        if let Some(series) = new.get("series").filter(|v| !v.is_null()) {
            if series.get("count").and_then(Value::as_i64).unwrap_or(0) < 2 {
                errs.push(FieldError::invalid("series.count", json!(""), "should be at least 2"));
            }
            if series
                .get("lastObservedTime")
                .and_then(Value::as_str)
                .unwrap_or("")
                .is_empty()
            {
                errs.push(FieldError::required("series.lastObservedTime", ""));
            }
        }
    }
    let immutable = [
        "involvedObject",
        "reason",
        "message",
        "source",
        "firstTimestamp",
        "lastTimestamp",
        "count",
        "type",
        "action",
        "related",
        "reportingComponent",
        "reportingInstance",
    ];
    let absent = |v: Option<&Value>| v.is_none_or(Value::is_null);
    for k in immutable {
        let (o, n) = (old.get(k), new.get(k));
        if o != n && !(absent(o) && absent(n)) {
            errs.push(FieldError::invalid(
                k,
                n.cloned().unwrap_or(Value::Null),
                "field is immutable",
            ));
        }
    }
    // eventTime may only change below microsecond precision.
    let micros = |v: &Value| {
        v.get("eventTime")
            .and_then(Value::as_str)
            .and_then(|t| t.parse::<jiff::Timestamp>().ok())
            .map(|t| t.as_microsecond())
    };
    if micros(old) != micros(new) {
        errs.push(FieldError::invalid(
            "eventTime",
            new.get("eventTime").cloned().unwrap_or(Value::Null),
            "field is immutable",
        ));
    }
    errs
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn round_trip_keeps_fields() {
        let ev = json!({"apiVersion": "events.k8s.io/v1", "kind": "Event", "metadata": {"name": "e", "namespace": "default"},
            "eventTime": "2024-01-01T00:00:00.000001Z", "note": "Started container", "reason": "Started",
            "regarding": {"kind": "Pod", "name": "p"}, "reportingController": "kubelet", "reportingInstance": "n1",
            "action": "Started", "type": "Normal", "series": {"count": 2, "lastObservedTime": "2024-01-01T00:00:01.000000Z"}});
        let core = to_core(&ev);
        assert_eq!(core["message"], "Started container");
        assert_eq!(core["involvedObject"]["name"], "p");
        assert_eq!(core["reportingComponent"], "kubelet");
        assert_eq!(core["apiVersion"], "v1");
        assert_eq!(to_events_v1(&core), ev);
        assert!(validate_events_v1(&ev).is_empty());
        let bad = json!({"type": "Odd", "reason": "R"});
        assert_eq!(validate_events_v1(&bad).len(), 6);
        let mut later = core.clone();
        later["series"] = json!({"count": 3, "lastObservedTime": "2024-01-01T00:00:02.000000Z"});
        assert!(validate_update_events_v1(&core, &later).is_empty());
        later["message"] = json!("changed");
        assert_eq!(validate_update_events_v1(&core, &later).len(), 1);
    }
}
