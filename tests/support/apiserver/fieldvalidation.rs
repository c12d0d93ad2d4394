//! Server-side field validation (`fieldValidation=Strict`, what kubectl sends): fields the
//! kind's schema does not know are rejected with `strict decoding error: unknown field "…"`.
//! The schema is k8s-openapi's typed object: a field that does not survive a typed round trip
//! is unknown. Bodies the typed decoder cannot read at all are left to the other checks.

use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::Value;

use super::errors::ApiError;

fn round_trip<T: DeserializeOwned + Serialize>(obj: &Value) -> Option<Value> {
    let typed: T = serde_json::from_value(obj.clone()).ok()?;
    serde_json::to_value(typed).ok()
}

fn unknown(orig: &Value, round: &Value, path: &str, out: &mut Vec<String>) {
    match (orig, round) {
        (Value::Object(o), Value::Object(r)) => {
            for (k, v) in o {
                if v.is_null() {
                    continue;
                }
                let p = if path.is_empty() {
                    k.clone()
                } else {
                    format!("{path}.{k}")
                };
                match r.get(k) {
                    Some(rv) => unknown(v, rv, &p, out),
                    None => out.push(p),
                }
            }
        }
        (Value::Array(o), Value::Array(r)) => {
            for (i, (v, rv)) in o.iter().zip(r.iter()).enumerate() {
                unknown(v, rv, &format!("{path}[{i}]"), out);
            }
        }
        _ => {}
    }
}

/// Checks `obj` (in the request's API version) when the request asked for Strict validation.
pub fn check_strict(api_version: &str, kind: &str, obj: &Value) -> Result<(), ApiError> {
    use k8s_openapi::api::{coordination, core, events};
    let round = match (api_version, kind) {
        ("v1", "Pod") => round_trip::<core::v1::Pod>(obj),
        ("v1", "ConfigMap") => round_trip::<core::v1::ConfigMap>(obj),
        ("v1", "Secret") => round_trip::<core::v1::Secret>(obj),
        ("v1", "Namespace") => round_trip::<core::v1::Namespace>(obj),
        ("v1", "Node") => round_trip::<core::v1::Node>(obj),
        ("v1", "ServiceAccount") => round_trip::<core::v1::ServiceAccount>(obj),
        ("v1", "Service") => round_trip::<core::v1::Service>(obj),
        ("v1", "Event") => round_trip::<core::v1::Event>(obj),
        ("events.k8s.io/v1", "Event") => round_trip::<events::v1::Event>(obj),
        ("coordination.k8s.io/v1", "Lease") => round_trip::<coordination::v1::Lease>(obj),
        _ => None,
    };
    let Some(round) = round else { return Ok(()) };
    let mut found = Vec::new();
    unknown(obj, &round, "", &mut found);
    if found.is_empty() {
        return Ok(());
    }
    let list: Vec<String> = found.iter().map(|f| format!("unknown field \"{f}\"")).collect();
    Err(ApiError::bad_request(format!(
        "strict decoding error: {}",
        list.join(", ")
    )))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn unknown_fields_are_named_with_their_path() {
        let pod = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", "labels": {"any": "x"}},
            "spec": {"containers": [{"name": "c", "image": "x", "imagee": "y"}], "securityContext": {}}, "bogus": 1});
        let err = check_strict("v1", "Pod", &pod).unwrap_err();
        assert_eq!(err.code, 400);
        assert!(err.message.starts_with("strict decoding error: "), "{}", err.message);
        assert!(err.message.contains("unknown field \"bogus\""), "{}", err.message);
        assert!(
            err.message.contains("unknown field \"spec.containers[0].imagee\""),
            "{}",
            err.message
        );
        let ok = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}, "data": {"k": "v"}});
        assert!(check_strict("v1", "ConfigMap", &ok).is_ok());
    }
}
