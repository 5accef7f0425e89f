use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use rollgate_crds::rollout::Decision;
use rollgate_crds::{RolloutSpec, RolloutStatus};

use super::*;
use crate::fixtures::RolloutSpecExt;

const NOW: i64 = 1_800_000_000;

fn at(secs_ago: i64) -> Time {
    Time(Timestamp::from_second(NOW - secs_ago).unwrap_or(Timestamp::UNIX_EPOCH))
}

fn now() -> Timestamp {
    at(0).0
}

/// A Rollout at generation 2 with `status` as the controller last wrote it for `observed`.
fn rollout(status: RolloutStatus, observed: i64) -> Rollout {
    let mut ro = Rollout::new("web", RolloutSpec::test());
    ro.metadata.namespace = Some("shop".into());
    ro.metadata.generation = Some(2);
    ro.status = Some(RolloutStatus { observed_generation: Some(observed), ..status });
    ro
}

fn progressing(step: i32) -> RolloutStatus {
    RolloutStatus {
        phase: Some(Phase::Progressing),
        current_step: Some(step),
        canary_weight: [1, 5, 100][step as usize],
        step_started_at: Some(at(30)),
        canary_revision: Some("c2".into()),
        stable_revision: Some("s1".into()),
        ..Default::default()
    }
}

fn phase(p: Phase, verdict: Option<Verdict>) -> RolloutStatus {
    RolloutStatus { phase: Some(p), verdict, ..Default::default() }
}

#[test]
fn a_verdict_for_an_older_spec_is_not_waited_for() {
    // Applied a new template (generation 2); the status still says the last one was promoted.
    let stale = rollout(phase(Phase::Promoted, Some(Verdict::Pass)), 1);
    for want in [WaitFor::Verdict, WaitFor::Promoted, WaitFor::Step(1)] {
        assert_eq!(waited(&stale, want), Waited::Pending, "{want:?}");
    }
    assert!(!view(&stale).up_to_date);
}

#[test]
fn outcomes_map_to_exit_codes() {
    let cases = [
        (phase(Phase::Promoted, Some(Verdict::Pass)), WaitFor::Promoted, Some(Exit::Pass)),
        (phase(Phase::RolledBack, Some(Verdict::Fail)), WaitFor::Promoted, Some(Exit::Fail)),
        (phase(Phase::Failed, None), WaitFor::Verdict, Some(Exit::Fail)),
        (phase(Phase::Paused, None), WaitFor::Promoted, Some(Exit::Inconclusive)),
        (phase(Phase::Paused, None), WaitFor::Step(3), Some(Exit::Inconclusive)),
        // The last step passed: the verdict is in before the promotion completes.
        (phase(Phase::Progressing, Some(Verdict::Pass)), WaitFor::Verdict, Some(Exit::Pass)),
        (phase(Phase::Progressing, Some(Verdict::Pass)), WaitFor::Promoted, None),
        (progressing(1), WaitFor::Step(2), Some(Exit::Pass)),
        (progressing(1), WaitFor::Step(3), None),
        (progressing(1), WaitFor::Verdict, None),
        (RolloutStatus { step_started_at: None, ..progressing(2) }, WaitFor::Step(3), None),
    ];
    for (status, want, exit) in cases {
        let ro = rollout(status.clone(), 2);
        assert_eq!(waited(&ro, want).exit(), exit, "{want:?} on {status:?}");
    }
    assert_eq!(Exit::Timeout as u8, 2);
    assert_eq!(Exit::Usage as u8, 4);
}

#[test]
fn wait_targets_parse() {
    assert_eq!("verdict".parse(), Ok(WaitFor::Verdict));
    assert_eq!("promoted".parse(), Ok(WaitFor::Promoted));
    assert_eq!("step=2".parse(), Ok(WaitFor::Step(2)));
    for bad in ["step=0", "step=x", "done", ""] {
        assert!(bad.parse::<WaitFor>().is_err(), "{bad}");
    }
}

fn pending_check() -> CheckStatus {
    CheckStatus {
        name: "error-rate".into(),
        result: CheckResult::Pending,
        value: Some(0.0),
        threshold: 0.0002,
        bad: 0,
        total: 312,
        needed: Some(1500),
        estimated_seconds: Some(2880),
        statistic: None,
        reason:
            "waiting for evidence: 312 of about 1500 requests; 0 of 312 requests bad (0 %), budget 0.020 %"
                .into(),
        source: None,
        unit: Some("requests".into()),
    }
}

#[test]
fn status_text_marks_the_current_step_and_shows_evidence() {
    let mut status = progressing(1);
    let mut check = pending_check();
    check.source = Some("otel: http_server_request_duration_seconds_count".into());
    status.checks = vec![check];
    status.history = (0..8)
        .map(|i| Decision {
            time: at(80 - i * 10),
            action: rollgate_crds::rollout::HistoryAction::StepUp,
            weight: 1,
            reason: format!("decision {i}"),
        })
        .collect();
    let ro = rollout(status, 2);
    let plain = render(&view(&ro), false, now());
    assert!(plain.starts_with("rollout shop/web: Progressing, canary weight 5 %, step 2 of 3\n"), "{plain}");
    assert!(plain.contains("1 % done  →  [5 % now]  →  100 %"), "{plain}");
    assert!(plain.contains("evidence: 312 of about 1500 requests, ≈ 48 min"), "{plain}");
    assert!(plain.contains("reads otel: http_server_request_duration_seconds_count\n"), "{plain}");
    assert!(!plain.contains('#'), "no bars when not a terminal:\n{plain}");
    assert!(!plain.contains("decision 2") && plain.contains("decision 3") && plain.contains("decision 7"));
    assert!(plain.contains("10s ago"), "{plain}");
    assert!(plain.contains("verdict    none yet"));
    let tty = render(&view(&ro), true, now());
    assert!(tty.contains("[#####-------------------] 312 of about 1500 requests"), "{tty}");
}

#[test]
fn status_shows_the_forecast_of_the_current_step_only() {
    let forecast = rollgate_crds::rollout::StepForecast {
        step: 1,
        estimated_seconds: Some(540),
        checks: vec![],
        message: "at 5 %: error-rate needs about 2650 more requests, ≈ 9 min at 5.0 requests/s".into(),
    };
    let mut status = progressing(1);
    status.forecast = Some(forecast.clone());
    let plain = render(&view(&rollout(status, 2)), false, now());
    assert!(
        plain.contains(
            "  forecast   at 5 %: error-rate needs about 2650 more requests, ≈ 9 min at 5.0 requests/s"
        ),
        "{plain}"
    );
    // Once the step has been evaluated its own estimates say more, and the forecast goes.
    let mut evaluated = progressing(1);
    evaluated.forecast = Some(forecast.clone());
    evaluated.last_evaluated_at = Some(at(5));
    assert_eq!(view(&rollout(evaluated, 2)).forecast, None);
    // A forecast of another step, or of a rollout that ended, is not shown.
    let mut later = progressing(2);
    later.forecast = Some(forecast.clone());
    assert_eq!(view(&rollout(later, 2)).forecast, None);
    let mut ended = phase(Phase::RolledBack, Some(Verdict::Fail));
    ended.current_step = Some(1);
    ended.forecast = Some(forecast);
    assert!(!render(&view(&rollout(ended, 2)), false, now()).contains("forecast"));
}

#[test]
fn get_lists_rows_in_columns() {
    let ro = rollout(phase(Phase::Promoted, Some(Verdict::Pass)), 2);
    let t = table(["NAMESPACE", "NAME", "PHASE", "WEIGHT", "VERDICT", "AGE"], &[row(&ro, now())]);
    let lines: Vec<&str> = t.lines().collect();
    assert_eq!(lines[0], "NAMESPACE   NAME   PHASE      WEIGHT   VERDICT   AGE");
    assert_eq!(lines[1], "shop        web    Promoted   0 %      Pass      –");
}

#[test]
fn a_wait_prints_a_line_per_transition_and_a_heartbeat_with_the_evidence() {
    let mut status = progressing(1);
    status.message = Some("waiting for evidence".into());
    status.checks = vec![pending_check()];
    let ro = rollout(status.clone(), 2);
    let line = transition_line(&view(&ro));
    assert_eq!(line, "Progressing, step 2 of 3, canary weight 5 %: waiting for evidence");
    let beat = heartbeat_line(&view(&ro));
    assert_eq!(
        beat,
        "still Progressing, step 2 of 3, canary weight 5 %; error-rate 312 of about 1500 requests, ≈ 48 min"
    );
    // A decided check is not listed; the same state is the same line.
    status.checks[0].needed = None;
    let ro2 = rollout(status, 2);
    assert_eq!(heartbeat_line(&view(&ro2)), "still Progressing, step 2 of 3, canary weight 5 %");
    assert_eq!(transition_line(&view(&ro2)), line);
}
