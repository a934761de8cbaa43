//! One HTTP job: S3 object -> presigned URL -> ffmpeg -> `kvs_pipeline::Pipeline` -> PutMedia.

use std::sync::Arc;

use crate::object::{self, ObjectError, ObjectRef};
use crate::streams::Sessions;
use crate::{FailureKind, Pipeline, Timing};
use aws_config::SdkConfig;
use ffmpeg_source::{FfmpegSource, Input, Pacing, Profile};
use kvs_putmedia::StreamId;
use tokio_util::sync::CancellationToken;

use super::jobs::Job;
use super::{JobError, JobErrorKind, JobRunner};

/// The real job runner.
pub struct Runner {
    s3: aws_sdk_s3::Client,
    sessions: Sessions,
    stream: StreamId,
    pace: Pacing,
    allow_http: bool,
}

impl Runner {
    /// A runner using `config` for S3 and `sessions` for KVS.
    pub fn new(
        config: &SdkConfig,
        sessions: Sessions,
        stream: StreamId,
        pace: Pacing,
        allow_http: bool,
    ) -> Self {
        Runner {
            s3: aws_sdk_s3::Client::new(config),
            sessions,
            stream,
            pace,
            allow_http,
        }
    }
}

fn job_error(kind: FailureKind, message: String) -> JobError {
    let kind = match kind {
        FailureKind::BadInput => JobErrorKind::InvalidMedia,
        _ => JobErrorKind::Upstream,
    };
    JobError { kind, message }
}

fn object_error(e: ObjectError) -> JobError {
    let kind = match e {
        ObjectError::NotFound { .. } => JobErrorKind::NotFound,
        _ => JobErrorKind::Upstream,
    };
    JobError {
        kind,
        message: e.to_string(),
    }
}

fn ffmpeg_error(e: ffmpeg_source::Error) -> JobError {
    job_error((&e).into(), e.to_string())
}

impl JobRunner for Runner {
    async fn check(&self, object: &ObjectRef) -> Result<(), JobError> {
        object::head(&self.s3, object)
            .await
            .map(drop)
            .map_err(object_error)
    }

    async fn run(&self, job: Arc<Job>, stop: CancellationToken) -> Result<(), JobError> {
        let object = job.view().object;
        let url = object::presign(&self.s3, &object)
            .await
            .map_err(object_error)?;
        let ffmpeg =
            FfmpegSource::builder(Input::url_with(url, self.allow_http).map_err(ffmpeg_error)?)
                .with_profile(Profile::sample_parity())
                .with_pacing(self.pace)
                .build()
                .map_err(ffmpeg_error)?
                .spawn()
                .await
                .map_err(ffmpeg_error)?;
        tracing::info!(
            job = %job.view().job_id, object = %object, decision = %ffmpeg.decision(), "streaming"
        );
        let pipeline = Pipeline::new(ffmpeg)
            .with_timing(Timing::for_pace(self.pace, None))
            .with_cancel(stop);
        let mut progress = pipeline.progress();
        let watcher_job = job.clone();
        let watcher = tokio::spawn(async move {
            while progress.changed().await.is_ok() {
                let p = progress.borrow_and_update().clone();
                watcher_job.update(|v| {
                    v.progress.update(&p);
                    if v.start_fragment_number.is_none() {
                        v.start_fragment_number = p.first_fragment_number.clone();
                    }
                });
                // The job's waiters need a few updates a second at most.
                tokio::time::sleep(std::time::Duration::from_millis(200)).await;
            }
        });
        let outcome = pipeline
            .run(|mode| self.sessions.open(&self.stream, mode, None))
            .await;
        watcher.abort();
        job.update(|v| {
            v.progress.finish(&outcome);
            if v.start_fragment_number.is_none() {
                v.start_fragment_number = outcome.first_fragment_number.clone();
            }
        });
        match outcome.result {
            // Shutdown: stopped at a fragment boundary, what was sent is acknowledged.
            Ok(()) | Err(crate::PipelineError::Cancelled) => Ok(()),
            Err(e) => Err(job_error(e.kind(), e.to_string())),
        }
    }

    fn stream_label(&self) -> (&'static str, String) {
        match &self.stream {
            StreamId::Arn(a) => ("streamArn", a.clone()),
            other => ("streamName", other.to_string()),
        }
    }
}
