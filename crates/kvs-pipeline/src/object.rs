//! S3 objects: the request and event bodies that name them, HEAD, and presigned URLs for ffmpeg.
//!
//! ffmpeg reads an object through a presigned GET URL, seeking with Range requests, so streaming
//! starts without downloading the object first and an MP4 with its index at the end works
//! (docs/protocol.md §5: never pipe such a file into ffmpeg).

use std::time::{Duration, SystemTime};

use aws_sdk_s3::presigning::PresigningConfig;
use serde::{Deserialize, Serialize};

/// An S3 object to stream.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ObjectRef {
    /// Bucket name.
    pub bucket: String,
    /// Object key, already URL-decoded.
    pub key: String,
    /// The S3 event's `sequencer` (hex, orders events of one key), when the body was an event.
    #[serde(skip)]
    pub sequencer: Option<String>,
}

impl ObjectRef {
    /// An object by bucket and key.
    pub fn new(bucket: impl Into<String>, key: impl Into<String>) -> Self {
        ObjectRef {
            bucket: bucket.into(),
            key: key.into(),
            sequencer: None,
        }
    }
}

impl std::fmt::Display for ObjectRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "s3://{}/{}", self.bucket, self.key)
    }
}

/// Why a body was refused; each maps to a `400`.
#[derive(Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum BodyError {
    /// Not JSON at all.
    Malformed(String),
    /// JSON, but neither form, or a field is empty.
    Invalid(String),
    /// The `s3:TestEvent` S3 sends when a notification is configured: nothing to stream.
    TestEvent,
    /// An S3 event whose records are all other than `ObjectCreated:*` (e.g. `ObjectRemoved`, sent
    /// when a notification rule is broader than uploads): nothing to stream; the names are listed.
    NotObjectCreated(String),
}

impl std::fmt::Display for BodyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BodyError::Malformed(e) => write!(f, "request body is not valid JSON: {e}"),
            BodyError::Invalid(e) => write!(f, "{e}"),
            BodyError::TestEvent => write!(f, "the S3 test event (s3:TestEvent) names no object"),
            BodyError::NotObjectCreated(names) => {
                write!(
                    f,
                    "the S3 event has no ObjectCreated record ({names}): nothing to stream"
                )
            }
        }
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct SampleBody {
    bucket_name: Option<String>,
    key_name: Option<String>,
}

#[derive(Deserialize)]
struct S3Event {
    #[serde(rename = "Records")]
    records: Vec<S3Record>,
}

#[derive(Deserialize)]
struct S3Record {
    #[serde(rename = "eventName", default)]
    event_name: Option<String>,
    s3: S3Entity,
}

#[derive(Deserialize)]
struct S3Entity {
    bucket: S3Bucket,
    object: S3Object,
}

#[derive(Deserialize)]
struct S3Bucket {
    name: String,
}

#[derive(Deserialize)]
struct S3Object {
    key: String,
    sequencer: Option<String>,
}

/// Parses a body into the objects to stream, in order, without duplicates: the Node sample's
/// `{"bucketName", "keyName"}`, or an S3 event notification (keys URL-decoded as S3 encodes
/// them). The test event S3 sends when notifications are configured is
/// [`BodyError::TestEvent`].
pub fn parse(body: &[u8]) -> Result<Vec<ObjectRef>, BodyError> {
    let value: serde_json::Value =
        serde_json::from_slice(body).map_err(|e| BodyError::Malformed(e.to_string()))?;
    if value.get("Event").and_then(|e| e.as_str()) == Some("s3:TestEvent") {
        return Err(BodyError::TestEvent);
    }
    let mut objects = Vec::new();
    if value.get("Records").is_some() {
        let event: S3Event = serde_json::from_value(value)
            .map_err(|e| BodyError::Invalid(format!("S3 event notification: {e}")))?;
        let mut other_events = Vec::new();
        for r in event.records {
            // Only uploads are media to stream: an ObjectRemoved record would otherwise be
            // forwarded, then dead-lettered as a missing object. A record without a name (a
            // hand-written event) is taken as an upload.
            if let Some(name) = r.event_name.filter(|n| !n.starts_with("ObjectCreated")) {
                other_events.push(name);
                continue;
            }
            // S3 event keys are form-encoded: '+' is a space, the rest percent-encoded.
            let key = decode_event_key(&r.s3.object.key)?;
            objects.push(ObjectRef {
                bucket: r.s3.bucket.name,
                key,
                sequencer: r.s3.object.sequencer,
            });
        }
        if objects.is_empty() && !other_events.is_empty() {
            return Err(BodyError::NotObjectCreated(other_events.join(", ")));
        }
    } else {
        let b: SampleBody = serde_json::from_value(value).map_err(|e| {
            BodyError::Invalid(format!("expected {{\"bucketName\", \"keyName\"}}: {e}"))
        })?;
        objects.push(ObjectRef::new(
            b.bucket_name.unwrap_or_default(),
            b.key_name.unwrap_or_default(),
        ));
    }
    if objects.is_empty() {
        return Err(BodyError::Invalid("S3 event has no Records".into()));
    }
    for o in &objects {
        if o.bucket.is_empty() {
            return Err(BodyError::Invalid("bucketName is missing or empty".into()));
        }
        if o.key.is_empty() {
            return Err(BodyError::Invalid("keyName is missing or empty".into()));
        }
    }
    let mut seen = std::collections::HashSet::new();
    objects.retain(|o| seen.insert((o.bucket.clone(), o.key.clone())));
    Ok(objects)
}

fn decode_event_key(raw: &str) -> Result<String, BodyError> {
    let plus_decoded = raw.replace('+', " ");
    let bytes = plus_decoded.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes
                .get(i + 1..i + 3)
                .and_then(|h| std::str::from_utf8(h).ok())
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or_else(|| {
                    BodyError::Invalid(format!("bad percent-encoding in key {raw:?}"))
                })?;
            out.push(hex);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| BodyError::Invalid(format!("key {raw:?} is not UTF-8")))
}

/// How long a presigned URL stays valid: long enough for ffmpeg to read a long upload at native
/// rate, short enough not to be a standing credential.
pub const PRESIGN_VALIDITY: Duration = Duration::from_secs(6 * 3600);

/// What S3 says about an object (HEAD).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ObjectInfo {
    /// `LastModified` (whole seconds).
    pub last_modified: SystemTime,
    /// The eTag, quotes included as S3 sends it.
    pub etag: String,
    /// Size in bytes.
    pub size: u64,
}

/// Why an object cannot be read.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ObjectError {
    /// No such bucket or key (HTTP 404): retrying cannot help.
    #[error("{object}: no such object")]
    NotFound {
        /// The object.
        object: String,
    },
    /// Anything else (permissions, network): the message names it.
    #[error("{object}: {message}")]
    Other {
        /// The object.
        object: String,
        /// What went wrong.
        message: String,
        /// The HTTP status, when S3 answered.
        status: Option<u16>,
    },
}

/// HEAD of `object`: turns "no such object" and "access denied" into clear errors before ffmpeg
/// would report them as an HTTP error.
pub async fn head(s3: &aws_sdk_s3::Client, object: &ObjectRef) -> Result<ObjectInfo, ObjectError> {
    match s3
        .head_object()
        .bucket(&object.bucket)
        .key(&object.key)
        .send()
        .await
    {
        Ok(h) => Ok(ObjectInfo {
            last_modified: h
                .last_modified
                .and_then(|t| SystemTime::try_from(t).ok())
                .unwrap_or(SystemTime::UNIX_EPOCH),
            etag: h.e_tag.unwrap_or_default(),
            size: h.content_length.unwrap_or(0).max(0) as u64,
        }),
        Err(e) => {
            let status = e.raw_response().map(|r| r.status().as_u16());
            if status == Some(404) {
                return Err(ObjectError::NotFound {
                    object: object.to_string(),
                });
            }
            Err(ObjectError::Other {
                object: object.to_string(),
                message: aws_sdk_s3::error::DisplayErrorContext(&e).to_string(),
                status,
            })
        }
    }
}

/// A presigned GET URL for `object`, valid for [`PRESIGN_VALIDITY`].
pub async fn presign(s3: &aws_sdk_s3::Client, object: &ObjectRef) -> Result<String, ObjectError> {
    let other = |message: String| ObjectError::Other {
        object: object.to_string(),
        message,
        status: None,
    };
    let cfg = PresigningConfig::expires_in(PRESIGN_VALIDITY)
        .map_err(|e| other(format!("presigning: {e}")))?;
    let req = s3
        .get_object()
        .bucket(&object.bucket)
        .key(&object.key)
        .presigned(cfg)
        .await
        .map_err(|e| {
            other(format!(
                "presigning: {}",
                aws_sdk_s3::error::DisplayErrorContext(e)
            ))
        })?;
    Ok(req.uri().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sample_body() {
        let o = parse(br#"{"bucketName":"in","keyName":"videos/a b.mp4"}"#).unwrap();
        assert_eq!(o, vec![ObjectRef::new("in", "videos/a b.mp4")]);
    }

    #[test]
    fn s3_event_every_record_url_decoded_and_deduplicated() {
        let body = br#"{"Records":[
            {"eventName":"ObjectCreated:Put","s3":{"bucket":{"name":"in"},"object":{"key":"my+clip%281%29.mp4","size":1}}},
            {"s3":{"bucket":{"name":"in"},"object":{"key":"%C3%A9t%C3%A9.mkv"}}},
            {"s3":{"bucket":{"name":"in"},"object":{"key":"my+clip%281%29.mp4"}}}]}"#;
        let o = parse(body).unwrap();
        assert_eq!(o.len(), 2);
        assert_eq!(o[0].key, "my clip(1).mp4");
        assert_eq!(o[1].key, "été.mkv");
        assert_eq!(o[0].sequencer, None);
        let with_seq = br#"{"Records":[{"s3":{"bucket":{"name":"in"},"object":{"key":"a","sequencer":"0055AED6DCD90281E5"}}}]}"#;
        assert_eq!(
            parse(with_seq).unwrap()[0].sequencer.as_deref(),
            Some("0055AED6DCD90281E5")
        );
        assert_eq!(
            parse(br#"{"Service":"Amazon S3","Event":"s3:TestEvent","Bucket":"in"}"#),
            Err(BodyError::TestEvent)
        );
    }

    #[test]
    fn only_object_created_records_are_objects() {
        let removed = br#"{"Records":[{"eventName":"ObjectRemoved:Delete","s3":{"bucket":{"name":"in"},"object":{"key":"a.mp4"}}}]}"#;
        assert_eq!(
            parse(removed),
            Err(BodyError::NotObjectCreated("ObjectRemoved:Delete".into()))
        );
        let mixed = br#"{"Records":[
            {"eventName":"ObjectRemoved:Delete","s3":{"bucket":{"name":"in"},"object":{"key":"a.mp4"}}},
            {"eventName":"ObjectCreated:CompleteMultipartUpload","s3":{"bucket":{"name":"in"},"object":{"key":"b.mp4"}}}]}"#;
        assert_eq!(parse(mixed).unwrap(), vec![ObjectRef::new("in", "b.mp4")]);
    }

    #[test]
    fn bad_bodies() {
        assert!(matches!(parse(b"{not json"), Err(BodyError::Malformed(_))));
        assert!(
            matches!(parse(br#"{"bucketName":"b"}"#), Err(BodyError::Invalid(m)) if m.contains("keyName"))
        );
        assert!(
            matches!(parse(br#"{"keyName":"k"}"#), Err(BodyError::Invalid(m)) if m.contains("bucketName"))
        );
        assert!(matches!(
            parse(br#"{"Records":[]}"#),
            Err(BodyError::Invalid(_))
        ));
        assert!(matches!(
            parse(br#"{"bucketName":7,"keyName":"k"}"#),
            Err(BodyError::Invalid(_))
        ));
        assert!(matches!(
            parse(br#"{"Records":[{"s3":{"bucket":{"name":"b"},"object":{"key":"%zz"}}}]}"#),
            Err(BodyError::Invalid(_))
        ));
    }
}
