//! [`PutMediaClientBuilder`]: validated configuration of a [`PutMediaClient`](super::PutMediaClient).

use std::sync::Arc;
use std::time::Duration;

use aws_credential_types::provider::{ProvideCredentials, SharedCredentialsProvider};
use aws_types::SdkConfig;

use super::credentials::{Clock, SharedClock, SystemClock};
use super::error::{Error, Result};
use super::policy::{OverflowPolicy, Pacing, RetryPolicy, Rotation};
use super::sign::PayloadHash;
use super::transport::{ProxySettings, Trust};
use crate::mkv::{RefragmentConfig, TimecodeMode};

/// Default bound on the bytes a session holds (see [`PutMediaClientBuilder::with_buffer_bound`]).
pub const DEFAULT_BUFFER_BOUND: usize = 64 << 20;
/// Smallest accepted buffer bound.
pub const MIN_BUFFER_BOUND: usize = 64 << 10;
/// Default cap on the media duration a session keeps for replay (see
/// [`PutMediaClientBuilder::with_buffer_duration`]): the official producer's default buffer
/// duration, 120 s.
pub const DEFAULT_BUFFER_DURATION: Duration = Duration::from_secs(120);
/// Default time without input after which the open fragment is closed (see
/// [`PutMediaClientBuilder::with_pause_flush`]).
pub const DEFAULT_PAUSE_FLUSH: Duration = Duration::from_secs(5);

/// Which stream a client puts media on: a name or an ARN, exactly one (docs/protocol.md §1.3).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum StreamId {
    /// `x-amzn-stream-name`, `[a-zA-Z0-9_.-]{1,256}`.
    Name(String),
    /// `x-amzn-stream-arn`.
    Arn(String),
}

impl StreamId {
    /// The name or ARN, as sent.
    pub fn as_str(&self) -> &str {
        match self {
            Self::Name(s) | Self::Arn(s) => s,
        }
    }
}

impl StreamId {
    /// Checks the name against KVS's rule, or that the ARN looks like one.
    pub(crate) fn validate(&self) -> Result<()> {
        match self {
            Self::Name(name) => {
                let ok = (1..=256).contains(&name.len())
                    && name
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'));
                if !ok {
                    return Err(Error::config(format!(
                        "stream name {name:?} does not match [a-zA-Z0-9_.-]{{1,256}}"
                    )));
                }
            }
            Self::Arn(arn) => {
                if !arn.starts_with("arn:") || arn.len() > 1024 || arn.contains(char::is_whitespace)
                {
                    return Err(Error::config(format!("{arn:?} is not a stream ARN")));
                }
            }
        }
        Ok(())
    }
}

/// `arn:...` is an ARN, anything else a name (a stream name cannot contain `:`).
impl From<&str> for StreamId {
    fn from(s: &str) -> Self {
        if s.starts_with("arn:") {
            Self::Arn(s.to_owned())
        } else {
            Self::Name(s.to_owned())
        }
    }
}

/// `arn:...` is an ARN, anything else a name (a stream name cannot contain `:`).
impl From<String> for StreamId {
    fn from(s: String) -> Self {
        if s.starts_with("arn:") {
            Self::Arn(s)
        } else {
            Self::Name(s)
        }
    }
}

impl From<&String> for StreamId {
    fn from(s: &String) -> Self {
        Self::from(s.as_str())
    }
}

impl std::fmt::Display for StreamId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Which acknowledgement completes a fragment: the session frees the fragment's bytes and
/// `close()` waits for it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum CompletionAck {
    /// Ask `DescribeStream` once per client: RECEIVED when the stream's retention is zero,
    /// PERSISTED otherwise, and PERSISTED when the call fails (e.g. no
    /// `kinesisvideo:DescribeStream` permission). The default.
    #[default]
    Auto,
    /// PERSISTED: the stream keeps data (retention above zero).
    Persisted,
    /// RECEIVED: the stream has zero retention, so KVS never sends PERSISTED (docs/protocol.md §2).
    Received,
}

/// The time limits of a session. Each is configurable; defaults in parentheses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct Timeouts {
    /// TCP and TLS connection to the data endpoint (5 s).
    pub connect: Duration,
    /// From sending the request head to the response status and headers (10 s). KVS answers
    /// before it reads media (docs/protocol.md §1.7).
    pub response_head: Duration,
    /// From the first media byte handed to the socket to the first acknowledgement (10 s).
    pub first_ack: Duration,
    /// No acknowledgement of any kind, IDLE included, for this long resets the session (60 s,
    /// the official producer's default; docs/protocol.md §6).
    pub staleness: Duration,
    /// After the input ended, how long a connection that still owes acknowledgements may go
    /// without a fragment ack before it is reset and what is not complete is resent, within the
    /// retry budget (30 s). A stall at the end is handled like any other: it does not end the
    /// session by itself.
    pub final_drain: Duration,
    /// Each control-plane call: GetDataEndpoint, STS AssumeRole (10 s).
    pub control_plane: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Self {
            connect: Duration::from_secs(5),
            response_head: Duration::from_secs(10),
            first_ack: Duration::from_secs(10),
            staleness: Duration::from_secs(60),
            final_drain: Duration::from_secs(30),
            control_plane: Duration::from_secs(10),
        }
    }
}

impl Timeouts {
    /// Sets [`connect`](Self::connect).
    pub fn with_connect(mut self, d: Duration) -> Self {
        self.connect = d;
        self
    }
    /// Sets [`response_head`](Self::response_head).
    pub fn with_response_head(mut self, d: Duration) -> Self {
        self.response_head = d;
        self
    }
    /// Sets [`first_ack`](Self::first_ack).
    pub fn with_first_ack(mut self, d: Duration) -> Self {
        self.first_ack = d;
        self
    }
    /// Sets [`staleness`](Self::staleness).
    pub fn with_staleness(mut self, d: Duration) -> Self {
        self.staleness = d;
        self
    }
    /// Sets [`final_drain`](Self::final_drain).
    pub fn with_final_drain(mut self, d: Duration) -> Self {
        self.final_drain = d;
        self
    }
    /// Sets [`control_plane`](Self::control_plane).
    pub fn with_control_plane(mut self, d: Duration) -> Self {
        self.control_plane = d;
        self
    }
}

/// What one session chooses for itself, given to
/// [`PutMediaClient::start_session`](super::PutMediaClient::start_session): the stream, and
/// per-session overrides of the client builder's defaults. Everything else (credentials, HTTP
/// connections, endpoint cache, timeouts, retry and rotation policy) is the client's and shared
/// by its sessions.
///
/// ```
/// use std::time::Duration;
/// use kvs_putmedia::{CompletionAck, OverflowPolicy, SessionOptions};
/// use kvs_putmedia::mkv::TimecodeMode;
///
/// let opts = SessionOptions::new("front-door")
///     .with_timecode_mode(TimecodeMode::Absolute { origin_epoch_ms: 1_700_000_000_000 })
///     .with_completion_ack(CompletionAck::Persisted)
///     .with_buffer_bound(8 << 20)
///     .with_buffer_duration(Duration::from_secs(30))
///     .with_overflow_policy(OverflowPolicy::DropOldest);
/// assert_eq!(opts.stream().as_str(), "front-door");
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[must_use]
pub struct SessionOptions {
    stream: StreamId,
    timecode_mode: Option<TimecodeMode>,
    completion: Option<CompletionAck>,
    buffer_bound: Option<usize>,
    buffer_duration: Option<Duration>,
    overflow: Option<OverflowPolicy>,
    pacing: Option<Pacing>,
}

impl SessionOptions {
    /// Options for a session on `stream` (a name, or an ARN when it starts with `arn:`), with
    /// every other choice taken from the client builder.
    pub fn new(stream: impl Into<StreamId>) -> Self {
        Self {
            stream: stream.into(),
            timecode_mode: None,
            completion: None,
            buffer_bound: None,
            buffer_duration: None,
            overflow: None,
            pacing: None,
        }
    }

    /// The stream.
    pub fn stream(&self) -> &StreamId {
        &self.stream
    }

    /// How cluster timecodes relate to wall-clock time (default: the builder's
    /// [`with_timecode_mode`](PutMediaClientBuilder::with_timecode_mode)).
    pub fn with_timecode_mode(mut self, mode: TimecodeMode) -> Self {
        self.timecode_mode = Some(mode);
        self
    }

    /// Which ack completes a fragment (default: the builder's
    /// [`with_completion_ack`](PutMediaClientBuilder::with_completion_ack)).
    pub fn with_completion_ack(mut self, ack: CompletionAck) -> Self {
        self.completion = Some(ack);
        self
    }

    /// Cap on the bytes kept for replay (default: the builder's
    /// [`with_buffer_bound`](PutMediaClientBuilder::with_buffer_bound); minimum
    /// [`MIN_BUFFER_BOUND`]).
    pub fn with_buffer_bound(mut self, bytes: usize) -> Self {
        self.buffer_bound = Some(bytes);
        self
    }

    /// Cap on the media duration kept for replay (default: the builder's
    /// [`with_buffer_duration`](PutMediaClientBuilder::with_buffer_duration)).
    pub fn with_buffer_duration(mut self, d: Duration) -> Self {
        self.buffer_duration = Some(d);
        self
    }

    /// What happens at a replay-buffer cap (default: the builder's
    /// [`with_overflow_policy`](PutMediaClientBuilder::with_overflow_policy)).
    pub fn with_overflow_policy(mut self, policy: OverflowPolicy) -> Self {
        self.overflow = Some(policy);
        self
    }

    /// When complete fragments are sent relative to the wall clock (default: the builder's
    /// [`with_pacing`](PutMediaClientBuilder::with_pacing)).
    pub fn with_pacing(mut self, pacing: Pacing) -> Self {
        self.pacing = Some(pacing);
        self
    }

    /// The options with the builder's defaults filled in, validated.
    pub(crate) fn resolve(self, b: &PutMediaClientBuilder) -> Result<SessionConfig> {
        self.stream.validate()?;
        let c = SessionConfig {
            stream: self.stream,
            timecode_mode: self.timecode_mode.unwrap_or(b.timecode_mode),
            completion: self.completion.unwrap_or(b.completion),
            buffer_bound: self.buffer_bound.unwrap_or(b.buffer_bound),
            buffer_duration: self.buffer_duration.unwrap_or(b.buffer_duration),
            overflow: self.overflow.unwrap_or(b.overflow),
            pacing: self.pacing.unwrap_or(b.pacing),
        };
        check_buffer(c.buffer_bound, c.buffer_duration)?;
        Ok(c)
    }
}

/// One session's resolved choices.
#[derive(Debug, Clone)]
pub(crate) struct SessionConfig {
    pub(crate) stream: StreamId,
    pub(crate) timecode_mode: TimecodeMode,
    pub(crate) completion: CompletionAck,
    pub(crate) buffer_bound: usize,
    pub(crate) buffer_duration: Duration,
    pub(crate) overflow: OverflowPolicy,
    pub(crate) pacing: Pacing,
}

fn check_buffer(bound: usize, duration: Duration) -> Result<()> {
    if bound < MIN_BUFFER_BOUND {
        return Err(Error::config(format!(
            "buffer bound {bound} is below the minimum {MIN_BUFFER_BOUND}"
        )));
    }
    if duration.is_zero() {
        return Err(Error::config("the buffer duration is zero"));
    }
    Ok(())
}

/// Builder of a [`PutMediaClient`](super::PutMediaClient): consuming `with_*` setters,
/// validation in [`build`](Self::build).
#[derive(Debug, Clone)]
#[must_use]
pub struct PutMediaClientBuilder {
    pub(crate) stream_name: Option<String>,
    pub(crate) stream_arn: Option<String>,
    pub(crate) region: Option<String>,
    pub(crate) credentials: Option<SharedCredentialsProvider>,
    pub(crate) sdk_config: Option<SdkConfig>,
    pub(crate) endpoint_url: Option<String>,
    pub(crate) data_endpoint: Option<String>,
    pub(crate) assume_role: Option<String>,
    pub(crate) role_session_name: String,
    pub(crate) role_duration: Duration,
    pub(crate) timecode_mode: TimecodeMode,
    pub(crate) refragment: Option<RefragmentConfig>,
    pub(crate) payload_hash: PayloadHash,
    pub(crate) timeouts: Timeouts,
    pub(crate) allow_http: bool,
    pub(crate) buffer_bound: usize,
    pub(crate) completion: CompletionAck,
    pub(crate) clock: SharedClock,
    pub(crate) refresh_before: Duration,
    pub(crate) min_credential_lifetime: Duration,
    pub(crate) retry: RetryPolicy,
    pub(crate) rotation: Rotation,
    pub(crate) buffer_duration: Duration,
    pub(crate) overflow: OverflowPolicy,
    pub(crate) pause_flush: Option<Duration>,
    pub(crate) jitter_seed: Option<u64>,
    pub(crate) trust: Trust,
    pub(crate) proxy: ProxySettings,
    pub(crate) pacing: Pacing,
}

impl Default for PutMediaClientBuilder {
    fn default() -> Self {
        Self::new()
    }
}

impl PutMediaClientBuilder {
    /// An empty builder: set the stream, region and credentials (or use
    /// [`from_env`](Self::from_env)).
    pub fn new() -> Self {
        Self {
            stream_name: None,
            stream_arn: None,
            region: None,
            credentials: None,
            sdk_config: None,
            endpoint_url: None,
            data_endpoint: None,
            assume_role: None,
            role_session_name: "kvs-putmedia".to_owned(),
            role_duration: Duration::from_secs(3600),
            timecode_mode: TimecodeMode::Relative,
            refragment: None,
            payload_hash: PayloadHash::default(),
            timeouts: Timeouts::default(),
            allow_http: false,
            buffer_bound: DEFAULT_BUFFER_BOUND,
            completion: CompletionAck::default(),
            clock: Arc::new(SystemClock),
            refresh_before: Duration::from_secs(300),
            min_credential_lifetime: Duration::from_secs(300),
            retry: RetryPolicy::default(),
            rotation: Rotation::default(),
            buffer_duration: DEFAULT_BUFFER_DURATION,
            overflow: OverflowPolicy::default(),
            pause_flush: Some(DEFAULT_PAUSE_FLUSH),
            jitter_seed: None,
            trust: Trust::default(),
            proxy: ProxySettings::none(),
            pacing: Pacing::default(),
        }
    }

    /// A builder configured by the AWS SDK default chain (`aws-config`): region and credentials
    /// from the environment, profile, web identity, ECS container credentials or IMDS; endpoint
    /// overrides from `AWS_ENDPOINT_URL` and `AWS_ENDPOINT_URL_KINESIS_VIDEO` (and
    /// `AWS_ENDPOINT_URL_STS` for an assumed role), as in every AWS SDK. Set a stream for
    /// [`PutMediaClient::start`](super::PutMediaClient::start), or name one per session with
    /// [`PutMediaClient::start_session`](super::PutMediaClient::start_session).
    ///
    /// The transport follows the same environment as the SDK calls: `AWS_CA_BUNDLE`, else the
    /// selected profile's `ca_bundle` (a PEM file of extra trusted certificates, as in the AWS
    /// CLI: <https://docs.aws.amazon.com/cli/latest/userguide/cli-configure-files.html>) beside
    /// the platform root store (which honours
    /// `SSL_CERT_FILE` and `SSL_CERT_DIR`), and `HTTPS_PROXY`, `HTTP_PROXY`, `ALL_PROXY` and
    /// `NO_PROXY` (lower case too). An `http://` endpoint set through the standard AWS settings
    /// (`AWS_ENDPOINT_URL`, `AWS_ENDPOINT_URL_KINESIS_VIDEO`, `AWS_ENDPOINT_URL_STS` or a
    /// profile's `endpoint_url`) is taken as the explicit opt-in to plain HTTP
    /// ([`with_allow_http`](Self::with_allow_http)): whoever set it chose it.
    pub async fn from_env() -> Self {
        let config = aws_config::defaults(aws_config::BehaviorVersion::latest())
            .load()
            .await;
        Self::from_env_with(config)
    }

    /// [`from_env`](Self::from_env) with an SDK configuration the caller already loaded from
    /// the environment (`aws_config::load_defaults`, perhaps shared with other SDK clients):
    /// the same rules for plain HTTP, CA bundle and proxy.
    pub fn from_env_with(config: SdkConfig) -> Self {
        let mut b = Self::new();
        if sdk_endpoints(&config)
            .iter()
            .any(|u| u.trim_start().to_ascii_lowercase().starts_with("http://"))
        {
            b.allow_http = true;
        }
        if let Some(path) = first_env(&["AWS_CA_BUNDLE"]).or_else(profile_ca_bundle) {
            b.trust.bundles.push(path.into());
        }
        let all = first_env(&["ALL_PROXY", "all_proxy"]);
        b.proxy = ProxySettings {
            https: first_env(&["HTTPS_PROXY", "https_proxy"]).or_else(|| all.clone()),
            http: first_env(&["HTTP_PROXY", "http_proxy"]).or(all),
            no_proxy: first_env(&["NO_PROXY", "no_proxy"]),
        };
        b.with_sdk_config(config)
    }

    /// Trust the platform's root certificate store (default true), as the SDK's HTTPS client
    /// does. Off, only the CA bundles are trusted.
    pub fn with_native_roots(mut self, enabled: bool) -> Self {
        self.trust.native_roots = enabled;
        self
    }

    /// Also trust the certificates in this PEM file (what `AWS_CA_BUNDLE` names), for PutMedia
    /// and the SDK calls alike. Read and checked by [`build`](Self::build).
    pub fn with_ca_bundle(mut self, path: impl Into<std::path::PathBuf>) -> Self {
        self.trust.bundles.push(path.into());
        self
    }

    /// Also trust these PEM certificates, for PutMedia and the SDK calls alike.
    pub fn with_ca_bundle_pem(mut self, pem: impl Into<Vec<u8>>) -> Self {
        self.trust.pem.push(pem.into());
        self
    }

    /// The HTTP proxy for PutMedia and the SDK calls (default none; [`from_env`](Self::from_env)
    /// reads `HTTPS_PROXY` and friends).
    pub fn with_proxy(mut self, proxy: ProxySettings) -> Self {
        self.proxy = proxy;
        self
    }

    /// Use an already loaded SDK configuration (region, credentials, endpoint overrides).
    /// Explicit `with_region`/`with_credentials`/`with_endpoint_url` still take precedence.
    pub fn with_sdk_config(mut self, config: SdkConfig) -> Self {
        self.sdk_config = Some(config);
        self
    }

    /// The stream [`PutMediaClient::start`](super::PutMediaClient::start) puts media on
    /// (exclusive with [`with_stream_arn`](Self::with_stream_arn)). Optional: sessions started
    /// with [`PutMediaClient::start_session`](super::PutMediaClient::start_session) name their own.
    pub fn with_stream_name(mut self, name: impl Into<String>) -> Self {
        self.stream_name = Some(name.into());
        self
    }

    /// The stream, by ARN, that [`PutMediaClient::start`](super::PutMediaClient::start) puts
    /// media on (exclusive with [`with_stream_name`](Self::with_stream_name)).
    pub fn with_stream_arn(mut self, arn: impl Into<String>) -> Self {
        self.stream_arn = Some(arn.into());
        self
    }

    /// The stream's region (SigV4 scope and control-plane endpoint).
    pub fn with_region(mut self, region: impl Into<String>) -> Self {
        self.region = Some(region.into());
        self
    }

    /// Any credentials provider (static `Credentials`, an aws-config provider...). It is wrapped in
    /// a cache that refreshes before expiry.
    pub fn with_credentials(mut self, provider: impl ProvideCredentials + 'static) -> Self {
        self.credentials = Some(SharedCredentialsProvider::new(provider));
        self
    }

    /// Override the control-plane endpoint (GetDataEndpoint, and STS when assuming a role),
    /// e.g. the local emulator's URL.
    pub fn with_endpoint_url(mut self, url: impl Into<String>) -> Self {
        self.endpoint_url = Some(url.into());
        self
    }

    /// Skip GetDataEndpoint and put media to this data endpoint (scheme and authority, e.g.
    /// `https://s-1a2b3c4d.kinesisvideo.us-east-1.amazonaws.com`).
    pub fn with_data_endpoint(mut self, url: impl Into<String>) -> Self {
        self.data_endpoint = Some(url.into());
        self
    }

    /// Assume this IAM role through STS `AssumeRole` with the configured credentials, and sign with
    /// the temporary credentials (refreshed before they expire).
    pub fn with_assume_role(mut self, role_arn: impl Into<String>) -> Self {
        self.assume_role = Some(role_arn.into());
        self
    }

    /// Session name for [`with_assume_role`](Self::with_assume_role) (default `kvs-putmedia`).
    pub fn with_role_session_name(mut self, name: impl Into<String>) -> Self {
        self.role_session_name = name.into();
        self
    }

    /// How cluster timecodes relate to wall-clock time (default [`TimecodeMode::Relative`]).
    /// Sets the `x-amzn-fragment-timecode-type` header and the re-fragmenter's rebasing.
    pub fn with_timecode_mode(mut self, mode: TimecodeMode) -> Self {
        self.timecode_mode = mode;
        self
    }

    /// Re-fragmenter settings (its timecode mode is replaced by
    /// [`with_timecode_mode`](Self::with_timecode_mode)'s).
    pub fn with_refragment_config(mut self, config: RefragmentConfig) -> Self {
        self.refragment = Some(config);
        self
    }

    /// What the signature says about the body (default [`PayloadHash::EmptyStringSha256`]).
    pub fn with_payload_hash(mut self, mode: PayloadHash) -> Self {
        self.payload_hash = mode;
        self
    }

    /// All time limits at once.
    pub fn with_timeouts(mut self, timeouts: Timeouts) -> Self {
        self.timeouts = timeouts;
        self
    }

    /// Whether plain `http://` endpoints are allowed (set by
    /// [`with_allow_http`](Self::with_allow_http), or by [`from_env`](Self::from_env) when the
    /// environment named an `http://` endpoint).
    pub fn allows_http(&self) -> bool {
        self.allow_http
    }

    /// Allow plain `http://` endpoints (the emulator, tests). Off by default: an `http://`
    /// endpoint is a configuration error and TLS is always verified.
    pub fn with_allow_http(mut self, allow: bool) -> Self {
        self.allow_http = allow;
        self
    }

    /// Cap on the bytes of the fragments a session keeps for replay: every fragment from the
    /// moment the re-fragmenter completes it until its completion ack ([`CompletionAck`])
    /// (default 64 MiB, minimum 64 KiB). At the cap the [`OverflowPolicy`] decides: wait or drop
    /// the oldest. One fragment larger than the cap is still accepted whole (KVS caps fragments at
    /// 50 MB). On top of it: the re-fragmenter's open fragment (and one waiting for late frames)
    /// and one item given to `start_send`.
    pub fn with_buffer_bound(mut self, bytes: usize) -> Self {
        self.buffer_bound = bytes;
        self
    }

    /// Cap on the media duration of the fragments kept for replay, from the oldest one's start
    /// to the newest one's end (default 120 s, the official producer's buffer duration). Same
    /// policy as the byte cap.
    pub fn with_buffer_duration(mut self, d: Duration) -> Self {
        self.buffer_duration = d;
        self
    }

    /// What happens when a replay-buffer cap is reached (default
    /// [`OverflowPolicy::Backpressure`]).
    pub fn with_overflow_policy(mut self, policy: OverflowPolicy) -> Self {
        self.overflow = policy;
        self
    }

    /// Retry and backoff after failures (default [`RetryPolicy::default`]).
    pub fn with_retry_policy(mut self, policy: RetryPolicy) -> Self {
        self.retry = policy;
        self
    }

    /// Connection rotation (default [`Rotation::default`]: about 40 minutes).
    pub fn with_rotation(mut self, rotation: Rotation) -> Self {
        self.rotation = rotation;
        self
    }

    /// When the caller gives no media for this long, the open fragment is closed and sent with
    /// an end-of-fragment tag so that it is acknowledged now rather than when media resumes
    /// (docs/protocol.md §3, "Idle"); `None` never does (default 5 s). Video frames that arrive after
    /// the cut and before the next keyframe are dropped and reported, since a fragment must start
    /// on a keyframe.
    pub fn with_pause_flush(mut self, after: Option<Duration>) -> Self {
        self.pause_flush = after;
        self
    }

    /// Seed for the jitter of backoff delays and rotation times, for reproducible runs (default:
    /// seeded from the clock).
    pub fn with_jitter_seed(mut self, seed: u64) -> Self {
        self.jitter_seed = Some(seed);
        self
    }

    /// When complete fragments are sent relative to the wall clock (default
    /// [`Pacing::Realtime`]: never before their producer timestamps, so the service does not
    /// refuse them as in the future; [`Pacing::Backfill`] with
    /// [`TimecodeMode::backfill`] for recorded media as fast as the network allows).
    pub fn with_pacing(mut self, pacing: Pacing) -> Self {
        self.pacing = pacing;
        self
    }

    /// Which ack completes a fragment (default [`CompletionAck::Auto`]).
    pub fn with_completion_ack(mut self, ack: CompletionAck) -> Self {
        self.completion = ack;
        self
    }

    /// The wall clock for signing, producer timestamps and credential expiry (default system).
    pub fn with_clock(mut self, clock: impl Clock) -> Self {
        self.clock = Arc::new(clock);
        self
    }

    /// Refuse to start a session with credentials that expire within this time; refresh them
    /// first (default 5 min).
    pub fn with_min_credential_lifetime(mut self, d: Duration) -> Self {
        self.min_credential_lifetime = d;
        self
    }

    pub(crate) fn validate(&self) -> Result<()> {
        // The stream is optional: a client that only starts sessions with
        // [`PutMediaClient::start_session`](super::PutMediaClient::start_session) has none.
        if let Some(stream) = self.default_stream()? {
            stream.validate()?;
        }
        if let Some(role) = &self.assume_role
            && !role.starts_with("arn:")
        {
            return Err(Error::config(format!("{role:?} is not a role ARN")));
        }
        for url in [&self.endpoint_url, &self.data_endpoint]
            .into_iter()
            .flatten()
        {
            self.check_url(url)?;
        }
        check_buffer(self.buffer_bound, self.buffer_duration)?;
        self.proxy.validate()?;
        if self.pause_flush.is_some_and(|d| d.is_zero()) {
            return Err(Error::config("the pause flush delay is zero"));
        }
        let r = &self.retry;
        if r.initial_backoff.is_zero() || r.max_backoff < r.initial_backoff {
            return Err(Error::config(format!(
                "retry backoff must be above zero and its maximum ({:?}) at least its initial value ({:?})",
                r.max_backoff, r.initial_backoff
            )));
        }
        if self.rotation.interval < Duration::from_secs(1) {
            return Err(Error::config(format!(
                "rotation interval {:?} is under one second",
                self.rotation.interval
            )));
        }
        if self.rotation.jitter >= self.rotation.interval {
            return Err(Error::config(format!(
                "rotation jitter {:?} must be below the interval {:?}",
                self.rotation.jitter, self.rotation.interval
            )));
        }
        let t = &self.timeouts;
        for (name, d) in [
            ("connect", t.connect),
            ("response_head", t.response_head),
            ("first_ack", t.first_ack),
            ("staleness", t.staleness),
            ("final_drain", t.final_drain),
            ("control_plane", t.control_plane),
        ] {
            if d.is_zero() {
                return Err(Error::config(format!("the {name} timeout is zero")));
            }
        }
        Ok(())
    }

    /// The stream set with [`with_stream_name`](Self::with_stream_name) or
    /// [`with_stream_arn`](Self::with_stream_arn), if any.
    pub(crate) fn default_stream(&self) -> Result<Option<StreamId>> {
        match (&self.stream_name, &self.stream_arn) {
            (Some(_), Some(_)) => Err(Error::config("set a stream name or a stream ARN, not both")),
            (Some(n), None) => Ok(Some(StreamId::Name(n.clone()))),
            (None, Some(a)) => Ok(Some(StreamId::Arn(a.clone()))),
            (None, None) => Ok(None),
        }
    }

    pub(crate) fn check_url(&self, url: &str) -> Result<http::Uri> {
        let uri: http::Uri = url
            .parse()
            .map_err(|e| Error::config(format!("endpoint {url:?} is not a URL: {e}")))?;
        match uri.scheme_str() {
            Some("https") => {}
            Some("http") if self.allow_http => {}
            Some("http") => {
                return Err(Error::config(format!(
                    "endpoint {url} is plain http: call with_allow_http(true) to allow it"
                )));
            }
            _ => return Err(Error::config(format!("endpoint {url:?} is not http(s)"))),
        }
        if uri.authority().is_none() {
            return Err(Error::config(format!("endpoint {url:?} has no host")));
        }
        Ok(uri)
    }
}

/// The first of these environment variables that is set and not empty.
/// The `ca_bundle` of the profile `AWS_PROFILE` selects (else `default`) in the shared config
/// files (`AWS_CONFIG_FILE`, `AWS_SHARED_CREDENTIALS_FILE` or their `~/.aws` defaults), read
/// with aws-config's own profile parser. A profile the SDK was told to use in code
/// (`ConfigLoader::profile_name`) is not visible here: pass its bundle with `with_ca_bundle`.
fn profile_ca_bundle() -> Option<String> {
    use aws_types::os_shim_internal::{Env, Fs};
    use futures::FutureExt as _;
    // The default file locations (the SDK's own `EnvConfigFiles::default()`).
    let files = Default::default();
    let (fs, env) = (Fs::real(), Env::real());
    // aws-config reads real files with std::fs, so the load completes on its first poll; this
    // keeps `from_env_with` synchronous. Should it ever wait, say so rather than block.
    let Some(loaded) = aws_config::profile::load(&fs, &env, &files, None).now_or_never() else {
        tracing::warn!(
            "the AWS profile files did not load synchronously; a profile ca_bundle is not applied"
        );
        return None;
    };
    match loaded {
        Ok(profiles) => profiles
            .get("ca_bundle")
            .map(str::trim)
            .filter(|v| !v.is_empty())
            .map(str::to_owned),
        Err(e) => {
            tracing::debug!(error = %e, "no AWS profile to read a ca_bundle from");
            None
        }
    }
}

fn first_env(names: &[&str]) -> Option<String> {
    names
        .iter()
        .find_map(|n| std::env::var(n).ok().filter(|v| !v.trim().is_empty()))
}

/// The control-plane endpoints an SDK configuration sets: the global one (`AWS_ENDPOINT_URL`,
/// a profile's `endpoint_url`) and the Kinesis Video and STS ones, resolved as the generated
/// SDK clients resolve them.
pub(crate) fn sdk_endpoints(sdk: &SdkConfig) -> Vec<String> {
    let mut out: Vec<String> = sdk.endpoint_url().map(str::to_owned).into_iter().collect();
    if let Some(conf) = sdk.service_config() {
        for service in ["Kinesis Video", "STS"] {
            let key = aws_types::service_config::ServiceConfigKey::builder()
                .service_id(service)
                .env("AWS_ENDPOINT_URL")
                .profile("endpoint_url")
                .build();
            if let Ok(key) = key
                && let Some(url) = conf.load_config(key)
            {
                out.push(url);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_credential_types::Credentials;

    fn ok() -> PutMediaClientBuilder {
        PutMediaClientBuilder::new()
            .with_stream_name("my-stream")
            .with_region("us-east-1")
            .with_credentials(Credentials::for_tests())
    }

    #[test]
    fn validates_stream_identity() {
        ok().validate().unwrap();
        let both = ok().with_stream_arn("arn:aws:kinesisvideo:us-east-1:1:stream/x/1");
        assert!(
            both.validate()
                .unwrap_err()
                .to_string()
                .contains("not both")
        );
        let bad = ok().with_stream_name("has space");
        assert!(matches!(bad.validate(), Err(Error::Config { .. })));
        let long = ok().with_stream_name("a".repeat(257));
        assert!(long.validate().is_err());
    }

    #[test]
    fn plain_http_needs_opt_in() {
        let b = ok().with_endpoint_url("http://127.0.0.1:1");
        assert!(
            b.validate()
                .unwrap_err()
                .to_string()
                .contains("with_allow_http")
        );
        b.with_allow_http(true).validate().unwrap();
        ok().with_endpoint_url("https://example.com")
            .validate()
            .unwrap();
        assert!(ok().with_endpoint_url("ftp://x").validate().is_err());
    }

    #[test]
    fn rejects_rotation_jitter_at_or_above_the_interval() {
        let r = Rotation::default()
            .with_interval(Duration::from_secs(2))
            .with_jitter(Duration::from_secs(2));
        assert!(
            ok().with_rotation(r)
                .validate()
                .unwrap_err()
                .to_string()
                .contains("jitter")
        );
        let r = r.with_jitter(Duration::from_millis(1999));
        ok().with_rotation(r).validate().unwrap();
    }

    #[derive(Debug)]
    struct ServiceEndpoint(&'static str, &'static str);
    impl aws_types::service_config::LoadServiceConfig for ServiceEndpoint {
        fn load_config(
            &self,
            key: aws_types::service_config::ServiceConfigKey<'_>,
        ) -> Option<String> {
            (key.service_id() == self.0 && key.profile() == "endpoint_url")
                .then(|| self.1.to_owned())
        }
    }

    #[test]
    fn an_http_endpoint_from_the_aws_environment_is_the_opt_in() {
        let sdk = |b: aws_types::sdk_config::Builder| b.build();
        let global = sdk(SdkConfig::builder().endpoint_url("http://127.0.0.1:4566"));
        assert!(PutMediaClientBuilder::from_env_with(global).allows_http());
        // AWS_ENDPOINT_URL_KINESIS_VIDEO (or a profile's kinesis_video endpoint_url).
        let kvs = sdk(SdkConfig::builder()
            .service_config(ServiceEndpoint("Kinesis Video", "http://127.0.0.1:4566")));
        assert!(PutMediaClientBuilder::from_env_with(kvs).allows_http());
        let sts = sdk(SdkConfig::builder().service_config(ServiceEndpoint("STS", "http://x:1")));
        assert!(PutMediaClientBuilder::from_env_with(sts).allows_http());
        // An endpoint of another service, or https, is no opt-in.
        let s3 = sdk(SdkConfig::builder().service_config(ServiceEndpoint("S3", "http://x:1")));
        assert!(!PutMediaClientBuilder::from_env_with(s3).allows_http());
        let tls = sdk(SdkConfig::builder().endpoint_url("https://example.com"));
        assert!(!PutMediaClientBuilder::from_env_with(tls).allows_http());
        // Given to `with_sdk_config` directly, http still needs `with_allow_http`.
        let kvs = sdk(SdkConfig::builder()
            .service_config(ServiceEndpoint("Kinesis Video", "http://127.0.0.1:4566")));
        assert!(
            !PutMediaClientBuilder::new()
                .with_sdk_config(kvs)
                .allows_http()
        );
    }

    #[test]
    fn session_options_fall_back_to_the_builder() {
        let b = ok()
            .with_buffer_bound(1 << 20)
            .with_completion_ack(CompletionAck::Received);
        let c = SessionOptions::new("cam").resolve(&b).unwrap();
        assert_eq!(c.stream, StreamId::Name("cam".into()));
        assert_eq!(c.buffer_bound, 1 << 20);
        assert_eq!(c.completion, CompletionAck::Received);
        assert_eq!(c.timecode_mode, TimecodeMode::Relative);
        let c = SessionOptions::new("cam")
            .with_buffer_bound(2 << 20)
            .with_overflow_policy(OverflowPolicy::DropOldest)
            .resolve(&b)
            .unwrap();
        assert_eq!(c.buffer_bound, 2 << 20);
        assert_eq!(c.overflow, OverflowPolicy::DropOldest);
        assert!(
            SessionOptions::new("cam")
                .with_buffer_duration(Duration::ZERO)
                .resolve(&b)
                .is_err()
        );
        // No stream on the builder is fine; a bad one is not.
        PutMediaClientBuilder::new().validate().unwrap();
    }

    #[test]
    fn rejects_tiny_bound_and_zero_timeouts() {
        assert!(ok().with_buffer_bound(10).validate().is_err());
        let t = Timeouts::default().with_final_drain(Duration::ZERO);
        assert!(ok().with_timeouts(t).validate().is_err());
    }
}
