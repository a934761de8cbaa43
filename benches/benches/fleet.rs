//! Fleet: N concurrent PutMedia sessions in this one process, each replaying a pre-encoded MKV at
//! real-time pace, against a kvs-emulator running as a separate process, so that this process's
//! CPU and memory are the producer's alone.
//!
//! Run (the target of docs/performance.md: 2,000 streams for 10 minutes, one client):
//!
//! ```sh
//! cargo bench -p kvs-benches --bench fleet -- --streams 2000 --duration 10m --ramp 60s --hold 70s
//! cargo bench -p kvs-benches --bench fleet -- --streams 200 --duration 30s --hold 15s  # a quick run
//! cargo bench -p kvs-benches --bench fleet -- --help
//! ```
//!
//! What happens:
//! - ffmpeg encodes, once, a clip (default 30 s, 640x360 25 fps H.264 baseline at ~0.9 Mbit/s with
//!   a 2 s GOP, plus mono AAC at 64 kbit/s) as Matroska on a pipe, exactly as a producer reading
//!   ffmpeg's stdout would get it (1 s / 32 KiB clusters, not keyframe aligned).
//! - The bench re-executes itself as the emulator (`--emulator-child`, the kvs-emulator library
//!   with `MediaRetention::MetadataOnly` so it does not keep 75 GB of media), and creates the
//!   streams through the control plane (`CreateStream` with the AWS SDK).
//! - One `PutMediaClient` serves the whole fleet, as one would in a service. Each stream,
//!   started at an even stagger over the ramp, opens a session from it with
//!   `start_session(SessionOptions::new(name))` (`CompletionAck::Auto`: DescribeStream,
//!   GetDataEndpoint, PutMedia) and every read interval
//!   sends the bytes of the blocks whose media time has come, as a fresh copy
//!   (`Bytes::copy_from_slice`-like, no buffer shared across streams), looping the clip with
//!   cluster timecodes continuing so the session sees one endless Segment.
//! - After `duration` each session closes (waiting for its last PERSISTED ack).
//!
//! Measured: this process's CPU (`getrusage(RUSAGE_SELF)`, sampled every second) and RSS
//! (`/proc/self/status` VmRSS every second, VmHWM at the end), the emulator's CPU and RSS from
//! `/proc/PID/stat` and `/proc/PID/status`, fragments sent / persisted / failed (summed from every
//! `SessionSummary`, and counted independently in the emulator), and RECEIVED / PERSISTED ack
//! latency (`FragmentAck::latency`: from the fragment's last byte handed to the socket).
//! Exits non-zero, loudly, unless every fragment sent was persisted and no session failed; and
//! refuses (before running) windows too short to measure: the steady window needs `duration -
//! ramp - 2 s >= 3 s`, and with `--hold` the open-sessions window needs `hold - ramp - 1 s >= 3 s`.

use std::io::{BufRead as _, BufReader, Write as _};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use aws_credential_types::Credentials;
use bytes::{Bytes, BytesMut};
use futures::{SinkExt, StreamExt};
use kvs_putmedia::ack::AckEventType;
use kvs_putmedia::mkv::{RefragmentConfig, TimecodeMode};
use kvs_putmedia::{PutMediaClient, SessionEvent, SessionOptions, SessionSummary};

const USAGE: &str = "\
fleet: N PutMedia sessions in one process at real-time pace against a kvs-emulator child

options (all optional):
  --streams N            concurrent streams (default 2000)
  --duration D           media streamed per stream, e.g. 600, 90s, 10m (default 10m)
  --ramp D               stagger of the stream starts (default 10s, at most the duration)
  --read-interval-ms MS  how often each stream reads its 'pipe' (default 40: ffmpeg at 25 fps)
  --clip-seconds S       length of the looped clip (default 30)
  --gop-seconds G        keyframe interval of the clip and the sessions' target fragment
                         duration (default 2): the media a session holds for resend scales with it
  --persist-delay-ms MS  emulator delay between RECEIVED and PERSISTED (default 100)
  --worker-threads N     producer tokio worker threads (default: one per core)
  --hold D               open every session, then wait this long before any media (default 0):
                         the RSS printed for that window is the fixed cost of open sessions
  --json FILE            also write the figures as JSON
";

#[derive(Debug, Clone)]
struct Args {
    streams: usize,
    duration: Duration,
    ramp: Duration,
    read_interval: Duration,
    clip_seconds: u32,
    gop_seconds: u32,
    persist_delay: Duration,
    worker_threads: Option<usize>,
    hold: Duration,
    json: Option<PathBuf>,
    emulator_child: bool,
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    let (num, unit) = match s.find(|c: char| !c.is_ascii_digit() && c != '.') {
        Some(i) => s.split_at(i),
        None => (s, "s"),
    };
    let n: f64 = num.parse().map_err(|_| format!("bad duration {s:?}"))?;
    let secs = match unit {
        "ms" => n / 1000.0,
        "s" => n,
        "m" | "min" => n * 60.0,
        "h" => n * 3600.0,
        _ => return Err(format!("bad duration unit in {s:?} (ms, s, m, h)")),
    };
    Ok(Duration::from_secs_f64(secs))
}

impl Args {
    fn parse() -> Result<Self, String> {
        let mut a = Args {
            streams: 2000,
            duration: Duration::from_secs(600),
            ramp: Duration::from_secs(10),
            read_interval: Duration::from_millis(40),
            clip_seconds: 30,
            gop_seconds: 2,
            persist_delay: Duration::from_millis(100),
            worker_threads: None,
            hold: Duration::ZERO,
            json: None,
            emulator_child: false,
        };
        let mut it = std::env::args().skip(1);
        while let Some(flag) = it.next() {
            let mut value = || it.next().ok_or(format!("{flag} needs a value"));
            let num = |v: String| v.parse::<u64>().map_err(|e| format!("{v:?}: {e}"));
            match flag.as_str() {
                // cargo bench passes --bench; harmless.
                "--bench" => {}
                "--help" | "-h" => return Err(String::new()),
                "--streams" => a.streams = num(value()?)? as usize,
                "--duration" => a.duration = parse_duration(&value()?)?,
                "--ramp" => a.ramp = parse_duration(&value()?)?,
                "--read-interval-ms" => a.read_interval = Duration::from_millis(num(value()?)?),
                "--clip-seconds" => a.clip_seconds = num(value()?)? as u32,
                "--gop-seconds" => a.gop_seconds = num(value()?)? as u32,
                "--persist-delay-ms" => a.persist_delay = Duration::from_millis(num(value()?)?),
                "--worker-threads" => a.worker_threads = Some(num(value()?)? as usize),
                "--json" => a.json = Some(PathBuf::from(value()?)),
                "--hold" => a.hold = parse_duration(&value()?)?,
                "--emulator-child" => a.emulator_child = true,
                other => return Err(format!("unknown option {other:?}")),
            }
        }
        if a.streams == 0 || a.duration.is_zero() || a.read_interval.is_zero() {
            return Err("streams, duration and read interval must be above zero".into());
        }
        if a.gop_seconds == 0 || a.clip_seconds < 2 * a.gop_seconds {
            return Err(
                "--gop-seconds must be above zero and --clip-seconds at least two GOPs".into(),
            );
        }
        a.ramp = a.ramp.min(a.duration);
        a.check_windows()?;
        Ok(a)
    }
}

/// Shortest measurement window worth a figure: the sampler takes one sample a second, and a
/// rate needs two.
const MIN_WINDOW: Duration = Duration::from_secs(3);
/// Media starts this long after the ramp before the steady window opens (one GOP).
const SETTLE: Duration = Duration::from_secs(2);

impl Args {
    /// The windows the figures come from: refuse a run that could not measure them, rather
    /// than print zeros and NaN.
    fn check_windows(&self) -> Result<(), String> {
        if self.emulator_child {
            return Ok(());
        }
        let steady = self.duration.saturating_sub(self.ramp + SETTLE);
        if steady < MIN_WINDOW {
            return Err(format!(
                "the steady window (all streams sending, none closing: duration {:?} - ramp {:?} \
                 - {:?}) is {:?}, under {:?}: raise --duration to at least {:?} or shorten --ramp",
                self.duration,
                self.ramp,
                SETTLE,
                steady,
                MIN_WINDOW,
                self.ramp + SETTLE + MIN_WINDOW,
            ));
        }
        if !self.hold.is_zero() {
            // All sessions open (after the ramp, with half a second margin on each side), no
            // media yet.
            let open = self.hold.saturating_sub(self.ramp + Duration::from_secs(1));
            if open < MIN_WINDOW {
                return Err(format!(
                    "the open-sessions window (hold {:?} - ramp {:?} - 1 s) is {:?}, under {:?}: \
                     raise --hold to at least {:?} or shorten --ramp",
                    self.hold,
                    self.ramp,
                    open,
                    MIN_WINDOW,
                    self.ramp + Duration::from_secs(1) + MIN_WINDOW,
                ));
            }
        }
        Ok(())
    }
}

fn main() {
    let args = match Args::parse() {
        Ok(a) => a,
        Err(e) => {
            if !e.is_empty() {
                eprintln!("fleet: {e}");
            }
            eprint!("{USAGE}");
            std::process::exit(if e.is_empty() { 0 } else { 2 });
        }
    };
    raise_nofile_limit();
    if args.emulator_child {
        emulator_child(&args);
        return;
    }
    match run(&args) {
        Ok(true) => {}
        Ok(false) => {
            eprintln!("fleet: FAILED: not every fragment was persisted (see above)");
            std::process::exit(1);
        }
        Err(e) => {
            eprintln!("fleet: FAILED: {e}");
            std::process::exit(1);
        }
    }
}

/// 1,000 streams need ~1,000 sockets on each side; lift the soft limit to the hard one.
#[allow(unsafe_code)]
fn raise_nofile_limit() {
    // SAFETY: getrlimit/setrlimit only read and write the struct we pass.
    unsafe {
        let mut r: libc::rlimit = std::mem::zeroed();
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut r) == 0 && r.rlim_cur < r.rlim_max {
            r.rlim_cur = r.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &r);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The emulator, as a child process of this same binary.

fn emulator_child(args: &Args) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("emulator runtime");
    let emu = rt
        .block_on(
            kvs_emulator::Emulator::builder()
                .with_media_retention(kvs_emulator::MediaRetention::MetadataOnly)
                .with_persist_delay(args.persist_delay)
                .start(),
        )
        .expect("starting the emulator");
    println!("listening on {}", emu.url());
    std::io::stdout().flush().ok();
    // Commands on stdin, read on this thread while the runtime's workers serve; EOF (the bench
    // ended or died) stops the emulator.
    for line in std::io::stdin().lock().lines() {
        let Ok(line) = line else { break };
        // "count PREFIX N": fragments stored and persisted over streams PREFIX0..PREFIX{N-1}.
        let parts: Vec<&str> = line.split_whitespace().collect();
        if let ["count", prefix, n] = parts[..] {
            let n: usize = n.parse().unwrap_or(0);
            let (mut stored, mut persisted, mut bytes) = (0u64, 0u64, 0u64);
            for i in 0..n {
                for f in emu.fragments(&format!("{prefix}{i}")) {
                    stored += 1;
                    persisted += u64::from(f.persisted);
                    bytes += f.size as u64;
                }
            }
            println!("count {stored} {persisted} {bytes}");
            std::io::stdout().flush().ok();
        }
    }
    rt.block_on(emu.shutdown());
}

struct EmulatorProcess {
    child: Child,
    url: String,
    stdout: BufReader<std::process::ChildStdout>,
}

impl EmulatorProcess {
    fn spawn(args: &Args) -> Result<Self, String> {
        let exe = std::env::current_exe().map_err(|e| e.to_string())?;
        let mut child = Command::new(exe)
            .arg("--emulator-child")
            .args([
                "--persist-delay-ms",
                &args.persist_delay.as_millis().to_string(),
            ])
            // A heap profiler preloaded into the bench (heaptrack, see docs/performance.md)
            // profiles the producer only.
            .env_remove("LD_PRELOAD")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .map_err(|e| format!("spawning the emulator: {e}"))?;
        let mut stdout = BufReader::new(child.stdout.take().expect("piped"));
        let mut line = String::new();
        stdout.read_line(&mut line).map_err(|e| e.to_string())?;
        let url = line
            .trim()
            .strip_prefix("listening on ")
            .ok_or_else(|| format!("emulator said {line:?}"))?
            .to_owned();
        Ok(Self { child, url, stdout })
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// (stored, persisted, bytes) over the fleet's streams, counted by the emulator itself.
    fn count(&mut self, prefix: &str, n: usize) -> Result<(u64, u64, u64), String> {
        let stdin = self.child.stdin.as_mut().ok_or("emulator stdin closed")?;
        writeln!(stdin, "count {prefix} {n}").map_err(|e| e.to_string())?;
        stdin.flush().map_err(|e| e.to_string())?;
        let mut line = String::new();
        self.stdout
            .read_line(&mut line)
            .map_err(|e| e.to_string())?;
        let v: Vec<u64> = line
            .split_whitespace()
            .skip(1)
            .filter_map(|x| x.parse().ok())
            .collect();
        match v[..] {
            [a, b, c] => Ok((a, b, c)),
            _ => Err(format!("emulator said {line:?}")),
        }
    }
}

impl Drop for EmulatorProcess {
    fn drop(&mut self) {
        // Closing stdin stops it; wait briefly, then make sure.
        drop(self.child.stdin.take());
        let t0 = Instant::now();
        while t0.elapsed() < Duration::from_secs(5) {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

// ---------------------------------------------------------------------------------------------
// The clip, and each stream's endless, paced reading of it.

fn make_clip(dir: &Path, seconds: u32, gop_seconds: u32) -> Result<PathBuf, String> {
    let path = dir.join(format!("fleet-clip-{seconds}s-gop{gop_seconds}s.mkv"));
    let gop = (25 * gop_seconds).to_string();
    if path.exists() {
        return Ok(path);
    }
    let tmp = path.with_extension("part");
    let out = std::fs::File::create(&tmp).map_err(|e| e.to_string())?;
    let t = seconds.to_string();
    let status = Command::new("ffmpeg")
        .args(["-nostdin", "-hide_banner", "-loglevel", "error", "-y"])
        .args(["-f", "lavfi", "-i", "testsrc2=size=640x360:rate=25"])
        .args(["-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000"])
        .args(["-t", &t, "-c:v", "libx264", "-profile:v", "baseline"])
        .args(["-preset", "veryfast", "-b:v", "900k", "-maxrate", "1000k"])
        .args(["-bufsize", "1000k", "-g", &gop, "-keyint_min", &gop])
        .args(["-sc_threshold", "0", "-bf", "0", "-pix_fmt", "yuv420p"])
        .args(["-c:a", "aac", "-b:a", "64k", "-ac", "1"])
        // On a pipe, as a producer reading ffmpeg's stdout gets it.
        .args(["-f", "matroska", "pipe:1"])
        .stdout(out)
        .status()
        .map_err(|e| format!("running ffmpeg: {e}"))?;
    if !status.success() {
        return Err(format!("ffmpeg failed: {status}"));
    }
    std::fs::rename(&tmp, &path).map_err(|e| e.to_string())?;
    Ok(path)
}

/// An EBML element header: (id, data size or `None` when unknown, header length).
fn element(b: &[u8]) -> Option<(u32, Option<u64>, usize)> {
    let first = *b.first()?;
    let id_len = first.leading_zeros() as usize + 1;
    if id_len > 4 || b.len() < id_len + 1 {
        return None;
    }
    let id = b[..id_len]
        .iter()
        .fold(0u32, |a, &x| (a << 8) | u32::from(x));
    let s0 = b[id_len];
    let size_len = s0.leading_zeros() as usize + 1;
    if size_len > 8 || b.len() < id_len + size_len {
        return None;
    }
    let mut size = u64::from(s0) & ((1u64 << (8 - size_len)) - 1);
    let mut all_ones = size == (1u64 << (8 - size_len)) - 1;
    for &x in &b[id_len + 1..id_len + size_len] {
        size = (size << 8) | u64::from(x);
        all_ones &= x == 0xFF;
    }
    Some((id, (!all_ones).then_some(size), id_len + size_len))
}

const ID_SEGMENT: u32 = 0x1853_8067;
const ID_INFO: u32 = 0x1549_A966;
const ID_TRACKS: u32 = 0x1654_AE6B;
const ID_CLUSTER: u32 = 0x1F43_B675;
const ID_TIMECODE: u32 = 0xE7;
const ID_SIMPLE_BLOCK: u32 = 0xA3;
const ID_BLOCK_GROUP: u32 = 0xA0;
const ID_BLOCK: u32 = 0xA1;
const ID_TIMECODE_SCALE: u32 = 0x2A_D7B1;
/// Rewritten cluster header: ID (4) + 8-byte size + Timecode (ID, size 8, 8-byte value).
const CLUSTER_HEADER: usize = 4 + 8 + 2 + 8;
const CLUSTER_TC_AT: usize = 14;

/// The clip, prepared once: the stream header (EBML, Segment of unknown size, Info, Tracks) and
/// the clusters, each with a rewritten fixed-width header so its timecode can be moved forward
/// on every loop without changing any size.
struct Clip {
    prefix: Bytes,
    /// Every cluster, rewritten, back to back.
    body: Vec<u8>,
    /// (media time in ms, end offset in `body`) of every block, in file order.
    blocks: Vec<(u64, usize)>,
    /// (offset in `body`, timecode) of every cluster header.
    clusters: Vec<(usize, u64)>,
    /// Media time of one loop: the next loop's timecodes are this much later.
    period_ms: u64,
}

impl Clip {
    fn parse(file: &[u8]) -> Result<Self, String> {
        let bad = |what: &str| format!("clip: {what}");
        let (_, ebml_size, h) = element(file).ok_or_else(|| bad("no EBML header"))?;
        let ebml_end = h + ebml_size.ok_or_else(|| bad("EBML header of unknown size"))? as usize;
        let mut prefix = BytesMut::from(&file[..ebml_end]);
        let (id, _, h) = element(&file[ebml_end..]).ok_or_else(|| bad("no Segment"))?;
        if id != ID_SEGMENT {
            return Err(bad("no Segment after the EBML header"));
        }
        prefix.extend_from_slice(&[0x18, 0x53, 0x80, 0x67, 0x01, 0xFF, 0xFF, 0xFF]);
        prefix.extend_from_slice(&[0xFF, 0xFF, 0xFF, 0xFF]);
        let mut pos = ebml_end + h;
        let (mut body, mut blocks, mut clusters) = (Vec::new(), Vec::new(), Vec::new());
        let mut max_ms = 0u64;
        while pos < file.len() {
            let (id, size, h) = element(&file[pos..]).ok_or_else(|| bad("truncated element"))?;
            let size = size.ok_or_else(|| bad("level-1 element of unknown size"))? as usize;
            let data = &file[pos + h..pos + h + size];
            match id {
                ID_INFO => {
                    let mut p = 0;
                    while p < data.len() {
                        let (cid, cs, ch) = element(&data[p..]).ok_or_else(|| bad("Info"))?;
                        let cs = cs.unwrap_or(0) as usize;
                        if cid == ID_TIMECODE_SCALE {
                            let v = data[p + ch..p + ch + cs]
                                .iter()
                                .fold(0u64, |a, &x| (a << 8) | u64::from(x));
                            if v != 1_000_000 {
                                return Err(bad("TimecodeScale is not 1 ms"));
                            }
                        }
                        p += ch + cs;
                    }
                    prefix.extend_from_slice(&file[pos..pos + h + size]);
                }
                ID_TRACKS => prefix.extend_from_slice(&file[pos..pos + h + size]),
                ID_CLUSTER => {
                    let mut tc = None;
                    let mut rest = Vec::new();
                    let mut times = Vec::new();
                    let mut p = 0;
                    while p < data.len() {
                        let (cid, cs, ch) = element(&data[p..]).ok_or_else(|| bad("Cluster"))?;
                        let cs = cs.ok_or_else(|| bad("Cluster child of unknown size"))? as usize;
                        let cdata = &data[p + ch..p + ch + cs];
                        let block_rel = |b: &[u8]| -> Option<i64> {
                            // Track number (a 1-byte vint for ffmpeg's tracks), then int16.
                            let tl = b.first()?.leading_zeros() as usize + 1;
                            Some(i64::from(i16::from_be_bytes([
                                *b.get(tl)?,
                                *b.get(tl + 1)?,
                            ])))
                        };
                        match cid {
                            ID_TIMECODE => {
                                tc = Some(cdata.iter().fold(0u64, |a, &x| (a << 8) | u64::from(x)));
                            }
                            ID_SIMPLE_BLOCK | ID_BLOCK_GROUP => {
                                let rel = if cid == ID_SIMPLE_BLOCK {
                                    block_rel(cdata)
                                } else {
                                    // The Block inside the group.
                                    let find = || {
                                        let mut q = 0;
                                        while q < cdata.len() {
                                            let (gid, gs, gh) = element(&cdata[q..])?;
                                            let gs = gs? as usize;
                                            if gid == ID_BLOCK {
                                                return block_rel(&cdata[q + gh..q + gh + gs]);
                                            }
                                            q += gh + gs;
                                        }
                                        None
                                    };
                                    find()
                                }
                                .ok_or_else(|| bad("block without a timecode"))?;
                                rest.extend_from_slice(&data[p..p + ch + cs]);
                                times.push((rel, rest.len()));
                            }
                            // CRC-32 (it would no longer match), Void: dropped.
                            0xBF | 0xEC => {}
                            _ => rest.extend_from_slice(&data[p..p + ch + cs]),
                        }
                        p += ch + cs;
                    }
                    let tc = tc.ok_or_else(|| bad("Cluster without a Timecode"))?;
                    let at = body.len();
                    body.extend_from_slice(&[0x1F, 0x43, 0xB6, 0x75, 0x01]);
                    body.extend_from_slice(&((10 + rest.len()) as u64).to_be_bytes()[1..]);
                    body.extend_from_slice(&[0xE7, 0x88]);
                    body.extend_from_slice(&tc.to_be_bytes());
                    debug_assert_eq!(body.len() - at, CLUSTER_HEADER);
                    clusters.push((at, tc));
                    let base = body.len();
                    body.extend_from_slice(&rest);
                    for (rel, end) in times {
                        let ms = (tc as i64 + rel).max(0) as u64;
                        max_ms = max_ms.max(ms);
                        blocks.push((ms, base + end));
                    }
                }
                // SeekHead, Void, Tags, Cues, Chapters: not needed by a live stream.
                _ => {}
            }
            pos += h + size;
        }
        if blocks.is_empty() {
            return Err(bad("no blocks"));
        }
        // The next loop starts one 25 fps frame after the last block, so every track's
        // timecodes keep increasing across the seam.
        let period_ms = max_ms + 40;
        Ok(Self {
            prefix: prefix.freeze(),
            body,
            blocks,
            clusters,
            period_ms,
        })
    }
}

/// One stream's position in its endless replay of the clip.
struct Reader {
    prefix_sent: bool,
    lap: u64,
    next_block: usize,
    pos: usize,
}

impl Reader {
    fn new() -> Self {
        Self {
            prefix_sent: false,
            lap: 0,
            next_block: 0,
            pos: 0,
        }
    }

    /// A fresh buffer with every byte whose media time is at most `media_ms` and not read yet,
    /// or `None` when nothing new is due: what a read of ffmpeg's pipe returns under `-re`.
    fn read(&mut self, clip: &Clip, media_ms: u64) -> Option<Bytes> {
        let mut out = BytesMut::new();
        if !self.prefix_sent {
            out.extend_from_slice(&clip.prefix);
            self.prefix_sent = true;
        }
        loop {
            let shift = self.lap * clip.period_ms;
            let start = self.pos;
            while let Some(&(ms, end)) = clip.blocks.get(self.next_block) {
                if ms + shift > media_ms {
                    break;
                }
                self.pos = end;
                self.next_block += 1;
            }
            if self.pos > start {
                let base = out.len();
                out.extend_from_slice(&clip.body[start..self.pos]);
                // Move the timecodes of the cluster headers copied by this lap's shift.
                let first = clip.clusters.partition_point(|c| c.0 < start);
                for &(at, tc) in clip.clusters[first..].iter().take_while(|c| c.0 < self.pos) {
                    let o = base + at - start + CLUSTER_TC_AT;
                    out[o..o + 8].copy_from_slice(&(tc + shift).to_be_bytes());
                }
            }
            if self.next_block < clip.blocks.len() {
                break;
            }
            self.lap += 1;
            self.next_block = 0;
            self.pos = 0;
        }
        (!out.is_empty()).then(|| out.freeze())
    }
}

// ---------------------------------------------------------------------------------------------
// Measurements.

/// A latency histogram with ~2% wide log buckets, fixed size, lock-free.
struct Histogram {
    buckets: Vec<AtomicU64>,
}

const HIST_BUCKETS: usize = 1024;
const HIST_BASE: f64 = 1.02;

impl Histogram {
    fn new() -> Self {
        Self {
            buckets: (0..HIST_BUCKETS).map(|_| AtomicU64::new(0)).collect(),
        }
    }

    fn record(&self, d: Duration) {
        let us = d.as_micros().max(1) as f64;
        let i = (us.ln() / HIST_BASE.ln()) as usize;
        self.buckets[i.min(HIST_BUCKETS - 1)].fetch_add(1, Ordering::Relaxed);
    }

    fn count(&self) -> u64 {
        self.buckets.iter().map(|b| b.load(Ordering::Relaxed)).sum()
    }

    /// The `q` quantile in ms (the bucket's geometric middle).
    fn quantile_ms(&self, q: f64) -> f64 {
        let total = self.count();
        if total == 0 {
            return f64::NAN;
        }
        let target = ((total as f64) * q).ceil().max(1.0) as u64;
        let mut seen = 0;
        for (i, b) in self.buckets.iter().enumerate() {
            seen += b.load(Ordering::Relaxed);
            if seen >= target {
                return HIST_BASE.powf(i as f64 + 0.5) / 1000.0;
            }
        }
        f64::NAN
    }
}

struct Stats {
    received: Histogram,
    persisted: Histogram,
    bytes_read: AtomicU64,
    reads: AtomicU64,
}

/// CPU time (user + system) of this whole process.
#[allow(unsafe_code)]
fn process_cpu() -> Duration {
    // SAFETY: an all-zero rusage is valid, and getrusage only writes the struct we pass.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    let rc = unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) };
    assert_eq!(rc, 0);
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

/// A `/proc/PID/status` field in kB (VmRSS, VmHWM).
fn status_kb(pid: &str, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(field))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

/// CPU seconds (user + system) of another process, from `/proc/PID/stat`.
#[allow(unsafe_code)]
fn pid_cpu(pid: u32) -> f64 {
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            // Fields after the ")" that ends the command name; utime and stime are 14 and 15.
            let rest = &s[s.rfind(')')? + 2..];
            let f: Vec<&str> = rest.split_whitespace().collect();
            Some((f.get(11)?.parse::<f64>().ok()? + f.get(12)?.parse::<f64>().ok()?) / hz)
        })
        .unwrap_or(0.0)
}

/// Bytes handed out by glibc's malloc and not yet freed (arena chunks plus mmap'd blocks), in
/// kB. `mallinfo2` walks the arenas under their locks, so the sampler asks every 5 s only.
#[cfg(target_env = "gnu")]
#[allow(unsafe_code)]
fn heap_in_use_kb() -> u64 {
    // SAFETY: mallinfo2 has no preconditions and returns a plain struct.
    let mi = unsafe { libc::mallinfo2() };
    ((mi.uordblks + mi.hblkhd) / 1024) as u64
}

/// Not glibc: no figure (printed as "-", never as 0).
#[cfg(not(target_env = "gnu"))]
fn heap_in_use_kb() -> u64 {
    0
}

#[derive(Debug, Clone, Copy)]
struct Sample {
    t: f64,
    cpu: f64,
    rss_kb: u64,
    /// glibc's own count of the bytes it has handed out and not had back (`mallinfo2`), so the
    /// RSS can be split into live heap and what the allocator keeps. Every 5th sample only:
    /// the call locks every arena, which the producer's threads would feel each second.
    heap_kb: Option<u64>,
    emu_cpu: f64,
    emu_rss_kb: u64,
}

fn sampler(
    emu_pid: u32,
    t0: Instant,
    stop: Arc<AtomicU64>,
) -> std::thread::JoinHandle<Vec<Sample>> {
    std::thread::spawn(move || {
        let mut out = Vec::new();
        let mut next = t0;
        while stop.load(Ordering::Relaxed) == 0 {
            out.push(Sample {
                t: t0.elapsed().as_secs_f64(),
                cpu: process_cpu().as_secs_f64(),
                rss_kb: status_kb("self", "VmRSS:"),
                heap_kb: (out.len() % 5 == 0).then(heap_in_use_kb),
                emu_cpu: pid_cpu(emu_pid),
                emu_rss_kb: status_kb(&emu_pid.to_string(), "VmRSS:"),
            });
            next += Duration::from_secs(1);
            std::thread::sleep(next.saturating_duration_since(Instant::now()));
        }
        out
    })
}

// ---------------------------------------------------------------------------------------------
// The run.

const PREFIX: &str = "fleet-";

struct Env {
    url: String,
    creds: Credentials,
    region: String,
}

async fn create_streams(env: &Env, n: usize) -> Result<(), String> {
    let conf = aws_sdk_kinesisvideo::Config::builder()
        .behavior_version(aws_sdk_kinesisvideo::config::BehaviorVersion::latest())
        .region(aws_sdk_kinesisvideo::config::Region::new(
            env.region.clone(),
        ))
        .credentials_provider(env.creds.clone())
        .endpoint_url(&env.url)
        .build();
    let kvs = aws_sdk_kinesisvideo::Client::from_conf(conf);
    for i in 0..n {
        kvs.create_stream()
            .stream_name(format!("{PREFIX}{i}"))
            .data_retention_in_hours(24)
            .send()
            .await
            .map_err(|e| {
                format!(
                    "CreateStream {PREFIX}{i}: {}",
                    aws_sdk_kinesisvideo::error::DisplayErrorContext(&e)
                )
            })?;
    }
    Ok(())
}

fn epoch_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_millis() as u64
}

/// The one client every session of the fleet starts from, as a service would hold it.
fn fleet_client(env: &Env, gop_seconds: u32) -> Result<PutMediaClient, String> {
    let fragments = RefragmentConfig::builder()
        .with_target_fragment_duration(Duration::from_secs(gop_seconds.into()))
        .build()
        .map_err(|e| format!("fragment settings: {e}"))?;
    PutMediaClient::builder()
        .with_refragment_config(fragments)
        .with_region(&env.region)
        .with_credentials(env.creds.clone())
        .with_endpoint_url(&env.url)
        .with_allow_http(true)
        .build()
        .map_err(|e| format!("building the client: {e}"))
}

async fn one_stream(
    i: usize,
    client: PutMediaClient,
    clip: Arc<Clip>,
    stats: Arc<Stats>,
    start_at: tokio::time::Instant,
    args: Args,
) -> Result<SessionSummary, String> {
    tokio::time::sleep_until(start_at).await;
    let name = format!("{PREFIX}{i}");
    let opts = SessionOptions::new(name.as_str()).with_timecode_mode(TimecodeMode::Absolute {
        origin_epoch_ms: epoch_ms(),
    });
    let (mut sink, mut acks) = client
        .start_session(opts)
        .await
        .map_err(|e| format!("{name}: {e}"))?;
    let ack_stats = stats.clone();
    let ack_task = tokio::spawn(async move {
        let mut errors = Vec::new();
        while let Some(ev) = acks.next().await {
            match ev {
                Ok(SessionEvent::Fragment(f)) => match (&f.event, f.latency) {
                    (AckEventType::Received, Some(l)) => ack_stats.received.record(l),
                    (AckEventType::Persisted, Some(l)) => ack_stats.persisted.record(l),
                    _ => {}
                },
                Ok(_) => {}
                Err(e) => errors.push(e.to_string()),
            }
        }
        errors
    });
    // With --hold, every session opens during the ramp and media starts for all of them at
    // the same offset after their own start, so the stagger is kept.
    tokio::time::sleep(args.hold).await;
    let started = tokio::time::Instant::now();
    let mut tick = tokio::time::interval(args.read_interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut reader = Reader::new();
    let limit_ms = args.duration.as_millis() as u64;
    let send_result = async {
        loop {
            tick.tick().await;
            let media_ms = (started.elapsed().as_millis() as u64).min(limit_ms);
            if let Some(chunk) = reader.read(&clip, media_ms) {
                stats.reads.fetch_add(1, Ordering::Relaxed);
                stats
                    .bytes_read
                    .fetch_add(chunk.len() as u64, Ordering::Relaxed);
                sink.send(chunk).await?;
            }
            if media_ms >= limit_ms {
                return sink.close().await;
            }
        }
    }
    .await;
    let errors = ack_task.await.unwrap_or_default();
    match send_result {
        Ok(summary) if errors.is_empty() => Ok(summary),
        Ok(_) => Err(format!("{name}: ack stream errors: {errors:?}")),
        Err(e) => Err(format!("{name}: {e}; ack stream errors: {errors:?}")),
    }
}

fn run(args: &Args) -> Result<bool, String> {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    let clip_path = make_clip(&dir, args.clip_seconds, args.gop_seconds)?;
    let file = std::fs::read(&clip_path).map_err(|e| e.to_string())?;
    let clip = Arc::new(Clip::parse(&file)?);
    let clip_rate = clip.body.len() as f64 / (clip.period_ms as f64 / 1000.0);
    eprintln!(
        "fleet: clip {} ({} bytes, loop {} ms, {:.2} Mbit/s), {} streams x {:?}, ramp {:?}, read every {:?}",
        clip_path.display(),
        file.len(),
        clip.period_ms,
        clip_rate * 8.0 / 1e6,
        args.streams,
        args.duration,
        args.ramp,
        args.read_interval,
    );
    let mut emu = EmulatorProcess::spawn(args)?;
    let emu_pid = emu.pid();
    let env = Arc::new(Env {
        url: emu.url.clone(),
        creds: Credentials::new(
            kvs_emulator::DEFAULT_ACCESS_KEY_ID,
            kvs_emulator::DEFAULT_SECRET_ACCESS_KEY,
            None,
            None,
            "fleet",
        ),
        region: "us-east-1".into(),
    });
    let mut rtb = tokio::runtime::Builder::new_multi_thread();
    rtb.enable_all();
    if let Some(n) = args.worker_threads {
        rtb.worker_threads(n);
    }
    let rt = rtb.build().map_err(|e| e.to_string())?;
    rt.block_on(create_streams(&env, args.streams))?;
    let client = fleet_client(&env, args.gop_seconds)?;
    let stats = Arc::new(Stats {
        received: Histogram::new(),
        persisted: Histogram::new(),
        bytes_read: AtomicU64::new(0),
        reads: AtomicU64::new(0),
    });

    let t0 = Instant::now();
    let stop = Arc::new(AtomicU64::new(0));
    let sampling = sampler(emu_pid, t0, stop.clone());
    let summaries: Vec<Result<SessionSummary, String>> = rt.block_on(async {
        let base = tokio::time::Instant::now();
        let n = args.streams;
        let tasks: Vec<_> = (0..n)
            .map(|i| {
                let at = base + args.ramp.mul_f64(i as f64 / n as f64);
                tokio::spawn(one_stream(
                    i,
                    client.clone(),
                    clip.clone(),
                    stats.clone(),
                    at,
                    args.clone(),
                ))
            })
            .collect();
        let mut out = Vec::with_capacity(n);
        for t in tasks {
            out.push(t.await.unwrap_or_else(|e| Err(format!("task: {e}"))));
        }
        out
    });
    let wall = t0.elapsed();
    stop.store(1, Ordering::Relaxed);
    let samples = sampling.join().map_err(|_| "sampler panicked")?;
    let hwm_kb = status_kb("self", "VmHWM:");
    let emu_hwm_kb = status_kb(&emu_pid.to_string(), "VmHWM:");
    let (emu_stored, emu_persisted, emu_bytes) = emu.count(PREFIX, args.streams)?;
    drop(rt);

    let mut total = SessionSummary::default();
    let mut failed_sessions = Vec::new();
    for s in &summaries {
        match s {
            Ok(s) => {
                total.fragments_sent += s.fragments_sent;
                total.fragments_received += s.fragments_received;
                total.fragments_persisted += s.fragments_persisted;
                total
                    .fragments_failed
                    .extend(s.fragments_failed.iter().cloned());
                total.bytes_sent += s.bytes_sent;
                total.peak_buffered_bytes = total.peak_buffered_bytes.max(s.peak_buffered_bytes);
                total.warnings += s.warnings;
                total.events_dropped += s.events_dropped;
            }
            Err(e) => failed_sessions.push(e.clone()),
        }
    }

    // Steady state: every stream started (after the ramp, plus one GOP), before the first close.
    let hold = args.hold.as_secs_f64();
    let steady_from = hold + args.ramp.as_secs_f64() + 2.0;
    let steady_to = hold + args.duration.as_secs_f64();
    let window: Vec<&Sample> = samples
        .iter()
        .filter(|s| s.t >= steady_from && s.t <= steady_to)
        .collect();
    let (Some(first_w), Some(last_w)) = (window.first(), window.last()) else {
        return Err(format!(
            "no sample in the steady window {steady_from:.1}-{steady_to:.1} s: nothing to report"
        ));
    };
    if last_w.t - first_w.t < MIN_WINDOW.as_secs_f64() - 1.0 {
        return Err(format!(
            "the steady window held {} samples over {:.1} s: too few to report a rate",
            window.len(),
            last_w.t - first_w.t
        ));
    }
    let rate = |f: fn(&Sample) -> f64| (f(last_w) - f(first_w)) / (last_w.t - first_w.t);
    let steady_cores = rate(|s| s.cpu);
    let steady_emu_cores = rate(|s| s.emu_cpu);
    if stats.received.count() == 0 || stats.persisted.count() == 0 {
        return Err("no RECEIVED or PERSISTED ack latency was measured".into());
    }
    let last = samples.last().copied();
    let total_cpu = process_cpu().as_secs_f64() - samples.first().map_or(0.0, |s| s.cpu);
    let emu_cpu_total =
        last.map_or(0.0, |s| s.emu_cpu) - samples.first().map_or(0.0, |s| s.emu_cpu);

    let media_secs = args.duration.as_secs_f64();
    let bytes_read = stats.bytes_read.load(Ordering::Relaxed);
    let mbps = bytes_read as f64 / media_secs / 1e6;
    let mb = |kb: u64| kb as f64 / 1024.0;

    let mut report = String::new();
    let mut line = |s: String| {
        println!("{s}");
        report.push_str(&s);
        report.push('\n');
    };
    line("| streams | media per stream | aggregate media rate | producer CPU (whole run) | producer cores, steady | producer peak RSS (VmHWM) | emulator cores, steady | emulator peak RSS |".into());
    line("|---|---|---|---|---|---|---|---|".into());
    line(format!(
        "| {} | {:.0} s | {:.2} MB/s ({:.1} Mbit/s) | {:.1} s over {:.0} s wall | {:.3} | {:.1} MiB | {:.3} | {:.1} MiB |",
        args.streams,
        media_secs,
        mbps,
        mbps * 8.0,
        total_cpu,
        wall.as_secs_f64(),
        steady_cores,
        mb(hwm_kb),
        steady_emu_cores,
        mb(emu_hwm_kb),
    ));
    line(String::new());
    line("| fragments sent | received | persisted | failed | emulator stored / persisted | failed sessions | RECEIVED p50 / p99 | PERSISTED p50 / p99 |".into());
    line("|---|---|---|---|---|---|---|---|".into());
    line(format!(
        "| {} | {} | {} | {} | {} / {} | {} | {:.1} / {:.1} ms | {:.1} / {:.1} ms |",
        total.fragments_sent,
        total.fragments_received,
        total.fragments_persisted,
        total.fragments_failed.len(),
        emu_stored,
        emu_persisted,
        failed_sessions.len(),
        stats.received.quantile_ms(0.5),
        stats.received.quantile_ms(0.99),
        stats.persisted.quantile_ms(0.5),
        stats.persisted.quantile_ms(0.99),
    ));
    line(String::new());
    line("Producer RSS per minute (min / max, MiB), its live malloc heap (max, MiB), emulator CPU cores in that minute:".into());
    line(String::new());
    line(
        "| minute | producer RSS min | producer RSS max | producer heap max | producer cores | emulator cores |".into(),
    );
    line("|---|---|---|---|---|---|".into());
    let minutes = (samples.last().map_or(0.0, |s| s.t) / 60.0).ceil() as usize;
    for m in 0..minutes {
        let ss: Vec<&Sample> = samples
            .iter()
            .filter(|s| s.t >= m as f64 * 60.0 && s.t <= (m + 1) as f64 * 60.0)
            .collect();
        let (Some(a), Some(b)) = (ss.first(), ss.last()) else {
            continue;
        };
        let dt = (b.t - a.t).max(1e-9);
        line(format!(
            "| {} | {:.1} | {:.1} | {} | {:.3} | {:.3} |",
            m + 1,
            mb(ss.iter().map(|s| s.rss_kb).min().unwrap_or(0)),
            mb(ss.iter().map(|s| s.rss_kb).max().unwrap_or(0)),
            match ss.iter().filter_map(|s| s.heap_kb).max().unwrap_or(0) {
                0 => "-".to_owned(),
                kb => format!("{:.1}", mb(kb)),
            },
            (b.cpu - a.cpu) / dt,
            (b.emu_cpu - a.emu_cpu) / dt,
        ));
    }
    if hold > 0.0 {
        // Every session open (the ramp is over), the first media not yet due.
        let open: Vec<&Sample> = samples
            .iter()
            .filter(|s| s.t >= args.ramp.as_secs_f64() + 0.5 && s.t < hold - 0.5)
            .collect();
        if open.len() < 2 {
            return Err(format!(
                "{} samples with every session open and no media: too few to report",
                open.len()
            ));
        }
        let max = open.iter().map(|s| s.rss_kb).max().unwrap_or(0);
        // Before any session started: the client, the runtime and the clip already exist.
        let first = samples.first().map_or(0, |s| s.rss_kb);
        line(String::new());
        line(format!(
            "all {} sessions open, no media yet: producer RSS {:.1} MiB ({:.1} MiB before any session: {:.1} KiB per open session)",
            args.streams,
            mb(max),
            mb(first),
            (max.saturating_sub(first)) as f64 / args.streams as f64,
        ));
    }
    line(String::new());
    line(format!(
        "reads {} ({:.0} B each), media bytes read {}, body bytes sent {}, emulator stored {} bytes, producer CPU {:.3} s per GB sent, emulator CPU {:.1} s total, peak session buffer {} B, warnings {}, events dropped {}",
        stats.reads.load(Ordering::Relaxed),
        bytes_read as f64 / stats.reads.load(Ordering::Relaxed).max(1) as f64,
        bytes_read,
        total.bytes_sent,
        emu_bytes,
        total_cpu / (total.bytes_sent as f64 / 1e9),
        emu_cpu_total,
        total.peak_buffered_bytes,
        total.warnings,
        total.events_dropped,
    ));

    if let Some(path) = &args.json {
        let json = serde_json::json!({
            "streams": args.streams,
            "media_seconds_per_stream": media_secs,
            "media_mb_per_s": mbps,
            "wall_s": wall.as_secs_f64(),
            "producer_cpu_s": total_cpu,
            "producer_cores_steady": steady_cores,
            "producer_vmhwm_kb": hwm_kb,
            "emulator_cores_steady": steady_emu_cores,
            "emulator_vmhwm_kb": emu_hwm_kb,
            "fragments_sent": total.fragments_sent,
            "fragments_received": total.fragments_received,
            "fragments_persisted": total.fragments_persisted,
            "fragments_failed": total.fragments_failed.len(),
            "emulator_stored": emu_stored,
            "emulator_persisted": emu_persisted,
            "failed_sessions": failed_sessions.len(),
            "received_p50_ms": stats.received.quantile_ms(0.5),
            "received_p99_ms": stats.received.quantile_ms(0.99),
            "persisted_p50_ms": stats.persisted.quantile_ms(0.5),
            "persisted_p99_ms": stats.persisted.quantile_ms(0.99),
            "samples": samples.iter().map(|s| serde_json::json!([s.t, s.cpu, s.rss_kb, s.heap_kb, s.emu_cpu, s.emu_rss_kb])).collect::<Vec<_>>(),
            "report": report,
        });
        std::fs::write(path, serde_json::to_vec_pretty(&json).unwrap_or_default())
            .map_err(|e| format!("{}: {e}", path.display()))?;
    }

    for e in failed_sessions.iter().take(10) {
        eprintln!("fleet: session failed: {e}");
    }
    for f in total.fragments_failed.iter().take(10) {
        eprintln!("fleet: fragment failed: {f:?}");
    }
    let ok = failed_sessions.is_empty()
        && total.fragments_failed.is_empty()
        && total.fragments_sent > 0
        && total.fragments_persisted == total.fragments_sent
        && emu_persisted == total.fragments_sent
        && emu_stored == total.fragments_sent;
    if !ok {
        eprintln!(
            "fleet: FAILED: sent {} persisted {} failed {} (emulator stored {} persisted {}), {} failed sessions",
            total.fragments_sent,
            total.fragments_persisted,
            total.fragments_failed.len(),
            emu_stored,
            emu_persisted,
            failed_sessions.len()
        );
    }
    Ok(ok)
}
