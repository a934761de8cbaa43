//! [`PutMediaClient`]: endpoint discovery, credentials, and session start.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use aws_config::identity::IdentityCache;
use aws_credential_types::provider::SharedCredentialsProvider;
use aws_sdk_kinesisvideo::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_kinesisvideo::types::ApiName;
use aws_smithy_runtime_api::client::orchestrator::HttpResponse;
use aws_types::region::Region;
use aws_types::request_id::RequestId;
use http::HeaderValue;

use super::body;
use super::body::HttpClient;
use super::config::{
    CompletionAck, PutMediaClientBuilder, SessionConfig, SessionOptions, StreamId, sdk_endpoints,
};
use super::credentials::{CachingProvider, ClockTimeSource, LazyAssumeRole, SharedClock, may_heal};
use super::driver::{Connector, Driver, OpenConnection};
use super::error::{BoxError, Error, Result, TimeoutPhase};
use super::session::{BufferLimits, ConnShared, Shared};
use super::sign::{producer_timestamp, sign_request};
use super::sink::{self, AckStream, PutMediaSink};
use super::transport;
use crate::mkv::{RefragmentConfig, Refragmenter, TimecodeMode};

/// Most streams whose data endpoint and completion ack a client remembers; past it the least
/// recently used is forgotten (and resolved again when a session needs it).
pub const STREAM_CACHE_CAPACITY: usize = 4096;

/// The PutMedia client of one account and region: build it once per process and start any
/// number of concurrent sessions from it, on any streams.
///
/// Cheap to clone (an `Arc` inside). Its sessions share one HTTP connector and TLS
/// configuration, one Kinesis Video SDK client, one credentials cache (with a role, one
/// `AssumeRole` per credential lifetime, refreshed before expiry) and a per-stream cache of data
/// endpoints ([`STREAM_CACHE_CAPACITY`] streams) that is resolved again after the failures
/// that call for it (docs/protocol.md §1.1).
///
/// Build with [`PutMediaClient::builder`] (or [`PutMediaClientBuilder::from_env`]), then call
/// [`start_session`](Self::start_session) for each session, or [`start`](Self::start) for the
/// stream set on the builder.
#[derive(Clone)]
pub struct PutMediaClient {
    inner: Arc<Inner>,
}

struct Inner {
    default_stream: Option<StreamId>,
    region: String,
    credentials: CachingProvider,
    kvs: aws_sdk_kinesisvideo::Client,
    http: HttpClient,
    fixed_endpoint: Option<http::Uri>,
    endpoints: StreamCache<http::Uri>,
    completion: StreamCache<CompletionAck>,
    builder: PutMediaClientBuilder,
    clock: SharedClock,
}

/// A bounded map from stream to a value, forgetting the least recently used entry when full.
struct StreamCache<T> {
    map: std::sync::Mutex<Lru<T>>,
    capacity: usize,
}

/// A use counter, and each entry with the counter's value at its last use.
type Lru<T> = (u64, HashMap<StreamId, (T, u64)>);

impl<T: Clone> StreamCache<T> {
    fn new(capacity: usize) -> Self {
        Self {
            map: std::sync::Mutex::new((0, HashMap::new())),
            capacity,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Lru<T>> {
        self.map.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn get(&self, stream: &StreamId) -> Option<T> {
        let mut g = self.lock();
        let (tick, map) = &mut *g;
        *tick += 1;
        let (v, used) = map.get_mut(stream)?;
        *used = *tick;
        Some(v.clone())
    }

    fn insert(&self, stream: StreamId, value: T) {
        let mut g = self.lock();
        let (tick, map) = &mut *g;
        *tick += 1;
        if map.len() >= self.capacity && !map.contains_key(&stream) {
            // O(capacity), once per new stream beyond the capacity: cheaper than it looks next
            // to the control-plane call that produced the value.
            if let Some(oldest) = map
                .iter()
                .min_by_key(|(_, (_, u))| *u)
                .map(|(k, _)| k.clone())
            {
                map.remove(&oldest);
            }
        }
        map.insert(stream, (value, *tick));
    }

    fn remove(&self, stream: &StreamId) {
        self.lock().1.remove(stream);
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.lock().1.len()
    }
}

impl std::fmt::Debug for PutMediaClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PutMediaClient")
            .field("stream", &self.inner.default_stream)
            .field("region", &self.inner.region)
            .field("credentials", &self.inner.credentials)
            .field("timecode_mode", &self.inner.builder.timecode_mode)
            .field("payload_hash", &self.inner.builder.payload_hash)
            .field("timeouts", &self.inner.builder.timeouts)
            .field("buffer_bound", &self.inner.builder.buffer_bound)
            .finish_non_exhaustive()
    }
}

impl PutMediaClient {
    /// A new, empty builder.
    pub fn builder() -> PutMediaClientBuilder {
        PutMediaClientBuilder::new()
    }

    /// The stream set on the builder, which [`start`](Self::start) puts media on.
    pub fn stream(&self) -> Option<&StreamId> {
        self.inner.default_stream.as_ref()
    }

    /// The region.
    pub fn region(&self) -> &str {
        &self.inner.region
    }

    /// Starts a session on the stream set on the builder; see
    /// [`start_session`](Self::start_session). A [`Error::Config`] when the builder named no
    /// stream.
    pub async fn start(&self) -> Result<(PutMediaSink, AckStream)> {
        let stream = self.inner.default_stream.clone().ok_or_else(|| {
            Error::config("no stream set on the builder: name one with start_session")
        })?;
        self.start_session(SessionOptions::new(stream)).await
    }

    /// Starts a session and returns its two halves once the service accepted its first
    /// request (status 200, docs/protocol.md §1.7: KVS answers before it reads media, so
    /// authorization and stream errors surface here, before any media is sent). Throttling,
    /// service errors and connection failures are retried under the
    /// [`RetryPolicy`](crate::RetryPolicy) first. Any number of sessions may run at once, on
    /// the same or different streams (KVS itself allows one PutMedia connection per stream).
    ///
    /// Credentials that would expire within the configured minimum lifetime are refreshed first.
    /// The data endpoint comes from the client's cache or `GetDataEndpoint(PUT_MEDIA)`; it is
    /// forgotten after a connection failure or `InvalidEndpointException`. The session then
    /// keeps going over as many requests as it needs (see [`PutMediaSink`]).
    pub async fn start_session(
        &self,
        options: SessionOptions,
    ) -> Result<(PutMediaSink, AckStream)> {
        let b = &self.inner.builder;
        let session = Arc::new(options.resolve(b)?);
        // The control-plane and connection futures are boxed so that this one stays small:
        // callers await it inside their own long-lived tasks, which would otherwise keep room
        // for the SDK calls' state for as long as the session runs.
        let completion = Box::pin(self.completion_ack(&session)).await;
        let refragmenter = Refragmenter::new(self.refragment_config(session.timecode_mode));
        let limits = BufferLimits {
            bytes: session.buffer_bound,
            duration: session.buffer_duration,
            overflow: session.overflow,
        };
        let shared = Shared::new(session.stream.to_string(), completion, refragmenter, limits);
        // One producer start timestamp for the whole session: with RELATIVE timecodes a
        // fragment's producer time is this plus its timecode (docs/protocol.md §4.10), so every
        // connection of the session must send the same one.
        let producer_start = self.inner.clock.now();
        let client = SessionClient {
            client: self.clone(),
            session,
        };
        let mut driver = Driver::new(shared.clone(), client, producer_start, b.jitter_seed);
        Box::pin(driver.connect_first()).await?;
        let task = tokio::spawn(driver.run());
        Ok(sink::halves(shared, task))
    }

    /// The cached data endpoint of `stream`, or a fresh one from `GetDataEndpoint(PUT_MEDIA)`
    /// (docs/protocol.md §1.1).
    pub async fn data_endpoint(&self, stream: &StreamId) -> Result<http::Uri> {
        if let Some(fixed) = &self.inner.fixed_endpoint {
            return Ok(fixed.clone());
        }
        if let Some(uri) = self.inner.endpoints.get(stream) {
            return Ok(uri);
        }
        let name = stream.to_string();
        let b = &self.inner.builder;
        let req = self
            .inner
            .kvs
            .get_data_endpoint()
            .api_name(ApiName::PutMedia);
        let req = match stream {
            StreamId::Name(n) => req.stream_name(n),
            StreamId::Arn(a) => req.stream_arn(a),
        };
        let out = match tokio::time::timeout(b.timeouts.control_plane, req.send()).await {
            Err(_) => {
                return Err(Error::Timeout {
                    stream: name,
                    phase: TimeoutPhase::ControlPlane,
                    waited: b.timeouts.control_plane,
                });
            }
            Ok(Err(e)) => return Err(sdk_error(&name, "GetDataEndpoint", e)),
            Ok(Ok(out)) => out,
        };
        let url = out.data_endpoint().ok_or_else(|| Error::ControlPlane {
            stream: name.clone(),
            operation: "GetDataEndpoint",
            message: "the answer has no DataEndpoint".to_owned(),
            source: None,
        })?;
        let uri = b.check_url(url)?;
        tracing::debug!(stream = %name, endpoint = %uri, "GetDataEndpoint");
        self.inner.endpoints.insert(stream.clone(), uri.clone());
        Ok(uri)
    }

    fn refragment_config(&self, mode: TimecodeMode) -> RefragmentConfig {
        let b = &self.inner.builder;
        let base = b.refragment.clone().unwrap_or_default();
        // Rebuild with the session's timecode mode; the base was already validated.
        let mut rb = RefragmentConfig::builder()
            .with_target_fragment_duration(base.target_fragment_duration())
            .with_max_fragment_duration(base.max_fragment_duration())
            .with_max_fragment_bytes(base.max_fragment_bytes())
            .with_min_fragment_interval(base.min_fragment_interval())
            .with_max_element_size(base.max_element_size())
            .with_late_frame_window(base.late_frame_window())
            .with_timecode_mode(mode);
        if let Some(uid) = base.segment_uid() {
            rb = rb.with_segment_uid(uid);
        }
        rb.build().unwrap_or(base)
    }

    async fn session_credentials(&self, stream: &str) -> Result<aws_credential_types::Credentials> {
        let b = &self.inner.builder;
        let fut = self
            .inner
            .credentials
            .credentials_valid_for(b.min_credential_lifetime);
        match tokio::time::timeout(b.timeouts.control_plane, fut).await {
            Err(_) => Err(Error::Timeout {
                stream: stream.to_owned(),
                phase: TimeoutPhase::ControlPlane,
                waited: b.timeouts.control_plane,
            }),
            Ok(Err(e)) => Err(Error::Credentials {
                stream: stream.to_owned(),
                reason: aws_sdk_kinesisvideo::error::DisplayErrorContext(&e).to_string(),
                retryable: may_heal(&e),
                source: Some(BoxError::from(
                    Box::new(e) as Box<dyn std::error::Error + Send + Sync>
                )),
            }),
            Ok(Ok(c)) => Ok(c),
        }
    }

    /// The ack that completes a fragment; [`CompletionAck::Auto`] is resolved once per stream
    /// with `DescribeStream` (docs/protocol.md §2: PERSISTED is only sent when retention is
    /// above zero).
    async fn completion_ack(&self, session: &SessionConfig) -> CompletionAck {
        if session.completion != CompletionAck::Auto {
            return session.completion;
        }
        let stream = &session.stream;
        if let Some(c) = self.inner.completion.get(stream) {
            return c;
        }
        let req = self.inner.kvs.describe_stream();
        let req = match stream {
            StreamId::Name(n) => req.stream_name(n),
            StreamId::Arn(a) => req.stream_arn(a),
        };
        let limit = self.inner.builder.timeouts.control_plane;
        let resolved = match tokio::time::timeout(limit, req.send()).await {
            Ok(Ok(out)) => match out.stream_info().and_then(|i| i.data_retention_in_hours()) {
                Some(0) => CompletionAck::Received,
                _ => CompletionAck::Persisted,
            },
            Ok(Err(e)) => {
                tracing::debug!(
                    stream = %stream,
                    error = %aws_sdk_kinesisvideo::error::DisplayErrorContext(&e),
                    "DescribeStream failed; waiting for PERSISTED acks"
                );
                CompletionAck::Persisted
            }
            Err(_) => CompletionAck::Persisted,
        };
        self.inner.completion.insert(stream.clone(), resolved);
        resolved
    }
}

/// What a session's driver sees of the client: the shared client and the session's own
/// choices.
#[derive(Clone)]
pub(crate) struct SessionClient {
    client: PutMediaClient,
    session: Arc<SessionConfig>,
}

impl SessionClient {
    pub(crate) fn config(&self) -> &PutMediaClientBuilder {
        &self.client.inner.builder
    }

    /// This session's resolved choices (stream, timecodes, pacing, buffer caps).
    pub(crate) fn session(&self) -> &SessionConfig {
        &self.session
    }

    pub(crate) async fn invalidate_credentials(&self) {
        self.client.inner.credentials.invalidate().await;
    }

    pub(crate) fn now(&self) -> SystemTime {
        self.client.inner.clock.now()
    }

    pub(crate) async fn forget_endpoint(&self) {
        self.client.inner.endpoints.remove(&self.session.stream);
    }

    /// Opens one PutMedia request of a session: credentials, endpoint, signed head, response
    /// status. The body is fed by the returned sender.
    pub(crate) async fn open_connection(
        &self,
        shared: &Arc<Shared>,
        id: u32,
        producer_start: SystemTime,
    ) -> Result<OpenConnection> {
        let inner = &self.client.inner;
        let b = &inner.builder;
        let session = &self.session;
        let stream = session.stream.to_string();
        let creds = self.client.session_credentials(&stream).await?;
        let endpoint = self.client.data_endpoint(&session.stream).await?;
        let uri = transport::put_media_uri(&endpoint)?;
        let host = uri
            .authority()
            .map(|a| a.as_str().to_owned())
            .ok_or_else(|| Error::config(format!("data endpoint {uri} has no host")))?;

        let now = inner.clock.now();
        let (id_header, id_value) = match &session.stream {
            StreamId::Name(n) => ("x-amzn-stream-name", n),
            StreamId::Arn(a) => ("x-amzn-stream-arn", a),
        };
        let timecode_type = match session.timecode_mode {
            TimecodeMode::Relative => "RELATIVE",
            TimecodeMode::Absolute { .. } => "ABSOLUTE",
        };
        let conn = ConnShared::new(id);
        let (tx, body) = body::channel_body(shared, &conn);
        let mut req = http::Request::post(uri.clone())
            .header(http::header::HOST, host)
            .header(id_header, id_value.as_str())
            .header("x-amzn-fragment-timecode-type", timecode_type)
            .header(
                "x-amzn-producer-start-timestamp",
                producer_timestamp(producer_start),
            )
            // Undocumented; the official C producer sends it (docs/protocol.md §1.3).
            .header(
                "x-amzn-fragment-acknowledgment-required",
                HeaderValue::from_static("1"),
            )
            .body(body)
            .map_err(|e| Error::config(format!("cannot build the request: {e}")))?;
        sign_request(&mut req, &creds, &inner.region, now, b.payload_hash)?;
        tracing::debug!(stream = %stream, endpoint = %endpoint, connection = id, "starting PutMedia");

        let waited = b.timeouts.connect + b.timeouts.response_head;
        let resp = match tokio::time::timeout(waited, inner.http.request(req)).await {
            Err(_) => {
                self.forget_endpoint().await;
                return Err(Error::Timeout {
                    stream,
                    phase: TimeoutPhase::ResponseHead,
                    waited,
                });
            }
            Ok(Err(e)) => {
                // docs/protocol.md §1.1: call GetDataEndpoint again after any connection failure.
                self.forget_endpoint().await;
                return Err(transport::request_error(&stream, e, b.timeouts.connect));
            }
            Ok(Ok(resp)) => resp,
        };
        if !resp.status().is_success() {
            let err = transport::error_response(&stream, resp, b.timeouts.response_head).await;
            if matches!(err, Error::Auth { .. } | Error::StreamNotFound { .. }) {
                inner.credentials.invalidate().await;
            }
            if matches!(&err, Error::Http { error_type, .. } if error_type == "InvalidEndpointException")
                || matches!(&err, Error::Http { status, .. } if *status >= 500)
            {
                self.forget_endpoint().await;
            }
            return Err(err);
        }
        Ok(OpenConnection {
            tx,
            response: resp.into_body(),
            conn,
            credentials_expiry: creds.expiry(),
        })
    }
}

impl Connector for SessionClient {
    fn config(&self) -> &PutMediaClientBuilder {
        SessionClient::config(self)
    }
    fn session(&self) -> &SessionConfig {
        SessionClient::session(self)
    }
    fn now(&self) -> SystemTime {
        SessionClient::now(self)
    }
    async fn open_connection(
        &self,
        shared: &Arc<Shared>,
        id: u32,
        producer_start: SystemTime,
    ) -> Result<OpenConnection> {
        SessionClient::open_connection(self, shared, id, producer_start).await
    }
    async fn forget_endpoint(&self) {
        SessionClient::forget_endpoint(self).await;
    }
    async fn invalidate_credentials(&self) {
        SessionClient::invalidate_credentials(self).await;
    }
}

fn sdk_error<E>(stream: &str, operation: &'static str, e: SdkError<E, HttpResponse>) -> Error
where
    E: ProvideErrorMetadata + RequestId + std::error::Error + Send + Sync + 'static,
{
    let message = aws_sdk_kinesisvideo::error::DisplayErrorContext(&e).to_string();
    match e {
        SdkError::ServiceError(ctx) => {
            let err = ctx.err();
            let code = err.code().unwrap_or("").to_owned();
            let msg = err.message().unwrap_or("").to_owned();
            let request_id = err.request_id().unwrap_or("").to_owned();
            let status = ctx.raw().status().as_u16();
            Error::from_http(stream, status, &code, msg, request_id)
        }
        SdkError::TimeoutError(_) => Error::Timeout {
            stream: stream.to_owned(),
            phase: TimeoutPhase::ControlPlane,
            waited: Duration::ZERO,
        },
        other => Error::ControlPlane {
            stream: stream.to_owned(),
            operation,
            message,
            source: Some(BoxError::from(
                Box::new(other) as Box<dyn std::error::Error + Send + Sync>
            )),
        },
    }
}

impl PutMediaClientBuilder {
    /// Validates the configuration and builds the client. No network call happens here.
    pub fn build(self) -> Result<PutMediaClient> {
        self.validate()?;
        let default_stream = self.default_stream()?;
        let sdk = self.sdk_config.as_ref();
        let region = self
            .region
            .clone()
            .or_else(|| sdk.and_then(|c| c.region()).map(|r| r.to_string()))
            .ok_or_else(|| Error::config("no region"))?;
        let base = self
            .credentials
            .clone()
            .or_else(|| sdk.and_then(|c| c.credentials_provider()))
            .ok_or_else(|| Error::config("no credentials provider"))?;
        for url in sdk.map(sdk_endpoints).unwrap_or_default() {
            self.check_url(&url)?;
        }
        // One trust store and proxy for PutMedia and the SDK calls. An HTTP client the caller
        // put in the SdkConfig is theirs to configure and is kept.
        let trust = self.trust.resolve()?;
        let sdk_http = match sdk.and_then(|c| c.http_client()) {
            Some(own) => own,
            None => transport::sdk_http_client(&trust, &self.proxy)?,
        };

        let provider = match &self.assume_role {
            None => base,
            Some(role) => {
                // aws-config's provider, configured like the SDK calls (region, endpoint
                // overrides such as AWS_ENDPOINT_URL_STS, HTTP client), signing with our clock.
                let mut sts = match sdk {
                    Some(c) => c.to_builder(),
                    None => aws_types::SdkConfig::builder()
                        .behavior_version(aws_config::BehaviorVersion::latest()),
                };
                sts = sts
                    .region(Region::new(region.clone()))
                    .credentials_provider(base)
                    .http_client(sdk_http.clone())
                    .time_source(ClockTimeSource(self.clock.clone()));
                if let Some(url) = &self.endpoint_url {
                    sts = sts.endpoint_url(url);
                }
                SharedCredentialsProvider::new(LazyAssumeRole::new(
                    role.clone(),
                    self.role_session_name.clone(),
                    self.role_duration,
                    sts.build(),
                ))
            }
        };
        let credentials = CachingProvider::new(provider, self.refresh_before, self.clock.clone());

        let mut kvs = match sdk {
            Some(c) => aws_sdk_kinesisvideo::config::Builder::from(c),
            None => aws_sdk_kinesisvideo::config::Builder::new()
                .behavior_version(aws_sdk_kinesisvideo::config::BehaviorVersion::latest()),
        };
        kvs = kvs
            .region(Region::new(region.clone()))
            .credentials_provider(credentials.clone())
            .http_client(sdk_http)
            // `credentials` is the cache; a second one in the SDK would only hide invalidation.
            .identity_cache(IdentityCache::no_cache());
        if let Some(url) = &self.endpoint_url {
            kvs = kvs.endpoint_url(url);
        }
        let fixed_endpoint = match &self.data_endpoint {
            Some(url) => Some(self.check_url(url)?),
            None => None,
        };
        Ok(PutMediaClient {
            inner: Arc::new(Inner {
                default_stream,
                region,
                credentials,
                kvs: aws_sdk_kinesisvideo::Client::from_conf(kvs.build()),
                http: transport::http_client(
                    self.timeouts.connect,
                    self.allow_http,
                    &trust,
                    &self.proxy,
                )?,
                fixed_endpoint,
                endpoints: StreamCache::new(STREAM_CACHE_CAPACITY),
                completion: StreamCache::new(STREAM_CACHE_CAPACITY),
                clock: self.clock.clone(),
                builder: self,
            }),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_stream_cache_forgets_the_least_recently_used() {
        let c = StreamCache::new(2);
        let (a, b, d) = (
            StreamId::from("a"),
            StreamId::from("b"),
            StreamId::from("d"),
        );
        c.insert(a.clone(), 1);
        c.insert(b.clone(), 2);
        assert_eq!(c.get(&a), Some(1)); // a is now the most recent
        c.insert(d.clone(), 3);
        assert_eq!(c.len(), 2);
        assert_eq!(c.get(&b), None);
        assert_eq!(c.get(&a), Some(1));
        assert_eq!(c.get(&d), Some(3));
        c.remove(&a);
        assert_eq!(c.get(&a), None);
    }

    #[test]
    fn client_is_cheap_to_clone_and_shareable() {
        fn shareable<T: Clone + Send + Sync + 'static>() {}
        shareable::<PutMediaClient>();
        assert!(std::mem::size_of::<PutMediaClient>() == std::mem::size_of::<usize>());
    }
}
