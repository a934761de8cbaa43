//! [`PutMediaClient`]: endpoint discovery, credentials, and session start.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use aws_credential_types::provider::SharedCredentialsProvider;
use aws_sdk_kinesisvideo::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_kinesisvideo::types::ApiName;
use aws_smithy_runtime_api::client::orchestrator::HttpResponse;
use aws_types::region::Region;
use aws_types::request_id::RequestId;
use http::HeaderValue;

use super::config::{CompletionAck, PutMediaClientBuilder, StreamId};
use super::credentials::{AssumeRoleProvider, CachingProvider, SharedClock};
use super::driver::{Connector, Driver, OpenConnection};
use super::error::{BoxError, Error, Result, TimeoutPhase};
use super::session::{self, AckStream, BufferLimits, ConnShared, PutMediaSink, Shared};
use super::sign::{producer_timestamp, sign_request};
use super::transport::{self, HttpClient};
use crate::mkv::{RefragmentConfig, Refragmenter, TimecodeMode};

/// A client for one stream's PutMedia. Cheap to clone; sessions started from it share the
/// credentials cache and the cached data endpoint.
///
/// Build with [`PutMediaClient::builder`] (or [`PutMediaClientBuilder::from_env`]), then call
/// [`start`](Self::start) for each PutMedia request.
#[derive(Clone)]
pub struct PutMediaClient {
    inner: Arc<Inner>,
}

struct Inner {
    stream: StreamId,
    region: String,
    credentials: CachingProvider,
    kvs: aws_sdk_kinesisvideo::Client,
    http: HttpClient,
    fixed_endpoint: Option<http::Uri>,
    endpoint: tokio::sync::Mutex<Option<http::Uri>>,
    completion: tokio::sync::Mutex<Option<CompletionAck>>,
    builder: PutMediaClientBuilder,
    clock: SharedClock,
}

impl std::fmt::Debug for PutMediaClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PutMediaClient")
            .field("stream", &self.inner.stream)
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

    /// The stream this client puts media on.
    pub fn stream(&self) -> &StreamId {
        &self.inner.stream
    }

    /// The region.
    pub fn region(&self) -> &str {
        &self.inner.region
    }

    /// Starts a session and returns its two halves once the service accepted its first
    /// request (status 200, reference §1.7: KVS answers before it reads media, so authorization
    /// and stream errors surface here, before any media is sent). Throttling, service errors and
    /// connection failures are retried under the [`RetryPolicy`](crate::RetryPolicy) first.
    ///
    /// Credentials that would expire within the configured minimum lifetime are refreshed first.
    /// The data endpoint comes from the cache or `GetDataEndpoint(PUT_MEDIA)`; it is forgotten
    /// after a connection failure or `InvalidEndpointException`. The session then keeps going
    /// over as many requests as it needs (see [`PutMediaSink`]).
    pub async fn start(&self) -> Result<(PutMediaSink, AckStream)> {
        let b = &self.inner.builder;
        let completion = self.completion_ack().await;
        let refragmenter = Refragmenter::new(self.refragment_config());
        let limits = BufferLimits {
            bytes: b.buffer_bound,
            duration: b.buffer_duration,
            overflow: b.overflow,
        };
        let (shared, events) = Shared::new(
            self.inner.stream.to_string(),
            completion,
            refragmenter,
            limits,
        );
        // One producer start timestamp for the whole session: with RELATIVE timecodes a
        // fragment's producer time is this plus its timecode (reference §4.10), so every
        // connection of the session must send the same one.
        let producer_start = self.inner.clock.now();
        let mut driver = Driver::new(shared.clone(), self.clone(), producer_start, b.jitter_seed);
        driver.connect_first().await?;
        let task = tokio::spawn(driver.run());
        Ok(session::halves(shared, events, task))
    }

    pub(crate) fn config(&self) -> &PutMediaClientBuilder {
        &self.inner.builder
    }

    pub(crate) async fn invalidate_credentials(&self) {
        self.inner.credentials.invalidate().await;
    }

    pub(crate) fn now(&self) -> SystemTime {
        self.inner.clock.now()
    }

    /// Opens one PutMedia request of a session: credentials, endpoint, signed head, response
    /// status. The body is fed by the returned sender.
    pub(crate) async fn open_connection(
        &self,
        shared: &Arc<Shared>,
        id: u32,
        producer_start: SystemTime,
    ) -> Result<OpenConnection> {
        let inner = &self.inner;
        let b = &inner.builder;
        let stream = inner.stream.to_string();
        let creds = self.session_credentials().await?;
        let endpoint = self.data_endpoint().await?;
        let uri = transport::put_media_uri(&endpoint)?;
        let host = uri
            .authority()
            .map(|a| a.as_str().to_owned())
            .ok_or_else(|| Error::config(format!("data endpoint {uri} has no host")))?;

        let now = inner.clock.now();
        let (id_header, id_value) = match &inner.stream {
            StreamId::Name(n) => ("x-amzn-stream-name", n),
            StreamId::Arn(a) => ("x-amzn-stream-arn", a),
        };
        let timecode_type = match b.timecode_mode {
            TimecodeMode::Relative => "RELATIVE",
            TimecodeMode::Absolute { .. } => "ABSOLUTE",
        };
        let conn = ConnShared::new(id);
        let (tx, body) = session::channel_body(shared, &conn);
        let mut req = http::Request::post(uri.clone())
            .header(http::header::HOST, host)
            .header(id_header, id_value.as_str())
            .header("x-amzn-fragment-timecode-type", timecode_type)
            .header(
                "x-amzn-producer-start-timestamp",
                producer_timestamp(producer_start),
            )
            // Undocumented; the official C producer sends it (reference §1.3).
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
                // Reference §1.1: call GetDataEndpoint again after any connection failure.
                self.forget_endpoint().await;
                return Err(transport::request_error(&stream, e, &b.timeouts));
            }
            Ok(Ok(resp)) => resp,
        };
        if !resp.status().is_success() {
            let err = transport::error_response(&stream, resp, &b.timeouts).await;
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

    fn refragment_config(&self) -> RefragmentConfig {
        let b = &self.inner.builder;
        let base = b.refragment.clone().unwrap_or_default();
        // Rebuild with the client's timecode mode; the base was already validated.
        let mut rb = RefragmentConfig::builder()
            .target_fragment_duration(base.target_fragment_duration())
            .max_fragment_duration(base.max_fragment_duration())
            .max_fragment_bytes(base.max_fragment_bytes())
            .min_fragment_interval(base.min_fragment_interval())
            .max_element_size(base.max_element_size())
            .late_frame_window(base.late_frame_window())
            .timecode_mode(b.timecode_mode);
        if let Some(uid) = base.segment_uid() {
            rb = rb.segment_uid(uid);
        }
        rb.build().unwrap_or(base)
    }

    async fn session_credentials(&self) -> Result<aws_credential_types::Credentials> {
        let b = &self.inner.builder;
        let stream = self.inner.stream.to_string();
        let fut = self
            .inner
            .credentials
            .credentials_valid_for(b.min_credential_lifetime);
        match tokio::time::timeout(b.timeouts.control_plane, fut).await {
            Err(_) => Err(Error::Timeout {
                stream,
                phase: TimeoutPhase::ControlPlane,
                waited: b.timeouts.control_plane,
            }),
            Ok(Err(e)) => Err(Error::Credentials {
                stream,
                reason: aws_sdk_kinesisvideo::error::DisplayErrorContext(&e).to_string(),
                source: Some(BoxError::from(
                    Box::new(e) as Box<dyn std::error::Error + Send + Sync>
                )),
            }),
            Ok(Ok(c)) => Ok(c),
        }
    }

    /// The cached data endpoint, or a fresh one from `GetDataEndpoint(PUT_MEDIA)` (reference §1.1).
    pub async fn data_endpoint(&self) -> Result<http::Uri> {
        if let Some(fixed) = &self.inner.fixed_endpoint {
            return Ok(fixed.clone());
        }
        let mut cached = self.inner.endpoint.lock().await;
        if let Some(uri) = cached.as_ref() {
            return Ok(uri.clone());
        }
        let stream = self.inner.stream.to_string();
        let b = &self.inner.builder;
        let req = self
            .inner
            .kvs
            .get_data_endpoint()
            .api_name(ApiName::PutMedia);
        let req = match &self.inner.stream {
            StreamId::Name(n) => req.stream_name(n),
            StreamId::Arn(a) => req.stream_arn(a),
        };
        let out = match tokio::time::timeout(b.timeouts.control_plane, req.send()).await {
            Err(_) => {
                return Err(Error::Timeout {
                    stream,
                    phase: TimeoutPhase::ControlPlane,
                    waited: b.timeouts.control_plane,
                });
            }
            Ok(Err(e)) => return Err(sdk_error(&stream, "GetDataEndpoint", e)),
            Ok(Ok(out)) => out,
        };
        let url = out.data_endpoint().ok_or_else(|| Error::ControlPlane {
            stream: stream.clone(),
            operation: "GetDataEndpoint",
            message: "the answer has no DataEndpoint".to_owned(),
            source: None,
        })?;
        let uri = b.check_url(url)?;
        tracing::debug!(stream = %stream, endpoint = %uri, "GetDataEndpoint");
        *cached = Some(uri.clone());
        Ok(uri)
    }

    /// The ack that completes a fragment; [`CompletionAck::Auto`] is resolved once with
    /// `DescribeStream` (reference §2: PERSISTED is only sent when retention is above zero).
    async fn completion_ack(&self) -> CompletionAck {
        let configured = self.inner.builder.completion;
        if configured != CompletionAck::Auto {
            return configured;
        }
        let mut cached = self.inner.completion.lock().await;
        if let Some(c) = *cached {
            return c;
        }
        let req = self.inner.kvs.describe_stream();
        let req = match &self.inner.stream {
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
                    stream = %self.inner.stream,
                    error = %aws_sdk_kinesisvideo::error::DisplayErrorContext(&e),
                    "DescribeStream failed; waiting for PERSISTED acks"
                );
                CompletionAck::Persisted
            }
            Err(_) => CompletionAck::Persisted,
        };
        *cached = Some(resolved);
        resolved
    }

    pub(crate) async fn forget_endpoint(&self) {
        *self.inner.endpoint.lock().await = None;
    }
}

impl Connector for PutMediaClient {
    fn config(&self) -> &PutMediaClientBuilder {
        PutMediaClient::config(self)
    }
    fn now(&self) -> SystemTime {
        PutMediaClient::now(self)
    }
    async fn open_connection(
        &self,
        shared: &Arc<Shared>,
        id: u32,
        producer_start: SystemTime,
    ) -> Result<OpenConnection> {
        PutMediaClient::open_connection(self, shared, id, producer_start).await
    }
    async fn forget_endpoint(&self) {
        PutMediaClient::forget_endpoint(self).await;
    }
    async fn invalidate_credentials(&self) {
        PutMediaClient::invalidate_credentials(self).await;
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
        let stream = match (&self.stream_name, &self.stream_arn) {
            (Some(n), None) => StreamId::Name(n.clone()),
            (None, Some(a)) => StreamId::Arn(a.clone()),
            _ => return Err(Error::config("set exactly one of stream name and ARN")),
        };
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
        if let Some(url) = sdk.and_then(|c| c.endpoint_url()) {
            self.check_url(url)?;
        }

        let provider = match &self.assume_role {
            None => base,
            Some(role) => {
                let mut sts = match sdk {
                    Some(c) => aws_sdk_sts::config::Builder::from(c),
                    None => aws_sdk_sts::config::Builder::new()
                        .behavior_version(aws_sdk_sts::config::BehaviorVersion::latest()),
                };
                sts = sts
                    .region(Region::new(region.clone()))
                    .credentials_provider(base);
                if let Some(url) = &self.endpoint_url {
                    sts = sts.endpoint_url(url);
                }
                SharedCredentialsProvider::new(AssumeRoleProvider {
                    client: aws_sdk_sts::Client::from_conf(sts.build()),
                    role_arn: role.clone(),
                    session_name: self.role_session_name.clone(),
                    duration: self.role_duration,
                })
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
            .credentials_provider(credentials.clone());
        if let Some(url) = &self.endpoint_url {
            kvs = kvs.endpoint_url(url);
        }
        let fixed_endpoint = match &self.data_endpoint {
            Some(url) => Some(self.check_url(url)?),
            None => None,
        };
        Ok(PutMediaClient {
            inner: Arc::new(Inner {
                stream,
                region,
                credentials,
                kvs: aws_sdk_kinesisvideo::Client::from_conf(kvs.build()),
                http: transport::http_client(&self.timeouts, self.allow_http),
                fixed_endpoint,
                endpoint: tokio::sync::Mutex::new(None),
                completion: tokio::sync::Mutex::new(None),
                clock: self.clock.clone(),
                builder: self,
            }),
        })
    }
}
