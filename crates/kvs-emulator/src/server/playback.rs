//! The archived-media playback APIs: GetHLSStreamingSessionURL, GetDASHStreamingSessionURL,
//! GetClip and GetImages (request and response shapes of
//! <https://docs.aws.amazon.com/kinesisvideostreams/latest/dg/API_Operations_Amazon_Kinesis_Video_Streams_Archived_Media.html>),
//! and the session URLs they hand out (`/hls/v1/...`, `/dash/v1/...`), which, as in the
//! service, carry a `SessionToken` instead of a SigV4 signature.
//!
//! Every media segment is one stored fragment remuxed by ffmpeg ([`super::remux`]); its
//! `tfdt` is then moved to `producer timestamp - session origin`, so consecutive segments sit
//! end to end on one timeline whatever connection delivered them.

use std::collections::HashMap;
use std::sync::Mutex;

use base64::Engine as _;
use bytes::Bytes;
use http::{HeaderValue, Request, Response};
use hyper::body::Incoming;
use serde::Deserialize;
use serde_json::json;

use super::remux::{Output, RemuxError, Remuxer};
use super::state::{Shared, StoredFragment};
use super::{RespBody, Router, error_response, full, json_response, request_id};
use crate::api::{ApiError, StreamRef};
use crate::media::{Ingest, IngestConfig};
use crate::playback::mp4;
use crate::playback::playlist::{self, Container, MediaPlaylist, Segment};

/// Sessions alive at once; older expired ones are forgotten first.
const MAX_SESSIONS: usize = 10_000;
/// LIVE needs a fragment this recent (service documentation: "no fragments within the last 30
/// seconds" gives ResourceNotFoundException).
const LIVE_RECENT_MS: u64 = 30_000;
/// ON_DEMAND and GetClip ranges are at most 24 hours.
const MAX_RANGE_MS: u64 = 24 * 3600 * 1000;
/// GetImages ranges are at most 300 s.
const MAX_IMAGES_RANGE_MS: u64 = 300_000;
/// GetImages answers at most this many images per page.
const IMAGES_PAGE: usize = 25;

/// Playback state shared by the routes: sessions and the remuxer (with its cache).
pub(crate) struct Playback {
    sessions: Mutex<HashMap<String, Session>>,
    pub(crate) remuxer: Remuxer,
}

impl Playback {
    pub(crate) fn new() -> Self {
        Self {
            sessions: Mutex::new(HashMap::new()),
            remuxer: Remuxer::new(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mode {
    Live,
    LiveReplay,
    OnDemand,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Protocol {
    Hls(Container),
    Dash,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum DiscontinuityMode {
    Always,
    Never,
    OnDiscontinuity,
}

#[derive(Debug, Clone)]
struct Session {
    protocol: Protocol,
    stream: String,
    mode: Mode,
    server_time: bool,
    start_ms: Option<u64>,
    end_ms: Option<u64>,
    max_results: usize,
    expires_ms: u64,
    /// Producer timestamp at timeline zero.
    origin_ms: u64,
    /// The fragment whose header makes the init segment.
    init_fragment: String,
    discontinuity: DiscontinuityMode,
    show_timestamps: bool,
    created_ms: u64,
}

// ---- request shapes ----

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct Range {
    start_timestamp: Option<f64>,
    end_timestamp: Option<f64>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct Selector {
    fragment_selector_type: Option<String>,
    timestamp_range: Option<Range>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct SessionInput {
    stream_name: Option<String>,
    #[serde(rename = "StreamARN")]
    stream_arn: Option<String>,
    playback_mode: Option<String>,
    #[serde(rename = "HLSFragmentSelector")]
    hls_fragment_selector: Option<Selector>,
    #[serde(rename = "DASHFragmentSelector")]
    dash_fragment_selector: Option<Selector>,
    container_format: Option<String>,
    discontinuity_mode: Option<String>,
    display_fragment_timestamp: Option<String>,
    display_fragment_number: Option<String>,
    expires: Option<i64>,
    max_media_playlist_fragment_results: Option<i64>,
    max_manifest_fragment_results: Option<i64>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct ClipInput {
    stream_name: Option<String>,
    #[serde(rename = "StreamARN")]
    stream_arn: Option<String>,
    clip_fragment_selector: Option<Selector>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct ImagesInput {
    stream_name: Option<String>,
    #[serde(rename = "StreamARN")]
    stream_arn: Option<String>,
    image_selector_type: Option<String>,
    start_timestamp: Option<f64>,
    end_timestamp: Option<f64>,
    sampling_interval: Option<i64>,
    format: Option<String>,
    format_config: Option<HashMap<String, String>>,
    width_pixels: Option<i64>,
    height_pixels: Option<i64>,
    max_results: Option<i64>,
    next_token: Option<String>,
}

fn parse<'a, T: Deserialize<'a>>(body: &'a [u8]) -> Result<T, ApiError> {
    serde_json::from_slice(body).map_err(|e| {
        ApiError::new(
            400,
            "SerializationException",
            format!("request body is not valid: {e}"),
        )
    })
}

fn ms(secs: f64, what: &str) -> Result<u64, ApiError> {
    if !secs.is_finite() || secs < 0.0 {
        return Err(ApiError::invalid_argument(format!("{what} is not valid")));
    }
    Ok((secs * 1000.0).round() as u64)
}

fn selector_type(t: Option<&str>) -> Result<bool, ApiError> {
    match t {
        None | Some("SERVER_TIMESTAMP") => Ok(true),
        Some("PRODUCER_TIMESTAMP") => Ok(false),
        Some(_) => Err(ApiError::invalid_argument(
            "FragmentSelectorType must be PRODUCER_TIMESTAMP or SERVER_TIMESTAMP",
        )),
    }
}

fn at(f: &StoredFragment, server: bool) -> u64 {
    if server {
        f.server_timestamp_ms
    } else {
        f.producer_timestamp_ms
    }
}

fn stream_name(
    shared: &Shared,
    name: Option<String>,
    arn: Option<String>,
) -> Result<String, ApiError> {
    super::kvs::resolve(shared, &StreamRef::from_parts(name, arn)?)
}

/// The stream's persisted fragments and retention.
fn persisted(shared: &Shared, name: &str) -> Result<(Vec<StoredFragment>, u32), ApiError> {
    shared
        .with_stream(name, |s| {
            (
                s.fragments
                    .iter()
                    .filter(|f| f.persisted)
                    .cloned()
                    .collect(),
                s.meta.retention_hours,
            )
        })
        .ok_or_else(|| ApiError::not_found(format!("stream {name} not found")))
}

fn no_retention(name: &str) -> ApiError {
    ApiError::new(
        400,
        "NoDataRetentionException",
        format!("stream {name} does not retain data (DataRetentionInHours is 0)"),
    )
}

/// HLS and DASH need H.264/H.265 (or AAC alone) as track 1, with codec private data.
fn check_codecs(f: &StoredFragment) -> Result<(), ApiError> {
    let mut ingest = Ingest::new(IngestConfig::default());
    let mut events = Vec::new();
    ingest.push(&f.header, 0, &mut events);
    let tracks = ingest.tracks();
    let first = tracks.iter().min_by_key(|t| t.number).ok_or_else(|| {
        ApiError::new(
            400,
            "UnsupportedStreamMediaTypeException",
            "the stream's fragments declare no track",
        )
    })?;
    let codec = first.codec_id.as_deref().unwrap_or("");
    if !matches!(codec, "V_MPEG4/ISO/AVC" | "V_MPEG4/ISO/HEVC" | "A_AAC") {
        return Err(ApiError::new(
            400,
            "UnsupportedStreamMediaTypeException",
            format!("track 1 codec {codec:?} is not V_MPEG4/ISO/AVC, V_MPEG4/ISO/HEVC or A_AAC"),
        ));
    }
    if let Some(t) = tracks.iter().find(|t| t.codec_private_len == 0) {
        return Err(ApiError::new(
            400,
            "MissingCodecPrivateDataException",
            format!("track {} has no CodecPrivate", t.number),
        ));
    }
    Ok(())
}

/// Routes the archived-media JSON APIs; `None` for any other path.
pub(crate) async fn dispatch_api(
    router: &Router,
    path: &str,
    body: &[u8],
) -> Option<Result<Response<RespBody>, ApiError>> {
    Some(match path {
        "/getHLSStreamingSessionURL" => create_session(router, body, false)
            .map(|url| json_response(&json!({ "HLSStreamingSessionURL": url }))),
        "/getDASHStreamingSessionURL" => create_session(router, body, true)
            .map(|url| json_response(&json!({ "DASHStreamingSessionURL": url }))),
        "/getClip" => get_clip(router, body).await,
        "/getImages" => get_images(router, body).await,
        _ => return None,
    })
}

fn create_session(router: &Router, body: &[u8], dash: bool) -> Result<String, ApiError> {
    let shared = &router.shared;
    let i: SessionInput = parse(body)?;
    let name = stream_name(shared, i.stream_name.clone(), i.stream_arn.clone())?;
    let mode = match i.playback_mode.as_deref() {
        None | Some("LIVE") => Mode::Live,
        Some("LIVE_REPLAY") => Mode::LiveReplay,
        Some("ON_DEMAND") => Mode::OnDemand,
        Some(_) => {
            return Err(ApiError::invalid_argument(
                "PlaybackMode must be LIVE, LIVE_REPLAY or ON_DEMAND",
            ));
        }
    };
    let protocol = if dash {
        Protocol::Dash
    } else {
        match i.container_format.as_deref() {
            None | Some("FRAGMENTED_MP4") => Protocol::Hls(Container::FragmentedMp4),
            Some("MPEG_TS") => Protocol::Hls(Container::MpegTs),
            Some(_) => {
                return Err(ApiError::invalid_argument(
                    "ContainerFormat must be FRAGMENTED_MP4 or MPEG_TS",
                ));
            }
        }
    };
    let selector = if dash {
        i.dash_fragment_selector
    } else {
        i.hls_fragment_selector
    };
    let server_time = selector_type(
        selector
            .as_ref()
            .and_then(|s| s.fragment_selector_type.as_deref()),
    )?;
    let range = selector.and_then(|s| s.timestamp_range);
    let start_ms = range
        .as_ref()
        .and_then(|r| r.start_timestamp)
        .map(|t| ms(t, "StartTimestamp"))
        .transpose()?;
    let end_ms = range
        .as_ref()
        .and_then(|r| r.end_timestamp)
        .map(|t| ms(t, "EndTimestamp"))
        .transpose()?;
    match mode {
        Mode::Live if start_ms.is_some() || end_ms.is_some() => {
            return Err(ApiError::invalid_argument(
                "TimestampRange must not be set when PlaybackMode is LIVE",
            ));
        }
        Mode::LiveReplay if start_ms.is_none() => {
            return Err(ApiError::invalid_argument(
                "StartTimestamp is required when PlaybackMode is LIVE_REPLAY",
            ));
        }
        Mode::OnDemand => {
            let (Some(a), Some(b)) = (start_ms, end_ms) else {
                return Err(ApiError::invalid_argument(
                    "StartTimestamp and EndTimestamp are required when PlaybackMode is ON_DEMAND",
                ));
            };
            if b <= a || b - a > MAX_RANGE_MS {
                return Err(ApiError::invalid_argument(
                    "EndTimestamp must be after StartTimestamp and at most 24 hours later",
                ));
            }
        }
        _ => {}
    }
    if let (Some(a), Some(b)) = (start_ms, end_ms)
        && b <= a
    {
        return Err(ApiError::invalid_argument(
            "EndTimestamp must be after StartTimestamp",
        ));
    }
    let discontinuity = match i.discontinuity_mode.as_deref() {
        None if server_time => DiscontinuityMode::Always,
        None => DiscontinuityMode::Never,
        Some("ALWAYS") => DiscontinuityMode::Always,
        Some("NEVER") => DiscontinuityMode::Never,
        Some("ON_DISCONTINUITY") => DiscontinuityMode::OnDiscontinuity,
        Some(_) => {
            return Err(ApiError::invalid_argument(
                "DiscontinuityMode must be ALWAYS, NEVER or ON_DISCONTINUITY",
            ));
        }
    };
    let show_timestamps = match i.display_fragment_timestamp.as_deref() {
        None | Some("NEVER") => false,
        Some("ALWAYS") => true,
        Some(_) => {
            return Err(ApiError::invalid_argument(
                "DisplayFragmentTimestamp must be ALWAYS or NEVER",
            ));
        }
    };
    if let Some(d) = i.display_fragment_number.as_deref()
        && !matches!(d, "ALWAYS" | "NEVER")
    {
        return Err(ApiError::invalid_argument(
            "DisplayFragmentNumber must be ALWAYS or NEVER",
        ));
    }
    let expires = i.expires.unwrap_or(300);
    if !(300..=43_200).contains(&expires) {
        return Err(ApiError::invalid_argument(
            "Expires must be between 300 and 43200 seconds",
        ));
    }
    let max = if dash {
        i.max_manifest_fragment_results
    } else {
        i.max_media_playlist_fragment_results
    };
    let max_results = match max {
        None if mode == Mode::OnDemand => 1000,
        None => 5,
        Some(n) if (1..=5000).contains(&n) => n as usize,
        Some(_) => {
            return Err(ApiError::invalid_argument(
                "the maximum fragment results must be between 1 and 5000",
            ));
        }
    };
    let (fragments, retention) = persisted(shared, &name)?;
    if retention == 0 {
        return Err(no_retention(&name));
    }
    let now = shared.now_ms();
    let mut session = Session {
        protocol,
        stream: name.clone(),
        mode,
        server_time,
        start_ms,
        end_ms,
        max_results,
        expires_ms: now + expires as u64 * 1000,
        origin_ms: 0,
        init_fragment: String::new(),
        discontinuity,
        show_timestamps,
        created_ms: now,
    };
    let (window, _, _) = select(&session, &fragments, now);
    let first = window.first().ok_or_else(|| match mode {
        Mode::Live => ApiError::not_found(format!(
            "stream {name} has no fragment within the last 30 seconds"
        )),
        _ => ApiError::not_found(format!(
            "stream {name} has no fragment in the requested time range"
        )),
    })?;
    check_codecs(first)?;
    session.origin_ms = first.producer_timestamp_ms;
    session.init_fragment = first.fragment_number.clone();
    let token = format!(
        "{}{}",
        uuid::Uuid::new_v4().simple(),
        uuid::Uuid::new_v4().simple()
    );
    {
        let mut sessions = router.playback.sessions.lock().expect("sessions lock");
        if sessions.len() >= MAX_SESSIONS {
            sessions.retain(|_, s| s.expires_ms > now);
        }
        if sessions.len() >= MAX_SESSIONS {
            return Err(ApiError::new(
                400,
                "ClientLimitExceededException",
                format!("more than {MAX_SESSIONS} playback sessions are open"),
            ));
        }
        sessions.insert(token.clone(), session);
    }
    let path = if dash {
        "dash/v1/getDASHManifest.mpd"
    } else {
        "hls/v1/getHLSMasterPlaylist.m3u8"
    };
    Ok(format!("{}/{path}?SessionToken={token}", shared.url))
}

/// The session's current fragments, the index of the first in the stream's persisted list,
/// and whether the list is complete.
fn select<'a>(
    s: &Session,
    fragments: &'a [StoredFragment],
    now: u64,
) -> (Vec<&'a StoredFragment>, u64, bool) {
    let t = |f: &StoredFragment| at(f, s.server_time);
    match s.mode {
        Mode::Live => {
            let recent = fragments
                .last()
                .is_some_and(|f| now.saturating_sub(f.server_timestamp_ms) <= LIVE_RECENT_MS)
                // Only creation needs a recent fragment (the service's 30 s rule); a session already
                // handed out (its init fragment is set) keeps serving its window after the producer stops.
                || !s.init_fragment.is_empty();
            if !recent {
                return (Vec::new(), 0, false);
            }
            let from = fragments.len().saturating_sub(s.max_results);
            (fragments[from..].iter().collect(), from as u64, false)
        }
        Mode::LiveReplay | Mode::OnDemand => {
            let a = s.start_ms.unwrap_or(0);
            let b = s.end_ms.unwrap_or(u64::MAX);
            let from = fragments
                .iter()
                .position(|f| t(f) >= a)
                .unwrap_or(fragments.len());
            let picked: Vec<&StoredFragment> = fragments[from..]
                .iter()
                .take_while(|f| t(f) <= b)
                .take(s.max_results)
                .collect();
            let ended = s.mode == Mode::OnDemand
                || s.end_ms.is_some_and(|e| {
                    fragments.last().is_some_and(|f| t(f) >= e) || now > e + LIVE_RECENT_MS
                });
            (picked, from as u64, ended)
        }
    }
}

fn segments(s: &Session, picked: &[&StoredFragment]) -> Vec<Segment> {
    let mut out: Vec<Segment> = Vec::with_capacity(picked.len());
    let mut prev_end: Option<u64> = None;
    for f in picked {
        let start = f.producer_timestamp_ms.saturating_sub(s.origin_ms);
        let discontinuity = match s.discontinuity {
            DiscontinuityMode::Always => !out.is_empty(),
            DiscontinuityMode::Never => false,
            // A jump of more than 100 ms either way between fragments.
            DiscontinuityMode::OnDiscontinuity => prev_end.is_some_and(|e| start.abs_diff(e) > 100),
        };
        prev_end = Some(start + f.duration_ms);
        out.push(Segment {
            fragment_number: f.fragment_number.clone(),
            start_ms: start,
            duration_ms: f.duration_ms,
            producer_timestamp_ms: f.producer_timestamp_ms,
            discontinuity,
        });
    }
    out
}

fn remux_error(e: RemuxError) -> ApiError {
    ApiError::new(
        400,
        "InvalidMediaFrameException",
        format!("the fragment could not be remuxed: {}", e.0),
    )
}

/// The fragment's fragmented-MP4 remux, split into init and media parts.
async fn fmp4(
    router: &Router,
    stream: &str,
    f: &StoredFragment,
) -> Result<(Bytes, Bytes), ApiError> {
    let out = router
        .playback
        .remuxer
        .get(
            format!("{stream}/{}/fmp4", f.fragment_number),
            f.media.clone(),
            &Output::FragmentedMp4,
        )
        .await
        .map_err(remux_error)?;
    let (i, m) = mp4::split_init(&out).map_err(|e| {
        ApiError::new(
            400,
            "InvalidMediaFrameException",
            format!("remuxed fragment: {e}"),
        )
    })?;
    Ok((out.slice(i), out.slice(m)))
}

/// One media segment on the session's timeline: the fragment's `moof`/`mdat`s with each
/// track's `tfdt` moved by `start_ms` (converted to that track's timescale).
async fn media_segment(
    router: &Router,
    stream: &str,
    f: &StoredFragment,
    origin_ms: u64,
) -> Result<Bytes, ApiError> {
    let (init, media) = fmp4(router, stream, f).await?;
    let scales = mp4::track_timescales(&init).map_err(|e| {
        ApiError::new(
            400,
            "InvalidMediaFrameException",
            format!("remuxed fragment: {e}"),
        )
    })?;
    let start = f.producer_timestamp_ms.saturating_sub(origin_ms);
    let mut seg = media.to_vec();
    mp4::shift_tfdt(&mut seg, |track| {
        scales
            .iter()
            .find(|(id, _)| *id == track)
            .map(|(_, ts)| start * u64::from(*ts) / 1000)
    })
    .map_err(|e| {
        ApiError::new(
            400,
            "InvalidMediaFrameException",
            format!("remuxed fragment: {e}"),
        )
    })?;
    Ok(Bytes::from(seg))
}

fn media_type_response(content_type: &'static str, body: Bytes) -> Response<RespBody> {
    let mut resp = Response::new(full(body));
    let h = resp.headers_mut();
    h.insert("content-type", HeaderValue::from_static(content_type));
    // The console's player and hls.js fetch from pages served by the same origin; other
    // origins (a player page opened from disk) need CORS, as the service allows.
    h.insert("access-control-allow-origin", HeaderValue::from_static("*"));
    if let Ok(v) = HeaderValue::from_str(&request_id()) {
        h.insert("x-amzn-requestid", v);
    }
    resp
}

fn query_param(query: &str, key: &str) -> Option<String> {
    url::form_urlencoded::parse(query.as_bytes())
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.into_owned())
}

/// `GET /hls/v1/...` and `/dash/v1/...`: the session URLs.
pub(crate) async fn handle_session(router: &Router, req: Request<Incoming>) -> Response<RespBody> {
    match session_route(router, &req).await {
        Ok(r) => r,
        Err(e) => {
            let mut r = error_response(&e);
            r.headers_mut()
                .insert("access-control-allow-origin", HeaderValue::from_static("*"));
            r
        }
    }
}

async fn session_route(
    router: &Router,
    req: &Request<Incoming>,
) -> Result<Response<RespBody>, ApiError> {
    if req.method() != http::Method::GET && req.method() != http::Method::HEAD {
        return Err(ApiError::new(
            405,
            "MethodNotAllowedException",
            "session URLs take GET",
        ));
    }
    let query = req.uri().query().unwrap_or("");
    let token = query_param(query, "SessionToken")
        .ok_or_else(|| ApiError::invalid_argument("SessionToken is required"))?;
    let now = router.shared.now_ms();
    let session = router
        .playback
        .sessions
        .lock()
        .expect("sessions lock")
        .get(&token)
        .cloned()
        .ok_or_else(|| {
            ApiError::new(
                401,
                "NotAuthorizedException",
                "the session token is not valid",
            )
        })?;
    if now >= session.expires_ms {
        return Err(ApiError::new(
            401,
            "NotAuthorizedException",
            format!(
                "the session token has expired (it was valid for {} s)",
                (session.expires_ms - session.created_ms) / 1000
            ),
        ));
    }
    let (fragments, retention) = persisted(&router.shared, &session.stream)?;
    if retention == 0 {
        return Err(no_retention(&session.stream));
    }
    let path = req.uri().path();
    let name = path.rsplit('/').next().unwrap_or("");
    let prefix_ok = match session.protocol {
        Protocol::Hls(_) => path.starts_with("/hls/v1/"),
        Protocol::Dash => path.starts_with("/dash/v1/"),
    };
    if !prefix_ok {
        return Err(ApiError::invalid_argument(
            "this session token belongs to another protocol",
        ));
    }
    let fragment_by_number = || -> Result<&StoredFragment, ApiError> {
        let n = query_param(query, "FragmentNumber")
            .ok_or_else(|| ApiError::invalid_argument("FragmentNumber is required"))?;
        fragments
            .iter()
            .find(|f| f.fragment_number == n)
            .ok_or_else(|| ApiError::not_found(format!("fragment {n} is not in the stream")))
    };
    let init_fragment = || -> Result<&StoredFragment, ApiError> {
        fragments
            .iter()
            .find(|f| f.fragment_number == session.init_fragment)
            .ok_or_else(|| ApiError::not_found("the session's first fragment is gone"))
    };
    let token = token.as_str();
    match (session.protocol, name) {
        (Protocol::Hls(_), "getHLSMasterPlaylist.m3u8") => {
            let (init, _) = fmp4(router, &session.stream, init_fragment()?).await?;
            let f = init_fragment()?;
            let bandwidth = (f.size as u64 * 8 * 1000) / f.duration_ms.max(1);
            let text = playlist::hls_master(
                token,
                &playlist::codecs_of_init(&init),
                bandwidth.max(1),
                None,
            );
            Ok(media_type_response(
                "application/vnd.apple.mpegurl",
                Bytes::from(text),
            ))
        }
        (Protocol::Hls(container), "getHLSMediaPlaylist.m3u8") => {
            if let Some(t) = query_param(query, "TrackNumber")
                && t != "1"
            {
                return Err(ApiError::invalid_argument("TrackNumber must be 1"));
            }
            let (picked, seq, ended) = select(&session, &fragments, now);
            let p = MediaPlaylist {
                token,
                container,
                media_sequence: seq,
                ended,
                vod: session.mode == Mode::OnDemand,
                program_date_time: session.show_timestamps,
            };
            let text = playlist::hls_media(&p, &segments(&session, &picked));
            Ok(media_type_response(
                "application/vnd.apple.mpegurl",
                Bytes::from(text),
            ))
        }
        (Protocol::Hls(Container::FragmentedMp4) | Protocol::Dash, "getMP4InitFragment.mp4") => {
            let (init, _) = fmp4(router, &session.stream, init_fragment()?).await?;
            Ok(media_type_response("video/mp4", init))
        }
        (Protocol::Hls(Container::FragmentedMp4) | Protocol::Dash, "getMP4MediaFragment.mp4") => {
            let f = fragment_by_number()?;
            let seg = media_segment(router, &session.stream, f, session.origin_ms).await?;
            Ok(media_type_response("video/mp4", seg))
        }
        (Protocol::Hls(Container::MpegTs), "getTSFragment.ts") => {
            let f = fragment_by_number()?;
            let offset_ms = f.producer_timestamp_ms.saturating_sub(session.origin_ms);
            let ts = router
                .playback
                .remuxer
                .get(
                    format!("{}/{}/ts/{offset_ms}", session.stream, f.fragment_number),
                    f.media.clone(),
                    &Output::MpegTs { offset_ms },
                )
                .await
                .map_err(remux_error)?;
            Ok(media_type_response("video/mp2t", ts))
        }
        (Protocol::Dash, "getDASHManifest.mpd") => {
            let (init, _) = fmp4(router, &session.stream, init_fragment()?).await?;
            let (picked, _, ended) = select(&session, &fragments, now);
            let f = init_fragment()?;
            let bandwidth = (f.size as u64 * 8 * 1000) / f.duration_ms.max(1);
            let codecs = playlist::codecs_of_init(&init);
            let manifest = playlist::Manifest {
                token,
                codecs: &codecs,
                bandwidth: bandwidth.max(1),
                resolution: None,
                ended,
                availability_start_ms: session.origin_ms,
                now_ms: now,
            };
            let text = playlist::dash_mpd(&manifest, &segments(&session, &picked));
            Ok(media_type_response(
                "application/dash+xml",
                Bytes::from(text),
            ))
        }
        _ => Err(ApiError::new(
            404,
            "ResourceNotFoundException",
            format!("no such session resource: {name}"),
        )),
    }
}

// ---- GetClip ----

async fn get_clip(router: &Router, body: &[u8]) -> Result<Response<RespBody>, ApiError> {
    let shared = &router.shared;
    let i: ClipInput = parse(body)?;
    let name = stream_name(shared, i.stream_name, i.stream_arn)?;
    let sel = i
        .clip_fragment_selector
        .ok_or_else(|| ApiError::invalid_argument("ClipFragmentSelector is required"))?;
    let server = match sel.fragment_selector_type.as_deref() {
        Some(t) => selector_type(Some(t))?,
        None => {
            return Err(ApiError::invalid_argument(
                "FragmentSelectorType is required",
            ));
        }
    };
    let range = sel
        .timestamp_range
        .ok_or_else(|| ApiError::invalid_argument("TimestampRange is required"))?;
    let (Some(a), Some(b)) = (range.start_timestamp, range.end_timestamp) else {
        return Err(ApiError::invalid_argument(
            "StartTimestamp and EndTimestamp are required",
        ));
    };
    let (a, b) = (ms(a, "StartTimestamp")?, ms(b, "EndTimestamp")?);
    if b <= a || b - a > MAX_RANGE_MS {
        return Err(ApiError::invalid_argument(
            "EndTimestamp must be after StartTimestamp and at most 24 hours later",
        ));
    }
    let (fragments, retention) = persisted(shared, &name)?;
    if retention == 0 {
        return Err(no_retention(&name));
    }
    let picked: Vec<&StoredFragment> = fragments
        .iter()
        .filter(|f| (a..=b).contains(&at(f, server)))
        .collect();
    let first = picked.first().ok_or_else(|| {
        ApiError::not_found(format!(
            "stream {name} has no fragment in the requested time range"
        ))
    })?;
    check_codecs(first)?;
    let (init, _) = fmp4(router, &name, first).await?;
    let mut out = init.to_vec();
    for f in &picked {
        out.extend_from_slice(&media_segment(router, &name, f, first.producer_timestamp_ms).await?);
    }
    Ok(media_type_response("video/mp4", Bytes::from(out)))
}

// ---- GetImages ----

/// One sampled image, as GetImages returns it.
#[derive(Debug, Clone)]
pub(crate) struct Image {
    pub(crate) timestamp_ms: u64,
    pub(crate) content: Result<Bytes, &'static str>,
}

/// How GetImages renders.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ImageFormat {
    pub(crate) png: bool,
    pub(crate) jpeg_quality: u8,
    pub(crate) width: Option<u32>,
    pub(crate) height: Option<u32>,
}

/// The image at `t` (ms, producer or server time): the frame of the fragment covering `t`.
pub(crate) async fn image_at(
    router: &Router,
    stream: &str,
    fragments: &[StoredFragment],
    server: bool,
    t: u64,
    fmt: ImageFormat,
) -> Image {
    let covering = fragments
        .iter()
        .rev()
        .find(|f| at(f, server) <= t && t < at(f, server) + f.duration_ms.max(1));
    let Some(f) = covering else {
        return Image {
            timestamp_ms: t,
            content: Err("NO_MEDIA"),
        };
    };
    let at_ms = t - at(f, server);
    let output = Output::Image {
        at_ms,
        png: fmt.png,
        jpeg_quality: fmt.jpeg_quality,
        width: fmt.width,
        height: fmt.height,
    };
    let key = format!("{stream}/{}/img/{output:?}", f.fragment_number);
    let content = match router
        .playback
        .remuxer
        .get(key, f.media.clone(), &output)
        .await
    {
        Ok(b) => Ok(b),
        Err(e) => {
            tracing::warn!(stream, fragment = %f.fragment_number, error = %e.0, "GetImages: no image");
            Err("MEDIA_ERROR")
        }
    };
    Image {
        timestamp_ms: t,
        content,
    }
}

async fn get_images(router: &Router, body: &[u8]) -> Result<Response<RespBody>, ApiError> {
    let shared = &router.shared;
    let i: ImagesInput = parse(body)?;
    let name = stream_name(shared, i.stream_name, i.stream_arn)?;
    let server = match i.image_selector_type.as_deref() {
        Some(t) => selector_type(Some(t))?,
        None => return Err(ApiError::invalid_argument("ImageSelectorType is required")),
    };
    let (Some(a), Some(b)) = (i.start_timestamp, i.end_timestamp) else {
        return Err(ApiError::invalid_argument(
            "StartTimestamp and EndTimestamp are required",
        ));
    };
    let (a, b) = (ms(a, "StartTimestamp")?, ms(b, "EndTimestamp")?);
    if b < a || b - a > MAX_IMAGES_RANGE_MS {
        return Err(ApiError::invalid_argument(
            "EndTimestamp must not be before StartTimestamp nor more than 300 seconds after it",
        ));
    }
    let png = match i.format.as_deref() {
        Some("JPEG") => false,
        Some("PNG") => true,
        _ => return Err(ApiError::invalid_argument("Format must be JPEG or PNG")),
    };
    let interval = i.sampling_interval.unwrap_or(3000);
    if interval < 200 {
        return Err(ApiError::invalid_argument(
            "SamplingInterval must be at least 200 ms",
        ));
    }
    let mut jpeg_quality = 80u8;
    for (k, v) in i.format_config.unwrap_or_default() {
        match (k.as_str(), v.parse::<u8>()) {
            ("JPEGQuality", Ok(q)) if (1..=100).contains(&q) => jpeg_quality = q,
            ("JPEGQuality", _) => {
                return Err(ApiError::invalid_argument("JPEGQuality must be 1-100"));
            }
            _ => {
                return Err(ApiError::invalid_argument(format!(
                    "FormatConfig key {:?} is not valid (only JPEGQuality)",
                    k.chars().take(64).collect::<String>()
                )));
            }
        }
    }
    let dim = |v: Option<i64>, max: i64, what: &str| -> Result<Option<u32>, ApiError> {
        match v {
            None => Ok(None),
            Some(n) if (1..=max).contains(&n) => Ok(Some(n as u32)),
            Some(_) => Err(ApiError::invalid_argument(format!(
                "{what} must be 1-{max}"
            ))),
        }
    };
    let width = dim(i.width_pixels, 3840, "WidthPixels")?;
    let height = dim(i.height_pixels, 2160, "HeightPixels")?;
    let page = match i.max_results {
        None => IMAGES_PAGE,
        Some(n) if (1..=100).contains(&n) => (n as usize).min(IMAGES_PAGE),
        Some(_) => return Err(ApiError::invalid_argument("MaxResults must be 1-100")),
    };
    let skip: usize = match &i.next_token {
        None => 0,
        Some(t) => t
            .strip_prefix("img-")
            .and_then(|n| n.parse().ok())
            .ok_or_else(|| ApiError::invalid_argument("NextToken is not valid"))?,
    };
    let (fragments, retention) = persisted(shared, &name)?;
    if retention == 0 {
        return Err(no_retention(&name));
    }
    let total = ((b - a) / interval as u64 + 1) as usize;
    let fmt = ImageFormat {
        png,
        jpeg_quality,
        width,
        height,
    };
    let mut images = Vec::new();
    let end = (skip + page).min(total);
    for k in skip..end {
        let t = a + k as u64 * interval as u64;
        let img = image_at(router, &name, &fragments, server, t, fmt).await;
        let mut v = json!({ "TimeStamp": img.timestamp_ms as f64 / 1000.0 });
        match img.content {
            Ok(bytes) => {
                v["ImageContent"] = json!(base64::engine::general_purpose::STANDARD.encode(bytes));
            }
            Err(code) => v["Error"] = json!(code),
        }
        images.push(v);
    }
    let mut out = json!({ "Images": images });
    if end < total {
        out["NextToken"] = json!(format!("img-{end}"));
    }
    Ok(json_response(&out))
}

/// Creates an HLS fMP4 session for the console (no SigV4: the console is a local page).
pub(crate) fn console_session(
    router: &Router,
    stream: &str,
    on_demand: bool,
) -> Result<String, ApiError> {
    let shared = &router.shared;
    let body = if on_demand {
        let (f, _) = persisted(shared, stream)?;
        let (Some(a), Some(b)) = (f.first(), f.last()) else {
            return Err(ApiError::not_found(format!(
                "stream {stream} has no fragment"
            )));
        };
        json!({
            "StreamName": stream,
            "PlaybackMode": "ON_DEMAND",
            "HLSFragmentSelector": {
                "FragmentSelectorType": "PRODUCER_TIMESTAMP",
                "TimestampRange": {
                    "StartTimestamp": a.producer_timestamp_ms as f64 / 1000.0,
                    "EndTimestamp": (b.producer_timestamp_ms + 1) as f64 / 1000.0,
                }
            },
            "Expires": 43200,
            "MaxMediaPlaylistFragmentResults": 5000,
        })
    } else {
        json!({
            "StreamName": stream,
            "PlaybackMode": "LIVE",
            "DiscontinuityMode": "NEVER",
            "Expires": 43200,
        })
    };
    create_session(router, body.to_string().as_bytes(), false)
}
