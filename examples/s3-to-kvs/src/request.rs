//! The `POST /processObject` body: the Node sample's `{"bucketName", "keyName"}`, or an S3 event
//! notification forwarded unchanged by the Lambda in front of the service.

use serde::Deserialize;

use crate::jobs::ObjectRef;

/// Why a body was refused; each maps to a `400`.
#[derive(Debug, PartialEq, Eq)]
pub enum BodyError {
    /// Not JSON at all.
    Malformed(String),
    /// JSON, but neither form, or a field is empty.
    Invalid(String),
}

impl std::fmt::Display for BodyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BodyError::Malformed(e) => write!(f, "request body is not valid JSON: {e}"),
            BodyError::Invalid(e) => write!(f, "{e}"),
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
}

/// Parses either body form into the objects to stream, in order, without duplicates.
pub fn parse(body: &[u8]) -> Result<Vec<ObjectRef>, BodyError> {
    let value: serde_json::Value =
        serde_json::from_slice(body).map_err(|e| BodyError::Malformed(e.to_string()))?;
    let mut objects = Vec::new();
    if value.get("Records").is_some() {
        let event: S3Event = serde_json::from_value(value)
            .map_err(|e| BodyError::Invalid(format!("S3 event notification: {e}")))?;
        for r in event.records {
            // S3 event keys are form-encoded: '+' is a space, the rest percent-encoded.
            let key = decode_event_key(&r.s3.object.key)?;
            objects.push(ObjectRef {
                bucket: r.s3.bucket.name,
                key,
            });
        }
    } else {
        let b: SampleBody = serde_json::from_value(value).map_err(|e| {
            BodyError::Invalid(format!("expected {{\"bucketName\", \"keyName\"}}: {e}"))
        })?;
        objects.push(ObjectRef {
            bucket: b.bucket_name.unwrap_or_default(),
            key: b.key_name.unwrap_or_default(),
        });
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
    objects.retain(|o| seen.insert(o.clone()));
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sample_body() {
        let o = parse(br#"{"bucketName":"in","keyName":"videos/a b.mp4"}"#).unwrap();
        assert_eq!(
            o,
            vec![ObjectRef {
                bucket: "in".into(),
                key: "videos/a b.mp4".into()
            }]
        );
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
