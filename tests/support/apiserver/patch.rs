//! PATCH bodies: JSON merge patch (RFC 7386), JSON patch (RFC 6902) and strategic merge patch
//! with the patch strategies (`patchMergeKey`/`patchStrategy` tags) of the fields keel and
//! kubectl touch, plus the directives `$patch`, `$setElementOrder/`, `$retainKeys` and
//! `$deleteFromPrimitiveList/`.

use serde_json::{Map, Value};

use super::errors::ApiError;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PatchType {
    Json,
    Merge,
    Strategic,
}

impl PatchType {
    pub fn from_content_type(ct: &str) -> Option<PatchType> {
        match ct.split(';').next().unwrap_or("").trim() {
            "application/json-patch+json" => Some(PatchType::Json),
            "application/merge-patch+json" => Some(PatchType::Merge),
            "application/strategic-merge-patch+json" => Some(PatchType::Strategic),
            _ => None,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum PatchError {
    #[error("invalid patch body: {0}")]
    Parse(#[source] serde_json::Error),
    #[error("{0}")]
    Apply(String),
}

impl From<PatchError> for ApiError {
    fn from(e: PatchError) -> ApiError {
        match e {
            PatchError::Parse(_) => ApiError::bad_request(e.to_string()),
            PatchError::Apply(msg) => ApiError::new(422, "Invalid", msg),
        }
    }
}

/// Applies `body` of `ty` to `original` (an object of `kind`).
pub fn apply(ty: PatchType, kind: &str, original: &Value, body: &[u8]) -> Result<Value, PatchError> {
    match ty {
        PatchType::Json => {
            let p: json_patch::Patch = serde_json::from_slice(body).map_err(PatchError::Parse)?;
            let mut doc = original.clone();
            json_patch::patch(&mut doc, &p).map_err(|e| PatchError::Apply(e.to_string()))?;
            Ok(doc)
        }
        PatchType::Merge => {
            let p: Value = serde_json::from_slice(body).map_err(PatchError::Parse)?;
            let mut doc = original.clone();
            json_patch::merge(&mut doc, &p);
            Ok(doc)
        }
        PatchType::Strategic => {
            let p: Value = serde_json::from_slice(body).map_err(PatchError::Parse)?;
            strategic_merge(kind, original, &p)
        }
    }
}

/// How a list field merges (from the Go struct tags of the API types).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ListStrategy {
    MergeByKey(&'static str),
    MergePrimitives,
    Replace,
}

fn list_strategy(kind: &str, field: &str) -> ListStrategy {
    use ListStrategy::*;
    match field {
        "containers" | "initContainers" | "ephemeralContainers" => MergeByKey("name"),
        "conditions" => MergeByKey("type"),
        "env" | "volumes" | "imagePullSecrets" | "resourceClaims" | "secrets" => MergeByKey("name"),
        "ports" if kind == "Service" => MergeByKey("port"),
        "ports" => MergeByKey("containerPort"),
        "volumeMounts" => MergeByKey("mountPath"),
        "volumeDevices" => MergeByKey("devicePath"),
        "ownerReferences" => MergeByKey("uid"),
        "taints" => MergeByKey("key"),
        "addresses" => MergeByKey("type"),
        "hostAliases" | "podIPs" | "hostIPs" => MergeByKey("ip"),
        "topologySpreadConstraints" => MergeByKey("topologyKey"),
        "finalizers" => MergePrimitives,
        _ => Replace,
    }
}

pub fn strategic_merge(kind: &str, original: &Value, patch: &Value) -> Result<Value, PatchError> {
    let (Some(o), Some(p)) = (original.as_object(), patch.as_object()) else {
        return Err(PatchError::Apply("strategic merge patch must be a JSON object".into()));
    };
    Ok(Value::Object(merge_map(kind, o.clone(), p)?))
}

fn directive(v: &Value) -> Option<&str> {
    v.get("$patch").and_then(Value::as_str)
}

/// A patch value with its directives resolved against nothing (for fields absent in the original).
fn clean(kind: &str, field: &str, v: &Value) -> Result<Value, PatchError> {
    match v {
        Value::Object(m) => Ok(Value::Object(merge_map(kind, Map::new(), m)?)),
        Value::Array(a) => Ok(Value::Array(merge_list(kind, field, Vec::new(), a)?)),
        other => Ok(other.clone()),
    }
}

fn merge_map(
    kind: &str,
    mut orig: Map<String, Value>,
    patch: &Map<String, Value>,
) -> Result<Map<String, Value>, PatchError> {
    match patch.get("$patch").and_then(Value::as_str) {
        Some("replace") => {
            let mut rest = patch.clone();
            rest.remove("$patch");
            return merge_map(kind, Map::new(), &rest);
        }
        Some("delete") => return Ok(Map::new()),
        Some("merge") | None => {}
        Some(other) => {
            return Err(PatchError::Apply(format!(
                "Unknown patch type: {other} in map: {patch:?}"
            )))
        }
    }
    if let Some(retain) = patch.get("$retainKeys") {
        let keys: Vec<&str> = retain
            .as_array()
            .ok_or_else(|| PatchError::Apply("$retainKeys must be a list".into()))?
            .iter()
            .filter_map(Value::as_str)
            .collect();
        orig.retain(|k, _| keys.contains(&k.as_str()));
    }
    for (k, pv) in patch {
        if k == "$patch" || k == "$retainKeys" || k.starts_with("$setElementOrder/") {
            continue;
        }
        if let Some(field) = k.strip_prefix("$deleteFromPrimitiveList/") {
            let remove = pv.as_array().cloned().unwrap_or_default();
            if let Some(Value::Array(list)) = orig.get_mut(field) {
                list.retain(|x| !remove.contains(x));
            }
            continue;
        }
        if pv.is_null() {
            orig.remove(k);
            continue;
        }
        let merged = match (orig.remove(k), pv) {
            (_, Value::Object(pm)) if directive(pv) == Some("delete") && pm.len() == 1 => None,
            (Some(Value::Object(om)), Value::Object(pm)) => Some(Value::Object(merge_map(kind, om, pm)?)),
            (Some(Value::Array(ol)), Value::Array(pl)) => Some(Value::Array(merge_list(kind, k, ol, pl)?)),
            (_, pv) => Some(clean(kind, k, pv)?),
        };
        if let Some(v) = merged {
            orig.insert(k.clone(), v);
        }
    }
    for (k, order) in patch {
        if let Some(field) = k.strip_prefix("$setElementOrder/") {
            if let (Some(Value::Array(list)), Some(order)) = (orig.get_mut(field), order.as_array()) {
                apply_order(list, order, list_strategy(kind, field));
            }
        }
    }
    Ok(orig)
}

fn merge_list(kind: &str, field: &str, mut orig: Vec<Value>, patch: &[Value]) -> Result<Vec<Value>, PatchError> {
    match list_strategy(kind, field) {
        ListStrategy::Replace => patch.iter().map(|v| clean(kind, field, v)).collect(),
        ListStrategy::MergePrimitives => {
            if patch.iter().any(|v| directive(v) == Some("replace")) {
                return Ok(patch.iter().filter(|v| directive(v).is_none()).cloned().collect());
            }
            for v in patch {
                if !orig.contains(v) {
                    orig.push(v.clone());
                }
            }
            Ok(orig)
        }
        ListStrategy::MergeByKey(key) => {
            if patch.iter().any(|v| directive(v) == Some("replace")) {
                return patch
                    .iter()
                    .filter(|v| directive(v) != Some("replace"))
                    .map(|v| clean(kind, field, v))
                    .collect();
            }
            for pv in patch {
                let Some(pm) = pv.as_object() else {
                    return Err(PatchError::Apply(format!(
                        "{field}: list elements must be objects with merge key {key}"
                    )));
                };
                let Some(kv) = pm.get(key) else {
                    return Err(PatchError::Apply(format!(
                        "map: {pv} does not contain declared merge key: {key}"
                    )));
                };
                let pos = orig.iter().position(|o| o.get(key) == Some(kv));
                if directive(pv) == Some("delete") {
                    orig.retain(|o| o.get(key) != Some(kv));
                    continue;
                }
                match pos {
                    Some(i) => {
                        let om = match std::mem::take(&mut orig[i]) {
                            Value::Object(m) => m,
                            _ => Map::new(),
                        };
                        orig[i] = Value::Object(merge_map(kind, om, pm)?);
                    }
                    None => orig.push(clean(kind, field, pv)?),
                }
            }
            Ok(orig)
        }
    }
}

/// `$setElementOrder`: the listed elements take the listed order within the slots they occupy;
/// elements only the server has keep their positions.
fn apply_order(list: &mut [Value], order: &[Value], strategy: ListStrategy) {
    let rank = |v: &Value| -> Option<usize> {
        match strategy {
            ListStrategy::MergeByKey(key) => order
                .iter()
                .position(|o| o.get(key).is_some() && o.get(key) == v.get(key)),
            _ => order.iter().position(|o| o == v),
        }
    };
    let slots: Vec<usize> = (0..list.len()).filter(|&i| rank(&list[i]).is_some()).collect();
    let mut items: Vec<Value> = slots.iter().map(|&i| list[i].clone()).collect();
    items.sort_by_key(|v| rank(v).unwrap_or(usize::MAX));
    for (slot, item) in slots.into_iter().zip(items) {
        list[slot] = item;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn smp(orig: Value, patch: Value) -> Value {
        strategic_merge("Pod", &orig, &patch).unwrap()
    }

    #[test]
    fn conditions_merge_by_type_with_element_order() {
        let orig = json!({"status": {"conditions": [
            {"type": "Initialized", "status": "True"},
            {"type": "Ready", "status": "False"},
            {"type": "PodScheduled", "status": "True"}]}});
        let patch = json!({"status": {
            "$setElementOrder/conditions": [{"type": "PodScheduled"}, {"type": "Initialized"}, {"type": "Ready"}, {"type": "ContainersReady"}],
            "conditions": [{"type": "Ready", "status": "True"}, {"type": "ContainersReady", "status": "True"}]}});
        let got = smp(orig, patch);
        let conds = got["status"]["conditions"].as_array().unwrap();
        let types: Vec<&str> = conds.iter().map(|c| c["type"].as_str().unwrap()).collect();
        assert_eq!(types, ["PodScheduled", "Initialized", "Ready", "ContainersReady"]);
        assert_eq!(conds[2]["status"], "True");
    }

    #[test]
    fn containers_merge_by_name_and_unknown_lists_replace() {
        let orig = json!({"spec": {"containers": [{"name": "a", "image": "x"}, {"name": "b", "image": "y"}],
            "tolerations": [{"key": "k1"}]}});
        let patch = json!({"spec": {"containers": [{"name": "b", "image": "z"}], "tolerations": [{"key": "k2"}]}});
        let got = smp(orig, patch);
        assert_eq!(got["spec"]["containers"][0]["image"], "x");
        assert_eq!(got["spec"]["containers"][1]["image"], "z");
        assert_eq!(got["spec"]["tolerations"], json!([{"key": "k2"}]));
    }

    #[test]
    fn directives() {
        let orig = json!({"metadata": {"finalizers": ["a", "b"], "labels": {"x": "1", "y": "2"}},
            "spec": {"containers": [{"name": "a"}, {"name": "b"}], "volumes": [{"name": "v", "emptyDir": {}}]}});
        let patch = json!({
            "metadata": {"$deleteFromPrimitiveList/finalizers": ["a"], "labels": {"$patch": "replace", "z": "3"}},
            "spec": {"containers": [{"name": "a", "$patch": "delete"}],
                     "volumes": [{"name": "v", "$retainKeys": ["name", "hostPath"], "hostPath": {"path": "/x"}}]}});
        let got = smp(orig, patch);
        assert_eq!(got["metadata"]["finalizers"], json!(["b"]));
        assert_eq!(got["metadata"]["labels"], json!({"z": "3"}));
        assert_eq!(got["spec"]["containers"], json!([{"name": "b"}]));
        assert_eq!(
            got["spec"]["volumes"],
            json!([{"name": "v", "hostPath": {"path": "/x"}}])
        );
    }

    #[test]
    fn list_replace_directive_and_null_deletes() {
        let orig = json!({"spec": {"containers": [{"name": "a"}, {"name": "b"}]}, "metadata": {"labels": {"x": "1"}}});
        let patch = json!({"spec": {"containers": [{"$patch": "replace"}, {"name": "c"}]}, "metadata": {"labels": {"x": null}}});
        let got = smp(orig, patch);
        assert_eq!(got["spec"]["containers"], json!([{"name": "c"}]));
        assert_eq!(got["metadata"]["labels"], json!({}));
    }

    #[test]
    fn json_and_merge_patch() {
        let orig = json!({"metadata": {"labels": {"a": "1"}}});
        let got = apply(
            PatchType::Json,
            "Pod",
            &orig,
            br#"[{"op":"add","path":"/metadata/labels/b","value":"2"}]"#,
        )
        .unwrap();
        assert_eq!(got["metadata"]["labels"], json!({"a": "1", "b": "2"}));
        let got = apply(PatchType::Merge, "Pod", &orig, br#"{"metadata":{"labels":{"a":null}}}"#).unwrap();
        assert_eq!(got["metadata"]["labels"], json!({}));
        assert!(apply(PatchType::Json, "Pod", &orig, br#"[{"op":"remove","path":"/nope"}]"#).is_err());
    }
}
