//! Discovery documents: `/version`, `/api`, `/apis`, `/apis/{group}` and the resource lists.
//! Only the unaggregated (pre-1.26) forms are served; clients asking for the aggregated
//! `APIGroupDiscoveryList` get `application/json` and fall back, as with an older server.

use serde_json::{json, Value};

use super::resources::{in_group_version, GROUPS, RESOURCES};

pub const GIT_VERSION: &str = "v1.33.0";

pub fn version() -> Value {
    json!({
        "major": "1",
        "minor": "33",
        "gitVersion": GIT_VERSION,
        "gitCommit": "60a317eadfcb839692a68eab88b2096f4d708f4f",
        "gitTreeState": "clean",
        "buildDate": "2025-04-23T13:00:00Z",
        "goVersion": "go1.24.2",
        "compiler": "gc",
        "platform": "linux/amd64",
    })
}

pub fn api_versions(server_address: &str) -> Value {
    json!({
        "kind": "APIVersions",
        "versions": ["v1"],
        "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": server_address}],
    })
}

fn group_json(group: &str) -> Value {
    let gv = format!("{group}/v1");
    json!({
        "name": group,
        "versions": [{"groupVersion": gv, "version": "v1"}],
        "preferredVersion": {"groupVersion": gv, "version": "v1"},
    })
}

pub fn api_group_list() -> Value {
    json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": GROUPS.iter().map(|g| group_json(g)).collect::<Vec<_>>()})
}

pub fn api_group(group: &str) -> Option<Value> {
    GROUPS.contains(&group).then(|| {
        let mut g = group_json(group);
        g["kind"] = json!("APIGroup");
        g["apiVersion"] = json!("v1");
        g
    })
}

pub fn resource_list(group: &str, version: &str) -> Option<Value> {
    if !RESOURCES.iter().any(|r| r.group == group && r.version == version) {
        return None;
    }
    let mut resources = Vec::new();
    for r in in_group_version(group, version) {
        let mut entry = json!({
            "name": r.plural,
            "singularName": r.singular,
            "namespaced": r.namespaced,
            "kind": r.kind,
            "verbs": r.verbs,
        });
        if !r.short_names.is_empty() {
            entry["shortNames"] = json!(r.short_names);
        }
        if !r.categories.is_empty() {
            entry["categories"] = json!(r.categories);
        }
        resources.push(entry);
        for (sub, kind, verbs) in r.subresources {
            let mut e = json!({
                "name": format!("{}/{}", r.plural, sub),
                "singularName": "",
                "namespaced": r.namespaced,
                "kind": kind,
                "verbs": verbs,
            });
            // Subresources of another group name it, like pods/eviction → policy/v1 Eviction.
            if *sub == "eviction" {
                e["group"] = json!("policy");
                e["version"] = json!("v1");
            }
            if *sub == "token" {
                e["group"] = json!("authentication.k8s.io");
                e["version"] = json!("v1");
            }
            resources.push(e);
        }
    }
    let gv = if group.is_empty() {
        version.to_string()
    } else {
        format!("{group}/{version}")
    };
    Some(json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": gv, "resources": resources}))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn core_list_has_short_names_and_subresources() {
        let l = resource_list("", "v1").unwrap();
        let names: Vec<&str> = l["resources"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["name"].as_str().unwrap())
            .collect();
        for want in [
            "pods",
            "pods/status",
            "pods/binding",
            "pods/log",
            "pods/exec",
            "nodes/status",
            "nodes/proxy",
            "serviceaccounts/token",
        ] {
            assert!(names.contains(&want), "{want}");
        }
        let pods = l["resources"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["name"] == "pods")
            .unwrap();
        assert_eq!(pods["shortNames"], json!(["po"]));
        assert!(resource_list("coordination.k8s.io", "v1").is_some());
        assert!(resource_list("apps", "v1").is_none());
    }
}

/// The OpenAPI v3 group-version paths served (`/openapi/v3`).
fn openapi_gv_path(group: &str, version: &str) -> String {
    if group.is_empty() {
        format!("api/{version}")
    } else {
        format!("apis/{group}/{version}")
    }
}

/// `/openapi/v3`: the index of per-group-version documents.
pub fn openapi_v3_index() -> Value {
    let mut paths = serde_json::Map::new();
    let mut gvs: Vec<(&str, &str)> = RESOURCES.iter().map(|r| (r.group, r.version)).collect();
    gvs.dedup();
    for (g, v) in gvs {
        let p = openapi_gv_path(g, v);
        let url = format!("/openapi/v3/{p}?hash={}", GIT_VERSION.replace('.', ""));
        paths.entry(p).or_insert_with(|| json!({"serverRelativeURL": url}));
    }
    json!({"paths": paths})
}

/// `/openapi/v3/{api/v1|apis/g/v}`: the operations of each resource, with their
/// `x-kubernetes-group-version-kind` and query parameters. kubectl reads these to learn that
/// PATCH/POST/PUT honour `fieldValidation` (server-side validation). Schemas are not included:
/// kubectl then computes apply patches from its built-in types, as with a server without them.
pub fn openapi_v3_doc(gv_path: &str) -> Option<Value> {
    let mut paths = serde_json::Map::new();
    let mut found = false;
    for r in RESOURCES {
        if openapi_gv_path(r.group, r.version) != gv_path {
            continue;
        }
        found = true;
        let gvk = json!({"group": r.group, "version": r.version, "kind": r.kind});
        let base = if r.group.is_empty() {
            format!("/api/{}", r.version)
        } else {
            format!("/apis/{}/{}", r.group, r.version)
        };
        let coll = if r.namespaced {
            format!("{base}/namespaces/{{namespace}}/{}", r.plural)
        } else {
            format!("{base}/{}", r.plural)
        };
        let param = |n: &str| json!({"name": n, "in": "query", "schema": {"type": "string", "uniqueItems": true}});
        let write_params = json!([param("dryRun"), param("fieldManager"), param("fieldValidation")]);
        let op = |action: &str, params: &Value| json!({"x-kubernetes-action": action, "x-kubernetes-group-version-kind": gvk, "parameters": params});
        let has = |v: &str| r.verbs.contains(&v);
        let mut item = serde_json::Map::new();
        if has("get") {
            item.insert("get".into(), op("get", &json!([])));
        }
        if has("update") {
            item.insert("put".into(), op("put", &write_params));
        }
        if has("patch") {
            item.insert("patch".into(), op("patch", &write_params));
        }
        if has("delete") {
            item.insert(
                "delete".into(),
                op("delete", &json!([param("dryRun"), param("gracePeriodSeconds")])),
            );
        }
        let mut collection = serde_json::Map::new();
        if has("list") {
            collection.insert(
                "get".into(),
                op("list", &json!([param("labelSelector"), param("fieldSelector")])),
            );
        }
        if has("create") {
            collection.insert("post".into(), op("post", &write_params));
        }
        paths.insert(format!("{coll}/{{name}}"), Value::Object(item));
        paths.insert(coll, Value::Object(collection));
    }
    found.then(|| {
        json!({"openapi": "3.0.0", "info": {"title": "Kubernetes", "version": GIT_VERSION}, "paths": paths,
               "components": {"schemas": {}}})
    })
}
