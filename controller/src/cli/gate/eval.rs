//! `rollgate gate eval`: judge live Prometheus series, for a pipeline step that is not a
//! rollout.

use std::time::{Duration, Instant};

use rollgate_gate::format::human;
use rollgate_gate::{Decision, Missing, Policy, StepClock, evaluate};

use super::render::{check_line, evaluation_json, word};
use super::{EvalArgs, Opened, open, usage};
use crate::cli::{Exit, Output};
use crate::metrics_provider::{self, SeriesSelector, Span};

pub(super) async fn run(a: EvalArgs) -> Exit {
    let Opened { gate, canary, stable, prometheus: provider } = match open(&a.source) {
        Ok(o) => o,
        Err(e) => return usage(e),
    };
    let total = a.duration.as_std();
    let min_healthy = gate.policy.min_healthy.as_std().min(total);
    let interval = gate.policy.interval.as_std();
    let started = Instant::now();
    loop {
        let elapsed = if a.lookback { total } else { started.elapsed().min(total) };
        let stable_sel = stable.as_ref().map(|s| s as &dyn SeriesSelector);
        let window = elapsed.max(Duration::from_secs(1));
        let span = Span { window, time: Some(k8s_openapi::jiff::Timestamp::now().as_second()) };
        let evidence = match metrics_provider::gather(&provider, &gate, &canary, stable_sel, span).await {
            Ok(e) => e,
            Err(e) => return usage(e.to_string()),
        };
        let clock = StepClock { elapsed, min_healthy, max_hold: total, next_weight: 100.0 };
        let evaluation = evaluate(&evidence, clock, Policy::from(&gate.policy));
        let last = a.lookback || elapsed >= total;
        match a.output {
            Output::Text => println!(
                "{:>7}  {:<18} {}",
                human(elapsed),
                word(&evaluation.decision),
                evaluation.decision.reason()
            ),
            Output::Json => println!("{}", evaluation_json(Some(elapsed.as_secs_f64()), None, &evaluation)),
        }
        // No metrics could be read at all: the gate could not judge (not an undecided verdict).
        let unreadable =
            !evidence.is_empty() && evidence.iter().all(|e| matches!(e.canary, Err(Missing::Unavailable(_))));
        let exit = match &evaluation.decision {
            Decision::StepUp(..) => Some(Exit::Pass),
            Decision::Rollback(..) => Some(Exit::Fail),
            // The gate cannot be computed from this source: a configuration error.
            Decision::Misconfigured(..) => Some(Exit::Usage),
            _ if last && unreadable => Some(Exit::Usage),
            Decision::Pause(..) => Some(Exit::Inconclusive),
            _ if last => Some(Exit::Inconclusive),
            _ => None,
        };
        if let Some(exit) = exit {
            if a.output == Output::Text {
                for c in &evaluation.checks {
                    println!("  {}", check_line(c));
                }
            }
            return exit;
        }
        let next = (elapsed + interval).min(total);
        tokio::time::sleep_until(tokio::time::Instant::from_std(started + next)).await;
    }
}
