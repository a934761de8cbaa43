//! Response header names in AWS's casing (`x-amzn-RequestId`, `x-amzn-ErrorType`).
//!
//! HTTP header names are case-insensitive, but some clients match them exactly (the official C
//! producer looks for `x-amzn-RequestId`). hyper writes HTTP/1 header names in lower case; its
//! `title_case_headers` gives `X-Amzn-Requestid`, which is not AWS's spelling either. What hyper
//! does honour is its private header-case map in a response's extensions, the one
//! `preserve_header_case` records from a request ("It will also look for and use such an
//! extension in any provided `Response`", `hyper::server::conn::http1::Builder`). So the
//! emulator has hyper parse one request that spells the names AWS's way, keeps that request's
//! extensions, and hands a copy to every response.

use std::sync::OnceLock;

use bytes::Bytes;
use http::{HeaderValue, Request, Response};
use http_body_util::Empty;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::io::AsyncWriteExt as _;

/// The names written with AWS's casing.
const AWS_CASED: &[&str] = &["x-amzn-RequestId", "x-amzn-ErrorType"];

static TEMPLATE: OnceLock<http::Extensions> = OnceLock::new();

/// Has hyper record the casing of [`AWS_CASED`]; idempotent. Without it responses still work,
/// with lower-case names.
pub(crate) async fn init() {
    if TEMPLATE.get().is_some() {
        return;
    }
    match record().await {
        Some(ext) => {
            let _ = TEMPLATE.set(ext);
        }
        None => tracing::warn!("could not record header casing; names stay lower case"),
    }
}

async fn record() -> Option<http::Extensions> {
    let (client, server) = tokio::io::duplex(4096);
    let (tx, rx) = tokio::sync::oneshot::channel();
    let tx = std::sync::Mutex::new(Some(tx));
    let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
        if let Some(tx) = tx.lock().ok().and_then(|mut t| t.take()) {
            let _ = tx.send(req.extensions().clone());
        }
        async { Ok::<_, std::convert::Infallible>(Response::new(Empty::<Bytes>::new())) }
    });
    let conn = hyper::server::conn::http1::Builder::new()
        .preserve_header_case(true)
        .serve_connection(TokioIo::new(server), svc);
    let mut request = String::from("GET / HTTP/1.1\r\nhost: x\r\n");
    for name in AWS_CASED {
        request.push_str(&format!("{name}: x\r\n"));
    }
    request.push_str("connection: close\r\n\r\n");
    let mut client = client;
    client.write_all(request.as_bytes()).await.ok()?;
    let (_, ext) = tokio::join!(conn, rx);
    ext.ok()
}

/// Gives `resp` an `x-amzn-RequestId` if it has none, and AWS's casing for the names above.
pub(crate) fn apply<B>(resp: &mut Response<B>) {
    if !resp.headers().contains_key("x-amzn-requestid")
        && let Ok(v) = HeaderValue::from_str(&super::request_id())
    {
        resp.headers_mut().insert("x-amzn-requestid", v);
    }
    if let Some(ext) = TEMPLATE.get() {
        resp.extensions_mut().extend(ext.clone());
    }
}
