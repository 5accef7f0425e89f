//! Running the server: bind, serve, background tasks, and graceful shutdown.
//!
//! Shutdown on SIGTERM or SIGINT: readiness turns 503 at once; after `shutdown.drain_delay_ms`
//! (time for load balancers to notice) the listener stops accepting; in-flight requests get
//! `shutdown.grace_ms` to finish; then telemetry is flushed and `run` returns (exit 0). A
//! background task that ends unexpectedly ends the server with an error instead of leaving it
//! half-working.

use std::future::Future;
use std::time::Duration;

use hyper::server::conn::http1;
use hyper_util::rt::TokioIo;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::admission::adapt_loop;
use crate::app::App;
use crate::config::Sources;
use crate::reload::reload_loop;
use crate::runtime_probe::{probe_loop, stall_loop};
use crate::state::{AppState, Lifecycle};

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("listen on {addr}: {source}")]
    Bind { addr: std::net::SocketAddr, source: std::io::Error },
    #[error("serving: {0}")]
    Serve(std::io::Error),
    #[error("background task {name} ended: {reason}")]
    Task { name: &'static str, reason: String },
}

/// Serves until `shutdown` resolves (or a signal arrives), then drains.
pub async fn run(
    state: AppState,
    sources: Sources,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServeError> {
    let config = state.config.load_full();
    let listener = TcpListener::bind(config.listen)
        .await
        .map_err(|source| ServeError::Bind { addr: config.listen, source })?;
    let local = listener.local_addr().map_err(ServeError::Serve)?;
    tracing::info!(
        listen = %local,
        version = %config.version,
        workers = config.worker_count(),
        queue_capacity = state.pool.capacity(),
        "queue capacity = {} (target_qps {} × mean_service_ms {} × safety_factor {}{})",
        state.pool.capacity(),
        config.pool.target_qps,
        config.pool.mean_service_ms,
        config.pool.safety_factor,
        if config.pool.queue_capacity > 0 { ", overridden by pool.queue_capacity" } else { "" },
    );

    // Every background task runs here, and the server ends if one of them does.
    let mut tasks: JoinSet<(&'static str, Result<(), String>)> = JoinSet::new();
    let s = state.clone();
    tasks.spawn(async move {
        probe_loop(s).await;
        ("runtime probe", Ok(()))
    });
    let s = state.clone();
    tasks.spawn(async move {
        stall_loop(s).await;
        ("stall injector", Ok(()))
    });
    let s = state.clone();
    tasks.spawn(async move {
        adapt_loop(s).await;
        ("adaptive admission", Ok(()))
    });
    let s = state.clone();
    tasks.spawn(async move { ("config reload", reload_loop(s, sources).await.map_err(|e| e.to_string())) });

    // Stop signal: SIGTERM, SIGINT or the caller's future.
    let (stop_tx, stop_rx) = watch::channel(false);
    {
        let state = state.clone();
        let drain = Duration::from_millis(config.shutdown.drain_delay_ms);
        tasks.spawn(async move {
            tokio::select! {
                () = shutdown => {}
                r = terminate_signal() => if let Err(e) = r {
                    return ("signal handler", Err(e.to_string()));
                },
            }
            state.set_lifecycle(Lifecycle::Draining);
            tracing::info!(
                drain_delay_ms = drain.as_millis() as u64,
                "shutdown requested; readiness is now 503"
            );
            tokio::time::sleep(drain).await;
            let _ = stop_tx.send(true);
            // Stay pending: this task has done its job and must not look like a failure.
            std::future::pending::<()>().await;
            ("signal handler", Ok(()))
        });
    }

    let app = App::new(state.clone());
    state.set_lifecycle(Lifecycle::Ready);
    let grace = Duration::from_millis(config.shutdown.grace_ms);
    let serve = async {
        let connections = accept_until(listener, app, stop_rx.clone()).await;
        // The listener is closed; in-flight requests get the grace period.
        tokio::select! {
            () = connections.shutdown() => Ok(()),
            () = tokio::time::sleep(grace) => {
                tracing::warn!(
                    grace_ms = grace.as_millis() as u64,
                    in_flight = state.metrics.in_flight.get(),
                    "grace period over; dropping unfinished requests"
                );
                Ok::<(), ServeError>(())
            }
        }
    };
    tokio::pin!(serve);
    // Every background task runs forever, so any that ends is a failure.
    let result = tokio::select! {
        r = &mut serve => r,
        Some(joined) = tasks.join_next() => {
            let (name, reason) = match joined {
                Ok((name, Ok(()))) => (name, "returned".to_string()),
                Ok((name, Err(reason))) => (name, reason),
                Err(e) => ("background", e.to_string()),
            };
            Err(ServeError::Task { name, reason })
        }
    };
    tasks.abort_all();
    if result.is_ok() {
        tracing::info!("server stopped");
    }
    result
}

/// Serves HTTP/1.1 connections until `stop` turns true, then closes the listener and returns the
/// open connections, already told to finish their in-flight request and close.
///
/// hyper's HTTP/1 server directly (not an auto-detecting HTTP/1+2 one): the reference server
/// speaks HTTP/1.1 to gateways and probes, and the auto builder costs about 9 % of throughput
/// (`docs/dev/benchmarks.md`). Tests serve an `App` with extra routes through it too.
pub async fn accept_until(
    listener: TcpListener,
    app: App,
    mut stop: watch::Receiver<bool>,
) -> GracefulShutdown {
    let connections = GracefulShutdown::new();
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = stop.wait_for(|stop| *stop) => break,
        };
        let stream = match accepted {
            Ok((stream, _)) => stream,
            Err(e) => {
                // Out of file descriptors and similar: keep serving the open connections and
                // try again shortly instead of spinning or exiting.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let conn = http1::Builder::new().serve_connection(TokioIo::new(stream), app);
        let watched = connections.watch(conn);
        // One task per connection is the server's unit of work; a connection error concerns
        // that client only and is logged at debug.
        tokio::spawn(async move {
            if let Err(e) = watched.await {
                tracing::debug!(error = %e, "connection ended with an error");
            }
        });
    }
    drop(listener);
    connections
}

async fn terminate_signal() -> std::io::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
    Ok(())
}
