//! Target streams: routing an object to a stream name, preparing the stream (retention, creation)
//! and opening a session on it.

use aws_sdk_kinesisvideo::error::{ProvideErrorMetadata, SdkError};
use kvs_putmedia::mkv::TimecodeMode;
use kvs_putmedia::{
    AckStream, CompletionAck, PutMediaClient, PutMediaClientBuilder, PutMediaSink, SessionOptions,
    StreamId,
};

use crate::object::ObjectRef;

/// Checks a stream name against the KVS rules: 1-256 characters from `[a-zA-Z0-9_.-]`
/// (<https://docs.aws.amazon.com/kinesisvideostreams/latest/dg/API_CreateStream.html>).
pub fn validate_name(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > 256 {
        return Err(format!(
            "stream name {name:?} must be 1 to 256 characters long (it is {})",
            name.len()
        ));
    }
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-')))
    {
        return Err(format!(
            "stream name {name:?} has {c:?}: KVS allows only letters, digits, '_', '.' and '-'"
        ));
    }
    Ok(())
}

/// Which stream an object goes to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// Every object into this stream (the Node sample's behaviour).
    Fixed(StreamId),
    /// A template with `{key_dir}` (the key's first path segment, `root` for a key without
    /// one) and `{bucket}`, e.g. `cam-{key_dir}`.
    Template(String),
}

impl Route {
    /// A template, checked: only these placeholders in braces. Without a placeholder it is
    /// one fixed stream name (the sample's behaviour), checked against the naming rules.
    pub fn template(t: impl Into<String>) -> Result<Route, String> {
        let t = t.into();
        let bare = t.replace("{key_dir}", "").replace("{bucket}", "");
        if bare.contains(['{', '}']) {
            return Err(format!(
                "stream template {t:?}: the placeholders are {{key_dir}} and {{bucket}}"
            ));
        }
        if bare == t {
            validate_name(&t)?;
            return Ok(Route::Fixed(StreamId::Name(t)));
        }
        Ok(Route::Template(t))
    }

    /// The stream for `object`, validated against the KVS naming rules.
    pub fn stream_for(&self, object: &ObjectRef) -> Result<StreamId, String> {
        match self {
            Route::Fixed(s) => Ok(s.clone()),
            Route::Template(t) => {
                let key_dir = match object.key.split_once('/') {
                    Some((dir, _)) if !dir.is_empty() => dir,
                    _ => "root",
                };
                let name = t
                    .replace("{key_dir}", key_dir)
                    .replace("{bucket}", &object.bucket);
                validate_name(&name).map_err(|e| format!("{object}: {e}"))?;
                Ok(StreamId::Name(name))
            }
        }
    }
}

/// Why a stream could not be prepared.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StreamError {
    /// The stream does not exist and was not to be created.
    #[error("stream {0} not found; pass --create-stream(s) to create it")]
    NotFound(String),
    /// Credentials or permissions refused.
    #[error("{0}")]
    Auth(String),
    /// Anything else.
    #[error("{0}")]
    Other(String),
}

/// Learns the stream's retention (which ack completes a fragment), creating the stream (by name)
/// with `create` hours of retention when it is missing. `Ok(None)` when DescribeStream is not
/// allowed: PutMedia alone needs only `kinesisvideo:GetDataEndpoint` and `kinesisvideo:PutMedia`.
pub async fn prepare(
    kv: &aws_sdk_kinesisvideo::Client,
    stream: &StreamId,
    create: Option<u32>,
) -> Result<Option<u32>, StreamError> {
    let req = kv.describe_stream();
    let req = match stream {
        StreamId::Name(n) => req.stream_name(n),
        StreamId::Arn(a) => req.stream_arn(a),
        other => req.stream_name(other.as_str()),
    };
    let e = match req.send().await {
        Ok(out) => {
            let hours = out.stream_info.and_then(|i| i.data_retention_in_hours);
            return Ok(Some(hours.unwrap_or(0).max(0) as u32));
        }
        Err(e) => e,
    };
    match (e.code(), stream, create) {
        (Some("ResourceNotFoundException"), StreamId::Name(name), Some(hours)) => {
            let created = kv
                .create_stream()
                .stream_name(name)
                .data_retention_in_hours(hours as i32)
                .send()
                .await;
            match created {
                Ok(_) => {
                    tracing::info!(stream = %name, retention_hours = hours, "created the stream")
                }
                // Another worker created it first.
                Err(e) if e.code() == Some("ResourceInUseException") => {}
                Err(e) => return Err(classify(&format!("CreateStream({name})"), &e)),
            }
            Ok(Some(hours))
        }
        (Some("ResourceNotFoundException"), _, _) => Err(StreamError::NotFound(stream.to_string())),
        (Some("AccessDeniedException"), _, _) => {
            tracing::warn!(
                stream = %stream,
                "DescribeStream is not allowed; assuming the stream keeps data (PERSISTED acks)"
            );
            Ok(None)
        }
        _ => Err(classify(&format!("DescribeStream({stream})"), &e)),
    }
}

fn classify<E, R>(what: &str, e: &SdkError<E, R>) -> StreamError
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
    R: std::fmt::Debug,
{
    let text = format!(
        "{what}: {}",
        aws_sdk_kinesisvideo::error::DisplayErrorContext(e)
    );
    let auth = matches!(
        e.code(),
        Some(
            "UnrecognizedClientException"
                | "InvalidSignatureException"
                | "NotAuthorizedException"
                | "AccessDeniedException"
                | "ExpiredTokenException"
        )
    ) || text.to_ascii_lowercase().contains("credentials");
    if auth {
        StreamError::Auth(text)
    } else {
        StreamError::Other(text)
    }
}

/// The completion ack for a stream's retention: zero retention keeps nothing and sends no
/// PERSISTED acks, so RECEIVED completes a fragment.
pub fn completion_for(retention_hours: Option<u32>) -> CompletionAck {
    if retention_hours == Some(0) {
        CompletionAck::Received
    } else {
        CompletionAck::Persisted
    }
}

/// Opens PutMedia sessions on any stream from one client (one HTTP stack, one credentials
/// cache, one role assumption per process): the one place a session is started, with the
/// per-session options (stream, timecode mode, completion ack).
#[derive(Debug, Clone)]
pub struct Sessions {
    client: PutMediaClient,
}

impl Sessions {
    /// Sessions from the client `builder` configures (SDK config, buffers, retry, HTTP opt-in).
    pub fn new(builder: PutMediaClientBuilder) -> kvs_putmedia::Result<Self> {
        Ok(Sessions {
            client: builder.build()?,
        })
    }

    /// Starts a session on `stream`. Without `completion` the client learns it from the
    /// stream's retention.
    pub async fn open(
        &self,
        stream: &StreamId,
        mode: TimecodeMode,
        completion: Option<CompletionAck>,
    ) -> kvs_putmedia::Result<(PutMediaSink, AckStream)> {
        let mut opts = SessionOptions::new(stream.clone()).with_timecode_mode(mode);
        if let Some(c) = completion {
            opts = opts.with_completion_ack(c);
        }
        self.client.start_session(opts).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_the_kvs_rules() {
        assert!(validate_name("cam-front_1.v2").is_ok());
        assert!(validate_name("").is_err());
        assert!(validate_name(&"a".repeat(257)).is_err());
        assert!(validate_name(&"a".repeat(256)).is_ok());
        let e = validate_name("cam front").unwrap_err();
        assert!(e.contains("' '"), "{e}");
    }

    #[test]
    fn templates_route_by_key_dir_and_bucket() {
        let r = Route::template("cam-{key_dir}").unwrap();
        let o = |k: &str| ObjectRef::new("uploads", k);
        assert_eq!(
            r.stream_for(&o("front/2024/clip.mp4")).unwrap(),
            StreamId::Name("cam-front".into())
        );
        assert_eq!(
            r.stream_for(&o("clip.mp4")).unwrap(),
            StreamId::Name("cam-root".into())
        );
        assert_eq!(
            Route::template("{bucket}.{key_dir}")
                .unwrap()
                .stream_for(&o("a/b"))
                .unwrap(),
            StreamId::Name("uploads.a".into())
        );
        let e = r.stream_for(&o("my dir/clip.mp4")).unwrap_err();
        assert!(e.contains("s3://uploads/my dir/clip.mp4"), "{e}");
        assert_eq!(
            Route::template("cam").unwrap(),
            Route::Fixed(StreamId::Name("cam".into()))
        );
        assert!(Route::template("cam one").is_err());
        assert!(Route::template("cam-{prefix}").is_err());
    }
}
