//! Amazon SQS: standard and FIFO queues over the AWS JSON 1.0 protocol (what the Rust SDK and
//! current boto3 send: `X-Amz-Target: AmazonSQS.<Action>`) and the older query protocol (form
//! body with `Action=`, XML out).
//!
//! Semantics follow the SQS developer guide
//! (<https://docs.aws.amazon.com/AWSSimpleQueueService/latest/SQSDeveloperGuide/>): visibility
//! timeouts, long polling that answers as soon as a message arrives, receipt handles that change
//! on every receive (a stale one deletes nothing but still succeeds), redrive to a dead-letter
//! queue after `maxReceiveCount` receives, FIFO message groups (a group with a message in flight
//! delivers nothing more) and five-minute deduplication. Errors carry both the JSON `__type` and
//! the `x-amzn-query-error` header, from which the SDKs take the error code
//! (e.g. `AWS.SimpleQueueService.NonExistentQueue`).

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine as _;
use http::{HeaderValue, Request, Response, StatusCode};
use hyper::body::Incoming;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tokio::sync::Notify;

use super::s3::xml_escape;
use super::state::{ACCOUNT_ID, Shared};
use super::{RespBody, Router, full, read_body_limited, request_id};
use crate::api::ApiError;
use crate::sigv4::{self, RequestParts, UriEncoding};

/// Largest request body read (ten 1 MiB messages plus JSON overhead).
const MAX_REQUEST: usize = 12 << 20;
/// Deduplication window of FIFO queues (SQS developer guide: "5-minute deduplication interval").
const DEDUP_WINDOW_MS: u64 = 5 * 60 * 1000;
/// Longest `WaitTimeSeconds`.
const MAX_WAIT_SECONDS: u64 = 20;
/// Longest visibility timeout (12 hours).
const MAX_VISIBILITY: u64 = 43_200;

// ---------------------------------------------------------------------------------------------
// Errors

/// An SQS error: the query-protocol code (also sent in `x-amzn-query-error`, where the SDKs read
/// it), the JSON `__type` shape name, and a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SqsError {
    pub(crate) status: u16,
    pub(crate) code: &'static str,
    pub(crate) shape: &'static str,
    pub(crate) message: String,
    pub(crate) sender_fault: bool,
}

impl SqsError {
    fn new(code: &'static str, shape: &'static str, message: impl Into<String>) -> Self {
        Self {
            status: 400,
            code,
            shape,
            message: message.into(),
            sender_fault: true,
        }
    }
    pub(crate) fn no_queue() -> Self {
        Self::new(
            "AWS.SimpleQueueService.NonExistentQueue",
            "QueueDoesNotExist",
            "The specified queue does not exist.",
        )
    }
    pub(crate) fn invalid(message: impl Into<String>) -> Self {
        Self::new(
            "InvalidParameterValue",
            "InvalidParameterValueException",
            message,
        )
    }
    fn missing(name: &str) -> Self {
        Self::new(
            "MissingParameter",
            "MissingParameterException",
            format!("The request must contain the parameter {name}."),
        )
    }
    fn bad_handle(handle: &str) -> Self {
        Self::new(
            "ReceiptHandleIsInvalid",
            "ReceiptHandleIsInvalid",
            format!(
                "The input receipt handle \"{}\" is not a valid receipt handle.",
                handle.chars().take(128).collect::<String>()
            ),
        )
    }
    fn attr_name(name: &str) -> Self {
        Self::new(
            "InvalidAttributeName",
            "InvalidAttributeName",
            format!(
                "Unknown Attribute {}.",
                name.chars().take(64).collect::<String>()
            ),
        )
    }
    fn attr_value(name: &str, why: &str) -> Self {
        Self::new(
            "InvalidAttributeValue",
            "InvalidAttributeValue",
            format!("Invalid value for the parameter {name}. Reason: {why}"),
        )
    }
    fn from_auth(e: &ApiError) -> Self {
        let (status, code) = match e.error_type {
            "UnrecognizedClientException" => (403, "InvalidClientTokenId"),
            "NotAuthorizedException" => (403, "ExpiredToken"),
            "IncompleteSignatureException" => (403, "IncompleteSignature"),
            "MissingAuthenticationTokenException" => (403, "MissingAuthenticationToken"),
            "RequestEntityTooLargeException" => (413, "RequestEntityTooLarge"),
            "RequestTimeoutException" => (408, "RequestTimeout"),
            "SerializationException" => (400, "MalformedInput"),
            _ if e.status == 403 => (403, "SignatureDoesNotMatch"),
            _ => (e.status, "InvalidRequest"),
        };
        Self {
            status,
            code,
            shape: code,
            message: e.message.clone(),
            sender_fault: true,
        }
    }
}

// ---------------------------------------------------------------------------------------------
// State

/// One message attribute (`DataType` String, Number or Binary, with an optional `.label`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct MsgAttr {
    data_type: String,
    string_value: Option<String>,
    binary_value: Option<Vec<u8>>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Message {
    id: String,
    body: String,
    attrs: BTreeMap<String, MsgAttr>,
    trace_header: Option<String>,
    sent_ms: u64,
    /// Not delivered before this (delay, or the visibility timeout of the last receive).
    visible_at_ms: u64,
    receive_count: u32,
    first_receive_ms: Option<u64>,
    group_id: Option<String>,
    dedup_id: Option<String>,
    sequence_number: Option<String>,
    sender_id: String,
    dlq_source_arn: Option<String>,
    /// A fresh value on each receive: receipt handles carry it, so an older handle is stale.
    receipt_nonce: u64,
}

impl Message {
    fn in_flight(&self, now: u64) -> bool {
        self.receive_count > 0 && self.visible_at_ms > now
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct DedupEntry {
    expires_ms: u64,
    message_id: String,
    sequence_number: Option<String>,
}

/// What is persisted of a queue.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct QueueData {
    name: String,
    fifo: bool,
    created_s: u64,
    modified_s: u64,
    /// Settable attributes, defaults filled in, as SQS shows them.
    attrs: BTreeMap<String, String>,
    tags: BTreeMap<String, String>,
    messages: VecDeque<Message>,
    dedup: HashMap<String, DedupEntry>,
}

struct Queue {
    data: QueueData,
    /// Woken when a message may have become available (send, visibility change).
    notify: Arc<Notify>,
}

impl Queue {
    fn num(&self, attr: &str) -> u64 {
        self.data
            .attrs
            .get(attr)
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    }
    fn redrive(&self) -> Option<(String, u32)> {
        let v: Value = serde_json::from_str(self.data.attrs.get("RedrivePolicy")?).ok()?;
        let arn = v.get("deadLetterTargetArn")?.as_str()?.to_owned();
        let max = json_u64(v.get("maxReceiveCount")?)?;
        Some((arn, max as u32))
    }
}

/// SQS queues and S3 bucket notification configurations (the `notify` module fires them).
pub(crate) struct Sqs {
    queues: Mutex<BTreeMap<String, Queue>>,
    pub(crate) notifications: Mutex<BTreeMap<String, super::notify::BucketNotification>>,
    dir: Option<PathBuf>,
    counter: AtomicU64,
}

fn json_u64(v: &Value) -> Option<u64> {
    match v {
        Value::Number(n) => n.as_u64(),
        Value::String(s) => s.parse().ok(),
        _ => None,
    }
}

pub(crate) fn queue_arn(region: &str, name: &str) -> String {
    format!("arn:aws:sqs:{region}:{ACCOUNT_ID}:{name}")
}

pub(crate) fn queue_url(base: &str, name: &str) -> String {
    format!("{base}/{ACCOUNT_ID}/{name}")
}

/// The queue name in a queue URL (`http(s)://host/ACCOUNT/NAME`) or a bare name.
fn name_from_url(url: &str) -> Result<String, SqsError> {
    let path = match url.find("://") {
        Some(i) => {
            let rest = &url[i + 3..];
            rest.find('/').map(|j| &rest[j..]).unwrap_or("")
        }
        None => url,
    };
    let name = path.trim_end_matches('/').rsplit('/').next().unwrap_or("");
    if name.is_empty() {
        return Err(SqsError::invalid(format!(
            "Value {} for parameter QueueUrl is invalid. Reason: it names no queue.",
            url.chars().take(256).collect::<String>()
        )));
    }
    Ok(name.to_owned())
}

pub(crate) fn md5_hex(data: &[u8]) -> String {
    use md5::Digest as _;
    hex::encode(md5::Md5::digest(data))
}

/// MD5 of message attributes as SQS computes it (sorted by name; each of name, type and value
/// length-prefixed big-endian u32; a transport byte 1 for strings, 2 for binary):
/// <https://docs.aws.amazon.com/AWSSimpleQueueService/latest/SQSDeveloperGuide/sqs-message-metadata.html#sqs-attributes-md5-message-digest-calculation>.
pub(crate) fn md5_of_attributes<'a>(
    attrs: impl IntoIterator<Item = (&'a String, &'a MsgAttr)>,
) -> String {
    let mut sorted: Vec<_> = attrs.into_iter().collect();
    sorted.sort_by(|a, b| a.0.cmp(b.0));
    let mut buf = Vec::new();
    let put = |buf: &mut Vec<u8>, b: &[u8]| {
        buf.extend_from_slice(&(b.len() as u32).to_be_bytes());
        buf.extend_from_slice(b);
    };
    for (name, a) in sorted {
        put(&mut buf, name.as_bytes());
        put(&mut buf, a.data_type.as_bytes());
        if let Some(s) = &a.string_value {
            buf.push(1);
            put(&mut buf, s.as_bytes());
        } else if let Some(b) = &a.binary_value {
            buf.push(2);
            put(&mut buf, b);
        }
    }
    md5_hex(&buf)
}

fn sha256_hex(data: &[u8]) -> String {
    sigv4::sha256_hex(data)
}

fn default_attrs(fifo: bool) -> BTreeMap<String, String> {
    let mut m: BTreeMap<String, String> = [
        ("DelaySeconds", "0"),
        ("MaximumMessageSize", "262144"),
        ("MessageRetentionPeriod", "345600"),
        ("ReceiveMessageWaitTimeSeconds", "0"),
        ("VisibilityTimeout", "30"),
        ("SqsManagedSseEnabled", "true"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect();
    if fifo {
        for (k, v) in [
            ("FifoQueue", "true"),
            ("ContentBasedDeduplication", "false"),
            ("DeduplicationScope", "queue"),
            ("FifoThroughputLimit", "perQueue"),
        ] {
            m.insert(k.into(), v.into());
        }
    }
    m
}

/// Attributes computed on read, never set.
const READ_ONLY_ATTRS: &[&str] = &[
    "ApproximateNumberOfMessages",
    "ApproximateNumberOfMessagesNotVisible",
    "ApproximateNumberOfMessagesDelayed",
    "CreatedTimestamp",
    "LastModifiedTimestamp",
    "QueueArn",
];

fn validate_queue_name(name: &str, fifo: bool) -> Result<(), SqsError> {
    let base = if fifo {
        name.strip_suffix(".fifo").ok_or_else(|| {
            SqsError::invalid("The name of a FIFO queue can only include alphanumeric characters, hyphens, or underscores, must end with .fifo suffix and be 1 to 80 in length.")
        })?
    } else {
        name
    };
    if name.is_empty()
        || name.len() > 80
        || base.is_empty()
        || !base
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    {
        return Err(SqsError::invalid(
            "Can only include alphanumeric characters, hyphens, or underscores. 1 to 80 in length",
        ));
    }
    Ok(())
}

/// Whether a body or attribute value holds only the characters SQS allows
/// (`#x9 | #xA | #xD | #x20-#xD7FF | #xE000-#xFFFD | #x10000-#x10FFFF`).
fn valid_chars(s: &str) -> bool {
    s.chars().all(|c| {
        matches!(c, '\u{9}' | '\u{A}' | '\u{D}' | '\u{20}'..='\u{D7FF}' | '\u{E000}'..='\u{FFFD}' | '\u{10000}'..)
    })
}

impl Sqs {
    pub(crate) fn new(data_dir: Option<PathBuf>) -> Self {
        Self {
            queues: Mutex::new(BTreeMap::new()),
            notifications: Mutex::new(BTreeMap::new()),
            dir: data_dir.map(|d| d.join("sqs")),
            counter: AtomicU64::new(1),
        }
    }

    fn next(&self) -> u64 {
        self.counter.fetch_add(1, Ordering::Relaxed)
    }

    fn queue_file(&self, name: &str) -> Option<PathBuf> {
        // Queue names are [A-Za-z0-9_-] plus ".fifo": always one plain file name.
        self.dir
            .as_ref()
            .map(|d| d.join("queues").join(format!("q-{name}.json")))
    }

    fn persist(&self, q: &Queue) {
        let Some(path) = self.queue_file(&q.data.name) else {
            return;
        };
        let res = serde_json::to_vec(&q.data)
            .map_err(std::io::Error::other)
            .and_then(|json| {
                std::fs::create_dir_all(path.parent().expect("queue file has a parent"))?;
                write_atomic(&path, &json)
            });
        if let Err(e) = res {
            tracing::warn!(queue = %q.data.name, error = %e, "cannot persist queue");
        }
    }

    fn unpersist(&self, name: &str) {
        if let Some(path) = self.queue_file(name)
            && let Err(e) = std::fs::remove_file(&path)
            && e.kind() != std::io::ErrorKind::NotFound
        {
            tracing::warn!(queue = name, error = %e, "cannot remove queue file");
        }
    }

    pub(crate) fn persist_notifications(&self) {
        let Some(dir) = &self.dir else { return };
        let json = {
            let n = self.notifications.lock().expect("notifications lock");
            serde_json::to_vec_pretty(&*n)
        };
        let res = json.map_err(std::io::Error::other).and_then(|json| {
            std::fs::create_dir_all(dir)?;
            write_atomic(&dir.join("notifications.json"), &json)
        });
        if let Err(e) = res {
            tracing::warn!(error = %e, "cannot persist bucket notifications");
        }
    }

    /// Loads queues, their messages and bucket notifications written by an earlier run.
    pub(crate) fn load(&self) -> Result<(), crate::error::Error> {
        let Some(dir) = &self.dir else { return Ok(()) };
        let corrupt = |path: &std::path::Path, reason: String| crate::error::Error::CorruptState {
            path: path.to_owned(),
            reason,
        };
        let notif = dir.join("notifications.json");
        if let Ok(bytes) = std::fs::read(&notif) {
            let n = serde_json::from_slice(&bytes).map_err(|e| corrupt(&notif, e.to_string()))?;
            *self.notifications.lock().expect("notifications lock") = n;
        }
        let qdir = dir.join("queues");
        let entries = match std::fs::read_dir(&qdir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(source) => {
                return Err(crate::error::Error::DataDir { path: qdir, source });
            }
        };
        let mut queues = self.queues.lock().expect("queues lock");
        for entry in entries {
            let path = entry
                .map_err(|source| crate::error::Error::DataDir {
                    path: qdir.clone(),
                    source,
                })?
                .path();
            if path.extension().is_none_or(|e| e != "json") {
                continue;
            }
            let bytes = std::fs::read(&path).map_err(|source| crate::error::Error::DataDir {
                path: path.clone(),
                source,
            })?;
            let data: QueueData =
                serde_json::from_slice(&bytes).map_err(|e| corrupt(&path, e.to_string()))?;
            let max_nonce = data
                .messages
                .iter()
                .map(|m| m.receipt_nonce)
                .max()
                .unwrap_or(0);
            self.counter.fetch_max(max_nonce + 1, Ordering::Relaxed);
            queues.insert(
                data.name.clone(),
                Queue {
                    data,
                    notify: Arc::new(Notify::new()),
                },
            );
        }
        Ok(())
    }

    /// The names of every queue.
    pub(crate) fn queue_names(&self) -> Vec<String> {
        self.queues
            .lock()
            .expect("queues lock")
            .keys()
            .cloned()
            .collect()
    }

    pub(crate) fn exists(&self, name: &str) -> bool {
        self.queues.lock().expect("queues lock").contains_key(name)
    }
}

fn write_atomic(path: &std::path::Path, data: &[u8]) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, data)?;
    std::fs::rename(&tmp, path)
}

// ---------------------------------------------------------------------------------------------
// Request parameters

/// The request's parameters as JSON, whichever protocol carried them.
struct Params(Value);

impl Params {
    fn str(&self, k: &str) -> Result<Option<&str>, SqsError> {
        match self.0.get(k) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(_) => Err(SqsError::invalid(format!(
                "Value for parameter {k} must be a string."
            ))),
        }
    }
    fn req_str(&self, k: &str) -> Result<&str, SqsError> {
        self.str(k)?.ok_or_else(|| SqsError::missing(k))
    }
    fn int(&self, k: &str, min: u64, max: u64) -> Result<Option<u64>, SqsError> {
        let Some(v) = self.0.get(k).filter(|v| !v.is_null()) else {
            return Ok(None);
        };
        match json_u64(v) {
            Some(n) if (min..=max).contains(&n) => Ok(Some(n)),
            _ => Err(SqsError::invalid(format!(
                "Value {} for parameter {k} is invalid. Reason: must be between {min} and {max}.",
                v.to_string().chars().take(64).collect::<String>()
            ))),
        }
    }
    fn str_list(&self, k: &str) -> Result<Vec<String>, SqsError> {
        match self.0.get(k) {
            None | Some(Value::Null) => Ok(Vec::new()),
            Some(Value::Array(a)) => a
                .iter()
                .map(|v| {
                    v.as_str()
                        .map(str::to_owned)
                        .ok_or_else(|| SqsError::invalid(format!("{k} must be a list of strings.")))
                })
                .collect(),
            Some(_) => Err(SqsError::invalid(format!("{k} must be a list."))),
        }
    }
    fn str_map(&self, k: &str) -> Result<BTreeMap<String, String>, SqsError> {
        match self.0.get(k) {
            None | Some(Value::Null) => Ok(BTreeMap::new()),
            Some(Value::Object(o)) => o
                .iter()
                .map(|(n, v)| match v {
                    Value::String(s) => Ok((n.clone(), s.clone())),
                    Value::Number(x) => Ok((n.clone(), x.to_string())),
                    Value::Bool(b) => Ok((n.clone(), b.to_string())),
                    _ => Err(SqsError::invalid(format!("{k}.{n} must be a string."))),
                })
                .collect(),
            Some(_) => Err(SqsError::invalid(format!("{k} must be a map."))),
        }
    }
    fn queue(&self) -> Result<String, SqsError> {
        name_from_url(self.req_str("QueueUrl")?)
    }
}

fn parse_msg_attrs(v: Option<&Value>) -> Result<BTreeMap<String, MsgAttr>, SqsError> {
    let mut out = BTreeMap::new();
    let Some(v) = v.filter(|v| !v.is_null()) else {
        return Ok(out);
    };
    let obj = v
        .as_object()
        .ok_or_else(|| SqsError::invalid("MessageAttributes must be a map."))?;
    if obj.len() > 10 {
        return Err(SqsError::invalid(format!(
            "Number of message attributes [{}] exceeds the allowed maximum [10].",
            obj.len()
        )));
    }
    for (name, a) in obj {
        let bad_name = name.is_empty()
            || name.len() > 256
            || name.starts_with('.')
            || name.ends_with('.')
            || name.contains("..")
            || name.to_ascii_lowercase().starts_with("aws.")
            || name.to_ascii_lowercase().starts_with("amazon.")
            || !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'));
        if bad_name {
            return Err(SqsError::invalid(format!(
                "Message attribute name '{}' is invalid.",
                name.chars().take(64).collect::<String>()
            )));
        }
        let data_type = a
            .get("DataType")
            .and_then(Value::as_str)
            .ok_or_else(|| {
                SqsError::invalid(format!(
                    "The message attribute '{name}' must contain a non-empty attribute type."
                ))
            })?
            .to_owned();
        let base = data_type.split('.').next().unwrap_or("").to_owned();
        let base = base.as_str();
        let string_value = a
            .get("StringValue")
            .and_then(Value::as_str)
            .map(str::to_owned);
        let binary_value = match a.get("BinaryValue").and_then(Value::as_str) {
            Some(b) => Some(
                base64::engine::general_purpose::STANDARD
                    .decode(b)
                    .map_err(|_| {
                        SqsError::invalid(format!(
                            "The message attribute '{name}' has a BinaryValue that is not base64."
                        ))
                    })?,
            ),
            None => None,
        };
        if a.get("StringListValues").is_some_and(|v| !v.is_null())
            || a.get("BinaryListValues").is_some_and(|v| !v.is_null())
        {
            return Err(SqsError::invalid(format!(
                "Message attribute '{name}': list values are not supported."
            )));
        }
        match base {
            "String" | "Number" => {
                let Some(s) = &string_value else {
                    return Err(SqsError::invalid(format!(
                        "The message attribute '{name}' with type '{base}' must use field 'String'."
                    )));
                };
                if s.is_empty() || !valid_chars(s) {
                    return Err(SqsError::invalid(format!(
                        "The message attribute '{name}' has an empty or invalid string value."
                    )));
                }
                if base == "Number" && s.parse::<f64>().is_err() {
                    return Err(SqsError::invalid(format!(
                        "Can't cast the value of message (user) attribute '{name}' to a number."
                    )));
                }
            }
            "Binary" => {
                if binary_value.as_ref().is_none_or(Vec::is_empty) {
                    return Err(SqsError::invalid(format!(
                        "The message attribute '{name}' with type 'Binary' must use field 'Binary'."
                    )));
                }
            }
            _ => {
                return Err(SqsError::invalid(format!(
                    "The type of message (user) attribute '{name}' is invalid. You must use only the following supported type prefixes: Binary, Number, String."
                )));
            }
        }
        out.insert(
            name.clone(),
            MsgAttr {
                data_type,
                string_value: if base == "Binary" { None } else { string_value },
                binary_value: if base == "Binary" { binary_value } else { None },
            },
        );
    }
    Ok(out)
}

fn attrs_json(attrs: &BTreeMap<String, MsgAttr>) -> Value {
    let mut o = serde_json::Map::new();
    for (n, a) in attrs {
        let mut v = json!({ "DataType": a.data_type });
        if let Some(s) = &a.string_value {
            v["StringValue"] = json!(s);
        }
        if let Some(b) = &a.binary_value {
            v["BinaryValue"] = json!(base64::engine::general_purpose::STANDARD.encode(b));
        }
        o.insert(n.clone(), v);
    }
    Value::Object(o)
}

// ---------------------------------------------------------------------------------------------
// Operations

struct Ctx<'a> {
    shared: &'a Shared,
    sender_id: String,
}

impl Ctx<'_> {
    fn sqs(&self) -> &Sqs {
        &self.shared.sqs
    }
    fn now(&self) -> u64 {
        self.shared.now_ms()
    }
    fn url(&self, name: &str) -> String {
        queue_url(&self.shared.url, name)
    }
    fn arn(&self, name: &str) -> String {
        queue_arn(&self.shared.cfg.region, name)
    }
}

/// Validates settable attributes; returns them normalized (RedrivePolicy re-serialized).
fn check_attrs(
    attrs: &BTreeMap<String, String>,
    fifo: bool,
    creating: bool,
    queues: &BTreeMap<String, Queue>,
    region: &str,
) -> Result<BTreeMap<String, String>, SqsError> {
    let mut out = BTreeMap::new();
    for (k, v) in attrs {
        let range = |min: u64, max: u64| -> Result<String, SqsError> {
            match v.parse::<u64>() {
                Ok(n) if (min..=max).contains(&n) => Ok(n.to_string()),
                _ => Err(SqsError::attr_value(
                    k,
                    &format!("must be an integer from {min} to {max}."),
                )),
            }
        };
        let boolean = || -> Result<String, SqsError> {
            match v.to_ascii_lowercase().as_str() {
                "true" => Ok("true".into()),
                "false" => Ok("false".into()),
                _ => Err(SqsError::attr_value(k, "must be true or false.")),
            }
        };
        let value = match k.as_str() {
            "DelaySeconds" => range(0, 900)?,
            "MaximumMessageSize" => range(1024, 1_048_576)?,
            "MessageRetentionPeriod" => range(60, 1_209_600)?,
            "ReceiveMessageWaitTimeSeconds" => range(0, MAX_WAIT_SECONDS)?,
            "VisibilityTimeout" => range(0, MAX_VISIBILITY)?,
            "KmsDataKeyReusePeriodSeconds" => range(60, 86_400)?,
            "SqsManagedSseEnabled" => boolean()?,
            "Policy" | "KmsMasterKeyId" | "RedriveAllowPolicy" => v.clone(),
            "RedrivePolicy" if v.is_empty() => String::new(),
            "RedrivePolicy" => {
                let p: Value = serde_json::from_str(v).map_err(|_| {
                    SqsError::attr_value(k, "Redrive policy is not a valid JSON map.")
                })?;
                let arn = p
                    .get("deadLetterTargetArn")
                    .and_then(Value::as_str)
                    .ok_or_else(|| {
                        SqsError::attr_value(
                            k,
                            "Redrive policy does not contain deadLetterTargetArn.",
                        )
                    })?;
                let max = p
                    .get("maxReceiveCount")
                    .and_then(json_u64)
                    .filter(|n| (1..=1000).contains(n))
                    .ok_or_else(|| {
                        SqsError::attr_value(
                            k,
                            "maxReceiveCount must be an integer from 1 to 1000.",
                        )
                    })?;
                let target = arn
                    .strip_prefix(&format!("arn:aws:sqs:{region}:{ACCOUNT_ID}:"))
                    .and_then(|n| queues.get(n))
                    .ok_or_else(|| SqsError::attr_value(k, "Dead-letter target does not exist."))?;
                if target.data.fifo != fifo {
                    return Err(SqsError::attr_value(
                        k,
                        "Dead-letter queue must be of the same type as the source queue (FIFO or standard).",
                    ));
                }
                json!({"deadLetterTargetArn": arn, "maxReceiveCount": max}).to_string()
            }
            "FifoQueue" => {
                let b = boolean()?;
                if !creating {
                    return Err(SqsError::invalid(
                        "Attribute FifoQueue can only be set when the queue is created.",
                    ));
                }
                if (b == "true") != fifo {
                    return Err(SqsError::attr_value(
                        k,
                        "FifoQueue does not match the queue name (FIFO queue names end with .fifo).",
                    ));
                }
                b
            }
            "ContentBasedDeduplication" | "DeduplicationScope" | "FifoThroughputLimit" if !fifo => {
                return Err(SqsError::attr_name(k));
            }
            "ContentBasedDeduplication" => boolean()?,
            "DeduplicationScope" => match v.as_str() {
                "queue" | "messageGroup" => v.clone(),
                _ => return Err(SqsError::attr_value(k, "must be queue or messageGroup.")),
            },
            "FifoThroughputLimit" => match v.as_str() {
                "perQueue" | "perMessageGroupId" => v.clone(),
                _ => {
                    return Err(SqsError::attr_value(
                        k,
                        "must be perQueue or perMessageGroupId.",
                    ));
                }
            },
            _ => return Err(SqsError::attr_name(k)),
        };
        out.insert(k.clone(), value);
    }
    Ok(out)
}

fn create_queue(cx: &Ctx<'_>, p: &Params) -> Result<Value, SqsError> {
    let name = p.req_str("QueueName")?.to_owned();
    let attrs = p.str_map("Attributes")?;
    let tags = p.str_map("tags")?;
    let fifo = attrs
        .get("FifoQueue")
        .is_some_and(|v| v.eq_ignore_ascii_case("true"));
    if !fifo && name.ends_with(".fifo") {
        return Err(SqsError::invalid(
            "Can only include alphanumeric characters, hyphens, or underscores. 1 to 80 in length",
        ));
    }
    validate_queue_name(&name, fifo)?;
    let sqs = cx.sqs();
    let mut queues = sqs.queues.lock().expect("queues lock");
    let mut checked = check_attrs(&attrs, fifo, true, &queues, &cx.shared.cfg.region)?;
    if let Some(q) = queues.get(&name) {
        // Idempotent when every given attribute matches (SQS CreateQueue docs).
        for (k, v) in &checked {
            let cur = q.data.attrs.get(k).map(String::as_str).unwrap_or("");
            if cur != v {
                return Err(SqsError::new(
                    "QueueAlreadyExists",
                    "QueueNameExists",
                    format!(
                        "A queue already exists with the same name and a different value for attribute {k}"
                    ),
                ));
            }
        }
        return Ok(json!({ "QueueUrl": cx.url(&name) }));
    }
    let mut all = default_attrs(fifo);
    if checked.get("RedrivePolicy").is_some_and(String::is_empty) {
        checked.remove("RedrivePolicy");
    }
    if !fifo {
        // `FifoQueue=false` is accepted on a standard queue, which never lists it.
        checked.remove("FifoQueue");
    }
    all.extend(checked);
    let now_s = cx.now() / 1000;
    let q = Queue {
        data: QueueData {
            name: name.clone(),
            fifo,
            created_s: now_s,
            modified_s: now_s,
            attrs: all,
            tags,
            messages: VecDeque::new(),
            dedup: HashMap::new(),
        },
        notify: Arc::new(Notify::new()),
    };
    sqs.persist(&q);
    queues.insert(name.clone(), q);
    tracing::debug!(queue = %name, fifo, "queue created");
    Ok(json!({ "QueueUrl": cx.url(&name) }))
}

fn with_queue<R>(
    cx: &Ctx<'_>,
    name: &str,
    f: impl FnOnce(&mut BTreeMap<String, Queue>) -> Result<R, SqsError>,
) -> Result<R, SqsError> {
    let mut queues = cx.sqs().queues.lock().expect("queues lock");
    if !queues.contains_key(name) {
        return Err(SqsError::no_queue());
    }
    f(&mut queues)
}

fn get_queue_url(cx: &Ctx<'_>, p: &Params) -> Result<Value, SqsError> {
    let name = p.req_str("QueueName")?;
    if !cx.sqs().exists(name) {
        return Err(SqsError::no_queue());
    }
    Ok(json!({ "QueueUrl": cx.url(name) }))
}

fn delete_queue(cx: &Ctx<'_>, p: &Params) -> Result<Value, SqsError> {
    let name = p.queue()?;
    let q = cx
        .sqs()
        .queues
        .lock()
        .expect("queues lock")
        .remove(&name)
        .ok_or_else(SqsError::no_queue)?;
    q.notify.notify_waiters();
    cx.sqs().unpersist(&name);
    Ok(json!({}))
}

fn purge_queue(cx: &Ctx<'_>, p: &Params) -> Result<Value, SqsError> {
    let name = p.queue()?;
    with_queue(cx, &name, |qs| {
        let q = qs.get_mut(&name).expect("checked");
        q.data.messages.clear();
        cx.sqs().persist(q);
        Ok(json!({}))
    })
}

fn list_queues(cx: &Ctx<'_>, p: &Params) -> Result<Value, SqsError> {
    let prefix = p.str("QueueNamePrefix")?.unwrap_or("");
    let max = p.int("MaxResults", 1, 1000)?;
    let after = p.str("NextToken")?;
    let names: Vec<String> = cx
        .sqs()
        .queue_names()
        .into_iter()
        .filter(|n| n.starts_with(prefix))
        .filter(|n| after.is_none_or(|a| n.as_str() > a))
        .collect();
    let limit = max.unwrap_or(1000) as usize;
    let mut out = json!({
        "QueueUrls": names.iter().take(limit).map(|n| cx.url(n)).collect::<Vec<_>>()
    });
    if max.is_some() && names.len() > limit {
        out["NextToken"] = json!(names[limit - 1]);
    }
    Ok(out)
}

fn counts(q: &Queue, now: u64) -> (usize, usize, usize) {
    let (mut visible, mut inflight, mut delayed) = (0, 0, 0);
    for m in &q.data.messages {
        if m.visible_at_ms <= now {
            visible += 1;
        } else if m.receive_count > 0 {
            inflight += 1;
        } else {
            delayed += 1;
        }
    }
    (visible, inflight, delayed)
}

fn get_queue_attributes(cx: &Ctx<'_>, p: &Params) -> Result<Value, SqsError> {
    let name = p.queue()?;
    let wanted = p.str_list("AttributeNames")?;
    let now = cx.now();
    with_queue(cx, &name, |qs| {
        let q = qs.get_mut(&name).expect("checked");
        expire(q, now);
        let (visible, inflight, delayed) = counts(q, now);
        let mut all: BTreeMap<String, String> = q.data.attrs.clone();
        all.insert("ApproximateNumberOfMessages".into(), visible.to_string());
        all.insert(
            "ApproximateNumberOfMessagesNotVisible".into(),
            inflight.to_string(),
        );
        all.insert(
            "ApproximateNumberOfMessagesDelayed".into(),
            delayed.to_string(),
        );
        all.insert("CreatedTimestamp".into(), q.data.created_s.to_string());
        all.insert(
            "LastModifiedTimestamp".into(),
            q.data.modified_s.to_string(),
        );
        all.insert("QueueArn".into(), cx.arn(&name));
        let mut out = serde_json::Map::new();
        for w in &wanted {
            if w == "All" {
                for (k, v) in &all {
                    out.insert(k.clone(), json!(v));
                }
                continue;
            }
            match all.get(w) {
                Some(v) => {
                    out.insert(w.clone(), json!(v));
                }
                None if is_known_attr(w) => {}
                None => return Err(SqsError::attr_name(w)),
            }
        }
        if out.is_empty() {
            return Ok(json!({}));
        }
        Ok(json!({ "Attributes": out }))
    })
}

fn is_known_attr(name: &str) -> bool {
    READ_ONLY_ATTRS.contains(&name)
        || [
            "DelaySeconds",
            "MaximumMessageSize",
            "MessageRetentionPeriod",
            "ReceiveMessageWaitTimeSeconds",
            "VisibilityTimeout",
            "SqsManagedSseEnabled",
            "Policy",
            "KmsMasterKeyId",
            "KmsDataKeyReusePeriodSeconds",
            "RedrivePolicy",
            "RedriveAllowPolicy",
            "FifoQueue",
            "ContentBasedDeduplication",
            "DeduplicationScope",
            "FifoThroughputLimit",
        ]
        .contains(&name)
}

fn set_queue_attributes(cx: &Ctx<'_>, p: &Params) -> Result<Value, SqsError> {
    let name = p.queue()?;
    let attrs = p.str_map("Attributes")?;
    let region = cx.shared.cfg.region.clone();
    let now_s = cx.now() / 1000;
    with_queue(cx, &name, |qs| {
        let fifo = qs[&name].data.fifo;
        let checked = check_attrs(&attrs, fifo, false, qs, &region)?;
        let q = qs.get_mut(&name).expect("checked");
        for (k, v) in checked {
            if v.is_empty()
                && matches!(
                    k.as_str(),
                    "RedrivePolicy" | "Policy" | "RedriveAllowPolicy"
                )
            {
                q.data.attrs.remove(&k);
            } else {
                q.data.attrs.insert(k, v);
            }
        }
        q.data.modified_s = now_s;
        cx.sqs().persist(q);
        // A shorter wait or delay may make messages available sooner.
        q.notify.notify_waiters();
        Ok(json!({}))
    })
}

/// Drops messages older than the retention period and expired deduplication entries.
fn expire(q: &mut Queue, now: u64) {
    let retention_ms = q.num("MessageRetentionPeriod") * 1000;
    q.data
        .messages
        .retain(|m| now.saturating_sub(m.sent_ms) < retention_ms);
    q.data.dedup.retain(|_, d| d.expires_ms > now);
}

/// One message to send (single or batch entry).
struct Outgoing {
    body: String,
    delay: Option<u64>,
    attrs: BTreeMap<String, MsgAttr>,
    trace_header: Option<String>,
    group_id: Option<String>,
    dedup_id: Option<String>,
}

fn parse_outgoing(p: &Params) -> Result<Outgoing, SqsError> {
    let body = p.req_str("MessageBody")?.to_owned();
    let trace_header = match p.0.get("MessageSystemAttributes") {
        Some(Value::Object(o)) => {
            for k in o.keys() {
                if k != "AWSTraceHeader" {
                    return Err(SqsError::invalid(format!(
                        "Message system attribute name '{}' is invalid.",
                        k.chars().take(64).collect::<String>()
                    )));
                }
            }
            o.get("AWSTraceHeader")
                .and_then(|a| a.get("StringValue"))
                .and_then(Value::as_str)
                .map(str::to_owned)
        }
        _ => None,
    };
    let check_id = |k: &str| -> Result<Option<String>, SqsError> {
        match p.str(k)? {
            None => Ok(None),
            Some(v)
                if !v.is_empty() && v.len() <= 128 && v.chars().all(|c| c.is_ascii_graphic()) =>
            {
                Ok(Some(v.to_owned()))
            }
            Some(_) => Err(SqsError::invalid(format!(
                "Value for parameter {k} is invalid. Reason: 1 to 128 printable ASCII characters."
            ))),
        }
    };
    Ok(Outgoing {
        body,
        delay: p.int("DelaySeconds", 0, 900)?,
        attrs: parse_msg_attrs(p.0.get("MessageAttributes"))?,
        trace_header,
        group_id: check_id("MessageGroupId")?,
        dedup_id: check_id("MessageDeduplicationId")?,
    })
}

/// What a successful send answers.
struct Sent {
    message_id: String,
    md5_body: String,
    md5_attrs: Option<String>,
    md5_system: Option<String>,
    sequence_number: Option<String>,
}

impl Sent {
    fn json(&self) -> Value {
        let mut v = json!({ "MessageId": self.message_id, "MD5OfMessageBody": self.md5_body });
        if let Some(m) = &self.md5_attrs {
            v["MD5OfMessageAttributes"] = json!(m);
        }
        if let Some(m) = &self.md5_system {
            v["MD5OfMessageSystemAttributes"] = json!(m);
        }
        if let Some(s) = &self.sequence_number {
            v["SequenceNumber"] = json!(s);
        }
        v
    }
}

fn send_one(cx: &Ctx<'_>, q: &mut Queue, m: Outgoing, now: u64) -> Result<Sent, SqsError> {
    if m.body.is_empty() {
        return Err(SqsError::invalid(
            "The request must contain the parameter MessageBody.",
        ));
    }
    if !valid_chars(&m.body) {
        return Err(SqsError::new(
            "InvalidMessageContents",
            "InvalidMessageContents",
            "Invalid characters found. Valid unicode characters are #x9 | #xA | #xD | #x20 to #xD7FF | #xE000 to #xFFFD | #x10000 to #x10FFFF",
        ));
    }
    let size = m.body.len()
        + m.attrs
            .iter()
            .map(|(n, a)| {
                n.len()
                    + a.data_type.len()
                    + a.string_value.as_ref().map_or(0, String::len)
                    + a.binary_value.as_ref().map_or(0, Vec::len)
            })
            .sum::<usize>();
    let max = q.num("MaximumMessageSize") as usize;
    if size > max {
        return Err(SqsError::invalid(format!(
            "One or more parameters are invalid. Reason: Message must be shorter than {max} bytes."
        )));
    }
    let md5_body = md5_hex(m.body.as_bytes());
    let md5_attrs = (!m.attrs.is_empty()).then(|| md5_of_attributes(&m.attrs));
    let md5_system = m.trace_header.as_ref().map(|t| {
        let attr = MsgAttr {
            data_type: "String".into(),
            string_value: Some(t.clone()),
            binary_value: None,
        };
        md5_of_attributes([(&"AWSTraceHeader".to_owned(), &attr)])
    });
    let id = uuid::Uuid::new_v4().to_string();
    let (sequence_number, dedup_id, group_id) = if q.data.fifo {
        if m.delay.is_some_and(|d| d > 0) {
            return Err(SqsError::invalid(
                "Value for parameter DelaySeconds is invalid. Reason: The request include parameter that is not valid for this queue type.",
            ));
        }
        let group = m
            .group_id
            .clone()
            .ok_or_else(|| SqsError::missing("MessageGroupId"))?;
        let dedup = match &m.dedup_id {
            Some(d) => d.clone(),
            None if q
                .data
                .attrs
                .get("ContentBasedDeduplication")
                .map(String::as_str)
                == Some("true") =>
            {
                sha256_hex(m.body.as_bytes())
            }
            None => {
                return Err(SqsError::invalid(
                    "The queue should either have ContentBasedDeduplication enabled or MessageDeduplicationId provided explicitly",
                ));
            }
        };
        let key =
            if q.data.attrs.get("DeduplicationScope").map(String::as_str) == Some("messageGroup") {
                format!("{group}\n{dedup}")
            } else {
                dedup.clone()
            };
        if let Some(d) = q.data.dedup.get(&key).filter(|d| d.expires_ms > now) {
            // A duplicate inside the window is accepted and not delivered again.
            return Ok(Sent {
                message_id: d.message_id.clone(),
                md5_body,
                md5_attrs,
                md5_system,
                sequence_number: d.sequence_number.clone(),
            });
        }
        let seq = format!("{:020}", cx.sqs().next() + (now << 16));
        q.data.dedup.insert(
            key,
            DedupEntry {
                expires_ms: now + DEDUP_WINDOW_MS,
                message_id: id.clone(),
                sequence_number: Some(seq.clone()),
            },
        );
        (Some(seq), Some(dedup), Some(group))
    } else {
        if m.dedup_id.is_some() {
            return Err(SqsError::invalid(
                "Value for parameter MessageDeduplicationId is invalid. Reason: The request includes a parameter that is not valid for this queue type.",
            ));
        }
        (None, None, m.group_id.clone())
    };
    let delay = m.delay.unwrap_or_else(|| q.num("DelaySeconds"));
    q.data.messages.push_back(Message {
        id: id.clone(),
        body: m.body,
        attrs: m.attrs,
        trace_header: m.trace_header,
        sent_ms: now,
        visible_at_ms: now + delay * 1000,
        receive_count: 0,
        first_receive_ms: None,
        group_id,
        dedup_id,
        sequence_number: sequence_number.clone(),
        sender_id: cx.sender_id.clone(),
        dlq_source_arn: None,
        receipt_nonce: 0,
    });
    Ok(Sent {
        message_id: id,
        md5_body,
        md5_attrs,
        md5_system,
        sequence_number,
    })
}

fn send_message(cx: &Ctx<'_>, p: &Params) -> Result<Value, SqsError> {
    let name = p.queue()?;
    let m = parse_outgoing(p)?;
    let now = cx.now();
    with_queue(cx, &name, |qs| {
        let q = qs.get_mut(&name).expect("checked");
        expire(q, now);
        let sent = send_one(cx, q, m, now)?;
        cx.sqs().persist(q);
        q.notify.notify_waiters();
        Ok(sent.json())
    })
}

/// Checks batch entry ids: 1-10 entries, distinct, `[A-Za-z0-9_-]{1,80}`.
fn batch_entries(p: &Params) -> Result<Vec<Params>, SqsError> {
    let entries = match p.0.get("Entries") {
        Some(Value::Array(a)) => a.clone(),
        None | Some(Value::Null) => Vec::new(),
        Some(_) => return Err(SqsError::invalid("Entries must be a list.")),
    };
    if entries.is_empty() {
        return Err(SqsError::new(
            "AWS.SimpleQueueService.EmptyBatchRequest",
            "EmptyBatchRequest",
            "There should be at least one entry in the request.",
        ));
    }
    if entries.len() > 10 {
        return Err(SqsError::new(
            "AWS.SimpleQueueService.TooManyEntriesInBatchRequest",
            "TooManyEntriesInBatchRequest",
            format!(
                "Maximum number of entries per request are 10. You have sent {}.",
                entries.len()
            ),
        ));
    }
    let mut seen = BTreeSet::new();
    for e in &entries {
        let id = e.get("Id").and_then(Value::as_str).unwrap_or("");
        if id.is_empty()
            || id.len() > 80
            || !id
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        {
            return Err(SqsError::new(
                "AWS.SimpleQueueService.InvalidBatchEntryId",
                "InvalidBatchEntryId",
                "A batch entry id can only contain alphanumeric characters, hyphens and underscores. It can be at most 80 letters long.",
            ));
        }
        if !seen.insert(id.to_owned()) {
            return Err(SqsError::new(
                "AWS.SimpleQueueService.BatchEntryIdsNotDistinct",
                "BatchEntryIdsNotDistinct",
                format!("Id {id} repeated."),
            ));
        }
    }
    Ok(entries.into_iter().map(Params).collect())
}

fn failed_entry(id: &str, e: &SqsError) -> Value {
    json!({ "Id": id, "SenderFault": e.sender_fault, "Code": e.code, "Message": e.message })
}

fn batch_result(ok: Vec<Value>, failed: Vec<Value>) -> Value {
    json!({ "Successful": ok, "Failed": failed })
}

fn send_message_batch(cx: &Ctx<'_>, p: &Params) -> Result<Value, SqsError> {
    let name = p.queue()?;
    let entries = batch_entries(p)?;
    let total: usize = entries
        .iter()
        .map(|e| e.str("MessageBody").ok().flatten().map_or(0, str::len))
        .sum();
    let now = cx.now();
    with_queue(cx, &name, |qs| {
        let q = qs.get_mut(&name).expect("checked");
        let max = q.num("MaximumMessageSize") as usize;
        if total > max {
            return Err(SqsError::new(
                "AWS.SimpleQueueService.BatchRequestTooLong",
                "BatchRequestTooLong",
                format!(
                    "Batch requests cannot be longer than {max} bytes. You have sent {total} bytes."
                ),
            ));
        }
        expire(q, now);
        let (mut ok, mut failed) = (Vec::new(), Vec::new());
        for e in &entries {
            let id = e.str("Id")?.unwrap_or("").to_owned();
            match parse_outgoing(e).and_then(|m| send_one(cx, q, m, now)) {
                Ok(sent) => {
                    let mut v = sent.json();
                    v["Id"] = json!(id);
                    ok.push(v);
                }
                Err(err) => failed.push(failed_entry(&id, &err)),
            }
        }
        cx.sqs().persist(q);
        q.notify.notify_waiters();
        Ok(batch_result(ok, failed))
    })
}

// ---- receipt handles ----

fn make_handle(queue: &str, id: &str, nonce: u64) -> String {
    base64::engine::general_purpose::STANDARD.encode(format!("{queue}\n{id}\n{nonce}"))
}

/// (queue, message id, nonce) of a receipt handle, or `ReceiptHandleIsInvalid`.
fn parse_handle(h: &str, queue: &str) -> Result<(String, u64), SqsError> {
    let bad = || SqsError::bad_handle(h);
    let raw = base64::engine::general_purpose::STANDARD
        .decode(h)
        .map_err(|_| bad())?;
    let s = String::from_utf8(raw).map_err(|_| bad())?;
    let mut it = s.split('\n');
    let (Some(q), Some(id), Some(nonce), None) = (it.next(), it.next(), it.next(), it.next())
    else {
        return Err(bad());
    };
    if q != queue {
        return Err(bad());
    }
    Ok((id.to_owned(), nonce.parse().map_err(|_| bad())?))
}

fn delete_one(q: &mut Queue, handle: &str) -> Result<(), SqsError> {
    let (id, nonce) = parse_handle(handle, &q.data.name)?;
    // A handle from an earlier receive is stale: the request succeeds, the message stays
    // (SQS developer guide, "Receipt handle").
    q.data
        .messages
        .retain(|m| !(m.id == id && m.receipt_nonce == nonce && m.receive_count > 0));
    Ok(())
}

fn delete_message(cx: &Ctx<'_>, p: &Params) -> Result<Value, SqsError> {
    let name = p.queue()?;
    let handle = p.req_str("ReceiptHandle")?.to_owned();
    with_queue(cx, &name, |qs| {
        let q = qs.get_mut(&name).expect("checked");
        delete_one(q, &handle)?;
        cx.sqs().persist(q);
        // In a FIFO queue, deleting frees the group for its next message.
        q.notify.notify_waiters();
        Ok(json!({}))
    })
}

fn delete_message_batch(cx: &Ctx<'_>, p: &Params) -> Result<Value, SqsError> {
    let name = p.queue()?;
    let entries = batch_entries(p)?;
    with_queue(cx, &name, |qs| {
        let q = qs.get_mut(&name).expect("checked");
        let (mut ok, mut failed) = (Vec::new(), Vec::new());
        for e in &entries {
            let id = e.str("Id")?.unwrap_or("").to_owned();
            match e.req_str("ReceiptHandle").and_then(|h| delete_one(q, h)) {
                Ok(()) => ok.push(json!({ "Id": id })),
                Err(err) => failed.push(failed_entry(&id, &err)),
            }
        }
        cx.sqs().persist(q);
        q.notify.notify_waiters();
        Ok(batch_result(ok, failed))
    })
}

fn change_one(q: &mut Queue, handle: &str, timeout: u64, now: u64) -> Result<(), SqsError> {
    let (id, nonce) = parse_handle(handle, &q.data.name)?;
    let m = q
        .data
        .messages
        .iter_mut()
        .find(|m| m.id == id && m.receipt_nonce == nonce && m.receive_count > 0)
        .ok_or_else(|| {
            SqsError::invalid(format!(
                "Value {} for parameter ReceiptHandle is invalid. Reason: Message does not exist or is not available for visibility timeout change.",
                handle.chars().take(128).collect::<String>()
            ))
        })?;
    if !m.in_flight(now) {
        return Err(SqsError::new(
            "AWS.SimpleQueueService.MessageNotInflight",
            "MessageNotInflight",
            "The message referred to isn't in flight.",
        ));
    }
    m.visible_at_ms = now + timeout * 1000;
    Ok(())
}

fn change_message_visibility(cx: &Ctx<'_>, p: &Params) -> Result<Value, SqsError> {
    let name = p.queue()?;
    let handle = p.req_str("ReceiptHandle")?.to_owned();
    let timeout = p
        .int("VisibilityTimeout", 0, MAX_VISIBILITY)?
        .ok_or_else(|| SqsError::missing("VisibilityTimeout"))?;
    let now = cx.now();
    with_queue(cx, &name, |qs| {
        let q = qs.get_mut(&name).expect("checked");
        change_one(q, &handle, timeout, now)?;
        cx.sqs().persist(q);
        q.notify.notify_waiters();
        Ok(json!({}))
    })
}

fn change_message_visibility_batch(cx: &Ctx<'_>, p: &Params) -> Result<Value, SqsError> {
    let name = p.queue()?;
    let entries = batch_entries(p)?;
    let now = cx.now();
    with_queue(cx, &name, |qs| {
        let q = qs.get_mut(&name).expect("checked");
        let (mut ok, mut failed) = (Vec::new(), Vec::new());
        for e in &entries {
            let id = e.str("Id")?.unwrap_or("").to_owned();
            let res = e.req_str("ReceiptHandle").and_then(|h| {
                let t = e
                    .int("VisibilityTimeout", 0, MAX_VISIBILITY)?
                    .ok_or_else(|| SqsError::missing("VisibilityTimeout"))?;
                change_one(q, h, t, now)
            });
            match res {
                Ok(()) => ok.push(json!({ "Id": id })),
                Err(err) => failed.push(failed_entry(&id, &err)),
            }
        }
        cx.sqs().persist(q);
        q.notify.notify_waiters();
        Ok(batch_result(ok, failed))
    })
}

// ---- receive ----

struct ReceiveOpts {
    max: usize,
    visibility: Option<u64>,
    system_names: Vec<String>,
    attr_names: Vec<String>,
}

fn wants_attr(names: &[String], name: &str) -> bool {
    names.iter().any(|w| {
        w == "All"
            || w == ".*"
            || w == name
            || w.strip_suffix(".*")
                .is_some_and(|p| name.starts_with(p) && name[p.len()..].starts_with('.'))
    })
}

fn message_json(m: &Message, handle: &str, o: &ReceiveOpts) -> Value {
    let mut v = json!({
        "MessageId": m.id,
        "ReceiptHandle": handle,
        "MD5OfBody": md5_hex(m.body.as_bytes()),
        "Body": m.body,
    });
    let mut sys = BTreeMap::new();
    sys.insert("SenderId", m.sender_id.clone());
    sys.insert("SentTimestamp", m.sent_ms.to_string());
    sys.insert("ApproximateReceiveCount", m.receive_count.to_string());
    sys.insert(
        "ApproximateFirstReceiveTimestamp",
        m.first_receive_ms.unwrap_or(m.sent_ms).to_string(),
    );
    if let Some(t) = &m.trace_header {
        sys.insert("AWSTraceHeader", t.clone());
    }
    if let Some(g) = &m.group_id {
        sys.insert("MessageGroupId", g.clone());
    }
    if let Some(d) = &m.dedup_id {
        sys.insert("MessageDeduplicationId", d.clone());
    }
    if let Some(s) = &m.sequence_number {
        sys.insert("SequenceNumber", s.clone());
    }
    if let Some(s) = &m.dlq_source_arn {
        sys.insert("DeadLetterQueueSourceArn", s.clone());
    }
    let sys: serde_json::Map<String, Value> = sys
        .into_iter()
        .filter(|(k, _)| o.system_names.iter().any(|w| w == "All" || w == k))
        .map(|(k, v)| (k.to_owned(), json!(v)))
        .collect();
    if !sys.is_empty() {
        v["Attributes"] = Value::Object(sys);
    }
    let attrs: BTreeMap<String, MsgAttr> = m
        .attrs
        .iter()
        .filter(|(n, _)| wants_attr(&o.attr_names, n))
        .map(|(n, a)| (n.clone(), a.clone()))
        .collect();
    if !attrs.is_empty() {
        v["MD5OfMessageAttributes"] = json!(md5_of_attributes(&attrs));
        v["MessageAttributes"] = attrs_json(&attrs);
    }
    v
}

/// Takes up to `o.max` deliverable messages, moving those past `maxReceiveCount` to the
/// dead-letter queue. Returns the messages and the earliest time another may become visible.
fn take_messages(
    cx: &Ctx<'_>,
    qs: &mut BTreeMap<String, Queue>,
    name: &str,
    o: &ReceiveOpts,
    now: u64,
) -> Result<(Vec<Value>, Option<u64>), SqsError> {
    let q = qs.get_mut(name).ok_or_else(SqsError::no_queue)?;
    expire(q, now);
    let redrive = q.redrive();
    let fifo = q.data.fifo;
    let visibility = o.visibility.unwrap_or_else(|| q.num("VisibilityTimeout"));
    let mut out = Vec::new();
    let mut to_dlq = Vec::new();
    let mut next_due: Option<u64> = None;
    let mut blocked: BTreeSet<String> = BTreeSet::new();
    let mut changed = false;
    for (i, m) in q.data.messages.iter_mut().enumerate() {
        let group = m.group_id.clone().unwrap_or_default();
        if m.visible_at_ms > now {
            next_due = Some(next_due.map_or(m.visible_at_ms, |d| d.min(m.visible_at_ms)));
            if fifo {
                // An earlier message of the group in flight (or delayed) holds the group back.
                blocked.insert(group);
            }
            continue;
        }
        if fifo && blocked.contains(&group) {
            continue;
        }
        if out.len() >= o.max {
            break;
        }
        if let Some((_, max)) = &redrive
            && m.receive_count >= *max
        {
            to_dlq.push(i);
            continue;
        }
        m.receive_count += 1;
        m.first_receive_ms.get_or_insert(now);
        m.receipt_nonce = cx.sqs().next();
        m.visible_at_ms = now + visibility * 1000;
        changed = true;
        let handle = make_handle(name, &m.id, m.receipt_nonce);
        out.push(message_json(m, &handle, o));
    }
    if !to_dlq.is_empty() {
        let (dlq_arn, _) = redrive.clone().expect("only with a redrive policy");
        let src_arn = cx.arn(name);
        let mut moved = Vec::new();
        for i in to_dlq.into_iter().rev() {
            if let Some(mut m) = q.data.messages.remove(i) {
                m.receive_count = 0;
                m.first_receive_ms = None;
                m.visible_at_ms = now;
                m.dlq_source_arn = Some(src_arn.clone());
                moved.push(m);
            }
        }
        moved.reverse();
        changed = true;
        let target = dlq_arn.rsplit(':').next().unwrap_or("").to_owned();
        tracing::debug!(queue = name, dlq = %target, count = moved.len(), "moved to dead-letter queue");
        match qs.get_mut(&target) {
            Some(dlq) => {
                dlq.data.messages.extend(moved);
                cx.sqs().persist(dlq);
                dlq.notify.notify_waiters();
            }
            None => {
                // The dead-letter queue was deleted: keep the messages where they were.
                let q = qs.get_mut(name).expect("present");
                q.data.messages.extend(moved);
            }
        }
    }
    let q = qs.get_mut(name).expect("present");
    if changed {
        cx.sqs().persist(q);
    }
    Ok((out, next_due))
}

async fn receive_message(cx: &Ctx<'_>, p: &Params) -> Result<Value, SqsError> {
    let name = p.queue()?;
    let max = p.int("MaxNumberOfMessages", 1, 10)?.unwrap_or(1) as usize;
    let visibility = p.int("VisibilityTimeout", 0, MAX_VISIBILITY)?;
    let wait = p.int("WaitTimeSeconds", 0, MAX_WAIT_SECONDS)?;
    let mut system_names = p.str_list("AttributeNames")?;
    system_names.extend(p.str_list("MessageSystemAttributeNames")?);
    let o = ReceiveOpts {
        max,
        visibility,
        system_names,
        attr_names: p.str_list("MessageAttributeNames")?,
    };
    let (notify, wait) = {
        let qs = cx.sqs().queues.lock().expect("queues lock");
        let q = qs.get(&name).ok_or_else(SqsError::no_queue)?;
        (
            q.notify.clone(),
            wait.unwrap_or_else(|| q.num("ReceiveMessageWaitTimeSeconds")),
        )
    };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(wait);
    loop {
        // Registered before looking, so a send between the look and the wait still wakes us.
        let notified = notify.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        let now = cx.now();
        let (msgs, next_due) = {
            let mut qs = cx.sqs().queues.lock().expect("queues lock");
            take_messages(cx, &mut qs, &name, &o, now)?
        };
        if !msgs.is_empty() || tokio::time::Instant::now() >= deadline {
            return Ok(if msgs.is_empty() {
                json!({})
            } else {
                json!({ "Messages": msgs })
            });
        }
        let mut until = deadline;
        if let Some(due) = next_due {
            let d = tokio::time::Instant::now() + Duration::from_millis(due.saturating_sub(now));
            until = until.min(d);
        }
        tokio::select! {
            _ = notified => {}
            _ = tokio::time::sleep_until(until) => {}
        }
    }
}

fn tag_queue(cx: &Ctx<'_>, p: &Params) -> Result<Value, SqsError> {
    let name = p.queue()?;
    let tags = p.str_map("Tags")?;
    with_queue(cx, &name, |qs| {
        let q = qs.get_mut(&name).expect("checked");
        q.data.tags.extend(tags);
        cx.sqs().persist(q);
        Ok(json!({}))
    })
}

fn untag_queue(cx: &Ctx<'_>, p: &Params) -> Result<Value, SqsError> {
    let name = p.queue()?;
    let keys = p.str_list("TagKeys")?;
    with_queue(cx, &name, |qs| {
        let q = qs.get_mut(&name).expect("checked");
        for k in keys {
            q.data.tags.remove(&k);
        }
        cx.sqs().persist(q);
        Ok(json!({}))
    })
}

fn list_queue_tags(cx: &Ctx<'_>, p: &Params) -> Result<Value, SqsError> {
    let name = p.queue()?;
    with_queue(cx, &name, |qs| {
        let tags = &qs[&name].data.tags;
        Ok(if tags.is_empty() {
            json!({})
        } else {
            json!({ "Tags": tags })
        })
    })
}

fn list_dead_letter_source_queues(cx: &Ctx<'_>, p: &Params) -> Result<Value, SqsError> {
    let name = p.queue()?;
    let arn = cx.arn(&name);
    with_queue(cx, &name, |qs| {
        let urls: Vec<String> = qs
            .values()
            .filter(|q| q.redrive().is_some_and(|(a, _)| a == arn))
            .map(|q| cx.url(&q.data.name))
            .collect();
        Ok(json!({ "queueUrls": urls }))
    })
}

async fn dispatch(cx: &Ctx<'_>, action: &str, p: &Params) -> Result<Value, SqsError> {
    match action {
        "CreateQueue" => create_queue(cx, p),
        "GetQueueUrl" => get_queue_url(cx, p),
        "DeleteQueue" => delete_queue(cx, p),
        "PurgeQueue" => purge_queue(cx, p),
        "ListQueues" => list_queues(cx, p),
        "GetQueueAttributes" => get_queue_attributes(cx, p),
        "SetQueueAttributes" => set_queue_attributes(cx, p),
        "SendMessage" => send_message(cx, p),
        "SendMessageBatch" => send_message_batch(cx, p),
        "ReceiveMessage" => receive_message(cx, p).await,
        "DeleteMessage" => delete_message(cx, p),
        "DeleteMessageBatch" => delete_message_batch(cx, p),
        "ChangeMessageVisibility" => change_message_visibility(cx, p),
        "ChangeMessageVisibilityBatch" => change_message_visibility_batch(cx, p),
        "TagQueue" => tag_queue(cx, p),
        "UntagQueue" => untag_queue(cx, p),
        "ListQueueTags" => list_queue_tags(cx, p),
        "ListDeadLetterSourceQueues" => list_dead_letter_source_queues(cx, p),
        other => Err(SqsError::new(
            "InvalidAction",
            "InvalidAction",
            format!(
                "The action {} is not valid for this endpoint.",
                other.chars().take(64).collect::<String>()
            ),
        )),
    }
}

// ---------------------------------------------------------------------------------------------
// Library-side entry points (used by `Emulator` and S3 notifications)

impl Shared {
    /// Sends a message as `SendMessage` would, from inside the emulator (S3 notifications).
    pub(crate) fn sqs_send_internal(&self, queue: &str, body: String) -> Result<String, SqsError> {
        let cx = Ctx {
            shared: self,
            sender_id: "AIDAS3NOTIFICATIONS00".into(),
        };
        let p = Params(json!({ "QueueUrl": queue, "MessageBody": body }));
        let v = send_message(&cx, &p)?;
        Ok(v["MessageId"].as_str().unwrap_or_default().to_owned())
    }

    /// Runs one SQS action with JSON parameters as the emulator's own principal.
    pub(crate) async fn sqs_call(&self, action: &str, params: Value) -> Result<Value, SqsError> {
        let cx = Ctx {
            shared: self,
            sender_id: "AIDAEMULATORUSER0000".into(),
        };
        dispatch(&cx, action, &Params(params)).await
    }
}

// ---------------------------------------------------------------------------------------------
// HTTP

fn json_reply(status: u16, body: String) -> Response<RespBody> {
    let mut resp = Response::new(full(body));
    *resp.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_REQUEST);
    let h = resp.headers_mut();
    h.insert(
        "content-type",
        HeaderValue::from_static("application/x-amz-json-1.0"),
    );
    if let Ok(v) = HeaderValue::from_str(&request_id()) {
        h.insert("x-amzn-requestid", v);
    }
    resp
}

fn json_error(e: &SqsError) -> Response<RespBody> {
    let body = json!({ "__type": format!("com.amazonaws.sqs#{}", e.shape), "message": e.message });
    let mut resp = json_reply(e.status, body.to_string());
    let fault = if e.sender_fault { "Sender" } else { "Receiver" };
    if let Ok(v) = HeaderValue::from_str(&format!("{};{fault}", e.code)) {
        resp.headers_mut().insert("x-amzn-query-error", v);
    }
    resp
}

const XMLNS: &str = "http://queue.amazonaws.com/doc/2012-11-05/";

fn xml_reply(status: u16, body: String) -> Response<RespBody> {
    let mut resp = Response::new(full(body));
    *resp.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_REQUEST);
    resp.headers_mut()
        .insert("content-type", HeaderValue::from_static("text/xml"));
    resp
}

fn xml_error(e: &SqsError) -> Response<RespBody> {
    let fault = if e.sender_fault { "Sender" } else { "Receiver" };
    xml_reply(
        e.status,
        format!(
            "<?xml version=\"1.0\"?><ErrorResponse xmlns=\"{XMLNS}\"><Error><Type>{fault}</Type><Code>{}</Code><Message>{}</Message><Detail/></Error><RequestId>{}</RequestId></ErrorResponse>",
            xml_escape(e.code),
            xml_escape(&e.message),
            request_id()
        ),
    )
}

pub(crate) async fn handle(router: &Router, req: Request<Incoming>) -> Response<RespBody> {
    let query_protocol = req.headers().get("x-amz-target").is_none();
    match handle_inner(router, req).await {
        Ok(r) => r,
        Err(e) if query_protocol => xml_error(&e),
        Err(e) => json_error(&e),
    }
}

async fn handle_inner(
    router: &Router,
    req: Request<Incoming>,
) -> Result<Response<RespBody>, SqsError> {
    let shared = &router.shared;
    let (parts, body) = req.into_parts();
    let body = read_body_limited(&parts.headers, body, MAX_REQUEST, shared.cfg.idle_timeout)
        .await
        .map_err(|e| SqsError::from_auth(&e))?;
    let headers = super::header_pairs(&parts.headers);
    let actual = sigv4::sha256_hex(&body);
    let hashes: Vec<&str> = match sigv4::header(&headers, "x-amz-content-sha256") {
        Some(sigv4::UNSIGNED_PAYLOAD) => vec![sigv4::UNSIGNED_PAYLOAD],
        _ => vec![actual.as_str()],
    };
    let rp = RequestParts {
        method: parts.method.as_str(),
        path: parts.uri.path(),
        query: parts.uri.query().unwrap_or(""),
        headers: &headers,
        uri_encoding: UriEncoding::Double,
    };
    let principal = shared
        .authenticate(&rp, "sqs", &hashes)
        .map_err(|e| SqsError::from_auth(&e))?;
    let cx = Ctx {
        shared,
        sender_id: principal.user_id.clone(),
    };
    if let Some(target) = parts.headers.get("x-amz-target") {
        let action = target
            .to_str()
            .ok()
            .and_then(|t| t.strip_prefix("AmazonSQS."))
            .ok_or_else(|| {
                SqsError::new(
                    "InvalidAction",
                    "InvalidAction",
                    "X-Amz-Target must be AmazonSQS.<Action>",
                )
            })?
            .to_owned();
        let params: Value = if body.is_empty() {
            json!({})
        } else {
            serde_json::from_slice(&body).map_err(|e| {
                SqsError::new(
                    "MalformedInput",
                    "MalformedInput",
                    format!("request body is not JSON: {e}"),
                )
            })?
        };
        if !params.is_object() {
            return Err(SqsError::new(
                "MalformedInput",
                "MalformedInput",
                "request body must be a JSON object",
            ));
        }
        let out = dispatch(&cx, &action, &Params(params)).await?;
        return Ok(json_reply(200, out.to_string()));
    }
    // Query protocol: form parameters (body and query string), XML out.
    let mut form: Vec<(String, String)> = url::form_urlencoded::parse(&body).into_owned().collect();
    form.extend(
        url::form_urlencoded::parse(parts.uri.query().unwrap_or("").as_bytes()).into_owned(),
    );
    let action = form
        .iter()
        .find(|(k, _)| k == "Action")
        .map(|(_, v)| v.clone())
        .ok_or_else(|| SqsError::new("MissingAction", "MissingAction", "Action is required"))?;
    let mut params = form_to_json(&form);
    // Older clients post to the queue URL itself instead of naming it in a parameter.
    if params.get("QueueUrl").is_none() && parts.uri.path().matches('/').count() == 2 {
        params["QueueUrl"] = json!(format!("{}{}", shared.url, parts.uri.path()));
    }
    let out = dispatch(&cx, &action, &Params(params)).await?;
    Ok(xml_reply(200, json_to_xml(&action, &out)))
}

/// Query-protocol form parameters as the JSON the operations take
/// (`Attribute.1.Name`/`.Value` become the `Attributes` map, `MessageAttribute.N.Value.*` the
/// `MessageAttributes` map, `XxxRequestEntry.N.*` the `Entries` list, `AttributeName.N` lists).
fn form_to_json(form: &[(String, String)]) -> Value {
    let mut out = serde_json::Map::new();
    // Groups of indexed parameters: prefix -> index -> (rest -> value).
    let mut groups: BTreeMap<String, BTreeMap<u32, BTreeMap<String, String>>> = BTreeMap::new();
    for (k, v) in form {
        let mut it = k.splitn(3, '.');
        let (head, idx, rest) = (it.next().unwrap_or(""), it.next(), it.next());
        match idx.and_then(|i| i.parse::<u32>().ok()) {
            Some(i) => {
                groups
                    .entry(head.to_owned())
                    .or_default()
                    .entry(i)
                    .or_default()
                    .insert(rest.unwrap_or("").to_owned(), v.clone());
            }
            None => {
                out.insert(k.clone(), json!(v));
            }
        }
    }
    for (head, items) in groups {
        let items: Vec<BTreeMap<String, String>> = items.into_values().collect();
        let pairs = |name: &str, value: &str| -> Value {
            Value::Object(
                items
                    .iter()
                    .filter_map(|m| Some((m.get(name)?.clone(), json!(m.get(value)?))))
                    .collect(),
            )
        };
        let list = || json!(items.iter().filter_map(|m| m.get("")).collect::<Vec<_>>());
        match head.as_str() {
            "Attribute" => {
                out.insert("Attributes".into(), pairs("Name", "Value"));
            }
            "Tag" => {
                let tags = pairs("Key", "Value");
                out.insert("tags".into(), tags.clone());
                out.insert("Tags".into(), tags);
            }
            "AttributeName" => {
                out.insert("AttributeNames".into(), list());
            }
            "MessageAttributeName" => {
                out.insert("MessageAttributeNames".into(), list());
            }
            "MessageSystemAttributeName" => {
                out.insert("MessageSystemAttributeNames".into(), list());
            }
            "TagKey" => {
                out.insert("TagKeys".into(), list());
            }
            "MessageAttribute" | "MessageSystemAttribute" => {
                out.insert(format!("{head}s"), typed_attrs(&items));
            }
            h if h.ends_with("RequestEntry") => {
                let entries: Vec<Value> = items
                    .iter()
                    .map(|m| {
                        let sub: Vec<(String, String)> =
                            m.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
                        form_to_json(&sub)
                    })
                    .collect();
                out.insert("Entries".into(), json!(entries));
            }
            _ => {
                out.insert(head, list());
            }
        }
    }
    Value::Object(out)
}

fn typed_attrs(items: &[BTreeMap<String, String>]) -> Value {
    let mut o = serde_json::Map::new();
    for m in items {
        let Some(name) = m.get("Name") else { continue };
        let mut v = serde_json::Map::new();
        for (field, value) in m {
            if let Some(f) = field.strip_prefix("Value.") {
                v.insert(f.to_owned(), json!(value));
            }
        }
        o.insert(name.clone(), Value::Object(v));
    }
    Value::Object(o)
}

/// An operation's JSON output as the query protocol's XML response.
fn json_to_xml(action: &str, out: &Value) -> String {
    let mut x = String::new();
    write_xml(action, out, &mut x);
    format!(
        "<?xml version=\"1.0\"?><{action}Response xmlns=\"{XMLNS}\"><{action}Result>{x}</{action}Result><ResponseMetadata><RequestId>{}</RequestId></ResponseMetadata></{action}Response>",
        request_id()
    )
}

fn write_xml(action: &str, v: &Value, x: &mut String) {
    let Some(o) = v.as_object() else { return };
    for (k, v) in o {
        match (k.as_str(), v) {
            ("QueueUrls" | "queueUrls", Value::Array(a)) => {
                for u in a {
                    x.push_str(&format!(
                        "<QueueUrl>{}</QueueUrl>",
                        xml_escape(u.as_str().unwrap_or(""))
                    ));
                }
            }
            ("Attributes", Value::Object(m)) => {
                for (n, val) in m {
                    x.push_str(&format!(
                        "<Attribute><Name>{}</Name><Value>{}</Value></Attribute>",
                        xml_escape(n),
                        xml_escape(val.as_str().unwrap_or(""))
                    ));
                }
            }
            ("Tags", Value::Object(m)) => {
                for (n, val) in m {
                    x.push_str(&format!(
                        "<Tag><Key>{}</Key><Value>{}</Value></Tag>",
                        xml_escape(n),
                        xml_escape(val.as_str().unwrap_or(""))
                    ));
                }
            }
            ("MessageAttributes", Value::Object(m)) => {
                for (n, val) in m {
                    x.push_str(&format!(
                        "<MessageAttribute><Name>{}</Name><Value>",
                        xml_escape(n)
                    ));
                    write_xml(action, val, x);
                    x.push_str("</Value></MessageAttribute>");
                }
            }
            ("Messages" | "Successful" | "Failed", Value::Array(a)) => {
                let tag = match k.as_str() {
                    "Messages" => "Message".to_owned(),
                    "Failed" => "BatchResultErrorEntry".to_owned(),
                    _ => format!("{action}ResultEntry"),
                };
                for e in a {
                    x.push_str(&format!("<{tag}>"));
                    write_xml(action, e, x);
                    x.push_str(&format!("</{tag}>"));
                }
            }
            (_, Value::String(s)) => x.push_str(&format!("<{k}>{}</{k}>", xml_escape(s))),
            (_, Value::Bool(b)) => x.push_str(&format!("<{k}>{b}</{k}>")),
            (_, Value::Number(n)) => x.push_str(&format!("<{k}>{n}</{k}>")),
            _ => {}
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Library API

/// A message as the emulator holds it, for tests that check what a queue contains.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct QueuedMessage {
    /// `MessageId`.
    pub message_id: String,
    /// The body.
    pub body: String,
    /// `ApproximateReceiveCount` (exact here).
    pub receive_count: u32,
    /// Received and its visibility timeout not yet over.
    pub in_flight: bool,
    /// `MessageGroupId` (FIFO queues).
    pub group_id: Option<String>,
    /// When it was sent, epoch ms (emulator clock).
    pub sent_ms: u64,
    /// The queue it was moved from, when a redrive policy moved it here.
    pub dead_letter_source_arn: Option<String>,
}

fn lib_error(queue: &str, e: SqsError) -> crate::error::Error {
    crate::error::Error::Sqs {
        queue: queue.to_owned(),
        code: e.code.to_owned(),
        message: e.message,
    }
}

impl super::Emulator {
    /// Creates a queue as `CreateQueue` would (a name ending in `.fifo` makes a FIFO queue) with
    /// the given attributes (e.g. `("VisibilityTimeout", "10")`, `("RedrivePolicy", json)`);
    /// returns its URL. Idempotent like `CreateQueue`.
    pub async fn create_queue(
        &self,
        name: &str,
        attributes: &[(&str, &str)],
    ) -> Result<String, crate::error::Error> {
        let mut attrs: BTreeMap<&str, &str> = attributes.iter().copied().collect();
        if name.ends_with(".fifo") {
            attrs.entry("FifoQueue").or_insert("true");
        }
        let v = self
            .shared
            .sqs_call(
                "CreateQueue",
                json!({ "QueueName": name, "Attributes": attrs }),
            )
            .await
            .map_err(|e| lib_error(name, e))?;
        Ok(v["QueueUrl"].as_str().unwrap_or_default().to_owned())
    }
    /// The URL of a queue of this emulator (`http://127.0.0.1:PORT/123456789012/NAME`), whether
    /// or not it exists.
    pub fn queue_url(&self, name: &str) -> String {
        queue_url(&self.url, name)
    }
    /// The ARN of a queue (`arn:aws:sqs:REGION:123456789012:NAME`), e.g. for a redrive policy
    /// or a bucket notification.
    pub fn queue_arn(&self, name: &str) -> String {
        queue_arn(&self.region, name)
    }
    /// Sends a message as `SendMessage` would; returns its `MessageId`. FIFO queues need
    /// [`send_fifo_message`](Self::send_fifo_message).
    pub async fn send_message(
        &self,
        queue: &str,
        body: &str,
    ) -> Result<String, crate::error::Error> {
        let v = self
            .shared
            .sqs_call(
                "SendMessage",
                json!({ "QueueUrl": queue, "MessageBody": body }),
            )
            .await
            .map_err(|e| lib_error(queue, e))?;
        Ok(v["MessageId"].as_str().unwrap_or_default().to_owned())
    }
    /// Sends to a FIFO queue with a message group and deduplication id; returns the
    /// `MessageId` (the first one's, when deduplicated).
    pub async fn send_fifo_message(
        &self,
        queue: &str,
        body: &str,
        group_id: &str,
        dedup_id: &str,
    ) -> Result<String, crate::error::Error> {
        let v = self
            .shared
            .sqs_call(
                "SendMessage",
                json!({ "QueueUrl": queue, "MessageBody": body, "MessageGroupId": group_id,
                        "MessageDeduplicationId": dedup_id }),
            )
            .await
            .map_err(|e| lib_error(queue, e))?;
        Ok(v["MessageId"].as_str().unwrap_or_default().to_owned())
    }
    /// Every message the queue holds (in flight, delayed or visible), oldest first; empty for an
    /// unknown queue. Takes a name or a URL.
    pub fn queue_messages(&self, queue: &str) -> Vec<QueuedMessage> {
        let Ok(name) = name_from_url(queue) else {
            return Vec::new();
        };
        let now = self.shared.now_ms();
        let qs = self.shared.sqs.queues.lock().expect("queues lock");
        let Some(q) = qs.get(&name) else {
            return Vec::new();
        };
        q.data
            .messages
            .iter()
            .map(|m| QueuedMessage {
                message_id: m.id.clone(),
                body: m.body.clone(),
                receive_count: m.receive_count,
                in_flight: m.in_flight(now),
                group_id: m.group_id.clone(),
                sent_ms: m.sent_ms,
                dead_letter_source_arn: m.dlq_source_arn.clone(),
            })
            .collect()
    }
}
