//! Test helpers: SDK configs, an independent SigV4 signer (`aws-sigv4`), a raw full-duplex
//! PutMedia client over TCP, and a real H.264 MKV clip made by ffmpeg.
#![allow(dead_code)]

use std::path::PathBuf;
use std::sync::OnceLock;
use std::time::{Duration, SystemTime};

use aws_credential_types::Credentials;
use aws_sigv4::http_request::{SignableBody, SignableRequest, SigningSettings, sign};
use aws_sigv4::sign::v4;
use kvs_emulator::Emulator;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};

pub async fn sdk_config(emu: &Emulator) -> aws_config::SdkConfig {
    let c = emu.credentials();
    sdk_config_with(
        emu,
        Credentials::new(c.access_key_id, c.secret_access_key, None, None, "emu"),
    )
    .await
}

pub async fn sdk_config_with(emu: &Emulator, creds: Credentials) -> aws_config::SdkConfig {
    aws_config::SdkConfig::builder()
        .behavior_version(aws_config::BehaviorVersion::latest())
        .endpoint_url(emu.url())
        .region(aws_config::Region::new(emu.region().to_owned()))
        .credentials_provider(aws_credential_types::provider::SharedCredentialsProvider::new(creds))
        .build()
}

/// Which payload hash a PutMedia request signs (docs/protocol.md §1.4).
#[derive(Clone, Copy, Debug)]
pub enum Payload {
    EmptyHash,
    Unsigned,
    Streaming,
}

/// Signs a request with `aws-sigv4` (independent of the emulator's verifier). Returns the
/// headers to add.
pub fn sign_headers(
    creds: &Credentials,
    region: &str,
    method: &str,
    url: &str,
    headers: &[(String, String)],
    body: Payload,
    time: SystemTime,
) -> Vec<(String, String)> {
    let identity = creds.clone().into();
    let settings = SigningSettings::default();
    let params = v4::SigningParams::builder()
        .identity(&identity)
        .region(region)
        .name("kinesisvideo")
        .time(time)
        .settings(settings)
        .build()
        .unwrap()
        .into();
    let body = match body {
        Payload::EmptyHash => SignableBody::Bytes(b""),
        Payload::Unsigned => SignableBody::UnsignedPayload,
        Payload::Streaming => {
            SignableBody::Precomputed("STREAMING-AWS4-HMAC-SHA256-PAYLOAD".into())
        }
    };
    let req = SignableRequest::new(
        method,
        url,
        headers.iter().map(|(k, v)| (k.as_str(), v.as_str())),
        body,
    )
    .unwrap();
    let (instructions, _) = sign(req, &params).unwrap().into_parts();
    let (hs, _) = instructions.into_parts();
    hs.into_iter()
        .map(|h| (h.name().to_owned(), h.value().to_owned()))
        .collect()
}

pub fn emu_creds(emu: &Emulator) -> Credentials {
    let c = emu.credentials();
    Credentials::new(c.access_key_id, c.secret_access_key, None, None, "emu")
}

pub struct PutMediaOptions {
    pub creds: Credentials,
    pub payload: Payload,
    pub time: SystemTime,
    pub stream_header: Vec<(String, String)>,
    pub timecode_type: &'static str,
    pub producer_start: Option<String>,
    pub declare_sha256_header: bool,
    /// Sent unsigned after the signed ones (e.g. `expect: 100-continue`).
    pub extra_headers: Vec<(String, String)>,
}

impl PutMediaOptions {
    pub fn new(emu: &Emulator, stream: &str) -> Self {
        Self {
            creds: emu_creds(emu),
            payload: Payload::EmptyHash,
            time: SystemTime::now(),
            stream_header: vec![("x-amzn-stream-name".into(), stream.into())],
            timecode_type: "RELATIVE",
            producer_start: Some(producer_start_secs(60)),
            declare_sha256_header: false,
            extra_headers: Vec::new(),
        }
    }
}

/// `x-amzn-producer-start-timestamp` for `ago` seconds before now.
pub fn producer_start_secs(ago: u64) -> String {
    let ms = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
        - ago * 1000;
    format!("{}.{:03}", ms / 1000, ms % 1000)
}

/// The head of a signed PutMedia request (chunked, no body yet).
pub fn put_media_head(emu: &Emulator, o: &PutMediaOptions) -> String {
    let host = emu.addr().to_string();
    let url = format!("http://{host}/putMedia");
    let mut headers: Vec<(String, String)> = vec![("host".into(), host.clone())];
    headers.extend(o.stream_header.iter().cloned());
    headers.push((
        "x-amzn-fragment-timecode-type".into(),
        o.timecode_type.into(),
    ));
    if let Some(p) = &o.producer_start {
        headers.push(("x-amzn-producer-start-timestamp".into(), p.clone()));
    }
    headers.push(("x-amzn-fragment-acknowledgment-required".into(), "1".into()));
    if o.declare_sha256_header {
        let v = match o.payload {
            Payload::EmptyHash => kvs_emulator::sigv4::EMPTY_PAYLOAD_SHA256,
            Payload::Unsigned => "UNSIGNED-PAYLOAD",
            Payload::Streaming => "STREAMING-AWS4-HMAC-SHA256-PAYLOAD",
        };
        headers.push(("x-amz-content-sha256".into(), v.into()));
    }
    let signed = sign_headers(
        &o.creds,
        "us-east-1",
        "POST",
        &url,
        &headers,
        o.payload,
        o.time,
    );
    headers.extend(signed);
    // docs/protocol.md §1.5: hop-by-hop headers are never signed.
    headers.push(("transfer-encoding".into(), "chunked".into()));
    headers.extend(o.extra_headers.iter().cloned());
    let mut req = "POST /putMedia HTTP/1.1\r\n".to_string();
    for (k, v) in &headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    req
}

/// A raw PutMedia connection: the response head is read before any body byte is written.
pub struct PutMedia {
    pub status: u16,
    pub head: String,
    reader: ChunkReader,
    writer: OwnedWriteHalf,
}

impl PutMedia {
    pub async fn open(emu: &Emulator, o: PutMediaOptions) -> PutMedia {
        Self::open_raw(emu, put_media_head(emu, &o).as_bytes()).await
    }

    pub async fn open_raw(emu: &Emulator, head: &[u8]) -> PutMedia {
        let tcp = TcpStream::connect(emu.addr()).await.unwrap();
        let (r, mut w) = tcp.into_split();
        w.write_all(head).await.unwrap();
        let mut reader = ChunkReader { r, buf: Vec::new() };
        let head = tokio::time::timeout(Duration::from_secs(5), reader.read_head())
            .await
            .expect("response head before any media is sent");
        let status = head.split(' ').nth(1).unwrap().parse().unwrap();
        PutMedia {
            status,
            head,
            reader,
            writer: w,
        }
    }

    /// Writes one HTTP chunk.
    pub async fn send(&mut self, data: &[u8]) -> std::io::Result<()> {
        if data.is_empty() {
            return Ok(());
        }
        self.writer
            .write_all(format!("{:x}\r\n", data.len()).as_bytes())
            .await?;
        self.writer.write_all(data).await?;
        self.writer.write_all(b"\r\n").await
    }

    /// Writes raw bytes (no chunk framing).
    pub async fn send_raw(&mut self, data: &[u8]) -> std::io::Result<()> {
        self.writer.write_all(data).await
    }

    /// Sends the terminating chunk.
    pub async fn end(&mut self) -> std::io::Result<()> {
        self.writer.write_all(b"0\r\n\r\n").await
    }

    /// Next response chunk (None at the terminating chunk, Err on an aborted response).
    pub async fn next_chunk(&mut self) -> Result<Option<Vec<u8>>, String> {
        self.reader.next_chunk().await
    }

    /// Next ack, as parsed JSON, asserting it is one object plus `\n` in its own chunk.
    pub async fn next_ack(&mut self) -> Result<Option<serde_json::Value>, String> {
        let Some(chunk) = self.next_chunk().await? else {
            return Ok(None);
        };
        assert_eq!(chunk.last(), Some(&b'\n'), "ack chunk ends with a newline");
        assert_eq!(
            chunk.iter().filter(|&&b| b == b'\n').count(),
            1,
            "one ack per chunk"
        );
        Ok(Some(serde_json::from_slice(&chunk).expect("ack is JSON")))
    }

    /// Every ack until the response ends; Err if the response was aborted.
    pub async fn all_acks(&mut self) -> (Vec<serde_json::Value>, Result<(), String>) {
        let mut acks = Vec::new();
        loop {
            match tokio::time::timeout(Duration::from_secs(10), self.next_ack()).await {
                Err(_) => return (acks, Err("timeout".into())),
                Ok(Ok(Some(a))) => acks.push(a),
                Ok(Ok(None)) => return (acks, Ok(())),
                Ok(Err(e)) => return (acks, Err(e)),
            }
        }
    }

    /// The error body of a non-200 answer.
    pub async fn error_body(&mut self) -> serde_json::Value {
        let len: usize = header_value(&self.head, "content-length")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        let body = self.reader.read_exact(len).await.unwrap();
        serde_json::from_slice(&body).unwrap()
    }

    pub fn header(&self, name: &str) -> Option<String> {
        header_value(&self.head, name)
    }
}

pub fn header_value(head: &str, name: &str) -> Option<String> {
    head.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.trim()
            .eq_ignore_ascii_case(name)
            .then(|| v.trim().to_owned())
    })
}

struct ChunkReader {
    r: OwnedReadHalf,
    buf: Vec<u8>,
}

impl ChunkReader {
    async fn fill(&mut self) -> Result<(), String> {
        let mut tmp = [0u8; 8192];
        let n = self.r.read(&mut tmp).await.map_err(|e| e.to_string())?;
        if n == 0 {
            return Err("connection closed".into());
        }
        self.buf.extend_from_slice(&tmp[..n]);
        Ok(())
    }
    async fn read_head(&mut self) -> String {
        loop {
            if let Some(i) = self.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&self.buf[..i]).into_owned();
                self.buf.drain(..i + 4);
                return head;
            }
            self.fill().await.expect("response head");
        }
    }
    async fn read_line(&mut self) -> Result<String, String> {
        loop {
            if let Some(i) = self.buf.windows(2).position(|w| w == b"\r\n") {
                let line = String::from_utf8_lossy(&self.buf[..i]).into_owned();
                self.buf.drain(..i + 2);
                return Ok(line);
            }
            self.fill().await?;
        }
    }
    async fn read_exact(&mut self, n: usize) -> Result<Vec<u8>, String> {
        while self.buf.len() < n {
            self.fill().await?;
        }
        Ok(self.buf.drain(..n).collect())
    }
    async fn next_chunk(&mut self) -> Result<Option<Vec<u8>>, String> {
        let line = self.read_line().await?;
        let size = usize::from_str_radix(line.trim(), 16)
            .map_err(|e| format!("bad chunk size {line:?}: {e}"))?;
        if size == 0 {
            let _ = self.read_line().await;
            return Ok(None);
        }
        let data = self.read_exact(size).await?;
        let crlf = self.read_exact(2).await?;
        assert_eq!(crlf, b"\r\n");
        Ok(Some(data))
    }
}

/// A real H.264 MKV made by ffmpeg (6 s of 320x240 at 25 fps, a keyframe every second, clusters
/// cut at keyframes so each is one fragment), and the same as RELATIVE-timed bytes.
pub fn clip() -> &'static [u8] {
    static CLIP: OnceLock<Vec<u8>> = OnceLock::new();
    CLIP.get_or_init(|| make_clip(6))
}

pub fn make_clip(seconds: u32) -> Vec<u8> {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("clip.mkv");
    let status = std::process::Command::new("ffmpeg")
        .args(["-nostdin", "-loglevel", "error", "-f", "lavfi", "-i"])
        .arg(format!("testsrc=size=320x240:rate=25:duration={seconds}"))
        .args([
            "-c:v",
            "libx264",
            "-preset",
            "ultrafast",
            "-bf",
            "0",
            "-g",
            "25",
            "-keyint_min",
            "25",
            "-sc_threshold",
            "0",
            "-pix_fmt",
            "yuv420p",
            "-write_crc32",
            "0",
            "-cluster_time_limit",
            "100000",
            "-cluster_size_limit",
            "50000000",
            "-f",
            "matroska",
        ])
        .arg(&out)
        .status()
        .expect("ffmpeg runs");
    assert!(status.success());
    std::fs::read(out).unwrap()
}

/// ffprobe's frame count of an MKV, or an error with its stderr.
pub fn ffprobe_frames(mkv: &[u8]) -> Result<u64, String> {
    let dir = tempfile::tempdir().unwrap();
    let p: PathBuf = dir.path().join("x.mkv");
    std::fs::write(&p, mkv).unwrap();
    let out = std::process::Command::new("ffprobe")
        .args([
            "-v",
            "error",
            "-count_frames",
            "-select_streams",
            "v:0",
            "-show_entries",
            "stream=nb_read_frames",
            "-of",
            "csv=p=0",
        ])
        .arg(&p)
        .output()
        .unwrap();
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).into_owned());
    }
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .map_err(|e| format!("{e}: {:?}", out.stdout))
}

/// A quick emulator with test-friendly timings.
pub async fn emulator() -> Emulator {
    Emulator::builder()
        .with_persist_delay(Duration::from_millis(20))
        .with_idle_ack_interval(Duration::from_millis(200))
        .with_idle_timeout(Duration::from_secs(5))
        .start()
        .await
        .unwrap()
}

/// A complete signed KVS JSON request (as raw HTTP/1.1 bytes) for `path` with `body`.
pub fn signed_json_request(emu: &Emulator, path: &str, body: &[u8]) -> Vec<u8> {
    let host = emu.addr().to_string();
    let url = format!("http://{host}{path}");
    let mut headers: Vec<(String, String)> = vec![
        ("host".into(), host),
        ("content-type".into(), "application/json".into()),
    ];
    let identity = emu_creds(emu).into();
    let params = v4::SigningParams::builder()
        .identity(&identity)
        .region(emu.region())
        .name("kinesisvideo")
        .time(SystemTime::now())
        .settings(SigningSettings::default())
        .build()
        .unwrap()
        .into();
    let req = SignableRequest::new(
        "POST",
        &url,
        headers.iter().map(|(k, v)| (k.as_str(), v.as_str())),
        SignableBody::Bytes(body),
    )
    .unwrap();
    let (instructions, _) = sign(req, &params).unwrap().into_parts();
    let (hs, _) = instructions.into_parts();
    headers.extend(
        hs.into_iter()
            .map(|h| (h.name().to_owned(), h.value().to_owned())),
    );
    let mut out = format!("POST {path} HTTP/1.1\r\n");
    for (k, v) in &headers {
        out.push_str(&format!("{k}: {v}\r\n"));
    }
    out.push_str(&format!(
        "content-length: {}\r\nconnection: close\r\n\r\n",
        body.len()
    ));
    let mut out = out.into_bytes();
    out.extend_from_slice(body);
    out
}

/// Sends raw bytes, returns (status, headers+body text) of the answer (or status 0 if the
/// server closed without answering).
pub async fn raw_exchange(emu: &Emulator, request: &[u8]) -> (u16, String) {
    let mut tcp = TcpStream::connect(emu.addr()).await.unwrap();
    let _ = tcp.write_all(request).await;
    let mut buf = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), tcp.read_to_end(&mut buf)).await;
    let text = String::from_utf8_lossy(&buf).into_owned();
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    (status, text)
}
