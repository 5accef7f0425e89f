//! Whether the data plane splits traffic as the route asks: the canary's share of the requests
//! over a step, from the counts the gate already read for both versions, against the route's
//! weight. A gateway honours weights only on average (Traefik's weighted round-robin restarts on
//! every configuration reload, and then starves a 1 % backend for its first hundred requests),
//! so the split asked for is not always the split that happened; rollgate says when.

use crate::format::percent;

/// Requests each version answered over the step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Traffic {
    pub canary: u64,
    pub stable: u64,
}

/// What the observed split says.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Split {
    /// Nothing to compare yet: a weight of 0 or 100, or fewer requests than a verdict needs.
    Unknown,
    /// Within what chance explains, or not far enough off to matter.
    Matches { observed: f64 },
    /// Far off, and not by chance.
    Diverged { weight: i32, canary: u64, total: u64, expected: f64 },
}

/// The canary must have been due this many requests before its share is judged.
pub const MIN_EXPECTED: f64 = 20.0;
/// Nor is it judged in a step's first seconds: the route is written when the step's clock
/// starts, and a gateway applies it a moment later (Traefik throttles its provider events for
/// 2 s), so early counts still hold the previous weight's split.
pub const SETTLE: std::time::Duration = std::time::Duration::from_secs(10);
/// Far off means both: off by more than this share of what was due (it matters), and by more
/// than `SIGMAS` standard deviations of binomial sampling (it is not chance; repeated every
/// evaluation, a 4-sigma rule still almost never fires on a gateway that splits right).
const RELATIVE: f64 = 0.5;
const SIGMAS: f64 = 4.0;

/// Judges the canary's share of `traffic` against a route weight of `weight` percent.
pub fn judge(weight: i32, traffic: Traffic) -> Split {
    if weight <= 0 || weight >= 100 {
        return Split::Unknown;
    }
    let total = traffic.canary.saturating_add(traffic.stable);
    let (n, p) = (total as f64, f64::from(weight) / 100.0);
    let expected = n * p;
    if expected < MIN_EXPECTED {
        return Split::Unknown;
    }
    let off = (traffic.canary as f64 - expected).abs();
    let sd = (n * p * (1.0 - p)).sqrt();
    if off > RELATIVE * expected && off > SIGMAS * sd {
        Split::Diverged { weight, canary: traffic.canary, total, expected }
    } else {
        Split::Matches { observed: traffic.canary as f64 / n }
    }
}

// === impl Split ===

impl Split {
    /// `the canary answered 3 of 2700 requests (0.11 %) at weight 1 %, where about 27 were due`.
    pub fn describe(&self) -> Option<String> {
        match *self {
            Split::Diverged { weight, canary, total, expected } => Some(format!(
                "the canary answered {canary} of {total} requests ({}) at weight {weight} %, where about {expected:.0} were due",
                percent(canary as f64 / total.max(1) as f64)
            )),
            _ => None,
        }
    }

    /// The canary's observed share of requests per second of all traffic, when it was judged:
    /// what time estimates should use instead of the weight.
    pub fn observed_share(&self) -> Option<f64> {
        match *self {
            Split::Matches { observed } => Some(observed),
            Split::Diverged { canary, total, .. } => Some(canary as f64 / total.max(1) as f64),
            Split::Unknown => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_starved_one_percent_backend_is_found() {
        // Seen beside Flagger: 3 of about 2700 requests where 27 were due.
        let split = judge(1, Traffic { canary: 3, stable: 2697 });
        assert!(matches!(split, Split::Diverged { canary: 3, total: 2700, .. }), "{split:?}");
        assert_eq!(
            split.describe().as_deref(),
            Some("the canary answered 3 of 2700 requests (0.11 %) at weight 1 %, where about 27 were due")
        );
    }

    #[test]
    fn chance_and_small_counts_are_not_divergence() {
        // 27 due, 18 seen: two standard deviations, chance.
        assert!(matches!(judge(1, Traffic { canary: 18, stable: 2682 }), Split::Matches { .. }));
        // Only 10 due: too early to say.
        assert_eq!(judge(1, Traffic { canary: 0, stable: 1000 }), Split::Unknown);
        assert_eq!(judge(0, Traffic { canary: 0, stable: 100_000 }), Split::Unknown);
        assert_eq!(judge(100, Traffic { canary: 5, stable: 0 }), Split::Unknown);
    }

    #[test]
    fn too_much_traffic_is_divergence_too() {
        let split = judge(5, Traffic { canary: 300, stable: 700 });
        assert!(matches!(split, Split::Diverged { .. }), "{split:?}");
        assert_eq!(split.observed_share(), Some(0.3));
    }

    #[test]
    fn a_gateway_that_splits_right_is_almost_never_flagged() {
        // Binomial sampling at 1 %, judged at every size from 2 000 to 20 000 requests.
        let mut state: u64 = 20261202;
        let mut uniform = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 11) as f64 / (1u64 << 53) as f64
        };
        let mut flagged = 0;
        for _ in 0..200 {
            let mut canary = 0;
            for n in 1..=20_000u64 {
                if uniform() < 0.01 {
                    canary += 1;
                }
                if n >= 2_000
                    && n % 100 == 0
                    && matches!(judge(1, Traffic { canary, stable: n - canary }), Split::Diverged { .. })
                {
                    flagged += 1;
                    break;
                }
            }
        }
        assert!(flagged <= 1, "{flagged} of 200 honest runs flagged");
    }
}
