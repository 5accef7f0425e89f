//! Following one Rollout until something holds: the CLI's `wait`, its actions waiting for the
//! controller to take a request, and the verdict API's long-poll and event stream all use it.

use futures::{Stream, StreamExt};
use kube::Api;
use kube::runtime::{WatchStreamExt, watcher};
use rollgate_crds::Rollout;

/// Every version of the Rollout `name` from now on: a watch that resumes after disconnects
/// (with backoff); the first item is its current state.
pub fn changes(
    api: &Api<Rollout>,
    name: &str,
) -> impl Stream<Item = Result<Rollout, watcher::Error>> + Unpin + use<> {
    let config = watcher::Config::default().fields(&format!("metadata.name={name}"));
    watcher(api.clone(), config).default_backoff().applied_objects().boxed()
}

/// The first version of the Rollout for which `done` holds, starting with `current` when given.
/// A failing watch is retried with backoff (a blip of the API server does not end a 30-minute
/// wait); callers bound the wait with a timeout.
pub async fn until(
    api: &Api<Rollout>,
    name: &str,
    current: Option<Rollout>,
    done: impl Fn(&Rollout) -> bool,
) -> Result<Rollout, WatchEnded> {
    if let Some(ro) = current
        && done(&ro)
    {
        return Ok(ro);
    }
    let mut stream = changes(api, name);
    while let Some(next) = stream.next().await {
        match next {
            Ok(ro) if done(&ro) => return Ok(ro),
            Ok(_) => {}
            Err(e) => tracing::debug!(error = %e, rollout = name, "watch interrupted; resuming"),
        }
    }
    Err(WatchEnded { name: name.to_string() })
}

/// The watch stream ended before the condition held (it retries errors, so this is rare).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the watch of rollout {name} ended")]
pub struct WatchEnded {
    pub name: String,
}
