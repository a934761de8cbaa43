//! ffmpeg as the remuxer of the playback APIs: one stored fragment (a standalone MKV) in,
//! fragmented MP4, MPEG-TS or one still image out. Each run is bounded (a semaphore of
//! [`MAX_CONCURRENT`] runs, a [`RUN_TIMEOUT`], output capped at [`MAX_OUTPUT`]), the child is
//! spawned with `kill_on_drop` so a cancelled request leaves no process behind, and results are
//! kept in a byte-bounded [`Cache`].

use std::collections::{HashMap, VecDeque};
use std::process::Stdio;
use std::sync::Mutex;
use std::time::Duration;

use bytes::Bytes;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::process::Command;
use tokio::sync::Semaphore;

/// ffmpeg runs at once (remuxing is cheap, but a page of thumbnails asks for many).
pub(crate) const MAX_CONCURRENT: usize = 2;
/// Longest one ffmpeg run may take before it is killed.
pub(crate) const RUN_TIMEOUT: Duration = Duration::from_secs(30);
/// Largest output accepted from one run (a fragment is at most 50 MB).
pub(crate) const MAX_OUTPUT: usize = 64 << 20;
/// Bytes of remuxed segments and images the cache keeps.
pub(crate) const CACHE_BYTES: usize = 64 << 20;

/// What ffmpeg should make of a fragment.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Output {
    /// Fragmented MP4 (`ftyp`+`moov`, then `moof`/`mdat`), timeline starting at zero.
    FragmentedMp4,
    /// MPEG-TS whose first timestamp is `offset_ms`.
    MpegTs { offset_ms: u64 },
    /// One still of the frame at `at_ms` into the fragment.
    Image {
        at_ms: u64,
        png: bool,
        jpeg_quality: u8,
        width: Option<u32>,
        height: Option<u32>,
    },
}

impl Output {
    fn args(&self) -> Vec<String> {
        let mut a: Vec<String> = [
            "-nostdin",
            "-hide_banner",
            "-loglevel",
            "error",
            "-i",
            "pipe:0",
        ]
        .map(String::from)
        .to_vec();
        let s = |x: &[&str]| x.iter().map(|v| (*v).to_owned()).collect::<Vec<_>>();
        match self {
            Output::FragmentedMp4 => a.extend(s(&[
                "-map",
                "0",
                "-c",
                "copy",
                "-f",
                "mp4",
                "-movflags",
                "frag_keyframe+empty_moov+default_base_moof",
                "pipe:1",
            ])),
            Output::MpegTs { offset_ms } => {
                a.extend(s(&[
                    "-map",
                    "0",
                    "-c",
                    "copy",
                    "-muxdelay",
                    "0",
                    "-muxpreload",
                    "0",
                ]));
                a.extend([
                    "-output_ts_offset".into(),
                    format!("{}.{:03}", offset_ms / 1000, offset_ms % 1000),
                ]);
                a.extend(s(&["-f", "mpegts", "pipe:1"]));
            }
            Output::Image {
                at_ms,
                png,
                jpeg_quality,
                width,
                height,
            } => {
                a.extend([
                    "-ss".into(),
                    format!("{}.{:03}", at_ms / 1000, at_ms % 1000),
                ]);
                a.extend(s(&["-map", "0:v:0", "-frames:v", "1"]));
                let scale = match (width, height) {
                    (Some(w), Some(h)) => Some(format!("scale={w}:{h}")),
                    (Some(w), None) => Some(format!("scale={w}:-2")),
                    (None, Some(h)) => Some(format!("scale=-2:{h}")),
                    (None, None) => None,
                };
                if let Some(f) = scale {
                    a.extend(["-vf".into(), f]);
                }
                if *png {
                    a.extend(s(&["-c:v", "png"]));
                } else {
                    // JPEGQuality 1-100 onto mjpeg's qscale 31 (worst) to 2 (best).
                    let q = 31 - (u32::from(*jpeg_quality).saturating_sub(1) * 29 / 99);
                    a.extend(s(&["-c:v", "mjpeg", "-pix_fmt", "yuvj420p", "-q:v"]));
                    a.push(q.to_string());
                }
                a.extend(s(&["-f", "image2pipe", "pipe:1"]));
            }
        }
        a
    }
}

/// Why a run failed: ffmpeg's last stderr lines, or the bound that stopped it.
#[derive(Debug, Clone)]
pub(crate) struct RemuxError(pub(crate) String);

/// Runs ffmpeg over `input`, at most [`MAX_CONCURRENT`] at once.
pub(crate) struct Remuxer {
    slots: Semaphore,
    cache: Mutex<Cache>,
}

impl Remuxer {
    pub(crate) fn new() -> Self {
        Self {
            slots: Semaphore::new(MAX_CONCURRENT),
            cache: Mutex::new(Cache::new(CACHE_BYTES)),
        }
    }

    /// The output for `key`, from the cache or from a new run.
    pub(crate) async fn get(
        &self,
        key: String,
        input: Bytes,
        output: &Output,
    ) -> Result<Bytes, RemuxError> {
        if let Some(hit) = self.cache.lock().expect("cache lock").get(&key) {
            return Ok(hit);
        }
        let out = {
            let _permit = self
                .slots
                .acquire()
                .await
                .map_err(|_| RemuxError("remuxer closed".into()))?;
            run(&output.args(), input).await?
        };
        self.cache
            .lock()
            .expect("cache lock")
            .insert(key, out.clone());
        Ok(out)
    }

    /// Bytes held by the cache (for tests of the bound).
    #[cfg(test)]
    pub(crate) fn cached_bytes(&self) -> usize {
        self.cache.lock().expect("cache lock").bytes
    }
}

async fn run(args: &[String], input: Bytes) -> Result<Bytes, RemuxError> {
    let mut child = Command::new("ffmpeg")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| RemuxError(format!("cannot start ffmpeg: {e}")))?;
    let mut stdin = child.stdin.take().expect("piped stdin");
    let mut stdout = child.stdout.take().expect("piped stdout");
    let mut stderr = child.stderr.take().expect("piped stderr");
    let work = async {
        // A still needs only the first frames: ffmpeg may exit before reading everything, so a
        // broken pipe here is expected and not an error (the exit status decides).
        let write = async move {
            let _ = stdin.write_all(&input).await;
            drop(stdin);
        };
        let read = async {
            let mut out = Vec::new();
            let mut buf = vec![0u8; 64 * 1024];
            loop {
                let n = stdout.read(&mut buf).await?;
                if n == 0 {
                    break;
                }
                if out.len() + n > MAX_OUTPUT {
                    return Err(std::io::Error::other(format!(
                        "ffmpeg output over {MAX_OUTPUT} bytes"
                    )));
                }
                out.extend_from_slice(&buf[..n]);
            }
            Ok::<_, std::io::Error>(out)
        };
        let err = async {
            let mut e = Vec::new();
            let _ = (&mut stderr).take(64 * 1024).read_to_end(&mut e).await;
            e
        };
        let ((), out, err) = tokio::join!(write, read, err);
        let status = child.wait().await;
        (out, err, status)
    };
    let (out, err, status) = tokio::time::timeout(RUN_TIMEOUT, work)
        .await
        .map_err(|_| RemuxError(format!("ffmpeg took over {RUN_TIMEOUT:?}")))?;
    let tail = || {
        let text = String::from_utf8_lossy(&err);
        let lines: Vec<&str> = text.lines().rev().take(3).collect();
        lines.into_iter().rev().collect::<Vec<_>>().join(" | ")
    };
    let out = out.map_err(|e| RemuxError(e.to_string()))?;
    match status {
        Ok(s) if s.success() && !out.is_empty() => Ok(Bytes::from(out)),
        Ok(s) if s.success() => Err(RemuxError(format!("ffmpeg wrote nothing {}", tail()))),
        Ok(s) => Err(RemuxError(format!("ffmpeg failed ({s}): {}", tail()))),
        Err(e) => Err(RemuxError(format!("ffmpeg wait: {e}"))),
    }
}

/// A byte-bounded cache that forgets the oldest entries first.
pub(crate) struct Cache {
    map: HashMap<String, Bytes>,
    order: VecDeque<String>,
    bytes: usize,
    limit: usize,
}

impl Cache {
    pub(crate) fn new(limit: usize) -> Self {
        Self {
            map: HashMap::new(),
            order: VecDeque::new(),
            bytes: 0,
            limit,
        }
    }

    pub(crate) fn get(&self, key: &str) -> Option<Bytes> {
        self.map.get(key).cloned()
    }

    pub(crate) fn insert(&mut self, key: String, value: Bytes) {
        if value.len() > self.limit {
            return;
        }
        if let Some(old) = self.map.remove(&key) {
            self.bytes -= old.len();
            self.order.retain(|k| *k != key);
        }
        while self.bytes + value.len() > self.limit {
            let Some(k) = self.order.pop_front() else {
                break;
            };
            if let Some(v) = self.map.remove(&k) {
                self.bytes -= v.len();
            }
        }
        self.bytes += value.len();
        self.order.push_back(key.clone());
        self.map.insert(key, value);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cache_stays_within_its_bound_over_many_times_the_bound() {
        let mut c = Cache::new(1000);
        for i in 0..10_000 {
            c.insert(format!("k{i}"), Bytes::from(vec![0u8; 1 + i % 300]));
            assert!(c.bytes <= 1000);
            assert_eq!(c.bytes, c.map.values().map(Bytes::len).sum::<usize>());
            assert_eq!(c.map.len(), c.order.len());
        }
        assert!(c.get("k9999").is_some());
        assert!(c.get("k0").is_none());
        c.insert("big".into(), Bytes::from(vec![0u8; 1001]));
        assert!(c.get("big").is_none());
    }

    #[tokio::test]
    async fn bad_input_names_ffmpegs_complaint_and_is_not_cached() {
        let r = Remuxer::new();
        let e = r
            .get(
                "x".into(),
                Bytes::from_static(b"not a video"),
                &Output::FragmentedMp4,
            )
            .await
            .unwrap_err();
        assert!(e.0.contains("ffmpeg failed"), "{}", e.0);
        assert_eq!(r.cached_bytes(), 0);
    }
}
