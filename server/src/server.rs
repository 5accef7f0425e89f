//! Running the server: bind, serve, background tasks, and graceful shutdown.
//!
//! Shutdown on SIGTERM or SIGINT: readiness turns 503 at once and every response from then on
//! carries `Connection: close`; after `shutdown.drain_delay_ms` (time for load balancers to
//! notice) the listener stops accepting; open connections get `shutdown.grace_ms` to finish
//! (see `connection` for how keep-alive ones close without losing a request); then telemetry is
//! flushed and `run` returns (exit 0). A second signal skips what is left of the drain. A
//! background task that ends unexpectedly ends the server with an error instead of leaving it
//! half-working.

use std::future::Future;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::adaptive::adapt_loop;
use crate::app::App;
use crate::config::Sources;
use crate::connection::{Connections, Stop, TlsListener, Transport, accept_until, max_connections};
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
    #[error(transparent)]
    Tls(#[from] crate::tls::TlsError),
    #[error(transparent)]
    Config(crate::config::ConfigError),
    #[error(transparent)]
    Http3(#[from] crate::http3::Http3Error),
}

impl ServeError {
    /// An error in what the configuration names (a certificate that does not load): exit 2,
    /// like an invalid setting.
    pub fn is_config(&self) -> bool {
        matches!(self, Self::Tls(_) | Self::Config(_) | Self::Http3(crate::http3::Http3Error::Tls(_)))
    }
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
    let profiling_listener = match config.debug_listen() {
        Ok(Some(addr)) => {
            Some(TcpListener::bind(addr).await.map_err(|source| ServeError::Bind { addr, source })?)
        }
        Ok(None) => None,
        Err(e) => return Err(ServeError::Config(e)),
    };
    let tls = match config.tls_enabled() {
        true => Some(tls_listener(&config).await?),
        false => None,
    };
    tracing::info!(
        listen = %local,
        tls_listen = tls.as_ref().map(|t| t.local.to_string()),
        http3 = tls.as_ref().is_some_and(|t| t.quic.is_some()),
        debug_listen = profiling_listener.as_ref().and_then(|d| d.local_addr().ok()).map(|a| a.to_string()),
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
    if let Some(tls) = &tls {
        let (s, store) = (state.clone(), tls.store.clone());
        tasks.spawn(async move {
            crate::tls::reload_loop(s, store).await;
            ("TLS certificate reload", Ok(()))
        });
    }

    // Stop signal: SIGTERM, SIGINT or the caller's future; a second signal stops at once.
    let (stop_tx, stop_rx) = watch::channel(Stop::Serving);
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
                "shutdown requested; readiness is now 503 and responses carry Connection: close"
            );
            let second = async {
                match terminate_signal().await {
                    Ok(()) => tracing::warn!("second signal: closing every connection now"),
                    Err(e) => tracing::warn!(error = %e, "watching for a second signal"),
                }
            };
            tokio::pin!(second);
            tokio::select! {
                () = tokio::time::sleep(drain) => {
                    let _ = stop_tx.send(Stop::Draining);
                    (&mut second).await;
                }
                () = &mut second => {}
            }
            let _ = stop_tx.send(Stop::Now);
            // Stay pending: this task has done its job and must not look like a failure.
            std::future::pending::<()>().await;
            ("signal handler", Ok(()))
        });
    }

    let app = App::new(state.clone());
    state.set_lifecycle(Lifecycle::Ready);
    let grace = Duration::from_millis(config.shutdown.grace_ms);
    let max = max_connections(&config);
    tracing::info!(max_connections = max, "accepting connections");
    let connections = Connections::new(max);
    // The profiling listener serves until the server stops, and is not waited for: a profile
    // being taken (up to a minute) must not hold up the drain.
    crate::profiling::apply_heap_profiling(config.debug.heap_profiling);
    let profiling = profiling_listener.map(|listener| {
        let state = state.clone();
        tokio::spawn(async move {
            if let Err(e) = crate::profiling::serve(listener, state).await {
                tracing::error!(error = %e, "the profiling listener stopped");
            }
        })
    });
    let serve = async {
        let plain = accept_until(listener, Transport::Plain, app, &connections, stop_rx.clone());
        let secure = async {
            if let Some(tls) = tls {
                let transport = Transport::Tls(tls.listener);
                let tcp = accept_until(tls.tcp, transport, app, &connections, stop_rx.clone());
                let quic = async {
                    if let Some(endpoint) = tls.quic {
                        crate::http3::accept_until(endpoint, app, &connections, stop_rx.clone()).await;
                    }
                };
                tokio::join!(tcp, quic);
            }
        };
        tokio::join!(plain, secure);
        // The listener is closed; open connections get the grace period.
        let mut stop = stop_rx.clone();
        tokio::select! {
            () = connections.closed() => {}
            () = tokio::time::sleep(grace) => {
                tracing::warn!(
                    grace_ms = grace.as_millis() as u64,
                    in_flight = state.metrics.in_flight.get(),
                    open_connections = connections.open(),
                    "grace period over; dropping unfinished requests"
                );
            }
            _ = stop.wait_for(|s| *s == Stop::Now) => {}
        }
        Ok::<(), ServeError>(())
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
    if let Some(profiling) = profiling {
        profiling.abort();
    }
    if result.is_ok() {
        tracing::info!("server stopped");
    }
    result
}

/// The TLS listener, bound, with its certificate loaded.
struct Tls {
    tcp: TcpListener,
    local: std::net::SocketAddr,
    store: std::sync::Arc<crate::tls::CertStore>,
    listener: std::sync::Arc<TlsListener>,
    /// The experimental HTTP/3 endpoint, on the same port over UDP.
    quic: Option<quinn::Endpoint>,
}

async fn tls_listener(config: &crate::config::Config) -> Result<Tls, ServeError> {
    use crate::tls::{ALPN_H2, ALPN_HTTP11, CertStore};
    let store = CertStore::load(config)?;
    let with_h2 = store.server_config(&[ALPN_H2, ALPN_HTTP11])?;
    let http1_only = store.server_config(&[ALPN_HTTP11])?;
    let addr = config.tls.listen;
    let tcp = TcpListener::bind(addr).await.map_err(|source| ServeError::Bind { addr, source })?;
    let local = tcp.local_addr().map_err(ServeError::Serve)?;
    // The TCP port, also when the configured one was 0, so that `Alt-Svc` names a port that
    // both protocols listen on.
    let quic = match config.tls.http3 {
        true => Some(crate::http3::bind(config, &store, local)?),
        false => None,
    };
    let listener = TlsListener {
        with_h2: tokio_rustls::TlsAcceptor::from(std::sync::Arc::new(with_h2)),
        http1_only: tokio_rustls::TlsAcceptor::from(std::sync::Arc::new(http1_only)),
        alt_svc: quic.as_ref().and_then(|_| crate::http3::alt_svc(local.port())),
    };
    Ok(Tls { tcp, local, store, listener: std::sync::Arc::new(listener), quic })
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
