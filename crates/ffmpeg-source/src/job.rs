//! A running ffmpeg job: the process (and its process group), the stdout byte stream with
//! backpressure, progress from stderr, stall detection, the restart as a transcode when ffmpeg
//! refuses to copy, and the kill on cancel or drop.

use std::collections::VecDeque;
use std::ffi::OsString;
use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::process::{ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures::{Stream, StreamExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::process::{ChildStdout, Command};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::{Instant, Sleep};
use tokio_util::sync::CancellationToken;

use crate::command::{Fallback, Plan};
use crate::error::{Error, Result, StderrTail, Tool, spawn_error};
use crate::input::{Input, MOOV_AT_END_ADVICE, Redactor};
use crate::profile::Decision;
use crate::progress::{Line, LineSplitter, Progress, StderrRing, apply_progress_line};

/// Matroska Cluster element id. Its absence from ffmpeg's output means no media was written.
const CLUSTER_ID: u32 = 0x1F43_B675;

/// While a copying job can still fall back to transcoding, its output is held back until the
/// first Cluster, so that the consumer never sees the header of a run that is then replaced.
/// ffmpeg's header is a few hundred bytes (plus CodecPrivate); past this much without a Cluster
/// the bytes are released and the fallback is given up.
const HOLD_LIMIT: usize = 4 << 20;

/// What a job needs from its source's configuration; see the [`FfmpegSourceBuilder`] setters.
///
/// [`FfmpegSourceBuilder`]: crate::FfmpegSourceBuilder
#[derive(Debug)]
pub(crate) struct JobOptions {
    pub(crate) ffmpeg: PathBuf,
    pub(crate) stall_timeout: Duration,
    pub(crate) chunk_size: usize,
    pub(crate) stderr_lines: usize,
    pub(crate) min_output_bytes: u64,
}

/// A reader input and the bytes already taken from it while peeking.
type ReaderInput = (
    Box<dyn tokio::io::AsyncRead + Send + Sync + Unpin>,
    Option<Bytes>,
);

/// What starting one ffmpeg process needs; kept by the job to restart as a transcode.
struct Launcher {
    ffmpeg: PathBuf,
    shared: Arc<Shared>,
    progress: Arc<watch::Sender<Progress>>,
    redactor: Redactor,
}

/// One started ffmpeg process.
struct Running {
    stdout: ChildStdout,
    exit_rx: watch::Receiver<Option<ExitInfo>>,
    pid: Option<u32>,
    stdin_task: Option<JoinHandle<()>>,
}

impl Launcher {
    /// Spawns ffmpeg with `args`, its stderr reader, the stdin feeder of a reader input, and
    /// the supervisor that kills it on cancel and reports its exit.
    fn launch(&self, args: &[OsString], reader: Option<ReaderInput>) -> Result<Running> {
        let name = &self.shared.input;
        let mut cmd = Command::new(&self.ffmpeg);
        cmd.args(args)
            .stdin(if reader.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            // Own process group, so a cancel can kill whatever ffmpeg itself started.
            .process_group(0);
        let mut child = cmd
            .spawn()
            .map_err(|e| spawn_error(Tool::Ffmpeg, &self.ffmpeg, name, e))?;
        let pid = child.id();
        tracing::debug!(input = %name, pid, "ffmpeg started");
        let stdout = child.stdout.take().expect("stdout is piped");
        let stderr = child.stderr.take().expect("stderr is piped");
        let stdin = child.stdin.take();
        let (exit_tx, exit_rx) = watch::channel(None);

        let stderr_task = tokio::spawn(read_stderr(
            stderr,
            self.shared.clone(),
            self.progress.clone(),
            self.redactor.clone(),
        ));
        let stdin_task = match (stdin, reader) {
            (Some(mut stdin), Some((mut reader, prefix))) => Some(tokio::spawn(async move {
                // Errors here mean ffmpeg stopped reading (it exited or was killed); its exit
                // status tells the story.
                if let Some(p) = prefix
                    && stdin.write_all(&p).await.is_err()
                {
                    return;
                }
                let _ = tokio::io::copy(&mut reader, &mut stdin).await;
                let _ = stdin.shutdown().await;
            })),
            _ => None,
        };
        let token = self.shared.token.clone();
        tokio::spawn(async move {
            let status = tokio::select! {
                s = child.wait() => s.ok(),
                () = token.cancelled() => {
                    // The leader is not reaped yet, so its pid still names our group.
                    if let Some(pid) = pid {
                        kill_group(pid);
                    }
                    let _ = child.start_kill();
                    child.wait().await.ok()
                }
            };
            // Let the stderr reader drain so error messages have ffmpeg's last words; bounded
            // in case something else holds the pipe open.
            let _ = tokio::time::timeout(Duration::from_secs(2), stderr_task).await;
            let _ = exit_tx.send(Some(ExitInfo { status }));
        });
        Ok(Running {
            stdout,
            exit_rx,
            pid,
            stdin_task,
        })
    }
}

async fn read_stderr(
    mut stderr: tokio::process::ChildStderr,
    shared: Arc<Shared>,
    progress_tx: Arc<watch::Sender<Progress>>,
    redactor: Redactor,
) {
    let mut splitter = LineSplitter::default();
    let mut current = progress_tx.borrow().clone();
    let mut buf = vec![0u8; 8192];
    let handle = |line: &str, current: &mut Progress| match apply_progress_line(current, line) {
        Line::Progress(true) => {
            progress_tx.send_replace(current.clone());
        }
        Line::Progress(false) => {}
        Line::Log => shared.push_line(redactor.apply(line)),
    };
    loop {
        match stderr.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => splitter.push(&buf[..n], |l| handle(l, &mut current)),
        }
    }
    splitter.flush(|l| handle(l, &mut current));
}

/// Sends SIGKILL to a process group.
#[allow(unsafe_code)]
fn kill_group(pgid: u32) {
    let Ok(pgid) = i32::try_from(pgid) else {
        return;
    };
    if pgid <= 1 {
        return;
    }
    // SAFETY: kill(2) takes two integers and touches no memory of ours.
    unsafe {
        libc::kill(-pgid, libc::SIGKILL);
    }
}

#[derive(Debug)]
struct Shared {
    input: Arc<str>,
    ring: Mutex<StderrRing>,
    token: CancellationToken,
    user_cancelled: AtomicBool,
}

impl Shared {
    fn push_line(&self, line: String) {
        self.ring
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(line);
    }

    fn stderr(&self) -> StderrTail {
        StderrTail(
            self.ring
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .snapshot(),
        )
    }

    fn cancel(&self) {
        self.user_cancelled.store(true, Ordering::SeqCst);
        self.token.cancel();
    }
}

#[derive(Debug, Clone, Copy)]
struct ExitInfo {
    status: Option<ExitStatus>,
}

enum State {
    Reading,
    Exiting(Pin<Box<dyn Future<Output = Option<ExitInfo>> + Send>>),
    Done,
}

/// Cancels a job from anywhere; cheap to clone.
#[derive(Debug, Clone)]
pub struct CancelHandle {
    shared: Arc<Shared>,
}

impl CancelHandle {
    /// Kills ffmpeg (and its process group). The job's stream then ends with
    /// [`Error::Cancelled`].
    pub fn cancel(&self) {
        self.shared.cancel();
    }
}

/// What a finished job did.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Summary {
    /// MKV bytes ffmpeg wrote.
    pub bytes: u64,
    /// Whether they held a Matroska Cluster at all (the check behind [`Error::NoUsableMedia`]).
    pub saw_cluster: bool,
    /// Copy or transcode, and why.
    pub decision: Decision,
}

/// A running ffmpeg: a [`Stream`] of MKV byte chunks, plus progress, cancel and wait.
///
/// Memory is bounded: at most `chunk_size` bytes are read per poll and nothing is read until the
/// consumer polls again, so a slow consumer stalls ffmpeg through the pipe (backpressure); stderr
/// keeps at most `stderr_lines` lines of at most 1 KiB.
///
/// The stream ends with `None` after ffmpeg exited 0 with usable media, or with one `Err` (after
/// which it yields `None`): [`Error::Exit`], [`Error::NoUsableMedia`], [`Error::Stalled`],
/// [`Error::Cancelled`], [`Error::UnreadableInput`], [`Error::NoMediaStream`], [`Error::Io`].
///
/// Dropping the job kills ffmpeg and its process group; so does [`FfmpegJob::cancel`]. No
/// temporary file is ever created.
pub struct FfmpegJob {
    shared: Arc<Shared>,
    stdout: Option<ChildStdout>,
    buf: BytesMut,
    chunk_size: usize,
    stall_timeout: Duration,
    stall: Pin<Box<Sleep>>,
    armed: bool,
    state: State,
    bytes: u64,
    saw_cluster: bool,
    window: u32,
    min_bytes: u64,
    exit_rx: watch::Receiver<Option<ExitInfo>>,
    progress_rx: watch::Receiver<Progress>,
    plan: Plan,
    pid: Option<u32>,
    stdin_task: Option<JoinHandle<()>>,
    /// Output held back while the copy may still be refused (see [`HOLD_LIMIT`]).
    held: VecDeque<Bytes>,
    held_bytes: usize,
    /// Armed until the first Cluster: the transcode to restart as if ffmpeg refuses to copy.
    fallback: Option<Fallback>,
    launcher: Launcher,
}

impl std::fmt::Debug for FfmpegJob {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FfmpegJob")
            .field("input", &self.shared.input)
            .field("pid", &self.pid)
            .field("bytes", &self.bytes)
            .finish_non_exhaustive()
    }
}

impl FfmpegJob {
    /// Starts ffmpeg for `plan`; `prefix` holds the bytes of a reader input already read
    /// while planning.
    pub(crate) fn start(
        input: Input,
        prefix: Option<Bytes>,
        plan: Plan,
        options: JobOptions,
    ) -> Result<FfmpegJob> {
        let name: Arc<str> = input.name().into();
        let redactor = Redactor::new(&input);
        let reader = match input {
            Input::Reader { reader, .. } => Some((reader, prefix)),
            _ => None,
        };
        let shared = Arc::new(Shared {
            input: name.clone(),
            ring: Mutex::new(StderrRing::new(options.stderr_lines)),
            token: CancellationToken::new(),
            user_cancelled: AtomicBool::new(false),
        });
        let (progress_tx, progress_rx) = watch::channel(Progress {
            duration: plan.probe().and_then(|p| p.duration),
            ..Progress::default()
        });
        let launcher = Launcher {
            ffmpeg: options.ffmpeg,
            shared: shared.clone(),
            progress: Arc::new(progress_tx),
            redactor,
        };
        let run = launcher.launch(plan.args(), reader)?;
        Ok(FfmpegJob {
            shared,
            stdout: Some(run.stdout),
            buf: BytesMut::new(),
            chunk_size: options.chunk_size,
            stall_timeout: options.stall_timeout,
            stall: Box::pin(tokio::time::sleep(options.stall_timeout)),
            armed: false,
            state: State::Reading,
            bytes: 0,
            saw_cluster: false,
            window: 0,
            min_bytes: options.min_output_bytes,
            exit_rx: run.exit_rx,
            progress_rx,
            pid: run.pid,
            stdin_task: run.stdin_task,
            held: VecDeque::new(),
            held_bytes: 0,
            fallback: plan.fallback().cloned(),
            plan,
            launcher,
        })
    }

    /// The decision and command line this job runs.
    pub fn plan(&self) -> &Plan {
        &self.plan
    }

    /// Copy or transcode, and why. After a fallback (ffmpeg refused to copy, the job restarted
    /// as a transcode) this is the transcode, with [`Decision::copy_refused`] set.
    pub fn decision(&self) -> &Decision {
        self.plan.decision()
    }

    /// ffmpeg's process id (also its process group id), while it runs. A fallback to
    /// transcoding starts a new process; this is the current one.
    pub fn pid(&self) -> Option<u32> {
        self.pid
    }

    /// Progress as ffmpeg reports it (about twice a second); holds only the latest value.
    pub fn progress(&self) -> watch::Receiver<Progress> {
        self.progress_rx.clone()
    }

    /// A handle that cancels this job from another task.
    pub fn cancel_handle(&self) -> CancelHandle {
        CancelHandle {
            shared: self.shared.clone(),
        }
    }

    /// Kills ffmpeg; the stream then ends with [`Error::Cancelled`].
    pub fn cancel(&self) {
        self.shared.cancel();
    }

    /// ffmpeg's last stderr lines so far.
    pub fn stderr_tail(&self) -> StderrTail {
        self.shared.stderr()
    }

    /// MKV bytes received so far.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// Runs the job to its end, discarding output not yet read, and returns what it did or the
    /// error the stream would have ended with.
    pub async fn wait(mut self) -> Result<Summary> {
        while let Some(item) = self.next().await {
            item?;
        }
        Ok(Summary {
            bytes: self.bytes,
            saw_cluster: self.saw_cluster,
            decision: self.plan.decision().clone(),
        })
    }

    fn input(&self) -> String {
        self.shared.input.to_string()
    }

    /// Looks for the first Cluster id only: after that, nothing here needs the bytes (the
    /// re-fragmenter parses them), so the per-byte scan stops.
    fn scan(&mut self, data: &[u8]) {
        if self.saw_cluster {
            return;
        }
        for &b in data {
            self.window = (self.window << 8) | u32::from(b);
            if self.window == CLUSTER_ID {
                self.saw_cluster = true;
                return;
            }
        }
    }

    /// ffmpeg refused the copied streams before writing a Cluster: start the planned transcode
    /// instead, so that copy mode never fails where a transcode succeeds. What was held back
    /// (the refused run's header) is dropped; the consumer has seen none of it.
    fn restart_as_transcode(&mut self, err: &Error) -> Result<()> {
        let fallback = self.fallback.take().expect("restart only while armed");
        let cause = copy_refusal_cause(&self.shared.stderr(), err);
        tracing::warn!(
            input = %self.shared.input, %cause,
            "ffmpeg refused to copy the streams; restarting as a transcode"
        );
        self.shared
            .ring
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clear();
        let duration = self.launcher.progress.borrow().duration;
        self.launcher.progress.send_replace(Progress {
            duration,
            copy_refused: Some(cause.clone()),
            ..Progress::default()
        });
        let run = self.launcher.launch(fallback.args(), None)?;
        self.plan.fall_back(fallback, cause);
        self.stdout = Some(run.stdout);
        self.exit_rx = run.exit_rx;
        self.pid = run.pid;
        self.stdin_task = run.stdin_task;
        self.held.clear();
        self.held_bytes = 0;
        self.bytes = 0;
        self.saw_cluster = false;
        self.window = 0;
        self.buf = BytesMut::new();
        self.armed = false;
        self.state = State::Reading;
        Ok(())
    }

    /// The error (if any) the stream ends with, once ffmpeg has exited.
    fn outcome(&self, info: Option<ExitInfo>) -> Option<Error> {
        let input = self.input();
        if self.shared.user_cancelled.load(Ordering::SeqCst) {
            return Some(Error::Cancelled { input });
        }
        let stderr = self.shared.stderr();
        let status = info.and_then(|i| i.status);
        // The MP4 demuxer on a pipe skips to the index, then cannot go back: "partial file". It
        // exits 0 with a header-only output when copying, non-zero when transcoding.
        if self.stdin_task.is_some()
            && (status.is_none_or(|s| !s.success()) || !self.saw_cluster)
            && stderr.lines().iter().any(|l| l.contains("partial file"))
        {
            return Some(Error::NeedsSeekableInput {
                input,
                reason: MOOV_AT_END_ADVICE.into(),
                stderr,
            });
        }
        match status {
            Some(s) if s.success() => {
                if self.bytes < self.min_bytes || !self.saw_cluster {
                    Some(Error::NoUsableMedia {
                        input,
                        bytes: self.bytes,
                        saw_cluster: self.saw_cluster,
                        min_bytes: self.min_bytes,
                        stderr,
                    })
                } else {
                    None
                }
            }
            _ => Some(classify_failure(
                input,
                status.map_or_else(|| "status unknown".into(), |s| s.to_string()),
                stderr,
            )),
        }
    }
}

/// ffmpeg's first error line of a refused copy, without its `[matroska @ 0x...]` prefix; the
/// error itself when stderr says nothing.
fn copy_refusal_cause(stderr: &StderrTail, err: &Error) -> String {
    let lines = stderr.lines();
    let line = lines
        .iter()
        .find(|l| l.to_ascii_lowercase().contains("error"))
        .or(lines.first());
    match line {
        Some(l) => match l.strip_prefix('[').and_then(|r| r.split_once("] ")) {
            Some((_, rest)) => rest.to_owned(),
            None => l.clone(),
        },
        None => err.to_string(),
    }
}

/// Maps a failed ffmpeg run to the most specific variant its stderr supports.
fn classify_failure(input: String, status: String, stderr: StderrTail) -> Error {
    let find = |needles: &[&str]| {
        stderr
            .lines()
            .iter()
            .rev()
            .find(|l| needles.iter().any(|n| l.contains(n)))
            .cloned()
    };
    if let Some(line) = find(&[
        "Invalid data found when processing input",
        "moov atom not found",
        "No such file or directory",
        "Permission denied",
        "Server returned",
        "Connection refused",
        "could not find codec parameters",
        "Error opening input",
    ]) {
        return Error::UnreadableInput {
            input,
            reason: line,
            stderr,
        };
    }
    if find(&["does not contain any stream", "Output file is empty"]).is_some() {
        return Error::NoMediaStream {
            input,
            found: "none usable".into(),
            stderr,
        };
    }
    Error::Exit {
        input,
        tool: Tool::Ffmpeg,
        status,
        stderr,
    }
}

impl Stream for FfmpegJob {
    type Item = Result<Bytes>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        loop {
            if this.fallback.is_none()
                && let Some(chunk) = this.held.pop_front()
            {
                return Poll::Ready(Some(Ok(chunk)));
            }
            if !this.armed && !matches!(this.state, State::Done) {
                // The stall clock runs only while the consumer waits on ffmpeg.
                let deadline = Instant::now() + this.stall_timeout;
                this.stall.as_mut().reset(deadline);
                this.armed = true;
            }
            match &mut this.state {
                State::Done => return Poll::Ready(None),
                State::Reading => {
                    let stdout = this.stdout.as_mut().expect("stdout present while reading");
                    crate::read_block(&mut this.buf, this.chunk_size);
                    match tokio_util::io::poll_read_buf(Pin::new(stdout), cx, &mut this.buf) {
                        Poll::Ready(Ok(0)) => {
                            this.stdout = None;
                            let mut rx = this.exit_rx.clone();
                            this.state = State::Exiting(Box::pin(async move {
                                rx.wait_for(Option::is_some).await.ok().and_then(|v| *v)
                            }));
                        }
                        Poll::Ready(Ok(n)) => {
                            let chunk = this.buf.split().freeze();
                            this.scan(&chunk);
                            this.bytes += n as u64;
                            this.armed = false;
                            if this.fallback.is_some() {
                                this.held_bytes += n;
                                this.held.push_back(chunk);
                                if this.saw_cluster || this.held_bytes > HOLD_LIMIT {
                                    // Media flows: the copy works (or the header is implausibly
                                    // long, and holding more would only cost memory).
                                    this.fallback = None;
                                }
                                continue;
                            }
                            return Poll::Ready(Some(Ok(chunk)));
                        }
                        Poll::Ready(Err(e)) => {
                            this.shared.token.cancel();
                            this.state = State::Done;
                            return Poll::Ready(Some(Err(Error::Io {
                                input: this.input(),
                                bytes: this.bytes,
                                source: e,
                            })));
                        }
                        Poll::Pending => break,
                    }
                }
                State::Exiting(fut) => match fut.as_mut().poll(cx) {
                    Poll::Ready(info) => {
                        let outcome = this.outcome(info);
                        if let Some(err) = &outcome
                            && this.fallback.is_some()
                            && !matches!(err, Error::Cancelled { .. })
                        {
                            match this.restart_as_transcode(err) {
                                Ok(()) => continue,
                                Err(e) => {
                                    this.state = State::Done;
                                    return Poll::Ready(Some(Err(e)));
                                }
                            }
                        }
                        this.state = State::Done;
                        return Poll::Ready(outcome.map(Err));
                    }
                    Poll::Pending => break,
                },
            }
        }
        if this.stall.as_mut().poll(cx).is_ready() {
            this.shared.token.cancel();
            this.state = State::Done;
            this.stdout = None;
            tracing::warn!(input = %this.shared.input, bytes = this.bytes, "ffmpeg stalled; killed it");
            return Poll::Ready(Some(Err(Error::Stalled {
                input: this.input(),
                waited: this.stall_timeout,
                bytes: this.bytes,
                stderr: this.shared.stderr(),
            })));
        }
        Poll::Pending
    }
}

impl Drop for FfmpegJob {
    fn drop(&mut self) {
        if let Some(t) = self.stdin_task.take() {
            t.abort();
        }
        let exited = self.exit_rx.borrow().is_some();
        if !exited {
            // Synchronously, in case the runtime is shutting down and the supervisor never
            // runs again. The supervisor reaps the leader after the token fires.
            if let Some(pid) = self.pid {
                kill_group(pid);
            }
        }
        self.shared.token.cancel();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    use crate::FfmpegSource;
    use crate::profile::{EncodeSettings, Mode, Pacing, Profile, Size, X264Preset};

    /// 1 s of MPEG-TS with H.264 + ADTS AAC: ffmpeg 5.1 refuses to copy it into Matroska on a
    /// pipe ("Error parsing AAC extradata").
    fn ts_with_adts(dir: &Path) -> PathBuf {
        let out = dir.join("clip.ts");
        let res = std::process::Command::new("ffmpeg")
            .args(["-v", "error", "-nostdin", "-y", "-f", "lavfi", "-i"])
            .args([
                "testsrc=s=160x120:r=15:d=1",
                "-f",
                "lavfi",
                "-i",
                "sine=d=1",
            ])
            .args([
                "-c:v",
                "libx264",
                "-preset",
                "ultrafast",
                "-bf",
                "0",
                "-g",
                "15",
            ])
            .args(["-pix_fmt", "yuv420p", "-c:a", "aac"])
            .arg(&out)
            .output()
            .unwrap();
        assert!(
            res.status.success(),
            "{}",
            String::from_utf8_lossy(&res.stderr)
        );
        out
    }

    /// A source for `input` whose plan copies although ffmpeg will refuse to: what this crate
    /// decided for MPEG-TS before it knew about ADTS, and what any rule it still lacks would do.
    async fn misjudged_copy(input: &Path, profile: Profile) -> FfmpegSource {
        // Planned under Auto (Copy refuses this input up front), then made to copy.
        let mut source = FfmpegSource::builder(Input::path(input))
            .with_profile(Profile::auto())
            .build()
            .unwrap();
        let planned = source.plan().await.unwrap();
        let decision = Decision {
            mode: Mode::Copy,
            ..planned.decision().clone()
        };
        let probe = planned.probe().cloned();
        let plan = Plan::new(&Input::path(input), Pacing::Fast, &profile, decision, probe);
        source.set_plan(plan);
        source
    }

    fn settings() -> EncodeSettings {
        EncodeSettings::builder()
            .with_size(Size::Fit {
                width: 160,
                height: 120,
            })
            .with_preset(X264Preset::Ultrafast)
            .build()
            .unwrap()
    }

    #[tokio::test]
    async fn a_refused_copy_restarts_as_a_transcode_and_says_so() {
        let dir = tempfile::TempDir::new().unwrap();
        let input = ts_with_adts(dir.path());
        let source = misjudged_copy(&input, Profile::Auto(settings())).await;
        let mut job = source.spawn().await.unwrap();
        assert_eq!(job.decision().mode, Mode::Copy);
        let first_pid = job.pid();
        let progress = job.progress();
        let mut mkv = Vec::new();
        while let Some(chunk) = job.next().await {
            mkv.extend_from_slice(&chunk.unwrap());
        }
        let d = job.decision().clone();
        assert_eq!(d.mode, Mode::Transcode, "{d}");
        let cause = d.copy_refused.as_deref().unwrap();
        assert!(cause.contains("AAC extradata"), "{cause}");
        assert!(d.to_string().contains("restarted as a transcode"), "{d}");
        assert_eq!(progress.borrow().copy_refused.as_deref(), Some(cause));
        assert_ne!(job.pid(), first_pid, "the transcode is a new ffmpeg");
        assert!(job.plan().display_args().contains("libx264"));
        // The refused run's header was held back: one EBML header, then media.
        let ebml = [0x1A, 0x45, 0xDF, 0xA3];
        assert!(mkv.starts_with(&ebml));
        assert_eq!(mkv.windows(4).filter(|w| *w == ebml).count(), 1);
        let out = dir.path().join("out.mkv");
        std::fs::write(&out, &mkv).unwrap();
        let probe = crate::probe(&Input::path(&out)).await.unwrap();
        assert!(probe.format.starts_with("matroska"), "{}", probe.format);
        let codecs: Vec<_> = probe
            .streams
            .iter()
            .map(|s| s.codec.clone().unwrap())
            .collect();
        assert_eq!(codecs, ["h264", "aac"]);
        drop(job);
        assert_eq!(
            std::fs::read_dir(dir.path()).unwrap().count(),
            2,
            "only the input and the output"
        );
    }

    #[tokio::test]
    async fn without_a_transcode_to_fall_back_to_the_refusal_is_the_error() {
        let dir = tempfile::TempDir::new().unwrap();
        let input = ts_with_adts(dir.path());
        let source = misjudged_copy(&input, Profile::Copy).await;
        let mut job = source.spawn().await.unwrap();
        let mut items = Vec::new();
        while let Some(item) = job.next().await {
            items.push(item);
        }
        let err = items.pop().unwrap().unwrap_err();
        assert!(
            matches!(&err, Error::Exit { stderr, .. } if stderr.to_string().contains("AAC extradata")),
            "{err}"
        );
        assert_eq!(job.decision().mode, Mode::Copy);
        assert!(job.decision().copy_refused.is_none());
    }

    #[test]
    fn the_refusal_cause_is_the_first_error_line_without_its_prefix() {
        let tail = StderrTail(vec![
            "[aac @ 0x55] Estimating duration from bitrate, this may be inaccurate".into(),
            "[matroska @ 0x5f] Error parsing AAC extradata, unable to determine samplerate.".into(),
            "Could not write header for output file #0 (incorrect codec parameters ?)".into(),
        ]);
        let err = Error::Cancelled { input: "x".into() };
        assert_eq!(
            copy_refusal_cause(&tail, &err),
            "Error parsing AAC extradata, unable to determine samplerate."
        );
        assert_eq!(
            copy_refusal_cause(&StderrTail::default(), &err),
            "x: cancelled"
        );
    }
}
