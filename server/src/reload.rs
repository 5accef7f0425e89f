//! Hot reload of the configuration file.
//!
//! The file's directory is watched (editors and Kubernetes ConfigMaps replace files by rename,
//! which a watch on the file itself would lose); SIGHUP triggers a reload too. Events are
//! debounced, then the whole layer stack is rebuilt (file < env < flags). A valid result that
//! differs is swapped in atomically; settings that need a restart keep their running values and
//! are named in a warning. An invalid file is rejected: logged with the field and reason, counted
//! in `refserver_config_reloads_total{result="rejected"}`, and the running configuration stays.

use std::path::PathBuf;
use std::time::Duration;

use notify::{RecursiveMode, Watcher};
use tokio::sync::mpsc;

use crate::config::{Config, Sources};
use crate::metrics::ReloadResult;
use crate::state::AppState;

/// Quiet time after the last file event before the file is read.
const DEBOUNCE: Duration = Duration::from_millis(100);

#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    #[error("watching {path}: {source}")]
    Watch { path: PathBuf, source: notify::Error },
    #[error("installing the SIGHUP handler: {0}")]
    Signal(std::io::Error),
}

/// Watches the file (if any) and SIGHUP until the task is dropped.
pub async fn reload_loop(state: AppState, sources: Sources) -> Result<(), ReloadError> {
    let (tx, mut rx) = mpsc::unbounded_channel::<()>();
    // Kept alive for the life of the loop; dropping it stops the watch.
    let _watcher = match &sources.file {
        Some(file) => {
            let dir = file
                .parent()
                .filter(|p| !p.as_os_str().is_empty())
                .map_or_else(|| PathBuf::from("."), PathBuf::from);
            let tx = tx.clone();
            let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
                if event.is_ok() {
                    let _ = tx.send(());
                }
            })
            .map_err(|source| ReloadError::Watch { path: dir.clone(), source })?;
            watcher
                .watch(&dir, RecursiveMode::NonRecursive)
                .map_err(|source| ReloadError::Watch { path: dir, source })?;
            Some(watcher)
        }
        None => None,
    };
    let mut hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
        .map_err(ReloadError::Signal)?;
    loop {
        tokio::select! {
            Some(()) = rx.recv() => {}
            Some(()) = hup.recv() => {}
        }
        // Debounce: wait until events stop for a moment.
        while let Ok(Some(())) = tokio::time::timeout(DEBOUNCE, rx.recv()).await {}
        reload_once(&state, &sources);
    }
}

/// One reload attempt; returns whether a new configuration was applied.
pub fn reload_once(state: &AppState, sources: &Sources) -> bool {
    let current = state.config.load_full();
    match sources.load() {
        Ok(next) => {
            let next = keep_restart_only(&current, next);
            if next == *current {
                return false;
            }
            state.apply_config(next);
            state.metrics.reload(ReloadResult::applied);
            tracing::info!("configuration reloaded");
            true
        }
        Err(e) => {
            state.metrics.reload(ReloadResult::rejected);
            tracing::error!(error = %e, field = e.field_name().unwrap_or(""), "configuration reload rejected; keeping the running configuration");
            false
        }
    }
}

/// Settings that only take effect at start keep their running values.
fn keep_restart_only(current: &Config, mut next: Config) -> Config {
    let changed = current.restart_only_changes(&next);
    if !changed.is_empty() {
        tracing::warn!(settings = ?changed, "these settings change only on restart");
        next.listen = current.listen;
        next.version.clone_from(&current.version);
        next.body_limit_bytes = current.body_limit_bytes;
        next.log = current.log.clone();
        next.otlp = current.otlp.clone();
        next.pool = current.pool.clone();
        next.probe = current.probe.clone();
    }
    next
}
