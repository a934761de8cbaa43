//! The web console at `/console/`: the streams, live and on-demand playback through the HLS
//! session URLs, a timeline of fragments with GetImages thumbnails, and each stream's recent
//! acks and errors. The page and its player ship in the crate (`console/`), so it works
//! offline; its JSON comes from `/console/api/*`.
//!
//! Like `/health`, these routes are not signed: the console is a local development page (the
//! emulator binds 127.0.0.1 by default) and shows what the emulator's own accessors show.

use bytes::Bytes;
use http::{HeaderValue, Request, Response};
use hyper::body::Incoming;
use serde_json::{Value, json};

use super::playback::{self, ImageFormat};
use super::state::AckEventType;
use super::{RespBody, Router, error_response, full, json_response};
use crate::api::ApiError;

const INDEX: &str = include_str!("../../console/index.html");
const APP: &str = include_str!("../../console/app.js");
const STYLE: &str = include_str!("../../console/style.css");

/// Most acks one stream page lists (newest first).
const RECENT_ACKS: usize = 200;

fn asset(content_type: &'static str, body: &'static str) -> Response<RespBody> {
    let mut r = Response::new(full(Bytes::from_static(body.as_bytes())));
    r.headers_mut()
        .insert("content-type", HeaderValue::from_static(content_type));
    r.headers_mut()
        .insert("cache-control", HeaderValue::from_static("no-cache"));
    r
}

fn param(req: &Request<Incoming>, key: &str) -> Option<String> {
    url::form_urlencoded::parse(req.uri().query().unwrap_or("").as_bytes())
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.into_owned())
}

pub(crate) async fn handle(router: &Router, req: Request<Incoming>) -> Response<RespBody> {
    match route(router, &req).await {
        Ok(r) => r,
        Err(e) => error_response(&e),
    }
}

async fn route(router: &Router, req: &Request<Incoming>) -> Result<Response<RespBody>, ApiError> {
    if req.method() != http::Method::GET {
        return Err(ApiError::new(
            405,
            "MethodNotAllowedException",
            "the console takes GET",
        ));
    }
    let shared = &router.shared;
    match req.uri().path() {
        "/console" => {
            let mut r = Response::new(full(Bytes::new()));
            *r.status_mut() = http::StatusCode::MOVED_PERMANENTLY;
            r.headers_mut()
                .insert("location", HeaderValue::from_static("/console/"));
            Ok(r)
        }
        "/console/" | "/console/index.html" => Ok(asset("text/html; charset=utf-8", INDEX)),
        "/console/app.js" => Ok(asset("text/javascript; charset=utf-8", APP)),
        "/console/style.css" => Ok(asset("text/css; charset=utf-8", STYLE)),
        "/console/api/streams" => {
            let streams = shared.streams.lock().expect("streams lock");
            let list: Vec<Value> = streams
                .values()
                .map(|s| {
                    let persisted = s.fragments.iter().filter(|f| f.persisted).count();
                    json!({
                        "name": s.meta.name,
                        "arn": s.meta.arn,
                        "retentionHours": s.meta.retention_hours,
                        "fragments": persisted,
                        "lastServerTimestampMs": s.fragments.last().map(|f| f.server_timestamp_ms),
                        "errors": s.acks.iter().filter(|a| a.event == AckEventType::Error).count(),
                        "live": s.active_connection.is_some(),
                    })
                })
                .collect();
            Ok(json_response(&json!({ "streams": list })))
        }
        "/console/api/stream" => {
            let name =
                param(req, "name").ok_or_else(|| ApiError::invalid_argument("name is required"))?;
            let v = shared
                .with_stream(&name, |s| {
                    let fragments: Vec<Value> = s
                        .fragments
                        .iter()
                        .filter(|f| f.persisted)
                        .map(|f| {
                            json!({
                                "number": f.fragment_number,
                                "producerTimestampMs": f.producer_timestamp_ms,
                                "serverTimestampMs": f.server_timestamp_ms,
                                "durationMs": f.duration_ms,
                                "size": f.size,
                            })
                        })
                        .collect();
                    let acks: Vec<Value> = s
                        .acks
                        .iter()
                        .rev()
                        .take(RECENT_ACKS)
                        .map(|a| {
                            json!({
                                "connection": a.connection_id,
                                "atMs": a.at_ms,
                                "event": a.event,
                                "fragmentTimecode": a.fragment_timecode,
                                "fragmentNumber": a.fragment_number,
                                "errorId": a.error_id,
                                "errorCode": a.error_code,
                            })
                        })
                        .collect();
                    let connections: Vec<Value> = s
                        .connections
                        .iter()
                        .rev()
                        .take(20)
                        .map(|c| {
                            json!({
                                "id": c.id,
                                "startedMs": c.started_ms,
                                "endedMs": c.ended_ms,
                                "fragments": c.fragments,
                                "bytes": c.bytes_received,
                                "end": c.end.as_ref().map(|e| format!("{e:?}")),
                            })
                        })
                        .collect();
                    json!({
                        "name": s.meta.name,
                        "retentionHours": s.meta.retention_hours,
                        "live": s.active_connection.is_some(),
                        "fragments": fragments,
                        "acks": acks,
                        "connections": connections,
                    })
                })
                .ok_or_else(|| ApiError::not_found(format!("stream {name} not found")))?;
            Ok(json_response(&v))
        }
        "/console/api/session" => {
            let name =
                param(req, "name").ok_or_else(|| ApiError::invalid_argument("name is required"))?;
            let on_demand = match param(req, "mode").as_deref() {
                None | Some("LIVE") => false,
                Some("ON_DEMAND") => true,
                Some(_) => {
                    return Err(ApiError::invalid_argument("mode must be LIVE or ON_DEMAND"));
                }
            };
            let url = playback::console_session(router, &name, on_demand)?;
            // The page fetches relative to itself: hand out the path, not the bound address.
            let path = url.strip_prefix(&shared.url).unwrap_or(&url).to_owned();
            Ok(json_response(&json!({ "url": path })))
        }
        "/console/api/thumbnail" => {
            let name =
                param(req, "name").ok_or_else(|| ApiError::invalid_argument("name is required"))?;
            let number = param(req, "fragment")
                .ok_or_else(|| ApiError::invalid_argument("fragment is required"))?;
            let fragments: Vec<_> = shared
                .with_stream(&name, |s| {
                    s.fragments
                        .iter()
                        .filter(|f| f.persisted)
                        .cloned()
                        .collect()
                })
                .ok_or_else(|| ApiError::not_found(format!("stream {name} not found")))?;
            let f = fragments
                .iter()
                .find(|f| f.fragment_number == number)
                .ok_or_else(|| ApiError::not_found(format!("fragment {number} not found")))?;
            // GetImages' own sampler, at the fragment's first frame, 160 px wide.
            let img = playback::image_at(
                router,
                &name,
                &fragments,
                false,
                f.producer_timestamp_ms,
                ImageFormat {
                    png: false,
                    jpeg_quality: 70,
                    width: Some(160),
                    height: None,
                },
            )
            .await;
            match img.content {
                Ok(b) => {
                    let mut r = Response::new(full(b));
                    r.headers_mut()
                        .insert("content-type", HeaderValue::from_static("image/jpeg"));
                    Ok(r)
                }
                Err(code) => Err(ApiError::not_found(format!("no image: {code}"))),
            }
        }
        other => Err(ApiError::new(
            404,
            "ResourceNotFoundException",
            format!(
                "no console page {:?}",
                other.chars().take(64).collect::<String>()
            ),
        )),
    }
}
