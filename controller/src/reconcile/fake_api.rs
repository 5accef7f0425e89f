//! A small stateful API server for reconcile tests (a tower service behind `kube::Client`, as
//! in kube-rs's tower-test examples): it keeps objects by path, assigns uids, generations and
//! resourceVersions, makes Deployments available as soon as they are written, and can fail
//! every request from the Nth write on, which is what a crash at that point looks like to the
//! API server.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use http::{Method, Request, Response, StatusCode};
use http_body_util::BodyExt;
use kube::Client;
use kube::client::Body;
use serde_json::{Value, json};

/// One request as the fake received it.
#[derive(Debug, Clone)]
pub struct Seen {
    pub method: Method,
    pub path: String,
    pub body: Value,
}

impl Seen {
    pub fn is_write(&self) -> bool {
        self.method != Method::GET
    }
}

#[derive(Default)]
struct State {
    objects: BTreeMap<String, Value>,
    seen: Vec<Seen>,
    writes: usize,
    /// Every request fails once this many writes have been taken.
    crash_after: Option<usize>,
    /// Objects that appear (someone else creates them) just before rollgate's create.
    appear: BTreeMap<String, Value>,
    /// Writes to these paths are refused with this code and message.
    reject: BTreeMap<String, (u16, String)>,
    next: u64,
}

#[derive(Clone, Default)]
pub struct FakeApi {
    state: Arc<Mutex<State>>,
}

fn status(code: u16, reason: &str, message: &str) -> Value {
    json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": reason, "code": code, "message": message})
}

fn refused(code: u16, message: &str) -> (StatusCode, Value) {
    let reason = if code == 422 { "Invalid" } else { "InternalError" };
    (StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR), status(code, reason, message))
}

/// A strategic merge as far as rollgate uses it: objects merge key by key (a null removes one)
/// unless they carry `$patch: replace`; lists and scalars are replaced (a leading
/// `{"$patch": "replace"}` element is dropped).
fn merge(into: &mut Value, patch: &Value) {
    match (into, patch) {
        (slot, Value::Object(b)) if b.get("$patch").and_then(Value::as_str) == Some("replace") => {
            let mut replacement = b.clone();
            replacement.remove("$patch");
            *slot = Value::Object(replacement);
        }
        (Value::Object(a), Value::Object(b)) => {
            for (k, v) in b {
                // A null removes the key (RFC 7386).
                if v.is_null() {
                    a.remove(k);
                    continue;
                }
                match a.get_mut(k) {
                    Some(existing) if v.is_object() => merge(existing, v),
                    _ => {
                        let mut fresh = Value::Null;
                        merge(&mut fresh, v);
                        a.insert(k.clone(), fresh);
                    }
                }
            }
        }
        (slot, Value::Array(items)) => {
            let directive = items.first().and_then(|i| i.get("$patch")).is_some();
            *slot = Value::Array(items.iter().skip(usize::from(directive)).cloned().collect());
        }
        (slot, v) => *slot = v.clone(),
    }
}

impl FakeApi {
    pub fn client(&self) -> Client {
        let fake = self.clone();
        let service = tower::service_fn(move |req: Request<Body>| {
            let fake = fake.clone();
            async move {
                let method = req.method().clone();
                let path = req.uri().path().to_string();
                let query = req.uri().query().unwrap_or_default().replace("%2F", "/").replace("%3D", "=");
                let bytes = req.into_body().collect().await.map(|b| b.to_bytes()).unwrap_or_default();
                let body: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
                let (code, answer) = fake.answer(method, path, &query, body);
                let response = Response::builder()
                    .status(code)
                    .body(Body::from(serde_json::to_vec(&answer).unwrap_or_default()))
                    .unwrap_or_else(|_| Response::new(Body::empty()));
                Ok::<_, std::convert::Infallible>(response)
            }
        });
        Client::new(service, "shop")
    }

    fn with<T>(&self, f: impl FnOnce(&mut State) -> T) -> T {
        let mut guard = self.state.lock().unwrap_or_else(|p| p.into_inner());
        f(&mut guard)
    }

    pub fn put(&self, path: &str, mut object: Value) {
        self.with(|s| {
            s.next += 1;
            let n = s.next;
            let meta = &mut object["metadata"];
            if meta.get("uid").is_none() {
                meta["uid"] = json!(format!("uid-{n}"));
            }
            meta["resourceVersion"] = json!(n.to_string());
            s.objects.insert(path.to_string(), object);
        });
    }

    pub fn remove(&self, path: &str) {
        self.with(|s| s.objects.remove(path));
    }

    pub fn get(&self, path: &str) -> Option<Value> {
        self.with(|s| s.objects.get(path).cloned())
    }

    pub fn seen(&self) -> Vec<Seen> {
        self.with(|s| s.seen.clone())
    }

    pub fn writes(&self) -> usize {
        self.with(|s| s.writes)
    }

    pub fn crash_after(&self, writes: Option<usize>) {
        self.with(|s| {
            s.crash_after = writes.map(|w| s.writes + w);
        });
    }

    pub fn appear_on_create(&self, path: &str, object: Value) {
        self.with(|s| s.appear.insert(path.to_string(), object));
    }

    pub fn reject_writes(&self, path: &str, message: &str) {
        self.fail_writes(path, 422, message);
    }

    pub fn fail_writes(&self, path: &str, code: u16, message: &str) {
        self.with(|s| s.reject.insert(path.to_string(), (code, message.to_string())));
    }

    pub fn forget_rejections(&self) {
        self.with(|s| s.reject.clear());
    }

    fn answer(&self, method: Method, path: String, query: &str, body: Value) -> (StatusCode, Value) {
        let seen = Seen { method: method.clone(), path: path.clone(), body: body.clone() };
        let crashed = self.with(|s| s.crash_after.is_some_and(|limit| s.writes >= limit));
        if crashed {
            return (
                StatusCode::SERVICE_UNAVAILABLE,
                status(503, "ServiceUnavailable", "the controller crashed"),
            );
        }
        self.with(|s| {
            if seen.is_write() {
                s.writes += 1;
            }
            s.seen.push(seen);
        });
        if path.contains("/events") {
            return (StatusCode::CREATED, body);
        }
        if let Some((code, message)) =
            self.with(|s| s.reject.get(&path).cloned()).filter(|_| method != Method::GET)
        {
            return refused(code, &message);
        }
        match method {
            // A collection read (a Rollout's pods, adopted Deployments): what is stored under it
            // that carries every `k=v` of the label selector.
            Method::GET if path.ends_with("/pods") || path.ends_with("/deployments") => {
                let prefix = format!("{path}/");
                let selector =
                    query.split('&').find_map(|kv| kv.strip_prefix("labelSelector=")).unwrap_or("");
                let wanted: Vec<(&str, &str)> =
                    selector.split(',').filter_map(|term| term.split_once('=')).collect();
                let items: Vec<Value> = self.with(|s| {
                    s.objects
                        .iter()
                        .filter(|(p, _)| p.starts_with(&prefix))
                        .filter(|(_, o)| wanted.iter().all(|(k, v)| o["metadata"]["labels"][*k] == *v))
                        .map(|(_, o)| o.clone())
                        .collect()
                });
                (StatusCode::OK, json!({"apiVersion": "v1", "kind": "List", "metadata": {}, "items": items}))
            }
            // A Service's EndpointSlices: every available pod of the Deployment of the same name
            // is a ready endpoint at once.
            Method::GET if path.ends_with("/endpointslices") => {
                let service = query.split("kubernetes.io/service-name=").nth(1).unwrap_or_default();
                let service = service.split('&').next().unwrap_or_default();
                let deployment = path
                    .replace("/apis/discovery.k8s.io/v1/", "/apis/apps/v1/")
                    .replace("/endpointslices", &format!("/deployments/{service}"));
                let ready = self
                    .get(&deployment)
                    .and_then(|d| d["status"]["availableReplicas"].as_u64())
                    .unwrap_or(0);
                let endpoints: Vec<Value> = (0..ready)
                    .map(|i| json!({"addresses": [format!("10.0.0.{i}")], "conditions": {"ready": true}}))
                    .collect();
                let slice = json!({
                    "metadata": {"name": format!("{service}-1")}, "addressType": "IPv4", "endpoints": endpoints,
                });
                (
                    StatusCode::OK,
                    json!({"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSliceList", "metadata": {}, "items": [slice]}),
                )
            }
            Method::GET => match self.get(&path) {
                Some(o) => (StatusCode::OK, o),
                None => (StatusCode::NOT_FOUND, status(404, "NotFound", "not found")),
            },
            Method::POST => {
                let name = body["metadata"]["name"].as_str().unwrap_or_default();
                let item = format!("{path}/{name}");
                if let Some((code, message)) = self.with(|s| s.reject.get(&item).cloned()) {
                    return refused(code, &message);
                }
                if let Some(theirs) = self.with(|s| s.appear.remove(&item)) {
                    self.put(&item, theirs);
                }
                if self.get(&item).is_some() {
                    return (StatusCode::CONFLICT, status(409, "AlreadyExists", "already exists"));
                }
                let mut object = body;
                object["metadata"]["generation"] = json!(1);
                self.store(&item, object);
                (StatusCode::CREATED, self.get(&item).unwrap_or_default())
            }
            Method::PATCH => {
                if let Some(parent) = path.strip_suffix("/status") {
                    let Some(mut object) = self.get(parent) else {
                        return (StatusCode::NOT_FOUND, status(404, "NotFound", "not found"));
                    };
                    object["status"] = body["status"].clone();
                    self.put(parent, object);
                    return (StatusCode::OK, self.get(parent).unwrap_or_default());
                }
                let mut object = self.get(&path).unwrap_or_else(|| json!({"metadata": {"generation": 0}}));
                let uid = &body["metadata"]["uid"];
                if !uid.is_null() && *uid != object["metadata"]["uid"] {
                    return (
                        StatusCode::UNPROCESSABLE_ENTITY,
                        status(422, "Invalid", "metadata.uid: field is immutable"),
                    );
                }
                let before = object.get("spec").cloned();
                merge(&mut object, &body);
                if object.get("spec").cloned() != before {
                    let g = object["metadata"]["generation"].as_i64().unwrap_or(0);
                    object["metadata"]["generation"] = json!(g + 1);
                }
                self.store(&path, object);
                (StatusCode::OK, self.get(&path).unwrap_or_default())
            }
            Method::DELETE => {
                let Some(existing) = self.get(&path) else {
                    return (StatusCode::NOT_FOUND, status(404, "NotFound", "not found"));
                };
                let want = &body["preconditions"]["uid"];
                if !want.is_null() && *want != existing["metadata"]["uid"] {
                    return (StatusCode::CONFLICT, status(409, "Conflict", "Precondition failed: UID"));
                }
                self.with(|s| s.objects.remove(&path));
                (StatusCode::OK, existing)
            }
            _ => (StatusCode::METHOD_NOT_ALLOWED, status(405, "MethodNotAllowed", "")),
        }
    }

    /// Stores an object written by rollgate; a Deployment is available at once.
    fn store(&self, path: &str, mut object: Value) {
        if path.contains("/deployments/") {
            let replicas = object["spec"]["replicas"].clone();
            object["status"] = json!({
                "observedGeneration": object["metadata"]["generation"],
                "replicas": replicas, "updatedReplicas": replicas, "availableReplicas": replicas,
            });
        }
        self.put(path, object);
    }
}
