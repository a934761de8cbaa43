//! KVS control plane (REST-JSON), GetMedia, and the archived-media APIs.

use bytes::Bytes;
use http::{HeaderValue, Request, Response};
use http_body_util::{BodyExt, StreamBody};
use hyper::body::{Frame, Incoming};
use serde_json::{Value, json};
use tokio::sync::mpsc;

use super::state::{ACCOUNT_ID, MediaRetention, Shared, StoredFragment, Stream, StreamMeta};
use super::{
    BoxError, RespBody, Router, error_response, json_response, read_body_limited, request_id,
};
use crate::api::{self, ApiError, KvsRequest, StreamRef};
use crate::media::{GetMediaTags, fragment_list_chunk, getmedia_chunk};
use crate::sigv4::{self, RequestParts, UriEncoding};

/// Reference: retention is at most 87600 hours (10 years).
const MAX_RETENTION_HOURS: u32 = 87_600;

pub(crate) async fn handle(router: &Router, req: Request<Incoming>) -> Response<RespBody> {
    if req.uri().path() == "/putMedia" {
        return super::putmedia::handle(router, req).await;
    }
    match handle_json(router, req).await {
        Ok(r) => r,
        Err(e) => error_response(&e),
    }
}

async fn handle_json(
    router: &Router,
    req: Request<Incoming>,
) -> Result<Response<RespBody>, ApiError> {
    let shared = &router.shared;
    let (parts, body) = req.into_parts();
    if parts.method != http::Method::POST {
        return Err(ApiError::new(
            405,
            "MethodNotAllowedException",
            "KVS operations are POST requests",
        ));
    }
    let body = read_body_limited(
        &parts.headers,
        body,
        api::MAX_JSON_BODY,
        shared.cfg.idle_timeout,
    )
    .await?;
    let headers = super::header_pairs(&parts.headers);
    let actual = sigv4::sha256_hex(&body);
    let declared = sigv4::header(&headers, "x-amz-content-sha256");
    let hashes: Vec<&str> = match declared {
        Some(sigv4::UNSIGNED_PAYLOAD) => vec![sigv4::UNSIGNED_PAYLOAD],
        Some(d) if d != actual => {
            return Err(ApiError::new(
                400,
                "InvalidSignatureException",
                "x-amz-content-sha256 does not match the request body",
            ));
        }
        _ => vec![actual.as_str()],
    };
    let rp = RequestParts {
        method: parts.method.as_str(),
        path: parts.uri.path(),
        query: parts.uri.query().unwrap_or(""),
        headers: &headers,
        uri_encoding: UriEncoding::Double,
    };
    shared.authenticate(&rp, "kinesisvideo", &hashes)?;
    if let Some(r) = super::playback::dispatch_api(router, parts.uri.path(), &body).await {
        return r;
    }
    let request = api::parse_kvs_request(parts.uri.path(), &body)?;
    dispatch(router, request).await
}

fn secs(ms: u64) -> f64 {
    ms as f64 / 1000.0
}

fn stream_info(m: &StreamMeta) -> Value {
    let mut v = json!({
        "StreamName": m.name,
        "StreamARN": m.arn,
        "KmsKeyId": m.kms_key_id,
        "Version": m.version,
        "Status": "ACTIVE",
        "CreationTime": secs(m.created_ms),
        "DataRetentionInHours": m.retention_hours,
    });
    if let Some(d) = &m.device_name {
        v["DeviceName"] = json!(d);
    }
    if let Some(t) = &m.media_type {
        v["MediaType"] = json!(t);
    }
    v
}

fn not_found(name: &str) -> ApiError {
    ApiError::not_found(format!(
        "The requested stream is not found or not active: {name}"
    ))
}

/// Resolves a name or ARN to a stream name that exists.
pub(crate) fn resolve(shared: &Shared, r: &StreamRef) -> Result<String, ApiError> {
    let streams = shared.streams.lock().expect("streams lock");
    let s = streams.get(r.name()).ok_or_else(|| not_found(r.name()))?;
    if let StreamRef::Arn(arn) = r
        && *arn != s.meta.arn
    {
        return Err(not_found(arn));
    }
    Ok(s.meta.name.clone())
}

fn new_version(shared: &Shared) -> String {
    format!("{:020}", shared.next_id() + shared.now_ms())
}

/// `CreateStream`: streams are ACTIVE at once (the real service passes through CREATING).
pub(crate) fn create_stream(
    shared: &Shared,
    name: &str,
    retention_hours: u32,
    device_name: Option<String>,
    media_type: Option<String>,
) -> Result<String, ApiError> {
    api::validate_stream_name(name)?;
    if retention_hours > MAX_RETENTION_HOURS {
        return Err(ApiError::invalid_argument(format!(
            "DataRetentionInHours must be at most {MAX_RETENTION_HOURS}"
        )));
    }
    let created_ms = shared.now_ms();
    let meta = StreamMeta {
        name: name.to_owned(),
        arn: api::stream_arn(&shared.cfg.region, ACCOUNT_ID, name, created_ms),
        device_name,
        media_type,
        kms_key_id: format!(
            "arn:aws:kms:{}:{ACCOUNT_ID}:alias/aws/kinesisvideo",
            shared.cfg.region
        ),
        version: new_version(shared),
        created_ms,
        retention_hours,
    };
    {
        let mut streams = shared.streams.lock().expect("streams lock");
        if streams.contains_key(name) {
            return Err(ApiError::in_use(format!(
                "The stream {name} already exists"
            )));
        }
        streams.insert(
            name.to_owned(),
            Stream {
                meta: meta.clone(),
                fragments: Vec::new(),
                acks: Vec::new(),
                connections: Vec::new(),
                active_connection: None,
                recent_puts: Default::default(),
                rotation: Default::default(),
            },
        );
    }
    shared.persist_meta(&meta);
    Ok(meta.arn)
}

async fn dispatch(router: &Router, request: KvsRequest) -> Result<Response<RespBody>, ApiError> {
    let shared = &*router.shared;
    match request {
        KvsRequest::CreateStream(i) => {
            let arn = create_stream(
                shared,
                &i.stream_name,
                i.data_retention_in_hours.unwrap_or(0),
                i.device_name,
                i.media_type,
            )?;
            Ok(json_response(&json!({ "StreamARN": arn })))
        }
        KvsRequest::DescribeStream(r) => {
            let name = resolve(shared, &r)?;
            let info = shared
                .with_stream(&name, |s| stream_info(&s.meta))
                .ok_or_else(|| not_found(&name))?;
            Ok(json_response(&json!({ "StreamInfo": info })))
        }
        KvsRequest::ListStreams(i) => {
            let max = i.max_results.unwrap_or(10_000) as usize;
            let prefix = match &i.stream_name_condition {
                Some(c) => {
                    if c.comparison_operator
                        .as_deref()
                        .is_some_and(|o| o != "BEGINS_WITH")
                    {
                        return Err(ApiError::invalid_argument(
                            "ComparisonOperator must be BEGINS_WITH",
                        ));
                    }
                    c.comparison_value.clone().unwrap_or_default()
                }
                None => String::new(),
            };
            let streams = shared.streams.lock().expect("streams lock");
            let after = i.next_token.clone().unwrap_or_default();
            let mut list: Vec<Value> = Vec::new();
            let mut next = None;
            for (name, s) in streams.range::<String, _>((
                std::ops::Bound::Excluded(after.clone()),
                std::ops::Bound::Unbounded,
            )) {
                if !name.starts_with(&prefix) {
                    continue;
                }
                if list.len() == max {
                    next = list
                        .last()
                        .and_then(|v| v["StreamName"].as_str().map(str::to_owned));
                    break;
                }
                list.push(stream_info(&s.meta));
            }
            let mut out = json!({ "StreamInfoList": list });
            if let Some(n) = next {
                out["NextToken"] = json!(n);
            }
            Ok(json_response(&out))
        }
        KvsRequest::DeleteStream(r, version) => {
            let name = resolve(shared, &r)?;
            {
                let mut streams = shared.streams.lock().expect("streams lock");
                let s = streams.get(&name).ok_or_else(|| not_found(&name))?;
                if let Some(v) = version
                    && v != s.meta.version
                {
                    return Err(ApiError::new(
                        400,
                        "VersionMismatchException",
                        "CurrentVersion does not match",
                    ));
                }
                streams.remove(&name);
            }
            shared.remove_stream_dir(&name);
            shared.fragment_notify.notify_waiters();
            Ok(json_response(&json!({})))
        }
        KvsRequest::UpdateDataRetention(r, i) => {
            let name = resolve(shared, &r)?;
            let version = new_version(shared);
            let meta = {
                let mut streams = shared.streams.lock().expect("streams lock");
                let s = streams.get_mut(&name).ok_or_else(|| not_found(&name))?;
                if i.current_version != s.meta.version {
                    return Err(ApiError::new(
                        400,
                        "VersionMismatchException",
                        "CurrentVersion does not match",
                    ));
                }
                let new = if i.operation == "INCREASE_DATA_RETENTION" {
                    s.meta
                        .retention_hours
                        .checked_add(i.data_retention_change_in_hours)
                } else {
                    s.meta
                        .retention_hours
                        .checked_sub(i.data_retention_change_in_hours)
                };
                let new = new.filter(|h| *h <= MAX_RETENTION_HOURS).ok_or_else(|| {
                    ApiError::invalid_argument("resulting retention out of range 0-87600 hours")
                })?;
                s.meta.retention_hours = new;
                s.meta.version = version;
                s.meta.clone()
            };
            shared.persist_meta(&meta);
            Ok(json_response(&json!({})))
        }
        KvsRequest::GetDataEndpoint(r, _api) => {
            resolve(shared, &r)?;
            // docs/protocol.md §1.1: the data endpoint; here, this emulator itself.
            Ok(json_response(&json!({ "DataEndpoint": shared.url })))
        }
        KvsRequest::GetMedia(..) | KvsRequest::GetMediaForFragmentList(..)
            if shared.cfg.media_retention == MediaRetention::MetadataOnly =>
        {
            Err(ApiError::invalid_argument(
                "this emulator keeps fragment metadata only (media retention MetadataOnly): no media to serve",
            ))
        }
        KvsRequest::GetMedia(r, sel) => get_media(router, r, sel).await,
        KvsRequest::ListFragments(r, i) => list_fragments(shared, r, i),
        KvsRequest::GetMediaForFragmentList(r, numbers) => {
            let name = resolve(shared, &r)?;
            let frags: Vec<StoredFragment> = shared
                .with_stream(&name, |s| {
                    numbers
                        .iter()
                        .map(|n| {
                            s.fragments
                                .iter()
                                .find(|f| f.persisted && &f.fragment_number == n)
                                .cloned()
                        })
                        .collect::<Option<Vec<_>>>()
                })
                .ok_or_else(|| not_found(&name))?
                .ok_or_else(|| {
                    ApiError::not_found("one or more requested fragments are not found")
                })?;
            let now = shared.now_ms();
            let mut out = Vec::new();
            for f in &frags {
                out.extend_from_slice(&chunk(f, now, ChunkFor::FragmentList));
            }
            Ok(media_response(super::full(out)))
        }
    }
}

fn media_response(body: RespBody) -> Response<RespBody> {
    let mut resp = Response::new(body);
    let h = resp.headers_mut();
    h.insert("content-type", HeaderValue::from_static("video/webm"));
    if let Ok(v) = HeaderValue::from_str(&request_id()) {
        h.insert("x-amzn-requestid", v);
    }
    resp
}

/// Which API a chunk is for: they name their timestamp tags differently.
#[derive(Clone, Copy)]
enum ChunkFor {
    GetMedia,
    FragmentList,
}

fn chunk(f: &StoredFragment, now_ms: u64, api: ChunkFor) -> Vec<u8> {
    let tags = GetMediaTags {
        fragment_number: f.fragment_number.clone(),
        server_timestamp_ms: f.server_timestamp_ms,
        producer_timestamp_ms: f.producer_timestamp_ms,
        millis_behind_now: Some(now_ms.saturating_sub(f.server_timestamp_ms)),
        continuation_token: Some(f.fragment_number.clone()),
        metadata: f.tags.clone(),
    };
    match api {
        ChunkFor::GetMedia => getmedia_chunk(&f.header, &f.cluster, &tags),
        ChunkFor::FragmentList => fragment_list_chunk(&f.header, &f.cluster, &tags),
    }
}

/// The index of the first fragment the selector picks.
fn start_index(fragments: &[StoredFragment], sel: &api::StartSelector) -> Result<usize, ApiError> {
    let after = |n: &str| {
        fragments
            .iter()
            .position(|f| f.fragment_number == n)
            .map(|i| i + 1)
            .ok_or_else(|| ApiError::invalid_argument("no fragment with that number"))
    };
    match sel.start_selector_type.as_str() {
        "EARLIEST" => Ok(0),
        "NOW" => Ok(fragments.len()),
        "FRAGMENT_NUMBER" => after(
            sel.after_fragment_number
                .as_deref()
                .ok_or_else(|| ApiError::invalid_argument("AfterFragmentNumber is required"))?,
        ),
        "CONTINUATION_TOKEN" => after(
            sel.continuation_token
                .as_deref()
                .ok_or_else(|| ApiError::invalid_argument("ContinuationToken is required"))?,
        ),
        t @ ("SERVER_TIMESTAMP" | "PRODUCER_TIMESTAMP") => {
            let ts = sel
                .start_timestamp
                .ok_or_else(|| ApiError::invalid_argument("StartTimestamp is required"))?;
            // Epoch seconds as a JSON number carry milliseconds inexactly (1.497 is 1.4969...): round,
            // or a timestamp the client took from a fragment would miss that fragment by 1 ms.
            let ts_ms = (ts * 1000.0).round().max(0.0) as u64;
            Ok(fragments
                .iter()
                .position(|f| {
                    let at = if t == "SERVER_TIMESTAMP" {
                        f.server_timestamp_ms
                    } else {
                        f.producer_timestamp_ms
                    };
                    at + f.duration_ms >= ts_ms
                })
                .unwrap_or(fragments.len()))
        }
        _ => Err(ApiError::invalid_argument("StartSelectorType is not valid")),
    }
}

/// GetMedia: the selected stored fragments, then live ones while a PutMedia connection is
/// open on the stream; the response ends when none is open and nothing new arrives, or after
/// the idle timeout without a new fragment.
async fn get_media(
    router: &Router,
    r: StreamRef,
    sel: api::StartSelector,
) -> Result<Response<RespBody>, ApiError> {
    let shared = router.shared.clone();
    let name = resolve(&shared, &r)?;
    let mut next = shared
        .with_stream(&name, |s| start_index(&s.fragments, &sel))
        .ok_or_else(|| not_found(&name))??;
    let (tx, rx) = mpsc::channel::<Result<Frame<Bytes>, BoxError>>(4);
    let mut shutdown = router.shutdown.clone();
    tokio::spawn(async move {
        loop {
            let notified = shared.fragment_notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let Some((batch, active)) = shared.with_stream(&name, |s| {
                (
                    s.fragments.get(next..).unwrap_or_default().to_vec(),
                    s.active_connection.is_some(),
                )
            }) else {
                break;
            };
            let now = shared.now_ms();
            let sent_any = !batch.is_empty();
            for f in batch {
                next += 1;
                if tx
                    .send(Ok(Frame::data(Bytes::from(chunk(
                        &f,
                        now,
                        ChunkFor::GetMedia,
                    )))))
                    .await
                    .is_err()
                {
                    return;
                }
            }
            if !active && !sent_any {
                break;
            }
            if sent_any {
                continue;
            }
            tokio::select! {
                _ = notified => {}
                _ = tokio::time::sleep(shared.cfg.idle_timeout) => break,
                _ = shutdown.changed() => break,
            }
        }
    });
    let stream =
        futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|f| (f, rx)) });
    Ok(media_response(StreamBody::new(stream).boxed()))
}

fn list_fragments(
    shared: &Shared,
    r: StreamRef,
    i: api::ListFragmentsInput,
) -> Result<Response<RespBody>, ApiError> {
    let name = resolve(shared, &r)?;
    let max = i.max_results.unwrap_or(1000).clamp(1, 1000) as usize;
    let start: usize = match &i.next_token {
        Some(t) => t
            .parse()
            .map_err(|_| ApiError::invalid_argument("NextToken is not valid"))?,
        None => 0,
    };
    let range = match &i.fragment_selector {
        Some(s) => {
            let server = match s.fragment_selector_type.as_str() {
                "SERVER_TIMESTAMP" => true,
                "PRODUCER_TIMESTAMP" => false,
                _ => {
                    return Err(ApiError::invalid_argument(
                        "FragmentSelectorType is not valid",
                    ));
                }
            };
            let (a, b) = (
                s.timestamp_range.start_timestamp,
                s.timestamp_range.end_timestamp,
            );
            if !(a.is_finite() && b.is_finite()) || a > b {
                return Err(ApiError::invalid_argument("TimestampRange is not valid"));
            }
            Some((
                server,
                // Rounded, as above: seconds with a fraction are inexact in binary.
                (a * 1000.0).round().max(0.0) as u64,
                (b * 1000.0).round().max(0.0) as u64,
            ))
        }
        None => None,
    };
    let (list, next) = shared
        .with_stream(&name, |s| {
            let matching: Vec<&StoredFragment> = s
                .fragments
                .iter()
                .filter(|f| f.persisted)
                .filter(|f| match range {
                    None => true,
                    Some((server, a, b)) => {
                        let t = if server {
                            f.server_timestamp_ms
                        } else {
                            f.producer_timestamp_ms
                        };
                        (a..=b).contains(&t)
                    }
                })
                .collect();
            let page: Vec<Value> = matching
                .iter()
                .skip(start)
                .take(max)
                .map(|f| {
                    json!({
                        "FragmentNumber": f.fragment_number,
                        "FragmentSizeInBytes": f.size,
                        "ProducerTimestamp": secs(f.producer_timestamp_ms),
                        "ServerTimestamp": secs(f.server_timestamp_ms),
                        "FragmentLengthInMilliseconds": f.duration_ms,
                    })
                })
                .collect();
            let next = (start + max < matching.len()).then(|| (start + max).to_string());
            (page, next)
        })
        .ok_or_else(|| not_found(&name))?;
    let mut out = json!({ "Fragments": list });
    if let Some(n) = next {
        out["NextToken"] = json!(n);
    }
    Ok(json_response(&out))
}
