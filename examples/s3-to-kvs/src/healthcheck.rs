//! `s3-to-kvs healthcheck`: the container's health check without curl (not in slim images).
//!
//! Asks `GET /health` of the service in the same container and exits 0 on `200`, 1 otherwise;
//! the Dockerfile's `HEALTHCHECK` and the ECS task definition run it.

use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use anyhow::{Context, bail};
use bytes::Bytes;
use http_body_util::Empty;
use hyper::Request;
use hyper_util::rt::TokioIo;

/// Options of `s3-to-kvs healthcheck`.
#[derive(clap::Args, Debug, Clone)]
pub struct HealthcheckArgs {
    /// Port the service listens on (the service's own `PORT`).
    #[arg(long, env = "PORT", default_value_t = 8080)]
    pub port: u16,
    /// Give up after this long (ECS's own health check timeout defaults to 5 s).
    #[arg(long, default_value_t = 3)]
    pub timeout_seconds: u64,
}

/// Checks `GET http://127.0.0.1:PORT/health`; an error says what failed.
pub async fn run(args: HealthcheckArgs) -> anyhow::Result<()> {
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, args.port));
    let status = tokio::time::timeout(Duration::from_secs(args.timeout_seconds), get(addr))
        .await
        .with_context(|| {
            format!(
                "GET http://{addr}/health: no answer within {} s",
                args.timeout_seconds
            )
        })??;
    if status != hyper::StatusCode::OK {
        bail!("GET http://{addr}/health answered {status}");
    }
    Ok(())
}

async fn get(addr: SocketAddr) -> anyhow::Result<hyper::StatusCode> {
    let tcp = tokio::net::TcpStream::connect(addr)
        .await
        .with_context(|| format!("connecting to {addr}"))?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp)).await?;
    let conn = tokio::spawn(conn);
    let req = Request::get("/health")
        .header(hyper::header::HOST, addr.to_string())
        .body(Empty::<Bytes>::new())?;
    let status = sender.send_request(req).await?.status();
    conn.abort();
    Ok(status)
}
