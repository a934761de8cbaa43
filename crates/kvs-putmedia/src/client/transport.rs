//! The HTTP/1.1 transport: a hyper 1 client with rustls (aws-lc-rs, webpki roots, always
//! verified), and the error answers of the data plane.

use bytes::Buf;
use http_body_util::BodyExt;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

use super::config::Timeouts;
use super::error::{BoxError, Error, TimeoutPhase};
use super::session::ChannelBody;

pub(crate) type Connector = hyper_rustls::HttpsConnector<HttpConnector>;
pub(crate) type HttpClient = Client<Connector, ChannelBody>;

/// Largest error body read from an error answer; the rest is ignored.
const MAX_ERROR_BODY: usize = 64 * 1024;

pub(crate) fn http_client(timeouts: &Timeouts, allow_http: bool) -> HttpClient {
    let mut http = HttpConnector::new();
    http.enforce_http(false);
    http.set_connect_timeout(Some(timeouts.connect));
    // Acks are small and latency matters more than packet count.
    http.set_nodelay(true);
    let builder = hyper_rustls::HttpsConnectorBuilder::new().with_webpki_roots();
    let builder = if allow_http {
        builder.https_or_http()
    } else {
        builder.https_only()
    };
    let connector = builder.enable_http1().wrap_connector(http);
    Client::builder(TokioExecutor::new())
        // One PutMedia request per connection: KVS allows one connection per stream and a
        // pooled connection could be half-closed by the service after the last ack.
        .pool_max_idle_per_host(0)
        .build(connector)
}

/// Maps a failed request to [`Error::Transport`] or a connect [`Error::Timeout`].
pub(crate) fn request_error(
    stream: &str,
    e: hyper_util::client::legacy::Error,
    timeouts: &Timeouts,
) -> Error {
    let timed_out = {
        let mut src: Option<&(dyn std::error::Error + 'static)> = Some(&e);
        let mut found = false;
        while let Some(s) = src {
            if let Some(io) = s.downcast_ref::<std::io::Error>()
                && io.kind() == std::io::ErrorKind::TimedOut
            {
                found = true;
            }
            src = s.source();
        }
        found
    };
    if e.is_connect() && timed_out {
        return Error::Timeout {
            stream: stream.to_owned(),
            phase: TimeoutPhase::Connect,
            waited: timeouts.connect,
        };
    }
    Error::Transport {
        stream: stream.to_owned(),
        during: if e.is_connect() {
            "connecting to the data endpoint"
        } else {
            "sending the PutMedia request"
        },
        source: BoxError::from(Box::new(e) as Box<dyn std::error::Error + Send + Sync>),
    }
}

/// Reads an error answer (bounded in size and time) and maps it to the semantic variant: the AWS
/// error type from `x-amzn-ErrorType`, the JSON `message`, the request id (reference §2,
/// "HTTP-level errors").
pub(crate) async fn error_response(
    stream: &str,
    resp: http::Response<hyper::body::Incoming>,
    timeouts: &Timeouts,
) -> Error {
    let status = resp.status().as_u16();
    let header = |name: &str| {
        resp.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned()
    };
    let error_type = header("x-amzn-errortype");
    let mut request_id = header("x-amzn-requestid");
    if request_id.is_empty() {
        request_id = header("x-amz-request-id");
    }
    let mut body = resp.into_body();
    let mut buf = Vec::new();
    let read = async {
        while let Some(Ok(frame)) = body.frame().await {
            if let Ok(mut data) = frame.into_data() {
                let take = data.remaining().min(MAX_ERROR_BODY - buf.len());
                buf.extend_from_slice(&data.copy_to_bytes(take));
                if buf.len() >= MAX_ERROR_BODY {
                    break;
                }
            }
        }
    };
    // A missing or slow body must not hide the status we already have.
    let _ = tokio::time::timeout(timeouts.response_head, read).await;
    let message = error_message(&buf);
    Error::from_http(stream, status, &error_type, message, request_id)
}

fn error_message(body: &[u8]) -> String {
    #[derive(serde::Deserialize)]
    struct Msg {
        #[serde(alias = "Message")]
        message: Option<String>,
    }
    match serde_json::from_slice::<Msg>(body) {
        Ok(Msg { message: Some(m) }) => m,
        _ => String::from_utf8_lossy(&body[..body.len().min(512)])
            .trim()
            .to_owned(),
    }
}

/// The data endpoint's `putMedia` URI.
pub(crate) fn put_media_uri(endpoint: &http::Uri) -> Result<http::Uri, Error> {
    let base = endpoint.to_string();
    let uri = format!("{}/putMedia", base.trim_end_matches('/'));
    uri.parse()
        .map_err(|e| Error::config(format!("data endpoint {base:?} gives no valid URI: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_messages() {
        assert_eq!(
            error_message(br#"{"message":"no such stream"}"#),
            "no such stream"
        );
        assert_eq!(error_message(br#"{"Message":"x"}"#), "x");
        assert_eq!(error_message(b"plain text"), "plain text");
    }

    #[test]
    fn put_media_uri_appends_path() {
        let u: http::Uri = "https://s-1.kinesisvideo.us-east-1.amazonaws.com"
            .parse()
            .unwrap();
        assert_eq!(
            put_media_uri(&u).unwrap().to_string(),
            "https://s-1.kinesisvideo.us-east-1.amazonaws.com/putMedia"
        );
        let u: http::Uri = "http://127.0.0.1:9/".parse().unwrap();
        assert_eq!(
            put_media_uri(&u).unwrap().to_string(),
            "http://127.0.0.1:9/putMedia"
        );
    }
}
