//! The verdict API against a fake API server (answers by path, as in kube-rs's tower-test
//! examples): 200, 401, 403, 404, 400 and a long-poll that times out.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Body as AxumBody;
use http::{Request, Response, StatusCode};
use http_body_util::BodyExt;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::Client;
use kube::client::Body;
use rollgate_crds::rollout::{HistoryAction, Phase};
use rollgate_crds::{RolloutSpec, RolloutStatus};
use serde_json::{Value, json};
use tower::ServiceExt;

use super::*;
use crate::fixtures::RolloutSpecExt;

/// What the fake API server knows.
#[derive(Clone)]
struct Fake {
    authenticated: bool,
    allowed: bool,
    rollout: Option<Value>,
    /// Requests seen: (method, path, body).
    seen: Arc<Mutex<Vec<(String, String, Value)>>>,
}

fn progressing() -> Value {
    let mut ro = Rollout::new("web", RolloutSpec::test());
    ro.metadata.namespace = Some("shop".into());
    ro.metadata.generation = Some(1);
    ro.metadata.resource_version = Some("5".into());
    ro.status = Some(RolloutStatus {
        observed_generation: Some(1),
        phase: Some(Phase::Progressing),
        canary_weight: 5,
        current_step: Some(1),
        ..Default::default()
    });
    serde_json::to_value(ro).unwrap_or_default()
}

impl Fake {
    fn new(authenticated: bool, allowed: bool, rollout: Option<Value>) -> Self {
        Self { authenticated, allowed, rollout, seen: Arc::default() }
    }

    fn client(&self) -> Client {
        let fake = self.clone();
        let service = tower::service_fn(move |req: Request<Body>| {
            let fake = fake.clone();
            async move {
                let method = req.method().to_string();
                let path = req.uri().path().to_string();
                let query = req.uri().query().unwrap_or_default().to_string();
                let bytes = req.into_body().collect().await.map(|b| b.to_bytes()).unwrap_or_default();
                let body: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
                if let Ok(mut seen) = fake.seen.lock() {
                    seen.push((method, path.clone(), body.clone()));
                }
                let (status, answer) = fake.answer(&path, &query, body);
                if query.contains("watch=true") {
                    // A watch with nothing new: the stream stays open and silent.
                    std::future::pending::<()>().await;
                }
                let response = Response::builder()
                    .status(status)
                    .body(Body::from(serde_json::to_vec(&answer).unwrap_or_default()))
                    .unwrap_or_else(|_| Response::new(Body::empty()));
                Ok::<_, std::convert::Infallible>(response)
            }
        });
        Client::new(service, "default")
    }

    fn answer(&self, path: &str, query: &str, body: Value) -> (StatusCode, Value) {
        match path {
            "/apis/authentication.k8s.io/v1/tokenreviews" => {
                let mut out = body;
                out["status"] = if self.authenticated {
                    json!({"authenticated": true, "user": {"username": "ci-bot", "groups": ["ci"]}})
                } else {
                    json!({"authenticated": false, "error": "token expired"})
                };
                (StatusCode::CREATED, out)
            }
            "/apis/authorization.k8s.io/v1/subjectaccessreviews" => {
                let mut out = body;
                out["status"] = json!({"allowed": self.allowed});
                (StatusCode::CREATED, out)
            }
            "/apis/rollgate.dev/v1alpha1/namespaces/shop/rollouts" if query.contains("fieldSelector") => {
                let items: Vec<Value> = self.rollout.iter().cloned().collect();
                (
                    StatusCode::OK,
                    json!({"apiVersion": "rollgate.dev/v1alpha1", "kind": "RolloutList", "metadata": {"resourceVersion": "5"}, "items": items}),
                )
            }
            "/apis/rollgate.dev/v1alpha1/namespaces/shop/rollouts/web" => match &self.rollout {
                Some(ro) => (StatusCode::OK, ro.clone()),
                None => (
                    StatusCode::NOT_FOUND,
                    json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "NotFound", "code": 404, "message": "rollouts.rollgate.dev \"web\" not found"}),
                ),
            },
            _ => (StatusCode::NOT_FOUND, json!({"kind": "Status", "code": 404, "message": path})),
        }
    }
}

async fn call(fake: &Fake, uri: &str, token: Option<&str>) -> (StatusCode, Value) {
    let app = router(ApiState::new(fake.client()));
    let mut req = Request::builder().uri(uri);
    if let Some(t) = token {
        req = req.header("authorization", format!("Bearer {t}"));
    }
    let req = req.body(AxumBody::empty()).unwrap_or_default();
    let response = app.oneshot(req).await.unwrap_or_else(|e| match e {});
    let status = response.status();
    let bytes = response.into_body().collect().await.map(|b| b.to_bytes()).unwrap_or_default();
    (status, serde_json::from_slice(&bytes).unwrap_or(Value::Null))
}

const URI: &str = "/api/v1/namespaces/shop/rollouts/web";

#[tokio::test]
async fn an_allowed_caller_gets_the_rollout() {
    let fake = Fake::new(true, true, Some(progressing()));
    let (status, body) = call(&fake, URI, Some("t0k3n")).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        (body["phase"].clone(), body["canaryWeight"].clone(), body["step"].clone()),
        (json!("Progressing"), json!(5), json!(2))
    );
    let seen = fake.seen.lock().map(|s| s.clone()).unwrap_or_default();
    assert_eq!(seen[0].2["spec"]["token"], "t0k3n", "the caller's token is reviewed");
    let access = &seen[1].2["spec"];
    assert_eq!(access["user"], "ci-bot");
    assert_eq!(access["groups"], json!(["ci"]));
    assert_eq!(
        access["resourceAttributes"],
        json!({"namespace": "shop", "verb": "get", "group": "rollgate.dev", "resource": "rollouts", "name": "web"})
    );
}

#[tokio::test]
async fn no_token_is_401_without_asking_the_api_server() {
    let fake = Fake::new(true, true, Some(progressing()));
    let (status, body) = call(&fake, URI, None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert!(body["error"].as_str().is_some_and(|e| e.contains("Bearer")), "{body}");
    assert!(fake.seen.lock().map(|s| s.is_empty()).unwrap_or(false));
}

#[tokio::test]
async fn an_invalid_token_is_401() {
    let (status, body) = call(&Fake::new(false, true, Some(progressing())), URI, Some("old")).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(body["error"], "token expired");
}

#[tokio::test]
async fn a_caller_without_get_on_the_rollout_is_403_even_when_it_does_not_exist() {
    for rollout in [Some(progressing()), None] {
        let (status, body) = call(&Fake::new(true, false, rollout), URI, Some("t")).await;
        assert_eq!(status, StatusCode::FORBIDDEN);
        assert!(body["error"].as_str().is_some_and(|e| e.contains("\"ci-bot\" may not get")), "{body}");
    }
}

#[tokio::test]
async fn a_missing_rollout_is_404_for_an_allowed_caller() {
    let (status, body) = call(&Fake::new(true, true, None), URI, Some("t")).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(body["error"], "rollout shop/web not found");
}

#[tokio::test]
async fn bad_parameters_are_400_naming_them() {
    let fake = Fake::new(true, true, Some(progressing()));
    for (query, says) in [
        ("?wait=promoted", "wait: \"promoted\" is not supported"),
        ("?wait=verdict&timeout=1h", "timeout: at most 15m"),
        ("?wait=verdict&timeout=soon", "timeout: \"soon\" is not a positive duration"),
        ("?timeout=10s", "timeout: only with wait=verdict"),
    ] {
        let (status, body) = call(&fake, &format!("{URI}{query}"), Some("t")).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{query}");
        assert!(body["error"].as_str().is_some_and(|e| e.contains(says)), "{query}: {body}");
    }
}

#[tokio::test]
async fn a_long_poll_without_a_verdict_times_out_with_the_current_state() {
    let fake = Fake::new(true, true, Some(progressing()));
    let started = std::time::Instant::now();
    let (status, body) = call(&fake, &format!("{URI}?wait=verdict&timeout=1s"), Some("t")).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["timedOut"], true);
    assert_eq!(body["phase"], "Progressing");
    assert!(started.elapsed() >= Duration::from_secs(1), "it waited");
}

#[tokio::test]
async fn a_long_poll_on_a_decided_rollout_answers_at_once() {
    let mut ro = progressing();
    ro["status"]["phase"] = json!("RolledBack");
    ro["status"]["verdict"] = json!("Fail");
    let (status, body) =
        call(&Fake::new(true, true, Some(ro)), &format!("{URI}?wait=verdict&timeout=10m"), Some("t")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!((body["timedOut"].clone(), body["verdict"].clone()), (json!(false), json!("Fail")));
}

#[test]
fn transitions_are_the_decisions_after_the_last_one_seen() {
    let d = |i: i64, action: HistoryAction| Decision {
        time: Time(Timestamp::from_second(1_800_000_000 + i).unwrap_or(Timestamp::UNIX_EPOCH)),
        action,
        weight: 0,
        reason: String::new(),
    };
    let history = vec![d(1, HistoryAction::Start), d(2, HistoryAction::StepUp), d(3, HistoryAction::StepUp)];
    assert_eq!(new_decisions(Some(&history[0]), &history), &history[1..]);
    assert_eq!(new_decisions(Some(&history[2]), &history), &[] as &[Decision]);
    assert_eq!(new_decisions(None, &history), &history[..]);
    // Trimmed out of the bounded history: everything there is new.
    assert_eq!(new_decisions(Some(&d(0, HistoryAction::Promote)), &history), &history[..]);
}

async fn call_with(app: &Router, uri: &str, token: &str) -> StatusCode {
    let req = Request::builder()
        .uri(uri)
        .header("authorization", format!("Bearer {token}"))
        .body(AxumBody::empty())
        .unwrap_or_default();
    app.clone().oneshot(req).await.unwrap_or_else(|e| match e {}).status()
}

fn reviews(fake: &Fake) -> usize {
    fake.seen.lock().map(|s| s.iter().filter(|(_, p, _)| p.ends_with("/tokenreviews")).count()).unwrap_or(0)
}

#[tokio::test]
async fn a_token_is_reviewed_once_while_its_answer_is_fresh() {
    let fake = Fake::new(true, true, Some(progressing()));
    let app = router(ApiState::new(fake.client()));
    for _ in 0..5 {
        assert_eq!(call_with(&app, URI, "t0k3n").await, StatusCode::OK);
    }
    assert_eq!(reviews(&fake), 1, "one TokenReview for five requests with the same token");
    let bogus = Fake::new(false, false, Some(progressing()));
    let app = router(ApiState::new(bogus.client()));
    for _ in 0..5 {
        assert_eq!(call_with(&app, URI, "nope").await, StatusCode::UNAUTHORIZED);
    }
    assert_eq!(reviews(&bogus), 1, "a rejected token is remembered too");
}

#[tokio::test]
async fn a_flood_of_bogus_tokens_is_throttled_instead_of_reviewed() {
    let fake = Fake::new(false, false, Some(progressing()));
    let app = router(ApiState::new(fake.client()));
    let mut statuses = Vec::new();
    for i in 0..200 {
        statuses.push(call_with(&app, URI, &format!("bogus-{i}")).await);
    }
    let throttled = statuses.iter().filter(|s| **s == StatusCode::TOO_MANY_REQUESTS).count();
    assert!(throttled >= 150, "{throttled} of 200 throttled");
    assert!(reviews(&fake) <= 50, "{} TokenReviews for 200 bogus tokens", reviews(&fake));
    assert!(statuses[..10].iter().all(|s| *s == StatusCode::UNAUTHORIZED), "the first ones are reviewed");
}
