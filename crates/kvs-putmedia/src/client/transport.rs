//! The HTTP/1.1 transport: a hyper 1 client with rustls (aws-lc-rs, always verified) trusting
//! what the SDK's own HTTPS client trusts (the platform root store, which honours
//! `SSL_CERT_FILE`/`SSL_CERT_DIR`, plus any CA bundle), reaching the data endpoint directly or
//! through an HTTP proxy tunnel (`CONNECT`), and the error answers of the data plane.

use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Buf;
use http_body_util::BodyExt;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::connect::proxy::Tunnel;
use hyper_util::client::proxy::matcher::Matcher;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;

use super::error::{BoxError, Error, TimeoutPhase};

pub(crate) type Connector = hyper_rustls::HttpsConnector<ProxyConnector>;

/// Bytes reserved for each read of a PutMedia response.
const ACK_READ_BUFFER: usize = 1024;

/// Largest error body read from an error answer; the rest is ignored.
const MAX_ERROR_BODY: usize = 64 * 1024;

/// Which HTTP proxy a client's connections go through, as `HTTPS_PROXY`, `HTTP_PROXY` and
/// `NO_PROXY` say for every AWS SDK. The proxy is reached over plain HTTP and asked for a
/// `CONNECT` tunnel to the endpoint (TLS then runs end to end, through the tunnel); user and
/// password in the proxy URL become `Proxy-Authorization: Basic`.
///
/// [`PutMediaClientBuilder::from_env`](crate::PutMediaClientBuilder::from_env) reads the
/// variables; the same settings then serve PutMedia and the SDK calls.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[must_use]
pub struct ProxySettings {
    pub(crate) https: Option<String>,
    pub(crate) http: Option<String>,
    pub(crate) no_proxy: Option<String>,
}

impl ProxySettings {
    /// No proxy: every connection is direct.
    pub fn none() -> Self {
        Self::default()
    }

    /// Tunnel `https://` endpoints through this proxy (`http://host:port`).
    pub fn with_https(mut self, url: impl Into<String>) -> Self {
        self.https = Some(url.into());
        self
    }

    /// Tunnel plain `http://` endpoints (the emulator) through this proxy.
    pub fn with_http(mut self, url: impl Into<String>) -> Self {
        self.http = Some(url.into());
        self
    }

    /// Hosts reached directly, in `NO_PROXY` syntax: comma-separated names (`.example.com`
    /// matches subdomains), IP addresses, CIDR blocks, or `*`.
    pub fn with_no_proxy(mut self, list: impl Into<String>) -> Self {
        self.no_proxy = Some(list.into());
        self
    }

    /// Whether any proxy is set.
    pub fn is_none(&self) -> bool {
        self.https.is_none() && self.http.is_none()
    }

    /// Checks the proxy URLs.
    pub(crate) fn validate(&self) -> Result<(), Error> {
        for url in [&self.https, &self.http].into_iter().flatten() {
            let uri: http::Uri = url
                .parse()
                .map_err(|e| Error::config(format!("proxy {url:?} is not a URL: {e}")))?;
            if uri.scheme_str() != Some("http") || uri.host().is_none() {
                return Err(Error::config(format!(
                    "proxy {url:?} is not an http://host:port URL (the tunnel to the endpoint is \
                     TLS; the proxy itself is reached over plain HTTP)"
                )));
            }
        }
        Ok(())
    }

    fn matcher(&self) -> Option<Matcher> {
        if self.is_none() {
            return None;
        }
        let mut b = Matcher::builder();
        if let Some(u) = &self.https {
            b = b.https(u.clone());
        }
        if let Some(u) = &self.http {
            b = b.http(u.clone());
        }
        if let Some(n) = &self.no_proxy {
            b = b.no(n.clone());
        }
        Some(b.build())
    }

    /// The same settings for the SDK's HTTP client.
    fn smithy(&self) -> aws_smithy_http_client::proxy::ProxyConfig {
        use aws_smithy_http_client::proxy::ProxyConfig;
        let with_no = |c: ProxyConfig| match &self.no_proxy {
            Some(n) => c.no_proxy(n),
            None => c,
        };
        // Validated before: both parse.
        let https = self
            .https
            .as_deref()
            .and_then(|u| ProxyConfig::https(u).ok());
        let http = self.http.as_deref().and_then(|u| ProxyConfig::http(u).ok());
        match (https, http) {
            (Some(h), None) | (None, Some(h)) => with_no(h),
            (Some(_), Some(_)) if self.https == self.http => self
                .https
                .as_deref()
                .and_then(|u| ProxyConfig::all(u).ok())
                .map_or_else(ProxyConfig::disabled, with_no),
            // The SDK's config holds one proxy: the one for TLS endpoints, where AWS lives.
            (Some(h), Some(_)) => with_no(h),
            (None, None) => ProxyConfig::disabled(),
        }
    }
}

/// What a client's TLS trusts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Trust {
    pub(crate) native_roots: bool,
    pub(crate) bundles: Vec<PathBuf>,
    pub(crate) pem: Vec<Vec<u8>>,
}

impl Default for Trust {
    fn default() -> Self {
        Self {
            native_roots: true,
            bundles: Vec::new(),
            pem: Vec::new(),
        }
    }
}

/// The platform's root certificates, loaded once per process (a few hundred certificates;
/// loading them can take 100 ms), as the SDK's HTTPS client does.
fn native_roots() -> &'static [CertificateDer<'static>] {
    static ROOTS: OnceLock<Vec<CertificateDer<'static>>> = OnceLock::new();
    ROOTS.get_or_init(|| {
        let r = rustls_native_certs::load_native_certs();
        if !r.errors.is_empty() {
            tracing::warn!(errors = ?r.errors, "some platform root certificates could not be loaded");
        }
        r.certs
    })
}

/// The resolved trust: parsed extra certificates (as PEM, for the SDK too) and the root store.
pub(crate) struct ResolvedTrust {
    roots: rustls::RootCertStore,
    extra_pem: Vec<Vec<u8>>,
    native_roots: bool,
}

impl Trust {
    /// Reads the bundles and checks every certificate, so a bad bundle is a clear error at
    /// build time rather than a handshake failure later.
    pub(crate) fn resolve(&self) -> Result<ResolvedTrust, Error> {
        let mut roots = rustls::RootCertStore::empty();
        if self.native_roots {
            let (valid, _) = roots.add_parsable_certificates(native_roots().iter().cloned());
            if valid == 0 {
                tracing::warn!("no platform root certificates found");
            }
        }
        let mut extra_pem = Vec::new();
        let files = self.bundles.iter().map(|p| {
            std::fs::read(p)
                .map(|b| (p.display().to_string(), b))
                .map_err(|e| {
                    Error::config(format!("cannot read the CA bundle {}: {e}", p.display()))
                })
        });
        let inline = self
            .pem
            .iter()
            .enumerate()
            .map(|(i, b)| Ok((format!("CA bundle #{}", i + 1), b.clone())));
        for item in files.chain(inline) {
            let (name, pem) = item?;
            let certs = CertificateDer::pem_slice_iter(&pem)
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| Error::config(format!("{name} is not valid PEM: {e}")))?;
            if certs.is_empty() {
                return Err(Error::config(format!("{name} holds no certificate")));
            }
            for c in certs {
                roots
                    .add(c)
                    .map_err(|e| Error::config(format!("{name}: unusable certificate: {e}")))?;
            }
            extra_pem.push(pem);
        }
        if roots.is_empty() {
            return Err(Error::config(
                "no trusted root certificate: the platform store is off or empty and no CA bundle is set",
            ));
        }
        Ok(ResolvedTrust {
            roots,
            extra_pem,
            native_roots: self.native_roots,
        })
    }
}

/// An HTTP client for the SDK calls with the same trust and proxy as PutMedia.
pub(crate) fn sdk_http_client(
    trust: &ResolvedTrust,
    proxy: &ProxySettings,
) -> Result<aws_smithy_runtime_api::client::http::SharedHttpClient, Error> {
    use aws_smithy_http_client::tls;
    let mut store = tls::TrustStore::empty().with_native_roots(trust.native_roots);
    for pem in &trust.extra_pem {
        store = store.with_pem_certificate(pem.clone());
    }
    let ctx = tls::TlsContext::builder()
        .with_trust_store(store)
        .build()
        .map_err(|e| Error::config(format!("TLS settings for the SDK: {e}")))?;
    let proxy = proxy.smithy();
    // What the SDK's default HTTPS client does (aws-smithy-runtime `default_https_client`),
    // with our trust store and proxy instead of the process environment's.
    Ok(
        aws_smithy_http_client::Builder::new().build_with_connector_fn(
            move |settings, components| {
                let mut b = aws_smithy_http_client::ConnectorBuilder::default().tls_provider(
                    tls::Provider::Rustls(tls::rustls_provider::CryptoMode::AwsLc),
                );
                b.set_connector_settings(settings.cloned());
                if let Some(c) = components {
                    b.set_sleep_impl(c.sleep_impl());
                }
                b.set_proxy_config(Some(proxy.clone()));
                b.tls_context(ctx.clone()).build()
            },
        ),
    )
}

/// The PutMedia HTTP/1.1 client, for request bodies of type `B`; `connect` limits the TCP and
/// TLS connection.
pub(crate) fn http_client<B>(
    connect: Duration,
    allow_http: bool,
    trust: &ResolvedTrust,
    proxy: &ProxySettings,
) -> Result<Client<Connector, B>, Error>
where
    B: http_body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let mut http = HttpConnector::new();
    http.enforce_http(false);
    http.set_connect_timeout(Some(connect));
    // Acks are small and latency matters more than packet count.
    http.set_nodelay(true);
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::config(format!("TLS settings: {e}")))?
        .with_root_certificates(trust.roots.clone())
        .with_no_client_auth();
    let builder = hyper_rustls::HttpsConnectorBuilder::new().with_tls_config(tls);
    let builder = if allow_http {
        builder.https_or_http()
    } else {
        builder.https_only()
    };
    let connector = builder.enable_http1().wrap_connector(ProxyConnector {
        http,
        proxy: proxy.matcher().map(Arc::new),
    });
    Ok(Client::builder(TokioExecutor::new())
        // One PutMedia request per connection: KVS allows one connection per stream and a
        // pooled connection could be half-closed by the service after the last ack.
        .pool_max_idle_per_host(0)
        // What a PutMedia connection reads is the response head and ack lines of ~150 bytes;
        // hyper's adaptive default reserves 8 KiB per connection, a quarter of what an open
        // session may hold (issue 13: 32 KiB).
        .http1_read_buf_exact_size(ACK_READ_BUFFER)
        .build(connector))
}

/// Opens the TCP connection to the endpoint, or a `CONNECT` tunnel to it through the proxy
/// that the proxy settings pick for it.
#[derive(Clone)]
pub(crate) struct ProxyConnector {
    http: HttpConnector,
    proxy: Option<Arc<Matcher>>,
}

type Connecting =
    Pin<Box<dyn Future<Output = Result<TokioIo<tokio::net::TcpStream>, BoxDynError>> + Send>>;
type BoxDynError = Box<dyn std::error::Error + Send + Sync>;

impl tower_service::Service<http::Uri> for ProxyConnector {
    type Response = TokioIo<tokio::net::TcpStream>;
    type Error = BoxDynError;
    type Future = Connecting;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        // HttpConnector is always ready.
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, dst: http::Uri) -> Self::Future {
        let intercept = self.proxy.as_ref().and_then(|m| m.intercept(&dst));
        match intercept {
            Some(i) => {
                tracing::debug!(proxy = %i.uri(), endpoint = %dst, "connecting through the proxy");
                let mut tunnel = Tunnel::new(i.uri().clone(), self.http.clone());
                if let Some(auth) = i.basic_auth() {
                    tunnel = tunnel.with_auth(auth.clone());
                }
                Box::pin(async move {
                    tower_service::Service::call(&mut tunnel, dst)
                        .await
                        .map_err(|e| Box::new(e) as BoxDynError)
                })
            }
            None => {
                let fut = tower_service::Service::call(&mut self.http, dst);
                Box::pin(async move { fut.await.map_err(|e| Box::new(e) as BoxDynError) })
            }
        }
    }
}

/// Maps a failed request to [`Error::Transport`] or a connect [`Error::Timeout`] (after
/// `connect`).
pub(crate) fn request_error(
    stream: &str,
    e: hyper_util::client::legacy::Error,
    connect: Duration,
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
    if let Some(tls) = untrusted_certificate(&e) {
        // Retrying cannot help: the trust store decides, and it is configuration.
        return Error::config(format!(
            "the TLS certificate of the data endpoint for stream {stream} was refused ({tls}): \
             trust its CA with with_ca_bundle, AWS_CA_BUNDLE or the profile's ca_bundle"
        ));
    }
    if e.is_connect() && timed_out {
        return Error::Timeout {
            stream: stream.to_owned(),
            phase: TimeoutPhase::Connect,
            waited: connect,
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

/// A certificate error of the TLS handshake somewhere in `e`'s sources (rustls wraps its errors
/// in an `io::Error`, whose `source()` skips the wrapped error itself).
fn untrusted_certificate(e: &(dyn std::error::Error + 'static)) -> Option<String> {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = cur {
        if let Some(
            r @ (rustls::Error::InvalidCertificate(_) | rustls::Error::NoCertificatesPresented),
        ) = err.downcast_ref::<rustls::Error>()
        {
            return Some(r.to_string());
        }
        cur = match err
            .downcast_ref::<std::io::Error>()
            .and_then(|io| io.get_ref())
        {
            Some(inner) => Some(inner as &(dyn std::error::Error + 'static)),
            None => err.source(),
        };
    }
    None
}

/// Reads an error answer (bounded in size and time) and maps it to the semantic variant: the AWS
/// error type from `x-amzn-ErrorType`, the JSON `message`, the request id (docs/protocol.md §2,
/// "HTTP-level errors").
pub(crate) async fn error_response(
    stream: &str,
    resp: http::Response<hyper::body::Incoming>,
    response_head: Duration,
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
    let _ = tokio::time::timeout(response_head, read).await;
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
    fn proxy_settings_pick_the_proxy_per_scheme_and_honour_no_proxy() {
        let p = ProxySettings::none()
            .with_https("http://proxy:3128")
            .with_http("http://plain:8080")
            .with_no_proxy("localhost,.internal");
        p.validate().unwrap();
        let m = p.matcher().unwrap();
        let via = |u: &str| {
            m.intercept(&u.parse().unwrap())
                .map(|i| i.uri().to_string())
        };
        assert_eq!(
            via("https://kinesisvideo.us-east-1.amazonaws.com").as_deref(),
            Some("http://proxy:3128/")
        );
        assert_eq!(
            via("http://127.0.0.1:9").as_deref(),
            Some("http://plain:8080/")
        );
        assert_eq!(via("https://s-1.internal"), None);
        assert_eq!(via("https://localhost:443"), None);
        assert!(ProxySettings::none().matcher().is_none());
        assert!(
            ProxySettings::none()
                .with_https("https://p:1")
                .validate()
                .is_err()
        );
        assert!(
            ProxySettings::none()
                .with_https("not a url")
                .validate()
                .is_err()
        );
    }

    #[test]
    fn a_ca_bundle_must_hold_certificates() {
        let t = Trust {
            native_roots: false,
            bundles: Vec::new(),
            pem: vec![b"not a certificate".to_vec()],
        };
        let err = t.resolve().err().unwrap().to_string();
        assert!(err.contains("CA bundle #1"), "{err}");
        let t = Trust {
            native_roots: true,
            bundles: vec!["/nonexistent/ca.pem".into()],
            pem: Vec::new(),
        };
        let err = t.resolve().err().unwrap().to_string();
        assert!(err.contains("/nonexistent/ca.pem"), "{err}");
        let t = Trust {
            native_roots: false,
            bundles: Vec::new(),
            pem: Vec::new(),
        };
        assert!(t.resolve().is_err());
    }

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
