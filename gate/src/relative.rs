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
    let pi = canary.total as f64 / (canary.total as f64 + stable.total as f64);
    let (bad_c, bad_s) = (canary.bad.min(canary.total) as f64, stable.bad.min(stable.total) as f64);
    let logs: Vec<f64> = RATIOS
        .iter()
        .map(|(r, weight)| {
            let theta = r * pi / (r * pi + 1.0 - pi);
            weight.ln() + bad_c * (theta / pi).ln() + bad_s * ((1.0 - theta) / (1.0 - pi)).ln()
        })
        .collect();
    let bad = bad_c + bad_s;
    Some(Comparison {
        log_e: log_sum_exp(&logs),
        bound: (1.0 / alpha.clamp(f64::MIN_POSITIVE, 1.0)).ln(),
        traffic_share: pi,
        bad_share: (bad > 0.0).then(|| bad_c / bad),
    })
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
}
