//! TLS served directly with rustls (M7), reloaded from disk on SIGHUP so certificates renewed by
//! an ACME client take effect without a restart; and `fieldvault tls self-signed` for tests.

use std::path::Path;

use axum_server::tls_rustls::RustlsConfig;

/// Installs aws-lc-rs as the process-wide rustls provider (idempotent).
pub fn install_crypto_provider() {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
}

/// Loads the certificate chain and key, with an error naming the file at fault.
pub async fn load(cert: &Path, key: &Path) -> Result<RustlsConfig, String> {
    install_crypto_provider();
    RustlsConfig::from_pem_file(cert, key).await.map_err(|e| {
        format!(
            "cannot load TLS certificate {} / key {}: {e}",
            cert.display(),
            key.display()
        )
    })
}

/// Reloads on every SIGHUP until the process ends. A bad new file keeps the old certificate.
pub fn spawn_reload_on_sighup(
    config: RustlsConfig,
    cert: std::path::PathBuf,
    key: std::path::PathBuf,
) {
    tokio::spawn(async move {
        let Ok(mut hup) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
        else {
            tracing::warn!("cannot listen for SIGHUP; TLS reload disabled");
            return;
        };
        while hup.recv().await.is_some() {
            match config.reload_from_pem_file(&cert, &key).await {
                Ok(()) => tracing::info!(cert = %cert.display(), "TLS certificate reloaded"),
                Err(e) => {
                    tracing::error!(error = %e, "TLS reload failed; keeping the previous certificate")
                }
            }
        }
    });
}

/// Writes a self-signed certificate for `names` (DNS names or IP addresses) to `cert` and `key`
/// (mode 0600). For tests and first trials only: clients must be told to trust it.
pub fn write_self_signed(names: &[String], cert: &Path, key: &Path) -> Result<(), String> {
    let certified = rcgen::generate_simple_self_signed(names.to_vec())
        .map_err(|e| format!("cannot generate certificate: {e}"))?;
    std::fs::write(cert, certified.cert.pem())
        .map_err(|e| format!("cannot write {}: {e}", cert.display()))?;
    fieldvault_store::keyfile::write_private_new(
        key,
        certified.signing_key.serialize_pem().as_bytes(),
    )
    .map_err(|e| e.to_string())
}
