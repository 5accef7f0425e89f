//! Who is asking, and may they read this Rollout: the caller's bearer token goes through a
//! TokenReview, the user it names through a SubjectAccessReview for `get` on the Rollout. The
//! API server decides both, with the same rules kubectl is subject to.

use std::collections::BTreeMap;

use axum::http::HeaderMap;
use k8s_openapi::api::authentication::v1::{TokenReview, TokenReviewSpec};
use k8s_openapi::api::authorization::v1::{ResourceAttributes, SubjectAccessReview, SubjectAccessReviewSpec};
use kube::api::PostParams;
use kube::{Api, Client};

/// Why a request is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Denied {
    /// No usable bearer token: 401.
    #[error("{0}")]
    Unauthenticated(String),
    /// Authenticated, not allowed: 403.
    #[error("{0}")]
    Forbidden(String),
    /// The reviews could not be made: 503.
    #[error("{0}")]
    Unavailable(String),
}

pub fn bearer(headers: &HeaderMap) -> Result<&str, Denied> {
    let value = headers.get(axum::http::header::AUTHORIZATION).ok_or_else(|| {
        Denied::Unauthenticated("an Authorization: Bearer <token> header is required".into())
    })?;
    let text =
        value.to_str().map_err(|_| Denied::Unauthenticated("the Authorization header is not text".into()))?;
    match text.split_once(' ') {
        Some((scheme, token)) if scheme.eq_ignore_ascii_case("bearer") && !token.trim().is_empty() => {
            Ok(token.trim())
        }
        _ => Err(Denied::Unauthenticated("the Authorization header must be Bearer <token>".into())),
    }
}

/// The user behind `token`, and whether they may `get` the Rollout `namespace/name`.
pub async fn authorize(client: &Client, token: &str, namespace: &str, name: &str) -> Result<String, Denied> {
    let review = TokenReview {
        spec: TokenReviewSpec { token: Some(token.to_string()), ..Default::default() },
        ..Default::default()
    };
    let reviewed = Api::<TokenReview>::all(client.clone())
        .create(&PostParams::default(), &review)
        .await
        .map_err(|e| Denied::Unavailable(format!("token review: {e}")))?;
    let status = reviewed.status.unwrap_or_default();
    if status.authenticated != Some(true) {
        let why = status.error.filter(|e| !e.is_empty()).unwrap_or_else(|| "the token is not valid".into());
        return Err(Denied::Unauthenticated(why));
    }
    let user = status.user.unwrap_or_default();
    let username = user.username.clone().unwrap_or_default();
    let access = SubjectAccessReview {
        spec: SubjectAccessReviewSpec {
            user: user.username,
            groups: user.groups,
            uid: user.uid,
            extra: user.extra.map(|e| e.into_iter().collect::<BTreeMap<_, _>>()),
            resource_attributes: Some(ResourceAttributes {
                namespace: Some(namespace.to_string()),
                verb: Some("get".into()),
                group: Some("rollgate.dev".into()),
                resource: Some("rollouts".into()),
                name: Some(name.to_string()),
                ..Default::default()
            }),
            ..Default::default()
        },
        ..Default::default()
    };
    let decided = Api::<SubjectAccessReview>::all(client.clone())
        .create(&PostParams::default(), &access)
        .await
        .map_err(|e| Denied::Unavailable(format!("access review: {e}")))?;
    if decided.status.is_some_and(|s| s.allowed) {
        Ok(username)
    } else {
        Err(Denied::Forbidden(format!(
            "user {username:?} may not get rollouts.rollgate.dev {name:?} in namespace {namespace:?}"
        )))
    }
}
