//! Progress while streaming, and the final summary (human on stderr, or `--json` on stdout).

use std::io::IsTerminal;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde::Serialize;
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// What the process exits with; documented in `--help` (see `cli::AFTER_HELP`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// Every fragment persisted (or received, with zero retention).
    Ok,
    /// Anything else.
    Error,
    /// Bad flags.
    Usage,
    /// Missing file or object, not media.
    BadInput,
    /// Credentials, signature or permissions refused.
    Auth,
    /// Some fragments were not persisted.
    Partial,
    /// The stream does not exist.
    StreamNotFound,
    /// Ctrl-C.
    Interrupted,
}

impl Outcome {
    /// The process exit code.
    pub fn code(self) -> i32 {
        match self {
            Outcome::Ok => 0,
            Outcome::Error => 1,
            Outcome::Usage => 2,
            Outcome::BadInput => 3,
            Outcome::Auth => 4,
            Outcome::Partial => 5,
            Outcome::StreamNotFound => 6,
            Outcome::Interrupted => 130,
        }
    }
}

/// One rejected fragment, as the ERROR ack named it.
#[derive(Debug, Clone, Serialize)]
pub struct FailedFragment {
    /// Cluster timecode, when the ack carried one.
    pub timecode: Option<u64>,
    /// Fragment number, when the ack carried one.
    pub fragment_number: Option<String>,
    /// KVS error id (4000-5001).
    pub error_id: u32,
    /// KVS error code (`INVALID_MKV_DATA`...).
    pub error_code: String,
}

/// The run's summary; serialized as the `--json` object.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// `ok`, `partial`, `bad_input`...
    pub outcome: Outcome,
    /// The process exit code.
    pub exit_code: i32,
    /// The input as given.
    pub input: String,
    /// Stream name or ARN.
    pub stream: Option<String>,
    /// The region used.
    pub region: Option<String>,
    /// The stream's data retention in hours, when known.
    pub retention_hours: Option<u32>,
    /// ffmpeg's copy/transcode decision (absent for stdin).
    pub decision: Option<String>,
    /// Fragments cut from the input (each counted once).
    pub fragments: u64,
    /// Fragments delivered (completion ack, or RECEIVED before a connection ended).
    pub fragments_delivered: u64,
    /// Fragment sends, resends included.
    pub fragments_sent: u64,
    /// Fragments sent again after a connection failure.
    pub fragments_resent: u64,
    /// Fragments acknowledged RECEIVED.
    pub fragments_received: u64,
    /// Fragments acknowledged PERSISTED.
    pub fragments_persisted: u64,
    /// Fragments rejected.
    pub fragments_failed: u64,
    /// Fragments dropped from a full replay buffer.
    pub fragments_dropped: u64,
    /// PutMedia requests opened.
    pub connections: u32,
    /// Failures retried.
    pub retries: u64,
    /// Connections rotated.
    pub rotations: u64,
    /// RECEIVED latency after a fragment's last byte, p50 and p99 in milliseconds.
    pub received_latency_ms: Option<[f64; 2]>,
    /// The rejected fragments with their error ids.
    pub failures: Vec<FailedFragment>,
    /// Body bytes sent (MKV header and fragments).
    pub bytes_sent: u64,
    /// From the first media byte sent to the first acknowledgement.
    pub first_ack_latency_ms: Option<f64>,
    /// The first fragment number KVS assigned.
    pub first_fragment_number: Option<String>,
    /// Media duration, when known.
    pub media_duration_ms: Option<u64>,
    /// Wall time of the whole run.
    pub wall_time_ms: u64,
    /// What went wrong, when something did.
    pub error: Option<String>,
}

impl Report {
    /// An empty report for `input`.
    pub fn new(input: &str) -> Self {
        Report {
            outcome: Outcome::Ok,
            exit_code: 0,
            input: input.to_owned(),
            stream: None,
            region: None,
            retention_hours: None,
            decision: None,
            fragments: 0,
            fragments_delivered: 0,
            fragments_sent: 0,
            fragments_resent: 0,
            fragments_dropped: 0,
            connections: 0,
            retries: 0,
            rotations: 0,
            received_latency_ms: None,
            fragments_received: 0,
            fragments_persisted: 0,
            fragments_failed: 0,
            failures: Vec::new(),
            bytes_sent: 0,
            first_ack_latency_ms: None,
            first_fragment_number: None,
            media_duration_ms: None,
            wall_time_ms: 0,
            error: None,
        }
    }
}

impl Report {
    /// Copies the pipeline's outcome into the report.
    pub fn fill(&mut self, o: &kvs_pipeline::Outcome) {
        let s = &o.summary;
        self.first_fragment_number = o.first_fragment_number.clone();
        self.fragments = s.fragments;
        self.fragments_delivered = s.fragments_delivered;
        self.fragments_sent = s.fragments_sent;
        self.fragments_resent = s.fragments_resent;
        self.fragments_received = s.fragments_received;
        self.fragments_persisted = s.fragments_persisted;
        // The list also names the fragment whose error ended the session; past 1024 only the
        // skipped count grows.
        self.fragments_failed = s.fragments_skipped.max(s.fragments_failed.len() as u64);
        self.fragments_dropped = s.fragments_dropped;
        self.connections = s.connections;
        self.retries = s.retries;
        self.rotations = s.rotations;
        self.bytes_sent = s.bytes_sent;
        self.first_ack_latency_ms = s.first_ack_latency.map(|d| d.as_secs_f64() * 1000.0);
        let ms = |d: Duration| d.as_secs_f64() * 1000.0;
        if s.received_latency.count > 0 {
            self.received_latency_ms =
                Some([ms(s.received_latency.p50), ms(s.received_latency.p99)]);
        }
        self.failures = s
            .fragments_failed
            .iter()
            .map(|f| FailedFragment {
                timecode: f.timecode,
                fragment_number: f.fragment_number.as_ref().map(|n| n.as_str().to_owned()),
                error_id: f.error.id.id(),
                error_code: f.error.code.clone(),
            })
            .collect();
    }
}

/// Prints the summary: one JSON object on stdout with `--json`, readable lines on stderr
/// otherwise.
#[allow(clippy::print_stderr)]
pub fn finish(report: &Report, json: bool) {
    if json {
        match serde_json::to_string(report) {
            // A closed stdout (`| head`) must not turn into a panic: the exit code still tells.
            Ok(s) => {
                use std::io::Write as _;
                let _ = writeln!(std::io::stdout().lock(), "{s}");
            }
            Err(e) => eprintln!("error: cannot serialize the summary: {e}"),
        }
        return;
    }
    if let Some(e) = &report.error {
        eprintln!("error: {e}");
    }
    if report.fragments_sent == 0 && report.bytes_sent == 0 {
        return;
    }
    eprintln!(
        "{} fragments: {} delivered, {} received, {} persisted, {} failed, {} dropped; {} bytes; first ack {}; {:.1} s",
        report.fragments,
        report.fragments_delivered,
        report.fragments_received,
        report.fragments_persisted,
        report.fragments_failed,
        report.fragments_dropped,
        report.bytes_sent,
        report
            .first_ack_latency_ms
            .map_or_else(|| "-".to_owned(), |ms| format!("{ms:.0} ms")),
        report.wall_time_ms as f64 / 1000.0
    );
    if report.connections > 1 || report.retries > 0 {
        eprintln!(
            "  {} connections, {} retries, {} rotations, {} fragments resent",
            report.connections, report.retries, report.rotations, report.fragments_resent
        );
    }
    if let Some([p50, p99]) = report.received_latency_ms {
        eprintln!("  RECEIVED latency p50 {p50:.0} ms, p99 {p99:.0} ms");
    }
    for f in &report.failures {
        eprintln!(
            "  fragment {} ({}): {} {}",
            f.timecode.map_or_else(|| "?".to_owned(), |t| t.to_string()),
            f.fragment_number.as_deref().unwrap_or("?"),
            f.error_id,
            f.error_code
        );
    }
}

/// The progress display: an indicatif bar when stderr is a terminal, periodic log lines
/// otherwise. Dropping it (or [`Progress::stop`]) ends it.
pub struct Progress {
    bar: Option<ProgressBar>,
    task: JoinHandle<()>,
}

impl Progress {
    /// Starts the display of the pipeline's progress.
    pub fn start(progress: watch::Receiver<kvs_pipeline::Progress>) -> Progress {
        let terminal = std::io::stderr().is_terminal();
        let duration = progress.borrow().duration;
        let bar = terminal.then(|| {
            let bar = match duration {
                Some(d) => {
                    let bar = ProgressBar::new(d.as_millis() as u64);
                    bar.set_style(
                        ProgressStyle::with_template("{elapsed_precise} [{bar:30}] {msg}")
                            .unwrap_or_else(|_| ProgressStyle::default_bar())
                            .progress_chars("=> "),
                    );
                    bar
                }
                None => ProgressBar::new_spinner(),
            };
            bar.set_draw_target(ProgressDrawTarget::stderr());
            bar
        });
        let shown = bar.clone();
        let period = if terminal {
            Duration::from_millis(200)
        } else {
            Duration::from_secs(2)
        };
        let started = tokio::time::Instant::now();
        let task = tokio::spawn(async move {
            let mut tick = tokio::time::interval(period);
            tick.tick().await;
            loop {
                tick.tick().await;
                let p = progress.borrow().clone();
                let s = &p.session;
                let secs = started.elapsed().as_secs_f64();
                let kbps = p.bytes_in as f64 * 8.0 / 1000.0 / secs.max(0.001);
                let failed = s.fragments_skipped + s.fragments_dropped;
                let msg = format!(
                    "media {} / {}  received {}  persisted {}{}  {kbps:.0} kbit/s  ack {}",
                    p.media_time
                        .map_or_else(|| "-".to_owned(), |m| format!("{:.1}s", m.as_secs_f64())),
                    duration.map_or_else(|| "?".to_owned(), |d| format!("{:.1}s", d.as_secs_f64())),
                    s.fragments_received,
                    s.fragments_persisted,
                    if failed > 0 {
                        format!("  FAILED {failed}")
                    } else {
                        String::new()
                    },
                    p.last_latency
                        .map_or_else(|| "-".to_owned(), |l| format!("{} ms", l.as_millis())),
                );
                match &shown {
                    Some(bar) => {
                        if let Some(m) = p.media_time {
                            bar.set_position(m.as_millis() as u64);
                        } else {
                            bar.tick();
                        }
                        bar.set_message(msg);
                    }
                    None => tracing::info!("{msg}"),
                }
            }
        });
        Progress { bar, task }
    }

    /// Stops the display and clears the bar.
    pub fn stop(self) {
        drop(self);
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        self.task.abort();
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}
