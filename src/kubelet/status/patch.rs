//! The status manager's strategic-merge patch (`statusutil.PatchPodStatus`,
//! `strategicpatch.CreateTwoWayMergePatch` restricted to `PodStatus`): the difference between
//! the API's status and the new one, with `metadata.uid` as a precondition.

use k8s_openapi::api::core::v1::{PodCondition, PodStatus};
use serde_json::{json, Map, Value};

use super::conditions::{condition, is_kubelet_owned, CONTAINERS_READY, POD_COMPLETED, POD_READY};
use super::phase::{FAILED, SUCCEEDED};

/// The patch could not be built.
#[derive(Debug, thiserror::Error)]
pub enum PatchError {
    #[error("serializing pod status")]
    Serialize(#[source] serde_json::Error),
}

/// `PodStatus` lists the API merges by key (`patchStrategy:"merge"`); every other list is atomic
/// and replaced whole (containerStatuses and friends).
fn merge_key(field: &str) -> Option<&'static str> {
    match field {
        "conditions" => Some("type"),
        "podIPs" | "hostIPs" => Some("ip"),
        "resourceClaimStatuses" => Some("name"),
        _ => None,
    }
}

/// Two-way diff of two JSON objects; `top` selects the PodStatus list strategies (nested
/// objects have no merge lists the kubelet writes).
fn diff_objects(old: &Map<String, Value>, new: &Map<String, Value>, top: bool) -> Map<String, Value> {
    let mut patch = Map::new();
    for (k, nv) in new {
        let Some(ov) = old.get(k) else {
            patch.insert(k.clone(), nv.clone());
            continue;
        };
        if ov == nv {
            continue;
        }
        match (ov, nv) {
            (Value::Object(o), Value::Object(n)) => {
                let d = diff_objects(o, n, false);
                if !d.is_empty() {
                    patch.insert(k.clone(), Value::Object(d));
                }
            }
            (Value::Array(o), Value::Array(n)) if top && merge_key(k).is_some() => {
                let key = merge_key(k).unwrap_or_default();
                diff_merge_list(&mut patch, k, key, o, n);
            }
            _ => {
                patch.insert(k.clone(), nv.clone());
            }
        }
    }
    for k in old.keys() {
        if !new.contains_key(k) {
            patch.insert(k.clone(), Value::Null);
        }
    }
    patch
}

/// A list merged by `key`: changed items carry their key and changed fields, new items are
/// whole, removed items get `$patch: delete`, and `$setElementOrder/<field>` fixes the order.
fn diff_merge_list(patch: &mut Map<String, Value>, field: &str, key: &str, old: &[Value], new: &[Value]) {
    let key_of = |v: &Value| v.get(key).cloned();
    let mut items = Vec::new();
    for n in new {
        let k = key_of(n);
        match old.iter().find(|o| key_of(o) == k && k.is_some()) {
            None => items.push(n.clone()),
            Some(o) => {
                if let (Value::Object(om), Value::Object(nm)) = (o, n) {
                    let mut d = diff_objects(om, nm, false);
                    if !d.is_empty() {
                        if let Some(k) = k {
                            d.insert(key.to_string(), k);
                        }
                        items.push(Value::Object(d));
                    }
                } else if o != n {
                    items.push(n.clone());
                }
            }
        }
    }
    for o in old {
        let k = key_of(o);
        if k.is_some() && !new.iter().any(|n| key_of(n) == k) {
            let mut del = Map::new();
            del.insert("$patch".into(), json!("delete"));
            if let Some(k) = k {
                del.insert(key.to_string(), k);
            }
            items.push(Value::Object(del));
        }
    }
    let old_order: Vec<Option<Value>> = old.iter().map(key_of).collect();
    let new_order: Vec<Option<Value>> = new.iter().map(key_of).collect();
    if items.is_empty() && old_order == new_order {
        return;
    }
    if !items.is_empty() {
        patch.insert(field.to_string(), Value::Array(items));
    }
    let order: Vec<Value> = new_order
        .into_iter()
        .flatten()
        .map(|k| {
            let mut m = Map::new();
            m.insert(key.to_string(), k);
            Value::Object(m)
        })
        .collect();
    patch.insert(format!("$setElementOrder/{field}"), Value::Array(order));
}

fn to_object(s: &PodStatus) -> Result<Map<String, Value>, PatchError> {
    match serde_json::to_value(s).map_err(PatchError::Serialize)? {
        Value::Object(m) => Ok(m),
        // A struct always serializes to an object; anything else is treated as empty.
        _ => Ok(Map::new()),
    }
}

/// The strategic-merge patch for `pods/<name>/status`, or None when only the UID precondition
/// would be sent (nothing changed).
pub fn pod_status_patch(uid: &str, api: &PodStatus, new: &PodStatus) -> Result<Option<Value>, PatchError> {
    let diff = diff_objects(&to_object(api)?, &to_object(new)?, true);
    if diff.is_empty() {
        return Ok(None);
    }
    Ok(Some(
        json!({ "metadata": { "uid": uid }, "status": Value::Object(diff) }),
    ))
}

/// The condition an eviction (or preemption) adds (`PodConditionSharedByKubelet`).
pub const DISRUPTION_TARGET: &str = "DisruptionTarget";

/// `mergePodStatus`: the API's non-kubelet conditions kept, the kubelet's replaced by the new
/// ones; everything else from the new status.
pub fn merge_pod_status(api: &PodStatus, new: &PodStatus) -> PodStatus {
    let mut merged = new.clone();
    let conds: Vec<_> = api
        .conditions
        .iter()
        .flatten()
        .filter(|c| !is_kubelet_owned(&c.type_))
        .chain(new.conditions.iter().flatten().filter(|c| is_kubelet_owned(&c.type_)))
        .cloned()
        .collect();
    let mut conds = conds;
    // `DisruptionTarget` is shared with the kubelet: it goes out with the move to a terminal
    // phase (an eviction), replacing any the API has.
    let terminal = |p: Option<&str>| matches!(p, Some(SUCCEEDED) | Some(FAILED));
    if !terminal(api.phase.as_deref()) && terminal(new.phase.as_deref()) {
        for c in new.conditions.iter().flatten().filter(|c| c.type_ == DISRUPTION_TARGET) {
            conds.retain(|x| x.type_ != DISRUPTION_TARGET);
            conds.push(c.clone());
        }
    }
    merged.conditions = (!conds.is_empty()).then_some(conds);
    // A terminal pod is never reported ready, even if the readiness conditions lag behind
    // (kubernetes#108594).
    let phase = merged.phase.clone();
    if matches!(phase.as_deref(), Some(SUCCEEDED) | Some(FAILED)) {
        let reason = if phase.as_deref() == Some(SUCCEEDED) {
            POD_COMPLETED
        } else {
            "PodFailed"
        };
        let is_readiness = |c: &PodCondition| c.type_ == POD_READY || c.type_ == CONTAINERS_READY;
        if merged
            .conditions
            .iter()
            .flatten()
            .any(|c| is_readiness(c) && c.status == "True")
        {
            for c in merged.conditions.iter_mut().flatten().filter(|c| is_readiness(c)) {
                *c = PodCondition {
                    last_transition_time: c.last_transition_time.clone(),
                    ..condition(&c.type_, false, reason, String::new())
                };
            }
        }
    }
    merged
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{ContainerStatus, PodCondition, PodIP};

    fn cond(t: &str, s: &str) -> PodCondition {
        PodCondition {
            type_: t.into(),
            status: s.into(),
            ..Default::default()
        }
    }

    #[test]
    fn unchanged_status_is_no_patch() {
        let s = PodStatus {
            phase: Some("Running".into()),
            conditions: Some(vec![cond("Ready", "True")]),
            ..Default::default()
        };
        assert_eq!(pod_status_patch("u1", &s, &s).unwrap(), None);
    }

    #[test]
    fn kubelet_conditions_replaced_others_kept_with_element_order() {
        let api = PodStatus {
            phase: Some("Pending".into()),
            reason: Some("Old".into()),
            conditions: Some(vec![
                cond("example.com/gate", "True"),
                cond("Ready", "False"),
                cond("PodScheduled", "True"),
            ]),
            ..Default::default()
        };
        let mut new = PodStatus {
            phase: Some("Running".into()),
            conditions: Some(vec![
                cond("Initialized", "True"),
                cond("Ready", "True"),
                cond("PodScheduled", "True"),
            ]),
            pod_ips: Some(vec![PodIP { ip: "10.0.0.1".into() }]),
            container_statuses: Some(vec![ContainerStatus {
                name: "web".into(),
                ready: true,
                ..Default::default()
            }]),
            ..Default::default()
        };
        new = merge_pod_status(&api, &new);
        let types: Vec<&str> = new.conditions.iter().flatten().map(|c| c.type_.as_str()).collect();
        assert_eq!(types, ["example.com/gate", "Initialized", "Ready", "PodScheduled"]);

        let p = pod_status_patch("u1", &api, &new).unwrap().unwrap();
        assert_eq!(
            p,
            json!({
                "metadata": {"uid": "u1"},
                "status": {
                    "phase": "Running",
                    "reason": null,
                    "podIPs": [{"ip": "10.0.0.1"}],
                    "containerStatuses": [{"name": "web", "ready": true, "image": "", "imageID": "", "restartCount": 0}],
                    "conditions": [
                        {"type": "Initialized", "status": "True"},
                        {"type": "Ready", "status": "True"},
                    ],
                    "$setElementOrder/conditions": [
                        {"type": "example.com/gate"},
                        {"type": "Initialized"},
                        {"type": "Ready"},
                        {"type": "PodScheduled"},
                    ],
                }
            })
        );
    }

    #[test]
    fn removed_condition_is_deleted_and_changed_fields_only() {
        let mut old_ready = cond("Ready", "False");
        old_ready.reason = Some("ContainersNotReady".into());
        old_ready.message = Some("containers with unready status: [web]".into());
        let api = PodStatus {
            conditions: Some(vec![old_ready, cond("Gone", "True")]),
            ..Default::default()
        };
        let new = PodStatus {
            conditions: Some(vec![cond("Ready", "True")]),
            ..Default::default()
        };
        let p = pod_status_patch("u1", &api, &new).unwrap().unwrap();
        assert_eq!(
            p["status"],
            json!({
                "conditions": [
                    {"type": "Ready", "status": "True", "reason": null, "message": null},
                    {"$patch": "delete", "type": "Gone"},
                ],
                "$setElementOrder/conditions": [{"type": "Ready"}],
            })
        );
    }

    #[test]
    fn terminal_pods_are_not_ready() {
        let new = PodStatus {
            phase: Some("Failed".into()),
            conditions: Some(vec![
                cond("Ready", "True"),
                cond("ContainersReady", "True"),
                cond("PodScheduled", "True"),
            ]),
            ..Default::default()
        };
        let merged = merge_pod_status(&PodStatus::default(), &new);
        let got: Vec<(&str, &str, Option<&str>)> = merged
            .conditions
            .iter()
            .flatten()
            .map(|c| (c.type_.as_str(), c.status.as_str(), c.reason.as_deref()))
            .collect();
        assert_eq!(
            got,
            [
                ("Ready", "False", Some("PodFailed")),
                ("ContainersReady", "False", Some("PodFailed")),
                ("PodScheduled", "True", None)
            ]
        );
    }

    #[test]
    fn disruption_target_goes_out_with_the_terminal_phase() {
        let running = PodStatus {
            phase: Some("Running".into()),
            ..Default::default()
        };
        let evicted = PodStatus {
            phase: Some("Failed".into()),
            conditions: Some(vec![cond(DISRUPTION_TARGET, "True"), cond("PodScheduled", "True")]),
            ..Default::default()
        };
        let types = |s: &PodStatus| -> Vec<String> { s.conditions.iter().flatten().map(|c| c.type_.clone()).collect() };
        assert_eq!(
            types(&merge_pod_status(&running, &evicted)),
            ["PodScheduled", DISRUPTION_TARGET]
        );
        // Already terminal in the API: the API's own conditions stand.
        let failed = PodStatus {
            phase: Some("Failed".into()),
            ..Default::default()
        };
        assert_eq!(types(&merge_pod_status(&failed, &evicted)), ["PodScheduled"]);
        // Without the move to a terminal phase, another writer's condition is not the kubelet's.
        let still_running = PodStatus {
            phase: Some("Running".into()),
            ..evicted.clone()
        };
        assert_eq!(types(&merge_pod_status(&running, &still_running)), ["PodScheduled"]);
    }

    #[test]
    fn reorder_only_sends_element_order() {
        let api = PodStatus {
            conditions: Some(vec![cond("A", "True"), cond("B", "True")]),
            ..Default::default()
        };
        let new = PodStatus {
            conditions: Some(vec![cond("B", "True"), cond("A", "True")]),
            ..Default::default()
        };
        let p = pod_status_patch("u1", &api, &new).unwrap().unwrap();
        assert_eq!(
            p["status"],
            json!({"$setElementOrder/conditions": [{"type": "B"}, {"type": "A"}]})
        );
    }
}
