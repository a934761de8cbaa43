//! One job: S3 object -> presigned URL -> ffmpeg -> re-fragmenter -> PutMedia.
//!
//! ffmpeg reads the object through a presigned GET URL, seeking with Range requests, so streaming
//! starts without downloading the object first and an MP4 with its index at the end works
//! (reference §5: never pipe such a file into ffmpeg).

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use aws_config::SdkConfig;
use aws_sdk_s3::presigning::PresigningConfig;
use ffmpeg_source::{FfmpegSource, Input, Pacing, Profile};
use futures::{SinkExt, StreamExt};
use kvs_putmedia::ack::AckEventType;
use kvs_putmedia::mkv::TimecodeMode;
use kvs_putmedia::{PutMediaClient, PutMediaClientBuilder, SessionEvent};
use tokio_util::sync::CancellationToken;

use crate::Pace;
use crate::http::{JobError, JobErrorKind, JobRunner};
use crate::jobs::{Job, ObjectRef};

/// The stream every job puts media on.
#[derive(Debug, Clone)]
pub enum Target {
    /// By name (`KVS_STREAM_NAME`).
    Name(String),
    /// By ARN (`KVS_STREAM_ARN`, the Node sample's variable).
    Arn(String),
}

/// The real job runner.
pub struct Pipeline {
    config: SdkConfig,
    s3: aws_sdk_s3::Client,
    target: Target,
    pace: Pace,
    allow_http: bool,
    assume_role: Option<String>,
}

/// How long a presigned URL stays valid: long enough for ffmpeg to read a long upload at native
/// rate, short enough not to be a standing credential.
const PRESIGN_VALIDITY: Duration = Duration::from_secs(6 * 3600);

impl Pipeline {
    /// A pipeline using `config` (region, credentials, endpoint overrides) for S3 and KVS.
    /// `allow_http` is the explicit opt-in to a plain-HTTP endpoint (the emulator).
    pub fn new(
        config: &SdkConfig,
        target: Target,
        pace: Pace,
        allow_http: bool,
        assume_role: Option<String>,
    ) -> Self {
        Pipeline {
            config: config.clone(),
            s3: aws_sdk_s3::Client::new(config),
            target,
            pace,
            allow_http,
            assume_role,
        }
    }

    fn client(&self, mode: TimecodeMode) -> Result<PutMediaClient, JobError> {
        let mut b = PutMediaClientBuilder::from_env_with(self.config.clone())
            .with_timecode_mode(mode)
            .with_allow_http(self.allow_http);
        b = match &self.target {
            Target::Name(n) => b.with_stream_name(n),
            Target::Arn(a) => b.with_stream_arn(a),
        };
        if let Some(role) = &self.assume_role {
            b = b.with_assume_role(role);
        }
        b.build()
            .map_err(|e| upstream(format!("PutMedia client: {e}")))
    }

    async fn presign(&self, object: &ObjectRef) -> Result<String, JobError> {
        let cfg = PresigningConfig::expires_in(PRESIGN_VALIDITY)
            .map_err(|e| upstream(format!("presigning: {e}")))?;
        let req = self
            .s3
            .get_object()
            .bucket(&object.bucket)
            .key(&object.key)
            .presigned(cfg)
            .await
            .map_err(|e| {
                upstream(format!(
                    "presigning s3://{}/{}: {e}",
                    object.bucket, object.key
                ))
            })?;
        Ok(req.uri().to_string())
    }
}

fn upstream(message: String) -> JobError {
    JobError {
        kind: JobErrorKind::Upstream,
        message,
    }
}

fn ffmpeg_error(e: ffmpeg_source::Error) -> JobError {
    let kind = if e.is_input_error() {
        JobErrorKind::InvalidMedia
    } else {
        JobErrorKind::Upstream
    };
    JobError {
        kind,
        message: e.to_string(),
    }
}

fn kvs_error(e: kvs_putmedia::Error) -> JobError {
    let kind = match &e {
        kvs_putmedia::Error::InvalidMedia { .. } => JobErrorKind::InvalidMedia,
        _ => JobErrorKind::Upstream,
    };
    JobError {
        kind,
        message: e.to_string(),
    }
}

impl JobRunner for Pipeline {
    async fn check(&self, object: &ObjectRef) -> Result<(), JobError> {
        match self
            .s3
            .head_object()
            .bucket(&object.bucket)
            .key(&object.key)
            .send()
            .await
        {
            Ok(_) => Ok(()),
            Err(e) => {
                let status = e.raw_response().map(|r| r.status().as_u16());
                let message = format!(
                    "s3://{}/{}: {}",
                    object.bucket,
                    object.key,
                    aws_sdk_s3::error::DisplayErrorContext(&e)
                );
                Err(JobError {
                    kind: if status == Some(404) {
                        JobErrorKind::NotFound
                    } else {
                        JobErrorKind::Upstream
                    },
                    message,
                })
            }
        }
    }

    async fn run(&self, job: Arc<Job>, stop: CancellationToken) -> Result<(), JobError> {
        let object = job.view().object;
        let url = self.presign(&object).await?;
        let input = Input::url_with(url, self.allow_http).map_err(ffmpeg_error)?;
        let pacing = match self.pace {
            Pace::Realtime => Pacing::Realtime,
            Pace::Fast => Pacing::Fast,
        };
        let mut ffmpeg = FfmpegSource::builder(input)
            .profile(Profile::sample_parity())
            .pacing(pacing)
            .build()
            .map_err(ffmpeg_error)?
            .spawn()
            .await
            .map_err(ffmpeg_error)?;
        let duration = ffmpeg.progress().borrow().duration;
        tracing::info!(
            job = %job.view().job_id, bucket = %object.bucket, key = %object.key,
            decision = %ffmpeg.decision(), "streaming"
        );
        // Real-time pacing: producer time is now. Fast: a recording is backfilled, so timestamps
        // start one media duration in the past and none lies in the future (reference §4.10, 4007).
        let mode = match (self.pace, duration) {
            (Pace::Fast, Some(d)) => TimecodeMode::backfill(d, SystemTime::now()),
            (Pace::Fast, None) => {
                // As kvs-put does: say it, since the service may refuse the later fragments.
                tracing::warn!(
                    "the object's duration is unknown: timestamps start now, and media sent \
                     faster than real time may be refused as in the future (4007)"
                );
                TimecodeMode::Relative
            }
            (Pace::Realtime, _) => TimecodeMode::Relative,
        };
        let (mut sink, mut acks) = self.client(mode)?.start().await.map_err(kvs_error)?;

        let ack_job = job.clone();
        let ack_task = tokio::spawn(async move {
            let mut last_error = None;
            while let Some(event) = acks.next().await {
                match event {
                    Ok(SessionEvent::Fragment(f)) => ack_job.update(|v| {
                        if v.start_fragment_number.is_none() {
                            v.start_fragment_number =
                                f.fragment_number.as_ref().map(|n| n.as_str().to_owned());
                        }
                        match f.event {
                            AckEventType::Received => v.progress.fragments_received += 1,
                            AckEventType::Persisted => v.progress.fragments_persisted += 1,
                            _ => {}
                        }
                    }),
                    Ok(SessionEvent::Warning(w)) => tracing::warn!(warning = ?w, "media adjusted"),
                    Ok(SessionEvent::Skipped(_)) => {
                        ack_job.update(|v| v.progress.fragments_failed += 1);
                    }
                    Ok(SessionEvent::Reconnecting { .. }) => {
                        ack_job.update(|v| v.progress.retries += 1);
                    }
                    // Connections and drops are logged by the library.
                    Ok(_) => {}
                    Err(e) => {
                        tracing::warn!(error = %e, "stream error");
                        ack_job.update(|v| v.progress.fragments_failed += 1);
                        last_error = Some(e.to_string());
                    }
                }
            }
            last_error
        });

        let mut progress = ffmpeg.progress();
        let result: Result<(), JobError> = loop {
            tokio::select! {
                biased;
                () = stop.cancelled() => {
                    // Shutdown: stop ffmpeg and end the body; what was sent is still acknowledged.
                    ffmpeg.cancel();
                    break Ok(());
                }
                chunk = ffmpeg.next() => match chunk {
                    Some(Ok(bytes)) => {
                        if let Err(e) = sink.send(bytes).await {
                            break Err(kvs_error(e));
                        }
                        // ffmpeg reports progress about twice a second; touching the job (a lock
                        // and a wake-up of every waiter) per 64 KiB chunk would be waste.
                        if progress.has_changed().unwrap_or(false) {
                            let p = progress.borrow_and_update().clone();
                            job.update(|v| {
                                v.progress.media_time_ms = p.out_time.as_millis() as u64;
                                v.progress.duration_ms = p.duration.map(|d| d.as_millis() as u64);
                            });
                        }
                    }
                    Some(Err(e)) => break Err(ffmpeg_error(e)),
                    None => break Ok(()),
                },
            }
        };
        if let Err(e) = result {
            // Dropping the sink aborts the request; ffmpeg is killed with its job.
            drop(sink);
            let _ = ack_task.await;
            return Err(e);
        }
        // An incomplete session carries its summary: the checks below fail the job on it.
        let summary = match sink.close().await {
            Err(kvs_putmedia::Error::Incomplete { summary, .. }) => Ok(*summary),
            other => other,
        }
        .map_err(kvs_error);
        let last_ack_error = ack_task.await.ok().flatten();
        let summary = summary?;
        job.update(|v| {
            v.progress.fragments_sent = summary.fragments_sent;
            v.progress.bytes_sent = summary.bytes_sent;
            v.progress.fragments_received = summary.fragments_received;
            v.progress.fragments_persisted = summary.fragments_persisted;
            v.progress.fragments_failed = summary.fragments_skipped;
            v.progress.fragments_dropped = summary.fragments_dropped;
            v.progress.fragments_resent = summary.fragments_resent;
            v.progress.connections = summary.connections;
            v.progress.retries = summary.retries;
            v.progress.rotations = summary.rotations;
        });
        if !summary.fragments_failed.is_empty() {
            let ids: Vec<String> = summary
                .fragments_failed
                .iter()
                .map(|f| format!("{} ({})", f.error.code, f.error.id.id()))
                .collect();
            return Err(upstream(format!(
                "{} fragment(s) refused by KVS: {}{}",
                ids.len(),
                ids.join(", "),
                last_ack_error
                    .map(|e| format!("; last error: {e}"))
                    .unwrap_or_default()
            )));
        }
        if summary.fragments_delivered < summary.fragments {
            return Err(upstream(format!(
                "{} of {} fragments delivered ({} dropped from a full replay buffer)",
                summary.fragments_delivered, summary.fragments, summary.fragments_dropped
            )));
        }
        Ok(())
    }

    fn stream_label(&self) -> (&'static str, String) {
        match &self.target {
            Target::Name(n) => ("streamName", n.clone()),
            Target::Arn(a) => ("streamArn", a.clone()),
        }
    }
}
