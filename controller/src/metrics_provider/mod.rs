//! Metric providers: where the gate's counts come from.
//!
//! One small trait; one module per implementation (Prometheus today). `queries` turns each
//! check of a gate into two PromQL expressions (bad events, all events) over the step's window,
//! and `gather` runs them for the canary and, when compared, for stable. What the counts mean
//! (budgets, tolerances) is the gate's business (`rollgate_gate::check`), not this module's.

pub mod prometheus;
pub mod queries;

use std::time::Duration;

use futures::future::BoxFuture;
use rollgate_crds::GateSpec;

pub use queries::{LabelMatchers, QueryError, Selector, SeriesSelector};
use rollgate_gate::{CheckEvidence, CheckSpec, Counts, Missing};

/// A source of instant query results.
pub trait MetricProvider: Send + Sync {
    /// Evaluates `promql` now; the sum of the resulting vector, or `None` when it is empty
    /// (no series matched).
    fn query(&self, promql: &str) -> BoxFuture<'_, Result<Option<f64>, String>>;
}

/// Runs every check of `gate` for the canary (and stable, when compared) over `window`.
pub async fn gather(
    provider: &dyn MetricProvider,
    gate: &GateSpec,
    canary: &dyn SeriesSelector,
    stable: Option<&dyn SeriesSelector>,
    window: Duration,
) -> Result<Vec<CheckEvidence>, QueryError> {
    let mut out = Vec::with_capacity(gate.checks.len());
    // Once the source has failed, the remaining checks are reported with the same reason
    // instead of each waiting for its own timeout.
    let mut outage: Option<String> = None;
    for check in &gate.checks {
        let plan = queries::for_check(check)?;
        let spec = CheckSpec::try_from(check)
            .map_err(|e| QueryError { check: check.name.clone(), reason: e.to_string() })?;
        if let Some(why) = &outage {
            out.push(CheckEvidence { spec, canary: Err(Missing::Unavailable(why.clone())), stable: None });
            continue;
        }
        let canary_counts = counts(provider, &plan, canary, window).await;
        if let Err(Missing::Unavailable(why)) = &canary_counts {
            outage = Some(why.clone());
        }
        let stable_counts = match (stable, gate.policy.compare_with_stable, &outage) {
            (Some(sel), true, None) => counts(provider, &plan, sel, window).await.ok(),
            _ => None,
        };
        out.push(CheckEvidence { spec, canary: canary_counts, stable: stable_counts });
    }
    Ok(out)
}

async fn counts(
    provider: &dyn MetricProvider,
    plan: &queries::CheckQueries,
    sel: &dyn SeriesSelector,
    window: Duration,
) -> Result<Counts, Missing> {
    let total_q = plan.total(sel, window);
    let total = provider.query(&total_q).await.map_err(Missing::Unavailable)?.unwrap_or(0.0);
    let bad = match &plan.bad {
        queries::Bad::Query(_) => {
            provider.query(&plan.bad_query(sel, window)).await.map_err(Missing::Unavailable)?.unwrap_or(0.0)
        }
        queries::Bad::TotalMinus(_) => {
            // No bucket at the limit while there is traffic: the limit is not a bucket boundary
            // of the histogram. Counting everything as bad would roll back a healthy canary, so
            // it is reported instead.
            if total > 0.0
                && let Some(presence) = plan.bucket_presence(sel, window)
                && provider.query(&presence).await.map_err(Missing::Unavailable)?.is_none()
            {
                return Err(Missing::Misconfigured(format!(
                    "no histogram bucket matches {presence}; the limit must be a bucket boundary"
                )));
            }
            let good = provider.query(&plan.bad_query(sel, window)).await.map_err(Missing::Unavailable)?;
            (total - good.unwrap_or(0.0)).max(0.0)
        }
    };
    let total = total.max(0.0).round() as u64;
    let bad = (bad.max(0.0).round() as u64).min(total);
    Ok(Counts { bad, total })
}

#[cfg(test)]
mod tests;
