//! TLS for the TLS listener and the HTTP/3 one: TLS 1.3 only, the certificate and key read from
//! PEM files and swapped in when the files change, so a renewed certificate (cert-manager, a
//! rotated Secret) is served without a restart.
//!
//! The files are compared with what is loaded every `tls.reload_interval_ms` instead of
//! watched: Kubernetes updates a mounted Secret by swapping a symlink two directories up, which
//! a watch on the files misses, and reading two small files every few seconds costs nothing. A
//! pair that does not load (a key that does not match, a file half-written) is refused, logged
//! and counted; the loaded pair keeps serving.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use rustls::ServerConfig;
use rustls::crypto::CryptoProvider;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use crate::config::Config;
use crate::metrics::ReloadResult;
use crate::state::AppState;

/// ALPN protocol names.
pub const ALPN_H2: &[u8] = b"h2";
pub const ALPN_HTTP11: &[u8] = b"http/1.1";
pub const ALPN_H3: &[u8] = b"h3";

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("tls.cert_file {path}: {reason}")]
    Cert { path: PathBuf, reason: String },
    #[error("tls.key_file {path}: {reason}")]
    Key { path: PathBuf, reason: String },
    #[error("TLS settings: {0}")]
    Rustls(#[from] rustls::Error),
}

/// The PEM files as last read, to tell a change from the same bytes read again.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Files {
    cert: Vec<u8>,
    key: Vec<u8>,
}

/// The certificate the listeners present; replaced whole when the files change.
#[derive(Debug)]
pub struct CertStore {
    cert_file: PathBuf,
    key_file: PathBuf,
    provider: Arc<CryptoProvider>,
    current: ArcSwap<CertifiedKey>,
    /// The bytes last read, loaded or refused.
    seen: parking_lot::Mutex<Files>,
}

// === impl CertStore ===

impl CertStore {
    /// Loads the pair named in the configuration; an error names the file and the reason.
    pub fn load(config: &Config) -> Result<Arc<Self>, TlsError> {
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let (cert_file, key_file) = (config.tls.cert_file.clone(), config.tls.key_file.clone());
        let files = read_files(&cert_file, &key_file)?;
        let key = certified_key(&provider, &cert_file, &key_file, &files)?;
        Ok(Arc::new(Self {
            cert_file,
            key_file,
            provider,
            current: ArcSwap::from_pointee(key),
            seen: parking_lot::Mutex::new(files),
        }))
    }

    /// Reads the files again; swaps the certificate in when they changed and load. A pair that
    /// was refused is not tried again until the files change once more.
    pub fn refresh(&self) -> Result<bool, TlsError> {
        let files = read_files(&self.cert_file, &self.key_file)?;
        let mut seen = self.seen.lock();
        if *seen == files {
            return Ok(false);
        }
        *seen = files;
        let key = certified_key(&self.provider, &self.cert_file, &self.key_file, &seen)?;
        self.current.store(Arc::new(key));
        Ok(true)
    }

    /// The rustls settings of a listener offering `alpn`, in order of preference.
    pub fn server_config(self: &Arc<Self>, alpn: &[&[u8]]) -> Result<ServerConfig, TlsError> {
        let mut config = ServerConfig::builder_with_provider(self.provider.clone())
            .with_protocol_versions(&[&rustls::version::TLS13])?
            .with_no_client_auth()
            .with_cert_resolver(self.clone());
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        Ok(config)
    }
}

impl ResolvesServerCert for CertStore {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current.load_full())
    }
}

fn read_files(cert_file: &Path, key_file: &Path) -> Result<Files, TlsError> {
    let cert = std::fs::read(cert_file)
        .map_err(|e| TlsError::Cert { path: cert_file.to_path_buf(), reason: e.to_string() })?;
    let key = std::fs::read(key_file)
        .map_err(|e| TlsError::Key { path: key_file.to_path_buf(), reason: e.to_string() })?;
    Ok(Files { cert, key })
}

fn certified_key(
    provider: &CryptoProvider,
    cert_file: &Path,
    key_file: &Path,
    files: &Files,
) -> Result<CertifiedKey, TlsError> {
    let cert_err = |reason: String| TlsError::Cert { path: cert_file.to_path_buf(), reason };
    let key_err = |reason: String| TlsError::Key { path: key_file.to_path_buf(), reason };
    let chain = CertificateDer::pem_slice_iter(&files.cert)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| cert_err(format!("not PEM: {e}")))?;
    if chain.is_empty() {
        return Err(cert_err("no CERTIFICATE block".into()));
    }
    let key =
        PrivateKeyDer::from_pem_slice(&files.key).map_err(|e| key_err(format!("no private key: {e}")))?;
    let signer = provider
        .key_provider
        .load_private_key(key)
        .map_err(|e| key_err(format!("unusable private key: {e}")))?;
    let certified = CertifiedKey::new(chain, signer);
    // A key that is not the leaf's would fail every handshake: refuse it here instead.
    certified.keys_match().map_err(|e| key_err(format!("does not match the certificate: {e}")))?;
    Ok(certified)
}

/// Re-reads the files every `tls.reload_interval_ms` until the task is dropped.
pub async fn reload_loop(state: AppState, store: Arc<CertStore>) {
    // A file that stays unreadable is reported when the reason changes, not every interval.
    let mut last_error = None;
    loop {
        let every = Duration::from_millis(state.config.load().tls.reload_interval_ms);
        tokio::time::sleep(every).await;
        match store.refresh() {
            Ok(false) => {}
            Ok(true) => {
                last_error = None;
                state.metrics.tls_reload(ReloadResult::applied);
                tracing::info!(cert_file = %store.cert_file.display(), "TLS certificate reloaded");
            }
            Err(e) => {
                let reason = e.to_string();
                if last_error.as_ref() != Some(&reason) {
                    state.metrics.tls_reload(ReloadResult::rejected);
                    tracing::error!(error = %reason, "TLS certificate reload refused; the loaded one stays");
                    last_error = Some(reason);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair() -> (String, String) {
        let key = rcgen::KeyPair::generate().expect("key pair");
        let params = rcgen::CertificateParams::new(vec!["localhost".to_string()]).expect("params");
        let cert = params.self_signed(&key).expect("certificate");
        (cert.pem(), key.serialize_pem())
    }

    /// A configuration naming `tls.crt` and `key` in `dir`.
    fn config_in(dir: &tempfile::TempDir, key: &str) -> Config {
        let mut config = Config::default();
        config.tls.cert_file = dir.path().join("tls.crt");
        config.tls.key_file = dir.path().join(key);
        config
    }

    #[test]
    fn a_pair_is_swapped_in_once_and_a_refused_one_is_not_tried_again() {
        let dir = tempfile::tempdir().expect("tempdir");
        let config = config_in(&dir, "tls.key");
        let (cert, key) = pair();
        std::fs::write(&config.tls.cert_file, &cert).expect("write");
        std::fs::write(&config.tls.key_file, &key).expect("write");
        let store = CertStore::load(&config).expect("loads");
        let first = store.current.load_full();
        assert!(!store.refresh().expect("same files"), "unchanged files are not a reload");

        // Another certificate with the old key: refused once, then not a change any more.
        let (other_cert, _) = pair();
        std::fs::write(&config.tls.cert_file, &other_cert).expect("write");
        let err = store.refresh().expect_err("mismatched pair");
        assert!(err.to_string().contains("tls.key_file"), "{err}");
        assert!(!store.refresh().expect("seen already"));
        assert!(Arc::ptr_eq(&first, &store.current.load_full()), "the loaded pair stays");

        let (cert, key) = pair();
        std::fs::write(&config.tls.key_file, &key).expect("write");
        std::fs::write(&config.tls.cert_file, &cert).expect("write");
        assert!(store.refresh().expect("a good pair"));
        assert!(!Arc::ptr_eq(&first, &store.current.load_full()));
    }

    #[test]
    fn files_that_are_not_pem_name_the_setting() {
        let dir = tempfile::tempdir().expect("tempdir");
        let config = config_in(&dir, "missing.key");
        std::fs::write(&config.tls.cert_file, "hello").expect("write");
        let err = CertStore::load(&config).expect_err("no key file");
        assert!(err.to_string().starts_with("tls.key_file"), "{err}");
        let (_, key) = pair();
        std::fs::write(&config.tls.key_file, &key).expect("write");
        let err = CertStore::load(&config).expect_err("no certificate");
        assert!(err.to_string().starts_with("tls.cert_file"), "{err}");
    }
}
