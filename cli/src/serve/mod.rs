//! `ebb serve`: the engine over HTTP on one tokio runtime (axum, HTTP/1.1),
//! loopback by default.
//!
//! What it owns: the listener, the router ([`routes`]), the server's own
//! metrics, and the order of a shutdown: on the signal (SIGTERM, Ctrl-C,
//! or the future given to [`Server::run`]) `/readyz` answers 503 and the
//! listener stops taking connections; requests in flight get a grace of
//! a tenth of the close deadline (at most 2 s) to finish; then the engine
//! closes with its deadline (writes admitted before it are in the closing
//! snapshot; later ones get 503 `closing`). At worst the run returns
//! grace + deadline + 2 s after the signal (the last 2 s for a request
//! still being answered); with workers that stop, in milliseconds. The
//! report says whether a worker missed the deadline, which the binary
//! turns into its exit code.
//!
//! Invariants: a listen address that is not loopback needs an admin token
//! ([`ServeError::TokenRequired`]); every error answer is the JSON body of
//! [`error::ApiError`]; no request body is read past `max_body_bytes`.

mod api;
pub mod auth;
pub mod body;
pub mod decode;
pub mod error;
pub mod http_metrics;
mod ops;
pub mod report;
mod routes;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use ebb_engine::{CloseReport, Engine, EngineConfig, RuntimeHandle};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub use routes::router;

/// The default listen address.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:7878";

/// The default `max_body_bytes`: 64 MiB.
pub const DEFAULT_MAX_BODY_BYTES: usize = 64 << 20;

/// How long requests in flight get to finish before the engine closes (at
/// most a tenth of the close deadline).
const DRAIN_GRACE: Duration = Duration::from_secs(2);

/// How long the server waits, after the engine closed, for requests still
/// in flight before it returns anyway.
const DRAIN_AFTER_CLOSE: Duration = Duration::from_secs(2);

/// What `ebb serve` runs with.
#[derive(Clone, Debug)]
pub struct ServeConfig {
    /// Where to listen (`127.0.0.1:7878`).
    pub listen: SocketAddr,
    /// The token debug and admin routes need (`--admin-token`,
    /// `EBB_ADMIN_TOKEN`); required off loopback.
    pub admin_token: Option<String>,
    /// The largest request body read (`--max-body-bytes`, 64 MiB).
    pub max_body_bytes: usize,
    /// The engine's configuration.
    pub engine: EngineConfig,
}

impl ServeConfig {
    /// Loopback on the default port, no token, 64 MiB bodies, `engine`.
    pub fn new(engine: EngineConfig) -> ServeConfig {
        ServeConfig {
            listen: DEFAULT_LISTEN.parse().expect("a valid default address"),
            admin_token: None,
            max_body_bytes: DEFAULT_MAX_BODY_BYTES,
            engine,
        }
    }
}

/// Why the server did not start.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// A non-loopback address without an admin token.
    #[error(
        "refusing to listen on {0} without --admin-token (or EBB_ADMIN_TOKEN): off loopback, the debug and admin routes must need a token"
    )]
    TokenRequired(SocketAddr),
    /// An empty admin token.
    #[error("the admin token is empty")]
    EmptyToken,
    /// The listener could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The system's error.
        source: std::io::Error,
    },
    /// The engine did not open.
    #[error("the engine did not open: {0}")]
    Engine(#[from] ebb_engine::Error),
}

/// Everything a request handler reaches.
pub struct AppState {
    /// The engine.
    pub engine: Engine,
    pub(crate) admin_token: Option<String>,
    pub(crate) max_body_bytes: usize,
    pub(crate) http: http_metrics::HttpMetrics,
    pub(crate) bodies: body::BodyLimiter,
    /// Set when shutdown begins: `/readyz` answers 503.
    pub(crate) shutting_down: AtomicBool,
}

/// A bound server with its engine open, not serving yet.
pub struct Server {
    listener: TcpListener,
    state: Arc<AppState>,
}

/// What a server's run ended with.
#[derive(Debug)]
pub struct ServeReport {
    /// The engine's close.
    pub close: CloseReport,
    /// True if requests were still in flight when the server stopped
    /// waiting for them.
    pub drain_timed_out: bool,
}

impl Server {
    /// Checks the address and token, binds, and opens the engine on the
    /// current tokio runtime (a multi-thread one: its workers run there).
    pub async fn bind(config: ServeConfig) -> Result<Server, ServeError> {
        if config.admin_token.as_deref() == Some("") {
            return Err(ServeError::EmptyToken);
        }
        if !config.listen.ip().is_loopback() && config.admin_token.is_none() {
            return Err(ServeError::TokenRequired(config.listen));
        }
        let listener =
            TcpListener::bind(config.listen)
                .await
                .map_err(|source| ServeError::Bind {
                    addr: config.listen,
                    source,
                })?;
        let mut engine_config = config.engine;
        engine_config.runtime = Some(RuntimeHandle(tokio::runtime::Handle::current()));
        // Opening may load a snapshot: off the async threads.
        let engine = tokio::task::spawn_blocking(move || Engine::open(engine_config))
            .await
            .map_err(|e| {
                ServeError::Engine(ebb_engine::Error::Io {
                    path: std::path::PathBuf::new(),
                    op: "open",
                    source: std::io::Error::other(e.to_string()),
                })
            })??;
        Ok(Server {
            listener,
            state: Arc::new(AppState {
                engine,
                admin_token: config.admin_token,
                max_body_bytes: config.max_body_bytes,
                http: http_metrics::HttpMetrics::default(),
                bodies: body::BodyLimiter::new(config.max_body_bytes),
                shutting_down: AtomicBool::new(false),
            }),
        })
    }

    /// The address it listens on (the port, when bound to port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.listener
            .local_addr()
            .expect("a bound listener has an address")
    }

    /// The engine it serves.
    pub fn engine(&self) -> &Engine {
        &self.state.engine
    }

    /// Serves until `shutdown` completes, then shuts down in the order the
    /// [module docs](self) give and returns the engine's close report.
    pub async fn run(self, shutdown: impl Future<Output = ()> + Send + 'static) -> ServeReport {
        let stop_accepting = CancellationToken::new();
        let app = router(Arc::clone(&self.state));
        let serve = axum::serve(self.listener, app)
            .with_graceful_shutdown(stop_accepting.clone().cancelled_owned());
        let server = tokio::spawn(async move {
            if let Err(e) = serve.await {
                tracing::error!(error = %e, "the HTTP server failed");
            }
        });
        shutdown.await;
        tracing::info!("shutting down: not ready, draining, then closing the engine");
        self.state.shutting_down.store(true, Ordering::SeqCst);
        stop_accepting.cancel();
        // Requests in flight (an upload still arriving, say) finish before
        // the engine closes, for a short grace; what is still running
        // after it meets the close (writes get 503 `closing`).
        let deadline = self.state.engine.config().shutdown_deadline_secs as f64;
        let grace = Duration::from_secs_f64((deadline / 10.0).min(DRAIN_GRACE.as_secs_f64()));
        let mut server = server;
        let drained = tokio::time::timeout(grace, &mut server).await.is_ok();
        let close = self.state.engine.close().await;
        if close.deadline_missed {
            tracing::warn!(missed = ?close.missed, "workers missed the close deadline");
        }
        let drain_timed_out = !drained
            && tokio::time::timeout(DRAIN_AFTER_CLOSE, server)
                .await
                .is_err();
        ServeReport {
            close,
            drain_timed_out,
        }
    }
}

/// Completes on SIGTERM or Ctrl-C (SIGINT).
pub async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(error = %e, "cannot listen for SIGTERM; Ctrl-C only");
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM"),
        _ = tokio::signal::ctrl_c() => tracing::info!("Ctrl-C"),
    }
}
