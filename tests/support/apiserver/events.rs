//! Events are stored once, as core/v1 Events, and served through both APIs with the real
//! conversion (`pkg/apis/events/v1/conversion.go`): note↔message, regarding↔involvedObject,
//! reportingController↔reportingComponent, deprecatedSource↔source,
//! deprecated{First,Last}Timestamp/Count↔{first,last}Timestamp/count.

use serde_json::{Map, Value};

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

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn round_trip_keeps_fields() {
        let ev = json!({"apiVersion": "events.k8s.io/v1", "kind": "Event", "metadata": {"name": "e"},
            "eventTime": "2024-01-01T00:00:00.000001Z", "note": "Started container", "reason": "Started",
            "regarding": {"kind": "Pod", "name": "p"}, "reportingController": "kubelet", "reportingInstance": "n1",
            "action": "Started", "type": "Normal", "series": {"count": 2, "lastObservedTime": "2024-01-01T00:00:01.000000Z"}});
        let core = to_core(&ev);
        assert_eq!(core["message"], "Started container");
        assert_eq!(core["involvedObject"]["name"], "p");
        assert_eq!(core["reportingComponent"], "kubelet");
        assert_eq!(core["apiVersion"], "v1");
        assert_eq!(to_events_v1(&core), ev);
    }
}
