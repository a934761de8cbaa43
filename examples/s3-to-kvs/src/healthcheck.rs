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

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    /// A server on 127.0.0.1:0 that answers one request with `status` and returns the request
    /// line it read.
    async fn one_shot(status: &'static str) -> (u16, tokio::task::JoinHandle<String>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let task = tokio::spawn(async move {
            let (mut sock, _) = listener.accept().await.unwrap();
            let mut buf = vec![0; 1024];
            let n = sock.read(&mut buf).await.unwrap();
            let request = String::from_utf8_lossy(&buf[..n]).into_owned();
            let answer = format!("HTTP/1.1 {status}\r\ncontent-length: 2\r\n\r\n{{}}");
            sock.write_all(answer.as_bytes()).await.unwrap();
            request.lines().next().unwrap_or_default().to_owned()
        });
        (port, task)
    }

    fn args(port: u16) -> HealthcheckArgs {
        HealthcheckArgs {
            port,
            timeout_seconds: 2,
        }
    }

    #[tokio::test]
    async fn ok_on_200_and_asks_for_health() {
        let (port, server) = one_shot("200 OK").await;
        run(args(port)).await.unwrap();
        assert_eq!(server.await.unwrap(), "GET /health HTTP/1.1");
    }

    #[tokio::test]
    async fn another_status_is_an_error_naming_it() {
        let (port, _server) = one_shot("503 Service Unavailable").await;
        let err = run(args(port)).await.unwrap_err().to_string();
        assert!(err.contains("503"), "{err}");
    }

    #[tokio::test]
    async fn nothing_listening_is_an_error_naming_the_address() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        drop(listener);
        let err = format!("{:#}", run(args(port)).await.unwrap_err());
        assert!(err.contains(&format!("127.0.0.1:{port}")), "{err}");
    }

    #[tokio::test]
    async fn a_server_that_never_answers_times_out() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let _hold = tokio::spawn(async move {
            let (_sock, _) = listener.accept().await.unwrap();
            std::future::pending::<()>().await
        });
        let mut a = args(port);
        a.timeout_seconds = 1;
        let err = run(a).await.unwrap_err().to_string();
        assert!(err.contains("no answer within 1 s"), "{err}");
    }
}
