//! The HTTP server: one port, requests routed by the service in their SigV4 credential scope.

pub(crate) mod auth;
mod console;
pub mod faults;
mod header_case;
mod kvs;
mod playback;
mod putmedia;
mod remux;
pub use putmedia::error_code as putmedia_error_code;
mod notify;
pub use notify::encode_event_key;
mod s3;
mod sqs;
pub use sqs::QueuedMessage;
pub(crate) mod state;
mod sts;

use std::convert::Infallible;
use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderValue, Request, Response, StatusCode};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinSet;

use self::faults::Faults;
use self::state::{ACCOUNT_ID, Config, Credential, Shared};
pub use self::state::{
    AckEventType, ConnectionEnd, ConnectionRecord, MediaRetention, SentAck, StoredFragment,
};
use crate::api::ApiError;
use crate::error::Error;
use crate::sigv4;

/// Boxed error of response bodies.
pub(crate) type BoxError = Box<dyn std::error::Error + Send + Sync>;
/// Every response body the emulator writes.
pub(crate) type RespBody = BoxBody<Bytes, BoxError>;

/// Default access key id (documented in `docs/emulator.md`).
pub const DEFAULT_ACCESS_KEY_ID: &str = "AKIAEMULATOR00000000";
/// Default secret access key.
pub const DEFAULT_SECRET_ACCESS_KEY: &str = "emulator/secret/access/key/00000000000000";

/// Default rotation overlap window: a producer that rotates at a fragment boundary (as the
/// official one does) needs the old request only to finish the fragment it is sending, and a
/// fragment lasts at most 20 s (docs/protocol.md §3), so 20 s covers every well-behaved
/// rotation while still bounding two connections sending media at once.
pub const DEFAULT_ROTATION_OVERLAP: Duration = Duration::from_secs(20);

/// Credentials the emulator accepts. `Debug` redacts the secret.
#[derive(Clone, PartialEq, Eq)]
pub struct EmulatorCredentials {
    /// Access key id.
    pub access_key_id: String,
    /// Secret access key.
    pub secret_access_key: String,
}

impl fmt::Debug for EmulatorCredentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EmulatorCredentials")
            .field("access_key_id", &self.access_key_id)
            .field("secret_access_key", &"** redacted **")
            .finish()
    }
}

/// Configures and starts an [`Emulator`].
#[derive(Debug, Clone)]
pub struct EmulatorBuilder {
    region: String,
    credentials: EmulatorCredentials,
    bind: SocketAddr,
    data_dir: Option<PathBuf>,
    persist_delay: Duration,
    idle_ack_interval: Duration,
    idle_timeout: Duration,
    max_connection_duration: Duration,
    ingest_rate_limit: u64,
    max_clock_skew: Duration,
    header_read_timeout: Duration,
    put_media_requests_per_second: u32,
    error_drain_timeout: Duration,
    error_drain_limit: u64,
    media_retention: MediaRetention,
    rotation_overlap: Duration,
    seed: u64,
}

impl Default for EmulatorBuilder {
    fn default() -> Self {
        Self {
            region: "us-east-1".into(),
            credentials: EmulatorCredentials {
                access_key_id: DEFAULT_ACCESS_KEY_ID.into(),
                secret_access_key: DEFAULT_SECRET_ACCESS_KEY.into(),
            },
            bind: SocketAddr::from(([127, 0, 0, 1], 0)),
            data_dir: None,
            persist_delay: Duration::from_millis(100),
            idle_ack_interval: Duration::from_secs(3),
            idle_timeout: Duration::from_secs(30),
            max_connection_duration: Duration::from_secs(45 * 60),
            ingest_rate_limit: 12_500_000,
            max_clock_skew: Duration::from_secs(300),
            header_read_timeout: Duration::from_secs(10),
            put_media_requests_per_second: 5,
            error_drain_timeout: Duration::from_secs(2),
            error_drain_limit: 64 << 20,
            media_retention: MediaRetention::Full,
            rotation_overlap: DEFAULT_ROTATION_OVERLAP,
            seed: 0,
        }
    }
}

impl EmulatorBuilder {
    /// Region served (default `us-east-1`); KVS requests scoped to another region get 403.
    pub fn with_region(mut self, r: impl Into<String>) -> Self {
        self.region = r.into();
        self
    }
    /// Long-term credentials accepted (default [`DEFAULT_ACCESS_KEY_ID`] /
    /// [`DEFAULT_SECRET_ACCESS_KEY`]).
    pub fn with_credentials(
        mut self,
        access_key_id: impl Into<String>,
        secret: impl Into<String>,
    ) -> Self {
        self.credentials = EmulatorCredentials {
            access_key_id: access_key_id.into(),
            secret_access_key: secret.into(),
        };
        self
    }
    /// Listening address (default `127.0.0.1:0`, a free port).
    pub fn with_bind(mut self, addr: SocketAddr) -> Self {
        self.bind = addr;
        self
    }
    /// Keep streams, fragments, S3 objects and SQS queues (with their messages) in this directory
    /// so they survive a restart.
    /// Default: in memory, with S3 objects in a temporary directory removed on drop.
    pub fn with_data_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.data_dir = Some(dir.into());
        self
    }
    /// Delay between RECEIVED and PERSISTED (default 100 ms).
    pub fn with_persist_delay(mut self, d: Duration) -> Self {
        self.persist_delay = d;
        self
    }
    /// Interval of IDLE acks while no media flows (default 3 s).
    pub fn with_idle_ack_interval(mut self, d: Duration) -> Self {
        self.idle_ack_interval = d;
        self
    }
    /// A PutMedia connection without data for this long is closed (default 30 s, docs/protocol.md §2).
    /// Also bounds how long any request body may stall.
    pub fn with_idle_timeout(mut self, d: Duration) -> Self {
        self.idle_timeout = d;
        self
    }
    /// PutMedia connections older than this get ERROR 4003 and are closed (default 45 min).
    pub fn with_max_connection_duration(mut self, d: Duration) -> Self {
        self.max_connection_duration = d;
        self
    }
    /// Per-stream ingest rate in bytes/s (default 12.5 MB/s, docs/protocol.md §3); faster producers
    /// are slowed down by reading their body more slowly.
    pub fn with_ingest_rate_limit(mut self, bytes_per_sec: u64) -> Self {
        self.ingest_rate_limit = bytes_per_sec;
        self
    }
    /// Largest accepted difference between a request's `x-amz-date` and the emulator clock
    /// (default 5 min, docs/protocol.md §1.6).
    pub fn with_max_clock_skew(mut self, d: Duration) -> Self {
        self.max_clock_skew = d;
        self
    }
    /// How long a client may take to send request headers (slowloris guard; default 10 s).
    pub fn with_header_read_timeout(mut self, d: Duration) -> Self {
        self.header_read_timeout = d;
        self
    }
    /// PutMedia requests accepted per stream within any one second (default 5, docs/protocol.md §3);
    /// more get `400 ClientLimitExceededException`. 0 turns the limit off.
    pub fn with_put_media_requests_per_second(mut self, n: u32) -> Self {
        self.put_media_requests_per_second = n;
        self
    }
    /// After an ERROR ack ends a PutMedia response, how long the emulator keeps reading and
    /// discarding the rest of the request body (default 2 s, counted from the end of the
    /// response) before it closes. Closing with unread bytes makes the kernel send a TCP RST,
    /// which can destroy the ERROR ack in flight; the service ends the response cleanly
    /// (docs/protocol.md §2). `Duration::ZERO` closes at once.
    pub fn with_error_drain_timeout(mut self, d: Duration) -> Self {
        self.error_drain_timeout = d;
        self
    }
    /// Most body bytes discarded after an ERROR ack before closing anyway (default 64 MiB).
    pub fn with_error_drain_limit(mut self, bytes: u64) -> Self {
        self.error_drain_limit = bytes;
        self
    }
    /// What is kept of the media PutMedia delivers (default [`MediaRetention::Full`]).
    /// [`MediaRetention::MetadataOnly`] is for load runs (many streams, many minutes) whose
    /// memory must not grow with the bytes sent; it cannot be combined with
    /// [`with_data_dir`](Self::with_data_dir), whose point is keeping the media.
    pub fn with_media_retention(mut self, retention: MediaRetention) -> Self {
        self.media_retention = retention;
        self
    }
    /// How long a PutMedia superseded by a newer one on the same stream may keep sending media
    /// (default [`DEFAULT_ROTATION_OVERLAP`]); `Duration::ZERO` refuses the newer one with
    /// `ConnectionLimitExceededException` instead. See docs/emulator.md, "Rotation overlap".
    pub fn with_rotation_overlap(mut self, window: Duration) -> Self {
        self.rotation_overlap = window;
        self
    }
    /// Seed of the fault-injection RNG (and of STS-issued credentials): same seed, same run.
    pub fn with_seed(mut self, seed: u64) -> Self {
        self.seed = seed;
        self
    }

    fn validate(&self) -> Result<(), Error> {
        let bad = |reason: &str| {
            Err(Error::InvalidConfig {
                reason: reason.into(),
            })
        };
        if self.region.is_empty()
            || !self
                .region
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        {
            return bad("region must be non-empty [a-z0-9-]");
        }
        if self.credentials.access_key_id.is_empty()
            || self.credentials.secret_access_key.is_empty()
        {
            return bad("credentials must not be empty");
        }
        if self.idle_ack_interval.is_zero() || self.idle_timeout.is_zero() {
            return bad("idle_ack_interval and idle_timeout must be above zero");
        }
        if self.max_connection_duration.is_zero() {
            return bad("max_connection_duration must be above zero");
        }
        if self.ingest_rate_limit == 0 {
            return bad("ingest_rate_limit must be above zero");
        }
        if self.header_read_timeout.is_zero() {
            return bad("header_read_timeout must be above zero");
        }
        if self.media_retention == MediaRetention::MetadataOnly && self.data_dir.is_some() {
            return bad("media_retention MetadataOnly cannot be combined with data_dir");
        }
        Ok(())
    }

    /// Binds, loads any persisted state, and starts serving.
    pub async fn start(self) -> Result<Emulator, Error> {
        self.validate()?;
        let (tempdir, root) = match &self.data_dir {
            Some(d) => (None, d.clone()),
            None => {
                let t = tempfile::Builder::new()
                    .prefix("kvs-emulator-")
                    .tempdir()
                    .map_err(|source| Error::DataDir {
                        path: std::env::temp_dir(),
                        source,
                    })?;
                let p = t.path().to_owned();
                (Some(t), p)
            }
        };
        let s3_root = root.join("s3");
        std::fs::create_dir_all(&s3_root).map_err(|source| Error::DataDir {
            path: s3_root.clone(),
            source,
        })?;
        let listener = TcpListener::bind(self.bind)
            .await
            .map_err(|source| Error::Bind {
                addr: self.bind,
                source,
            })?;
        let addr = listener.local_addr().map_err(|source| Error::Bind {
            addr: self.bind,
            source,
        })?;
        let url = format!("http://{addr}");
        let cfg = Config {
            region: self.region.clone(),
            persist_delay: self.persist_delay,
            idle_ack_interval: self.idle_ack_interval,
            idle_timeout: self.idle_timeout,
            max_connection_duration: self.max_connection_duration,
            ingest_rate_limit: self.ingest_rate_limit,
            max_clock_skew: self.max_clock_skew,
            header_read_timeout: self.header_read_timeout,
            put_media_requests_per_second: self.put_media_requests_per_second,
            error_drain_timeout: self.error_drain_timeout,
            error_drain_limit: self.error_drain_limit,
            media_retention: self.media_retention,
            rotation_overlap: self.rotation_overlap,
        };
        let shared = Arc::new(Shared::new(
            cfg,
            url.clone(),
            Faults::new(self.seed),
            self.data_dir.clone(),
        ));
        shared.load()?;
        shared.creds.lock().expect("creds lock").insert(
            self.credentials.access_key_id.clone(),
            Credential {
                secret: self.credentials.secret_access_key.clone(),
                session_token: None,
                expires_ms: None,
                arn: format!("arn:aws:iam::{ACCOUNT_ID}:user/emulator"),
                user_id: "AIDAEMULATORUSER0000".into(),
            },
        );
        let s3 = s3::build(&s3_root, shared.clone()).map_err(|source| Error::DataDir {
            path: s3_root.clone(),
            source,
        })?;
        let (shutdown_tx, shutdown_rx) = watch::channel(false);
        let router = Router {
            shared: shared.clone(),
            s3: s3.clone(),
            shutdown: shutdown_rx.clone(),
            playback: Arc::new(playback::Playback::new()),
        };
        header_case::init().await;
        let accept = tokio::spawn(accept_loop(listener, router, shutdown_rx));
        tracing::info!(%url, region = %self.region, "kvs-emulator listening");
        Ok(Emulator {
            addr,
            url,
            region: self.region,
            credentials: self.credentials,
            shared,
            s3,
            shutdown_tx,
            accept: Some(accept),
            _tempdir: tempdir,
        })
    }
}

/// A running emulator. Dropping it stops the server (and removes its temporary directory).
pub struct Emulator {
    addr: SocketAddr,
    url: String,
    region: String,
    credentials: EmulatorCredentials,
    shared: Arc<Shared>,
    s3: Arc<s3s::service::S3Service>,
    shutdown_tx: watch::Sender<bool>,
    accept: Option<tokio::task::JoinHandle<()>>,
    _tempdir: Option<tempfile::TempDir>,
}

impl fmt::Debug for Emulator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Emulator")
            .field("url", &self.url)
            .field("region", &self.region)
            .field("credentials", &self.credentials)
            .finish_non_exhaustive()
    }
}

impl Emulator {
    /// A builder with the defaults documented on each setter.
    pub fn builder() -> EmulatorBuilder {
        EmulatorBuilder::default()
    }
    /// `http://127.0.0.1:PORT`: the endpoint for every service.
    pub fn url(&self) -> String {
        self.url.clone()
    }
    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
    /// The region served.
    pub fn region(&self) -> &str {
        &self.region
    }
    /// The long-term credentials accepted.
    pub fn credentials(&self) -> EmulatorCredentials {
        self.credentials.clone()
    }
    /// An AWS SDK configuration that points every SDK client (Kinesis Video, its data plane
    /// clients, S3, STS, SQS) at this emulator: its region, its URL as the endpoint, and its
    /// long-term credentials. Built from nothing in the environment (no profile, no `AWS_*`
    /// variables), so a developer's own AWS setup cannot leak into a test. The SDK fills in its
    /// default HTTP client, sleep and time source when a client is built from it.
    ///
    /// ```no_run
    /// # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
    /// let emu = kvs_emulator::Emulator::builder().start().await?;
    /// let kvs = aws_sdk_kinesisvideo::Client::new(&emu.sdk_config());
    /// # Ok(()) }
    /// ```
    #[cfg(feature = "sdk")]
    pub fn sdk_config(&self) -> aws_types::SdkConfig {
        let c = &self.credentials;
        let credentials = aws_credential_types::Credentials::new(
            c.access_key_id.clone(),
            c.secret_access_key.clone(),
            None,
            None,
            "kvs-emulator",
        );
        aws_types::SdkConfig::builder()
            .behavior_version(
                aws_smithy_runtime_api::client::behavior_version::BehaviorVersion::latest(),
            )
            .region(aws_types::region::Region::new(self.region.clone()))
            .endpoint_url(self.url.clone())
            .credentials_provider(
                aws_credential_types::provider::SharedCredentialsProvider::new(credentials),
            )
            .build()
    }
    /// Creates a stream as `CreateStream` would; returns its ARN.
    pub async fn create_stream(&self, name: &str, retention_hours: u32) -> Result<String, Error> {
        kvs::create_stream(&self.shared, name, retention_hours, None, None).map_err(|source| {
            Error::Kvs {
                stream: name.to_owned(),
                source,
            }
        })
    }
    /// Creates an S3 bucket (through the same S3 implementation requests reach).
    pub async fn create_bucket(&self, bucket: &str) -> Result<(), Error> {
        self.s3_call(http::Method::PUT, bucket, "", Bytes::new())
            .await
    }
    /// Stores an S3 object.
    pub async fn put_object(&self, bucket: &str, key: &str, body: Bytes) -> Result<(), Error> {
        self.s3_call(http::Method::PUT, bucket, key, body).await
    }
    async fn s3_call(
        &self,
        method: http::Method,
        bucket: &str,
        key: &str,
        body: Bytes,
    ) -> Result<(), Error> {
        let req = s3::signed_request(
            &self.addr,
            &self.region,
            &self.credentials,
            method.clone(),
            bucket,
            key,
            body,
            (self.shared.now_ms() / 1000) as i64,
        );
        let resp = s3::call(&self.s3, req).await;
        let status = resp.status();
        if status.is_success() {
            if method == http::Method::PUT && !key.is_empty() {
                let akid = &self.credentials.access_key_id;
                notify::object_created(
                    &self.shared,
                    &self.s3,
                    akid,
                    bucket,
                    key,
                    "ObjectCreated:Put",
                    "127.0.0.1",
                )
                .await;
            }
            return Ok(());
        }
        let body = resp
            .into_body()
            .collect()
            .await
            .map(|b| b.to_bytes())
            .unwrap_or_default();
        Err(Error::S3 {
            bucket: bucket.into(),
            key: key.into(),
            status: status.as_u16(),
            message: String::from_utf8_lossy(&body).chars().take(500).collect(),
        })
    }
    /// Every fragment PutMedia delivered to the stream, in order (empty for an unknown stream).
    pub fn fragments(&self, stream: &str) -> Vec<StoredFragment> {
        self.shared
            .with_stream(stream, |s| s.fragments.clone())
            .unwrap_or_default()
    }
    /// Every ack written on the stream's PutMedia connections, in order.
    pub fn acks(&self, stream: &str) -> Vec<SentAck> {
        self.shared
            .with_stream(stream, |s| s.acks.clone())
            .unwrap_or_default()
    }
    /// The stream's accepted PutMedia connections (headers without secrets, timing, bytes, how
    /// each ended); requests refused before the 200 are not recorded.
    pub fn connections(&self, stream: &str) -> Vec<ConnectionRecord> {
        self.shared
            .with_stream(stream, |s| s.connections.clone())
            .unwrap_or_default()
    }
    /// The web console's page for `stream`: live playback, the fragment timeline with
    /// thumbnails, and the stream's recent acks and errors (see `docs/emulator.md`).
    pub fn console_url(&self, stream: &str) -> String {
        let q: String = url::form_urlencoded::byte_serialize(stream.as_bytes()).collect();
        format!("{}/console/?stream={q}", self.url)
    }
    /// The fault script.
    pub fn faults(&self) -> &Faults {
        &self.shared.faults
    }
    /// Stops accepting, aborts open connections, and waits for the server task to end.
    pub async fn shutdown(mut self) {
        let _ = self.shutdown_tx.send(true);
        if let Some(task) = self.accept.take() {
            let _ = task.await;
        }
    }
}

impl Drop for Emulator {
    fn drop(&mut self) {
        let _ = self.shutdown_tx.send(true);
        if let Some(task) = self.accept.take() {
            task.abort();
        }
    }
}

#[derive(Clone)]
pub(crate) struct Router {
    pub(crate) shared: Arc<Shared>,
    pub(crate) s3: Arc<s3s::service::S3Service>,
    pub(crate) shutdown: watch::Receiver<bool>,
    pub(crate) playback: Arc<playback::Playback>,
}

async fn accept_loop(listener: TcpListener, router: Router, mut shutdown: watch::Receiver<bool>) {
    // Connection tasks live in this set: when the loop ends (shutdown, or this task is aborted
    // by Drop) the set is dropped and every connection is aborted with it.
    let mut conns = JoinSet::new();
    loop {
        tokio::select! {
            res = listener.accept() => {
                let (tcp, peer) = match res {
                    Ok(x) => x,
                    Err(e) => {
                        // EMFILE and friends: back off instead of spinning.
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let _ = tcp.set_nodelay(true);
                let router = router.clone();
                conns.spawn(async move {
                    let header_timeout = router.shared.cfg.header_read_timeout;
                    let close = CloseConnection::default();
                    let signal = close.clone();
                    let svc = hyper::service::service_fn(move |mut req: Request<Incoming>| {
                        let router = router.clone();
                        req.extensions_mut().insert(signal.clone());
                        async move {
                            let mut resp = router.handle(req).await;
                            header_case::apply(&mut resp);
                            Ok::<_, Infallible>(resp)
                        }
                    });
                    let mut builder = hyper::server::conn::http1::Builder::new();
                    builder.timer(TokioTimer::new()).header_read_timeout(header_timeout).max_buf_size(64 * 1024);
                    let conn = builder.serve_connection(TokioIo::new(tcp), svc);
                    tokio::pin!(conn);
                    let res = tokio::select! {
                        res = conn.as_mut() => res,
                        _ = close.0.notified() => {
                            // No keep-alive: close once the current exchange is over.
                            conn.as_mut().graceful_shutdown();
                            conn.await
                        }
                    };
                    if let Err(e) = res {
                        tracing::debug!(%peer, error = %e, "connection ended with an error");
                    }
                });
            }
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
            _ = shutdown.changed() => break,
        }
    }
    conns.shutdown().await;
}

/// Put in every request's extensions: [`CloseConnection::close`] makes the connection close
/// (without keep-alive) once the current request and response are over.
#[derive(Clone, Default)]
pub(crate) struct CloseConnection(Arc<tokio::sync::Notify>);

impl CloseConnection {
    /// Safe to call before the connection task waits: the permit is kept.
    pub(crate) fn close(&self) {
        self.0.notify_one();
    }
}

/// A fresh request id (`x-amzn-RequestId`).
pub(crate) fn request_id() -> String {
    uuid::Uuid::new_v4().to_string()
}

pub(crate) fn full(body: impl Into<Bytes>) -> RespBody {
    Full::new(body.into())
        .map_err(|never| match never {})
        .boxed()
}

/// The AWS JSON error shape: `x-amzn-ErrorType`, `x-amzn-RequestId`, `{"message": ...}`.
pub(crate) fn error_response(e: &ApiError) -> Response<RespBody> {
    let mut resp = Response::new(full(e.body()));
    *resp.status_mut() = StatusCode::from_u16(e.status).unwrap_or(StatusCode::BAD_REQUEST);
    let h = resp.headers_mut();
    h.insert("content-type", HeaderValue::from_static("application/json"));
    if let Ok(v) = HeaderValue::from_str(e.error_type) {
        h.insert("x-amzn-errortype", v);
    }
    if let Ok(v) = HeaderValue::from_str(&request_id()) {
        h.insert("x-amzn-requestid", v);
    }
    resp
}

pub(crate) fn json_response(value: &serde_json::Value) -> Response<RespBody> {
    let mut resp = Response::new(full(value.to_string()));
    let h = resp.headers_mut();
    h.insert("content-type", HeaderValue::from_static("application/json"));
    if let Ok(v) = HeaderValue::from_str(&request_id()) {
        h.insert("x-amzn-requestid", v);
    }
    resp
}

/// Header pairs as strings (non-UTF-8 values become lossy text, which then fails validation).
pub(crate) fn header_pairs(h: &http::HeaderMap) -> Vec<(String, String)> {
    h.iter()
        .map(|(k, v)| {
            (
                k.as_str().to_owned(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        })
        .collect()
}

/// Reads a whole request body, refusing it unread when the declared size is over `limit`, and
/// stopping (not buffering) once more than `limit` bytes arrive or the client stalls.
pub(crate) async fn read_body_limited(
    req_headers: &http::HeaderMap,
    mut body: Incoming,
    limit: usize,
    stall: Duration,
) -> Result<Bytes, ApiError> {
    let too_large = || {
        ApiError::new(
            413,
            "RequestEntityTooLargeException",
            format!("request body over {limit} bytes"),
        )
    };
    if let Some(len) = req_headers.get(http::header::CONTENT_LENGTH) {
        let len: u64 = len
            .to_str()
            .ok()
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| ApiError::invalid_argument("invalid Content-Length"))?;
        if len > limit as u64 {
            return Err(too_large());
        }
    }
    let mut buf = bytes::BytesMut::new();
    loop {
        let frame = match tokio::time::timeout(stall, body.frame()).await {
            Err(_) => {
                return Err(ApiError::new(
                    408,
                    "RequestTimeoutException",
                    "request body stalled",
                ));
            }
            Ok(None) => break,
            Ok(Some(Err(e))) => {
                return Err(ApiError::new(
                    400,
                    "SerializationException",
                    format!("cannot read request body: {e}"),
                ));
            }
            Ok(Some(Ok(f))) => f,
        };
        if let Ok(data) = frame.into_data() {
            if buf.len() + data.len() > limit {
                return Err(too_large());
            }
            buf.extend_from_slice(&data);
        }
    }
    Ok(buf.freeze())
}

impl Router {
    async fn handle(self, req: Request<Incoming>) -> Response<RespBody> {
        let auth = req
            .headers()
            .get(http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok());
        let query = req.uri().query();
        match sigv4::scope_service(auth, query).as_deref() {
            Some("s3") => s3::handle(&self, req).await,
            Some("sts") => sts::handle(&self, req).await,
            Some("kinesisvideo") => kvs::handle(&self, req).await,
            Some("sqs") => sqs::handle(&self, req).await,
            Some(other) => error_response(&ApiError::new(
                400,
                "UnknownServiceException",
                format!(
                    "this emulator serves kinesisvideo, s3, sqs and sts, not {:?}",
                    other.chars().take(32).collect::<String>()
                ),
            )),
            // Session URLs carry a SessionToken, not a signature (GetHLSStreamingSessionURL).
            None if req.uri().path().starts_with("/hls/v1/")
                || req.uri().path().starts_with("/dash/v1/") =>
            {
                playback::handle_session(&self, req).await
            }
            None if req.uri().path() == "/console" || req.uri().path().starts_with("/console/") => {
                console::handle(&self, req).await
            }
            None if req.uri().path() == "/health" => {
                json_response(&serde_json::json!({"status": "ok"}))
            }
            // STS AssumeRoleWithWebIdentity is unsigned (the web identity token is the proof).
            None if req.method() == http::Method::POST
                && req
                    .headers()
                    .get(http::header::CONTENT_TYPE)
                    .and_then(|v| v.to_str().ok())
                    .is_some_and(|v| v.starts_with("application/x-www-form-urlencoded")) =>
            {
                sts::handle_unsigned(&self, req).await
            }
            None => error_response(&crate::server::auth::sigv4_error(
                sigv4::SigV4Error::Missing,
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn debug_output_never_shows_the_secret() {
        let emu = Emulator::builder()
            .with_credentials("AKIDTEST", "super-secret-value")
            .start()
            .await
            .unwrap();
        assert!(!format!("{emu:?}").contains("super-secret-value"));
        assert!(!format!("{:?}", emu.credentials()).contains("super-secret-value"));
        assert!(format!("{:?}", emu.credentials()).contains("AKIDTEST"));
    }

    #[tokio::test]
    async fn builder_validates() {
        for b in [
            Emulator::builder().with_region(""),
            Emulator::builder().with_credentials("", "x"),
            Emulator::builder().with_idle_timeout(Duration::ZERO),
            Emulator::builder().with_ingest_rate_limit(0),
            Emulator::builder().with_max_connection_duration(Duration::ZERO),
        ] {
            assert!(matches!(b.start().await, Err(Error::InvalidConfig { .. })));
        }
    }
}
