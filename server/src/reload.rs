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

use notify::event::{AccessKind, AccessMode, MetadataKind, ModifyKind};
use notify::{EventKind, RecursiveMode, Watcher};
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
                if event.is_ok_and(|e| changes_content(&e.kind)) {
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
        let cause = tokio::select! {
            Some(()) = rx.recv() => Cause::File,
            Some(()) = hup.recv() => Cause::Signal,
        };
        // Debounce: wait until events stop for a moment.
        while let Ok(Some(())) = tokio::time::timeout(DEBOUNCE, rx.recv()).await {}
        reload_once(&state, &sources, cause);
    }
}

/// Whether a file event can have changed what the file says. Opening and reading it cannot: the
/// reload's own read must not trigger the next reload.
fn changes_content(kind: &EventKind) -> bool {
    match kind {
        // A file written in place and closed.
        EventKind::Access(AccessKind::Close(AccessMode::Write)) => true,
        EventKind::Access(_) | EventKind::Other => false,
        EventKind::Modify(ModifyKind::Metadata(MetadataKind::AccessTime)) => false,
        EventKind::Any | EventKind::Create(_) | EventKind::Modify(_) | EventKind::Remove(_) => true,
    }
}

/// What started a reload; logged with its result.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cause {
    File,
    Signal,
}

impl Cause {
    fn as_str(self) -> &'static str {
        match self {
            Cause::File => "file changed",
            Cause::Signal => "SIGHUP",
        }
    }
}

/// One reload attempt; returns whether a new configuration was applied.
pub fn reload_once(state: &AppState, sources: &Sources, cause: Cause) -> bool {
    let current = state.config.load_full();
    match sources.reload() {
        Ok(next) => {
            let next = keep_restart_only(&current, next);
            if next == *current {
                return false;
            }
            state.apply_config(next);
            state.metrics.reload(ReloadResult::applied);
            tracing::info!(cause = cause.as_str(), "configuration reloaded");
            true
        }
        Err(e) => {
            state.metrics.reload(ReloadResult::rejected);
            tracing::error!(
                error = %e,
                field = e.field_name().unwrap_or(""),
                cause = cause.as_str(),
                "configuration reload rejected; keeping the running configuration"
            );
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
        next.connections.max = current.connections.max;
        next.body_limit_bytes = current.body_limit_bytes;
        next.log = current.log.clone();
        next.otlp = current.otlp.clone();
        next.pool = current.pool.clone();
        next.probe = current.probe.clone();
        next.tls = current.tls.clone();
        next.debug.listen.clone_from(&current.debug.listen);
    }
    next
}

#[cfg(test)]
mod tests {
    use notify::event::{CreateKind, DataChange, RenameMode};

    use super::*;

    #[test]
    fn reading_the_file_is_not_a_change() {
        for read in [
            EventKind::Access(AccessKind::Open(AccessMode::Any)),
            EventKind::Access(AccessKind::Close(AccessMode::Read)),
            EventKind::Modify(ModifyKind::Metadata(MetadataKind::AccessTime)),
        ] {
            assert!(!changes_content(&read), "{read:?}");
        }
        for write in [
            EventKind::Create(CreateKind::File),
            EventKind::Modify(ModifyKind::Data(DataChange::Any)),
            EventKind::Modify(ModifyKind::Name(RenameMode::To)),
            EventKind::Remove(notify::event::RemoveKind::File),
            EventKind::Access(AccessKind::Close(AccessMode::Write)),
        ] {
            assert!(changes_content(&write), "{write:?}");
        }
    }
}
