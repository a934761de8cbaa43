//! Helpers for the PutMedia client tests: a synthetic MKV writer, an ffmpeg clip generator, a
//! scripted PutMedia server and a log capture.
#![allow(dead_code)]

use std::convert::Infallible;
use std::io::Write;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use http_body_util::{BodyExt, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::sync::mpsc;

// ---------------------------------------------------------------------------------------------
// Synthetic MKV
// ---------------------------------------------------------------------------------------------

fn put_id(out: &mut BytesMut, id: u32) {
    let b = id.to_be_bytes();
    let skip = b.iter().take_while(|&&x| x == 0).count();
    out.put_slice(&b[skip..]);
}

fn put_size8(out: &mut BytesMut, n: u64) {
    out.put_u8(0x01);
    out.put_slice(&n.to_be_bytes()[1..]);
}

fn el(out: &mut BytesMut, id: u32, data: &[u8]) {
    put_id(out, id);
    put_size8(out, data.len() as u64);
    out.put_slice(data);
}

fn uint(out: &mut BytesMut, id: u32, v: u64) {
    el(out, id, &v.to_be_bytes());
}

/// Shape of a synthetic H.264-labelled MKV (payloads are zeros: nothing decodes them, and zeros
/// never look like a Cluster id to the scripted server's scan).
#[derive(Debug, Clone, Copy)]
pub struct SynthMkv {
    /// Frames in total.
    pub frames: u32,
    /// Frame interval in ms.
    pub frame_ms: u64,
    /// A keyframe every this many frames.
    pub gop: u32,
    /// Payload bytes per frame.
    pub frame_bytes: usize,
    /// Frames per input Cluster.
    pub cluster_frames: u32,
}

impl SynthMkv {
    /// The whole file.
    pub fn build(&self) -> Bytes {
        let mut out = BytesMut::new();
        let mut ebml = BytesMut::new();
        uint(&mut ebml, 0x4286, 1);
        uint(&mut ebml, 0x42F7, 1);
        uint(&mut ebml, 0x42F2, 4);
        uint(&mut ebml, 0x42F3, 8);
        el(&mut ebml, 0x4282, b"matroska");
        uint(&mut ebml, 0x4287, 4);
        uint(&mut ebml, 0x4285, 2);
        el(&mut out, 0x1A45DFA3, &ebml);
        put_id(&mut out, 0x18538067);
        out.put_slice(&[0x01, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF]);
        let mut info = BytesMut::new();
        uint(&mut info, 0x2AD7B1, 1_000_000);
        el(&mut info, 0x4D80, b"putmedia-test");
        el(&mut info, 0x5741, b"putmedia-test");
        el(&mut out, 0x1549A966, &info);
        let mut video = BytesMut::new();
        uint(&mut video, 0xB0, 320);
        uint(&mut video, 0xBA, 240);
        let mut entry = BytesMut::new();
        uint(&mut entry, 0xD7, 1);
        uint(&mut entry, 0x73C5, 1);
        uint(&mut entry, 0x83, 1);
        el(&mut entry, 0x86, b"V_MPEG4/ISO/AVC");
        el(&mut entry, 0x63A2, &[1, 0x42, 0xC0, 0x1E, 0xFF, 0xE0, 0x00]);
        el(&mut entry, 0xE0, &video);
        let mut tracks = BytesMut::new();
        el(&mut tracks, 0xAE, &entry);
        el(&mut out, 0x1654AE6B, &tracks);
        let payload = vec![0u8; self.frame_bytes];
        let mut frame = 0;
        while frame < self.frames {
            let cluster_tc = u64::from(frame) * self.frame_ms;
            let mut cluster = BytesMut::new();
            uint(&mut cluster, 0xE7, cluster_tc);
            for i in frame..(frame + self.cluster_frames).min(self.frames) {
                let rel = (u64::from(i) * self.frame_ms - cluster_tc) as i16;
                let mut block = BytesMut::new();
                block.put_u8(0x81);
                block.put_i16(rel);
                block.put_u8(if i % self.gop == 0 { 0x80 } else { 0x00 });
                block.put_slice(&payload);
                el(&mut cluster, 0xA3, &block);
            }
            el(&mut out, 0x1F43B675, &cluster);
            frame += self.cluster_frames;
        }
        out.freeze()
    }
}

/// Splits `data` into chunks of `n` bytes.
pub fn chunks(data: &Bytes, n: usize) -> Vec<Bytes> {
    (0..data.len())
        .step_by(n)
        .map(|i| data.slice(i..(i + n).min(data.len())))
        .collect()
}

/// Encodes a short lavfi test clip (320x240, H.264 baseline without B-frames, a keyframe every
/// second) to MKV with ffmpeg and returns its bytes.
pub fn ffmpeg_clip(seconds: u32) -> Bytes {
    ffmpeg_clip_with(seconds, "320x240", 25, false)
}

/// A lavfi test clip of `size` at `fps` frames a second, H.264 baseline without B-frames, a
/// keyframe every second, and with `audio` a 16 kHz AAC sine; MKV bytes.
pub fn ffmpeg_clip_with(seconds: u32, size: &str, fps: u32, audio: bool) -> Bytes {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("clip.mkv");
    let gop = fps.to_string();
    let mut cmd = std::process::Command::new("ffmpeg");
    cmd.args(["-nostdin", "-loglevel", "error", "-f", "lavfi", "-i"])
        .arg(format!("testsrc=size={size}:rate={fps}:duration={seconds}"));
    if audio {
        cmd.args(["-f", "lavfi", "-i"]).arg(format!(
            "sine=frequency=440:sample_rate=16000:duration={seconds}"
        ));
    }
    cmd.args([
        "-c:v",
        "libx264",
        "-preset",
        "ultrafast",
        "-profile:v",
        "baseline",
        "-bf",
        "0",
        "-g",
        &gop,
        "-keyint_min",
        &gop,
        "-sc_threshold",
        "0",
        "-pix_fmt",
        "yuv420p",
    ]);
    if audio {
        cmd.args(["-c:a", "aac", "-b:a", "16k"]);
    }
    let status = cmd.arg(&path).status().expect("run ffmpeg");
    assert!(status.success(), "ffmpeg failed: {status}");
    Bytes::from(std::fs::read(&path).expect("read clip"))
}

/// A client builder for `stream` on the emulator: its region, keys and URL, plain HTTP allowed.
pub fn emulator_client(
    emu: &kvs_emulator::Emulator,
    stream: &str,
) -> kvs_putmedia::PutMediaClientBuilder {
    let c = emu.credentials();
    kvs_putmedia::PutMediaClient::builder()
        .with_stream_name(stream)
        .with_region(emu.region())
        .with_credentials(aws_credential_types::Credentials::new(
            c.access_key_id,
            c.secret_access_key,
            None,
            None,
            "emulator",
        ))
        .with_endpoint_url(emu.url())
        .with_allow_http(true)
}

// ---------------------------------------------------------------------------------------------
// Scripted PutMedia server
// ---------------------------------------------------------------------------------------------

/// What the scripted server saw.
#[derive(Debug, Default)]
pub struct Seen {
    /// Request headers of the first connection, lower-case names.
    pub headers: Vec<(String, String)>,
    /// The first connection's request body.
    pub body: Vec<u8>,
    /// Whether the first body ended with the terminating chunk.
    pub body_complete: bool,
    /// Bodies of the later connections (the client reconnected), in order.
    pub later: Vec<Vec<u8>>,
}

/// Cluster timecodes and sizes in a PutMedia body of unknown-size Clusters, in order. A
/// Cluster ends at the next Cluster, at an end-of-fragment Tags element, or at the end.
pub fn clusters(body: &[u8]) -> Vec<(u64, usize)> {
    let starts: Vec<usize> = body
        .windows(4)
        .enumerate()
        .filter(|(_, w)| *w == [0x1F, 0x43, 0xB6, 0x75])
        .map(|(i, _)| i)
        .collect();
    let tags: Vec<usize> = body
        .windows(4)
        .enumerate()
        .filter(|(_, w)| *w == [0x12, 0x54, 0xC3, 0x67])
        .map(|(i, _)| i)
        .collect();
    let mut out = Vec::new();
    for (k, &s) in starts.iter().enumerate() {
        let next = starts.get(k + 1).copied().unwrap_or(body.len());
        let end = tags
            .iter()
            .copied()
            .find(|&t| t > s && t < next)
            .unwrap_or(next);
        let mut p = s + 4;
        p += vint_len(body[p]);
        assert_eq!(body[p], 0xE7, "Cluster must start with its Timecode");
        p += 1;
        let len = vint_value(&body[p..]);
        p += vint_len(body[p]);
        let tc = body[p..p + len]
            .iter()
            .fold(0u64, |a, &b| (a << 8) | u64::from(b));
        out.push((tc, end - s));
    }
    out
}

fn vint_len(b: u8) -> usize {
    b.leading_zeros() as usize + 1
}

fn vint_value(b: &[u8]) -> usize {
    let n = vint_len(b[0]);
    let mut v = u64::from(b[0]) & (0xFF >> n);
    for &x in &b[1..n] {
        v = (v << 8) | u64::from(x);
    }
    v as usize
}

/// Once the request body ended or went quiet, the server answers with these response body
/// chunks, built from the clusters it received (timecode, size). An empty chunk holds the
/// response open.
pub type Script = Box<dyn FnOnce(&[(u64, usize)]) -> Vec<Vec<u8>> + Send>;

/// A script chunk that aborts the connection (no terminating chunk) instead of writing.
pub const ABORT: &[u8] = b"\0abort";

/// A PutMedia server on 127.0.0.1:0: answers 200 at once, reads the body, then writes the
/// scripted ack chunks (each its own HTTP chunk) and ends the response. The script drives the
/// first connection; later ones (the client reconnecting) get RECEIVED and PERSISTED for every
/// fragment.
pub async fn scripted_server(script: Script) -> (SocketAddr, Arc<Mutex<Seen>>) {
    scripted_server_seq(vec![script]).await
}

/// [`scripted_server`] with one script per connection, in order; connections past the last
/// script get RECEIVED and PERSISTED for every fragment.
pub async fn scripted_server_seq(scripts: Vec<Script>) -> (SocketAddr, Arc<Mutex<Seen>>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let seen = Arc::new(Mutex::new(Seen::default()));
    let seen2 = seen.clone();
    tokio::spawn(async move {
        let mut scripts = scripts.into_iter();
        for n in 0usize.. {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            let this: Script = scripts.next().unwrap_or_else(ack_all);
            tokio::spawn(serve_one(tcp, n, this, seen2.clone()));
        }
    });
    (addr, seen)
}

async fn serve_one(tcp: tokio::net::TcpStream, n: usize, script: Script, seen: Arc<Mutex<Seen>>) {
    let script = Arc::new(Mutex::new(Some(script)));
    let service =
        service_fn(move |req: hyper::Request<Incoming>| {
            let seen = seen.clone();
            let script = script.clone();
            async move {
                // Where this connection's body goes: `None` for the first connection's `body`.
                let later_index = if n == 0 {
                    seen.lock().unwrap().headers = req
                        .headers()
                        .iter()
                        .map(|(k, v)| (k.as_str().to_owned(), v.to_str().unwrap_or("").to_owned()))
                        .collect();
                    None
                } else {
                    let mut s = seen.lock().unwrap();
                    s.later.push(Vec::new());
                    Some(s.later.len() - 1)
                };
                let (tx, rx) = mpsc::channel::<Result<Frame<Bytes>, std::io::Error>>(64);
                let mut body = req.into_body();
                let (quiet_tx, quiet_rx) = tokio::sync::oneshot::channel::<()>();
                let reader_seen = seen.clone();
                let received = Arc::new(Mutex::new(Vec::<u8>::new()));
                let received2 = received.clone();
                tokio::spawn(async move {
                    // The client keeps the body open until its last ack (docs/protocol.md §2), so the
                    // script runs once the body ended or went quiet after some media.
                    let mut quiet_tx = Some(quiet_tx);
                    loop {
                        match tokio::time::timeout(Duration::from_millis(150), body.frame()).await {
                            Ok(Some(Ok(frame))) => {
                                if let Ok(d) = frame.into_data() {
                                    received2.lock().unwrap().extend_from_slice(&d);
                                    let mut s = reader_seen.lock().unwrap();
                                    match later_index {
                                        None => s.body.extend_from_slice(&d),
                                        Some(i) => s.later[i].extend_from_slice(&d),
                                    }
                                }
                            }
                            Ok(Some(Err(_))) => break,
                            Ok(None) => {
                                if later_index.is_none() {
                                    reader_seen.lock().unwrap().body_complete = true;
                                }
                                break;
                            }
                            Err(_) => {
                                if !clusters(&received2.lock().unwrap()).is_empty()
                                    && let Some(q) = quiet_tx.take()
                                {
                                    let _ = q.send(());
                                }
                            }
                        }
                    }
                    if let Some(q) = quiet_tx.take() {
                        let _ = q.send(());
                    }
                });
                tokio::spawn(async move {
                    let _ = quiet_rx.await;
                    let got = clusters(&received.lock().unwrap());
                    let script = script.lock().unwrap().take().unwrap();
                    for chunk in script(&got) {
                        if chunk.is_empty() {
                            // An empty chunk in the script: keep the response open, silent.
                            std::future::pending::<()>().await;
                        }
                        if chunk == ABORT {
                            // The response fails mid-stream: the connection is aborted.
                            let _ = tx.send(Err(std::io::Error::other("scripted abort"))).await;
                            return;
                        }
                        if tx.send(Ok(Frame::data(Bytes::from(chunk)))).await.is_err() {
                            return;
                        }
                    }
                });
                let stream = futures::stream::unfold(rx, |mut rx| async move {
                    rx.recv().await.map(|f| (f, rx))
                });
                Ok::<_, Infallible>(hyper::Response::new(StreamBody::new(stream)))
            }
        });
    let _ = http1::Builder::new()
        .serve_connection(TokioIo::new(tcp), service)
        .await;
}

/// The well-behaved service: RECEIVED and PERSISTED for every fragment, each pair one chunk.
pub fn ack_all() -> Script {
    Box::new(|clusters: &[(u64, usize)]| {
        clusters
            .iter()
            .map(|c| (ack("RECEIVED", c.0) + &ack("PERSISTED", c.0)).into_bytes())
            .collect()
    })
}

/// One ERROR ack line; `tc` `None` leaves `FragmentTimecode` out.
pub fn error_ack(id: u32, code: &str, tc: Option<u64>) -> String {
    match tc {
        Some(tc) => format!(
            "{{\"EventType\":\"ERROR\",\"FragmentTimecode\":{tc},\"ErrorCode\":\"{code}\",\"ErrorId\":{id}}}\n"
        ),
        None => format!("{{\"EventType\":\"ERROR\",\"ErrorCode\":\"{code}\",\"ErrorId\":{id}}}\n"),
    }
}

/// One ack line.
pub fn ack(event: &str, tc: u64) -> String {
    format!(
        "{{\"EventType\":\"{event}\",\"FragmentTimecode\":{tc},\"FragmentNumber\":\"9134385233318143251152430641978829636672422958{}\"}}\n",
        tc % 10
    )
}

// ---------------------------------------------------------------------------------------------
// Log capture
// ---------------------------------------------------------------------------------------------

/// A `MakeWriter` collecting everything logged.
#[derive(Clone, Default)]
pub struct LogBuffer(pub Arc<Mutex<Vec<u8>>>);

impl LogBuffer {
    /// Everything logged so far.
    pub fn contents(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

impl Write for LogBuffer {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for LogBuffer {
    type Writer = LogBuffer;
    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}
