//! Protobuf request bodies (`application/vnd.kubernetes.protobuf`), which kubectl's typed
//! clients send (`kubectl create namespace|configmap|secret|serviceaccount|token`). The server
//! decodes the `k8s\0` + `runtime.Unknown` envelope and the object with the field numbers of
//! `generated.proto` for the kinds kubectl creates this way; answers stay JSON (clients accept it).

use serde_json::{json, Map, Value};

use super::pki::base64_std;

/// How one field is encoded.
#[derive(Clone, Copy)]
enum Ty {
    Str,
    /// `bytes`, shown base64 in JSON.
    Bytes,
    Int,
    Bool,
    Msg(&'static [Field]),
    MapStr,
    MapBytes,
    /// `metav1.Time` {seconds = 1, nanos = 2}.
    Time,
}

#[derive(Clone, Copy)]
struct Field {
    num: u64,
    name: &'static str,
    ty: Ty,
    repeated: bool,
}

const fn f(num: u64, name: &'static str, ty: Ty) -> Field {
    Field {
        num,
        name,
        ty,
        repeated: false,
    }
}

const fn rep(num: u64, name: &'static str, ty: Ty) -> Field {
    Field {
        num,
        name,
        ty,
        repeated: true,
    }
}

const OWNER_REF: &[Field] = &[
    f(5, "apiVersion", Ty::Str),
    f(1, "kind", Ty::Str),
    f(3, "name", Ty::Str),
    f(4, "uid", Ty::Str),
    f(6, "controller", Ty::Bool),
    f(7, "blockOwnerDeletion", Ty::Bool),
];
const OBJECT_META: &[Field] = &[
    f(1, "name", Ty::Str),
    f(2, "generateName", Ty::Str),
    f(3, "namespace", Ty::Str),
    f(5, "uid", Ty::Str),
    f(6, "resourceVersion", Ty::Str),
    f(7, "generation", Ty::Int),
    f(8, "creationTimestamp", Ty::Time),
    f(11, "labels", Ty::MapStr),
    f(12, "annotations", Ty::MapStr),
    rep(13, "ownerReferences", Ty::Msg(OWNER_REF)),
    rep(14, "finalizers", Ty::Str),
];
const OBJECT_REF: &[Field] = &[
    f(1, "kind", Ty::Str),
    f(2, "namespace", Ty::Str),
    f(3, "name", Ty::Str),
    f(4, "uid", Ty::Str),
    f(5, "apiVersion", Ty::Str),
];
const LOCAL_REF: &[Field] = &[f(1, "name", Ty::Str)];
const CONFIG_MAP: &[Field] = &[
    f(1, "metadata", Ty::Msg(OBJECT_META)),
    f(2, "data", Ty::MapStr),
    f(3, "binaryData", Ty::MapBytes),
    f(4, "immutable", Ty::Bool),
];
const SECRET: &[Field] = &[
    f(1, "metadata", Ty::Msg(OBJECT_META)),
    f(2, "data", Ty::MapBytes),
    f(3, "type", Ty::Str),
    f(4, "stringData", Ty::MapStr),
    f(5, "immutable", Ty::Bool),
];
const NAMESPACE_SPEC: &[Field] = &[rep(1, "finalizers", Ty::Str)];
const NAMESPACE: &[Field] = &[
    f(1, "metadata", Ty::Msg(OBJECT_META)),
    f(2, "spec", Ty::Msg(NAMESPACE_SPEC)),
];
const SERVICE_ACCOUNT: &[Field] = &[
    f(1, "metadata", Ty::Msg(OBJECT_META)),
    rep(2, "secrets", Ty::Msg(OBJECT_REF)),
    rep(3, "imagePullSecrets", Ty::Msg(LOCAL_REF)),
    f(4, "automountServiceAccountToken", Ty::Bool),
];
const BOUND_REF: &[Field] = &[
    f(1, "kind", Ty::Str),
    f(2, "apiVersion", Ty::Str),
    f(3, "name", Ty::Str),
    f(4, "uid", Ty::Str),
];
const TOKEN_REQUEST_SPEC: &[Field] = &[
    rep(1, "audiences", Ty::Str),
    f(3, "boundObjectRef", Ty::Msg(BOUND_REF)),
    f(4, "expirationSeconds", Ty::Int),
];
const TOKEN_REQUEST: &[Field] = &[
    f(1, "metadata", Ty::Msg(OBJECT_META)),
    f(2, "spec", Ty::Msg(TOKEN_REQUEST_SPEC)),
];
const METADATA_ONLY: &[Field] = &[f(1, "metadata", Ty::Msg(OBJECT_META))];
// authorization.k8s.io/v1 (`kubectl auth can-i` sends a SelfSubjectAccessReview).
const RESOURCE_ATTRIBUTES: &[Field] = &[
    f(1, "namespace", Ty::Str),
    f(2, "verb", Ty::Str),
    f(3, "group", Ty::Str),
    f(4, "version", Ty::Str),
    f(5, "resource", Ty::Str),
    f(6, "subresource", Ty::Str),
    f(7, "name", Ty::Str),
];
const NON_RESOURCE_ATTRIBUTES: &[Field] = &[f(1, "path", Ty::Str), f(2, "verb", Ty::Str)];
const ACCESS_REVIEW_SPEC: &[Field] = &[
    f(1, "resourceAttributes", Ty::Msg(RESOURCE_ATTRIBUTES)),
    f(2, "nonResourceAttributes", Ty::Msg(NON_RESOURCE_ATTRIBUTES)),
    f(3, "user", Ty::Str),
    rep(4, "groups", Ty::Str),
    f(6, "uid", Ty::Str),
];
const ACCESS_REVIEW: &[Field] = &[
    f(1, "metadata", Ty::Msg(OBJECT_META)),
    f(2, "spec", Ty::Msg(ACCESS_REVIEW_SPEC)),
];
const TOKEN_REVIEW_SPEC: &[Field] = &[f(1, "token", Ty::Str), rep(2, "audiences", Ty::Str)];
const TOKEN_REVIEW: &[Field] = &[
    f(1, "metadata", Ty::Msg(OBJECT_META)),
    f(2, "spec", Ty::Msg(TOKEN_REVIEW_SPEC)),
];
const TYPE_META: &[Field] = &[f(1, "apiVersion", Ty::Str), f(2, "kind", Ty::Str)];
const UNKNOWN: &[Field] = &[f(1, "typeMeta", Ty::Msg(TYPE_META)), f(2, "raw", Ty::Bytes)];

#[derive(Debug, thiserror::Error)]
pub enum ProtobufError {
    #[error("not a Kubernetes protobuf envelope")]
    Envelope,
    #[error("truncated or malformed protobuf")]
    Malformed,
    #[error("protobuf bodies of {0} are not supported by the test apiserver")]
    UnsupportedKind(String),
}

struct Reader<'a> {
    buf: &'a [u8],
}

impl Reader<'_> {
    fn varint(&mut self) -> Result<u64, ProtobufError> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let (&b, rest) = self.buf.split_first().ok_or(ProtobufError::Malformed)?;
            self.buf = rest;
            v |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err(ProtobufError::Malformed)
    }

    fn bytes(&mut self) -> Result<Vec<u8>, ProtobufError> {
        let len = usize::try_from(self.varint()?).map_err(|_| ProtobufError::Malformed)?;
        if len > self.buf.len() {
            return Err(ProtobufError::Malformed);
        }
        let (head, rest) = self.buf.split_at(len);
        self.buf = rest;
        Ok(head.to_vec())
    }

    fn skip(&mut self, wire: u64) -> Result<(), ProtobufError> {
        match wire {
            0 => self.varint().map(|_| ()),
            1 | 5 => {
                let n = if wire == 1 { 8 } else { 4 };
                self.buf = self.buf.get(n..).ok_or(ProtobufError::Malformed)?;
                Ok(())
            }
            2 => self.bytes().map(|_| ()),
            _ => Err(ProtobufError::Malformed),
        }
    }
}

fn map_entry(data: &[u8], bytes_value: bool) -> Result<(String, Value), ProtobufError> {
    let mut r = Reader { buf: data };
    let (mut k, mut v) = (String::new(), Value::from(""));
    while !r.buf.is_empty() {
        let tag = r.varint()?;
        match (tag >> 3, tag & 7) {
            (1, 2) => k = String::from_utf8_lossy(&r.bytes()?).into_owned(),
            (2, 2) => {
                let b = r.bytes()?;
                v = if bytes_value {
                    json!(base64_std(&b))
                } else {
                    json!(String::from_utf8_lossy(&b))
                };
            }
            (_, w) => r.skip(w)?,
        }
    }
    Ok((k, v))
}

fn decode(data: &[u8], schema: &[Field]) -> Result<Map<String, Value>, ProtobufError> {
    let mut out = Map::new();
    let mut r = Reader { buf: data };
    while !r.buf.is_empty() {
        let tag = r.varint()?;
        let (num, wire) = (tag >> 3, tag & 7);
        let Some(field) = schema.iter().find(|f| f.num == num) else {
            r.skip(wire)?;
            continue;
        };
        let value = match (field.ty, wire) {
            (Ty::Str, 2) => json!(String::from_utf8_lossy(&r.bytes()?)),
            (Ty::Bytes, 2) => json!(base64_std(&r.bytes()?)),
            (Ty::Int, 0) => json!(r.varint()? as i64),
            (Ty::Bool, 0) => json!(r.varint()? != 0),
            (Ty::Msg(s), 2) => Value::Object(decode(&r.bytes()?, s)?),
            (Ty::Time, 2) => {
                let t = decode(&r.bytes()?, &[f(1, "seconds", Ty::Int)])?;
                let secs = t.get("seconds").and_then(Value::as_i64).unwrap_or(0);
                match jiff::Timestamp::from_second(secs) {
                    Ok(ts) => json!(super::objects::format_time(ts)),
                    Err(_) => Value::Null,
                }
            }
            (Ty::MapStr | Ty::MapBytes, 2) => {
                let (k, v) = map_entry(&r.bytes()?, matches!(field.ty, Ty::MapBytes))?;
                let m = out.entry(field.name).or_insert_with(|| json!({}));
                if let Some(m) = m.as_object_mut() {
                    m.insert(k, v);
                }
                continue;
            }
            (_, w) => {
                r.skip(w)?;
                continue;
            }
        };
        if field.repeated {
            let list = out.entry(field.name).or_insert_with(|| json!([]));
            if let Some(l) = list.as_array_mut() {
                l.push(value);
            }
        } else {
            out.insert(field.name.to_string(), value);
        }
    }
    Ok(out)
}

/// Decodes a protobuf request body into the JSON object it stands for.
pub fn decode_body(body: &[u8]) -> Result<Value, ProtobufError> {
    let inner = body.strip_prefix(b"k8s\0").ok_or(ProtobufError::Envelope)?;
    let unknown = decode(inner, UNKNOWN)?;
    let api_version = unknown.pointer_str("typeMeta", "apiVersion");
    let kind = unknown.pointer_str("typeMeta", "kind");
    let raw = match unknown.get("raw").and_then(Value::as_str) {
        Some(_) => raw_bytes(inner)?,
        None => Vec::new(),
    };
    let schema = match kind.as_str() {
        "ConfigMap" => CONFIG_MAP,
        "Secret" => SECRET,
        "Namespace" => NAMESPACE,
        "ServiceAccount" => SERVICE_ACCOUNT,
        "TokenRequest" => TOKEN_REQUEST,
        "SelfSubjectReview" => METADATA_ONLY,
        "SelfSubjectAccessReview" | "SubjectAccessReview" => ACCESS_REVIEW,
        "TokenReview" => TOKEN_REVIEW,
        other => return Err(ProtobufError::UnsupportedKind(other.to_string())),
    };
    let mut obj = decode(&raw, schema)?;
    obj.insert("apiVersion".into(), json!(api_version));
    obj.insert("kind".into(), json!(kind));
    Ok(Value::Object(obj))
}

/// The `raw` field of the envelope, as bytes (the generic decoder renders it base64).
fn raw_bytes(inner: &[u8]) -> Result<Vec<u8>, ProtobufError> {
    let mut r = Reader { buf: inner };
    while !r.buf.is_empty() {
        let tag = r.varint()?;
        if tag == (2 << 3) | 2 {
            return r.bytes();
        }
        r.skip(tag & 7)?;
    }
    Ok(Vec::new())
}

trait PointerStr {
    fn pointer_str(&self, a: &str, b: &str) -> String;
}

impl PointerStr for Map<String, Value> {
    fn pointer_str(&self, a: &str, b: &str) -> String {
        self.get(a)
            .and_then(|v| v.get(b))
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn field(out: &mut Vec<u8>, num: u8, bytes: &[u8]) {
        out.push((num << 3) | 2);
        out.push(bytes.len() as u8);
        out.extend_from_slice(bytes);
    }

    #[test]
    fn decodes_a_configmap_envelope() {
        let mut meta = Vec::new();
        field(&mut meta, 1, b"c2");
        let mut entry = Vec::new();
        field(&mut entry, 1, b"a");
        field(&mut entry, 2, b"b");
        let mut cm = Vec::new();
        field(&mut cm, 1, &meta);
        field(&mut cm, 2, &entry);
        let mut tm = Vec::new();
        field(&mut tm, 1, b"v1");
        field(&mut tm, 2, b"ConfigMap");
        let mut unknown = Vec::new();
        field(&mut unknown, 1, &tm);
        field(&mut unknown, 2, &cm);
        let mut body = b"k8s\0".to_vec();
        body.extend(unknown);
        let v = decode_body(&body).unwrap();
        assert_eq!(
            v,
            json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c2"}, "data": {"a": "b"}})
        );
        assert!(decode_body(b"nope").is_err());
    }
}
