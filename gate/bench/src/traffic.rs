//! Simulated request streams: Poisson arrivals, each request bad with a fixed probability (a 5xx,
//! or a latency drawn from a log-normal distribution above the limit), counted per second.
//!
//! The generator is a fixed algorithm (xoshiro256**, seeded through splitmix64) so that a seed
//! gives the same streams on every machine and with every dependency version.

/// xoshiro256** (Blackman and Vigna): small, fast, good enough for simulation.
#[derive(Debug, Clone)]
pub struct Rng {
    s: [u64; 4],
}

impl Rng {
    pub fn seeded(seed: u64) -> Self {
        let mut x = seed;
        let mut next = || {
            // splitmix64
            x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = x;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^ (z >> 31)
        };
        Self { s: [next(), next(), next(), next()] }
    }

    pub fn next_u64(&mut self) -> u64 {
        let result = self.s[1].wrapping_mul(5).rotate_left(7).wrapping_mul(9);
        let t = self.s[1] << 17;
        self.s[2] ^= self.s[0];
        self.s[3] ^= self.s[1];
        self.s[1] ^= self.s[2];
        self.s[0] ^= self.s[3];
        self.s[2] ^= t;
        self.s[3] = self.s[3].rotate_left(45);
        result
    }

    /// Uniform in (0, 1].
    pub fn uniform(&mut self) -> f64 {
        ((self.next_u64() >> 11) + 1) as f64 / (1u64 << 53) as f64
    }

    /// Standard normal (Box–Muller).
    pub fn normal(&mut self) -> f64 {
        let (u, v) = (self.uniform(), self.uniform());
        (-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * v).cos()
    }

    /// Poisson with mean `lambda`: exact (Knuth) below 30, normal approximation above, where
    /// the two differ by less than the noise of the simulation.
    pub fn poisson(&mut self, lambda: f64) -> u64 {
        if lambda <= 0.0 {
            return 0;
        }
        if lambda < 30.0 {
            let limit = (-lambda).exp();
            let mut k = 0;
            let mut p = self.uniform();
            while p > limit {
                k += 1;
                p *= self.uniform();
            }
            return k;
        }
        (lambda + lambda.sqrt() * self.normal()).round().max(0.0) as u64
    }

    /// How many of `n` independent events with probability `p` happen: exact (one draw per
    /// event, or geometric gaps between events when they are rare), normal approximation only
    /// when both `n·p` and `n·(1−p)` are large.
    pub fn binomial(&mut self, n: u64, p: f64) -> u64 {
        if n == 0 || p <= 0.0 {
            return 0;
        }
        if p >= 1.0 {
            return n;
        }
        let mean = n as f64 * p;
        if n <= 64 {
            return (0..n).filter(|_| self.uniform() <= p).count() as u64;
        }
        if mean < 40.0 {
            // Gaps between successes are geometric.
            let log_q = (1.0 - p).ln();
            let mut position = 0u64;
            let mut k = 0;
            loop {
                let gap = (self.uniform().ln() / log_q).floor() as u64 + 1;
                position = position.saturating_add(gap);
                if position > n {
                    return k;
                }
                k += 1;
            }
        }
        let sd = (mean * (1.0 - p)).sqrt();
        (mean + sd * self.normal()).round().clamp(0.0, n as f64) as u64
    }

    /// How many of `n` latencies drawn from a log-normal distribution exceed `limit`. Drawn one
    /// by one for small `n`; above that, the count of a Bernoulli with the same exceedance
    /// probability has exactly the same distribution.
    pub fn slow(&mut self, n: u64, latency: LogNormal, limit: f64) -> u64 {
        if n <= 64 {
            return (0..n).filter(|_| latency.draw(self) > limit).count() as u64;
        }
        self.binomial(n, latency.exceedance(limit))
    }
}

/// A log-normal latency distribution, `exp(N(mu, sigma²))` seconds.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LogNormal {
    pub mu: f64,
    pub sigma: f64,
}

impl LogNormal {
    /// The distribution with spread `sigma` under which a share `share` of draws exceed `limit`.
    pub fn with_exceedance(limit: f64, share: f64, sigma: f64) -> Self {
        Self { mu: limit.ln() - sigma * normal_quantile(1.0 - share), sigma }
    }

    pub fn draw(&self, rng: &mut Rng) -> f64 {
        (self.mu + self.sigma * rng.normal()).exp()
    }

    pub fn exceedance(&self, limit: f64) -> f64 {
        1.0 - normal_cdf((limit.ln() - self.mu) / self.sigma)
    }
}

/// Standard normal CDF (Abramowitz–Stegun 7.1.26 erf, error below 1.5e-7).
pub fn normal_cdf(x: f64) -> f64 {
    let z = x.abs() / std::f64::consts::SQRT_2;
    let t = 1.0 / (1.0 + 0.327_591_1 * z);
    let poly = t
        * (0.254_829_592
            + t * (-0.284_496_736 + t * (1.421_413_741 + t * (-1.453_152_027 + t * 1.061_405_429))));
    let erf = 1.0 - poly * (-z * z).exp();
    if x >= 0.0 { 0.5 * (1.0 + erf) } else { 0.5 * (1.0 - erf) }
}

/// Inverse of `normal_cdf` by bisection (precise enough for choosing distributions).
pub fn normal_quantile(q: f64) -> f64 {
    let (mut lo, mut hi) = (-10.0, 10.0);
    for _ in 0..100 {
        let mid = (lo + hi) / 2.0;
        if normal_cdf(mid) < q {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    (lo + hi) / 2.0
}

/// What makes a request bad in a simulated stream.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum BadEvents {
    /// Each request fails with this probability.
    Errors(f64),
    /// Requests slower than `limit` seconds, latency drawn from the distribution.
    Slow { latency: LogNormal, limit: f64 },
}

/// Counts per second of one version's requests.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Second {
    pub total: u64,
    pub bad: u64,
}

/// `seconds` of traffic at `rate` requests per second.
pub fn stream(rng: &mut Rng, rate: f64, bad: BadEvents, seconds: usize) -> Vec<Second> {
    (0..seconds)
        .map(|_| {
            let total = rng.poisson(rate);
            let bad = match bad {
                BadEvents::Errors(p) => rng.binomial(total, p),
                BadEvents::Slow { latency, limit } => rng.slow(total, latency, limit),
            };
            Second { total, bad }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_seed_gives_the_same_numbers() {
        let a: Vec<u64> = (0..5).scan(Rng::seeded(7), |r, _| Some(r.next_u64())).collect();
        let b: Vec<u64> = (0..5).scan(Rng::seeded(7), |r, _| Some(r.next_u64())).collect();
        let c: Vec<u64> = (0..5).scan(Rng::seeded(8), |r, _| Some(r.next_u64())).collect();
        assert_eq!(a, b);
        assert_ne!(a, c);
    }

    fn mean_var(xs: &[u64]) -> (f64, f64) {
        let n = xs.len() as f64;
        let m = xs.iter().sum::<u64>() as f64 / n;
        let v = xs.iter().map(|x| (*x as f64 - m).powi(2)).sum::<f64>() / n;
        (m, v)
    }

    #[test]
    fn poisson_has_its_mean_and_variance() {
        let mut r = Rng::seeded(1);
        for lambda in [0.1, 5.0, 50.0, 950.0] {
            let xs: Vec<u64> = (0..20_000).map(|_| r.poisson(lambda)).collect();
            let (m, v) = mean_var(&xs);
            assert!((m - lambda).abs() < 0.05 * lambda.max(1.0), "lambda {lambda}: mean {m}");
            assert!((v - lambda).abs() < 0.1 * lambda.max(1.0), "lambda {lambda}: variance {v}");
        }
    }

    #[test]
    fn binomial_has_its_mean_in_every_regime() {
        let mut r = Rng::seeded(2);
        for (n, p) in [(10, 0.3), (1000, 0.0002), (5000, 0.01), (5000, 0.5)] {
            let xs: Vec<u64> = (0..20_000).map(|_| r.binomial(n, p)).collect();
            let (m, _) = mean_var(&xs);
            let expected = n as f64 * p;
            assert!((m - expected).abs() < 0.05 * expected.max(1.0), "n {n} p {p}: mean {m}");
        }
    }

    #[test]
    fn the_latency_distribution_exceeds_its_limit_as_asked() {
        let d = LogNormal::with_exceedance(0.3, 0.05, 0.6);
        assert!((d.exceedance(0.3) - 0.05).abs() < 1e-6);
        let mut r = Rng::seeded(3);
        let slow = (0..50_000).filter(|_| d.draw(&mut r) > 0.3).count() as f64 / 50_000.0;
        assert!((slow - 0.05).abs() < 0.005, "{slow}");
    }
}
