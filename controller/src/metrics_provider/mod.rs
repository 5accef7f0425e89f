//! Metric providers: where the gate's counts come from.
//!
//! One small trait; one module per implementation (Prometheus today). `queries` turns each
//! check of a gate into two PromQL expressions (bad events, all events) over the step's window,
//! and `gather` runs them for the canary and, when compared, for stable. What the counts mean
//! (budgets, tolerances) is the gate's business (`rollgate_gate::check`), not this module's.

pub mod access;
pub mod prometheus;
pub mod queries;
pub mod selector;
pub mod sources;
pub mod template;

use std::time::Duration;

use futures::future::BoxFuture;
use rollgate_crds::GateSpec;

pub use queries::QueryError;
use rollgate_gate::{CheckEvidence, CheckSpec, Counts, Missing, Slower};
pub use selector::{LabelMatchers, Selector, SeriesSelector};
use sources::Scope;

/// A source of instant query results.
pub trait MetricProvider: Send + Sync {
    /// Evaluates `promql` at `time` (Unix seconds; `None`: now); the sum of the resulting
    /// vector, or `None` when it is empty (no series matched).
    fn query<'a>(&'a self, promql: &'a str, time: Option<i64>) -> BoxFuture<'a, Result<Option<f64>, String>>;
    /// Evaluates `promql` at `time`; each resulting series' value of `label` with its sample.
    fn samples_by<'a>(
        &'a self,
        promql: &'a str,
        label: &'a str,
        time: Option<i64>,
    ) -> BoxFuture<'a, Result<Vec<(String, f64)>, String>>;
    /// Evaluates `promql` at `time`; the values of `label` over the resulting series, each once.
    fn label_values<'a>(
        &'a self,
        promql: &'a str,
        label: &'a str,
        time: Option<i64>,
    ) -> BoxFuture<'a, Result<Vec<String>, String>>;
}

/// What one evaluation reads: each side's series over `window`, every query evaluated at the
/// same instant `time`. Queries sent a moment apart over a window of a second or two can see
/// different scrapes (a total that includes a scrape the bucket query no longer sees counts
/// every request as slow), so an evaluation pins its instant.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Span {
    pub window: Duration,
    /// Unix seconds; `None`: whenever each query is evaluated.
    pub time: Option<i64>,
}

/// Runs every check of `gate` for the canary (and stable, when compared) over `span`.
pub async fn gather(
    provider: &dyn MetricProvider,
    gate: &GateSpec,
    canary: &dyn SeriesSelector,
    stable: Option<&dyn SeriesSelector>,
    span: Span,
) -> Result<Vec<CheckEvidence>, QueryError> {
    let checks = gate.effective_checks();
    let mut out = Vec::with_capacity(checks.len());
    // Once the source has failed, the remaining checks are reported with the same reason
    // instead of each waiting for its own timeout.
    let mut outage: Option<String> = None;
    for check in checks.iter() {
        let plan = queries::for_check(check, gate.source_of(check))?;
        let mut spec = CheckSpec::try_from(check)
            .map_err(|e| QueryError { check: check.name.clone(), reason: e.to_string() })?;
        spec.source = Some(plan.source.clone());
        if let Some(why) = &outage {
            out.push(CheckEvidence {
                spec,
                canary: Err(Missing::Unavailable(why.clone())),
                stable: None,
                carried: Counts::ZERO,
                slower: Vec::new(),
            });
            continue;
        }
        let canary_counts = match counts(provider, &plan, canary, span).await {
            Ok(Read { counts, boundary }) => {
                if let Some(b) = boundary {
                    spec.source = Some(format!("{}, {b}", plan.source));
                }
                Ok(counts)
            }
            Err(e) => Err(e),
        };
        if let Err(Missing::Unavailable(why)) = &canary_counts {
            outage = Some(why.clone());
        }
        let stable_counts = match (stable, gate.policy.compare_with_stable, &outage) {
            (Some(sel), true, None) => counts(provider, &plan, sel, span).await.ok().map(|r| r.counts),
            _ => None,
        };
        let slower = match (stable, &canary_counts, stable_counts) {
            (Some(sel), Ok(c), Some(s)) if c.total > 0 && s.total > 0 => {
                whole_histogram(provider, &plan, (canary, *c), (sel, s), span).await
            }
            _ => Vec::new(),
        };
        out.push(CheckEvidence {
            spec,
            canary: canary_counts,
            stable: stable_counts,
            carried: Counts::ZERO,
            slower,
        });
    }
    Ok(out)
}

/// One side's counts, and for a histogram the boundary judged, in words.
struct Read {
    counts: Counts,
    boundary: Option<String>,
}

async fn counts(
    provider: &dyn MetricProvider,
    plan: &queries::CheckQueries,
    sel: &dyn SeriesSelector,
    span: Span,
) -> Result<Read, Missing> {
    let Span { window, time } = span;
    let unavailable = Missing::Unavailable;
    let total = provider.query(&plan.total(sel, window), time).await.map_err(unavailable)?.unwrap_or(0.0);
    if total <= 0.0 {
        if let Some(wrong) = wrong_source(provider, plan, sel, time).await? {
            return Err(Missing::Misconfigured(wrong));
        }
        return Ok(Read { counts: Counts { bad: 0, total: 0 }, boundary: None });
    }
    let (bad, boundary) = match &plan.bad {
        queries::Bad::Query(_) => {
            let bad = provider.query(&plan.bad_query(sel, window, None), time).await.map_err(unavailable)?;
            (bad.unwrap_or(0.0), None)
        }
        queries::Bad::Histogram { bucket, limit_s, le_unit_s } => {
            let query = plan.boundaries(sel, window).unwrap_or_default();
            let les = provider.label_values(&query, "le", time).await.map_err(unavailable)?;
            let limit = seconds_text(*limit_s);
            let Some((le, at_s)) = queries::judged_boundary(&les, *limit_s, *le_unit_s) else {
                // Counting everything as bad would roll back a healthy canary, so it is
                // reported instead.
                let found = if les.is_empty() { "none".to_string() } else { les.join(", ") };
                return Err(Missing::Misconfigured(format!(
                    "{bucket}{} has no bucket boundary at or below {limit} (boundaries found: {found})",
                    plan.selector_text(sel)
                )));
            };
            let good =
                provider.query(&plan.bad_query(sel, window, Some(&le)), time).await.map_err(unavailable)?;
            let judged = seconds_text(at_s);
            let boundary = if at_s < limit_s * (1.0 - 1e-9) {
                format!("judged at le=\"{le}\" ({judged}, the largest boundary below {limit})")
            } else {
                format!("judged at le=\"{le}\" ({judged})")
            };
            ((total - good.unwrap_or(0.0)).max(0.0), Some(boundary))
        }
    };
    let total = total.max(0.0).round() as u64;
    let bad = (bad.max(0.0).round() as u64).min(total);
    Ok(Read { counts: Counts { bad, total }, boundary })
}

/// For a histogram check, both versions' events slower than each bucket boundary over the
/// span (`rollgate_gate::relative::compare_distributions`): every finite boundary both have, so
/// the set averaged over is the app's, not chosen from the counts. Empty for other checks, and
/// when the buckets cannot be read or do not add up (a delta that falls as `le` rises, or one
/// above the total: a pod that restarted or vanished inside the window): the comparison then
/// falls back to the check's own limit, which is still valid, only slower to convince.
async fn whole_histogram(
    provider: &dyn MetricProvider,
    plan: &queries::CheckQueries,
    (canary, c): (&dyn SeriesSelector, Counts),
    (stable, s): (&dyn SeriesSelector, Counts),
    span: Span,
) -> Vec<Slower> {
    let queries::Bad::Histogram { le_unit_s, .. } = &plan.bad else { return Vec::new() };
    let read = |sel| async move {
        let query = plan.buckets(sel, span.window).unwrap_or_default();
        provider.samples_by(&query, "le", span.time).await
    };
    let (canary_buckets, stable_buckets) = match (read(canary).await, read(stable).await) {
        (Ok(a), Ok(b)) => (cumulative(&a, *le_unit_s, c.total), cumulative(&b, *le_unit_s, s.total)),
        (Err(e), _) | (_, Err(e)) => {
            tracing::warn!(error = %e, "histogram buckets unreadable; comparing at the limit only");
            return Vec::new();
        }
    };
    let (Some(canary_buckets), Some(stable_buckets)) = (canary_buckets, stable_buckets) else {
        return Vec::new();
    };
    canary_buckets
        .iter()
        .filter_map(|(bound_s, within_c)| {
            let within_s = stable_buckets.iter().find(|(b, _)| (b - bound_s).abs() <= bound_s * 1e-9)?.1;
            Some(Slower { bound_s: *bound_s, canary: c.total - within_c, stable: s.total - within_s })
        })
        .collect()
}

/// One version's bucket counts as (boundary in seconds, events within it), finite boundaries in
/// order; `None` when they do not add up against `total`.
fn cumulative(samples: &[(String, f64)], le_unit_s: f64, total: u64) -> Option<Vec<(f64, u64)>> {
    let mut buckets: Vec<(f64, u64)> = samples
        .iter()
        .filter_map(|(le, v)| {
            let bound = le.parse::<f64>().ok().filter(|b| b.is_finite())?;
            Some((bound * le_unit_s, v.max(0.0).round() as u64))
        })
        .collect();
    buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
    let monotone = buckets.windows(2).all(|w| w[0].1 <= w[1].1);
    let within_total = buckets.iter().all(|(_, n)| *n <= total);
    (monotone && within_total).then_some(buckets)
}

/// A histogram bound as durations are written in the spec: `250ms`, `1.2s` (to the microsecond).
fn seconds_text(s: f64) -> String {
    rollgate_crds::PositiveDuration::from(Duration::from_micros((s * 1e6).round() as u64)).to_string()
}

/// Request series of the conventions rollgate knows, and the preset that reads each.
const KNOWN_REQUEST_SERIES: [(&str, &str); 3] = [
    ("http_server_request_duration_seconds_count", "otel"),
    ("http_request_duration_seconds_count", "prometheusClient"),
    ("http_server_requests_seconds_count", "micrometer"),
];

/// When a check's series do not exist for the pods but request series of another known
/// convention do, the source is wrong (not merely quiet): says which series were looked for
/// and what the pods export instead.
async fn wrong_source(
    provider: &dyn MetricProvider,
    plan: &queries::CheckQueries,
    sel: &dyn SeriesSelector,
    time: Option<i64>,
) -> Result<Option<String>, Missing> {
    let Some(counter) = &plan.counter else { return Ok(None) };
    if plan.scope != Scope::Pods {
        return Ok(None);
    }
    let matchers = sel.matchers_in(plan.scope);
    let present = provider
        .query(&format!("count({counter}{{{matchers}}})"), time)
        .await
        .map_err(Missing::Unavailable)?;
    if present.is_some() {
        return Ok(None);
    }
    let names = KNOWN_REQUEST_SERIES.map(|(n, _)| n).join("|");
    let found = provider
        .label_values(
            &format!("group by (__name__) ({{__name__=~\"{names}\",{matchers}}})"),
            "__name__",
            time,
        )
        .await
        .map_err(Missing::Unavailable)?;
    let Some(first) = found.first() else { return Ok(None) };
    let preset = KNOWN_REQUEST_SERIES.iter().find(|(n, _)| n == first).map_or("", |(_, p)| *p);
    let fix = if plan.pause {
        "; the app does not export this pause histogram: remove the pause check, or choose the \
         preset of the one it exports"
            .to_string()
    } else {
        format!("; set metrics.preset: {preset}")
    };
    Ok(Some(format!("no series {counter}{{{matchers}}}; the pods export {}{fix}", found.join(", "))))
}

#[cfg(test)]
mod tests;
