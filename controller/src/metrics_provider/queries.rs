//! PromQL for each check kind, with every interpolated value escaped.
//!
//! Request checks read the series of their metric source (`sources`); pause checks the
//! runtime's pause histogram; `promql` checks their own templates. A count over the window is
//! the counter's sum now minus its sum at the window's start, where a series that did not exist
//! yet counts as zero: `(sum(C) or vector(0)) - (sum(C offset W) or vector(0))`. `increase()`
//! would miss the events that create a series (a status code's first 5xx starts its series at
//! 1, and `increase` takes that first sample as the baseline), which at low traffic hides
//! exactly the errors that matter. Pods of one revision are started fresh, so counter resets
//! are rare; a reset under-counts.

use std::time::Duration;

use rollgate_crds::MetricSource;
use rollgate_crds::gate::{Check, PausePreset};

use super::selector::{SeriesSelector, escape};
use super::sources::{Errors, RequestSeries, Scope};
use super::template::{VARIABLES, validate_template, variables_in};

/// A check that cannot be turned into queries.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("check {check}: {reason}")]
pub struct QueryError {
    pub check: String,
    pub reason: String,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Bad {
    /// A query counting bad events (a template).
    Query(String),
    /// Bad = total − the histogram's bucket at the judged boundary, which is found in the
    /// series: the largest `le` at or below the limit.
    Histogram {
        /// The `_bucket` series' name.
        bucket: String,
        /// The limit, in seconds.
        limit_s: f64,
        /// Seconds per unit of `le`.
        le_unit_s: f64,
    },
}

/// The queries of one check, as templates with `$selector` and `$window`.
#[derive(Debug, Clone, PartialEq)]
pub struct CheckQueries {
    pub total: String,
    pub bad: Bad,
    /// Which series `$selector` selects.
    pub scope: Scope,
    /// What the counts are read from, in words, for status.
    pub source: String,
    /// The series whose absence means the source is wrong (the total's counter), when built in.
    pub counter: Option<String>,
    /// A runtime pause check (not requests).
    pub pause: bool,
    /// Custom templates use `$namespace` etc. instead of `$selector`.
    custom: bool,
}

pub fn for_check(check: &Check, source: &MetricSource) -> Result<CheckQueries, QueryError> {
    let err = |reason: String| QueryError { check: check.name.clone(), reason };
    if check.error_rate.is_some() {
        let s = RequestSeries::of(source);
        let bad = match &s.errors {
            Errors::StatusLabels(labels) => {
                labels.iter().map(|l| format!("{}{{$selector,{l}=~\"5..\"}}", s.requests)).collect::<Vec<_>>()
            }
            Errors::Counter { metric, matcher } => vec![format!("{metric}{{$selector,{matcher}}}")],
        };
        return Ok(CheckQueries {
            total: delta(&[format!("{}{{$selector}}", s.requests)]),
            bad: Bad::Query(delta(&bad)),
            scope: s.scope,
            source: format!("{}: {}", s.name, s.requests),
            counter: Some(s.requests.clone()),
            pause: false,
            custom: false,
        });
    }
    if let Some(l) = &check.latency {
        let s = RequestSeries::of(source);
        return Ok(histogram(&s.name, &s.histogram, l.max.as_secs_f64(), s.le_unit_s, s.scope, false));
    }
    if let Some(p) = &check.pause {
        let (name, base) = match p.preset {
            PausePreset::Refserver => ("refserver", "runtime_pause_seconds"),
            PausePreset::Go => ("go", "go_sched_pauses_total_gc_seconds"),
            PausePreset::Jvm => ("jvm", "jvm_gc_duration_seconds"),
        };
        return Ok(histogram(name, base, p.max.as_secs_f64(), 1.0, Scope::Pods, true));
    }
    if let Some(q) = &check.promql {
        validate_template(&q.bad).map_err(|r| err(format!("promql.bad: {r}")))?;
        validate_template(&q.total).map_err(|r| err(format!("promql.total: {r}")))?;
        return Ok(CheckQueries {
            total: q.total.clone(),
            bad: Bad::Query(q.bad.clone()),
            scope: Scope::Pods,
            source: "promql".into(),
            counter: None,
            pause: false,
            custom: true,
        });
    }
    Err(err("no check kind is set".into()))
}

fn histogram(
    name: &str,
    base: &str,
    limit_s: f64,
    le_unit_s: f64,
    scope: Scope,
    pause: bool,
) -> CheckQueries {
    CheckQueries {
        total: delta(&[format!("{base}_count{{$selector}}")]),
        bad: Bad::Histogram { bucket: format!("{base}_bucket"), limit_s, le_unit_s },
        scope,
        source: format!("{name}: {base}"),
        counter: Some(format!("{base}_count")),
        pause,
        custom: false,
    }
}

/// The change over `$window` of the sum of `series` (alternatives joined by `or`, so a series
/// matched by two of them counts once), series born inside the window counted from 0.
fn delta(series: &[String]) -> String {
    let now = series.join(" or ");
    let then = series.iter().map(|s| format!("{s} offset $window")).collect::<Vec<_>>().join(" or ");
    format!("clamp_min((sum({now}) or vector(0)) - (sum({then}) or vector(0)), 0)")
}

impl CheckQueries {
    pub fn total(&self, sel: &dyn SeriesSelector, window: Duration) -> String {
        self.render(&self.total, sel, window)
    }

    /// The bad-event count; for a histogram, `le` is the judged boundary as the series print it.
    pub fn bad_query(&self, sel: &dyn SeriesSelector, window: Duration, le: Option<&str>) -> String {
        match (&self.bad, le) {
            (Bad::Query(q), _) => self.render(q, sel, window),
            (Bad::Histogram { bucket, .. }, le) => {
                let le = escape(le.unwrap_or_default());
                self.render(&delta(&[format!("{bucket}{{$selector,le=\"{le}\"}}")]), sel, window)
            }
        }
    }

    /// For a histogram: each bucket's count over the window (events at or below its `le`), one
    /// series per boundary; a bucket born inside the window counts from 0.
    pub fn buckets(&self, sel: &dyn SeriesSelector, window: Duration) -> Option<String> {
        match &self.bad {
            Bad::Histogram { bucket, .. } => {
                let now = format!("sum by (le) ({bucket}{{$selector}})");
                let then = format!("sum by (le) ({bucket}{{$selector}} offset $window)");
                Some(self.render(&format!("clamp_min({now} - ({then} or {now} * 0), 0)"), sel, window))
            }
            Bad::Query(_) => None,
        }
    }

    /// For a histogram: one series per bucket boundary the selected series have.
    pub fn boundaries(&self, sel: &dyn SeriesSelector, window: Duration) -> Option<String> {
        match &self.bad {
            Bad::Histogram { bucket, .. } => {
                Some(self.render(&format!("count by (le) ({bucket}{{$selector}})"), sel, window))
            }
            Bad::Query(_) => None,
        }
    }

    /// The series `$selector` selects, for messages (`{namespace="shop",…}`).
    pub fn selector_text(&self, sel: &dyn SeriesSelector) -> String {
        format!("{{{}}}", sel.matchers_in(self.scope))
    }

    /// The `$variables` of a custom template that `sel` cannot fill.
    pub fn unfilled(&self, sel: &dyn SeriesSelector) -> Vec<&'static str> {
        if !self.custom {
            return Vec::new();
        }
        let bad = match &self.bad {
            Bad::Query(q) => q.as_str(),
            Bad::Histogram { .. } => "",
        };
        let used: Vec<String> = variables_in(&self.total).chain(variables_in(bad)).collect();
        VARIABLES
            .iter()
            .copied()
            .filter(|v| used.iter().any(|u| u == v) && sel.variable(v).is_none())
            .collect()
    }

    fn render(&self, template: &str, sel: &dyn SeriesSelector, window: Duration) -> String {
        let window = format!("{}s", window.as_secs().max(1));
        if self.custom {
            // `$namespace` before `$name`, which is its prefix.
            let mut out = template.to_string();
            for v in VARIABLES {
                if let Some(value) = sel.variable(v) {
                    out = out.replace(&format!("${v}"), &escape(&value));
                }
            }
            out.replace("$window", &window)
        } else {
            template.replace("$selector", &sel.matchers_in(self.scope)).replace("$window", &window)
        }
    }
}

/// The boundary a histogram check judges: the largest `le` at or below the limit, as printed
/// by the series, and its value in seconds. `None` when every boundary is above the limit.
pub fn judged_boundary(les: &[String], limit_s: f64, le_unit_s: f64) -> Option<(String, f64)> {
    les.iter()
        .filter_map(|le| {
            le.parse::<f64>().ok().filter(|v| v.is_finite()).map(|v| (le.clone(), v * le_unit_s))
        })
        // A bound printed as 0.3 is 0.30000000000000004 after scaling; allow for it.
        .filter(|(_, s)| *s <= limit_s * (1.0 + 1e-9))
        .max_by(|a, b| a.1.total_cmp(&b.1))
}
