//! The emulator's state: streams, stored fragments, acks and connections, credentials.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use super::faults::Faults;
use crate::error::Error;

/// The account id in every ARN the emulator issues.
pub const ACCOUNT_ID: &str = "123456789012";

/// A fragment PutMedia received.
#[derive(Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct StoredFragment {
    /// 47 decimal digits, increasing across the emulator (docs/protocol.md §2: never parse it).
    pub fragment_number: String,
    /// Producer timestamp, epoch ms (RELATIVE: start timestamp + cluster timecode).
    pub producer_timestamp_ms: u64,
    /// When the emulator received the fragment's end, epoch ms (emulator clock).
    pub server_timestamp_ms: u64,
    /// The Cluster timecode as sent.
    pub fragment_timecode: u64,
    /// Duration in ms.
    pub duration_ms: u64,
    /// Cluster size in bytes.
    pub size: usize,
    /// Whether PERSISTED (retention above zero and the persist delay elapsed).
    pub persisted: bool,
    /// A standalone playable MKV: the request's header followed by this cluster.
    pub media: Bytes,
    /// The PutMedia connection that delivered it.
    pub connection_id: u64,
    /// Fragment metadata tags (name, value).
    pub tags: Vec<(String, String)>,
    pub(crate) header: Bytes,
    pub(crate) cluster: Bytes,
}

impl std::fmt::Debug for StoredFragment {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoredFragment")
            .field("fragment_number", &self.fragment_number)
            .field("producer_timestamp_ms", &self.producer_timestamp_ms)
            .field("server_timestamp_ms", &self.server_timestamp_ms)
            .field("fragment_timecode", &self.fragment_timecode)
            .field("duration_ms", &self.duration_ms)
            .field("size", &self.size)
            .field("persisted", &self.persisted)
            .field("connection_id", &self.connection_id)
            .finish_non_exhaustive()
    }
}

/// Ack event types (docs/protocol.md §2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
#[non_exhaustive]
pub enum AckEventType {
    /// First byte of a fragment arrived.
    Buffering,
    /// Whole fragment arrived.
    Received,
    /// Fragment durably stored.
    Persisted,
    /// Validation or fault error; the connection closes after it.
    Error,
    /// Connection open, no media flowing.
    Idle,
}

/// One ack the emulator wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct SentAck {
    /// The PutMedia connection it was written on.
    pub connection_id: u64,
    /// When it was handed to the HTTP stack, epoch ms (emulator clock).
    pub at_ms: u64,
    /// Event type.
    pub event: AckEventType,
    /// `FragmentTimecode`.
    pub fragment_timecode: Option<u64>,
    /// `FragmentNumber`.
    pub fragment_number: Option<String>,
    /// `ErrorId` on ERROR.
    pub error_id: Option<u32>,
    /// `ErrorCode` on ERROR.
    pub error_code: Option<String>,
    /// The exact line written (JSON plus `\n`).
    pub line: String,
}

/// How a PutMedia connection ended.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ConnectionEnd {
    /// The producer ended the body; every ack was sent.
    EndOfBody,
    /// An ERROR ack was sent, then the emulator closed.
    ErrorAck {
        /// The id sent.
        error_id: u32,
    },
    /// No data for the idle timeout.
    IdleTimeout,
    /// Maximum connection duration reached (4003 sent).
    MaxDuration,
    /// The body failed (client vanished, truncated chunked encoding, ...).
    BodyError {
        /// Why.
        reason: String,
    },
    /// The client stopped reading acks and closed, or the response could not be written.
    ClientGone,
    /// A scripted fault aborted it.
    FaultDrop,
    /// A newer PutMedia on the stream superseded it (rotation) and it was still sending media
    /// when the rotation overlap window ended: the acks owed for received fragments went out
    /// (PERSISTED at once), the open fragment was dropped unacknowledged, and the response
    /// ended.
    RotationOverlapEnded,
    /// The emulator shut down.
    Shutdown,
}

/// What the emulator saw of one PutMedia connection.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ConnectionRecord {
    /// Emulator-wide id.
    pub id: u64,
    /// 1-based ordinal among this stream's connections.
    pub ordinal: u32,
    /// The stream.
    pub stream: String,
    /// Request headers, with `authorization` and `x-amz-security-token` removed.
    pub headers: Vec<(String, String)>,
    /// Start, epoch ms.
    pub started_ms: u64,
    /// End, epoch ms, once ended.
    pub ended_ms: Option<u64>,
    /// Body bytes received, recorded when the connection ends (0 while it is open).
    pub bytes_received: u64,
    /// Fragments received.
    pub fragments: u32,
    /// How it ended, once ended.
    pub end: Option<ConnectionEnd>,
}

/// A stream's metadata, as DescribeStream shows it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct StreamMeta {
    pub(crate) name: String,
    pub(crate) arn: String,
    pub(crate) device_name: Option<String>,
    pub(crate) media_type: Option<String>,
    pub(crate) kms_key_id: String,
    pub(crate) version: String,
    pub(crate) created_ms: u64,
    pub(crate) retention_hours: u32,
}

/// Fragment metadata persisted beside the media file.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct FragmentMeta {
    fragment_number: String,
    producer_timestamp_ms: u64,
    server_timestamp_ms: u64,
    fragment_timecode: u64,
    duration_ms: u64,
    header_len: usize,
    tags: Vec<(String, String)>,
}

pub(crate) struct Stream {
    pub(crate) meta: StreamMeta,
    pub(crate) fragments: Vec<StoredFragment>,
    pub(crate) acks: Vec<SentAck>,
    pub(crate) connections: Vec<ConnectionRecord>,
    pub(crate) active_connection: Option<u64>,
    /// When recent PutMedia requests arrived (for the 5 requests/s limit).
    pub(crate) recent_puts: std::collections::VecDeque<tokio::time::Instant>,
    /// The rotation overlap of the stream's one connection slot.
    pub(crate) rotation: Rotation,
}

impl Stream {
    /// Frees whichever slot connection `id` holds (active or overlapping).
    pub(crate) fn release(&mut self, id: u64) {
        if self.active_connection == Some(id) {
            self.active_connection = None;
            self.rotation.notify_active = None;
        }
        if self.rotation.overlapping == Some(id) {
            self.rotation.overlapping = None;
        }
    }
}

/// Docs/protocol.md §3: one connection per stream, "a brief overlap during rotation is
/// tolerated". A new PutMedia arriving while the active one is still sending takes the slot;
/// the old one becomes `overlapping` and may keep sending until its window ends.
#[derive(Default)]
pub(crate) struct Rotation {
    /// Tells the active connection it was superseded, and until when it may keep sending.
    pub(crate) notify_active: Option<tokio::sync::watch::Sender<Option<tokio::time::Instant>>>,
    /// A superseded connection still inside its overlap window.
    pub(crate) overlapping: Option<u64>,
}

/// A credential the emulator accepts.
#[derive(Clone)]
pub(crate) struct Credential {
    pub(crate) secret: String,
    pub(crate) session_token: Option<String>,
    pub(crate) expires_ms: Option<u64>,
    pub(crate) arn: String,
    pub(crate) user_id: String,
}

/// What the emulator keeps of the media PutMedia delivers (see
/// [`EmulatorBuilder::with_media_retention`](crate::EmulatorBuilder::with_media_retention)).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum MediaRetention {
    /// Every fragment's media bytes and every ack written (the default): GetMedia,
    /// GetMediaForFragmentList, [`Emulator::fragments`](crate::Emulator::fragments) and
    /// [`Emulator::acks`](crate::Emulator::acks) see everything.
    #[default]
    Full,
    /// Fragment metadata only (number, timestamps, duration, size, persisted flag, tags): the
    /// media bytes are dropped once validated and the per-stream ack log is not kept, so a load
    /// run of many streams for many minutes stays flat in memory. Acks are still written to the
    /// producer and ListFragments still answers; GetMedia and GetMediaForFragmentList answer
    /// `400 InvalidArgumentException`.
    MetadataOnly,
}

/// Settings fixed at start.
#[derive(Debug, Clone)]
pub(crate) struct Config {
    pub(crate) region: String,
    pub(crate) persist_delay: Duration,
    pub(crate) idle_ack_interval: Duration,
    pub(crate) idle_timeout: Duration,
    pub(crate) max_connection_duration: Duration,
    pub(crate) ingest_rate_limit: u64,
    pub(crate) max_clock_skew: Duration,
    pub(crate) header_read_timeout: Duration,
    pub(crate) put_media_requests_per_second: u32,
    pub(crate) error_drain_timeout: Duration,
    pub(crate) error_drain_limit: u64,
    pub(crate) media_retention: MediaRetention,
    /// How long a superseded PutMedia may keep sending (zero: no overlap, refuse the new one).
    pub(crate) rotation_overlap: Duration,
}

pub(crate) struct Shared {
    pub(crate) cfg: Config,
    pub(crate) url: String,
    pub(crate) streams: Mutex<BTreeMap<String, Stream>>,
    pub(crate) creds: Mutex<HashMap<String, Credential>>,
    pub(crate) faults: Faults,
    pub(crate) next_id: std::sync::atomic::AtomicU64,
    fragment_counter: Mutex<u128>,
    pub(crate) fragment_notify: tokio::sync::Notify,
    /// Where streams and fragments are persisted (`None`: in memory only).
    pub(crate) kvs_dir: Option<PathBuf>,
    /// SQS queues and S3 bucket notifications (persisted under `<data dir>/sqs`).
    pub(crate) sqs: super::sqs::Sqs,
}

impl Shared {
    pub(crate) fn new(cfg: Config, url: String, faults: Faults, kvs_dir: Option<PathBuf>) -> Self {
        Self {
            cfg,
            url,
            streams: Mutex::new(BTreeMap::new()),
            creds: Mutex::new(HashMap::new()),
            faults,
            next_id: std::sync::atomic::AtomicU64::new(1),
            fragment_counter: Mutex::new(0),
            fragment_notify: tokio::sync::Notify::new(),
            sqs: super::sqs::Sqs::new(kvs_dir.clone()),
            kvs_dir,
        }
    }

    /// The emulator clock in epoch ms: the system clock shifted by any `ClockSkew` fault.
    pub(crate) fn now_ms(&self) -> u64 {
        let real = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as i64)
            .unwrap_or(0);
        (real + self.faults.clock_offset_ms()).max(0) as u64
    }

    pub(crate) fn next_id(&self) -> u64 {
        self.next_id
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    }

    /// A new fragment number: 47 decimal digits, strictly increasing across the emulator and
    /// derived from the clock so numbers also increase across restarts (docs/protocol.md §2: "a decimal
    /// of up to 128 digits (47 in practice)").
    pub(crate) fn next_fragment_number(&self) -> String {
        let mut c = self.fragment_counter.lock().expect("counter lock");
        let from_clock = u128::from(self.now_ms()) * 1_000_000;
        *c = (*c + 1).max(from_clock);
        // 8-digit prefix + 39 digits (u128::MAX has 39) = 47.
        format!("91343852{:039}", *c)
    }

    pub(crate) fn with_stream<R>(&self, name: &str, f: impl FnOnce(&mut Stream) -> R) -> Option<R> {
        self.streams
            .lock()
            .expect("streams lock")
            .get_mut(name)
            .map(f)
    }

    // ---- persistence (data dir) ----

    fn stream_dir(&self, name: &str) -> Option<PathBuf> {
        // Names are validated against [a-zA-Z0-9_.-], which still allows "." and "..": the
        // prefix keeps every name a plain directory name inside the data dir.
        self.kvs_dir
            .as_ref()
            .map(|d| d.join("streams").join(format!("s-{name}")))
    }

    pub(crate) fn persist_meta(&self, meta: &StreamMeta) {
        let Some(dir) = self.stream_dir(&meta.name) else {
            return;
        };
        let res = std::fs::create_dir_all(dir.join("fragments")).and_then(|()| {
            let json = serde_json::to_vec_pretty(meta).map_err(std::io::Error::other)?;
            write_atomic(&dir.join("stream.json"), &json)
        });
        if let Err(e) = res {
            tracing::warn!(stream = %meta.name, error = %e, "cannot persist stream metadata");
        }
    }

    pub(crate) fn persist_fragment(&self, stream: &str, f: &StoredFragment) {
        let Some(dir) = self.stream_dir(stream) else {
            return;
        };
        let meta = FragmentMeta {
            fragment_number: f.fragment_number.clone(),
            producer_timestamp_ms: f.producer_timestamp_ms,
            server_timestamp_ms: f.server_timestamp_ms,
            fragment_timecode: f.fragment_timecode,
            duration_ms: f.duration_ms,
            header_len: f.header.len(),
            tags: f.tags.clone(),
        };
        let base = dir.join("fragments").join(&f.fragment_number);
        let res = serde_json::to_vec(&meta)
            .map_err(std::io::Error::other)
            .and_then(|json| {
                write_atomic(&base.with_extension("mkv"), &f.media)?;
                write_atomic(&base.with_extension("json"), &json)
            });
        if let Err(e) = res {
            tracing::warn!(stream, error = %e, "cannot persist fragment");
        }
    }

    pub(crate) fn remove_stream_dir(&self, name: &str) {
        if let Some(dir) = self.stream_dir(name)
            && let Err(e) = std::fs::remove_dir_all(&dir)
            && e.kind() != std::io::ErrorKind::NotFound
        {
            tracing::warn!(stream = name, error = %e, "cannot remove stream directory");
        }
    }

    /// Loads streams and persisted fragments written by an earlier run.
    pub(crate) fn load(&self) -> Result<(), Error> {
        self.sqs.load()?;
        let Some(root) = &self.kvs_dir else {
            return Ok(());
        };
        let streams_dir = root.join("streams");
        let entries = match std::fs::read_dir(&streams_dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(source) => {
                return Err(Error::DataDir {
                    path: streams_dir,
                    source,
                });
            }
        };
        let io = |path: &Path| {
            let path = path.to_owned();
            move |source| Error::DataDir { path, source }
        };
        let mut streams = self.streams.lock().expect("streams lock");
        let mut max_counter = 0u128;
        for entry in entries {
            let dir = entry.map_err(io(&streams_dir))?.path();
            let meta_path = dir.join("stream.json");
            let Ok(bytes) = std::fs::read(&meta_path) else {
                continue;
            };
            let meta: StreamMeta =
                serde_json::from_slice(&bytes).map_err(|e| Error::CorruptState {
                    path: meta_path.clone(),
                    reason: e.to_string(),
                })?;
            let mut fragments = Vec::new();
            let frag_dir = dir.join("fragments");
            if let Ok(list) = std::fs::read_dir(&frag_dir) {
                for f in list {
                    let p = f.map_err(io(&frag_dir))?.path();
                    if p.extension().is_none_or(|e| e != "json") {
                        continue;
                    }
                    let corrupt = |reason: String| Error::CorruptState {
                        path: p.clone(),
                        reason,
                    };
                    let fm: FragmentMeta =
                        serde_json::from_slice(&std::fs::read(&p).map_err(io(&p))?)
                            .map_err(|e| corrupt(e.to_string()))?;
                    let media_path = p.with_extension("mkv");
                    let media = Bytes::from(std::fs::read(&media_path).map_err(io(&media_path))?);
                    if fm.header_len > media.len() {
                        return Err(corrupt("header longer than media".into()));
                    }
                    if let Some(n) = fm
                        .fragment_number
                        .get(8..)
                        .and_then(|s| s.parse::<u128>().ok())
                    {
                        max_counter = max_counter.max(n);
                    }
                    fragments.push(StoredFragment {
                        fragment_number: fm.fragment_number,
                        producer_timestamp_ms: fm.producer_timestamp_ms,
                        server_timestamp_ms: fm.server_timestamp_ms,
                        fragment_timecode: fm.fragment_timecode,
                        duration_ms: fm.duration_ms,
                        size: media.len() - fm.header_len,
                        persisted: true,
                        header: media.slice(..fm.header_len),
                        cluster: media.slice(fm.header_len..),
                        media,
                        connection_id: 0,
                        tags: fm.tags,
                    });
                }
            }
            // Same-length decimal strings sort like the numbers they spell.
            fragments.sort_by(|a, b| a.fragment_number.cmp(&b.fragment_number));
            streams.insert(
                meta.name.clone(),
                Stream {
                    meta,
                    fragments,
                    acks: Vec::new(),
                    connections: Vec::new(),
                    active_connection: None,
                    recent_puts: Default::default(),
                    rotation: Default::default(),
                },
            );
        }
        let mut c = self.fragment_counter.lock().expect("counter lock");
        *c = (*c).max(max_counter);
        Ok(())
    }
}

fn write_atomic(path: &Path, data: &[u8]) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, data)?;
    std::fs::rename(&tmp, path)
}
