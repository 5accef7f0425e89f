//! The verdict API, served by the controller for pipelines that speak HTTP rather than kubectl.
//!
//! - `GET /api/v1/namespaces/{ns}/rollouts/{name}`: the Rollout as the CLI's JSON view;
//!   `?wait=verdict&timeout=5m` long-polls until a verdict or the timeout (`timedOut: true`).
//! - `GET /api/v1/namespaces/{ns}/rollouts/{name}/events`: Server-Sent Events, first the
//!   current `state`, then one `transition` per new decision in `status.history`, in order.
//!
//! Read-only. Every request needs the caller's bearer token; the API server authenticates it
//! (TokenReview) and authorises `get` on that Rollout (SubjectAccessReview): no token 401, not
//! allowed 403, missing Rollout 404 (after authorisation, so existence does not leak).

pub mod auth;

use std::convert::Infallible;
use std::time::Duration;

use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use futures::StreamExt;
use kube::{Api, Client};
use rollgate_crds::Rollout;
use rollgate_crds::duration::PositiveDuration;
use rollgate_crds::rollout::Decision;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::rollout_watch;
use crate::status_view::{self as view, WaitFor, Waited};
use auth::Denied;

/// Longest long-poll a request may ask for.
pub const MAX_WAIT: Duration = Duration::from_secs(15 * 60);
/// The long-poll when `timeout` is not given.
pub const DEFAULT_WAIT: Duration = Duration::from_secs(60);

#[derive(Clone)]
pub struct ApiState {
    pub client: Client,
    pub reviews: std::sync::Arc<auth::Reviews>,
}

impl ApiState {
    pub fn new(client: Client) -> Self {
        Self { client, reviews: Default::default() }
    }
}

pub fn router(state: ApiState) -> Router {
    Router::new()
        .route("/api/v1/namespaces/{ns}/rollouts/{name}", get(rollout))
        .route("/api/v1/namespaces/{ns}/rollouts/{name}/events", get(events))
        .with_state(state)
}

#[derive(Debug, Deserialize)]
pub struct RolloutQuery {
    wait: Option<String>,
    timeout: Option<String>,
}

fn error(status: StatusCode, message: impl Into<String>) -> Response {
    let body = json!({ "code": status.as_u16(), "error": message.into() });
    let mut r = (status, axum::Json(body)).into_response();
    if status == StatusCode::UNAUTHORIZED {
        r.headers_mut().insert(header::WWW_AUTHENTICATE, header::HeaderValue::from_static("Bearer"));
    }
    r
}

fn denied(d: Denied) -> Response {
    let status = match d {
        Denied::Unauthenticated(_) => StatusCode::UNAUTHORIZED,
        Denied::Forbidden(_) => StatusCode::FORBIDDEN,
        Denied::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
        Denied::Throttled(_) => StatusCode::TOO_MANY_REQUESTS,
    };
    error(status, d.to_string())
}

/// Authorises the caller, then reads the Rollout.
async fn admitted(state: &ApiState, headers: &HeaderMap, ns: &str, name: &str) -> Result<Rollout, Response> {
    let token = auth::bearer(headers).map_err(denied)?;
    state.reviews.authorize(&state.client, token, ns, name).await.map_err(denied)?;
    let api: Api<Rollout> = Api::namespaced(state.client.clone(), ns);
    match api.get_opt(name).await {
        Ok(Some(ro)) => Ok(ro),
        Ok(None) => Err(error(StatusCode::NOT_FOUND, format!("rollout {ns}/{name} not found"))),
        Err(e) => Err(error(StatusCode::SERVICE_UNAVAILABLE, format!("reading rollout {ns}/{name}: {e}"))),
    }
}

fn body(ro: &Rollout, timed_out: Option<bool>) -> Value {
    let mut v = serde_json::to_value(view::view(ro)).unwrap_or(Value::Null);
    if let (Some(t), Some(map)) = (timed_out, v.as_object_mut()) {
        map.insert("timedOut".into(), Value::Bool(t));
    }
    v
}

/// Parses `?wait=&timeout=`; errors name the parameter.
pub fn long_poll(q: &RolloutQuery) -> Result<Option<Duration>, String> {
    match q.wait.as_deref() {
        None => {
            if q.timeout.is_some() {
                return Err("timeout: only with wait=verdict".into());
            }
            Ok(None)
        }
        Some("verdict") => {
            let timeout = match q.timeout.as_deref() {
                None => DEFAULT_WAIT,
                Some(t) => t.parse::<PositiveDuration>().map_err(|e| format!("timeout: {e}"))?.as_std(),
            };
            if timeout > MAX_WAIT {
                return Err(format!("timeout: at most {}", rollgate_gate::format::human(MAX_WAIT)));
            }
            Ok(Some(timeout))
        }
        Some(other) => Err(format!("wait: {other:?} is not supported (wait=verdict)")),
    }
}

async fn rollout(
    State(state): State<ApiState>,
    Path((ns, name)): Path<(String, String)>,
    Query(q): Query<RolloutQuery>,
    headers: HeaderMap,
) -> Response {
    let wait = match long_poll(&q) {
        Ok(w) => w,
        Err(e) => return error(StatusCode::BAD_REQUEST, e),
    };
    let ro = match admitted(&state, &headers, &ns, &name).await {
        Ok(ro) => ro,
        Err(r) => return r,
    };
    let Some(timeout) = wait else {
        return axum::Json(body(&ro, None)).into_response();
    };
    if view::waited(&ro, WaitFor::Verdict) != Waited::Pending {
        return axum::Json(body(&ro, Some(false))).into_response();
    }
    let api: Api<Rollout> = Api::namespaced(state.client.clone(), &ns);
    let waiting =
        rollout_watch::until(&api, &name, None, |ro| view::waited(ro, WaitFor::Verdict) != Waited::Pending);
    match tokio::time::timeout(timeout, waiting).await {
        Ok(Ok(ro)) => axum::Json(body(&ro, Some(false))).into_response(),
        Ok(Err(e)) => error(StatusCode::SERVICE_UNAVAILABLE, format!("watching rollout {ns}/{name}: {e}")),
        Err(_) => {
            let latest = api.get_opt(&name).await.ok().flatten().unwrap_or(ro);
            axum::Json(body(&latest, Some(true))).into_response()
        }
    }
}

/// The decisions in `now` that come after `seen` (all of them when `seen` is no longer in the
/// bounded history, or was never set).
pub fn new_decisions<'a>(seen: Option<&Decision>, now: &'a [Decision]) -> &'a [Decision] {
    match seen.and_then(|s| now.iter().rposition(|d| d == s)) {
        Some(i) => &now[i + 1..],
        None => now,
    }
}

async fn events(
    State(state): State<ApiState>,
    Path((ns, name)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    let ro = match admitted(&state, &headers, &ns, &name).await {
        Ok(ro) => ro,
        Err(r) => return r,
    };
    let api: Api<Rollout> = Api::namespaced(state.client.clone(), &ns);
    let first = Event::default().event("state").json_data(body(&ro, None));
    let mut last: Option<Decision> = ro.status.as_ref().and_then(|s| s.history.last().cloned());
    let updates = rollout_watch::changes(&api, &name).flat_map(move |next| {
        let out: Vec<Result<Event, Infallible>> = match next {
            Ok(ro) => {
                let history = ro.status.as_ref().map(|s| s.history.clone()).unwrap_or_default();
                let fresh = new_decisions(last.as_ref(), &history).to_vec();
                if let Some(d) = fresh.last() {
                    last = Some(d.clone());
                }
                let st = ro.status.clone().unwrap_or_default();
                fresh
                    .into_iter()
                    .filter_map(|d| {
                        let data = json!({
                            "time": d.time, "action": d.action, "weight": d.weight, "reason": d.reason,
                            "phase": st.phase, "verdict": st.verdict,
                        });
                        Event::default().event("transition").json_data(data).ok()
                    })
                    .map(Ok)
                    .collect()
            }
            Err(e) => {
                vec![Ok(Event::default().event("error").data(format!("watch interrupted, resuming: {e}")))]
            }
        };
        futures::stream::iter(out)
    });
    let start = futures::stream::iter(first.ok().map(Ok::<Event, Infallible>));
    Sse::new(start.chain(updates))
        .keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
        .into_response()
}

#[cfg(test)]
mod tests;
