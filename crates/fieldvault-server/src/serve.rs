//! Running the server: bind, serve HTTP or HTTPS, shut down gracefully.

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use axum_server::Handle;

use crate::{App, router, tls};

/// How long in-flight requests get to finish after a shutdown signal.
pub const GRACE: Duration = Duration::from_secs(30);

/// Serves until `shutdown` resolves, then stops accepting and lets in-flight requests finish
/// (up to [`GRACE`]). `on_listening` receives the bound address (port 0 picks a free one).
pub async fn run(
    app: App,
    shutdown: impl Future<Output = ()> + Send + 'static,
    on_listening: impl FnOnce(SocketAddr) + Send + 'static,
) -> Result<(), String> {
    let config = app.config.clone();
    crate::service::data::spawn_purge(app.clone());
    crate::service::budget::spawn_flush(app.clone());
    crate::service::audit::spawn_retention(app.clone());
    let handle = Handle::new();
    let h = handle.clone();
    tokio::spawn(async move {
        shutdown.await;
        tracing::info!("shutting down: finishing in-flight requests");
        h.graceful_shutdown(Some(GRACE));
    });
    let h = handle.clone();
    tokio::spawn(async move {
        if let Some(addr) = h.listening().await {
            on_listening(addr);
        }
    });
    crate::service::kobo_export::spawn_sweeper(app.store.clone(), app.blobs.clone());
    let service = router::router(app).into_make_service_with_connect_info::<SocketAddr>();
    match (&config.tls_cert, &config.tls_key) {
        (Some(cert), Some(key)) => {
            let rustls = tls::load(cert, key).await?;
            tls::spawn_reload_on_sighup(rustls.clone(), cert.clone(), key.clone());
            axum_server::bind_rustls(config.listen, rustls)
                .handle(handle)
                .serve(service)
                .await
        }
        _ => {
            axum_server::bind(config.listen)
                .handle(handle)
                .serve(service)
                .await
        }
    }
    .map_err(|e| format!("cannot serve on {}: {e}", config.listen))
}

/// Resolves on SIGTERM or Ctrl-C.
pub async fn shutdown_signal() {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = term => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}
