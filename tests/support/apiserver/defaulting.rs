//! API defaulting (`SetDefaults_Pod`, `SetDefaults_Container`, …), the pod's create-time status (phase Pending, qosClass), basic
//! validation and the pod spec update rules, as the real server applies them.

use serde_json::{json, Map, Value};

use super::errors::{ApiError, FieldError};
use super::objects::default_field;

const DNS1123_LABEL_MSG: &str = "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')";
const DNS1123_SUBDOMAIN_MSG: &str = "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')";

pub fn is_dns1123_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

pub fn is_dns1123_subdomain(s: &str) -> bool {
    !s.is_empty() && s.len() <= 253 && s.split('.').all(is_dns1123_label)
}

/// Name validation shared by all kinds: DNS-1123 subdomain (labels for namespaces).
pub fn validate_name(kind: &str, group: &str, name: &str, label_only: bool) -> Result<(), ApiError> {
    let ok = if label_only {
        is_dns1123_label(name)
    } else {
        is_dns1123_subdomain(name)
    };
    if ok {
        return Ok(());
    }
    let msg = if label_only {
        DNS1123_LABEL_MSG
    } else {
        DNS1123_SUBDOMAIN_MSG
    };
    Err(ApiError::invalid(
        kind,
        group,
        name,
        vec![FieldError::invalid("metadata.name", json!(name), msg)],
    ))
}

fn obj_mut<'a>(map: &'a mut Map<String, Value>, key: &str) -> &'a mut Map<String, Value> {
    let v = map.entry(key).or_insert_with(|| Value::Object(Map::new()));
    if !v.is_object() {
        *v = Value::Object(Map::new());
    }
    v.as_object_mut().expect("just made an object")
}

fn image_pull_policy(image: &str) -> &'static str {
    // The tag follows the last ':' after the last '/'; a digest pins the image.
    let last = image.rsplit('/').next().unwrap_or(image);
    if image.contains('@') {
        return "IfNotPresent";
    }
    match last.rsplit_once(':') {
        None => "Always",
        Some((_, "latest")) => "Always",
        Some(_) => "IfNotPresent",
    }
}

fn default_probe(p: &mut Value) {
    let Some(m) = p.as_object_mut() else { return };
    default_field(m, "timeoutSeconds", json!(1));
    default_field(m, "periodSeconds", json!(10));
    default_field(m, "successThreshold", json!(1));
    default_field(m, "failureThreshold", json!(3));
    if let Some(h) = m.get_mut("httpGet").and_then(Value::as_object_mut) {
        default_field(h, "path", json!("/"));
        default_field(h, "scheme", json!("HTTP"));
    }
}

fn default_container(c: &mut Value) {
    let Some(m) = c.as_object_mut() else { return };
    let image = m.get("image").and_then(Value::as_str).unwrap_or("").to_string();
    default_field(m, "imagePullPolicy", json!(image_pull_policy(&image)));
    default_field(m, "terminationMessagePath", json!("/dev/termination-log"));
    default_field(m, "terminationMessagePolicy", json!("File"));
    let res = obj_mut(m, "resources");
    // Quantities are strings on the wire; a YAML number (`cpu: 1`) is decoded as a quantity.
    for list in ["requests", "limits"] {
        if let Some(q) = res.get_mut(list).and_then(Value::as_object_mut) {
            for v in q.values_mut() {
                if let Value::Number(n) = v {
                    *v = json!(n.to_string());
                }
            }
        }
    }
    // SetDefaults_ResourceList: requests default to limits where absent.
    if let Some(limits) = res.get("limits").and_then(Value::as_object).cloned() {
        let req = obj_mut(res, "requests");
        for (k, v) in limits {
            req.entry(k).or_insert(v);
        }
    }
    if let Some(ports) = m.get_mut("ports").and_then(Value::as_array_mut) {
        for p in ports.iter_mut().filter_map(Value::as_object_mut) {
            default_field(p, "protocol", json!("TCP"));
        }
    }
    for probe in ["livenessProbe", "readinessProbe", "startupProbe"] {
        if let Some(p) = m.get_mut(probe) {
            default_probe(p);
        }
    }
    if let Some(env) = m.get_mut("env").and_then(Value::as_array_mut) {
        for e in env.iter_mut() {
            if let Some(f) = e.pointer_mut("/valueFrom/fieldRef").and_then(Value::as_object_mut) {
                default_field(f, "apiVersion", json!("v1"));
            }
            if let Some(r) = e
                .pointer_mut("/valueFrom/resourceFieldRef")
                .and_then(Value::as_object_mut)
            {
                default_field(r, "divisor", json!("0"));
            }
        }
    }
}

/// `SetDefaults_ObjectFieldSelector` and `SetDefaults_ResourceFieldSelector` (divisor "0") for
/// the items of a downwardAPI volume or projection.
fn default_downward_items(d: &mut Value) {
    let Some(items) = d.get_mut("items").and_then(Value::as_array_mut) else {
        return;
    };
    for item in items.iter_mut().filter_map(Value::as_object_mut) {
        if let Some(f) = item.get_mut("fieldRef").and_then(Value::as_object_mut) {
            default_field(f, "apiVersion", json!("v1"));
        }
        if let Some(r) = item.get_mut("resourceFieldRef").and_then(Value::as_object_mut) {
            default_field(r, "divisor", json!("0"));
        }
    }
}

fn default_volume(v: &mut Value) {
    let Some(m) = v.as_object_mut() else { return };
    for src in ["configMap", "secret", "downwardAPI", "projected"] {
        if let Some(s) = m.get_mut(src).and_then(Value::as_object_mut) {
            default_field(s, "defaultMode", json!(420));
        }
    }
    if let Some(h) = m.get_mut("hostPath").and_then(Value::as_object_mut) {
        default_field(h, "type", json!(""));
    }
    if let Some(d) = m.get_mut("downwardAPI") {
        default_downward_items(d);
    }
    if let Some(sources) = m
        .get_mut("projected")
        .and_then(|p| p.get_mut("sources"))
        .and_then(Value::as_array_mut)
    {
        for src in sources.iter_mut() {
            if let Some(d) = src.get_mut("downwardAPI") {
                default_downward_items(d);
            }
            if let Some(t) = src.get_mut("serviceAccountToken").and_then(Value::as_object_mut) {
                default_field(t, "expirationSeconds", json!(3600));
            }
        }
    }
    let has_source = m.keys().any(|k| k != "name");
    if !has_source {
        m.insert("emptyDir".into(), json!({}));
    }
}

/// Defaults a pod on create (and on update, where they are idempotent).
pub fn default_pod(pod: &mut Value) {
    let Some(pm) = pod.as_object_mut() else { return };
    let spec = obj_mut(pm, "spec");
    default_field(spec, "restartPolicy", json!("Always"));
    default_field(spec, "terminationGracePeriodSeconds", json!(30));
    default_field(spec, "dnsPolicy", json!("ClusterFirst"));
    default_field(spec, "schedulerName", json!("default-scheduler"));
    default_field(spec, "securityContext", json!({}));
    default_field(spec, "enableServiceLinks", json!(true));
    // serviceAccount is the deprecated alias of serviceAccountName (admission picks "default").
    let sa = spec
        .get("serviceAccountName")
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .or_else(|| {
            spec.get("serviceAccount")
                .and_then(Value::as_str)
                .filter(|s| !s.is_empty())
        })
        .map(str::to_string);
    if let Some(sa) = sa {
        spec.insert("serviceAccountName".into(), json!(sa));
        spec.insert("serviceAccount".into(), json!(sa));
    }
    if spec.get("hostNetwork").and_then(Value::as_bool) == Some(true) {
        if let Some(cs) = spec.get_mut("containers").and_then(Value::as_array_mut) {
            for c in cs.iter_mut() {
                if let Some(ports) = c.get_mut("ports").and_then(Value::as_array_mut) {
                    for p in ports.iter_mut().filter_map(Value::as_object_mut) {
                        if let Some(cp) = p.get("containerPort").cloned() {
                            default_field(p, "hostPort", cp);
                        }
                    }
                }
            }
        }
    }
    for list in ["containers", "initContainers", "ephemeralContainers"] {
        if let Some(cs) = spec.get_mut(list).and_then(Value::as_array_mut) {
            cs.iter_mut().for_each(default_container);
        }
    }
    if let Some(vs) = spec.get_mut("volumes").and_then(Value::as_array_mut) {
        vs.iter_mut().for_each(default_volume);
    }
}

/// Quantity in base units (enough to compare requests and limits).
pub fn parse_quantity(q: &str) -> Option<f64> {
    let q = q.trim();
    let idx = q
        .find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '-' || c == '+'))
        .unwrap_or(q.len());
    let (num, suffix) = q.split_at(idx);
    let n: f64 = num.parse().ok()?;
    let mult = match suffix {
        "" => 1.0,
        "m" => 1e-3,
        "u" => 1e-6,
        "n" => 1e-9,
        "k" => 1e3,
        "M" => 1e6,
        "G" => 1e9,
        "T" => 1e12,
        "P" => 1e15,
        "E" => 1e18,
        "Ki" => 1024.0,
        "Mi" => 1024f64.powi(2),
        "Gi" => 1024f64.powi(3),
        "Ti" => 1024f64.powi(4),
        "Pi" => 1024f64.powi(5),
        "Ei" => 1024f64.powi(6),
        s if s.starts_with(['e', 'E']) => 10f64.powi(s[1..].parse().ok()?),
        _ => return None,
    };
    Some(n * mult)
}

/// `qos.GetPodQOS` over containers and init containers (cpu and memory only).
pub fn pod_qos(pod: &Value) -> &'static str {
    let mut containers: Vec<&Value> = Vec::new();
    for list in ["containers", "initContainers"] {
        if let Some(cs) = pod.pointer(&format!("/spec/{list}")).and_then(Value::as_array) {
            containers.extend(cs.iter());
        }
    }
    let supported = ["cpu", "memory"];
    let mut any_set = false;
    let mut guaranteed = true;
    for c in containers {
        let get = |k: &str| c.pointer(&format!("/resources/{k}")).and_then(Value::as_object);
        let (requests, limits) = (get("requests"), get("limits"));
        for r in supported {
            let req = requests
                .and_then(|m| m.get(r))
                .and_then(Value::as_str)
                .and_then(parse_quantity);
            let lim = limits
                .and_then(|m| m.get(r))
                .and_then(Value::as_str)
                .and_then(parse_quantity);
            if req.is_some_and(|v| v != 0.0) || lim.is_some_and(|v| v != 0.0) {
                any_set = true;
            }
            match (req, lim) {
                (_, None) => guaranteed = false,
                (Some(a), Some(b)) if a != b => guaranteed = false,
                _ => {}
            }
        }
    }
    if !any_set {
        "BestEffort"
    } else if guaranteed {
        "Guaranteed"
    } else {
        "Burstable"
    }
}

/// The basics of `ValidatePodCreate`.
pub fn validate_pod(pod: &Value) -> Vec<FieldError> {
    let mut errs = Vec::new();
    let containers = pod.pointer("/spec/containers").and_then(Value::as_array);
    match containers {
        None => errs.push(FieldError::required("spec.containers", "")),
        Some(cs) if cs.is_empty() => errs.push(FieldError::required("spec.containers", "")),
        Some(_) => {}
    }
    let mut seen: Vec<String> = Vec::new();
    for list in ["initContainers", "containers"] {
        let Some(cs) = pod.pointer(&format!("/spec/{list}")).and_then(Value::as_array) else {
            continue;
        };
        for (i, c) in cs.iter().enumerate() {
            let name = c.get("name").and_then(Value::as_str).unwrap_or("");
            let field = format!("spec.{list}[{i}]");
            if name.is_empty() {
                errs.push(FieldError::required(format!("{field}.name"), ""));
            } else if !is_dns1123_label(name) {
                errs.push(FieldError::invalid(
                    format!("{field}.name"),
                    json!(name),
                    DNS1123_LABEL_MSG,
                ));
            } else if seen.iter().any(|s| s == name) {
                errs.push(FieldError::duplicate(format!("{field}.name"), json!(name)));
            } else {
                seen.push(name.to_string());
            }
            if c.get("image").and_then(Value::as_str).unwrap_or("").trim().is_empty() {
                errs.push(FieldError::required(format!("{field}.image"), ""));
            }
        }
    }
    let rp = pod.pointer("/spec/restartPolicy").and_then(Value::as_str).unwrap_or("");
    if !["Always", "OnFailure", "Never"].contains(&rp) {
        errs.push(FieldError::not_supported(
            "spec.restartPolicy",
            json!(rp),
            &["Always", "OnFailure", "Never"],
        ));
    }
    errs
}

/// `ValidatePodUpdate`'s spec rule: only images, activeDeadlineSeconds, added tolerations (and a
/// negative terminationGracePeriodSeconds lowered to 1) may change.
pub fn validate_pod_spec_update(old: &Value, new: &Value) -> Vec<FieldError> {
    let (Some(old_spec), Some(new_spec)) = (old.get("spec"), new.get("spec")) else {
        return Vec::new();
    };
    let mut mutated = new_spec.clone();
    for list in ["containers", "initContainers"] {
        let olds = old_spec.get(list).and_then(Value::as_array);
        if let (Some(olds), Some(news)) = (olds, mutated.get_mut(list).and_then(Value::as_array_mut)) {
            if olds.len() == news.len() {
                for (o, n) in olds.iter().zip(news.iter_mut()) {
                    if let (Some(img), Some(nm)) = (o.get("image"), n.as_object_mut()) {
                        nm.insert("image".into(), img.clone());
                    }
                }
            }
        }
    }
    if let Some(m) = mutated.as_object_mut() {
        match old_spec.get("activeDeadlineSeconds") {
            Some(v) => m.insert("activeDeadlineSeconds".into(), v.clone()),
            None => m.remove("activeDeadlineSeconds"),
        };
        // Tolerations may only be added to.
        let old_tol = old_spec
            .get("tolerations")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        let new_tol = m
            .get("tolerations")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        if old_tol.iter().all(|t| new_tol.contains(t)) {
            match old_spec.get("tolerations") {
                Some(v) => m.insert("tolerations".into(), v.clone()),
                None => m.remove("tolerations"),
            };
        }
        let old_grace = old_spec.get("terminationGracePeriodSeconds").and_then(Value::as_i64);
        if old_grace.is_some_and(|g| g < 0) && m.get("terminationGracePeriodSeconds").and_then(Value::as_i64) == Some(1)
        {
            m.insert("terminationGracePeriodSeconds".into(), json!(old_grace));
        }
    }
    if &mutated == old_spec {
        return Vec::new();
    }
    vec![FieldError::forbidden(
        "spec",
        "pod updates may not change fields other than `spec.containers[*].image`,`spec.initContainers[*].image`,`spec.activeDeadlineSeconds`,`spec.tolerations` (only additions to existing tolerations),`spec.terminationGracePeriodSeconds` (allow it to be set to 1 if it was previously negative)",
    )]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pod_defaults_match_set_defaults_pod() {
        let mut pod = json!({"spec": {"containers": [
            {"name": "a", "image": "busybox", "resources": {"limits": {"cpu": 1}}, "ports": [{"containerPort": 80}]},
            {"name": "b", "image": "nginx:1.25"},
            {"name": "c", "image": "nginx:latest"}],
            "volumes": [{"name": "v"}]}});
        default_pod(&mut pod);
        let s = &pod["spec"];
        assert_eq!(s["restartPolicy"], "Always");
        assert_eq!(s["terminationGracePeriodSeconds"], 30);
        assert_eq!(s["dnsPolicy"], "ClusterFirst");
        assert_eq!(s["schedulerName"], "default-scheduler");
        assert_eq!(s["enableServiceLinks"], true);
        assert_eq!(s["containers"][0]["imagePullPolicy"], "Always");
        assert_eq!(s["containers"][1]["imagePullPolicy"], "IfNotPresent");
        assert_eq!(s["containers"][2]["imagePullPolicy"], "Always");
        assert_eq!(s["containers"][0]["resources"]["requests"]["cpu"], "1");
        assert_eq!(s["containers"][0]["ports"][0]["protocol"], "TCP");
        assert_eq!(s["containers"][0]["terminationMessagePath"], "/dev/termination-log");
        assert_eq!(s["volumes"][0]["emptyDir"], json!({}));
        assert_eq!(image_pull_policy("localhost:5000/img"), "Always");
    }

    #[test]
    fn resource_field_refs_default_divisor_zero() {
        let rf = json!({"resourceFieldRef": {"containerName": "a", "resource": "limits.cpu"}});
        let mut pod = json!({"spec": {"containers": [
            {"name": "a", "image": "busybox", "env": [{"name": "CPU", "valueFrom": rf}]}],
            "volumes": [
                {"name": "d", "downwardAPI": {"items": [
                    {"path": "cpu", "resourceFieldRef": rf["resourceFieldRef"]},
                    {"path": "name", "fieldRef": {"fieldPath": "metadata.name"}}]}},
                {"name": "p", "projected": {"sources": [
                    {"downwardAPI": {"items": [{"path": "cpu", "resourceFieldRef": rf["resourceFieldRef"]}]}},
                    {"serviceAccountToken": {"path": "token"}}]}}]}});
        default_pod(&mut pod);
        let s = &pod["spec"];
        assert_eq!(
            s["containers"][0]["env"][0]["valueFrom"]["resourceFieldRef"]["divisor"],
            "0"
        );
        let items = &s["volumes"][0]["downwardAPI"]["items"];
        assert_eq!(items[0]["resourceFieldRef"]["divisor"], "0");
        assert_eq!(items[1]["fieldRef"]["apiVersion"], "v1");
        let sources = &s["volumes"][1]["projected"]["sources"];
        assert_eq!(
            sources[0]["downwardAPI"]["items"][0]["resourceFieldRef"]["divisor"],
            "0"
        );
        assert_eq!(sources[1]["serviceAccountToken"]["expirationSeconds"], 3600);
    }

    #[test]
    fn qos_classes() {
        let be = json!({"spec": {"containers": [{"name": "a"}]}});
        assert_eq!(pod_qos(&be), "BestEffort");
        let g = json!({"spec": {"containers": [{"name": "a", "resources": {
            "limits": {"cpu": "100m", "memory": "1Gi"}, "requests": {"cpu": "0.1", "memory": "1Gi"}}}]}});
        assert_eq!(pod_qos(&g), "Guaranteed");
        let b = json!({"spec": {"containers": [{"name": "a", "resources": {"requests": {"cpu": "100m"}}}]}});
        assert_eq!(pod_qos(&b), "Burstable");
    }

    #[test]
    fn validation_and_update_rules() {
        let bad = json!({"spec": {"containers": [{"name": "A", "image": ""}, {"name": "b", "image": "x"}, {"name": "b", "image": "x"}], "restartPolicy": "Sometimes"}});
        let errs = validate_pod(&bad);
        assert_eq!(errs.len(), 4);
        let old = json!({"spec": {"containers": [{"name": "a", "image": "x"}], "tolerations": [{"key": "a"}]}});
        let ok = json!({"spec": {"containers": [{"name": "a", "image": "y"}], "tolerations": [{"key": "a"}, {"key": "b"}], "activeDeadlineSeconds": 5}});
        assert!(validate_pod_spec_update(&old, &ok).is_empty());
        let bad = json!({"spec": {"containers": [{"name": "a", "image": "x", "command": ["sh"]}], "tolerations": [{"key": "a"}]}});
        assert_eq!(validate_pod_spec_update(&old, &bad).len(), 1);
        assert!(validate_name("Pod", "", "a.b-c", false).is_ok());
        assert!(validate_name("Pod", "", "A", false).is_err());
    }
}
