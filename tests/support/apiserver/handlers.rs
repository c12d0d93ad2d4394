//! Request handling: outage and authentication checks, routing of the REST paths, and the verbs
//! (get, list, watch, create, update, patch, delete, deletecollection and the subresources)
//! with the real server's semantics for each kind.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use http::{HeaderValue, Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use serde_json::{json, Map, Value};

use super::admission;
use super::auth::{bearer, UserInfo};
use super::authz::{self, Attributes};
use super::defaulting;
use super::discovery;
use super::errors::{ApiError, FieldError};
use super::events;
use super::fieldvalidation;
use super::kubeletproxy;
use super::nodeauthz;
use super::objects::{format_time, meta, meta_mut, meta_str, name, new_uid, now_time, parse_time, random_suffix};
use super::patch::{self, PatchType};
use super::protobuf;
use super::resources::{self, api_version, Resource};
use super::selectors::{FieldSelector, LabelSelector};
use super::server::Shared;
use super::store::Inner;
use super::table::{self, IncludeObject};
use super::watch::{self, WatchSpec};

/// Largest request body accepted (the real server's limit is 3 MiB for most bodies).
const MAX_BODY: usize = 3 * 1024 * 1024;
/// Default audience of issued tokens (`--api-audiences`).
const API_AUDIENCE: &str = "https://kubernetes.default.svc.cluster.local";
/// Namespaces the NamespaceLifecycle admission plugin refuses to delete.
const IMMORTAL_NAMESPACES: &[&str] = &["default", "kube-system", "kube-public"];
/// TokenRequest default lifetime.
const DEFAULT_TOKEN_SECONDS: i64 = 3600;

struct Req {
    method: Method,
    query: HashMap<String, String>,
    accept: String,
    content_type: String,
    body: Bytes,
    user: UserInfo,
}

impl Req {
    fn q(&self, k: &str) -> Option<&str> {
        self.query.get(k).map(String::as_str)
    }

    fn wants_table(&self) -> bool {
        self.accept.split(',').any(|a| a.contains("as=Table"))
    }

    /// `as=PartialObjectMetadata[List]`: metadata-only answers (kube's `list_metadata` etc.).
    fn wants_metadata(&self) -> bool {
        !self.wants_table() && self.accept.split(',').any(|a| a.contains("as=PartialObjectMetadata"))
    }

    fn dry_run(&self) -> bool {
        self.q("dryRun") == Some("All")
    }

    fn json_body(&self) -> Result<Value, ApiError> {
        if self.content_type.starts_with("application/vnd.kubernetes.protobuf") {
            return protobuf::decode_body(&self.body).map_err(|e| {
                ApiError::new(
                    415,
                    "UnsupportedMediaType",
                    format!("the body of the request was in an unknown format - {e}"),
                )
            });
        }
        let v: Value = serde_json::from_slice(&self.body)
            .map_err(|e| ApiError::bad_request(format!("the body of the request was in an unknown format: {e}")))?;
        if !v.is_object() {
            return Err(ApiError::bad_request("the body of the request must be a JSON object"));
        }
        Ok(v)
    }
}

pub fn json_response(code: u16, body: &Value) -> Response<Body> {
    let mut r = Response::new(Body::from(body.to_string()));
    *r.status_mut() = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    r.headers_mut()
        .insert(http::header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    r
}

pub(super) fn status_response(e: &ApiError) -> Response<Body> {
    json_response(e.code, &e.to_status())
}

fn success_status(code: u16, details: Option<Value>) -> Value {
    let mut s = json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success"});
    if let Some(d) = details {
        s["details"] = d;
    }
    if code != 200 {
        s["code"] = json!(code);
    }
    s
}

pub(super) fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (bytes[i], hex) {
            (b'+', _) => out.push(b' '),
            (b'%', Some(b)) => {
                out.push(b);
                i += 2;
            }
            (b, _) => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn parse_query(q: Option<&str>) -> HashMap<String, String> {
    q.unwrap_or("")
        .split('&')
        .filter(|kv| !kv.is_empty())
        .map(|kv| {
            let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
            (percent_decode(k), percent_decode(v))
        })
        .collect()
}

/// Entry point for every request.
pub async fn handle(shared: Arc<Shared>, cert_user: Option<UserInfo>, req: Request<Incoming>) -> Response<Body> {
    if !shared.available.load(Ordering::SeqCst) {
        return status_response(&ApiError::unavailable(
            "the server is currently unable to handle the request",
        ));
    }
    let token_user = || {
        let auth = req
            .headers()
            .get(http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok());
        bearer(auth).and_then(|t| shared.tokens.authenticate(t))
    };
    let Some(user) = cert_user.or_else(token_user) else {
        return status_response(&ApiError::new(401, "Unauthorized", "Unauthorized"));
    };
    shared
        .requests
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .push(super::server::RequestRecord {
            user: user.name.clone(),
            method: req.method().clone(),
            path: req.uri().path().to_string(),
            query: req.uri().query().unwrap_or_default().to_string(),
        });
    // The kubelet-facing subresources stream (and upgrade): they never buffer the body.
    if let Some(target) = kubeletproxy::target(req.uri().path()) {
        return kubeletproxy::serve(shared, user, req, target).await;
    }
    let (parts, body) = req.into_parts();
    let header = |h: http::header::HeaderName| {
        parts
            .headers
            .get(h)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string()
    };
    let body = match axum::body::to_bytes(Body::new(body), MAX_BODY).await {
        Ok(b) => b,
        Err(e) => {
            return status_response(&ApiError::new(
                413,
                "RequestEntityTooLarge",
                format!("reading the request body: {e}"),
            ))
        }
    };
    let r = Req {
        method: parts.method.clone(),
        query: parse_query(parts.uri.query()),
        accept: header(http::header::ACCEPT),
        content_type: header(http::header::CONTENT_TYPE),
        body,
        user,
    };
    let path = parts.uri.path().to_string();
    match route(&shared, &path, &r) {
        Ok(resp) => resp,
        Err(e) => status_response(&e),
    }
}

fn route(shared: &Arc<Shared>, path: &str, r: &Req) -> Result<Response<Body>, ApiError> {
    let segs: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    let get_only = |v: Value| {
        if r.method == Method::GET {
            Ok(json_response(200, &v))
        } else {
            Err(ApiError::method_not_allowed())
        }
    };
    match segs.as_slice() {
        ["version"] => get_only(discovery::version()),
        ["healthz"] | ["livez"] | ["readyz"] => {
            let mut resp = Response::new(Body::from("ok"));
            resp.headers_mut().insert(
                http::header::CONTENT_TYPE,
                HeaderValue::from_static("text/plain; charset=utf-8"),
            );
            Ok(resp)
        }
        ["api"] => get_only(discovery::api_versions(&shared.addr.to_string())),
        ["apis"] => get_only(discovery::api_group_list()),
        ["apis", group] => discovery::api_group(group).map_or_else(|| Err(ApiError::page_not_found()), get_only),
        ["openapi", "v2"] if r.method == Method::GET => {
            let mut resp = Response::new(Body::from(discovery::openapi_v2_protobuf()));
            resp.headers_mut().insert(
                http::header::CONTENT_TYPE,
                HeaderValue::from_static(discovery::OPENAPI_V2_PROTOBUF),
            );
            Ok(resp)
        }
        ["openapi", "v3"] => get_only(discovery::openapi_v3_index()),
        ["openapi", "v3", gv @ ..] => {
            discovery::openapi_v3_doc(&gv.join("/")).map_or_else(|| Err(ApiError::page_not_found()), get_only)
        }
        ["api", "v1", rest @ ..] => resource_request(shared, "", "v1", rest, r),
        ["apis", group, version, rest @ ..] => resource_request(shared, group, version, rest, r),
        _ => Err(ApiError::page_not_found()),
    }
}

struct Target {
    res: &'static Resource,
    ns: Option<String>,
    name: Option<String>,
    sub: Option<String>,
}

fn resource_request(
    shared: &Arc<Shared>,
    group: &str,
    version: &str,
    rest: &[&str],
    r: &Req,
) -> Result<Response<Body>, ApiError> {
    if rest.is_empty() {
        return match discovery::resource_list(group, version) {
            Some(v) if r.method == Method::GET => Ok(json_response(200, &v)),
            Some(_) => Err(ApiError::method_not_allowed()),
            None => Err(ApiError::page_not_found()),
        };
    }
    let (watch_path, rest) = match rest {
        ["watch", tail @ ..] => (true, tail),
        _ => (false, rest),
    };
    let (ns, plural, tail): (Option<&str>, &str, &[&str]) = match rest {
        ["namespaces", ns, plural, tail @ ..]
            if !(tail.is_empty() && (*plural == "status" || *plural == "finalize")) =>
        {
            (Some(ns), plural, tail)
        }
        [plural, tail @ ..] => (None, plural, tail),
        [] => return Err(ApiError::page_not_found()),
    };
    if tail.len() > 2 {
        return Err(ApiError::page_not_found());
    }
    let res = resources::find(group, version, plural).ok_or_else(ApiError::page_not_found)?;
    if res.namespaced != ns.is_some() && !(res.namespaced && tail.is_empty()) {
        return Err(ApiError::page_not_found());
    }
    // Namespaced kinds are only read or watched across namespaces; writes name a namespace.
    if res.namespaced && ns.is_none() && r.method != Method::GET {
        return Err(ApiError::page_not_found());
    }
    let t = Target {
        res,
        ns: ns.map(str::to_string),
        name: tail.first().map(|s| s.to_string()),
        sub: tail.get(1).map(|s| s.to_string()),
    };
    let watch = watch_path || matches!(r.q("watch"), Some("true") | Some("1"));
    let attrs = Attributes::resource(
        request_verb(&r.method, t.name.is_some(), watch),
        group,
        plural,
        t.sub.as_deref().unwrap_or(""),
        ns_of(&t),
        t.name.as_deref().unwrap_or(""),
    );
    let decision = authz::authorize(&r.user.name, &r.user.groups, &attrs, &shared.grants);
    if !decision.allowed {
        return Err(authz::forbidden(&r.user.name, &attrs, &decision.reason));
    }
    if let Some(node) = nodeauthz::node_identity(&r.user.name, &r.user.groups) {
        node_restrictions(shared, node, &attrs, r)?;
    }
    if let Some(sub) = t.sub.clone() {
        if !res.subresources.iter().any(|(s, _, _)| *s == sub) {
            return Err(ApiError::page_not_found());
        }
        return subresource(shared, &t, &sub, r);
    }
    if resources::is_review(res) {
        return if r.method == Method::POST && t.name.is_none() {
            review(shared, res, r)
        } else {
            Err(ApiError::method_not_allowed())
        };
    }
    if res.plural == "bindings" {
        return if r.method == Method::POST {
            bind(shared, &t, r)
        } else {
            Err(ApiError::method_not_allowed())
        };
    }
    match (&r.method, &t.name) {
        (&Method::GET, Some(_)) if watch => watch_request(shared, &t, r),
        (&Method::GET, Some(n)) => get(shared, &t, n, r),
        (&Method::GET, None) if watch => watch_request(shared, &t, r),
        (&Method::GET, None) => list(shared, &t, r),
        (&Method::POST, None) => create(shared, &t, r),
        (&Method::PUT, Some(n)) => update(shared, &t, n, r, false),
        (&Method::PATCH, Some(n)) => patch_request(shared, &t, n, r, false),
        (&Method::DELETE, Some(n)) => delete(shared, &t, n, r),
        (&Method::DELETE, None) => delete_collection(shared, &t, r),
        _ => Err(ApiError::method_not_allowed()),
    }
}

/// The verb kube-apiserver's RequestInfo derives for a resource request.
fn request_verb(method: &Method, named: bool, watch: bool) -> &'static str {
    match *method {
        Method::GET | Method::HEAD if watch => "watch",
        Method::GET | Method::HEAD if named => "get",
        Method::GET | Method::HEAD => "list",
        Method::POST => "create",
        Method::PUT => "update",
        Method::PATCH => "patch",
        Method::DELETE if named => "delete",
        Method::DELETE => "deletecollection",
        _ => "",
    }
}

/// The Node authorizer (a list or watch names its object through a `metadata.name` field
/// selector, as the real RequestInfo does) and the NodeRestriction admission plugin, for a
/// node's identity.
fn node_restrictions(shared: &Shared, node: &str, attrs: &Attributes, r: &Req) -> Result<(), ApiError> {
    let mut attrs = attrs.clone();
    if let Attributes::Resource { name, verb, .. } = &mut attrs {
        if name.is_empty() && (verb == "list" || verb == "watch") {
            let selected = r.q("fieldSelector").and_then(|fs| {
                fs.split(',').find_map(|req| {
                    req.strip_prefix("metadata.name=")
                        .or_else(|| req.strip_prefix("metadata.name=="))
                })
            });
            if let Some(n) = selected {
                *name = n.to_string();
            }
        }
    }
    let store = shared.store.lock();
    let decision = nodeauthz::authorize(node, &attrs, &store);
    if !decision.allowed {
        return Err(authz::forbidden(&r.user.name, &attrs, &decision.reason));
    }
    let body: Option<Value> = if r.method == Method::POST || r.method == Method::PUT {
        serde_json::from_slice(&r.body).ok()
    } else {
        None
    };
    let verb = match &attrs {
        Attributes::Resource { verb, .. } => verb.clone(),
        Attributes::NonResource { verb, .. } => verb.clone(),
    };
    nodeauthz::admit(node, &verb, &attrs, body.as_ref(), &store)
}

/// What a client of `res` sees for a stored object.
fn present(res: &Resource, obj: &Value) -> Value {
    if res.store == "events" && res.group == "events.k8s.io" {
        events::to_events_v1(obj)
    } else {
        obj.clone()
    }
}

/// The stored form of a client's object.
fn to_storage(res: &Resource, obj: Value) -> Value {
    if res.store == "events" && res.group == "events.k8s.io" {
        events::to_core(&obj)
    } else {
        obj
    }
}

/// The storage kind/apiVersion (events are stored as core/v1).
fn storage_type(res: &Resource) -> (&'static str, String) {
    if res.store == "events" {
        ("Event", "v1".to_string())
    } else {
        (res.kind, api_version(res))
    }
}

fn ns_of(t: &Target) -> &str {
    t.ns.as_deref().unwrap_or("")
}

fn partial(obj: &Value) -> Value {
    let metadata = obj.get("metadata").cloned().unwrap_or_else(|| json!({}));
    json!({"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1", "metadata": metadata})
}

fn respond_one(res: &Resource, code: u16, obj: &Value, r: &Req) -> Response<Body> {
    if r.wants_metadata() {
        return json_response(code, &partial(obj));
    }
    if r.wants_table() {
        let list_meta = json!({"resourceVersion": meta_str(obj, "resourceVersion")});
        let t = table::table(
            res.kind,
            &[present(res, obj)],
            list_meta,
            IncludeObject::parse(r.q("includeObject")),
        );
        return json_response(code, &t);
    }
    json_response(code, &present(res, obj))
}

fn get(shared: &Arc<Shared>, t: &Target, n: &str, r: &Req) -> Result<Response<Body>, ApiError> {
    let store = shared.store.lock();
    let obj = store
        .get(t.res.store, ns_of(t), n)
        .ok_or_else(|| ApiError::not_found(t.res.plural, t.res.group, n))?;
    Ok(respond_one(t.res, 200, obj, r))
}

fn selectors(t: &Target, r: &Req) -> Result<(LabelSelector, FieldSelector), ApiError> {
    let labels = LabelSelector::parse(r.q("labelSelector").unwrap_or(""))?;
    let fields = FieldSelector::parse(r.q("fieldSelector").unwrap_or(""), t.res.store, &api_version(t.res))?;
    Ok((labels, fields))
}

fn parse_rv(s: Option<&str>) -> Result<Option<u64>, ApiError> {
    match s {
        None | Some("") => Ok(None),
        Some(v) => v
            .parse::<u64>()
            .map(Some)
            .map_err(|_| ApiError::bad_request(format!("invalid resource version: {v}"))),
    }
}

fn list(shared: &Arc<Shared>, t: &Target, r: &Req) -> Result<Response<Body>, ApiError> {
    let (labels, fields) = selectors(t, r)?;
    let rv = parse_rv(r.q("resourceVersion"))?;
    let store = shared.store.lock();
    // The brief asks for 410 on too-old Exact and NotOlderThan lists (the cache cannot serve them).
    if let (Some(rv), Some("Exact" | "NotOlderThan")) = (rv, r.q("resourceVersionMatch")) {
        if rv != 0 && rv < store.compacted() {
            return Err(ApiError::gone(format!(
                "too old resource version: {rv} ({})",
                store.compacted()
            )));
        }
    }
    let items: Vec<Value> = store
        .list(t.res.store, t.ns.as_deref())
        .into_iter()
        .filter(|o| labels.matches(o) && fields.matches(t.res.store, o))
        .map(|o| present(t.res, o))
        .collect();
    let list_meta = json!({"resourceVersion": store.rv().to_string()});
    drop(store);
    if r.wants_metadata() {
        let items: Vec<Value> = items.iter().map(partial).collect();
        return Ok(json_response(
            200,
            &json!({"kind": "PartialObjectMetadataList", "apiVersion": "meta.k8s.io/v1", "metadata": list_meta, "items": items}),
        ));
    }
    if r.wants_table() {
        return Ok(json_response(
            200,
            &table::table(
                t.res.kind,
                &items,
                list_meta,
                IncludeObject::parse(r.q("includeObject")),
            ),
        ));
    }
    // List items carry no kind/apiVersion, like the real server's typed lists.
    let items: Vec<Value> = items
        .into_iter()
        .map(|mut o| {
            if let Some(m) = o.as_object_mut() {
                m.remove("kind");
                m.remove("apiVersion");
            }
            o
        })
        .collect();
    Ok(json_response(
        200,
        &json!({"kind": format!("{}List", t.res.kind), "apiVersion": api_version(t.res), "metadata": list_meta, "items": items}),
    ))
}

fn watch_request(shared: &Arc<Shared>, t: &Target, r: &Req) -> Result<Response<Body>, ApiError> {
    let (labels, mut fields) = selectors(t, r)?;
    if let Some(n) = &t.name {
        // A watch on one object is a watch on the collection with metadata.name=<name>.
        fields = FieldSelector::parse(&format!("metadata.name={n}"), t.res.store, &api_version(t.res))?;
    }
    let rv = parse_rv(r.q("resourceVersion"))?;
    let timeout = r
        .q("timeoutSeconds")
        .and_then(|s| s.parse::<u64>().ok())
        .map(Duration::from_secs);
    let res = t.res;
    let table = r.wants_table().then(|| IncludeObject::parse(r.q("includeObject")));
    let metadata_only = r.wants_metadata();
    let bucket = res.store;
    let spec = WatchSpec {
        bucket,
        namespace: t.ns.clone(),
        resource_version: rv,
        send_initial_events: r.q("sendInitialEvents") == Some("true"),
        bookmarks: r.q("allowWatchBookmarks") == Some("true"),
        timeout,
        matches: Box::new(move |o| labels.matches(o) && fields.matches(bucket, o)),
        present: Box::new(move |o| {
            let p = present(res, o);
            match table {
                Some(include) => {
                    let list_meta = json!({"resourceVersion": meta_str(o, "resourceVersion")});
                    table::table(res.kind, &[p], list_meta, include)
                }
                None if metadata_only => partial(&p),
                None => p,
            }
        }),
        bookmark_type: if table.is_some() {
            ("Table".into(), "meta.k8s.io/v1".into())
        } else if metadata_only {
            ("PartialObjectMetadata".into(), "meta.k8s.io/v1".into())
        } else {
            (res.kind.to_string(), api_version(res))
        },
    };
    let body = watch::start(shared, spec);
    let mut resp = Response::new(body);
    resp.headers_mut()
        .insert(http::header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    resp.headers_mut().insert(
        http::header::CACHE_CONTROL,
        HeaderValue::from_static("no-cache, private"),
    );
    Ok(resp)
}

/// Decodes a request object and checks its apiVersion/kind against the endpoint.
fn decode_object(t: &Target, r: &Req) -> Result<Value, ApiError> {
    let mut obj = r.json_body()?;
    let want_av = api_version(t.res);
    let av = obj.get("apiVersion").and_then(Value::as_str).unwrap_or("");
    if !av.is_empty() && av != want_av {
        return Err(ApiError::bad_request(format!(
            "the API version in the data ({av}) does not match the expected API version ({want_av})"
        )));
    }
    let kind = obj.get("kind").and_then(Value::as_str).unwrap_or("");
    if !kind.is_empty() && kind != t.res.kind {
        return Err(ApiError::bad_request(format!(
            "the kind in the data ({kind}) does not match the expected kind ({})",
            t.res.kind
        )));
    }
    if let Some(m) = obj.as_object_mut() {
        m.insert("apiVersion".into(), json!(want_av));
        m.insert("kind".into(), json!(t.res.kind));
    }
    let ns = meta_str(&obj, "namespace").to_string();
    if let Some(want) = &t.ns {
        if !ns.is_empty() && ns != *want {
            return Err(ApiError::bad_request(
                "the namespace of the provided object does not match the namespace sent on the request",
            ));
        }
        meta_mut(&mut obj).insert("namespace".into(), json!(want));
    } else {
        meta_mut(&mut obj).remove("namespace");
    }
    if r.q("fieldValidation") == Some("Strict") {
        fieldvalidation::check_strict(&want_av, t.res.kind, &obj)?;
    }
    Ok(to_storage(t.res, obj))
}

fn check_namespace(store: &Inner, ns: &str, creating: bool) -> Result<(), ApiError> {
    if ns.is_empty() {
        return Ok(());
    }
    let nsobj = store
        .get("namespaces", "", ns)
        .ok_or_else(|| ApiError::not_found("namespaces", "", ns))?;
    if creating
        && meta(nsobj)
            .and_then(|m| m.get("deletionTimestamp"))
            .is_some_and(|v| !v.is_null())
    {
        return Err(ApiError::new(
            403,
            "Forbidden",
            format!("unable to create new content in namespace {ns} because it is being terminated"),
        ));
    }
    Ok(())
}

fn finalizers(obj: &Value) -> usize {
    meta(obj)
        .and_then(|m| m.get("finalizers"))
        .and_then(Value::as_array)
        .map_or(0, Vec::len)
}

fn deletion_timestamp(obj: &Value) -> Option<&str> {
    meta(obj)
        .and_then(|m| m.get("deletionTimestamp"))
        .and_then(Value::as_str)
}

fn create(shared: &Arc<Shared>, t: &Target, r: &Req) -> Result<Response<Body>, ApiError> {
    let obj = decode_object(t, r)?;
    let mut store = shared.store.lock();
    let created = create_object(&mut store, t.res, ns_of(t), obj, r.dry_run(), &shared.pki.ca_pem)?;
    Ok(respond_one(t.res, 201, &created, r))
}

/// Create with metadata, defaulting, validation and kind-specific behaviour.
pub(crate) fn create_object(
    store: &mut Inner,
    res: &Resource,
    ns: &str,
    mut obj: Value,
    dry_run: bool,
    ca_pem: &str,
) -> Result<Value, ApiError> {
    check_namespace(store, ns, true)?;
    let (kind, _) = storage_type(res);
    let m = meta_mut(&mut obj);
    let mut name = m.get("name").and_then(Value::as_str).unwrap_or("").to_string();
    if name.is_empty() {
        let gen = m.get("generateName").and_then(Value::as_str).unwrap_or("");
        if gen.is_empty() {
            return Err(ApiError::invalid(
                kind,
                res.group,
                "",
                vec![FieldError::required(
                    "metadata.name",
                    "name or generateName is required",
                )],
            ));
        }
        name = format!("{gen}{}", random_suffix(5));
        m.insert("name".into(), json!(name));
    }
    for k in [
        "resourceVersion",
        "deletionTimestamp",
        "deletionGracePeriodSeconds",
        "selfLink",
        "managedFields",
    ] {
        m.remove(k);
    }
    m.insert("uid".into(), json!(new_uid()));
    m.insert("creationTimestamp".into(), json!(now_time()));
    defaulting::validate_name(kind, res.group, &name, res.store == "namespaces")?;
    match res.store {
        "pods" => {
            m.insert("generation".into(), json!(1));
            defaulting::default_pod(&mut obj);
            admission::admit_pod(store, ns, &mut obj)?;
            let errs = defaulting::validate_pod(&obj);
            if !errs.is_empty() {
                return Err(ApiError::invalid(kind, res.group, &name, errs));
            }
            let qos = defaulting::pod_qos(&obj);
            // PrepareForCreate resets status: only the phase and QoS class are set.
            obj["status"] = json!({"phase": "Pending", "qosClass": qos});
        }
        "namespaces" => {
            let labels = m.entry("labels").or_insert_with(|| json!({}));
            if let Some(l) = labels.as_object_mut() {
                l.insert("kubernetes.io/metadata.name".into(), json!(name));
            }
            obj["spec"] = json!({"finalizers": ["kubernetes"]});
            obj["status"] = json!({"phase": "Active"});
        }
        "secrets" => {
            if let Some(o) = obj.as_object_mut() {
                super::objects::default_field(o, "type", json!("Opaque"));
            }
            fold_string_data(&mut obj);
        }
        "nodes" => default_node(&mut obj),
        "services" => default_service(store, &mut obj),
        "events" if res.group == "events.k8s.io" => {
            let errs = events::validate_events_v1(&events::to_events_v1(&obj));
            if !errs.is_empty() {
                return Err(ApiError::invalid(kind, res.group, &name, errs));
            }
        }
        _ => {}
    }
    if store.get(res.store, ns, &name).is_some() {
        return Err(ApiError::already_exists(res.plural, res.group, &name));
    }
    if dry_run {
        return Ok(obj);
    }
    let created = store.create(res.store, ns, obj);
    if res.store == "namespaces" {
        // The serviceaccount and root-CA publisher controllers fill every new namespace.
        namespace_content(store, &name, ca_pem);
    }
    Ok(created)
}

/// Secret `stringData` is write-only: it is merged into `data` (base64) and dropped.
fn fold_string_data(obj: &mut Value) {
    let Some(o) = obj.as_object_mut() else { return };
    let Some(Value::Object(sd)) = o.remove("stringData") else {
        return;
    };
    let data = o.entry("data").or_insert_with(|| json!({}));
    if !data.is_object() {
        *data = json!({});
    }
    if let Some(d) = data.as_object_mut() {
        for (k, v) in sd {
            let text = v.as_str().map(str::to_string).unwrap_or_else(|| v.to_string());
            d.insert(k, json!(super::pki::base64_std(text.as_bytes())));
        }
    }
}

/// `SetDefaults_NodeStatus`: allocatable defaults to capacity.
fn default_node(obj: &mut Value) {
    if obj.pointer("/status/allocatable").is_none_or(Value::is_null) {
        if let Some(cap) = obj.pointer("/status/capacity").filter(|c| c.is_object()).cloned() {
            obj["status"]["allocatable"] = cap;
        }
    }
}

fn default_service(store: &Inner, obj: &mut Value) {
    let Some(spec) = obj.get_mut("spec").and_then(Value::as_object_mut) else {
        return;
    };
    super::objects::default_field(spec, "type", json!("ClusterIP"));
    super::objects::default_field(spec, "sessionAffinity", json!("None"));
    super::objects::default_field(spec, "internalTrafficPolicy", json!("Cluster"));
    if spec.get("clusterIP").and_then(Value::as_str) != Some("None") {
        let used: Vec<String> = store
            .list("services", None)
            .iter()
            .map(|s| super::objects::path_str(s, "spec.clusterIP").to_string())
            .collect();
        let ip = (10u32..65000)
            .map(|i| format!("10.96.{}.{}", i / 250, i % 250 + 1))
            .find(|ip| !used.contains(ip))
            .unwrap_or_else(|| "10.96.255.254".into());
        super::objects::default_field(spec, "clusterIP", json!(ip));
        let ip = spec.get("clusterIP").cloned().unwrap_or(Value::Null);
        super::objects::default_field(spec, "clusterIPs", json!([ip]));
        super::objects::default_field(spec, "ipFamilies", json!(["IPv4"]));
        super::objects::default_field(spec, "ipFamilyPolicy", json!("SingleStack"));
    }
    if let Some(ports) = spec.get_mut("ports").and_then(Value::as_array_mut) {
        for p in ports.iter_mut().filter_map(Value::as_object_mut) {
            super::objects::default_field(p, "protocol", json!("TCP"));
            if let Some(port) = p.get("port").cloned() {
                super::objects::default_field(p, "targetPort", port);
            }
        }
    }
    obj["status"] = json!({"loadBalancer": {}});
}

/// The objects controllers create in every namespace: ServiceAccount `default` and ConfigMap
/// `kube-root-ca.crt`.
pub(crate) fn namespace_content(store: &mut Inner, ns: &str, ca_pem: &str) {
    let now = now_time();
    if store.get("serviceaccounts", ns, "default").is_none() {
        store.create(
            "serviceaccounts",
            ns,
            json!({"apiVersion": "v1", "kind": "ServiceAccount",
                   "metadata": {"name": "default", "namespace": ns, "uid": new_uid(), "creationTimestamp": now}}),
        );
    }
    if store.get("configmaps", ns, "kube-root-ca.crt").is_none() {
        store.create(
            "configmaps",
            ns,
            json!({"apiVersion": "v1", "kind": "ConfigMap",
                   "metadata": {"name": "kube-root-ca.crt", "namespace": ns, "uid": new_uid(), "creationTimestamp": now,
                                "annotations": {"kubernetes.io/description": "Contains a CA bundle that can be used to verify the kube-apiserver when using internal endpoints such as the internal service IP or kubernetes.default.svc. No other usage is guaranteed across distributions of Kubernetes clusters."}},
                   "data": {"ca.crt": ca_pem}}),
        );
    }
}

fn update(shared: &Arc<Shared>, t: &Target, n: &str, r: &Req, status_only: bool) -> Result<Response<Body>, ApiError> {
    let obj = decode_object(t, r)?;
    let body_name = name(&obj);
    if body_name != n {
        return Err(ApiError::bad_request(format!(
            "the name of the object ({body_name}) does not match the name on the URL ({n})"
        )));
    }
    let mut store = shared.store.lock();
    // The object's UID is a precondition of PUT (`DefaultUpdatedObjectInfo.Preconditions`).
    let uid = meta_str(&obj, "uid");
    if let Some(current) = store.get(t.res.store, ns_of(t), n) {
        let have = meta_str(current, "uid");
        if !uid.is_empty() && uid != have {
            return Err(ApiError::conflict(
                t.res.plural,
                t.res.group,
                n,
                &format!("Precondition failed: UID in precondition: {uid}, UID in object meta: {have}"),
            ));
        }
    }
    let (code, out) = update_object(
        &mut store,
        t.res,
        ns_of(t),
        n,
        obj,
        status_only,
        r.dry_run(),
        &shared.pki.ca_pem,
    )?;
    Ok(respond_one(t.res, code, &out, r))
}

/// Update (or status update) of an existing object; returns the HTTP code and the result.
#[allow(clippy::too_many_arguments)]
fn update_object(
    store: &mut Inner,
    res: &Resource,
    ns: &str,
    n: &str,
    mut new: Value,
    status_only: bool,
    dry_run: bool,
    ca_pem: &str,
) -> Result<(u16, Value), ApiError> {
    let (kind, _) = storage_type(res);
    let Some(old) = store.get(res.store, ns, n).cloned() else {
        // Events allow create-on-update; other kinds do not.
        if res.store == "events" && !status_only {
            return create_object(store, res, ns, new, dry_run, ca_pem).map(|o| (201, o));
        }
        return Err(ApiError::not_found(res.plural, res.group, n));
    };
    check_namespace(store, ns, false)?;
    let want_rv = meta_str(&new, "resourceVersion");
    if !want_rv.is_empty() && want_rv != meta_str(&old, "resourceVersion") {
        return Err(ApiError::modified(res.plural, res.group, n));
    }
    if status_only {
        // Status updates change only .status.
        let status = new.get("status").cloned().unwrap_or(Value::Null);
        new = old.clone();
        match status {
            Value::Null => {
                if let Some(o) = new.as_object_mut() {
                    o.remove("status");
                }
            }
            s => new["status"] = s,
        }
    } else {
        // Metadata the client cannot change on update.
        let old_meta = meta(&old).cloned().unwrap_or_default();
        let m = meta_mut(&mut new);
        for k in [
            "uid",
            "creationTimestamp",
            "deletionTimestamp",
            "deletionGracePeriodSeconds",
            "generation",
            "namespace",
            "name",
        ] {
            match old_meta.get(k) {
                Some(v) => m.insert(k.to_string(), v.clone()),
                None => m.remove(k),
            };
        }
        if matches!(res.store, "pods" | "nodes" | "namespaces" | "services") {
            // The main resource ignores status changes (they go through /status).
            match old.get("status") {
                Some(s) => new["status"] = s.clone(),
                None => {
                    if let Some(o) = new.as_object_mut() {
                        o.remove("status");
                    }
                }
            }
        }
        if res.store == "pods" {
            defaulting::default_pod(&mut new);
            let mut errs = defaulting::validate_pod(&new);
            errs.extend(defaulting::validate_pod_spec_update(&old, &new));
            if !errs.is_empty() {
                return Err(ApiError::invalid(kind, res.group, n, errs));
            }
            if new.get("spec") != old.get("spec") {
                let g = meta(&old)
                    .and_then(|m| m.get("generation"))
                    .and_then(Value::as_i64)
                    .unwrap_or(1);
                meta_mut(&mut new).insert("generation".into(), json!(g + 1));
            }
        }
        if res.store == "namespaces" {
            new["spec"] = old.get("spec").cloned().unwrap_or_else(|| json!({}));
        }
        if res.store == "secrets" {
            fold_string_data(&mut new);
        }
        if res.store == "events" && res.group == "events.k8s.io" {
            let errs = events::validate_update_events_v1(&old, &new);
            if !errs.is_empty() {
                return Err(ApiError::invalid(kind, res.group, n, errs));
            }
        }
    }
    if res.store == "nodes" {
        default_node(&mut new);
    }
    if dry_run {
        return Ok((200, new));
    }
    let out = store.update(res.store, ns, new);
    // An object waiting for its finalizers goes once the last one is removed.
    if deletion_timestamp(&out).is_some() && finalizers(&out) == 0 && res.store != "namespaces" {
        let grace = meta(&out)
            .and_then(|m| m.get("deletionGracePeriodSeconds"))
            .and_then(Value::as_i64)
            .unwrap_or(0);
        if grace == 0 {
            if let Some(gone) = store.delete(res.store, ns, n) {
                after_removal(store, res.store, ns);
                return Ok((200, gone));
            }
        }
    }
    Ok((200, out))
}

fn patch_request(
    shared: &Arc<Shared>,
    t: &Target,
    n: &str,
    r: &Req,
    status_only: bool,
) -> Result<Response<Body>, ApiError> {
    let ty = PatchType::from_content_type(&r.content_type)
        .ok_or_else(|| ApiError::unsupported_media_type(&r.content_type))?;
    let mut store = shared.store.lock();
    let current = store
        .get(t.res.store, ns_of(t), n)
        .cloned()
        .ok_or_else(|| ApiError::not_found(t.res.plural, t.res.group, n))?;
    let external = present(t.res, &current);
    let patched = patch::apply(ty, storage_type(t.res).0, &external, &r.body)?;
    if !patched.is_object() {
        return Err(ApiError::bad_request("the patched object is not a JSON object"));
    }
    if r.q("fieldValidation") == Some("Strict") {
        fieldvalidation::check_strict(&api_version(t.res), t.res.kind, &patched)?;
    }
    let mut patched = to_storage(t.res, patched);
    // A patch carrying another UID (the kubelet's status patches include it on purpose) fails
    // metadata validation: the UID is immutable.
    let (new_uid_v, old_uid_v) = (meta_str(&patched, "uid"), meta_str(&current, "uid"));
    if new_uid_v != old_uid_v {
        let (kind, _) = storage_type(t.res);
        return Err(ApiError::invalid(
            kind,
            t.res.group,
            n,
            vec![FieldError::invalid(
                "metadata.uid",
                json!(new_uid_v),
                "field is immutable",
            )],
        ));
    }
    // Name and namespace come from the URL.
    meta_mut(&mut patched).insert("name".into(), json!(n));
    if let Some(ns) = &t.ns {
        meta_mut(&mut patched).insert("namespace".into(), json!(ns));
    }
    let (_, out) = update_object(
        &mut store,
        t.res,
        ns_of(t),
        n,
        patched,
        status_only,
        r.dry_run(),
        &shared.pki.ca_pem,
    )?;
    Ok(respond_one(t.res, 200, &out, r))
}

#[derive(Default)]
struct DeleteOpts {
    grace: Option<i64>,
    uid: Option<String>,
    resource_version: Option<String>,
    dry_run: bool,
}

fn delete_opts(r: &Req) -> Result<DeleteOpts, ApiError> {
    let mut o = DeleteOpts {
        dry_run: r.dry_run(),
        ..Default::default()
    };
    if !r.body.iter().all(u8::is_ascii_whitespace) {
        let b: Value = serde_json::from_slice(&r.body)
            .map_err(|e| ApiError::bad_request(format!("invalid DeleteOptions body: {e}")))?;
        o.grace = b.get("gracePeriodSeconds").and_then(Value::as_i64);
        o.uid = b
            .pointer("/preconditions/uid")
            .and_then(Value::as_str)
            .map(str::to_string);
        o.resource_version = b
            .pointer("/preconditions/resourceVersion")
            .and_then(Value::as_str)
            .map(str::to_string);
        if b.get("dryRun")
            .and_then(Value::as_array)
            .is_some_and(|a| a.iter().any(|v| v == "All"))
        {
            o.dry_run = true;
        }
    }
    if let Some(g) = r.q("gracePeriodSeconds") {
        o.grace = Some(
            g.parse()
                .map_err(|_| ApiError::bad_request(format!("invalid gracePeriodSeconds: {g}")))?,
        );
    }
    Ok(o)
}

fn delete(shared: &Arc<Shared>, t: &Target, n: &str, r: &Req) -> Result<Response<Body>, ApiError> {
    let opts = delete_opts(r)?;
    let mut store = shared.store.lock();
    let (obj, removed) = delete_object(&mut store, t.res, ns_of(t), n, &opts)?;
    // Pods and namespaces answer with the object; other kinds with a Success Status once gone.
    if matches!(t.res.store, "pods" | "namespaces") || !removed {
        return Ok(respond_one(t.res, 200, &obj, r));
    }
    let details = json!({"name": n, "kind": t.res.plural, "uid": meta_str(&obj, "uid")});
    let mut details = details;
    if !t.res.group.is_empty() {
        details["group"] = json!(t.res.group);
    }
    Ok(json_response(200, &success_status(200, Some(details))))
}

/// `rest.BeforeDelete` + the registry's delete: returns the object and whether it is gone.
fn delete_object(
    store: &mut Inner,
    res: &Resource,
    ns: &str,
    n: &str,
    opts: &DeleteOpts,
) -> Result<(Value, bool), ApiError> {
    let obj = store
        .get(res.store, ns, n)
        .cloned()
        .ok_or_else(|| ApiError::not_found(res.plural, res.group, n))?;
    if let Some(uid) = &opts.uid {
        let have = meta_str(&obj, "uid");
        if uid != have {
            return Err(ApiError::conflict(
                res.plural,
                res.group,
                n,
                &format!("Precondition failed: UID in precondition: {uid}, UID in object meta: {have}"),
            ));
        }
    }
    if let Some(rv) = &opts.resource_version {
        let have = meta_str(&obj, "resourceVersion");
        if rv != have {
            return Err(ApiError::conflict(
                res.plural,
                res.group,
                n,
                &format!("Precondition failed: ResourceVersion in precondition: {rv}, ResourceVersion in object meta: {have}"),
            ));
        }
    }
    if res.store == "namespaces" {
        return delete_namespace(store, obj, opts);
    }
    let grace_now = meta(&obj)
        .and_then(|m| m.get("deletionGracePeriodSeconds"))
        .and_then(Value::as_i64);
    let remove = |store: &mut Inner| -> (Value, bool) {
        if opts.dry_run {
            return (obj.clone(), true);
        }
        match store.delete(res.store, ns, n) {
            Some(gone) => {
                after_removal(store, res.store, ns);
                (gone, true)
            }
            None => (obj.clone(), true),
        }
    };
    let set_deletion = |store: &mut Inner, ts: jiff::Timestamp, grace: i64| -> (Value, bool) {
        let mut upd = obj.clone();
        let m = meta_mut(&mut upd);
        m.insert("deletionTimestamp".into(), json!(format_time(ts)));
        m.insert("deletionGracePeriodSeconds".into(), json!(grace));
        if opts.dry_run {
            return (upd, false);
        }
        (store.update(res.store, ns, upd), false)
    };
    if let Some(dts) = deletion_timestamp(&obj) {
        // Already being deleted: only a shorter grace period may be given.
        let current = grace_now.unwrap_or(0);
        if current == 0 {
            return Ok(if finalizers(&obj) == 0 {
                remove(store)
            } else {
                (obj.clone(), false)
            });
        }
        match opts.grace {
            Some(g) if g < current => {
                let g = g.max(0);
                if g == 0 && finalizers(&obj) == 0 {
                    return Ok(remove(store));
                }
                let base = parse_time(dts).unwrap_or_else(jiff::Timestamp::now);
                let ts = base
                    .checked_add(jiff::SignedDuration::from_secs(g - current))
                    .unwrap_or_else(|_| jiff::Timestamp::now());
                return Ok(set_deletion(store, ts, g));
            }
            _ => return Ok((obj.clone(), false)),
        }
    }
    let period = if res.store == "pods" {
        // podStrategy.CheckGracefulDelete.
        let mut p = opts.grace.unwrap_or_else(|| {
            obj.pointer("/spec/terminationGracePeriodSeconds")
                .and_then(Value::as_i64)
                .unwrap_or(0)
        });
        let phase = obj.pointer("/status/phase").and_then(Value::as_str).unwrap_or("");
        if obj
            .pointer("/spec/nodeName")
            .and_then(Value::as_str)
            .unwrap_or("")
            .is_empty()
            || phase == "Succeeded"
            || phase == "Failed"
        {
            p = 0;
        }
        if p < 0 {
            p = 1;
        }
        p
    } else {
        0
    };
    if period == 0 && finalizers(&obj) == 0 {
        return Ok(remove(store));
    }
    let ts = jiff::Timestamp::now()
        .checked_add(jiff::SignedDuration::from_secs(period))
        .unwrap_or_else(|_| jiff::Timestamp::now());
    let (mut out, gone) = set_deletion(store, ts, period);
    if res.store == "pods" && period > 0 && !opts.dry_run {
        // Graceful deletion bumps the generation of objects that track it.
        let g = meta(&out).and_then(|m| m.get("generation")).and_then(Value::as_i64);
        if let Some(g) = g {
            meta_mut(&mut out).insert("generation".into(), json!(g + 1));
            out = store.update(res.store, ns, out);
        }
    }
    Ok((out, gone))
}

fn delete_namespace(store: &mut Inner, obj: Value, opts: &DeleteOpts) -> Result<(Value, bool), ApiError> {
    let ns = name(&obj).to_string();
    // NamespaceLifecycle admission keeps the system namespaces.
    if IMMORTAL_NAMESPACES.contains(&ns.as_str()) {
        let mut e = ApiError::new(
            403,
            "Forbidden",
            format!("namespaces \"{ns}\" is forbidden: this namespace may not be deleted"),
        );
        e.details = Some(json!({"name": ns, "kind": "namespaces"}));
        return Err(e);
    }
    if deletion_timestamp(&obj).is_some() || opts.dry_run {
        return Ok((obj, false));
    }
    let mut upd = obj;
    let m = meta_mut(&mut upd);
    m.insert("deletionTimestamp".into(), json!(now_time()));
    m.insert("deletionGracePeriodSeconds".into(), json!(0));
    upd["status"] = json!({"phase": "Terminating"});
    let out = store.update("namespaces", "", upd);
    // The namespace controller: gracefully delete pods, remove everything else, then the namespace.
    let pods: Vec<String> = store
        .list("pods", Some(&ns))
        .iter()
        .map(|p| name(p).to_string())
        .collect();
    let pod_res = resources::find("", "v1", "pods");
    for p in pods {
        if let Some(pr) = pod_res {
            if let Err(e) = delete_object(store, pr, &ns, &p, &DeleteOpts::default()) {
                tracing::debug!(error = %e, pod = %p, "test apiserver: namespace cleanup");
            }
        }
    }
    let others: Vec<&'static str> = resources::RESOURCES
        .iter()
        .filter(|r| r.namespaced && r.store != "pods" && r.store != "bindings")
        .map(|r| r.store)
        .collect();
    for bucket in others {
        let names: Vec<String> = store
            .list(bucket, Some(&ns))
            .iter()
            .map(|o| name(o).to_string())
            .collect();
        for n in names {
            store.delete(bucket, &ns, &n);
        }
    }
    after_removal(store, "pods", &ns);
    let now = store.get("namespaces", "", &ns).cloned();
    Ok((now.unwrap_or(out), false))
}

/// The namespace controller's last step: a terminating namespace without pods disappears.
fn after_removal(store: &mut Inner, bucket: &str, ns: &str) {
    if bucket != "pods" || ns.is_empty() {
        return;
    }
    let terminating = store
        .get("namespaces", "", ns)
        .is_some_and(|o| deletion_timestamp(o).is_some());
    if terminating && store.list("pods", Some(ns)).is_empty() {
        store.delete("namespaces", "", ns);
    }
}

fn delete_collection(shared: &Arc<Shared>, t: &Target, r: &Req) -> Result<Response<Body>, ApiError> {
    if !t.res.verbs.contains(&"deletecollection") {
        return Err(ApiError::method_not_allowed());
    }
    let (labels, fields) = selectors(t, r)?;
    let opts = delete_opts(r)?;
    let mut store = shared.store.lock();
    let names: Vec<(String, String)> = store
        .list(t.res.store, t.ns.as_deref())
        .into_iter()
        .filter(|o| labels.matches(o) && fields.matches(t.res.store, o))
        .map(|o| (meta_str(o, "namespace").to_string(), name(o).to_string()))
        .collect();
    let mut items = Vec::new();
    for (ns, n) in names {
        let (o, _) = delete_object(&mut store, t.res, &ns, &n, &opts)?;
        items.push(present(t.res, &o));
    }
    let list_meta = json!({"resourceVersion": store.rv().to_string()});
    Ok(json_response(
        200,
        &json!({"kind": format!("{}List", t.res.kind), "apiVersion": api_version(t.res), "metadata": list_meta, "items": items}),
    ))
}

fn subresource(shared: &Arc<Shared>, t: &Target, sub: &str, r: &Req) -> Result<Response<Body>, ApiError> {
    let n = t.name.clone().unwrap_or_default();
    match (sub, &r.method) {
        ("status", &Method::GET) => get(shared, t, &n, r),
        ("status", &Method::PUT) => update(shared, t, &n, r, true),
        ("status", &Method::PATCH) => patch_request(shared, t, &n, r, true),
        ("binding", &Method::POST) => bind(shared, t, r),
        ("token", &Method::POST) => token_request(shared, t, &n, r),
        ("eviction", &Method::POST) => evict(shared, t, &n, r),
        ("log" | "exec" | "attach" | "portforward" | "proxy", _) => Err(ApiError::unavailable(format!(
            "the {sub} subresource is not served by the test apiserver yet"
        ))),
        _ => Err(ApiError::method_not_allowed()),
    }
}

/// `pods/binding` and `bindings`: assign a pod to a node (once).
fn bind(shared: &Arc<Shared>, t: &Target, r: &Req) -> Result<Response<Body>, ApiError> {
    let b = r.json_body()?;
    let pod_name = t.name.clone().unwrap_or_else(|| meta_str(&b, "name").to_string());
    let node = b
        .pointer("/target/name")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    if node.is_empty() {
        return Err(ApiError::invalid(
            "Binding",
            "",
            &pod_name,
            vec![FieldError::required("target.name", "")],
        ));
    }
    let ns = ns_of(t).to_string();
    let mut store = shared.store.lock();
    let mut pod = store
        .get("pods", &ns, &pod_name)
        .cloned()
        .ok_or_else(|| ApiError::not_found("pods", "", &pod_name))?;
    if deletion_timestamp(&pod).is_some() {
        return Err(ApiError::conflict(
            "pods",
            "",
            &pod_name,
            &format!("pod {pod_name} is being deleted, cannot be assigned to a host"),
        ));
    }
    let current = pod.pointer("/spec/nodeName").and_then(Value::as_str).unwrap_or("");
    if !current.is_empty() {
        return Err(ApiError::conflict(
            "pods",
            "",
            &pod_name,
            &format!("pod {pod_name} is already assigned to node \"{current}\""),
        ));
    }
    pod["spec"]["nodeName"] = json!(node);
    let cond =
        json!({"type": "PodScheduled", "status": "True", "lastProbeTime": null, "lastTransitionTime": now_time()});
    let conds = pod.pointer_mut("/status/conditions").and_then(Value::as_array_mut);
    match conds {
        Some(cs) => {
            cs.retain(|c| c["type"] != "PodScheduled");
            cs.push(cond);
        }
        None => pod["status"]["conditions"] = json!([cond]),
    }
    store.update("pods", &ns, pod);
    Ok(json_response(201, &success_status(201, None)))
}

fn evict(shared: &Arc<Shared>, t: &Target, n: &str, r: &Req) -> Result<Response<Body>, ApiError> {
    let b = r.json_body()?;
    let mut opts = DeleteOpts::default();
    if let Some(d) = b.get("deleteOptions") {
        opts.grace = d.get("gracePeriodSeconds").and_then(Value::as_i64);
        opts.uid = d
            .pointer("/preconditions/uid")
            .and_then(Value::as_str)
            .map(str::to_string);
    }
    let mut store = shared.store.lock();
    delete_object(&mut store, t.res, ns_of(t), n, &opts)?;
    Ok(json_response(201, &success_status(201, None)))
}

/// `serviceaccounts/token`: a TokenRequest answered with a signed JWT the server accepts.
fn token_request(shared: &Arc<Shared>, t: &Target, n: &str, r: &Req) -> Result<Response<Body>, ApiError> {
    let req = r.json_body()?;
    let ns = ns_of(t).to_string();
    let spec = req.get("spec").cloned().unwrap_or_else(|| json!({}));
    let secs = spec
        .get("expirationSeconds")
        .and_then(Value::as_i64)
        .unwrap_or(DEFAULT_TOKEN_SECONDS);
    if secs < 600 {
        return Err(ApiError::invalid(
            "TokenRequest",
            "authentication.k8s.io",
            n,
            vec![FieldError::invalid(
                "spec.expirationSeconds",
                json!(secs),
                "may not specify a duration less than 10 minutes",
            )],
        ));
    }
    if secs > 1 << 32 {
        return Err(ApiError::invalid(
            "TokenRequest",
            "authentication.k8s.io",
            n,
            vec![FieldError::invalid(
                "spec.expirationSeconds",
                json!(secs),
                "may not specify a duration larger than 2^32 seconds",
            )],
        ));
    }
    let audiences: Vec<String> = spec
        .get("audiences")
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(Value::as_str).map(str::to_string).collect())
        .filter(|a: &Vec<String>| !a.is_empty())
        .unwrap_or_else(|| vec![API_AUDIENCE.to_string()]);
    let store = shared.store.lock();
    let sa = store
        .get("serviceaccounts", &ns, n)
        .ok_or_else(|| ApiError::not_found("serviceaccounts", "", n))?;
    let sa_uid = meta_str(sa, "uid").to_string();
    let mut k8s = json!({"namespace": ns, "serviceaccount": {"name": n, "uid": sa_uid}});
    if let Some(bound) = spec.get("boundObjectRef").filter(|b| !b.is_null()) {
        let kind = bound.get("kind").and_then(Value::as_str).unwrap_or("");
        let bname = bound.get("name").and_then(Value::as_str).unwrap_or("");
        let bucket = match kind {
            "Pod" => "pods",
            "Secret" => "secrets",
            "Node" => "nodes",
            _ => {
                return Err(ApiError::bad_request(format!(
                    "cannot bind token to object of type {kind}"
                )));
            }
        };
        let bns = if kind == "Node" { "" } else { ns.as_str() };
        let obj = store
            .get(bucket, bns, bname)
            .ok_or_else(|| ApiError::not_found(bucket, "", bname))?;
        let uid = meta_str(obj, "uid");
        if let Some(want) = bound.get("uid").and_then(Value::as_str).filter(|u| !u.is_empty()) {
            if want != uid {
                return Err(ApiError::conflict(bucket, "", bname, &format!("the UID in the bound object reference ({want}) does not match the UID in record. The object might have been deleted and then recreated")));
            }
        }
        k8s[kind.to_lowercase()] = json!({"name": bname, "uid": uid});
    }
    drop(store);
    let now = jiff::Timestamp::now();
    let exp = now.checked_add(jiff::SignedDuration::from_secs(secs)).unwrap_or(now);
    let sub = format!("system:serviceaccount:{ns}:{n}");
    let claims = json!({
        "aud": audiences, "exp": exp.as_second(), "iat": now.as_second(), "nbf": now.as_second(),
        "iss": API_AUDIENCE, "jti": new_uid(), "sub": sub, "kubernetes.io": k8s,
    });
    let token = shared
        .pki
        .sign_jwt(&claims)
        .map_err(|e| ApiError::new(500, "InternalError", e.to_string()))?;
    let user = UserInfo::new(
        &sub,
        &sa_uid,
        [
            "system:serviceaccounts".to_string(),
            format!("system:serviceaccounts:{ns}"),
        ],
    );
    shared.tokens.insert(token.clone(), user, Some(exp));
    let mut spec_out = spec.clone();
    spec_out["audiences"] = json!(audiences);
    spec_out["expirationSeconds"] = json!(secs);
    let out = json!({
        "kind": "TokenRequest", "apiVersion": "authentication.k8s.io/v1",
        "metadata": {"name": n, "namespace": ns, "creationTimestamp": null},
        "spec": spec_out,
        "status": {"token": token, "expirationTimestamp": format_time(exp)},
    });
    Ok(json_response(201, &out))
}

/// Reviews: who am I, may I (for myself, or for another user: the webhook authorizer's
/// question), token reviews (the webhook authenticator's).
fn review(shared: &Arc<Shared>, res: &Resource, r: &Req) -> Result<Response<Body>, ApiError> {
    let mut body = r.json_body()?;
    let spec = body.get("spec").cloned().unwrap_or_else(|| json!({}));
    let status = match res.kind {
        "SelfSubjectReview" => json!({"userInfo": r.user.to_json()}),
        "TokenReview" => {
            let token = spec.get("token").and_then(Value::as_str).unwrap_or("");
            if token.is_empty() {
                // The real message names the (empty) namespace of the cluster-scoped review.
                return Err(ApiError::bad_request("token is required for TokenReview in "));
            }
            match shared.tokens.authenticate(token) {
                Some(u) => json!({"authenticated": true, "user": u.to_json(), "audiences": [API_AUDIENCE]}),
                None => json!({"user": {}, "error": "invalid bearer token"}),
            }
        }
        "SubjectAccessReview" | "SelfSubjectAccessReview" => {
            let Some(attrs) = Attributes::from_review_spec(&spec) else {
                return Err(ApiError::invalid(
                    res.kind,
                    res.group,
                    "",
                    vec![FieldError::invalid(
                        "spec.resourceAttributes",
                        json!(spec.get("resourceAttributes")),
                        "exactly one of nonResourceAttributes or resourceAttributes must be specified",
                    )],
                ));
            };
            let (user, groups) = if res.kind == "SelfSubjectAccessReview" {
                (r.user.name.clone(), r.user.groups.clone())
            } else {
                let user = spec.get("user").and_then(Value::as_str).unwrap_or("").to_string();
                let groups: Vec<String> = spec
                    .get("groups")
                    .and_then(Value::as_array)
                    .map(|a| a.iter().filter_map(Value::as_str).map(str::to_string).collect())
                    .unwrap_or_default();
                if user.is_empty() && groups.is_empty() {
                    return Err(ApiError::invalid(
                        res.kind,
                        res.group,
                        "",
                        vec![FieldError::invalid(
                            "spec.user",
                            json!(""),
                            "at least one of user or group must be specified",
                        )],
                    ));
                }
                (user, groups)
            };
            let d = authz::authorize(&user, &groups, &attrs, &shared.grants);
            let mut st = json!({"allowed": d.allowed});
            if !d.reason.is_empty() {
                st["reason"] = json!(d.reason);
            }
            st
        }
        _ => return Err(ApiError::method_not_allowed()),
    };
    let obj = body.as_object_mut().map(std::mem::take).unwrap_or_else(Map::new);
    let mut out = Value::Object(obj);
    out["apiVersion"] = json!(api_version(res));
    out["kind"] = json!(res.kind);
    if out.get("metadata").is_none() {
        out["metadata"] = json!({"creationTimestamp": null});
    }
    out["status"] = status;
    Ok(json_response(201, &out))
}
