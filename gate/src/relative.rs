//! Canary against stable: is the canary's share of bad events larger than its share of
//! traffic? A two-sample test that stays valid however often it is looked at.
//!
//! Over the same interval the canary answered `n_c` events and stable `n_s`. If both versions
//! have the same bad-event rate, each bad event (of either version) is the canary's with
//! probability `π = n_c / (n_c + n_s)`: the canary's share of traffic, whatever the rate is and
//! however it moves. A day's traffic curve, an error burst that hits both versions, a node that
//! stalls both: these change how many bad events there are, not whose they are. Conditional on
//! the bad events, the canary's count is binomial with `π`; if the canary's rate is `r` times
//! stable's, its share of bad events is `θ_r = rπ / (rπ + 1 − π)`. The likelihood ratio of
//! `θ_r` against `π` is a test martingale in the bad events, and so is its weighted average over
//! `r` in [`RATIOS`] (a mixture, Netflix's "conditional multinomial" on two arms). By Ville's
//! inequality it ever reaches `1/α` with probability at most `α` when the rates are equal: the
//! canary is then called worse than stable, at any evaluation.
//!
//! For a histogram check (latency, pauses) the comparison is over the whole distribution: at
//! every bucket boundary `b` the events slower than `b` are bad events of their own, and each
//! boundary's likelihood ratio is a test martingale when both versions have the same
//! distribution (an event's version is independent of how slow it was, so betting on its
//! version after seeing its duration is fair). The average over the boundaries of test
//! martingales on the same events, with weights fixed in advance (half on the check's limit,
//! half over the histogram's boundaries), is one as well, so the same bound holds for the whole
//! histogram; a canary slower anywhere (its median, not only past the SLO's limit) shows it
//! with the many events below the tail instead of waiting for the few past it.
//!
//! Assumed: within the interval the canary's share of traffic is constant (one step, one
//! weight) and a bad event's version does not depend on the other bad events (a burst shared by
//! both versions is fine; a retry storm of one version's clients is not: its events count as
//! many).

use crate::sprt::Counts;

/// How many times stable's rate the mixture's alternatives put the canary's, and the weight of
/// each: half on the gross regression, where a fast verdict saves the most (one bad event fewer
/// than equal weights need to convict a 100× canary).
pub const RATIOS: [(f64, f64); 3] = [(2.0, 0.25), (10.0, 0.25), (100.0, 0.5)];

/// The canary against stable over one interval.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Comparison {
    /// ln of the mixture likelihood ratio (the e-value) that the canary's rate is above stable's.
    pub log_e: f64,
    /// ln(1/α): reaching it calls the canary worse than stable.
    pub bound: f64,
    /// The canary's share of the events of both versions.
    pub traffic_share: f64,
    /// The canary's share of the bad events of both; `None` without any.
    pub bad_share: Option<f64>,
    /// Compared over the whole histogram: the boundary (seconds) where the evidence that the
    /// canary is slower is strongest.
    pub strongest_past_s: Option<f64>,
}

/// Events slower than one bucket boundary, over the interval, for both versions.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Slower {
    /// The boundary, in seconds.
    pub bound_s: f64,
    pub canary: u64,
    pub stable: u64,
}

impl Comparison {
    /// Evidence that the canary's rate is above stable's.
    pub fn worse(&self) -> bool {
        self.log_e >= self.bound
    }
}

/// The comparison of `canary` with `stable` at level `alpha`; `None` when either answered
/// nothing (there is no share to compare with).
pub fn compare(canary: Counts, stable: Counts, alpha: f64) -> Option<Comparison> {
    if canary.total == 0 || stable.total == 0 {
        return None;
    }
    let pi = share(canary, stable);
    let (bad_c, bad_s) = (canary.bad.min(canary.total), stable.bad.min(stable.total));
    let bad = (bad_c + bad_s) as f64;
    Some(Comparison {
        log_e: log_e(pi, bad_c, bad_s),
        bound: bound(alpha),
        traffic_share: pi,
        bad_share: (bad > 0.0).then(|| bad_c as f64 / bad),
        strongest_past_s: None,
    })
}

/// The comparison over the whole histogram: `slower` holds, for every bucket boundary the
/// histogram has (a set fixed by the app, not chosen from the counts), the events of each
/// version slower than it; `canary` and `stable` the events past the check's own limit. The
/// e-value puts half its weight on the limit (a canary worse only in the tail keeps nearly all
/// its evidence) and spreads the other half evenly over the boundaries. Without any boundary
/// it is `compare`.
pub fn compare_distributions(
    canary: Counts,
    stable: Counts,
    slower: &[Slower],
    alpha: f64,
) -> Option<Comparison> {
    let at_limit = compare(canary, stable, alpha)?;
    if slower.is_empty() {
        return Some(at_limit);
    }
    let pi = at_limit.traffic_share;
    let per_boundary: Vec<(f64, f64)> = slower
        .iter()
        .map(|b| (log_e(pi, b.canary.min(canary.total), b.stable.min(stable.total)), b.bound_s))
        .collect();
    let logs: Vec<f64> = per_boundary.iter().map(|(l, _)| *l).collect();
    let body = log_sum_exp(&logs) - (logs.len() as f64).ln();
    // Named only where there is evidence against equal distributions (an e-value above 1).
    let strongest = per_boundary
        .iter()
        .copied()
        .filter(|(l, _)| *l > 0.0)
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, s)| s);
    Some(Comparison {
        log_e: log_sum_exp(&[at_limit.log_e, body]) - std::f64::consts::LN_2,
        strongest_past_s: strongest,
        ..at_limit
    })
}

fn share(canary: Counts, stable: Counts) -> f64 {
    canary.total as f64 / (canary.total as f64 + stable.total as f64)
}

fn bound(alpha: f64) -> f64 {
    (1.0 / alpha.clamp(f64::MIN_POSITIVE, 1.0)).ln()
}

/// ln of the mixture likelihood ratio for `bad_c` and `bad_s` bad events at traffic share `pi`.
fn log_e(pi: f64, bad_c: u64, bad_s: u64) -> f64 {
    let (bad_c, bad_s) = (bad_c as f64, bad_s as f64);
    let logs: Vec<f64> = RATIOS
        .iter()
        .map(|(r, weight)| {
            let theta = r * pi / (r * pi + 1.0 - pi);
            weight.ln() + bad_c * (theta / pi).ln() + bad_s * ((1.0 - theta) / (1.0 - pi)).ln()
        })
        .collect();
    log_sum_exp(&logs)
}

/// ln of the sum of the exponentials, without overflow.
fn log_sum_exp(logs: &[f64]) -> f64 {
    let max = logs.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    if !max.is_finite() {
        return max;
    }
    max + logs.iter().map(|l| (l - max).exp()).sum::<f64>().ln()
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALPHA: f64 = 0.01;

    fn counts(bad: u64, total: u64) -> Counts {
        Counts { bad, total }
    }

    #[test]
    fn bad_events_in_proportion_to_traffic_are_no_evidence() {
        // 1 % of the traffic, 1 % of the bad events.
        let c = compare(counts(10, 10_000), counts(990, 990_000), ALPHA).expect("both answered");
        assert!(!c.worse(), "{c:?}");
        assert!(c.log_e < 0.0, "{c:?}");
        assert!((c.traffic_share - 0.01).abs() < 1e-9);
        assert_eq!(c.bad_share, Some(0.01));
    }

    #[test]
    fn a_canary_with_half_the_bad_events_at_one_percent_of_traffic_is_worse() {
        let c = compare(counts(5, 1000), counts(5, 99_000), ALPHA).expect("both answered");
        assert!(c.worse(), "{c:?}");
    }

    #[test]
    fn a_shared_burst_does_not_make_the_canary_worse() {
        // Both versions at 50 times their usual rate: the shares do not move.
        let c = compare(counts(50, 1000), counts(4950, 99_000), ALPHA).expect("both answered");
        assert!(!c.worse(), "{c:?}");
    }

    #[test]
    fn a_side_without_events_compares_nothing() {
        assert_eq!(compare(counts(0, 0), counts(3, 100), ALPHA), None);
        assert_eq!(compare(counts(3, 100), counts(0, 0), ALPHA), None);
    }

    #[test]
    fn no_bad_events_at_all_is_an_e_value_of_one() {
        let c = compare(counts(0, 100), counts(0, 9900), ALPHA).expect("both answered");
        assert!(c.log_e.abs() < 1e-12 && c.bad_share.is_none(), "{c:?}");
    }

    #[test]
    fn under_equal_rates_the_test_rejects_at_most_alpha_of_the_time_however_often_it_is_looked_at() {
        // 4 000 A/A runs, each looked at after every one of 400 bad events: the canary's with
        // probability π. Ville's inequality bounds the share that ever reaches the bound.
        let mut state = 0x2545_F491_4F6C_DD1Du64;
        let mut uniform = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 11) as f64 / (1u64 << 53) as f64
        };
        let pi = 0.05;
        let runs = 4000;
        let mut rejected = 0;
        for _ in 0..runs {
            let (mut c, mut s) = (counts(0, 5_000), counts(0, 95_000));
            for _ in 0..400 {
                if uniform() < pi {
                    c.bad += 1
                } else {
                    s.bad += 1
                }
                if compare(c, s, ALPHA).is_some_and(|x| x.worse()) {
                    rejected += 1;
                    break;
                }
            }
        }
        assert!(rejected as f64 / runs as f64 <= ALPHA, "{rejected} of {runs}");
    }

    /// xorshift: a uniform number in [0, 1).
    fn rng(seed: u64) -> impl FnMut() -> f64 {
        let mut state = seed;
        move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 11) as f64 / (1u64 << 53) as f64
        }
    }

    /// Boundaries of a latency histogram, seconds.
    const BOUNDS: [f64; 8] = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0];

    /// Adds one request of `version` lasting `d` seconds: every boundary below `d` counts it slow.
    fn record(slower: &mut [Slower], canary: bool, d: f64) {
        for b in slower.iter_mut().filter(|b| d > b.bound_s) {
            if canary { b.canary += 1 } else { b.stable += 1 }
        }
    }

    fn histogram() -> Vec<Slower> {
        BOUNDS.iter().map(|b| Slower { bound_s: *b, canary: 0, stable: 0 }).collect()
    }

    /// A latency with a median of `median` seconds and a long tail (log-normal-like).
    fn latency(uniform: &mut impl FnMut() -> f64, median: f64) -> f64 {
        let u: f64 = uniform().max(1e-12);
        median * (-(u.ln())).powf(1.5) * 1.5
    }

    #[test]
    fn over_the_whole_histogram_equal_distributions_reject_at_most_alpha_at_every_look() {
        // 1 000 A/A runs of 20 000 requests at 5 % canary traffic, looked at every 500.
        let mut uniform = rng(0x9E37_79B9_7F4A_7C15);
        let (runs, mut rejected) = (1000, 0);
        for _ in 0..runs {
            let mut slower = histogram();
            let (mut c, mut s) = (counts(0, 0), counts(0, 0));
            for i in 1..=20_000 {
                let canary = uniform() < 0.05;
                let d = latency(&mut uniform, 0.02);
                record(&mut slower, canary, d);
                let side = if canary { &mut c } else { &mut s };
                side.total += 1;
                side.bad += u64::from(d > 0.25);
                if i % 500 == 0 && compare_distributions(c, s, &slower, ALPHA).is_some_and(|x| x.worse()) {
                    rejected += 1;
                    break;
                }
            }
        }
        assert!(rejected as f64 / runs as f64 <= ALPHA, "{rejected} of {runs}");
    }

    #[test]
    fn a_canary_slower_throughout_is_shown_worse_long_before_its_tail_alone_shows_it() {
        // The canary adds 15 ms to every request (a new middleware): plain in the body of the
        // distribution, faint past the 250 ms limit.
        let mut uniform = rng(7);
        let mut slower = histogram();
        let (mut c, mut s) = (counts(0, 0), counts(0, 0));
        let (mut whole_at, mut tail_at) = (None, None);
        for i in 1..=100_000u64 {
            let canary = uniform() < 0.05;
            let d = latency(&mut uniform, 0.02) + if canary { 0.015 } else { 0.0 };
            record(&mut slower, canary, d);
            let side = if canary { &mut c } else { &mut s };
            side.total += 1;
            side.bad += u64::from(d > 0.25);
            if i % 100 == 0 {
                if whole_at.is_none()
                    && compare_distributions(c, s, &slower, ALPHA).is_some_and(|x| x.worse())
                {
                    whole_at = Some(i);
                }
                if tail_at.is_none() && compare(c, s, ALPHA).is_some_and(|x| x.worse()) {
                    tail_at = Some(i);
                }
            }
        }
        let whole = whole_at.expect("the whole histogram shows it");
        assert!(
            tail_at.is_none_or(|t| whole * 3 <= t),
            "whole histogram at {whole}, the tail at {tail_at:?}"
        );
        let shown = compare_distributions(c, s, &slower, ALPHA).expect("compared");
        assert!(shown.strongest_past_s.is_some_and(|b| b < 0.25), "{shown:?}");
    }

    #[test]
    fn a_histogram_without_boundaries_is_compared_at_the_limit() {
        let at_limit = compare(counts(5, 1000), counts(5, 99_000), ALPHA);
        assert_eq!(compare_distributions(counts(5, 1000), counts(5, 99_000), &[], ALPHA), at_limit);
        assert_eq!(compare_distributions(counts(0, 0), counts(5, 99_000), &histogram(), ALPHA), None);
    }
}
