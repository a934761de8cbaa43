//! S3 event notifications to SQS: `PutBucketNotificationConfiguration` /
//! `GetBucketNotificationConfiguration` with queue configurations (event-name patterns, prefix
//! and suffix filters), the `s3:TestEvent` sent to each queue when a configuration is stored,
//! and `ObjectCreated:*` events in the shape S3 sends (event version 2.1):
//! <https://docs.aws.amazon.com/AmazonS3/latest/userguide/notification-content-structure.html>.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use http::{HeaderValue, Request, Response, StatusCode};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use s3s::service::S3Service;
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::s3::{xml_error, xml_escape};
use super::state::Shared;
use super::{EmulatorCredentials, RespBody, Router, full, read_body_limited, request_id};
use crate::sigv4::{self, RequestParts, UriEncoding};
use crate::xml::parse_xml;

/// Event names S3 accepts in a notification configuration
/// (<https://docs.aws.amazon.com/AmazonS3/latest/userguide/notification-how-to-event-types-and-destinations.html>).
const EVENT_NAMES: &[&str] = &[
    "s3:IntelligentTiering",
    "s3:LifecycleExpiration:*",
    "s3:LifecycleExpiration:Delete",
    "s3:LifecycleExpiration:DeleteMarkerCreated",
    "s3:LifecycleTransition",
    "s3:ObjectAcl:Put",
    "s3:ObjectAnnotation:*",
    "s3:ObjectAnnotation:Delete",
    "s3:ObjectAnnotation:Put",
    "s3:ObjectCreated:*",
    "s3:ObjectCreated:CompleteMultipartUpload",
    "s3:ObjectCreated:Copy",
    "s3:ObjectCreated:Post",
    "s3:ObjectCreated:Put",
    "s3:ObjectRemoved:*",
    "s3:ObjectRemoved:Delete",
    "s3:ObjectRemoved:DeleteMarkerCreated",
    "s3:ObjectRestore:*",
    "s3:ObjectRestore:Completed",
    "s3:ObjectRestore:Delete",
    "s3:ObjectRestore:Post",
    "s3:ObjectRetention:Put",
    "s3:ObjectTagging:*",
    "s3:ObjectTagging:Delete",
    "s3:ObjectTagging:Put",
    "s3:ReducedRedundancyLostObject",
    "s3:Replication:*",
    "s3:Replication:OperationFailedReplication",
    "s3:Replication:OperationMissedThreshold",
    "s3:Replication:OperationNotTracked",
    "s3:Replication:OperationReplicatedAfterThreshold",
];

/// One `QueueConfiguration`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct QueueConfig {
    pub(crate) id: String,
    pub(crate) queue_arn: String,
    pub(crate) events: Vec<String>,
    pub(crate) prefix: Option<String>,
    pub(crate) suffix: Option<String>,
}

/// A bucket's notification configuration (only queue destinations exist here).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct BucketNotification {
    pub(crate) queues: Vec<QueueConfig>,
}

// ---------------------------------------------------------------------------------------------
// Configuration documents

/// Parses a `NotificationConfiguration` document. Topic and Lambda destinations cannot be
/// delivered by this emulator and are refused (as S3 refuses destinations it cannot validate).
pub(crate) fn parse_configuration(xml: &str) -> Result<BucketNotification, (&'static str, String)> {
    let malformed = |m: String| ("MalformedXML", m);
    let root = parse_xml(xml)
        .map_err(|e| malformed(format!("The XML you provided was not well-formed: {e}")))?;
    if root.name != "NotificationConfiguration" {
        return Err(malformed(format!(
            "expected <NotificationConfiguration>, found <{}>",
            root.name
        )));
    }
    let mut out = BucketNotification::default();
    for c in &root.children {
        match c.name.as_str() {
            "QueueConfiguration" => {}
            "TopicConfiguration" | "CloudFunctionConfiguration" | "LambdaFunctionConfiguration" => {
                return Err((
                    "InvalidArgument",
                    format!(
                        "Unable to validate the following destination configurations: {} destinations are not served by this emulator",
                        c.name
                    ),
                ));
            }
            "EventBridgeConfiguration" => continue,
            other => return Err(malformed(format!("unexpected element <{other}>"))),
        }
        let queue_arn = c
            .first("Queue")
            .map(|q| q.text.trim().to_owned())
            .ok_or_else(|| malformed("QueueConfiguration without <Queue>".into()))?;
        let events: Vec<String> = c.all("Event").map(|e| e.text.trim().to_owned()).collect();
        if events.is_empty() {
            return Err(malformed("QueueConfiguration without <Event>".into()));
        }
        for e in &events {
            if !EVENT_NAMES.contains(&e.as_str()) {
                return Err((
                    "InvalidArgument",
                    format!("The event is not supported for notifications: {e}"),
                ));
            }
        }
        let (mut prefix, mut suffix) = (None, None);
        if let Some(key) = c.first("Filter").and_then(|f| f.first("S3Key")) {
            for rule in key.all("FilterRule") {
                let name = rule
                    .first("Name")
                    .map(|n| n.text.trim().to_ascii_lowercase());
                let value = rule
                    .first("Value")
                    .map(|v| v.text.clone())
                    .unwrap_or_default();
                let slot = match name.as_deref() {
                    Some("prefix") => &mut prefix,
                    Some("suffix") => &mut suffix,
                    _ => {
                        return Err((
                            "InvalidArgument",
                            "filter rule name must be either prefix or suffix".into(),
                        ));
                    }
                };
                if slot.is_some() {
                    return Err((
                        "InvalidArgument",
                        "Cannot specify more than one prefix (or suffix) rule in a filter.".into(),
                    ));
                }
                *slot = Some(value);
            }
        }
        let id = c
            .first("Id")
            .map(|i| i.text.trim().to_owned())
            .filter(|i| !i.is_empty())
            .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
        out.queues.push(QueueConfig {
            id,
            queue_arn,
            events,
            prefix,
            suffix,
        });
    }
    check_overlap(&out)?;
    Ok(out)
}

fn event_types_overlap(a: &[String], b: &[String]) -> bool {
    let covers = |x: &str, y: &str| x == y || x.strip_suffix('*').is_some_and(|p| y.starts_with(p));
    a.iter()
        .any(|x| b.iter().any(|y| covers(x, y) || covers(y, x)))
}

/// S3 refuses two configurations that could both match one event: "Configurations overlap.
/// Configurations on the same bucket cannot share a common event type."
fn check_overlap(n: &BucketNotification) -> Result<(), (&'static str, String)> {
    let pre = |a: &Option<String>, b: &Option<String>| {
        let (a, b) = (a.as_deref().unwrap_or(""), b.as_deref().unwrap_or(""));
        a.starts_with(b) || b.starts_with(a)
    };
    let suf = |a: &Option<String>, b: &Option<String>| {
        let (a, b) = (a.as_deref().unwrap_or(""), b.as_deref().unwrap_or(""));
        a.ends_with(b) || b.ends_with(a)
    };
    for (i, a) in n.queues.iter().enumerate() {
        for b in &n.queues[i + 1..] {
            if event_types_overlap(&a.events, &b.events)
                && pre(&a.prefix, &b.prefix)
                && suf(&a.suffix, &b.suffix)
            {
                return Err((
                    "InvalidArgument",
                    "Configurations overlap. Configurations on the same bucket cannot share a common event type.".into(),
                ));
            }
        }
    }
    Ok(())
}

fn render_configuration(n: &BucketNotification) -> String {
    let mut x = String::from(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<NotificationConfiguration xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\">",
    );
    for q in &n.queues {
        x.push_str("<QueueConfiguration>");
        x.push_str(&format!("<Id>{}</Id>", xml_escape(&q.id)));
        x.push_str(&format!("<Queue>{}</Queue>", xml_escape(&q.queue_arn)));
        for e in &q.events {
            x.push_str(&format!("<Event>{}</Event>", xml_escape(e)));
        }
        if q.prefix.is_some() || q.suffix.is_some() {
            x.push_str("<Filter><S3Key>");
            for (name, v) in [("Prefix", &q.prefix), ("Suffix", &q.suffix)] {
                if let Some(v) = v {
                    x.push_str(&format!(
                        "<FilterRule><Name>{name}</Name><Value>{}</Value></FilterRule>",
                        xml_escape(v)
                    ));
                }
            }
            x.push_str("</S3Key></Filter>");
        }
        x.push_str("</QueueConfiguration>");
    }
    x.push_str("</NotificationConfiguration>");
    x
}

// ---------------------------------------------------------------------------------------------
// Events

/// An object key as S3 writes it into event notifications: form-URL-encoded (space as `+`,
/// everything but `A-Za-z0-9 - _ . *` and `/` as `%XX` of its UTF-8 bytes).
pub fn encode_event_key(key: &str) -> String {
    let mut out = String::with_capacity(key.len());
    for b in key.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'*' | b'/' => {
                out.push(b as char)
            }
            b' ' => out.push('+'),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

fn iso_ms(ms: u64) -> String {
    let t = time::OffsetDateTime::from_unix_timestamp((ms / 1000) as i64)
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second(),
        ms % 1000
    )
}

fn matches(c: &QueueConfig, event_name: &str, key: &str) -> bool {
    let full = format!("s3:{event_name}");
    let event_ok = c
        .events
        .iter()
        .any(|e| *e == full || e.strip_suffix('*').is_some_and(|p| full.starts_with(p)));
    event_ok
        && c.prefix.as_deref().is_none_or(|p| key.starts_with(p))
        && c.suffix.as_deref().is_none_or(|s| key.ends_with(s))
}

static SEQUENCER: AtomicU64 = AtomicU64::new(0);

/// What an object-created event says about the object and the request.
pub(crate) struct Created<'a> {
    pub(crate) bucket: &'a str,
    pub(crate) key: &'a str,
    /// e.g. `ObjectCreated:Put`.
    pub(crate) event_name: &'a str,
    pub(crate) size: u64,
    pub(crate) etag: &'a str,
    pub(crate) principal: &'a str,
    pub(crate) source_ip: &'a str,
}

/// Sends the event to every queue configured for it. A queue that no longer exists is logged
/// and skipped (S3 likewise drops what it cannot deliver).
pub(crate) fn fire(shared: &Shared, ev: &Created<'_>) {
    let configs: Vec<QueueConfig> = shared
        .sqs
        .notifications
        .lock()
        .expect("notifications lock")
        .get(ev.bucket)
        .map(|n| n.queues.clone())
        .unwrap_or_default();
    let now = shared.now_ms();
    for c in configs.iter().filter(|c| matches(c, ev.event_name, ev.key)) {
        let seq = SEQUENCER.fetch_add(1, Ordering::Relaxed);
        let record = json!({
            "eventVersion": "2.1",
            "eventSource": "aws:s3",
            "awsRegion": shared.cfg.region,
            "eventTime": iso_ms(now),
            "eventName": ev.event_name,
            "userIdentity": { "principalId": format!("AWS:{}", ev.principal) },
            "requestParameters": { "sourceIPAddress": ev.source_ip },
            "responseElements": {
                "x-amz-request-id": request_id().replace('-', "")[..16].to_uppercase(),
                "x-amz-id-2": request_id(),
            },
            "s3": {
                "s3SchemaVersion": "1.0",
                "configurationId": c.id,
                "bucket": {
                    "name": ev.bucket,
                    "ownerIdentity": { "principalId": "A3EMULATOROWNER" },
                    "arn": format!("arn:aws:s3:::{}", ev.bucket),
                },
                "object": {
                    "key": encode_event_key(ev.key),
                    "size": ev.size,
                    "eTag": ev.etag,
                    "sequencer": format!("{:012X}{:06X}", now, seq & 0xFF_FFFF),
                },
            },
        });
        let body = json!({ "Records": [record] }).to_string();
        let queue = c.queue_arn.rsplit(':').next().unwrap_or("");
        match shared.sqs_send_internal(queue, body) {
            Ok(id) => {
                tracing::debug!(bucket = ev.bucket, key = ev.key, queue, message_id = %id, "S3 event sent")
            }
            Err(e) => {
                tracing::warn!(bucket = ev.bucket, key = ev.key, queue, error = %e.message, "S3 event not delivered")
            }
        }
    }
}

/// Whether a request is `PUT`/`GET /bucket?notification`.
pub(crate) fn is_configuration_request(req: &Request<Incoming>) -> bool {
    let path = req.uri().path().trim_matches('/');
    !path.is_empty()
        && !path.contains('/')
        && req
            .uri()
            .query()
            .unwrap_or("")
            .split('&')
            .any(|p| p == "notification" || p == "notification=")
}

/// What a request that may create an object is; `None` when it creates none.
pub(crate) fn created_kind(
    method: &http::Method,
    uri: &http::Uri,
    headers: &http::HeaderMap,
) -> Option<(String, String, &'static str)> {
    let path = uri.path().trim_start_matches('/');
    let (bucket, key) = path.split_once('/')?;
    if key.is_empty() {
        return None;
    }
    let q: Vec<(String, String)> =
        url::form_urlencoded::parse(uri.query().unwrap_or("").as_bytes())
            .into_owned()
            .collect();
    let has = |k: &str| q.iter().any(|(n, _)| n == k);
    let kind = match *method {
        http::Method::PUT if has("partNumber") || has("uploadId") => return None,
        http::Method::PUT
            if has("tagging") || has("acl") || has("retention") || has("legal-hold") =>
        {
            return None;
        }
        http::Method::PUT if headers.contains_key("x-amz-copy-source") => "ObjectCreated:Copy",
        http::Method::PUT => "ObjectCreated:Put",
        http::Method::POST if has("uploadId") => "ObjectCreated:CompleteMultipartUpload",
        _ => return None,
    };
    let dec = |s: &str| {
        percent_encoding::percent_decode_str(s)
            .decode_utf8_lossy()
            .into_owned()
    };
    Some((dec(bucket), dec(key), kind))
}

/// Reads the new object's size and ETag through the same S3 implementation (a signed HEAD as
/// `akid`), then fires the event.
pub(crate) async fn object_created(
    shared: &Shared,
    s3: &S3Service,
    akid: &str,
    bucket: &str,
    key: &str,
    event_name: &str,
    source_ip: &str,
) {
    let has_config = shared
        .sqs
        .notifications
        .lock()
        .expect("notifications lock")
        .get(bucket)
        .is_some_and(|n| !n.queues.is_empty());
    if !has_config {
        return;
    }
    let Some(resp) = head_as(shared, s3, akid, bucket, key).await else {
        return;
    };
    if !resp.status().is_success() {
        tracing::warn!(bucket, key, status = %resp.status(), "cannot read the new object for its event");
        return;
    }
    let h = resp.headers();
    let size = h
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let etag = h
        .get(http::header::ETAG)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .trim_matches('"')
        .to_owned();
    fire(
        shared,
        &Created {
            bucket,
            key,
            event_name,
            size,
            etag: &etag,
            principal: akid,
            source_ip,
        },
    );
}

fn emulator_addr(shared: &Shared) -> Option<SocketAddr> {
    shared.url.strip_prefix("http://")?.parse().ok()
}

fn xml_ok(body: String) -> Response<RespBody> {
    let mut resp = Response::new(full(body));
    resp.headers_mut()
        .insert("content-type", HeaderValue::from_static("application/xml"));
    if let Ok(v) = HeaderValue::from_str(&request_id()) {
        resp.headers_mut().insert("x-amz-request-id", v);
    }
    resp
}

/// `PUT` / `GET /bucket?notification`, authenticated with SigV4 like every S3 request.
pub(crate) async fn handle_configuration(
    router: &Router,
    req: Request<Incoming>,
) -> Response<RespBody> {
    let shared = &router.shared;
    let (parts, body) = req.into_parts();
    let body = match read_body_limited(&parts.headers, body, 1 << 20, shared.cfg.idle_timeout).await
    {
        Ok(b) => b,
        Err(e) => return xml_error(e.status, "InvalidRequest", &e.message),
    };
    let headers = super::header_pairs(&parts.headers);
    let actual = sigv4::sha256_hex(&body);
    let hashes: Vec<&str> = match sigv4::header(&headers, "x-amz-content-sha256") {
        Some(sigv4::UNSIGNED_PAYLOAD) => vec![sigv4::UNSIGNED_PAYLOAD],
        Some(d) if d != actual => {
            return xml_error(
                400,
                "XAmzContentSHA256Mismatch",
                "The provided 'x-amz-content-sha256' header does not match what was computed.",
            );
        }
        _ => vec![actual.as_str()],
    };
    let rp = RequestParts {
        method: parts.method.as_str(),
        path: parts.uri.path(),
        query: parts.uri.query().unwrap_or(""),
        headers: &headers,
        uri_encoding: UriEncoding::AsSent,
    };
    let principal = match shared.authenticate(&rp, "s3", &hashes) {
        Ok(p) => p,
        Err(e) if e.status == 401 => return xml_error(400, "ExpiredToken", &e.message),
        Err(e) if e.error_type == "UnrecognizedClientException" => {
            return xml_error(403, "InvalidAccessKeyId", &e.message);
        }
        Err(e) => return xml_error(403, "SignatureDoesNotMatch", &e.message),
    };
    let bucket = percent_encoding::percent_decode_str(parts.uri.path().trim_matches('/'))
        .decode_utf8_lossy()
        .into_owned();
    if !bucket_exists(router, &principal.access_key_id, &bucket).await {
        return xml_error(404, "NoSuchBucket", "The specified bucket does not exist");
    }
    match parts.method {
        http::Method::GET => {
            let n = shared
                .sqs
                .notifications
                .lock()
                .expect("notifications lock")
                .get(&bucket)
                .cloned()
                .unwrap_or_default();
            xml_ok(render_configuration(&n))
        }
        http::Method::PUT => {
            let text = String::from_utf8_lossy(&body);
            let config = match parse_configuration(&text) {
                Ok(c) => c,
                Err((code, msg)) => return xml_error(400, code, &msg),
            };
            let prefix = format!(
                "arn:aws:sqs:{}:{}:",
                shared.cfg.region,
                super::state::ACCOUNT_ID
            );
            for q in &config.queues {
                let name = q.queue_arn.strip_prefix(&prefix);
                let ok = name.is_some_and(|n| shared.sqs.exists(n) && !n.ends_with(".fifo"));
                if !ok {
                    return xml_error(
                        400,
                        "InvalidArgument",
                        &format!(
                            "Unable to validate the following destination configurations: {} (the queue must be an existing standard queue of this emulator)",
                            q.queue_arn
                        ),
                    );
                }
            }
            // S3 sends a test event to each destination when a configuration is stored.
            let mut sent = std::collections::BTreeSet::new();
            for q in &config.queues {
                if sent.insert(q.queue_arn.clone()) {
                    let body = json!({
                        "Service": "Amazon S3",
                        "Event": "s3:TestEvent",
                        "Time": iso_ms(shared.now_ms()),
                        "Bucket": bucket,
                        "RequestId": request_id().replace('-', "")[..16].to_uppercase(),
                        "HostId": request_id(),
                    })
                    .to_string();
                    let name = q.queue_arn.rsplit(':').next().unwrap_or("");
                    if let Err(e) = shared.sqs_send_internal(name, body) {
                        return xml_error(
                            400,
                            "InvalidArgument",
                            &format!(
                                "Unable to validate the following destination configurations: {}",
                                e.message
                            ),
                        );
                    }
                }
            }
            {
                let mut all = shared.sqs.notifications.lock().expect("notifications lock");
                if config.queues.is_empty() {
                    all.remove(&bucket);
                } else {
                    all.insert(bucket.clone(), config);
                }
            }
            shared.sqs.persist_notifications();
            let mut resp = xml_ok(String::new());
            *resp.status_mut() = StatusCode::OK;
            resp
        }
        _ => xml_error(
            405,
            "MethodNotAllowed",
            "The specified method is not allowed against this resource.",
        ),
    }
}

/// A HEAD of `bucket`/`key` (the bucket itself when `key` is empty) through the emulator's own
/// S3, signed as the caller `akid`, so S3 answers with that caller's view. `None` when the
/// caller's key is unknown or the emulator has no address yet.
async fn head_as(
    shared: &Shared,
    s3: &S3Service,
    akid: &str,
    bucket: &str,
    key: &str,
) -> Option<Response<RespBody>> {
    let secret = shared
        .creds
        .lock()
        .expect("creds lock")
        .get(akid)
        .map(|c| c.secret.clone())?;
    let addr = emulator_addr(shared)?;
    let creds = EmulatorCredentials {
        access_key_id: akid.to_owned(),
        secret_access_key: secret,
    };
    let req = super::s3::signed_request(
        &addr,
        &shared.cfg.region,
        &creds,
        http::Method::HEAD,
        bucket,
        key,
        Bytes::new(),
        (shared.now_ms() / 1000) as i64,
    );
    Some(super::s3::call(s3, req).await)
}

async fn bucket_exists(router: &Router, akid: &str, bucket: &str) -> bool {
    let Some(resp) = head_as(&router.shared, &router.s3, akid, bucket, "").await else {
        return false;
    };
    let ok = resp.status().is_success();
    let _ = resp.into_body().collect().await;
    ok
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn keys_are_encoded_as_s3_encodes_them() {
        assert_eq!(encode_event_key("my test.mp4"), "my+test.mp4");
        assert_eq!(encode_event_key("cam-1/a b+c.mkv"), "cam-1/a+b%2Bc.mkv");
        assert_eq!(encode_event_key("é=(1)"), "%C3%A9%3D%281%29");
    }

    #[test]
    fn configuration_parses_filters_and_refuses_overlap() {
        let xml = r#"<?xml version="1.0" encoding="UTF-8"?>
<NotificationConfiguration xmlns="http://s3.amazonaws.com/doc/2006-03-01/">
  <QueueConfiguration><Id>a</Id><Queue>arn:aws:sqs:us-east-1:123456789012:q</Queue>
    <Event>s3:ObjectCreated:*</Event>
    <Filter><S3Key><FilterRule><Name>prefix</Name><Value>cam&amp;1/</Value></FilterRule>
      <FilterRule><Name>Suffix</Name><Value>.mkv</Value></FilterRule></S3Key></Filter>
  </QueueConfiguration>
</NotificationConfiguration>"#;
        let n = parse_configuration(xml).unwrap();
        assert_eq!(n.queues[0].prefix.as_deref(), Some("cam&1/"));
        assert_eq!(n.queues[0].suffix.as_deref(), Some(".mkv"));
        assert!(matches(&n.queues[0], "ObjectCreated:Put", "cam&1/x.mkv"));
        assert!(!matches(&n.queues[0], "ObjectCreated:Put", "cam&1/x.mp4"));
        assert!(!matches(
            &n.queues[0],
            "ObjectRemoved:Delete",
            "cam&1/x.mkv"
        ));
        let twice = xml.replace(
            "</NotificationConfiguration>",
            "<QueueConfiguration><Queue>arn:aws:sqs:us-east-1:123456789012:r</Queue><Event>s3:ObjectCreated:Put</Event></QueueConfiguration></NotificationConfiguration>",
        );
        assert_eq!(
            parse_configuration(&twice).unwrap_err().0,
            "InvalidArgument"
        );
        assert_eq!(
            parse_configuration("<NotificationConfiguration>")
                .unwrap_err()
                .0,
            "MalformedXML"
        );
    }

    fn arb_text() -> impl Strategy<Value = String> {
        "[a-zA-Z0-9 &<>\"'/._*-]{0,12}"
    }

    proptest! {
        /// Whatever a configuration holds, rendering and parsing it gives it back.
        #[test]
        fn configuration_round_trips(
            entries in proptest::collection::vec(
                (arb_text(), "[a-z]{1,8}", proptest::sample::subsequence(EVENT_NAMES.to_vec(), 1..3),
                 proptest::option::of(arb_text()), proptest::option::of(arb_text())),
                0..4),
        ) {
            let n = BucketNotification {
                queues: entries.into_iter().map(|(id, q, events, prefix, suffix)| QueueConfig {
                    id: if id.trim().is_empty() || id.trim() != id { format!("id{q}") } else { id },
                    queue_arn: format!("arn:aws:sqs:us-east-1:123456789012:{q}"),
                    events: events.into_iter().map(str::to_owned).collect(),
                    prefix,
                    suffix,
                }).collect(),
            };
            match parse_configuration(&render_configuration(&n)) {
                Ok(back) => prop_assert_eq!(back, n),
                // Generated entries may overlap; the check then refuses them.
                Err((code, _)) => {
                    prop_assert_eq!(code, "InvalidArgument");
                    prop_assert!(check_overlap(&n).is_err());
                }
            }
        }

    }
}
