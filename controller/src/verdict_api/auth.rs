//! Who is asking, and may they read this Rollout: the caller's bearer token goes through a
//! TokenReview, the user it names through a SubjectAccessReview for `get` on the Rollout. The
//! API server decides both, with the same rules kubectl is subject to.
//!
//! Answers are remembered for `REVIEW_TTL`, keyed by a SHA-256 of the token (the token itself is
//! never kept), so a client polling with one token costs one review per TTL; and tokens the API
//! server rejects draw on a small budget (`Reviews::rejected`), so a flood of bogus tokens gets
//! 429 instead of a TokenReview each.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::time::{Duration, Instant};

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
    /// Too many rejected tokens lately: 429.
    #[error("{0}")]
    Throttled(String),
}

/// How long a review's answer is reused.
pub const REVIEW_TTL: Duration = Duration::from_secs(10);
/// Entries kept at most per cache (expired ones are dropped first, then all).
const CACHE_LIMIT: usize = 10_000;
/// Rejected tokens reviewed per second, and in a burst, before callers get 429.
const REJECTED_PER_SEC: f64 = 5.0;
const REJECTED_BURST: f64 = 20.0;

type TokenHash = [u8; 32];
/// A token's hash, the namespace and the Rollout's name.
type AccessKey = (TokenHash, String, String);

fn token_hash(token: &str) -> TokenHash {
    let d = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, token.as_bytes());
    let mut out = [0u8; 32];
    out.copy_from_slice(d.as_ref());
    out
}

/// A bounded map of answers that expire.
struct Expiring<K, V> {
    entries: HashMap<K, (Instant, V)>,
}

impl<K: std::hash::Hash + Eq, V: Clone> Expiring<K, V> {
    fn new() -> Self {
        Self { entries: HashMap::new() }
    }

    fn get(&self, k: &K, now: Instant) -> Option<V> {
        self.entries.get(k).filter(|(at, _)| now.duration_since(*at) < REVIEW_TTL).map(|(_, v)| v.clone())
    }

    fn insert(&mut self, k: K, v: V, now: Instant) {
        if self.entries.len() >= CACHE_LIMIT {
            self.entries.retain(|_, (at, _)| now.duration_since(*at) < REVIEW_TTL);
            if self.entries.len() >= CACHE_LIMIT {
                self.entries.clear();
            }
        }
        self.entries.insert(k, (now, v));
    }
}

/// Keeps an answer for `REVIEW_TTL`, unless the review could not be made at all.
fn remember<K: std::hash::Hash + Eq, T: Clone>(
    cache: &Mutex<Expiring<K, Result<T, Denied>>>,
    key: K,
    answer: &Result<T, Denied>,
    now: Instant,
) {
    if !matches!(answer, Err(Denied::Unavailable(_)))
        && let Ok(mut c) = cache.lock()
    {
        c.insert(key, answer.clone(), now);
    }
}

/// A token bucket.
struct Bucket {
    tokens: f64,
    at: Instant,
}

impl Bucket {
    /// Refills, then says whether one more rejection fits the budget.
    fn has_room(&mut self, now: Instant) -> bool {
        let refill = now.duration_since(self.at).as_secs_f64() * REJECTED_PER_SEC;
        self.tokens = (self.tokens + refill).min(REJECTED_BURST);
        self.at = now;
        self.tokens >= 1.0
    }

    fn spend(&mut self) {
        self.tokens = (self.tokens - 1.0).max(0.0);
    }
}

/// The user a token belongs to, as the TokenReview said.
#[derive(Debug, Clone)]
struct Reviewed {
    user: k8s_openapi::api::authentication::v1::UserInfo,
}

/// The review caches and the budget for rejected tokens; one per verdict API.
pub struct Reviews {
    tokens: Mutex<Expiring<TokenHash, Result<Reviewed, Denied>>>,
    access: Mutex<Expiring<AccessKey, Result<String, Denied>>>,
    rejected: Mutex<Bucket>,
}

impl Default for Reviews {
    fn default() -> Self {
        Self {
            tokens: Mutex::new(Expiring::new()),
            access: Mutex::new(Expiring::new()),
            rejected: Mutex::new(Bucket { tokens: REJECTED_BURST, at: Instant::now() }),
        }
    }
}

impl Reviews {
    /// [`authorize`], answering from the caches when it can.
    pub async fn authorize(
        &self,
        client: &Client,
        token: &str,
        namespace: &str,
        name: &str,
    ) -> Result<String, Denied> {
        let hash = token_hash(token);
        let now = Instant::now();
        let key = (hash, namespace.to_string(), name.to_string());
        if let Some(answer) = self.access.lock().ok().and_then(|c| c.get(&key, now)) {
            return answer;
        }
        let cached = self.tokens.lock().ok().and_then(|c| c.get(&hash, now));
        let reviewed = match cached {
            Some(r) => r,
            None => {
                if !self.rejected.lock().map(|mut b| b.has_room(now)).unwrap_or(true) {
                    return Err(Denied::Throttled(
                        "too many invalid tokens lately; try again shortly".into(),
                    ));
                }
                let r = review_token(client, token).await;
                if matches!(r, Err(Denied::Unauthenticated(_)))
                    && let Ok(mut b) = self.rejected.lock()
                {
                    b.spend();
                }
                remember(&self.tokens, hash, &r, now);
                r
            }
        };
        let answer = review_access(client, reviewed?.user, namespace, name).await;
        remember(&self.access, key, &answer, now);
        answer
    }
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

/// The user behind `token`, and whether they may `get` the Rollout `namespace/name` (no cache).
pub async fn authorize(client: &Client, token: &str, namespace: &str, name: &str) -> Result<String, Denied> {
    let reviewed = review_token(client, token).await?;
    review_access(client, reviewed.user, namespace, name).await
}

async fn review_token(client: &Client, token: &str) -> Result<Reviewed, Denied> {
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
    Ok(Reviewed { user: status.user.unwrap_or_default() })
}

async fn review_access(
    client: &Client,
    user: k8s_openapi::api::authentication::v1::UserInfo,
    namespace: &str,
    name: &str,
) -> Result<String, Denied> {
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
