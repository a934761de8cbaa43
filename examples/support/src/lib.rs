//! What every example binary does the same way, so each one holds only its flags, wiring and
//! output: logging to stderr (stdout is for results) and the shutdown signal.

use std::io::IsTerminal;

/// Logs to stderr with `RUST_LOG`, or `default_filter` when it is unset: one JSON object per line
/// when `json` (for CloudWatch and other collectors), otherwise readable lines without targets,
/// coloured only on a terminal (no colour codes in log files and CI output).
pub fn init_logging(default_filter: &str, json: bool) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_filter));
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if json {
        logs.json().flatten_event(true).init();
    } else {
        logs.with_target(false)
            .with_ansi(std::io::stderr().is_terminal())
            .init();
    }
}

/// Resolves on Ctrl-C or SIGTERM (what ECS, Kubernetes and `kill` send to stop a process).
pub async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("installing a SIGTERM handler");
        tokio::select! {
            _ = ctrl_c => {},
            _ = term.recv() => {},
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}
