//! Durations and shares as people read them, in status messages, events and the CLI.

use std::time::Duration;

/// `3m`, `2m30s`, `45s`.
pub fn human(d: Duration) -> String {
    let s = d.as_secs();
    match (s / 60, s % 60) {
        (0, s) => format!("{s}s"),
        (m, 0) => format!("{m}m"),
        (m, s) => format!("{m}m{s}s"),
    }
}

/// A share as a percentage with the precision small budgets need: `0 %`, `0.020 %`, `5.00 %`.
pub fn percent(x: f64) -> String {
    let p = x * 100.0;
    if p == 0.0 {
        "0 %".into()
    } else if p < 0.1 {
        format!("{p:.3} %")
    } else {
        format!("{p:.2} %")
    }
}

/// A duration as an estimate: `40 s`, `48 min`, `5.5 h`, `12 days`.
pub fn rough(d: Duration) -> String {
    let s = d.as_secs_f64();
    if s < 90.0 {
        format!("{s:.0} s")
    } else if s < 90.0 * 60.0 {
        format!("{:.0} min", s / 60.0)
    } else if s < 48.0 * 3600.0 {
        format!("{:.1} h", s / 3600.0)
    } else {
        format!("{:.0} days", s / 86_400.0)
    }
}

/// A multiple of a budget: `10`, `10.5`, `100`.
pub fn multiple(m: f64) -> String {
    let rounded = (m * 10.0).round() / 10.0;
    if rounded.fract() == 0.0 { format!("{rounded:.0}") } else { format!("{rounded:.1}") }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn human_durations() {
        assert_eq!(human(Duration::from_secs(45)), "45s");
        assert_eq!(human(Duration::from_secs(180)), "3m");
        assert_eq!(human(Duration::from_secs(150)), "2m30s");
    }

    #[test]
    fn estimates_are_rounded_to_what_they_can_mean() {
        assert_eq!(rough(Duration::from_secs(40)), "40 s");
        assert_eq!(rough(Duration::from_secs(48 * 60 + 20)), "48 min");
        assert_eq!(rough(Duration::from_secs(5 * 3600 + 1800)), "5.5 h");
        assert_eq!(rough(Duration::from_secs(12 * 86_400)), "12 days");
    }

    #[test]
    fn multiples_are_short() {
        assert_eq!(multiple(10.0), "10");
        assert_eq!(multiple(10.4999), "10.5");
        assert_eq!(multiple(100.0), "100");
    }

    #[test]
    fn percentages_keep_small_budgets_readable() {
        assert_eq!(percent(0.0), "0 %");
        assert_eq!(percent(0.0002), "0.020 %");
        assert_eq!(percent(0.05), "5.00 %");
    }
}
