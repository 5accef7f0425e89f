//! `rollgate gate record`: a replay file from Prometheus for a past interval.

use std::time::Duration;

use k8s_openapi::jiff::Timestamp;
use rollgate_gate::Missing;
use rollgate_gate::replay::{CountPair, Sample, SampleCounts, Series};

use super::{MAX_SAMPLES, Opened, RecordArgs, open, usage};
use crate::cli::Exit;
use crate::metrics_provider::{self, SeriesSelector, Span};

fn timestamp(flag: &str, text: &str) -> Result<Timestamp, String> {
    text.parse::<Timestamp>().map_err(|e| format!("{flag}: {text:?} is not an RFC 3339 time ({e})"))
}

pub(super) async fn run(a: RecordArgs) -> Exit {
    match record_series(&a).await {
        Ok(series) => {
            let mut out = String::from("{\"samples\": [\n");
            for (i, sample) in series.samples.iter().enumerate() {
                let line = serde_json::to_string(sample).unwrap_or_default();
                out.push_str(&format!("  {line}{}\n", if i + 1 < series.samples.len() { "," } else { "" }));
            }
            out.push_str("]}\n");
            print!("{out}");
            Exit::Pass
        }
        Err(e) => usage(e),
    }
}

async fn record_series(a: &RecordArgs) -> Result<Series, String> {
    let Opened { gate, canary, stable, prometheus } = open(&a.source)?;
    let to = match &a.to {
        Some(t) => timestamp("--to", t)?,
        None => Timestamp::now(),
    };
    let from = match (&a.from, a.since) {
        (Some(f), _) => timestamp("--from", f)?,
        (None, Some(since)) => to
            .checked_sub(
                k8s_openapi::jiff::SignedDuration::try_from(since.as_std())
                    .map_err(|e| format!("--since: {e}"))?,
            )
            .map_err(|e| format!("--since: {e}"))?,
        (None, None) => return Err("--from or --since: one is needed".into()),
    };
    let span = to.as_second() - from.as_second();
    if span <= 0 {
        return Err(format!("--from: {from} is not before --to {to}"));
    }
    let every = a.every.as_std().as_secs().max(1);
    let samples = span as u64 / every;
    if samples > MAX_SAMPLES {
        return Err(format!(
            "--every: {samples} samples over {span}s; at most {MAX_SAMPLES} (use a longer --every)"
        ));
    }
    let zero = SampleCounts { canary: CountPair { bad: 0, total: 0 }, stable: None };
    let checks = gate.effective_checks();
    let names = checks.iter().map(|c| (c.name.clone(), zero));
    let mut series = Series { samples: vec![Sample { at: 0.0, checks: names.collect() }] };
    for i in 1..=samples {
        let elapsed = i * every;
        let span =
            Span { window: Duration::from_secs(elapsed), time: Some(from.as_second() + elapsed as i64) };
        let stable_sel = stable.as_ref().map(|s| s as &dyn SeriesSelector);
        let evidence = metrics_provider::gather(&prometheus, &gate, &canary, stable_sel, span)
            .await
            .map_err(|e| e.to_string())?;
        let mut checks = std::collections::BTreeMap::new();
        for e in evidence {
            match e.canary {
                Ok(c) => {
                    let pair = |c: rollgate_gate::Counts| CountPair { bad: c.bad, total: c.total };
                    let counts = SampleCounts { canary: pair(c), stable: e.stable.map(pair) };
                    checks.insert(e.spec.name, counts);
                }
                // Left out: the replay reads a missing check as "metrics unavailable" then.
                Err(Missing::Unavailable(why)) if i == 1 => {
                    return Err(format!("reading {} from {}: {why}", e.spec.name, gate.prometheus.address));
                }
                Err(_) => {}
            }
        }
        series.samples.push(Sample { at: elapsed as f64, checks });
    }
    Ok(series)
}
