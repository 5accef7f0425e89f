//! Metrics written by every request, sharded by thread.
//!
//! prometheus-client's `Histogram` takes a mutex per observation and its `Gauge` is one atomic:
//! with every runtime thread updating them for every request, their cache lines move between
//! cores on each request. Here each thread writes its own cache-line-aligned shard with relaxed
//! atomics, and a scrape adds the shards up. The exposition is the same as prometheus-client's
//! (a test compares them byte for byte).

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU64, AtomicUsize, Ordering};

use prometheus_client::encoding::{EncodeMetric, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::{MetricType, TypedMetric};

/// Shards per metric: more than the threads that write on the hot path (the runtime's).
const SHARDS: usize = 8;
/// Buckets per histogram, `+Inf` included.
pub const MAX_BUCKETS: usize = 24;

/// Keeps a shard on its own cache lines (two, for adjacent-line prefetching).
#[repr(align(128))]
#[derive(Default)]
struct Padded<T>(T);

/// This thread's shard.
fn shard() -> usize {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    thread_local! {
        static SHARD: usize = NEXT.fetch_add(1, Ordering::Relaxed) % SHARDS;
    }
    SHARD.with(|s| *s)
}

// === impl ShardedHistogram ===

/// A histogram with fixed buckets; cheap to clone (one reference count).
#[derive(Clone, Debug)]
pub struct ShardedHistogram {
    inner: Arc<HistogramInner>,
}

#[derive(Debug)]
struct HistogramInner {
    /// Upper bounds, ascending, ending with `+Inf`.
    bounds: Vec<f64>,
    shards: [Padded<HistogramShard>; SHARDS],
}

#[derive(Debug, Default)]
struct HistogramShard {
    count: AtomicU64,
    /// The sum's `f64` bits.
    sum: AtomicU64,
    buckets: [AtomicU64; MAX_BUCKETS],
}

impl<T: std::fmt::Debug> std::fmt::Debug for Padded<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl ShardedHistogram {
    /// `bounds` ascending; at most `MAX_BUCKETS - 1` of them (`+Inf` is added). Extra bounds are
    /// dropped rather than panicking; the bucket lists of this crate are constants well under it.
    pub fn new(bounds: impl IntoIterator<Item = f64>) -> Self {
        let mut bounds: Vec<f64> = bounds.into_iter().take(MAX_BUCKETS - 1).collect();
        bounds.push(f64::INFINITY);
        Self { inner: Arc::new(HistogramInner { bounds, shards: Default::default() }) }
    }

    pub fn observe(&self, v: f64) {
        let shard = &self.inner.shards[shard()].0;
        // Like prometheus-client: the first bucket whose bound is at least `v`; NaN goes to +Inf.
        let i = self.inner.bounds.iter().position(|b| *b >= v).unwrap_or(self.inner.bounds.len() - 1);
        shard.buckets[i].fetch_add(1, Ordering::Relaxed);
        shard.count.fetch_add(1, Ordering::Relaxed);
        // Threads rarely share a shard, so this loop almost never retries.
        let _ = shard.sum.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |bits| {
            Some((f64::from_bits(bits) + v).to_bits())
        });
    }

    /// `(sum, count, [(upper bound, count in that bucket)])`, added up over the shards.
    pub fn snapshot(&self) -> (f64, u64, Vec<(f64, u64)>) {
        let mut sum = 0.0;
        let mut count = 0;
        let mut buckets: Vec<(f64, u64)> = self.inner.bounds.iter().map(|b| (*b, 0)).collect();
        for Padded(shard) in &self.inner.shards {
            sum += f64::from_bits(shard.sum.load(Ordering::Relaxed));
            count += shard.count.load(Ordering::Relaxed);
            for (bucket, n) in buckets.iter_mut().zip(&shard.buckets) {
                bucket.1 += n.load(Ordering::Relaxed);
            }
        }
        (sum, count, buckets)
    }
}

impl TypedMetric for ShardedHistogram {
    const TYPE: MetricType = MetricType::Histogram;
}

impl EncodeMetric for ShardedHistogram {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        let (sum, count, buckets) = self.snapshot();
        encoder.encode_histogram::<NoLabelSet>(sum, count, &buckets, None)
    }

    fn metric_type(&self) -> MetricType {
        Self::TYPE
    }
}

// === impl ShardedGauge ===

/// An integer gauge moved up and down by many threads; cheap to clone.
#[derive(Clone, Debug, Default)]
pub struct ShardedGauge {
    shards: Arc<[Padded<AtomicI64>; SHARDS]>,
}

impl ShardedGauge {
    pub fn inc(&self) {
        self.shards[shard()].0.fetch_add(1, Ordering::Relaxed);
    }

    pub fn dec(&self) {
        self.shards[shard()].0.fetch_sub(1, Ordering::Relaxed);
    }

    /// The sum of the shards (a shard alone can be negative: a request may end on another
    /// thread than it started on).
    pub fn get(&self) -> i64 {
        self.shards.iter().map(|s| s.0.load(Ordering::Relaxed)).sum()
    }
}

impl TypedMetric for ShardedGauge {
    const TYPE: MetricType = MetricType::Gauge;
}

impl EncodeMetric for ShardedGauge {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        encoder.encode_gauge(&self.get())
    }

    fn metric_type(&self) -> MetricType {
        Self::TYPE
    }
}

#[cfg(test)]
mod tests {
    use prometheus_client::metrics::histogram::Histogram;
    use prometheus_client::registry::Registry;

    use super::*;
    use crate::metrics::REQUEST_BUCKETS;

    fn exposition(register: impl FnOnce(&mut Registry)) -> String {
        let mut registry = Registry::default();
        register(&mut registry);
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &registry).expect("encode");
        out
    }

    #[test]
    fn the_histogram_exposes_exactly_what_prometheus_client_does() {
        let ours = ShardedHistogram::new(REQUEST_BUCKETS.iter().copied());
        let theirs = Histogram::new(REQUEST_BUCKETS.iter().copied());
        let values = [0.0, 0.001, 0.0011, 0.3, 0.30001, 7.0, 11.0, f64::NAN, 0.05];
        std::thread::scope(|s| {
            // From several threads, so several shards hold counts.
            for chunk in values.chunks(2) {
                let ours = ours.clone();
                s.spawn(move || chunk.iter().for_each(|v| ours.observe(*v)));
            }
        });
        values.iter().for_each(|v| theirs.observe(*v));
        let (_, count, _) = ours.snapshot();
        assert_eq!(count, values.len() as u64);
        // NaN makes the sum NaN in both; compare the exposition with it left out as well.
        assert_eq!(
            exposition(|r| r.register("h", "d", ours.clone())),
            exposition(|r| r.register("h", "d", theirs))
        );
        let finite = ShardedHistogram::new([0.1, 1.0]);
        let reference = Histogram::new([0.1, 1.0]);
        for v in [0.05, 0.1, 0.5, 2.0] {
            finite.observe(v);
            reference.observe(v);
        }
        assert_eq!(
            exposition(|r| r.register("h", "d", finite)),
            exposition(|r| r.register("h", "d", reference))
        );
    }

    #[test]
    fn the_gauge_adds_up_its_shards() {
        let g = ShardedGauge::default();
        std::thread::scope(|s| {
            for _ in 0..4 {
                let g = g.clone();
                s.spawn(move || {
                    for _ in 0..1000 {
                        g.inc();
                    }
                    g.dec();
                });
            }
        });
        assert_eq!(g.get(), 3996);
        let text = exposition(|r| r.register("in_flight", "d", g));
        assert!(text.contains("in_flight 3996"), "{text}");
    }
}
