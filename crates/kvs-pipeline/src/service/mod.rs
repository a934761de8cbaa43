//! The `s3-to-kvs` HTTP API: `POST /processObject`, `GET /` (health), `GET /jobs`,
//! `GET /jobs/{id}`. In serve mode each object is a job streamed by a [`JobRunner`] (the real
//! one is [`Runner`]); in worker mode `processObject` enqueues and `/jobs` lists the worker's
//! jobs.

pub mod jobs;
mod runner;

pub use runner::Runner;

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::header::{CONTENT_TYPE, RETRY_AFTER};
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::json;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::object as request;
use crate::worker::{EnqueueError, Worker};
use jobs::{Admitted, Job, JobState, JobView, ObjectRef, Refused, Registry};

/// Request bodies above this are refused with `413`: a `processObject` body or an S3 event with
/// a few records is well under it, and nothing larger is ever buffered.
pub const MAX_BODY_BYTES: usize = 64 * 1024;

/// How a job failed, which decides the HTTP status of a `processObject` still waiting on it.
#[derive(Debug, Clone)]
pub enum JobErrorKind {
    /// The bucket or key does not exist: `404`.
    NotFound,
    /// The object is not media ffmpeg can stream: `422`.
    InvalidMedia,
    /// KVS, S3 or the network failed: `502`.
    Upstream,
}

/// A job failure with the message a person needs to act on.
#[derive(Debug, Clone)]
pub struct JobError {
    /// What kind of failure.
    pub kind: JobErrorKind,
    /// Human-readable reason (ffmpeg's last words, the KVS error id, ...).
    pub message: String,
}

/// Runs jobs; the real one streams S3 -> ffmpeg -> KVS ([`Runner`]).
pub trait JobRunner: Send + Sync + 'static {
    /// Checks that the object exists before a job is admitted.
    fn check(&self, object: &ObjectRef) -> impl Future<Output = Result<(), JobError>> + Send;
    /// Streams the object, updating `job` as fragments are acknowledged. Stops early and cleanly
    /// (last sent fragment acknowledged) when `stop` is cancelled.
    fn run(
        &self,
        job: Arc<Job>,
        stop: CancellationToken,
    ) -> impl Future<Output = Result<(), JobError>> + Send;
    /// What `processObject` answers as the stream: `("streamName", name)` or `("streamArn", arn)`.
    fn stream_label(&self) -> (&'static str, String);
}

/// Shared state of the service.
pub struct App<R> {
    /// Admission and job state.
    pub registry: Arc<Registry>,
    /// The pipeline (serve mode).
    pub runner: Option<Arc<R>>,
    /// The queue worker (worker mode): `processObject` enqueues, `/jobs` lists its jobs.
    pub worker: Option<Arc<Worker>>,
    /// Cancelled on shutdown: running jobs stop at a fragment boundary.
    pub stop: CancellationToken,
    /// How long `processObject` waits for the first acknowledgement before answering with the
    /// job id alone (`202`).
    pub first_ack_wait: Duration,
}

type Resp = Response<Full<Bytes>>;

fn json_response(status: StatusCode, body: serde_json::Value) -> Resp {
    Response::builder()
        .status(status)
        .header(CONTENT_TYPE, "application/json")
        .body(Full::new(Bytes::from(body.to_string())))
        .expect("static response parts are valid")
}

fn error(status: StatusCode, message: impl Into<String>) -> Resp {
    json_response(status, json!({ "message": message.into() }))
}

impl<R: JobRunner> App<R> {
    async fn handle(self: Arc<Self>, req: Request<Incoming>) -> Resp {
        let path = req.uri().path().to_owned();
        if let Some(worker) = self.worker.clone() {
            match (req.method(), path.as_str()) {
                (&Method::GET, "/") | (&Method::GET, "/health") => {
                    return json_response(
                        StatusCode::OK,
                        json!({ "status": "ok", "activeJobs": worker.active() }),
                    );
                }
                (&Method::GET, "/jobs") => {
                    return json_response(StatusCode::OK, json!({ "jobs": worker.jobs() }));
                }
                (&Method::POST, "/processObject") => return enqueue(&worker, req).await,
                _ => {}
            }
        }
        match (req.method(), path.as_str()) {
            (&Method::GET, "/") | (&Method::GET, "/health") => json_response(
                StatusCode::OK,
                json!({ "status": "ok", "activeJobs": self.registry.active() }),
            ),
            (&Method::GET, "/jobs") => {
                json_response(StatusCode::OK, json!({ "jobs": self.registry.list() }))
            }
            (&Method::GET, p) if p.starts_with("/jobs/") => {
                let id = &p["/jobs/".len()..];
                match id.parse().ok().and_then(|id| self.registry.get(id)) {
                    Some(job) => json_response(StatusCode::OK, json!(job.view())),
                    None => error(StatusCode::NOT_FOUND, format!("no job {id}")),
                }
            }
            (&Method::POST, "/processObject") => self.process_object(req).await,
            (_, "/processObject") | (_, "/") | (_, "/jobs") => {
                error(StatusCode::METHOD_NOT_ALLOWED, "method not allowed")
            }
            _ => error(StatusCode::NOT_FOUND, format!("no route {path}")),
        }
    }

    async fn process_object(self: Arc<Self>, req: Request<Incoming>) -> Resp {
        let objects = match read_objects(req).await {
            Ok(o) => o,
            Err(resp) => return resp,
        };
        let mut answers = Vec::with_capacity(objects.len());
        for object in objects {
            answers.push(self.clone().start(object).await);
        }
        // Retry-After comes from the admission decision (`Refused::Busy`), carried in the body.
        let retry_after = answers
            .iter()
            .filter_map(|(_, b)| b["retryAfterSeconds"].as_u64())
            .max();
        if answers.len() == 1 {
            let (status, body) = answers.pop().expect("one answer");
            return with_retry_after(json_response(status, body), retry_after);
        }
        // Several records (an S3 event): one answer each; the worst status wins.
        let status = answers
            .iter()
            .map(|(s, _)| *s)
            .max_by_key(|s| s.as_u16())
            .unwrap_or(StatusCode::OK);
        let items: Vec<_> = answers.into_iter().map(|(_, b)| b).collect();
        with_retry_after(
            json_response(status, json!({ "results": items })),
            retry_after,
        )
    }

    async fn start(self: Arc<Self>, object: ObjectRef) -> (StatusCode, serde_json::Value) {
        let Some(runner) = self.runner.clone() else {
            return (StatusCode::NOT_FOUND, json!({ "message": "no runner" }));
        };
        if let Err(e) = runner.check(&object).await {
            return failure_answer(&object, None, &e);
        }
        let job = match self.registry.admit(object.clone()) {
            Ok(Admitted::New(job)) => {
                let app = self.clone();
                let job2 = job.clone();
                tokio::spawn(async move { app.drive(job2).await });
                job
            }
            Ok(Admitted::Existing(job)) => job,
            Err(Refused::Busy { retry_after }) => {
                return (
                    StatusCode::TOO_MANY_REQUESTS,
                    json!({ "message": "all streaming slots and the queue are full",
                            "retryAfterSeconds": retry_after.as_secs() }),
                );
            }
            Err(Refused::ShuttingDown) => {
                return (
                    StatusCode::SERVICE_UNAVAILABLE,
                    json!({ "message": "shutting down" }),
                );
            }
        };
        let view = job
            .wait_for(self.first_ack_wait, |v| {
                v.start_fragment_number.is_some() || v.state.is_terminal()
            })
            .await;
        self.answer(&object, view)
    }

    fn answer(&self, object: &ObjectRef, view: JobView) -> (StatusCode, serde_json::Value) {
        let (label, stream) = self
            .runner
            .as_ref()
            .map_or(("streamName", String::new()), |r| r.stream_label());
        match (&view.start_fragment_number, view.state) {
            (Some(n), _) => (
                StatusCode::OK,
                json!({ label: stream, "startFragmentNumber": n, "jobId": view.job_id }),
            ),
            (None, JobState::Failed) => {
                let message = view.error.clone().unwrap_or_default();
                let kind = view.failure_kind.clone().unwrap_or(JobErrorKind::Upstream);
                failure_answer(object, Some(view.job_id), &JobError { kind, message })
            }
            (None, _) => (
                StatusCode::ACCEPTED,
                json!({ label: stream, "jobId": view.job_id, "state": view.state }),
            ),
        }
    }

    async fn drive(self: Arc<Self>, job: Arc<Job>) {
        let Some(runner) = self.runner.clone() else {
            return;
        };
        if !self.registry.acquire_slot(&job).await {
            return;
        }
        let result = runner.run(job.clone(), self.stop.child_token()).await;
        match result {
            Ok(()) if self.stop.is_cancelled() && job.view().state == JobState::Running => {
                self.registry.finish(
                    &job,
                    JobState::Cancelled,
                    Some("stopped by shutdown".into()),
                )
            }
            Ok(()) => self.registry.finish(&job, JobState::Succeeded, None),
            Err(e) => {
                tracing::warn!(job = %job.view().job_id, error = %e.message, "job failed");
                job.update(|v| v.failure_kind = Some(e.kind.clone()));
                self.registry
                    .finish(&job, JobState::Failed, Some(e.message));
            }
        }
    }
}

/// Reads and parses a `processObject` body; an error is the response to send.
async fn read_objects(req: Request<Incoming>) -> Result<Vec<ObjectRef>, Resp> {
    let body = match Limited::new(req.into_body(), MAX_BODY_BYTES)
        .collect()
        .await
    {
        Ok(b) => b.to_bytes(),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => {
            return Err(error(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("request body over {MAX_BODY_BYTES} bytes"),
            ));
        }
        Err(e) => return Err(error(StatusCode::BAD_REQUEST, format!("reading body: {e}"))),
    };
    request::parse(&body).map_err(|e| error(StatusCode::BAD_REQUEST, e.to_string()))
}

/// Worker mode: `processObject` puts each object on the work queue (`202`).
async fn enqueue(worker: &Worker, req: Request<Incoming>) -> Resp {
    let objects = match read_objects(req).await {
        Ok(o) => o,
        Err(resp) => return resp,
    };
    let mut queued = Vec::with_capacity(objects.len());
    for o in &objects {
        match worker.enqueue(o).await {
            Ok(id) => {
                queued.push(json!({ "bucketName": o.bucket, "keyName": o.key, "messageId": id }))
            }
            Err(e @ EnqueueError::Send(_)) => return error(StatusCode::BAD_GATEWAY, e.to_string()),
            Err(e) => return error(StatusCode::BAD_REQUEST, e.to_string()),
        }
    }
    json_response(StatusCode::ACCEPTED, json!({ "queued": queued }))
}

fn failure_answer(
    object: &ObjectRef,
    job_id: Option<uuid::Uuid>,
    e: &JobError,
) -> (StatusCode, serde_json::Value) {
    let status = match e.kind {
        JobErrorKind::NotFound => StatusCode::NOT_FOUND,
        JobErrorKind::InvalidMedia => StatusCode::UNPROCESSABLE_ENTITY,
        JobErrorKind::Upstream => StatusCode::BAD_GATEWAY,
    };
    (
        status,
        json!({ "message": e.message, "bucketName": object.bucket, "keyName": object.key, "jobId": job_id }),
    )
}

fn with_retry_after(mut resp: Resp, seconds: Option<u64>) -> Resp {
    if resp.status() == StatusCode::TOO_MANY_REQUESTS
        && let Some(s) = seconds
    {
        resp.headers_mut().insert(RETRY_AFTER, s.into());
    }
    resp
}

/// Serves the API on `listener` until `shutdown` resolves, then stops intake, lets running jobs
/// end cleanly for up to `drain` and returns.
pub async fn serve<R: JobRunner>(
    listener: TcpListener,
    app: Arc<App<R>>,
    shutdown: impl Future<Output = ()>,
    drain: Duration,
) -> std::io::Result<()> {
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let (stream, peer) = match accepted {
                    Ok(a) => a,
                    // Out of file descriptors and the like: keep serving the others.
                    Err(e) => { tracing::warn!(error = %e, "accept failed"); continue; }
                };
                let app = app.clone();
                let svc = service_fn(move |req| {
                    let app = app.clone();
                    async move { Ok::<_, Infallible>(app.handle(req).await) }
                });
                let conn = hyper::server::conn::http1::Builder::new()
                    // A slow client cannot hold a connection open forever sending headers.
                    .header_read_timeout(Duration::from_secs(10))
                    .timer(hyper_util::rt::TokioTimer::new())
                    .serve_connection(TokioIo::new(stream), svc);
                let conn = graceful.watch(conn);
                tokio::spawn(async move {
                    if let Err(e) = conn.await {
                        tracing::debug!(%peer, error = %e, "connection ended with an error");
                    }
                });
            }
            () = &mut shutdown => break,
        }
    }
    tracing::info!("shutting down: intake stopped, ending running streams");
    app.registry.begin_shutdown();
    app.stop.cancel();
    let deadline = tokio::time::Instant::now() + drain;
    while app.registry.active() > 0 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    if app.registry.active() > 0 {
        tracing::warn!("drain deadline passed with jobs still running; they are dropped");
    }
    let _ = tokio::time::timeout(Duration::from_secs(1), graceful.shutdown()).await;
    Ok(())
}

/// Binds `addr` (port 0 picks a free one).
pub async fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    TcpListener::bind(addr).await
}
