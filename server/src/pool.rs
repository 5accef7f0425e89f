//! A bounded worker pool for CPU work.
//!
//! A fixed number of OS threads take jobs from one bounded queue. Submitting to a full queue
//! fails at once (the caller answers 503) instead of queueing without bound: under overload the
//! server sheds work early, and latency of admitted work stays bounded by
//! `capacity × service time / workers`.
//!
//! Work nobody waits for any more (the client hung up, the request timed out) is not done: a job
//! whose requester is gone is skipped, and a running one sees it through `Cancel` and stops, so
//! later requests do not queue behind dead work.

use std::sync::mpsc::{Receiver, SyncSender, TrySendError, sync_channel};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use tokio::sync::oneshot;

use crate::metrics::Metrics;

type Job = Box<dyn FnOnce() + Send + 'static>;

/// Why a job did not run.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PoolError {
    #[error("worker pool queue is full ({capacity} waiting)")]
    Full { capacity: usize },
    #[error("worker pool is shut down")]
    Closed,
}

/// What a job asks to learn whether its requester still waits for the result.
pub struct Cancel<'a>(&'a dyn Fn() -> bool);

impl Cancel<'_> {
    pub fn is_cancelled(&self) -> bool {
        (self.0)()
    }
}

/// Handle to the pool; clones share it. Dropping the last handle lets the workers exit once the
/// queue is empty.
#[derive(Clone)]
pub struct WorkerPool {
    sender: SyncSender<Job>,
    capacity: usize,
    metrics: Metrics,
    _workers: Arc<Vec<JoinHandle<()>>>,
}

impl WorkerPool {
    pub fn new(workers: usize, capacity: usize, metrics: Metrics) -> std::io::Result<Self> {
        let (sender, receiver) = sync_channel::<Job>(capacity);
        let receiver = Arc::new(Mutex::new(receiver));
        let mut handles = Vec::with_capacity(workers);
        for i in 0..workers {
            let receiver = receiver.clone();
            let metrics = metrics.clone();
            handles.push(
                std::thread::Builder::new()
                    .name(format!("refserver-worker-{i}"))
                    .spawn(move || worker_loop(&receiver, &metrics))?,
            );
        }
        metrics.pool_workers.set(workers as i64);
        metrics.pool_queue_capacity.set(capacity as i64);
        Ok(Self { sender, capacity, metrics, _workers: Arc::new(handles) })
    }

    /// Queues `f` and awaits its result; fails at once when the queue is full. Dropping the
    /// returned future abandons the job: it is skipped if it has not started, and `f` sees
    /// `Cancel::is_cancelled` turn true if it has.
    pub async fn run<T, F>(&self, f: F) -> Result<T, PoolError>
    where
        T: Send + 'static,
        F: FnOnce(&Cancel<'_>) -> T + Send + 'static,
    {
        let (tx, rx) = oneshot::channel();
        let metrics = self.metrics.clone();
        let job: Job = Box::new(move || {
            if tx.is_closed() {
                metrics.pool_jobs_abandoned.inc();
                return;
            }
            let gone = || tx.is_closed();
            let result = f(&Cancel(&gone));
            if tx.send(result).is_err() {
                metrics.pool_jobs_abandoned.inc();
            }
        });
        self.metrics.pool_queue_depth.inc();
        match self.sender.try_send(job) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => {
                self.metrics.pool_queue_depth.dec();
                return Err(PoolError::Full { capacity: self.capacity });
            }
            Err(TrySendError::Disconnected(_)) => {
                self.metrics.pool_queue_depth.dec();
                return Err(PoolError::Closed);
            }
        }
        rx.await.map_err(|_| PoolError::Closed)
    }

    pub fn capacity(&self) -> usize {
        self.capacity
    }
}

fn worker_loop(receiver: &Mutex<Receiver<Job>>, metrics: &Metrics) {
    loop {
        let job = {
            let Ok(guard) = receiver.lock() else { return };
            match guard.recv() {
                Ok(job) => job,
                Err(_) => return,
            }
        };
        metrics.pool_queue_depth.dec();
        metrics.pool_busy_workers.inc();
        // A panicking job must not take the worker down with it; the waiter sees `Closed`.
        let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(job));
        metrics.pool_busy_workers.dec();
    }
}

/// Burns CPU for `ms` milliseconds: the stand-in for real request work. Stops early, with
/// `None`, when the work is cancelled.
pub fn spin_for(ms: u64, cancel: &Cancel<'_>) -> Option<u64> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_millis(ms);
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    while std::time::Instant::now() < deadline {
        if cancel.is_cancelled() {
            return None;
        }
        for _ in 0..1000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
        }
    }
    Some(x)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn runs_jobs_and_returns_results() {
        let pool = WorkerPool::new(2, 4, Metrics::new("t")).expect("pool");
        let r = pool.run(|_| 40 + 2).await;
        assert_eq!(r, Ok(42));
    }

    #[tokio::test]
    async fn full_queue_fails_at_once() {
        let metrics = Metrics::new("t");
        let pool = WorkerPool::new(1, 1, metrics.clone()).expect("pool");
        let (hold_tx, hold_rx) = std::sync::mpsc::channel::<()>();
        let (started_tx, started_rx) = oneshot::channel::<()>();
        let busy = tokio::spawn({
            let pool = pool.clone();
            async move {
                pool.run(move |_| {
                    let _ = started_tx.send(());
                    let _ = hold_rx.recv();
                })
                .await
            }
        });
        started_rx.await.expect("first job started");
        // The worker is busy: one job fits in the queue, the next is refused.
        let queued = tokio::spawn({
            let pool = pool.clone();
            async move { pool.run(|_| 1).await }
        });
        while metrics.pool_queue_depth.get() < 1 {
            tokio::task::yield_now().await;
        }
        assert_eq!(pool.run(|_| 2).await, Err(PoolError::Full { capacity: 1 }));
        hold_tx.send(()).expect("release");
        assert_eq!(busy.await.expect("join"), Ok(()));
        assert_eq!(queued.await.expect("join"), Ok(1));
        assert_eq!(metrics.pool_queue_depth.get(), 0);
    }

    #[tokio::test]
    async fn a_panicking_job_does_not_kill_the_worker() {
        let pool = WorkerPool::new(1, 2, Metrics::new("t")).expect("pool");
        let r: Result<(), _> = pool.run(|_| panic!("boom")).await;
        assert_eq!(r, Err(PoolError::Closed));
        assert_eq!(pool.run(|_| 7).await, Ok(7));
    }

    /// Polls until `cond` holds; a minute is far beyond what the condition needs.
    async fn until(what: &str, cond: impl Fn() -> bool) {
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(60);
        while !cond() {
            assert!(tokio::time::Instant::now() < deadline, "timed out waiting for: {what}");
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
    }

    #[tokio::test]
    async fn work_nobody_waits_for_is_stopped_and_the_queued_kind_skipped() {
        let metrics = Metrics::new("t");
        let pool = WorkerPool::new(1, 2, metrics.clone()).expect("pool");
        // An hour of work, and a job queued behind it; their requesters then go away.
        let running = tokio::spawn({
            let pool = pool.clone();
            async move { pool.run(|cancel| spin_for(3_600_000, cancel)).await }
        });
        until("the long job runs", || metrics.pool_busy_workers.get() == 1).await;
        let queued = tokio::spawn({
            let pool = pool.clone();
            async move { pool.run(|_| 1).await }
        });
        until("a job is queued", || metrics.pool_queue_depth.get() == 1).await;
        queued.abort();
        running.abort();
        // The worker is free again long before the hour, and nothing abandoned ran.
        assert_eq!(pool.run(|_| 7).await, Ok(7));
        until("both counted", || metrics.pool_jobs_abandoned.get() == 2).await;
    }
}
