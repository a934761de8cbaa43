//! Progress while streaming, and the final summary (human on stderr, or `--json` on stdout).

use std::io::IsTerminal;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use kvs_pipeline::Delivery;
use serde::Serialize;
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// What the process exits with (the discriminant); documented in `--help` (see `cli::AFTER_HELP`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// Every fragment persisted (or received, with zero retention).
    #[default]
    Ok = 0,
    /// Anything else.
    Error = 1,
    /// Bad flags.
    Usage = 2,
    /// Missing file or object, not media.
    BadInput = 3,
    /// Credentials, signature or permissions refused.
    Auth = 4,
    /// Some fragments were not persisted.
    Partial = 5,
    /// The stream does not exist.
    StreamNotFound = 6,
    /// Ctrl-C or SIGTERM.
    Interrupted = 130,
}

impl Outcome {
    /// The process exit code: the discriminant.
    pub fn code(self) -> i32 {
        self as i32
    }
}

/// The run's summary; serialized as the `--json` object.
#[derive(Debug, Clone, Default, Serialize)]
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
    /// What the session delivered: the library's fields.
    #[serde(flatten)]
    pub delivery: Delivery,
    /// Media duration, when known.
    pub media_duration_ms: Option<u64>,
    /// Wall time of the whole run.
    pub wall_time_ms: u64,
    /// What went wrong, when something did.
    pub error: Option<String>,
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
    let delivery = report.delivery.to_string();
    if !delivery.is_empty() {
        eprintln!("{delivery}\n  {:.1} s", report.wall_time_ms as f64 / 1000.0);
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
