//! The HTTP side of the test API server: authentication and authorization, then the Node
//! and Pod endpoints, with the real server's status codes and `Status` bodies. The served
//! subset is listed in docs/kube-test-server.md.
// The error of these handlers is the HTTP response itself, made once per request.
#![allow(clippy::result_large_err)]
use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use super::patch::{self, PatchError};
use super::store::{At, Store};
use super::validate::{self, Refused, Target};

/// What one token may do: its user name and the `(verb, resource)` pairs granted, e.g.
/// `("patch", "nodes/status")`; `("*", "*")` grants everything.
#[derive(Debug, Clone)]
pub struct Grants {
    pub user: String,
    pub allowed: Vec<(String, String)>,
}

impl Grants {
    fn allows(&self, verb: &str, resource: &str) -> bool {
        self.allowed
            .iter()
            .any(|(v, r)| (v == "*" || v == verb) && (r == "*" || r == resource))
    }
}

/// Everything the handlers share.
pub struct Shared {
    pub store: Mutex<Store>,
    pub pods: Mutex<HashMap<(String, String), Value>>,
    pub tokens: Mutex<HashMap<String, Grants>>,
    /// `METHOD path?query` of every request, in arrival order.
    pub requests: Mutex<Vec<String>>,
    pub bookmark_interval: Duration,
    pub default_watch_timeout: Duration,
    /// Cancelled when the server stops: every open watch ends.
    pub stopped: Mutex<CancellationToken>,
}

pub fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

pub(super) type Reply = Result<Response, Response>;

/// A `Status` object response.
pub(super) fn status(code: u16, reason: &str, message: &str, details: Option<Value>) -> Response {
    let mut body = json!({
        "kind": "Status", "apiVersion": "v1", "metadata": {},
        "status": if code < 400 { "Success" } else { "Failure" },
        "message": message, "reason": reason, "code": code
    });
    if let Some(d) = details {
        body["details"] = d;
    }
    let code = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    json_response(code, &body)
}

pub(super) fn json_response(code: StatusCode, body: &Value) -> Response {
    let mut r = (code, body.to_string()).into_response();
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    r
}

fn refused(r: Refused) -> Response {
    status(r.code, r.reason, &r.message, None)
}

fn not_found(name: &str) -> Response {
    status(
        404,
        "NotFound",
        &format!("nodes \"{name}\" not found"),
        Some(json!({"name": name, "kind": "nodes"})),
    )
}

pub(super) fn bad_request(message: &str) -> Response {
    status(400, "BadRequest", message, None)
}

/// The query string as pairs, percent-decoded.
fn query(req: &Request) -> HashMap<String, String> {
    let decode = |s: &str| {
        percent_encoding::percent_decode_str(&s.replace('+', " "))
            .decode_utf8_lossy()
            .into_owned()
    };
    req.uri()
        .query()
        .unwrap_or_default()
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| match p.split_once('=') {
            Some((k, v)) => (decode(k), decode(v)),
            None => (decode(p), String::new()),
        })
        .collect()
}

/// Every request: authenticate, route, authorize, serve.
pub async fn handle(State(shared): State<Arc<Shared>>, req: Request) -> Response {
    let line = format!(
        "{} {}",
        req.method(),
        req.uri()
            .path_and_query()
            .map(|p| p.as_str())
            .unwrap_or("/")
    );
    lock(&shared.requests).push(line);
    match serve(&shared, req).await {
        Ok(r) | Err(r) => r,
    }
}

async fn serve(shared: &Arc<Shared>, req: Request) -> Reply {
    let grants = authenticate(shared, &req)?;
    let path: Vec<String> = req
        .uri()
        .path()
        .trim_matches('/')
        .split('/')
        .map(str::to_string)
        .collect();
    let path: Vec<&str> = path.iter().map(String::as_str).collect();
    let q = query(&req);
    let watching = matches!(q.get("watch").map(String::as_str), Some("true" | "1"));
    let method = req.method().clone();
    match (path.as_slice(), &method) {
        (["api", "v1", "nodes"], &Method::GET) if watching => {
            authorize(&grants, "watch", "nodes", None)?;
            super::watch::watch(shared, &q)
        }
        (["api", "v1", "nodes"], &Method::GET) => {
            authorize(&grants, "list", "nodes", None)?;
            list(shared, &q)
        }
        (["api", "v1", "nodes"], &Method::POST) => {
            authorize(&grants, "create", "nodes", None)?;
            create(shared, req).await
        }
        (["api", "v1", "nodes", name], &Method::GET) => {
            authorize(&grants, "get", "nodes", Some(name))?;
            get(shared, name)
        }
        (["api", "v1", "nodes", name, "status"], &Method::GET) => {
            authorize(&grants, "get", "nodes/status", Some(name))?;
            get(shared, name)
        }
        (["api", "v1", "nodes", name], &Method::PATCH) => {
            authorize(&grants, "patch", "nodes", Some(name))?;
            patch_node(shared, name, req, Target::Node).await
        }
        (["api", "v1", "nodes", name, "status"], &Method::PATCH) => {
            authorize(&grants, "patch", "nodes/status", Some(name))?;
            patch_node(shared, name, req, Target::Status).await
        }
        (["api", "v1", "nodes", name], &Method::DELETE) => {
            authorize(&grants, "delete", "nodes", Some(name))?;
            delete(shared, name)
        }
        (["api", "v1", "namespaces", ns, "pods", name], &Method::GET) => {
            authorize(&grants, "get", "pods", Some(name))?;
            let pod = lock(&shared.pods)
                .get(&(ns.to_string(), name.to_string()))
                .cloned();
            match pod {
                Some(p) => Ok(json_response(StatusCode::OK, &p)),
                None => Err(status(
                    404,
                    "NotFound",
                    &format!("pods \"{name}\" not found"),
                    Some(json!({"name": name, "kind": "pods"})),
                )),
            }
        }
        (["api", "v1", "nodes", ..], _) => Err(status(
            405,
            "MethodNotAllowed",
            &format!("the server does not allow this method on the requested resource ({method})"),
            None,
        )),
        _ => Err(status(
            404,
            "NotFound",
            "the server could not find the requested resource",
            None,
        )),
    }
}

fn authenticate(shared: &Shared, req: &Request) -> Result<Grants, Response> {
    let unauthorized = || status(401, "Unauthorized", "Unauthorized", None);
    let value = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .ok_or_else(unauthorized)?;
    let token = value
        .strip_prefix("Bearer ")
        .map(str::trim)
        .ok_or_else(unauthorized)?;
    lock(&shared.tokens)
        .get(token)
        .cloned()
        .ok_or_else(unauthorized)
}

/// 403 as the RBAC authorizer words it.
fn authorize(
    grants: &Grants,
    verb: &str,
    resource: &str,
    name: Option<&str>,
) -> Result<(), Response> {
    if grants.allows(verb, resource) {
        return Ok(());
    }
    let base = resource.split('/').next().unwrap_or(resource);
    let what = match name {
        Some(n) => format!("{base} \"{n}\""),
        None => base.to_string(),
    };
    let message = format!(
        "{what} is forbidden: User \"{}\" cannot {verb} resource \"{resource}\" in API group \
         \"\" at the cluster scope",
        grants.user
    );
    let mut details = json!({"kind": base});
    if let Some(n) = name {
        details["name"] = json!(n);
    }
    Err(status(403, "Forbidden", &message, Some(details)))
}

pub(super) fn parse_rv(s: &str) -> Result<u64, Response> {
    s.parse()
        .map_err(|_| bad_request(&format!("invalid resource version \"{s}\"")))
}

pub(super) fn expired(requested: u64, oldest: u64) -> Value {
    json!({
        "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "message": format!("too old resource version: {requested} ({oldest})"),
        "reason": "Expired", "code": 410
    })
}

pub(super) fn at_error(at: At) -> Response {
    match at {
        At::Compacted { requested, oldest } => {
            json_response(StatusCode::GONE, &expired(requested, oldest))
        }
        At::TooLarge { requested, current } => status(
            504,
            "Timeout",
            &format!("Too large resource version: {requested}, current: {current}"),
            Some(json!({"causes": [{"reason": "ResourceVersionTooLarge",
                                    "message": "Too large resource version"}],
                        "retryAfterSeconds": 1})),
        ),
    }
}

/// `fieldSelector`: only `metadata.name=<name>` (and `==`) is served; anything else is 400
/// as for a field the Node type does not index.
pub(super) fn name_selector(q: &HashMap<String, String>) -> Result<Option<String>, Response> {
    let Some(sel) = q.get("fieldSelector").filter(|s| !s.is_empty()) else {
        return Ok(None);
    };
    let value = sel
        .strip_prefix("metadata.name==")
        .or_else(|| sel.strip_prefix("metadata.name="));
    match value {
        Some(v) => Ok(Some(v.to_string())),
        None => Err(bad_request(&format!(
            "field label not supported: {}",
            sel.split(['=', '!']).next().unwrap_or(sel)
        ))),
    }
}

pub(super) fn label_selector(q: &HashMap<String, String>) -> Result<(), Response> {
    match q.get("labelSelector").filter(|s| !s.is_empty()) {
        None => Ok(()),
        Some(s) => Err(bad_request(&format!(
            "labelSelector {s:?} is not served by this test API server"
        ))),
    }
}

#[derive(serde::Serialize, serde::Deserialize)]
struct ContinueToken {
    rv: u64,
    start: String,
}

fn list(shared: &Shared, q: &HashMap<String, String>) -> Reply {
    label_selector(q)?;
    let only = name_selector(q)?;
    let rv_param = q.get("resourceVersion").filter(|s| !s.is_empty());
    let rv_match = q.get("resourceVersionMatch").filter(|s| !s.is_empty());
    let limit: Option<usize> = match q.get("limit").filter(|s| !s.is_empty()) {
        Some(l) => Some(
            l.parse::<i64>()
                .map_err(|_| bad_request(&format!("invalid limit \"{l}\"")))?
                .max(0) as usize,
        )
        .filter(|l| *l > 0),
        None => None,
    };
    let cont = q.get("continue").filter(|s| !s.is_empty());
    if rv_match.is_some() && rv_param.is_none() {
        return Err(status(
            422,
            "Invalid",
            "resourceVersionMatch: Forbidden: resourceVersionMatch is forbidden unless resourceVersion is provided",
            None,
        ));
    }
    if cont.is_some() && rv_param.is_some_and(|r| r != "0") {
        return Err(bad_request(
            "specifying resource version is not allowed when using continue",
        ));
    }
    let store = lock(&shared.store);
    let (at, start) = match cont {
        Some(token) => {
            let t: ContinueToken = base64::engine::general_purpose::STANDARD
                .decode(token)
                .ok()
                .and_then(|b| serde_json::from_slice(&b).ok())
                .ok_or_else(|| bad_request("continue key is not valid: invalid token"))?;
            if store.check(t.rv).is_err() {
                return Err(status(
                    410,
                    "Expired",
                    "The provided continue parameter is too old to display a consistent list result. You can start a new list without the continue parameter.",
                    None,
                ));
            }
            (t.rv, Some(t.start))
        }
        None => {
            let current = store.resource_version();
            let at = match (rv_param.map(String::as_str), rv_match.map(String::as_str)) {
                (None | Some("0"), _) => current,
                (Some(r), Some("Exact")) => parse_rv(r)?,
                (Some(r), None | Some("NotOlderThan")) => {
                    let r = parse_rv(r)?;
                    if r > current {
                        return Err(at_error(At::TooLarge {
                            requested: r,
                            current,
                        }));
                    }
                    current
                }
                (_, Some(m)) => {
                    return Err(status(
                        422,
                        "Invalid",
                        &format!(
                            "resourceVersionMatch: Unsupported value: \"{m}\": supported values: \"Exact\", \"NotOlderThan\""
                        ),
                        None,
                    ));
                }
            };
            (at, None)
        }
    };
    let page = store
        .page(at, start.as_deref(), limit, only.as_deref())
        .map_err(at_error)?;
    drop(store);
    let (items, next, remaining) = (page.items, page.next, page.remaining);
    let mut metadata = json!({"resourceVersion": at.to_string()});
    if let Some(last) = next {
        let token = serde_json::to_vec(&ContinueToken {
            rv: at,
            start: last,
        })
        .unwrap_or_default();
        metadata["continue"] = json!(base64::engine::general_purpose::STANDARD.encode(token));
        metadata["remainingItemCount"] = json!(remaining);
    }
    // The items as encoded at write time, joined: no JSON tree per list.
    let mut body =
        String::with_capacity(64 + items.iter().map(|(_, t)| t.len() + 1).sum::<usize>());
    body.push_str(r#"{"kind":"NodeList","apiVersion":"v1","metadata":"#);
    body.push_str(&metadata.to_string());
    body.push_str(r#","items":["#);
    for (i, (_, text)) in items.iter().enumerate() {
        if i > 0 {
            body.push(',');
        }
        body.push_str(text);
    }
    body.push_str("]}");
    let mut r = (StatusCode::OK, body).into_response();
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    Ok(r)
}

fn get(shared: &Shared, name: &str) -> Reply {
    match lock(&shared.store).get(name) {
        Some(o) => Ok(json_response(StatusCode::OK, o)),
        None => Err(not_found(name)),
    }
}

async fn body_bytes(req: Request) -> Result<(String, Bytes), Response> {
    let ct = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    let bytes = axum::body::to_bytes(req.into_body(), 3 * 1024 * 1024)
        .await
        .map_err(|_| {
            status(
                413,
                "RequestEntityTooLarge",
                "the request is too large",
                None,
            )
        })?;
    Ok((ct, bytes))
}

async fn patch_node(shared: &Shared, name: &str, req: Request, target: Target) -> Reply {
    let (ct, body) = body_bytes(req).await?;
    let mut store = lock(&shared.store);
    let old = store.get(name).cloned().ok_or_else(|| not_found(name))?;
    let mut new = old.clone();
    patch::apply(&mut new, &ct, &body).map_err(|e| match e {
        PatchError::UnsupportedMediaType(m) => status(415, "UnsupportedMediaType", &m, None),
        PatchError::BadRequest(m) => bad_request(&m),
        PatchError::Invalid(m) => status(422, "Invalid", &m, None),
    })?;
    let new = validate::update(&old, new, target).map_err(refused)?;
    if new == old {
        // A patch that changes nothing is not a write: no new resourceVersion, no event.
        return Ok(json_response(StatusCode::OK, &old));
    }
    let stored = store.put(name, new);
    Ok(json_response(StatusCode::OK, &stored))
}

async fn create(shared: &Shared, req: Request) -> Reply {
    let (_, body) = body_bytes(req).await?;
    let mut obj: Value = serde_json::from_slice(&body).map_err(|e| {
        bad_request(&format!(
            "the body of the request could not be decoded: {e}"
        ))
    })?;
    validate::create(&obj).map_err(refused)?;
    let name = obj["metadata"]["name"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let mut store = lock(&shared.store);
    if store.get(&name).is_some() {
        return Err(status(
            409,
            "AlreadyExists",
            &format!("nodes \"{name}\" already exists"),
            Some(json!({"name": name, "kind": "nodes"})),
        ));
    }
    obj["kind"] = json!("Node");
    obj["apiVersion"] = json!("v1");
    obj["metadata"]["uid"] = json!(store.next_uid());
    let stored = store.put(&name, obj);
    Ok(json_response(StatusCode::CREATED, &stored))
}

fn delete(shared: &Shared, name: &str) -> Reply {
    let mut store = lock(&shared.store);
    let last = store.delete(name).ok_or_else(|| not_found(name))?;
    Ok(json_response(StatusCode::OK, &last))
}
