//! PutMedia: a full-duplex session that reads the MKV body through the independent validator
//! in [`crate::media`] while it writes acks.
//!
//! docs/protocol.md §1.7: "The service answers `200` with response headers **before** it has read
//! media [...] and acknowledgements flow back while the body is still being sent." docs/protocol.md §2:
//! one ack per HTTP chunk, JSON plus `\n`; BUFFERING when a fragment starts, RECEIVED when it
//! ends, PERSISTED once stored when retention is above zero, IDLE while no media arrives; "After
//! any ERROR ack the service ends the connection."

use std::collections::VecDeque;
use std::sync::Arc;

use bytes::Bytes;
use http::{HeaderValue, Request, Response};
use http_body_util::{BodyExt, StreamBody};
use hyper::body::{Frame, Incoming};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio::time::{Instant, sleep_until};

use super::faults::{ConnectionFaults, Refusal};
use super::state::{
    AckEventType, Config, ConnectionEnd, ConnectionRecord, MediaRetention, SentAck, Shared,
    StoredFragment,
};
use super::{BoxError, CloseConnection, RespBody, Router, error_response, request_id};
use crate::api::{self, ApiError, TimecodeKind};
use crate::media::{Ingest, IngestConfig, IngestEvent, TimecodeType, fragment_to_mkv};
use crate::sigv4::{self, RequestParts, UriEncoding};

pub use crate::media::error_code;

pub(crate) async fn handle(router: &Router, req: Request<Incoming>) -> Response<RespBody> {
    match open(router, req).await {
        Ok(r) => r,
        Err(e) => error_response(&e),
    }
}

async fn open(router: &Router, req: Request<Incoming>) -> Result<Response<RespBody>, ApiError> {
    let shared = router.shared.clone();
    let (mut parts, body) = req.into_parts();
    let close = parts.extensions.remove::<CloseConnection>();
    if parts.method != http::Method::POST {
        return Err(ApiError::new(
            405,
            "MethodNotAllowedException",
            "PutMedia is a POST request",
        ));
    }
    let headers = super::header_pairs(&parts.headers);
    // docs/protocol.md §1.4: sha256(""), UNSIGNED-PAYLOAD or STREAMING-AWS4-HMAC-SHA256-PAYLOAD; the
    // body is never hashed. Without the header, the client signed one of the first two.
    let hashes: Vec<&str> = match sigv4::header(&headers, "x-amz-content-sha256") {
        Some(
            h @ (sigv4::EMPTY_PAYLOAD_SHA256 | sigv4::UNSIGNED_PAYLOAD | sigv4::STREAMING_PAYLOAD),
        ) => vec![h],
        Some(_) => {
            return Err(ApiError::invalid_argument(
                "x-amz-content-sha256 must be the empty-string hash, UNSIGNED-PAYLOAD or STREAMING-AWS4-HMAC-SHA256-PAYLOAD for PutMedia",
            ));
        }
        None => vec![sigv4::EMPTY_PAYLOAD_SHA256, sigv4::UNSIGNED_PAYLOAD],
    };
    let rp = RequestParts {
        method: parts.method.as_str(),
        path: parts.uri.path(),
        query: parts.uri.query().unwrap_or(""),
        headers: &headers,
        uri_encoding: UriEncoding::Double,
    };
    shared.authenticate(&rp, "kinesisvideo", &hashes)?;
    let h = api::parse_put_media_headers(&headers)?;
    let name = super::kvs::resolve(&shared, &h.stream)?;
    if let Some(refusal) = shared.faults.take_refusal(&name) {
        return Err(match refusal {
            Refusal::InternalError => {
                ApiError::new(500, "InternalFailure", "injected fault: internal error")
            }
            Refusal::ServiceUnavailable => ApiError::new(
                503,
                "ServiceUnavailable",
                "injected fault: service unavailable",
            ),
            _ => ApiError::new(
                400,
                "ClientLimitExceededException",
                "injected fault: request throttled",
            ),
        });
    }
    let conn_id = shared.next_id();
    let now_ms = shared.now_ms();
    let (superseded_tx, superseded) = watch::channel(None);
    let (ordinal, retention_hours) = {
        let mut streams = shared.streams.lock().expect("streams lock");
        let s = streams
            .get_mut(&name)
            .ok_or_else(|| ApiError::not_found(format!("stream {name} not found")))?;
        // docs/protocol.md §3: "PutMedia: 5 requests/s per stream".
        let limit = shared.cfg.put_media_requests_per_second as usize;
        if limit > 0 {
            let now = Instant::now();
            while s
                .recent_puts
                .front()
                .is_some_and(|t| now.duration_since(*t) >= std::time::Duration::from_secs(1))
            {
                s.recent_puts.pop_front();
            }
            if s.recent_puts.len() >= limit {
                return Err(ApiError::new(
                    400,
                    "ClientLimitExceededException",
                    format!(
                        "more than {limit} PutMedia requests within one second on stream {name}"
                    ),
                ));
            }
            s.recent_puts.push_back(now);
        }
        // Docs/protocol.md §3: one connection per stream, "a brief overlap during rotation is
        // tolerated". The official producer opens the next request while the old body is
        // still sending, so a newer request takes the slot and the old one may go on for
        // `rotation_overlap`; a third while that overlap lasts is refused.
        if let Some(active) = s.active_connection {
            let window = shared.cfg.rotation_overlap;
            if window.is_zero() {
                return Err(ApiError::new(
                    400,
                    "ConnectionLimitExceededException",
                    format!("stream {name} already has an open PutMedia connection ({active})"),
                ));
            }
            if let Some(old) = s.rotation.overlapping {
                return Err(ApiError::new(
                    400,
                    "ConnectionLimitExceededException",
                    format!(
                        "stream {name} already has an open PutMedia connection ({active}) and another ({old}) in its rotation overlap"
                    ),
                ));
            }
            if let Some(tx) = s.rotation.notify_active.take() {
                let _ = tx.send(Some(Instant::now() + window));
            }
            s.rotation.overlapping = Some(active);
            tracing::debug!(stream = %name, superseded = active, by = conn_id, ?window, "PutMedia rotation overlap");
        }
        s.active_connection = Some(conn_id);
        s.rotation.notify_active = Some(superseded_tx);
        let ordinal = s.connections.len() as u32 + 1;
        s.connections.push(ConnectionRecord {
            id: conn_id,
            ordinal,
            stream: name.clone(),
            headers: headers
                .iter()
                .filter(|(k, _)| {
                    !k.eq_ignore_ascii_case("authorization")
                        && !k.eq_ignore_ascii_case("x-amz-security-token")
                })
                .cloned()
                .collect(),
            started_ms: now_ms,
            ended_ms: None,
            bytes_received: 0,
            fragments: 0,
            end: None,
        });
        (ordinal, s.meta.retention_hours)
    };
    let faults = shared.faults.for_connection(&name, ordinal);
    tracing::debug!(stream = %name, conn_id, ordinal, "PutMedia connection opened");

    let (body_tx, body_rx) = mpsc::channel::<Result<Frame<Bytes>, BoxError>>(16);
    let (ack_tx, ack_rx) = mpsc::channel::<Out>(256);
    let writer = tokio::spawn(writer(shared.clone(), name.clone(), ack_rx, body_tx));
    let cfg = IngestConfig {
        timecode_type: match h.timecode_type {
            TimecodeKind::Absolute => TimecodeType::Absolute,
            TimecodeKind::Relative => TimecodeType::Relative,
        },
        producer_start_ms: h.producer_start_ms,
        ..IngestConfig::default()
    };
    // `Expect: 100-continue` (curl sends it on every chunked POST): hyper answers `100 Continue`
    // when the body is first polled, but only while no response head was written. The 200 of
    // PutMedia comes before any media (docs/protocol.md §1.7), so poll the body once and yield
    // to the connection task, which then writes the 100 before this 200; without that, curl
    // waits a second for a 100 that never comes.
    let mut body = body;
    let mut first_frame = None;
    if expects_continue(&parts.headers) {
        first_frame = futures::future::poll_fn(|cx| {
            std::task::Poll::Ready(
                match http_body::Body::poll_frame(std::pin::Pin::new(&mut body), cx) {
                    std::task::Poll::Ready(frame) => Some(frame),
                    std::task::Poll::Pending => None,
                },
            )
        })
        .await;
        tokio::task::yield_now().await;
    }
    let session = Session {
        shared: shared.clone(),
        stream: name,
        conn_id,
        faults,
        ingest: Ingest::new(cfg),
        persist: retention_hours > 0,
        acks: ack_tx,
        writer: Some(writer),
        close,
        header: None,
        current: None,
        fragments_done: 0,
        bytes: 0,
        pending: VecDeque::new(),
        stall_until: None,
        superseded,
        first_frame,
    };
    tokio::spawn(session.run(body, router.shutdown.clone()));

    let stream =
        futures::stream::unfold(
            body_rx,
            |mut rx| async move { rx.recv().await.map(|f| (f, rx)) },
        );
    let mut resp = Response::new(StreamBody::new(stream).boxed());
    resp.headers_mut()
        .insert("content-type", HeaderValue::from_static("application/json"));
    if let Ok(v) = HeaderValue::from_str(&request_id()) {
        resp.headers_mut().insert("x-amzn-requestid", v);
    }
    Ok(resp)
}

fn expects_continue(headers: &http::HeaderMap) -> bool {
    headers
        .get(http::header::EXPECT)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"100-continue"))
}

type BodyFrame = Option<Result<Frame<Bytes>, hyper::Error>>;

/// The next body frame: first the one polled while answering `Expect: 100-continue`, if any.
/// Completes in its first poll when that frame is there, so `select!` never loses it.
async fn next_frame(first: &mut Option<BodyFrame>, body: &mut Incoming) -> BodyFrame {
    match first.take() {
        Some(frame) => frame,
        None => body.frame().await,
    }
}

/// What the session hands the ack writer.
enum Out {
    Ack {
        ack: SentAck,
        not_before: Instant,
    },
    /// Abort the response without a terminating chunk (injected connection drop).
    Abort,
}

/// Writes acks in order, each not before its time, recording each as it goes out.
async fn writer(
    shared: Arc<Shared>,
    stream: String,
    mut rx: mpsc::Receiver<Out>,
    body: mpsc::Sender<Result<Frame<Bytes>, BoxError>>,
) {
    while let Some(out) = rx.recv().await {
        match out {
            Out::Ack {
                mut ack,
                not_before,
            } => {
                sleep_until(not_before).await;
                ack.at_ms = shared.now_ms();
                let line = if shared.cfg.media_retention == MediaRetention::Full {
                    let line = Bytes::from(ack.line.clone());
                    shared.with_stream(&stream, |s| s.acks.push(ack));
                    line
                } else {
                    // No ack log: no copy, and no global lock per ack.
                    Bytes::from(ack.line)
                };
                if body.send(Ok(Frame::data(line))).await.is_err() {
                    return;
                }
            }
            Out::Abort => {
                // Let hyper flush the acks already handed over, so the client sees every ack
                // written before the drop (hyper discards buffered output when a body fails).
                let t0 = Instant::now();
                while body.capacity() < body.max_capacity()
                    && t0.elapsed() < std::time::Duration::from_secs(1)
                {
                    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
                }
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                let _ = body
                    .send(Err("injected fault: connection dropped".into()))
                    .await;
                return;
            }
        }
    }
}

/// Reads and discards the rest of the request body after an ERROR ack, until the body ends, or
/// `error_drain_limit` bytes, or `error_drain_timeout` after the response ended.
///
/// docs/protocol.md §2: "After any ERROR ack the service ends the connection", cleanly: the ERROR ack,
/// then the terminating zero-length chunk. Closing the socket while the producer's bytes sit
/// unread makes the kernel answer with a TCP RST, which discards whatever of the response is
/// still unsent or unread, so the producer would see a reset instead of the ERROR.
async fn drain_after_error(
    body: &mut Incoming,
    mut writer: JoinHandle<()>,
    cfg: &Config,
    held: std::time::Duration,
    shutdown: &mut watch::Receiver<bool>,
) {
    // A producer that does not read its acks can block the writer; after this long, stop
    // waiting for the response to end (the same bound `Session::send` puts on one ack).
    let mut deadline = Instant::now() + held + cfg.idle_timeout;
    let mut writing = true;
    let mut drained = 0u64;
    loop {
        tokio::select! {
            biased;
            _ = shutdown.changed() => break,
            _ = &mut writer, if writing => {
                writing = false;
                deadline = Instant::now() + cfg.error_drain_timeout;
            }
            _ = sleep_until(deadline) => break,
            frame = body.frame() => match frame {
                Some(Ok(f)) => {
                    drained += f.data_ref().map_or(0, |d| d.len() as u64);
                    if drained > cfg.error_drain_limit {
                        break;
                    }
                }
                None | Some(Err(_)) => break,
            },
        }
    }
    tracing::debug!(drained, "PutMedia body drained after an ERROR ack");
}

struct Session {
    shared: Arc<Shared>,
    stream: String,
    conn_id: u64,
    faults: ConnectionFaults,
    ingest: Ingest,
    persist: bool,
    acks: mpsc::Sender<Out>,
    /// The ack writer task: it ends (and with it the response) once `acks` is dropped and
    /// every queued ack went out.
    writer: Option<JoinHandle<()>>,
    /// Ends the HTTP connection after this exchange (none when called outside the server).
    close: Option<CloseConnection>,
    header: Option<Bytes>,
    /// Open fragment: (cluster timecode, fragment number).
    current: Option<(u64, String)>,
    fragments_done: u32,
    bytes: u64,
    /// RECEIVED fragments waiting for PERSISTED: (when, number, timecode). FIFO because the
    /// delay is constant.
    pending: VecDeque<(Instant, String, u64)>,
    stall_until: Option<Instant>,
    /// Set (to the end of the overlap window) once a newer PutMedia took the stream's slot.
    superseded: watch::Receiver<Option<Instant>>,
    /// A body frame read while answering `Expect: 100-continue`.
    first_frame: Option<BodyFrame>,
}

/// Why the session loop stopped.
type Ended = ConnectionEnd;

impl Session {
    async fn run(mut self, mut body: Incoming, mut shutdown: watch::Receiver<bool>) {
        let cfg = self.shared.cfg.clone();
        let started = Instant::now();
        let deadline = started + cfg.max_connection_duration;
        let mut last_data = started;
        let mut next_idle = started + cfg.idle_ack_interval;
        let mut body_done = false;
        let mut watching = true;
        let mut overlap_until: Option<Instant> = None;
        let mut events = Vec::new();
        let end: Ended = loop {
            let persist_at = self.pending.front().map(|p| p.0);
            tokio::select! {
                biased;
                _ = shutdown.changed() => break ConnectionEnd::Shutdown,
                _ = sleep_until(deadline) => {
                    // docs/protocol.md §3: "closed by the service after 45 minutes with 4003".
                    let _ = self.error_ack(4003, None).await;
                    break ConnectionEnd::ErrorAck { error_id: 4003 };
                }
                _ = sleep_until(persist_at.unwrap_or(deadline)), if persist_at.is_some() => {
                    if let Err(e) = self.persist_one().await { break e; }
                    if body_done && self.pending.is_empty() { break ConnectionEnd::EndOfBody; }
                }
                changed = self.superseded.changed(), if watching => match changed {
                    Ok(()) => overlap_until = *self.superseded.borrow_and_update(),
                    // The slot was released (body ended): nothing can supersede it any more.
                    Err(_) => watching = false,
                },
                _ = sleep_until(overlap_until.unwrap_or(deadline)), if overlap_until.is_some() && !body_done => {
                    // Superseded and still sending when the window ended: settle what was
                    // received (PERSISTED now rather than after the delay), then end.
                    tracing::debug!(stream = %self.stream, conn_id = self.conn_id, "rotation overlap ended");
                    if let Err(e) = self.persist_all().await { break e; }
                    break ConnectionEnd::RotationOverlapEnded;
                }
                frame = next_frame(&mut self.first_frame, &mut body), if !body_done => match frame {
                    None => {
                        body_done = true;
                        // docs/protocol.md §3: "a brief overlap during rotation is tolerated". A
                        // producer rotating ends this body and opens the next request at once,
                        // while this response still carries the last RECEIVED/PERSISTED acks:
                        // the stream's one-connection slot is free as soon as the body ended.
                        self.release_slot();
                        self.ingest.finish(self.shared.now_ms(), &mut events);
                        if let Err(e) = self.handle_events(&mut events).await { break e; }
                        if self.pending.is_empty() { break ConnectionEnd::EndOfBody; }
                    }
                    Some(Err(e)) => break ConnectionEnd::BodyError { reason: e.to_string() },
                    Some(Ok(frame)) => {
                        let Ok(mut data) = frame.into_data() else { continue };
                        last_data = Instant::now();
                        next_idle = last_data + cfg.idle_ack_interval;
                        let mut drop_now = false;
                        if let Some(limit) = self.faults.drop_after_bytes {
                            let room = limit.saturating_sub(self.bytes);
                            if data.len() as u64 >= room {
                                data.truncate(room as usize);
                                drop_now = true;
                            }
                        }
                        // The connection record gets the byte count when the connection ends
                        // (`finish`): no global lock per body chunk.
                        self.bytes += data.len() as u64;
                        self.ingest.push(&data, self.shared.now_ms(), &mut events);
                        if let Err(e) = self.handle_events(&mut events).await { break e; }
                        if drop_now {
                            let _ = self.acks.send(Out::Abort).await;
                            break ConnectionEnd::FaultDrop;
                        }
                        // docs/protocol.md §3: 12.5 MB/s per stream; read no faster than the limit.
                        let due = started + std::time::Duration::from_secs_f64(self.bytes as f64 / cfg.ingest_rate_limit as f64);
                        if due > Instant::now() {
                            sleep_until(due).await;
                        }
                    }
                },
                _ = sleep_until(next_idle), if !body_done => {
                    if last_data.elapsed() >= cfg.idle_timeout {
                        // docs/protocol.md §2: "after 30 s without data the service closes the request".
                        break ConnectionEnd::IdleTimeout;
                    }
                    next_idle += cfg.idle_ack_interval;
                    if let Err(e) = self.send(AckEventType::Idle, None, None, None).await { break e; }
                }
            }
        };
        // Only an ERROR ends the response while the producer may still be sending; the injected
        // drops (`FaultDrop`) stay abrupt on purpose, and after the other ends there is no body
        // left, no client to answer, or the emulator is shutting down.
        let ends_early = matches!(
            end,
            ConnectionEnd::ErrorAck { .. } | ConnectionEnd::RotationOverlapEnded
        );
        let drain = ends_early && !body_done;
        let writer = self.writer.take();
        if ends_early && let Some(close) = &self.close {
            // docs/protocol.md §2: "After any ERROR ack the service ends the connection", so no
            // keep-alive once the drain reaches the end of the body.
            close.close();
        }
        // The writer holds acks back for the injected delay or stall; wait that long for it.
        let held = self.faults.delay
            + self.stall_until.map_or(std::time::Duration::ZERO, |s| {
                s.saturating_duration_since(Instant::now())
            });
        // Releases the stream's connection slot before draining, so a producer that reconnects
        // as soon as it reads the ERROR is not refused; dropping the session's ack sender lets
        // the writer finish the response (the terminating chunk follows the ERROR ack).
        self.finish(end);
        if drain && let Some(writer) = writer {
            drain_after_error(&mut body, writer, &cfg, held, &mut shutdown).await;
        }
    }

    fn release_slot(&self) {
        let id = self.conn_id;
        self.shared.with_stream(&self.stream, |s| s.release(id));
    }

    async fn persist_all(&mut self) -> Result<(), Ended> {
        while !self.pending.is_empty() {
            self.persist_one().await?;
        }
        Ok(())
    }

    fn finish(self, end: ConnectionEnd) {
        let now = self.shared.now_ms();
        let (id, bytes, frags) = (self.conn_id, self.bytes, self.fragments_done);
        let pending: Vec<String> = self.pending.iter().map(|p| p.1.clone()).collect();
        tracing::debug!(stream = %self.stream, conn_id = id, ?end, "PutMedia connection ended");
        let mut to_write = Vec::new();
        self.shared.with_stream(&self.stream, |s| {
            if let Some(c) = s.connections.iter_mut().rev().find(|c| c.id == id) {
                c.ended_ms = Some(now);
                c.bytes_received = bytes;
                c.fragments = frags;
                c.end = Some(end);
            }
            s.release(id);
            // What was received is stored even if its PERSISTED ack never went out.
            for f in s
                .fragments
                .iter_mut()
                .filter(|f| pending.contains(&f.fragment_number))
            {
                f.persisted = true;
                to_write.push(f.clone());
            }
        });
        for f in &to_write {
            self.shared.persist_fragment(&self.stream, f);
        }
        self.shared.fragment_notify.notify_waiters();
    }

    async fn send(
        &mut self,
        event: AckEventType,
        timecode: Option<u64>,
        number: Option<String>,
        error_id: Option<u32>,
    ) -> Result<(), Ended> {
        let mut obj = serde_json::Map::new();
        obj.insert(
            "EventType".into(),
            serde_json::to_value(event).unwrap_or_default(),
        );
        if let Some(t) = timecode {
            obj.insert("FragmentTimecode".into(), t.into());
        }
        if let Some(n) = &number {
            obj.insert("FragmentNumber".into(), n.clone().into());
        }
        let error_code = error_id.map(error_code);
        if let (Some(id), Some(code)) = (error_id, error_code) {
            obj.insert("ErrorId".into(), id.into());
            obj.insert("ErrorCode".into(), code.into());
        }
        let mut line = serde_json::Value::Object(obj).to_string();
        line.push('\n');
        let now = Instant::now();
        let mut not_before = now + self.faults.delay;
        if let Some(s) = self.stall_until {
            not_before = not_before.max(s);
        }
        let ack = SentAck {
            connection_id: self.conn_id,
            at_ms: 0,
            event,
            fragment_timecode: timecode,
            fragment_number: number,
            error_id,
            error_code: error_code.map(str::to_owned),
            line,
        };
        // A client that stops reading acks fills both channels; give up on it after the idle
        // timeout instead of holding the stream's only connection slot forever.
        match tokio::time::timeout(
            self.shared.cfg.idle_timeout + self.faults.delay,
            self.acks.send(Out::Ack { ack, not_before }),
        )
        .await
        {
            Ok(Ok(())) => Ok(()),
            _ => Err(ConnectionEnd::ClientGone),
        }
    }

    async fn error_ack(&mut self, id: u32, timecode: Option<u64>) -> Result<(), Ended> {
        let number = self.current.as_ref().map(|c| c.1.clone());
        let timecode = timecode.or(self.current.as_ref().map(|c| c.0));
        self.send(AckEventType::Error, timecode, number, Some(id))
            .await
    }

    async fn persist_one(&mut self) -> Result<(), Ended> {
        let Some((_, number, timecode)) = self.pending.pop_front() else {
            return Ok(());
        };
        let stored = self.shared.with_stream(&self.stream, |s| {
            s.fragments
                .iter_mut()
                .rev()
                .find(|f| f.fragment_number == number)
                .map(|f| {
                    f.persisted = true;
                    f.clone()
                })
        });
        match stored {
            Some(Some(f)) => self.shared.persist_fragment(&self.stream, &f),
            _ => {
                // The stream was deleted under the connection.
                let _ = self.error_ack(4008, Some(timecode)).await;
                return Err(ConnectionEnd::ErrorAck { error_id: 4008 });
            }
        }
        self.send(AckEventType::Persisted, Some(timecode), Some(number), None)
            .await
    }

    async fn handle_events(&mut self, events: &mut Vec<IngestEvent>) -> Result<(), Ended> {
        for ev in std::mem::take(events) {
            match ev {
                IngestEvent::FragmentStarted { timecode } => {
                    let number = self.shared.next_fragment_number();
                    self.current = Some((timecode, number.clone()));
                    self.send(AckEventType::Buffering, Some(timecode), Some(number), None)
                        .await?;
                }
                IngestEvent::FragmentCompleted(cf) => {
                    let index = self.fragments_done;
                    if let Some((k, id)) = self.faults.error_ack
                        && k == index
                    {
                        let _ = self.error_ack(id, Some(cf.timecode)).await;
                        return Err(ConnectionEnd::ErrorAck { error_id: id });
                    }
                    let number = match self.current.take() {
                        Some((t, n)) if t == cf.timecode => n,
                        _ => self.shared.next_fragment_number(),
                    };
                    if self.header.is_none() {
                        self.header = self.ingest.header().map(Bytes::copy_from_slice);
                    }
                    let header = self.header.clone().unwrap_or_default();
                    let size = cf.cluster.len();
                    let (media, cluster) = match self.shared.cfg.media_retention {
                        // One copy per fragment: the playable file, with the cluster a slice of
                        // it (as the on-disk reload path does).
                        MediaRetention::Full => {
                            let media = Bytes::from(fragment_to_mkv(&header, &cf.cluster));
                            let cluster = media.slice(header.len()..);
                            (media, cluster)
                        }
                        MediaRetention::MetadataOnly => (Bytes::new(), Bytes::new()),
                    };
                    let fragment = StoredFragment {
                        fragment_number: number.clone(),
                        producer_timestamp_ms: cf.producer_timestamp_ms,
                        server_timestamp_ms: self.shared.now_ms(),
                        fragment_timecode: cf.timecode,
                        duration_ms: cf.duration_ms,
                        size,
                        persisted: false,
                        media,
                        connection_id: self.conn_id,
                        tags: cf.tags.clone(),
                        header,
                        cluster,
                    };
                    self.fragments_done += 1;
                    let (id, done) = (self.conn_id, self.fragments_done);
                    let stored = self
                        .shared
                        .with_stream(&self.stream, |s| {
                            s.fragments.push(fragment);
                            if let Some(c) = s.connections.iter_mut().rev().find(|c| c.id == id) {
                                c.fragments = done;
                            }
                        })
                        .is_some();
                    if !stored {
                        // docs/protocol.md §2: 4008 STREAM_NOT_ACTIVE (stream deleted).
                        let _ = self
                            .send(
                                AckEventType::Error,
                                Some(cf.timecode),
                                Some(number),
                                Some(4008),
                            )
                            .await;
                        return Err(ConnectionEnd::ErrorAck { error_id: 4008 });
                    }
                    self.shared.fragment_notify.notify_waiters();
                    self.send(
                        AckEventType::Received,
                        Some(cf.timecode),
                        Some(number.clone()),
                        None,
                    )
                    .await?;
                    if self.persist {
                        self.pending.push_back((
                            Instant::now() + self.shared.cfg.persist_delay,
                            number,
                            cf.timecode,
                        ));
                    }
                    if let Some((after, d)) = self.faults.stall
                        && after == done
                    {
                        self.stall_until = Some(Instant::now() + d);
                    }
                    let drop_now = self.faults.drop_after_fragments.is_some_and(|n| done >= n)
                        || self
                            .faults
                            .random_drop
                            .is_some_and(|p| self.shared.faults.chance(p));
                    if drop_now {
                        let _ = self.acks.send(Out::Abort).await;
                        return Err(ConnectionEnd::FaultDrop);
                    }
                }
                IngestEvent::EndOfFragmentTag => {}
                IngestEvent::Error {
                    error_id,
                    timecode,
                    reason,
                    ..
                } => {
                    tracing::debug!(stream = %self.stream, error_id, %reason, "PutMedia media rejected");
                    let _ = self.error_ack(error_id, timecode).await;
                    return Err(ConnectionEnd::ErrorAck { error_id });
                }
            }
        }
        Ok(())
    }
}
