//! Pure request validation for the KVS JSON APIs and the PutMedia headers, and the AWS error
//! shape every service answers with. No I/O: the server module and the fuzz target share it.

use serde::Deserialize;

/// Largest JSON request body the control plane reads; anything larger is refused unread.
pub const MAX_JSON_BODY: usize = 64 * 1024;

/// An AWS-shaped error: HTTP status, `x-amzn-ErrorType`, and the JSON `message`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{status} {error_type}: {message}")]
pub struct ApiError {
    /// HTTP status.
    pub status: u16,
    /// The `x-amzn-ErrorType` value, e.g. `ResourceNotFoundException`.
    pub error_type: &'static str,
    /// Human-readable message (the JSON body's `message`).
    pub message: String,
}

impl ApiError {
    /// Builds an error.
    pub fn new(status: u16, error_type: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            error_type,
            message: message.into(),
        }
    }
    /// `400 InvalidArgumentException`.
    pub fn invalid_argument(message: impl Into<String>) -> Self {
        Self::new(400, "InvalidArgumentException", message)
    }
    /// `404 ResourceNotFoundException`.
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(404, "ResourceNotFoundException", message)
    }
    /// `400 ResourceInUseException`.
    pub fn in_use(message: impl Into<String>) -> Self {
        Self::new(400, "ResourceInUseException", message)
    }
    /// The JSON body: `{"message": "..."}` (plus `__type`, which some SDKs read instead of the header).
    pub fn body(&self) -> String {
        serde_json::json!({ "message": self.message, "__type": self.error_type }).to_string()
    }
}

/// docs/protocol.md §1.3: stream name `[a-zA-Z0-9_.-]{1,256}`.
pub fn validate_stream_name(name: &str) -> Result<(), ApiError> {
    if name.is_empty() || name.len() > 256 {
        return Err(ApiError::invalid_argument(format!(
            "StreamName must be 1 to 256 characters, got {}",
            name.len()
        )));
    }
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-')))
    {
        return Err(ApiError::invalid_argument(format!(
            "StreamName must match [a-zA-Z0-9_.-]+, found {c:?}"
        )));
    }
    Ok(())
}

/// The ARN the emulator gives a stream (same shape as the real service's).
pub fn stream_arn(region: &str, account: &str, name: &str, created_ms: u64) -> String {
    format!("arn:aws:kinesisvideo:{region}:{account}:stream/{name}/{created_ms}")
}

/// The stream name inside a KVS stream ARN.
pub fn stream_name_from_arn(arn: &str) -> Result<&str, ApiError> {
    let bad = || ApiError::invalid_argument("StreamARN is not a Kinesis Video stream ARN");
    let rest = arn.strip_prefix("arn:aws:kinesisvideo:").ok_or_else(bad)?;
    let mut it = rest.splitn(3, ':');
    let (_region, _account, res) = (it.next(), it.next(), it.next().ok_or_else(bad)?);
    let res = res.strip_prefix("stream/").ok_or_else(bad)?;
    let name = res.split('/').next().ok_or_else(bad)?;
    validate_stream_name(name)?;
    Ok(name)
}

/// How a request names its stream: exactly one of name or ARN.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StreamRef {
    /// By name.
    Name(String),
    /// By ARN.
    Arn(String),
}

impl StreamRef {
    /// From optional name and ARN; exactly one must be set (docs/protocol.md §1.3).
    pub fn from_parts(name: Option<String>, arn: Option<String>) -> Result<Self, ApiError> {
        match (name, arn) {
            (Some(n), None) => {
                validate_stream_name(&n)?;
                Ok(Self::Name(n))
            }
            (None, Some(a)) => {
                stream_name_from_arn(&a)?;
                Ok(Self::Arn(a))
            }
            (Some(_), Some(_)) => Err(ApiError::invalid_argument(
                "specify either StreamName or StreamARN, not both",
            )),
            (None, None) => Err(ApiError::invalid_argument(
                "one of StreamName or StreamARN is required",
            )),
        }
    }
    /// The stream's name.
    pub fn name(&self) -> &str {
        match self {
            Self::Name(n) => n,
            Self::Arn(a) => stream_name_from_arn(a).unwrap_or(a),
        }
    }
}

/// Fragment timecode type of a PutMedia request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimecodeKind {
    /// Cluster timecodes are epoch time.
    Absolute,
    /// Cluster timecodes are relative to `x-amzn-producer-start-timestamp`.
    Relative,
}

/// The validated PutMedia headers (docs/protocol.md §1.3).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PutMediaHeaders {
    /// Which stream.
    pub stream: StreamRef,
    /// `x-amzn-fragment-timecode-type`.
    pub timecode_type: TimecodeKind,
    /// `x-amzn-producer-start-timestamp` in epoch milliseconds.
    pub producer_start_ms: Option<u64>,
}

/// Parses `1700000000.005` (epoch seconds, optional fraction of up to 3 digits) into epoch ms.
pub fn parse_producer_timestamp(v: &str) -> Result<u64, ApiError> {
    let bad = || {
        ApiError::invalid_argument(format!(
            "x-amzn-producer-start-timestamp must be epoch seconds like 1700000000.005, got {:?}",
            v.chars().take(40).collect::<String>()
        ))
    };
    let (secs, frac) = v.split_once('.').unwrap_or((v, ""));
    if secs.is_empty()
        || secs.len() > 12
        || frac.len() > 3
        || !secs.bytes().all(|b| b.is_ascii_digit())
        || !frac.bytes().all(|b| b.is_ascii_digit())
    {
        return Err(bad());
    }
    let s: u64 = secs.parse().map_err(|_| bad())?;
    let mut ms = 0u64;
    for (i, b) in frac.bytes().enumerate() {
        ms += u64::from(b - b'0') * 10u64.pow(2 - i as u32);
    }
    Ok(s * 1000 + ms)
}

/// Validates PutMedia headers given as (name, value) pairs.
pub fn parse_put_media_headers(headers: &[(String, String)]) -> Result<PutMediaHeaders, ApiError> {
    let get = |n: &str| crate::sigv4::header(headers, n).map(str::to_owned);
    let stream = StreamRef::from_parts(get("x-amzn-stream-name"), get("x-amzn-stream-arn"))?;
    let timecode_type = match get("x-amzn-fragment-timecode-type").as_deref() {
        Some("ABSOLUTE") => TimecodeKind::Absolute,
        Some("RELATIVE") => TimecodeKind::Relative,
        Some(other) => {
            return Err(ApiError::invalid_argument(format!(
                "x-amzn-fragment-timecode-type must be ABSOLUTE or RELATIVE, got {:?}",
                other.chars().take(40).collect::<String>()
            )));
        }
        None => {
            return Err(ApiError::invalid_argument(
                "x-amzn-fragment-timecode-type is required",
            ));
        }
    };
    let producer_start_ms = get("x-amzn-producer-start-timestamp")
        .map(|v| parse_producer_timestamp(&v))
        .transpose()?;
    if timecode_type == TimecodeKind::Relative && producer_start_ms.is_none() {
        return Err(ApiError::invalid_argument(
            "x-amzn-producer-start-timestamp is required with RELATIVE timecodes",
        ));
    }
    Ok(PutMediaHeaders {
        stream,
        timecode_type,
        producer_start_ms,
    })
}

fn json<'a, T: Deserialize<'a>>(body: &'a [u8]) -> Result<T, ApiError> {
    if body.len() > MAX_JSON_BODY {
        return Err(ApiError::invalid_argument("request body too large"));
    }
    let body = if body.iter().all(u8::is_ascii_whitespace) {
        b"{}".as_slice()
    } else {
        body
    };
    serde_json::from_slice(body).map_err(|e| {
        ApiError::new(
            400,
            "SerializationException",
            format!("malformed JSON request: {e}"),
        )
    })
}

/// `CreateStream` input.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "PascalCase")]
#[allow(missing_docs)]
pub struct CreateStreamInput {
    pub stream_name: String,
    pub device_name: Option<String>,
    pub media_type: Option<String>,
    pub kms_key_id: Option<String>,
    pub data_retention_in_hours: Option<u32>,
}

/// `StreamName`/`StreamARN` input used by Describe, GetDataEndpoint and others.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(rename_all = "PascalCase")]
#[allow(missing_docs)]
pub struct StreamInput {
    pub stream_name: Option<String>,
    #[serde(rename = "StreamARN")]
    pub stream_arn: Option<String>,
    #[serde(rename = "APIName")]
    pub api_name: Option<String>,
    pub current_version: Option<String>,
}

/// `UpdateDataRetention` input.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "PascalCase")]
#[allow(missing_docs)]
pub struct UpdateDataRetentionInput {
    pub stream_name: Option<String>,
    #[serde(rename = "StreamARN")]
    pub stream_arn: Option<String>,
    pub current_version: String,
    pub operation: String,
    pub data_retention_change_in_hours: u32,
}

/// `ListStreams` input.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(rename_all = "PascalCase")]
#[allow(missing_docs)]
pub struct ListStreamsInput {
    pub max_results: Option<u32>,
    pub next_token: Option<String>,
    pub stream_name_condition: Option<StreamNameCondition>,
}

/// `ListStreams` name filter.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(rename_all = "PascalCase")]
#[allow(missing_docs)]
pub struct StreamNameCondition {
    pub comparison_operator: Option<String>,
    pub comparison_value: Option<String>,
}

/// `GetMedia` start selector.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "PascalCase")]
#[allow(missing_docs)]
pub struct StartSelector {
    pub start_selector_type: String,
    pub after_fragment_number: Option<String>,
    pub start_timestamp: Option<f64>,
    pub continuation_token: Option<String>,
}

/// `GetMedia` input.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "PascalCase")]
#[allow(missing_docs)]
pub struct GetMediaInput {
    pub stream_name: Option<String>,
    #[serde(rename = "StreamARN")]
    pub stream_arn: Option<String>,
    pub start_selector: StartSelector,
}

/// `ListFragments` timestamp range.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "PascalCase")]
#[allow(missing_docs)]
pub struct TimestampRange {
    pub start_timestamp: f64,
    pub end_timestamp: f64,
}

/// `ListFragments` selector.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "PascalCase")]
#[allow(missing_docs)]
pub struct FragmentSelector {
    pub fragment_selector_type: String,
    pub timestamp_range: TimestampRange,
}

/// `ListFragments` input.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "PascalCase")]
#[allow(missing_docs)]
pub struct ListFragmentsInput {
    pub stream_name: Option<String>,
    #[serde(rename = "StreamARN")]
    pub stream_arn: Option<String>,
    pub max_results: Option<u64>,
    pub next_token: Option<String>,
    pub fragment_selector: Option<FragmentSelector>,
}

/// `GetMediaForFragmentList` input.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "PascalCase")]
#[allow(missing_docs)]
pub struct GetMediaForFragmentListInput {
    pub stream_name: Option<String>,
    #[serde(rename = "StreamARN")]
    pub stream_arn: Option<String>,
    pub fragments: Vec<String>,
}

/// One parsed, validated control-plane or data-plane JSON request.
#[derive(Debug, Clone)]
#[non_exhaustive]
#[allow(missing_docs)]
pub enum KvsRequest {
    CreateStream(CreateStreamInput),
    DescribeStream(StreamRef),
    ListStreams(ListStreamsInput),
    DeleteStream(StreamRef, Option<String>),
    UpdateDataRetention(StreamRef, UpdateDataRetentionInput),
    GetDataEndpoint(StreamRef, String),
    GetMedia(StreamRef, StartSelector),
    ListFragments(StreamRef, ListFragmentsInput),
    GetMediaForFragmentList(StreamRef, Vec<String>),
}

const API_NAMES: &[&str] = &[
    "PUT_MEDIA",
    "GET_MEDIA",
    "LIST_FRAGMENTS",
    "GET_MEDIA_FOR_FRAGMENT_LIST",
    "GET_HLS_STREAMING_SESSION_URL",
    "GET_DASH_STREAMING_SESSION_URL",
    "GET_CLIP",
    "GET_IMAGES",
];

/// Parses and validates a JSON request for `path` (`/createStream`, ...). `/putMedia` is not
/// JSON and is handled by [`parse_put_media_headers`].
pub fn parse_kvs_request(path: &str, body: &[u8]) -> Result<KvsRequest, ApiError> {
    Ok(match path {
        "/createStream" => {
            let i: CreateStreamInput = json(body)?;
            validate_stream_name(&i.stream_name)?;
            if let Some(m) = &i.media_type
                && (m.is_empty() || m.len() > 128)
            {
                return Err(ApiError::invalid_argument(
                    "MediaType must be 1-128 characters",
                ));
            }
            if let Some(d) = &i.device_name
                && (d.is_empty() || d.len() > 128)
            {
                return Err(ApiError::invalid_argument(
                    "DeviceName must be 1-128 characters",
                ));
            }
            KvsRequest::CreateStream(i)
        }
        "/describeStream" => {
            let i: StreamInput = json(body)?;
            KvsRequest::DescribeStream(StreamRef::from_parts(i.stream_name, i.stream_arn)?)
        }
        "/listStreams" => {
            let i: ListStreamsInput = json(body)?;
            if let Some(m) = i.max_results
                && !(1..=10_000).contains(&m)
            {
                return Err(ApiError::invalid_argument("MaxResults must be 1-10000"));
            }
            KvsRequest::ListStreams(i)
        }
        "/deleteStream" => {
            let i: StreamInput = json(body)?;
            // The real API takes only StreamARN; the emulator also accepts a name for convenience.
            KvsRequest::DeleteStream(
                StreamRef::from_parts(i.stream_name, i.stream_arn)?,
                i.current_version,
            )
        }
        "/updateDataRetention" => {
            let i: UpdateDataRetentionInput = json(body)?;
            let r = StreamRef::from_parts(i.stream_name.clone(), i.stream_arn.clone())?;
            if !matches!(
                i.operation.as_str(),
                "INCREASE_DATA_RETENTION" | "DECREASE_DATA_RETENTION"
            ) {
                return Err(ApiError::invalid_argument(
                    "Operation must be INCREASE_DATA_RETENTION or DECREASE_DATA_RETENTION",
                ));
            }
            KvsRequest::UpdateDataRetention(r, i)
        }
        "/getDataEndpoint" => {
            let i: StreamInput = json(body)?;
            let r = StreamRef::from_parts(i.stream_name, i.stream_arn)?;
            let api = i
                .api_name
                .ok_or_else(|| ApiError::invalid_argument("APIName is required"))?;
            if !API_NAMES.contains(&api.as_str()) {
                return Err(ApiError::invalid_argument(format!(
                    "APIName {:?} is not valid",
                    api.chars().take(64).collect::<String>()
                )));
            }
            KvsRequest::GetDataEndpoint(r, api)
        }
        "/getMedia" => {
            let i: GetMediaInput = json(body)?;
            let r = StreamRef::from_parts(i.stream_name, i.stream_arn)?;
            KvsRequest::GetMedia(r, i.start_selector)
        }
        "/listFragments" => {
            let i: ListFragmentsInput = json(body)?;
            let r = StreamRef::from_parts(i.stream_name.clone(), i.stream_arn.clone())?;
            KvsRequest::ListFragments(r, i)
        }
        "/getMediaForFragmentList" => {
            let i: GetMediaForFragmentListInput = json(body)?;
            let r = StreamRef::from_parts(i.stream_name, i.stream_arn)?;
            if i.fragments.is_empty() || i.fragments.len() > 1000 {
                return Err(ApiError::invalid_argument(
                    "Fragments must hold 1-1000 numbers",
                ));
            }
            KvsRequest::GetMediaForFragmentList(r, i.fragments)
        }
        _ => {
            return Err(ApiError::new(
                404,
                "UnknownOperationException",
                "unknown operation",
            ));
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stream_name_rule() {
        validate_stream_name("cam-1_a.b").unwrap();
        assert!(validate_stream_name("").is_err());
        assert!(validate_stream_name(&"a".repeat(257)).is_err());
        validate_stream_name(&"a".repeat(256)).unwrap();
        assert!(validate_stream_name("../etc/passwd").is_err());
        assert!(validate_stream_name("a b").is_err());
    }

    #[test]
    fn producer_timestamp_format() {
        assert_eq!(
            parse_producer_timestamp("1700000000.005").unwrap(),
            1_700_000_000_005
        );
        assert_eq!(
            parse_producer_timestamp("1700000000.5").unwrap(),
            1_700_000_000_500
        );
        assert_eq!(
            parse_producer_timestamp("1700000000").unwrap(),
            1_700_000_000_000
        );
        for bad in [
            "",
            ".5",
            "17e9",
            "-1",
            "1.0001",
            "1700000000.00x",
            "99999999999999",
        ] {
            assert!(parse_producer_timestamp(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn put_media_headers_need_exactly_one_stream() {
        let h = |v: &[(&str, &str)]| -> Vec<(String, String)> {
            v.iter()
                .map(|(a, b)| (a.to_string(), b.to_string()))
                .collect()
        };
        let ok = parse_put_media_headers(&h(&[
            ("x-amzn-stream-name", "s"),
            ("x-amzn-fragment-timecode-type", "RELATIVE"),
            ("x-amzn-producer-start-timestamp", "1700000000.005"),
        ]))
        .unwrap();
        assert_eq!(ok.producer_start_ms, Some(1_700_000_000_005));
        let both = parse_put_media_headers(&h(&[
            ("x-amzn-stream-name", "s"),
            (
                "x-amzn-stream-arn",
                "arn:aws:kinesisvideo:us-east-1:1:stream/s/1",
            ),
            ("x-amzn-fragment-timecode-type", "ABSOLUTE"),
        ]))
        .unwrap_err();
        assert_eq!(both.error_type, "InvalidArgumentException");
        assert!(
            parse_put_media_headers(&h(&[("x-amzn-fragment-timecode-type", "ABSOLUTE")])).is_err()
        );
        assert!(
            parse_put_media_headers(&h(&[
                ("x-amzn-stream-name", "s"),
                ("x-amzn-fragment-timecode-type", "absolute"),
            ]))
            .is_err()
        );
    }

    #[test]
    fn json_requests_validated() {
        assert!(matches!(
            parse_kvs_request(
                "/createStream",
                br#"{"StreamName":"a","DataRetentionInHours":2}"#
            ),
            Ok(KvsRequest::CreateStream(_))
        ));
        let e = parse_kvs_request("/createStream", b"{not json").unwrap_err();
        assert_eq!(e.status, 400);
        let e = parse_kvs_request("/describeStream", br#"{"StreamName":"../x"}"#).unwrap_err();
        assert_eq!(e.error_type, "InvalidArgumentException");
        let e = parse_kvs_request(
            "/getDataEndpoint",
            br#"{"StreamName":"a","APIName":"NOPE"}"#,
        )
        .unwrap_err();
        assert_eq!(e.error_type, "InvalidArgumentException");
        assert_eq!(
            stream_name_from_arn("arn:aws:kinesisvideo:us-east-1:123:stream/cam/17").unwrap(),
            "cam"
        );
    }
}

/// What the emulator reads from a web identity token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebIdentity {
    /// `sub`: `SubjectFromWebIdentityToken` in the response.
    pub subject: String,
    /// `aud` (the first one when it is a list): `Audience`.
    pub audience: String,
    /// `iss`: `Provider`.
    pub provider: String,
}

/// Checks an STS `AssumeRoleWithWebIdentity` token: a JWT (`header.payload.signature`,
/// base64url JSON header and payload) whose payload has `sub` and, if present, an `exp` after
/// `now_ms`. The signature is not verified (the emulator has no OIDC provider). Errors are STS's:
/// 400 `InvalidIdentityToken`, or 400 `ExpiredTokenException` for a past `exp`.
pub fn parse_web_identity_token(token: &str, now_ms: u64) -> Result<WebIdentity, ApiError> {
    use base64::Engine as _;
    let invalid = |why: &str| {
        ApiError::new(
            400,
            "InvalidIdentityToken",
            format!("Couldn't parse the web identity token: {why}"),
        )
    };
    if token.len() < 4 || token.len() > 20_000 {
        return Err(invalid("it must be 4-20000 characters"));
    }
    let parts: Vec<&str> = token.trim().split('.').collect();
    let [header, payload, _signature] = parts[..] else {
        return Err(invalid("a JWT has three dot-separated parts"));
    };
    let decode = |part: &str| {
        base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(part.trim_end_matches('='))
            .ok()
            .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
            .filter(serde_json::Value::is_object)
    };
    decode(header).ok_or_else(|| invalid("the header is not base64url JSON"))?;
    let claims = decode(payload).ok_or_else(|| invalid("the payload is not base64url JSON"))?;
    let text = |k: &str| match &claims[k] {
        serde_json::Value::String(s) => Some(s.clone()),
        serde_json::Value::Array(a) => a.first().and_then(|v| v.as_str()).map(str::to_owned),
        _ => None,
    };
    let subject = text("sub").ok_or_else(|| invalid("the payload has no \"sub\" claim"))?;
    if let Some(exp) = claims["exp"].as_u64()
        && exp.saturating_mul(1000) <= now_ms
    {
        return Err(ApiError::new(
            400,
            "ExpiredTokenException",
            "Token expired: current date/time is after the token's exp claim",
        ));
    }
    Ok(WebIdentity {
        subject,
        audience: text("aud").unwrap_or_default(),
        provider: text("iss").unwrap_or_default(),
    })
}
