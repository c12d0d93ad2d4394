//! What goes into configMap, secret, downwardAPI and projected volumes (kubelet-behavior.md
//! §4.4–4.6): pure functions from the API objects to an atomic-writer payload, with the
//! kubelet's error texts (`configmap.MakePayload`, `secret.MakePayload`,
//! `downwardapi.CollectData`, `fieldpath.ExtractFieldPathAsString`).

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    ConfigMap, Container, DownwardAPIVolumeFile, KeyToPath, ObjectFieldSelector, Pod, ResourceFieldSelector, Secret,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

use super::atomic::{clean_path, FileProjection, Payload};
use crate::podspec::resources::{parse_milli, parse_value};

/// Errors while building a payload (texts as the kubelet's).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PayloadError {
    #[error("configmap references non-existent config key: {key}")]
    MissingConfigMapKey { key: String },
    #[error("references non-existent secret key: {key}")]
    MissingSecretKey { key: String },
    #[error("fieldPath {path:?} does not support subscript")]
    Subscript { path: String },
    #[error("unsupported fieldPath: {path}")]
    UnsupportedField { path: String },
    #[error("container {name} not found")]
    ContainerNotFound { name: String },
    #[error("unsupported container resource : {resource}")]
    UnsupportedResource { resource: String },
    #[error("invalid quantity {quantity:?} for {resource}")]
    BadQuantity { quantity: String, resource: String },
}

fn mode_of(item_mode: Option<i32>, default_mode: i32) -> u32 {
    // Modes are validated by the API server to 0..=0777; mask anyway so a bad value never sets
    // setuid bits.
    (item_mode.unwrap_or(default_mode) as u32) & 0o777
}

fn file(data: Vec<u8>, mode: u32) -> FileProjection {
    FileProjection {
        data,
        mode,
        fs_user: None,
    }
}

/// A configMap's files: every key (`data` and `binaryData`) without `items`, else the listed
/// keys at their paths; a missing key is an error unless `optional`.
pub fn configmap_payload(
    items: Option<&[KeyToPath]>,
    cm: &ConfigMap,
    default_mode: i32,
    optional: bool,
) -> Result<Payload, PayloadError> {
    let data = cm.data.as_ref();
    let binary = cm.binary_data.as_ref();
    let mut out = Payload::new();
    match items.filter(|i| !i.is_empty()) {
        None => {
            for (k, v) in data.into_iter().flatten() {
                out.insert(k.clone(), file(v.clone().into_bytes(), mode_of(None, default_mode)));
            }
            for (k, v) in binary.into_iter().flatten() {
                out.insert(k.clone(), file(v.0.clone(), mode_of(None, default_mode)));
            }
        }
        Some(items) => {
            for ktp in items {
                let bytes = match (data.and_then(|d| d.get(&ktp.key)), binary.and_then(|b| b.get(&ktp.key))) {
                    (Some(s), _) => s.clone().into_bytes(),
                    (None, Some(b)) => b.0.clone(),
                    (None, None) if optional => continue,
                    (None, None) => return Err(PayloadError::MissingConfigMapKey { key: ktp.key.clone() }),
                };
                out.insert(ktp.path.clone(), file(bytes, mode_of(ktp.mode, default_mode)));
            }
        }
    }
    Ok(out)
}

/// A secret's files, with the same rules as a configMap's.
pub fn secret_payload(
    items: Option<&[KeyToPath]>,
    secret: &Secret,
    default_mode: i32,
    optional: bool,
) -> Result<Payload, PayloadError> {
    // `stringData` is write-only (the API server folds it into `data`); honour it anyway for
    // objects that did not go through an API server.
    let mut data: BTreeMap<String, Vec<u8>> = secret
        .string_data
        .iter()
        .flatten()
        .map(|(k, v)| (k.clone(), v.clone().into_bytes()))
        .collect();
    for (k, v) in secret.data.iter().flatten() {
        data.insert(k.clone(), v.0.clone());
    }
    let mut out = Payload::new();
    match items.filter(|i| !i.is_empty()) {
        None => {
            for (k, v) in data {
                out.insert(k, file(v, mode_of(None, default_mode)));
            }
        }
        Some(items) => {
            for ktp in items {
                match data.get(&ktp.key) {
                    Some(v) => {
                        out.insert(ktp.path.clone(), file(v.clone(), mode_of(ktp.mode, default_mode)));
                    }
                    None if optional => {}
                    None => return Err(PayloadError::MissingSecretKey { key: ktp.key.clone() }),
                }
            }
        }
    }
    Ok(out)
}

/// A downwardAPI volume's files (`CollectData`); all item errors are collected.
pub fn downward_payload(
    items: &[DownwardAPIVolumeFile],
    pod: &Pod,
    allocatable: &BTreeMap<String, Quantity>,
    default_mode: i32,
) -> Result<Payload, Vec<PayloadError>> {
    let mut out = Payload::new();
    let mut errors = Vec::new();
    for item in items {
        let mode = mode_of(item.mode, default_mode);
        let value = if let Some(f) = &item.field_ref {
            field_value(pod, f)
        } else if let Some(r) = &item.resource_field_ref {
            resource_value(pod, r, allocatable)
        } else {
            Ok(String::new())
        };
        match value {
            Ok(v) => {
                out.insert(clean_path(&item.path), file(v.into_bytes(), mode));
            }
            Err(e) => errors.push(e),
        }
    }
    if errors.is_empty() {
        Ok(out)
    } else {
        Err(errors)
    }
}

/// `ExtractFieldPathAsString` on a pod: the metadata fields a downwardAPI volume may name.
pub fn field_value(pod: &Pod, f: &ObjectFieldSelector) -> Result<String, PayloadError> {
    let m = &pod.metadata;
    let path = f.field_path.as_str();
    if let Some((base, key)) = split_subscript(path) {
        let map = match base {
            "metadata.annotations" => &m.annotations,
            "metadata.labels" => &m.labels,
            _ => return Err(PayloadError::Subscript { path: path.into() }),
        };
        return Ok(map.as_ref().and_then(|l| l.get(key)).cloned().unwrap_or_default());
    }
    Ok(match path {
        "metadata.annotations" => format_map(m.annotations.as_ref()),
        "metadata.labels" => format_map(m.labels.as_ref()),
        "metadata.name" => m.name.clone().unwrap_or_default(),
        "metadata.namespace" => m.namespace.clone().unwrap_or_default(),
        "metadata.uid" => m.uid.clone().unwrap_or_default(),
        other => return Err(PayloadError::UnsupportedField { path: other.into() }),
    })
}

/// `metadata.labels['key']` → (`metadata.labels`, `key`).
fn split_subscript(path: &str) -> Option<(&str, &str)> {
    let open = path.find("['")?;
    let key = path[open + 2..].strip_suffix("']")?;
    Some((&path[..open], key))
}

/// A label/annotation map as sorted `key="value"` lines with Go `%q` quoting, no trailing newline
/// (`fieldpath.FormatMap`).
pub fn format_map(m: Option<&BTreeMap<String, String>>) -> String {
    m.into_iter()
        .flatten()
        .map(|(k, v)| format!("{k}={}", go_quote(v)))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Go's `strconv.Quote`: printable characters kept, the rest escaped.
pub fn go_quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\u{7}' => out.push_str("\\a"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{b}' => out.push_str("\\v"),
            c if (c as u32) < 0x20 || c as u32 == 0x7f => out.push_str(&format!("\\x{:02x}", c as u32)),
            c if c.is_control() => {
                if (c as u32) < 0x10000 {
                    out.push_str(&format!("\\u{:04x}", c as u32))
                } else {
                    out.push_str(&format!("\\U{:08x}", c as u32))
                }
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// `ExtractResourceValueByContainerNameAndNodeAllocatable`: a container's request or limit in
/// units of `divisor`, rounded up; unset cpu/memory/ephemeral-storage limits are the node's
/// allocatable (kubelet-behavior.md §4.5, §4.9).
pub fn resource_value(
    pod: &Pod,
    sel: &ResourceFieldSelector,
    allocatable: &BTreeMap<String, Quantity>,
) -> Result<String, PayloadError> {
    let name = sel.container_name.as_deref().unwrap_or_default();
    let container = find_container(pod, name).ok_or_else(|| PayloadError::ContainerNotFound { name: name.into() })?;
    container_resource_value(container, sel, allocatable)
}

/// The value of `sel.resource` for `container` (the downward API's rules, shared with env vars).
pub fn container_resource_value(
    container: &Container,
    sel: &ResourceFieldSelector,
    allocatable: &BTreeMap<String, Quantity>,
) -> Result<String, PayloadError> {
    let unsupported = || PayloadError::UnsupportedResource {
        resource: sel.resource.clone(),
    };
    let (kind, resource) = sel.resource.split_once('.').ok_or_else(unsupported)?;
    let defaultable = matches!(resource, "cpu" | "memory" | "ephemeral-storage");
    if !defaultable && !resource.starts_with("hugepages-") {
        return Err(unsupported());
    }
    let res = container.resources.as_ref();
    let mut value = match kind {
        "limits" => res
            .and_then(|r| r.limits.as_ref())
            .and_then(|m| m.get(resource))
            .cloned(),
        "requests" => res
            .and_then(|r| r.requests.as_ref())
            .and_then(|m| m.get(resource))
            .cloned(),
        _ => return Err(unsupported()),
    };
    if value.is_none() && kind == "limits" && defaultable {
        value = allocatable.get(resource).cloned();
    }
    let quantity = value.map(|q| q.0).unwrap_or_else(|| "0".into());
    let divisor = sel.divisor.as_ref().map(|d| d.0.as_str()).unwrap_or("1");
    let bad = |q: &str| PayloadError::BadQuantity {
        quantity: q.to_string(),
        resource: sel.resource.clone(),
    };
    // cpu in millicores, the rest in whole units.
    let parse = if resource == "cpu" { parse_milli } else { parse_value };
    let v = parse(&quantity).map_err(|_| bad(&quantity))?;
    let mut d = parse(divisor).map_err(|_| bad(divisor))?;
    // The API server defaults an absent divisor to "0"; the kubelet reads a zero divisor as 1
    // (`ExtractContainerResourceValue`).
    if d == 0 {
        d = parse("1").map_err(|_| bad(divisor))?;
    }
    if d < 0 {
        return Err(bad(divisor));
    }
    let q = v / d;
    let ceil = if v % d != 0 && v > 0 { q + 1 } else { q };
    Ok(ceil.to_string())
}

fn find_container<'a>(pod: &'a Pod, name: &str) -> Option<&'a Container> {
    let spec = pod.spec.as_ref()?;
    spec.containers
        .iter()
        .chain(spec.init_containers.iter().flatten())
        .find(|c| c.name == name)
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{PodSpec, ResourceRequirements};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
    use k8s_openapi::ByteString;

    fn ktp(key: &str, path: &str, mode: Option<i32>) -> KeyToPath {
        KeyToPath {
            key: key.into(),
            path: path.into(),
            mode,
        }
    }

    fn cm() -> ConfigMap {
        ConfigMap {
            data: Some(BTreeMap::from([
                ("foo".to_string(), "foo".to_string()),
                ("bar".to_string(), "bar".to_string()),
            ])),
            binary_data: Some(BTreeMap::from([("bin".to_string(), ByteString(vec![0, 1, 2]))])),
            ..Default::default()
        }
    }

    #[test]
    fn configmap_table() {
        // After configmap_test.go TestMakePayload.
        let all = configmap_payload(None, &cm(), 0o644, false).unwrap();
        assert_eq!(all.len(), 3);
        assert_eq!(all["foo"].data, b"foo");
        assert_eq!(all["bin"].data, vec![0, 1, 2]);
        assert!(all.values().all(|f| f.mode == 0o644));

        let items = [ktp("foo", "path/to/foo.txt", None), ktp("bar", "bar.bin", Some(0o400))];
        let some = configmap_payload(Some(&items), &cm(), 0o644, false).unwrap();
        assert_eq!(some.keys().collect::<Vec<_>>(), ["bar.bin", "path/to/foo.txt"]);
        assert_eq!(some["bar.bin"].mode, 0o400);
        assert_eq!(some["path/to/foo.txt"].mode, 0o644);

        let missing = [ktp("foo", "foo", None), ktp("nope", "x", None)];
        assert_eq!(
            configmap_payload(Some(&missing), &cm(), 0o644, false)
                .unwrap_err()
                .to_string(),
            "configmap references non-existent config key: nope"
        );
        let opt = configmap_payload(Some(&missing), &cm(), 0o644, true).unwrap();
        assert_eq!(opt.len(), 1);
        // An empty object (optional and absent) gives no files.
        assert!(configmap_payload(None, &ConfigMap::default(), 0o644, true)
            .unwrap()
            .is_empty());
    }

    #[test]
    fn secret_table() {
        let s = Secret {
            data: Some(BTreeMap::from([
                ("user".to_string(), ByteString(b"admin".to_vec())),
                ("pw".to_string(), ByteString(b"hunter2".to_vec())),
            ])),
            ..Default::default()
        };
        let all = secret_payload(None, &s, 0o400, false).unwrap();
        assert_eq!(all["pw"].data, b"hunter2");
        assert_eq!(all["pw"].mode, 0o400);
        let items = [ktp("user", "u/name", Some(0o600))];
        let one = secret_payload(Some(&items), &s, 0o644, false).unwrap();
        assert_eq!(one["u/name"].mode, 0o600);
        let bad = [ktp("nope", "x", None)];
        assert_eq!(
            secret_payload(Some(&bad), &s, 0o644, false).unwrap_err().to_string(),
            "references non-existent secret key: nope"
        );
        assert!(secret_payload(Some(&bad), &s, 0o644, true).unwrap().is_empty());
    }

    fn pod() -> Pod {
        Pod {
            metadata: ObjectMeta {
                name: Some("web".into()),
                namespace: Some("ns1".into()),
                uid: Some("u-1".into()),
                labels: Some(BTreeMap::from([
                    ("key1".to_string(), "value1".to_string()),
                    ("a".to_string(), "quo\"te\n".to_string()),
                ])),
                ..Default::default()
            },
            spec: Some(PodSpec {
                containers: vec![Container {
                    name: "c".into(),
                    resources: Some(ResourceRequirements {
                        requests: Some(BTreeMap::from([
                            ("cpu".to_string(), Quantity("250m".into())),
                            ("memory".to_string(), Quantity("32Mi".into())),
                        ])),
                        limits: Some(BTreeMap::from([("cpu".to_string(), Quantity("1250m".into()))])),
                        ..Default::default()
                    }),
                    ..Default::default()
                }],
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn field(path: &str) -> ObjectFieldSelector {
        ObjectFieldSelector {
            field_path: path.into(),
            ..Default::default()
        }
    }

    #[test]
    fn field_paths() {
        let p = pod();
        assert_eq!(field_value(&p, &field("metadata.name")).unwrap(), "web");
        assert_eq!(field_value(&p, &field("metadata.namespace")).unwrap(), "ns1");
        assert_eq!(field_value(&p, &field("metadata.uid")).unwrap(), "u-1");
        assert_eq!(
            field_value(&p, &field("metadata.labels")).unwrap(),
            "a=\"quo\\\"te\\n\"\nkey1=\"value1\""
        );
        assert_eq!(field_value(&p, &field("metadata.labels['key1']")).unwrap(), "value1");
        assert_eq!(field_value(&p, &field("metadata.annotations['x']")).unwrap(), "");
        assert_eq!(field_value(&p, &field("metadata.annotations")).unwrap(), "");
        assert_eq!(
            field_value(&p, &field("spec.nodeName")).unwrap_err().to_string(),
            "unsupported fieldPath: spec.nodeName"
        );
        assert_eq!(
            field_value(&p, &field("metadata.name['x']")).unwrap_err().to_string(),
            "fieldPath \"metadata.name['x']\" does not support subscript"
        );
    }

    fn rsel(resource: &str, divisor: Option<&str>) -> ResourceFieldSelector {
        ResourceFieldSelector {
            container_name: Some("c".into()),
            resource: resource.into(),
            divisor: divisor.map(|d| Quantity(d.into())),
        }
    }

    #[test]
    fn resource_values() {
        let p = pod();
        let alloc = BTreeMap::from([
            ("cpu".to_string(), Quantity("2".into())),
            ("memory".to_string(), Quantity("4Gi".into())),
        ]);
        let v = |r, d| resource_value(&p, &rsel(r, d), &alloc).unwrap();
        assert_eq!(v("requests.cpu", None), "1");
        assert_eq!(v("limits.cpu", None), "2");
        assert_eq!(v("limits.cpu", Some("1m")), "1250");
        // The server's default divisor "0" (and any zero) means 1.
        assert_eq!(v("limits.cpu", Some("0")), "2");
        assert_eq!(v("requests.cpu", Some("0m")), "1");
        assert_eq!(v("requests.memory", Some("0")), "33554432");
        assert!(resource_value(&p, &rsel("requests.memory", Some("-1")), &alloc).is_err());
        assert_eq!(v("requests.memory", None), "33554432");
        assert_eq!(v("requests.memory", Some("1Mi")), "32");
        // No memory limit: node allocatable.
        assert_eq!(v("limits.memory", Some("1Gi")), "4");
        assert_eq!(v("requests.ephemeral-storage", None), "0");
        assert!(resource_value(&p, &rsel("limits.gpu", None), &alloc).is_err());
        let mut other = rsel("limits.cpu", None);
        other.container_name = Some("nope".into());
        assert_eq!(
            resource_value(&p, &other, &alloc).unwrap_err().to_string(),
            "container nope not found"
        );
    }

    #[test]
    fn downward_items_clean_paths_and_collect_errors() {
        let p = pod();
        let items = vec![
            DownwardAPIVolumeFile {
                path: "./podname".into(),
                field_ref: Some(field("metadata.name")),
                mode: Some(0o400),
                ..Default::default()
            },
            DownwardAPIVolumeFile {
                path: "labels".into(),
                field_ref: Some(field("metadata.labels")),
                ..Default::default()
            },
        ];
        let out = downward_payload(&items, &p, &BTreeMap::new(), 0o644).unwrap();
        assert_eq!(out["podname"].data, b"web");
        assert_eq!(out["podname"].mode, 0o400);
        assert_eq!(out["labels"].mode, 0o644);
        let bad = vec![
            DownwardAPIVolumeFile {
                path: "a".into(),
                field_ref: Some(field("spec.x")),
                ..Default::default()
            },
            DownwardAPIVolumeFile {
                path: "b".into(),
                field_ref: Some(field("status.y")),
                ..Default::default()
            },
        ];
        assert_eq!(
            downward_payload(&bad, &p, &BTreeMap::new(), 0o644).unwrap_err().len(),
            2
        );
    }

    #[test]
    fn go_quote_escapes() {
        assert_eq!(go_quote("a\"b\\c\td\u{1}"), "\"a\\\"b\\\\c\\td\\x01\"");
        assert_eq!(go_quote("héllo"), "\"héllo\"");
    }
}
