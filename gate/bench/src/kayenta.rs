//! A Kayenta-style judge: the canary's metric compared with a baseline's (stable) by a
//! Mann-Whitney U test, as Kayenta's NetflixACAJudge does. Each 10 s of traffic is one sample
//! (the error ratio of that slice; a slice without requests is NaN and removed, Kayenta's
//! "remove" NaN strategy). Every 60 s the samples since the step began are judged: a canary
//! higher than the baseline at 98 % confidence (two-sided) is classified "High", the score of
//! the one metric is 0 and the canary is rolled back; a canary never found high is promoted
//! after `intervals` judgements. No samples on either side is NODATA: no verdict that interval.

use crate::traffic::Second;

/// Seconds of traffic per sample.
const SAMPLE: usize = 10;
/// Two-sided 98 %: the normal quantile at 0.99.
const Z_98: f64 = 2.326;

/// The error ratio of each `SAMPLE` seconds of `series[..end]` that had requests.
pub fn samples(series: &[Second], end: usize) -> Vec<f64> {
    series[..end.min(series.len())]
        .chunks(SAMPLE)
        .filter_map(|c| {
            let (bad, total) = c.iter().fold((0, 0), |(b, t), s| (b + s.bad, t + s.total));
            (total > 0).then(|| bad as f64 / total as f64)
        })
        .collect()
}

/// Whether `canary` is higher than `baseline` at 98 % confidence: the Mann-Whitney U statistic
/// by its normal approximation, with the variance corrected for ties and a continuity
/// correction. All values tied is no difference.
pub fn higher(canary: &[f64], baseline: &[f64]) -> bool {
    let (n1, n2) = (canary.len() as f64, baseline.len() as f64);
    if canary.is_empty() || baseline.is_empty() {
        return false;
    }
    let mut all: Vec<(f64, bool)> =
        canary.iter().map(|v| (*v, true)).chain(baseline.iter().map(|v| (*v, false))).collect();
    all.sort_by(|a, b| a.0.total_cmp(&b.0));
    let n = all.len();
    let (mut rank_sum, mut ties) = (0.0, 0.0);
    let mut i = 0;
    while i < n {
        let mut j = i;
        while j + 1 < n && all[j + 1].0 == all[i].0 {
            j += 1;
        }
        // Ranks i+1 ..= j+1 share their average.
        let rank = (i + j + 2) as f64 / 2.0;
        let t = (j - i + 1) as f64;
        ties += t * t * t - t;
        rank_sum += rank * all[i..=j].iter().filter(|x| x.1).count() as f64;
        i = j + 1;
    }
    let u = rank_sum - n1 * (n1 + 1.0) / 2.0;
    let total = n as f64;
    let variance = n1 * n2 / 12.0 * ((total + 1.0) - ties / (total * (total - 1.0)).max(1.0));
    if variance <= 0.0 {
        return false;
    }
    let z = (u - n1 * n2 / 2.0 - 0.5) / variance.sqrt();
    z > Z_98
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_clearly_higher_canary_is_high_and_equal_samples_are_not() {
        let baseline: Vec<f64> = (0..30).map(|i| f64::from(i % 3) * 0.001).collect();
        let canary: Vec<f64> = (0..30).map(|i| 0.01 + f64::from(i % 3) * 0.001).collect();
        assert!(higher(&canary, &baseline));
        assert!(!higher(&baseline, &canary), "lower is not higher");
        assert!(!higher(&baseline, &baseline));
        assert!(!higher(&[0.0; 20], &[0.0; 20]), "all tied");
        assert!(!higher(&[], &baseline));
    }

    #[test]
    fn slices_without_requests_are_removed() {
        let mut series = vec![Second { total: 0, bad: 0 }; 30];
        series[12] = Second { total: 4, bad: 1 };
        assert_eq!(samples(&series, 30), vec![0.25]);
        assert_eq!(samples(&series, 10), Vec::<f64>::new());
    }
}
