//! The default admission plugins that change pods on create, as every real cluster runs them:
//! ServiceAccount (default account, existence check, the `kube-api-access-*` projected token
//! volume and its mounts), Priority (priority from the class) and DefaultTolerationSeconds
//! (not-ready/unreachable NoExecute tolerations for 300 s). Mirror pods skip ServiceAccount.

use serde_json::{json, Value};

use super::errors::ApiError;
use super::objects::{meta, meta_str, random_suffix};
use super::store::Inner;

/// Where the ServiceAccount admission mounts the token volume.
pub const SA_MOUNT_PATH: &str = "/var/run/secrets/kubernetes.io/serviceaccount";
/// Token lifetime the admission plugin requests (1 h + 7 s, so kubelets can tell it apart).
const SA_TOKEN_SECONDS: i64 = 3607;
/// `DefaultTolerationSeconds` for not-ready and unreachable.
const DEFAULT_TOLERATION_SECONDS: i64 = 300;
const MIRROR_ANNOTATION: &str = "kubernetes.io/config.mirror";

fn forbidden(pod_name: &str, why: String) -> ApiError {
    let mut e = ApiError::new(403, "Forbidden", format!("pods \"{pod_name}\" is forbidden: {why}"));
    e.details = Some(json!({"name": pod_name, "kind": "pods"}));
    e
}

pub fn admit_pod(store: &Inner, ns: &str, pod: &mut Value) -> Result<(), ApiError> {
    let pod_name = meta_str(pod, "name").to_string();
    let mirror = meta(pod)
        .and_then(|m| m.get("annotations"))
        .and_then(|a| a.get(MIRROR_ANNOTATION))
        .is_some();
    if !mirror {
        service_account(store, ns, &pod_name, pod)?;
    }
    priority(&pod_name, pod)?;
    default_tolerations(pod);
    Ok(())
}

fn service_account(store: &Inner, ns: &str, pod_name: &str, pod: &mut Value) -> Result<(), ApiError> {
    let spec = &mut pod["spec"];
    let sa_name = spec
        .get("serviceAccountName")
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .unwrap_or("default")
        .to_string();
    spec["serviceAccountName"] = json!(sa_name);
    spec["serviceAccount"] = json!(sa_name);
    let sa = store.get("serviceaccounts", ns, &sa_name).ok_or_else(|| {
        forbidden(
            pod_name,
            format!("error looking up service account {ns}/{sa_name}: serviceaccount \"{sa_name}\" not found"),
        )
    })?;
    let automount = spec
        .get("automountServiceAccountToken")
        .and_then(Value::as_bool)
        .or_else(|| sa.get("automountServiceAccountToken").and_then(Value::as_bool))
        .unwrap_or(true);
    if !automount {
        return Ok(());
    }
    let volume_name = format!("kube-api-access-{}", random_suffix(5));
    let volume = json!({
        "name": volume_name,
        "projected": {
            "defaultMode": 420,
            "sources": [
                {"serviceAccountToken": {"expirationSeconds": SA_TOKEN_SECONDS, "path": "token"}},
                {"configMap": {"name": "kube-root-ca.crt", "items": [{"key": "ca.crt", "path": "ca.crt"}]}},
                {"downwardAPI": {"items": [{"path": "namespace",
                    "fieldRef": {"apiVersion": "v1", "fieldPath": "metadata.namespace"}}]}},
            ],
        },
    });
    let mut mounted = false;
    for list in ["initContainers", "containers"] {
        let Some(cs) = spec.get_mut(list).and_then(Value::as_array_mut) else {
            continue;
        };
        for c in cs.iter_mut() {
            let has_mount = c
                .get("volumeMounts")
                .and_then(Value::as_array)
                .is_some_and(|ms| ms.iter().any(|m| m["mountPath"] == SA_MOUNT_PATH));
            if has_mount {
                continue;
            }
            let mount = json!({"name": volume_name, "readOnly": true, "mountPath": SA_MOUNT_PATH});
            match c.get_mut("volumeMounts").and_then(Value::as_array_mut) {
                Some(ms) => ms.push(mount),
                None => c["volumeMounts"] = json!([mount]),
            }
            mounted = true;
        }
    }
    if mounted {
        match spec.get_mut("volumes").and_then(Value::as_array_mut) {
            Some(vs) => vs.push(volume),
            None => spec["volumes"] = json!([volume]),
        }
    }
    Ok(())
}

/// Priority admission with the built-in classes only.
fn priority(pod_name: &str, pod: &mut Value) -> Result<(), ApiError> {
    let spec = &mut pod["spec"];
    let class = spec
        .get("priorityClassName")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    let value = match class.as_str() {
        "" => 0,
        "system-node-critical" => 2_000_001_000,
        "system-cluster-critical" => 2_000_000_000,
        other => {
            return Err(forbidden(
                pod_name,
                format!("no PriorityClass with name {other} was found"),
            ))
        }
    };
    if let Some(p) = spec.get("priority").and_then(Value::as_i64) {
        if p != value {
            return Err(forbidden(
                pod_name,
                "the integer value of priority must not be provided in pod spec; priority admission controller computed 0 from the given PriorityClass name"
                    .replace(" 0 ", &format!(" {value} ")),
            ));
        }
    }
    spec["priority"] = json!(value);
    if spec.get("preemptionPolicy").is_none_or(Value::is_null) {
        spec["preemptionPolicy"] = json!("PreemptLowerPriority");
    }
    Ok(())
}

fn default_tolerations(pod: &mut Value) {
    let spec = &mut pod["spec"];
    let tolerations = spec
        .get("tolerations")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let tolerates = |key: &str| {
        tolerations.iter().any(|t| {
            let k = t.get("key").and_then(Value::as_str).unwrap_or("");
            let e = t.get("effect").and_then(Value::as_str).unwrap_or("");
            (k == key || k.is_empty()) && (e == "NoExecute" || e.is_empty())
        })
    };
    let mut added = Vec::new();
    for key in ["node.kubernetes.io/not-ready", "node.kubernetes.io/unreachable"] {
        if !tolerates(key) {
            added.push(json!({"key": key, "operator": "Exists", "effect": "NoExecute",
                              "tolerationSeconds": DEFAULT_TOLERATION_SECONDS}));
        }
    }
    if added.is_empty() {
        return;
    }
    let mut all = tolerations;
    all.extend(added);
    spec["tolerations"] = json!(all);
}

#[cfg(test)]
mod tests {
    use super::super::store::Store;
    use super::*;

    #[test]
    fn service_account_volume_tolerations_and_priority() {
        let store = Store::new();
        let mut s = store.lock();
        s.create("serviceaccounts", "ns", json!({"metadata": {"name": "default"}}));
        let mut pod = json!({"metadata": {"name": "p"}, "spec": {"containers": [{"name": "c", "image": "x"}]}});
        admit_pod(&s, "ns", &mut pod).unwrap();
        let spec = &pod["spec"];
        assert_eq!(spec["serviceAccountName"], "default");
        let vol = &spec["volumes"][0];
        assert!(vol["name"].as_str().unwrap().starts_with("kube-api-access-"));
        assert_eq!(spec["containers"][0]["volumeMounts"][0]["mountPath"], SA_MOUNT_PATH);
        assert_eq!(spec["tolerations"].as_array().unwrap().len(), 2);
        assert_eq!(spec["priority"], 0);

        let mut missing = json!({"metadata": {"name": "q"}, "spec": {"serviceAccountName": "nope", "containers": []}});
        assert_eq!(admit_pod(&s, "ns", &mut missing).unwrap_err().code, 403);

        let mut mirror = json!({"metadata": {"name": "m", "annotations": {MIRROR_ANNOTATION: "x"}},
            "spec": {"priorityClassName": "system-node-critical", "containers": [{"name": "c"}],
                     "tolerations": [{"operator": "Exists", "effect": "NoExecute"}]}});
        admit_pod(&s, "ns", &mut mirror).unwrap();
        assert!(mirror["spec"].get("volumes").is_none());
        assert!(mirror["spec"].get("serviceAccountName").is_none());
        assert_eq!(mirror["spec"]["priority"], 2_000_001_000);
        assert_eq!(mirror["spec"]["tolerations"].as_array().unwrap().len(), 1);

        let mut opted_out = json!({"metadata": {"name": "o"}, "spec": {"automountServiceAccountToken": false, "containers": [{"name": "c"}]}});
        admit_pod(&s, "ns", &mut opted_out).unwrap();
        assert!(opted_out["spec"].get("volumes").is_none());
    }
}
