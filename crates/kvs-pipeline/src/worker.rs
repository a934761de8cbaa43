//! The queue-driven worker: SQS messages naming S3 objects, each streamed into its stream.
//!
//! **Order and exclusivity.** KVS takes one PutMedia connection per stream, and the objects of
//! one stream must go in upload order. With a FIFO work queue whose `MessageGroupId` is the
//! target stream, SQS hands out the messages of one group one at a time, in order, across every
//! worker: never two objects at once into one stream, however many workers run. Inside one
//! process, messages of the same stream received in one batch also wait their turn. A
//! standard queue works when every object has its own stream (a template that makes the name
//! unique per object); otherwise two workers may take two objects of one stream at once, and
//! the second is refused (ConnectionLimitExceeded) and retried later, out of order.
//!
//! **Intake.** S3 cannot notify a FIFO queue. With an intake queue, the worker is also the
//! forwarder: it moves each S3 event from the (standard) intake queue into the FIFO work queue
//! with `MessageGroupId` = the target stream and `MessageDeduplicationId` from bucket, key and
//! the event's sequencer, then deletes it.
//!
//! **A message is deleted only when its object's stream completed** (every fragment has its
//! completion ack). While it streams, its visibility is extended. A failure leaves it to come
//! back after a backoff, and the queue's redrive policy moves it to the dead-letter queue after
//! `maxReceiveCount` receives, with the reason logged each time. What retrying cannot fix (not
//! media, no such object, an invalid stream name, an unreadable body) is dead-lettered at once:
//! sent to the redrive policy's `deadLetterTargetArn` with the reason, then deleted. On
//! shutdown the worker stops receiving (a long poll already under way is let finish, up to its
//! 20 s, and what it received goes straight back with visibility 0: SQS hid those messages when
//! the poll took them), lets what is in flight finish within the drain time,
//! then stops it and returns its message (visibility 0); the next attempt resumes after what
//! the stream holds ([`crate::resume`]).

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use aws_config::SdkConfig;
use aws_sdk_sqs::types::{MessageAttributeValue, MessageSystemAttributeName, QueueAttributeName};
use ffmpeg_source::{FfmpegSource, Input, Pacing, Profile};
use kvs_putmedia::StreamId;
use serde::Serialize;
use sha2::Digest;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::object::{self, BodyError, ObjectError, ObjectRef};
use crate::pipeline::{FailureKind, Pipeline, Progress};
use crate::resume;
use crate::streams::{self, Route, Sessions, StreamError};
use crate::timing::{self, Timing, epoch_ms};

/// SQS long polling: the longest wait the service allows.
const LONG_POLL: i32 = 20;
/// Finished jobs kept for [`Worker::jobs`].
const HISTORY: usize = 200;

/// What one ReceiveMessage gave.
type Received = Result<Vec<aws_sdk_sqs::types::Message>, String>;

/// What a [`Worker::poll`] gave.
enum Poll {
    Received(Received),
    /// Shutdown began; whatever the poll received was returned to the queue.
    Stopped,
}

/// How the worker runs.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct WorkerConfig {
    /// The work queue (FIFO with `MessageGroupId` = stream, or standard).
    pub queue_url: String,
    /// A standard queue S3 notifies; its events are forwarded into the work queue.
    pub intake_queue_url: Option<String>,
    /// Which stream each object goes to.
    pub route: Route,
    /// Create a missing stream with this many hours of retention.
    pub create_streams: Option<u32>,
    /// Objects streamed at once by this process (each into a different stream).
    pub concurrency: usize,
    /// On shutdown, how long in-flight objects get before they are stopped and returned.
    pub drain: Duration,
    /// Visibility timeout taken on receive and renewed while an object streams.
    pub visibility: Duration,
    /// ffmpeg's profile.
    pub profile: Profile,
    /// ffmpeg's pacing.
    pub pacing: Pacing,
    /// Plain-HTTP opt-in for the presigned URLs (the emulator).
    pub allow_http: bool,
}

impl WorkerConfig {
    /// A configuration with the defaults: one object at a time, 25 s drain, 60 s visibility,
    /// the Node sample's transcode, fast pacing (deterministic timestamps in the past).
    pub fn new(queue_url: impl Into<String>, route: Route) -> Self {
        WorkerConfig {
            queue_url: queue_url.into(),
            intake_queue_url: None,
            route,
            create_streams: None,
            concurrency: 1,
            drain: Duration::from_secs(25),
            visibility: Duration::from_secs(60),
            profile: Profile::sample_parity(),
            pacing: Pacing::Fast,
            allow_http: false,
        }
    }
}

impl std::fmt::Debug for Worker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Worker")
            .field("cfg", &self.cfg)
            .finish_non_exhaustive()
    }
}

/// Where a job is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum JobState {
    /// Received, waiting for its stream or preparing.
    Waiting,
    /// Streaming.
    Running,
    /// Every fragment delivered; the message was deleted.
    Succeeded,
    /// Failed; the message comes back after a backoff (or goes to the DLQ by redrive).
    Retrying,
    /// Sent to the dead-letter queue at once.
    DeadLettered,
    /// Stopped by shutdown; the message was returned.
    Returned,
}

/// One job as [`Worker::jobs`] reports it.
#[derive(Debug, Clone, Serialize)]
#[non_exhaustive]
pub struct JobReport {
    /// The SQS message id.
    pub message_id: String,
    /// The object.
    pub object: Option<ObjectRef>,
    /// The target stream.
    pub stream: Option<String>,
    /// State.
    pub state: JobState,
    /// How many times SQS delivered the message.
    pub receive_count: u32,
    /// Epoch ms when the message was received.
    pub received_ms: u64,
    /// Epoch ms when the job ended.
    pub finished_ms: Option<u64>,
    /// Media time streamed, ms.
    pub media_time_ms: u64,
    /// Fragments cut so far.
    pub fragments: u64,
    /// Fragments with their completion ack.
    pub fragments_delivered: u64,
    /// Fragments left out because the stream already held them (resume).
    pub already_persisted: u64,
    /// Producer time of the first frame (epoch ms).
    pub anchor_ms: Option<u64>,
    /// The first fragment number.
    pub first_fragment_number: Option<String>,
    /// Why it failed.
    pub error: Option<String>,
}

/// What to do with a message after handling it.
#[derive(Debug)]
enum Verdict {
    Done,
    /// Retrying cannot help.
    DeadLetter(String),
    /// Comes back after a backoff; redrive dead-letters it eventually.
    Retry(String),
    /// Shutdown: back at once.
    Return,
}

/// The worker. Cheap to share; [`run`](Self::run) until the shutdown token is cancelled.
pub struct Worker {
    cfg: WorkerConfig,
    config: SdkConfig,
    sessions: Sessions,
    sqs: aws_sdk_sqs::Client,
    s3: aws_sdk_s3::Client,
    kv: aws_sdk_kinesisvideo::Client,
    fifo: bool,
    dlq: tokio::sync::OnceCell<Option<DeadLetterQueue>>,
    stream_locks: Mutex<HashMap<StreamId, Arc<tokio::sync::Mutex<()>>>>,
    jobs: Mutex<VecDeque<Arc<Mutex<JobReport>>>>,
    metrics: Option<MetricsHook>,
}

/// Why an object could not be put on the work queue.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EnqueueError {
    /// The object routes to no valid stream name.
    #[error("{0}")]
    Route(String),
    /// SQS refused or could not be reached.
    #[error("{0}")]
    Send(String),
}

/// What the worker reports per object, for metrics (CloudWatch EMF in `s3-to-kvs`).
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ObjectMetrics {
    /// The stream.
    pub stream: String,
    /// Every fragment delivered.
    pub ok: bool,
    /// Fragments PERSISTED.
    pub fragments_persisted: u64,
    /// Fragments refused, skipped or dropped.
    pub fragments_failed: u64,
    /// Median latency from a fragment's last byte to its PERSISTED ack.
    pub persisted_latency_p50: Option<Duration>,
    /// From the message's sending to its receipt.
    pub message_age: Option<Duration>,
}

/// A callback for [`ObjectMetrics`].
pub type MetricsHook = Arc<dyn Fn(&ObjectMetrics) + Send + Sync>;

#[derive(Debug, Clone)]
struct DeadLetterQueue {
    url: String,
    fifo: bool,
}

impl Worker {
    /// A worker with `config` (region, credentials, endpoints) for SQS, S3 and KVS, opening
    /// sessions through `sessions`.
    pub fn new(cfg: WorkerConfig, config: &SdkConfig, sessions: Sessions) -> Self {
        Worker {
            fifo: cfg.queue_url.ends_with(".fifo"),
            cfg,
            config: config.clone(),
            sessions,
            sqs: aws_sdk_sqs::Client::new(config),
            s3: aws_sdk_s3::Client::new(config),
            kv: aws_sdk_kinesisvideo::Client::new(config),
            dlq: tokio::sync::OnceCell::new(),
            stream_locks: Mutex::new(HashMap::new()),
            jobs: Mutex::new(VecDeque::new()),
            metrics: None,
        }
    }

    /// Calls `hook` after each object.
    pub fn with_metrics(mut self, hook: MetricsHook) -> Self {
        self.metrics = Some(hook);
        self
    }

    /// Recent jobs, newest first.
    pub fn jobs(&self) -> Vec<JobReport> {
        let jobs = self.jobs.lock().unwrap_or_else(|p| p.into_inner());
        jobs.iter()
            .rev()
            .map(|j| j.lock().unwrap_or_else(|p| p.into_inner()).clone())
            .collect()
    }

    /// Objects streaming or waiting in this process.
    pub fn active(&self) -> usize {
        self.jobs()
            .iter()
            .filter(|j| matches!(j.state, JobState::Waiting | JobState::Running))
            .count()
    }

    /// Puts `object` on the work queue (FIFO: grouped by its stream, deduplicated by bucket,
    /// key and sequencer). `HTTP POST /processObject` and the forwarder use it.
    pub async fn enqueue(&self, object: &ObjectRef) -> Result<String, EnqueueError> {
        let stream = self
            .cfg
            .route
            .stream_for(object)
            .map_err(EnqueueError::Route)?;
        let body = serde_json::json!({ "bucketName": object.bucket, "keyName": object.key });
        let mut req = self
            .sqs
            .send_message()
            .queue_url(&self.cfg.queue_url)
            .message_body(body.to_string());
        if self.fifo {
            req = req
                .message_group_id(stream.as_str())
                .message_deduplication_id(dedup_id(object));
        }
        let out = req.send().await.map_err(|e| {
            EnqueueError::Send(format!(
                "SendMessage: {}",
                aws_sdk_sqs::error::DisplayErrorContext(e)
            ))
        })?;
        Ok(out.message_id.unwrap_or_default())
    }

    /// Receives and streams until `shutdown` is cancelled, then drains (see the module docs).
    pub async fn run(self: Arc<Self>, shutdown: CancellationToken) {
        let tracker = TaskTracker::new();
        let hard_stop = CancellationToken::new();
        if let Some(intake) = self.cfg.intake_queue_url.clone() {
            let (me, stop) = (self.clone(), shutdown.clone());
            tracker.spawn(async move { me.forward(&intake, stop).await });
        }
        let slots = Arc::new(Semaphore::new(self.cfg.concurrency.max(1)));
        loop {
            let permit = tokio::select! {
                () = shutdown.cancelled() => break,
                p = slots.clone().acquire_owned() => p.expect("the semaphore is never closed"),
            };
            let max = (slots.available_permits() + 1).min(10) as i32;
            let mut receive = {
                let me = self.clone();
                Box::pin(async move { me.receive(&me.cfg.queue_url, max).await })
            };
            let received = tokio::select! {
                r = &mut receive => Some(r),
                () = shutdown.cancelled() => None,
            };
            let Some(received) = received else {
                // Finished beside the drain of what is in flight, not before the drain starts.
                let me = self.clone();
                tracker.spawn(async move { me.hand_back(&me.cfg.queue_url, receive).await });
                break;
            };
            let messages = match received {
                Ok(m) => m,
                Err(e) => {
                    tracing::warn!(error = %e, "ReceiveMessage failed; retrying in 5 s");
                    tokio::time::sleep(Duration::from_secs(5)).await;
                    continue;
                }
            };
            let mut permit = Some(permit);
            for m in messages {
                let permit = match permit.take() {
                    Some(p) => p,
                    None => slots
                        .clone()
                        .acquire_owned()
                        .await
                        .expect("the semaphore is never closed"),
                };
                let (me, stop) = (self.clone(), hard_stop.clone());
                tracker.spawn(async move {
                    me.handle(m, stop).await;
                    drop(permit);
                });
            }
        }
        tracker.close();
        tracing::info!(
            in_flight = self.active(),
            "shutting down: receiving stopped, finishing what is in flight"
        );
        let grace = self.cfg.drain.mul_f64(0.6);
        if tokio::time::timeout(grace, tracker.wait()).await.is_err() {
            tracing::warn!("drain: stopping what is still streaming and returning its messages");
            hard_stop.cancel();
            let rest = self.cfg.drain.saturating_sub(grace);
            if tokio::time::timeout(rest, tracker.wait()).await.is_err() {
                tracing::warn!(
                    "drain deadline passed; unfinished messages come back after their visibility timeout"
                );
            }
        }
    }

    /// One long poll of `queue` that `stop` does not cut short: when `stop` fires mid-poll,
    /// the poll is finished and handed back ([`hand_back`](Self::hand_back)) before this returns.
    async fn poll(&self, queue: &str, max: i32, stop: &CancellationToken) -> Poll {
        if stop.is_cancelled() {
            return Poll::Stopped;
        }
        let receive = self.receive(queue, max);
        tokio::pin!(receive);
        tokio::select! {
            r = &mut receive => Poll::Received(r),
            () = stop.cancelled() => {
                self.hand_back(queue, receive).await;
                Poll::Stopped
            }
        }
    }

    /// Finishes a poll that shutdown interrupted and returns what it received to the queue at
    /// once (visibility 0). SQS makes a message invisible the moment a poll takes it, so
    /// dropping a poll in flight would lose what it was about to hand over: those messages
    /// would stay invisible for the whole visibility timeout with nobody working on them. The
    /// poll takes at most its 20 s wait, plus a margin.
    async fn hand_back(&self, queue: &str, receive: impl std::future::Future<Output = Received>) {
        let limit = Duration::from_secs(LONG_POLL as u64 + 10);
        let received = match tokio::time::timeout(limit, receive).await {
            Ok(Ok(messages)) => messages,
            Ok(Err(_)) => Vec::new(),
            Err(_) => {
                tracing::warn!(
                    queue,
                    "shutdown: the last ReceiveMessage did not answer; anything it took comes back after its visibility timeout"
                );
                Vec::new()
            }
        };
        if !received.is_empty() {
            tracing::info!(
                queue,
                messages = received.len(),
                "shutdown: handing back what the last poll received"
            );
        }
        for m in &received {
            self.settle(queue, m, None, Verdict::Return).await;
        }
    }

    async fn receive(&self, queue: &str, max: i32) -> Received {
        let out = self
            .sqs
            .receive_message()
            .queue_url(queue)
            .max_number_of_messages(max)
            .wait_time_seconds(LONG_POLL)
            .visibility_timeout(self.cfg.visibility.as_secs() as i32)
            .message_system_attribute_names(MessageSystemAttributeName::ApproximateReceiveCount)
            .message_system_attribute_names(MessageSystemAttributeName::SentTimestamp)
            .send()
            .await
            .map_err(|e| aws_sdk_sqs::error::DisplayErrorContext(e).to_string())?;
        Ok(out.messages.unwrap_or_default())
    }

    /// The forwarder, until `stop` is cancelled: each S3 event on `intake` (a standard queue S3
    /// notifies) goes into the work queue with [`enqueue`](Self::enqueue) (FIFO: grouped by
    /// its stream, deduplicated by [`dedup_id`], so an event delivered twice is one message),
    /// then is deleted. The `s3:TestEvent` is deleted without forwarding; a body that names no
    /// object or routes to no valid stream is dead-lettered at once; a failed send leaves the
    /// event to come back. [`run`](Self::run) runs it when
    /// [`WorkerConfig::intake_queue_url`] is set.
    pub async fn forward(&self, intake: &str, stop: CancellationToken) {
        loop {
            let received = match self.poll(intake, 10, &stop).await {
                Poll::Received(r) => r,
                Poll::Stopped => return,
            };
            let messages = match received {
                Ok(m) => m,
                Err(e) => {
                    tracing::warn!(error = %e, queue = %intake, "ReceiveMessage on the intake queue failed; retrying in 5 s");
                    tokio::time::sleep(Duration::from_secs(5)).await;
                    continue;
                }
            };
            for m in messages {
                let body = m.body.as_deref().unwrap_or_default();
                let verdict = match object::parse(body.as_bytes()) {
                    Err(BodyError::TestEvent) => {
                        tracing::info!(
                            "S3 test event on the intake queue: notifications are configured"
                        );
                        Verdict::Done
                    }
                    Err(e @ BodyError::NotObjectCreated(_)) => {
                        tracing::info!(reason = %e, "intake message dropped");
                        Verdict::Done
                    }
                    Err(e) => Verdict::DeadLetter(format!("intake message: {e}")),
                    Ok(objects) => {
                        let mut verdict = Verdict::Done;
                        for o in &objects {
                            match self.enqueue(o).await {
                                Ok(id) => {
                                    tracing::info!(object = %o, message_id = %id, "forwarded to the work queue")
                                }
                                Err(e @ EnqueueError::Send(_)) => {
                                    verdict = Verdict::Retry(e.to_string());
                                    break;
                                }
                                Err(e) => verdict = Verdict::DeadLetter(e.to_string()),
                            }
                        }
                        verdict
                    }
                };
                self.settle(intake, &m, None, verdict).await;
            }
        }
    }

    fn stream_lock(&self, stream: &StreamId) -> Arc<tokio::sync::Mutex<()>> {
        let mut locks = self.stream_locks.lock().unwrap_or_else(|p| p.into_inner());
        // Forget locks nobody holds or waits on, so the map stays bounded.
        locks.retain(|_, l| Arc::strong_count(l) > 1);
        locks.entry(stream.clone()).or_default().clone()
    }

    fn track(&self, report: JobReport) -> Arc<Mutex<JobReport>> {
        let job = Arc::new(Mutex::new(report));
        let mut jobs = self.jobs.lock().unwrap_or_else(|p| p.into_inner());
        jobs.push_back(job.clone());
        while jobs.len() > HISTORY {
            jobs.pop_front();
        }
        job
    }

    async fn handle(&self, m: aws_sdk_sqs::types::Message, stop: CancellationToken) {
        let attr = |name: MessageSystemAttributeName| {
            m.attributes
                .as_ref()
                .and_then(|a| a.get(&name))
                .and_then(|v| v.parse::<u64>().ok())
        };
        let receive_count = attr(MessageSystemAttributeName::ApproximateReceiveCount).unwrap_or(1);
        let message_age = attr(MessageSystemAttributeName::SentTimestamp)
            .map(|sent| Duration::from_millis(epoch_ms(SystemTime::now()).saturating_sub(sent)));
        tracing::info!(
            message_age_seconds = message_age.map(|a| a.as_secs_f64()),
            receive_count,
            "message received"
        );
        let job = self.track(JobReport {
            message_id: m.message_id.clone().unwrap_or_default(),
            object: None,
            stream: None,
            state: JobState::Waiting,
            receive_count: receive_count as u32,
            received_ms: epoch_ms(SystemTime::now()),
            finished_ms: None,
            media_time_ms: 0,
            fragments: 0,
            fragments_delivered: 0,
            already_persisted: 0,
            anchor_ms: None,
            first_fragment_number: None,
            error: None,
        });
        // Keep the message invisible while it is handled.
        let heartbeat = self.heartbeat(m.receipt_handle.clone().unwrap_or_default());
        let verdict = match object::parse(m.body.as_deref().unwrap_or_default().as_bytes()) {
            Err(BodyError::TestEvent | BodyError::NotObjectCreated(_)) => Verdict::Done,
            Err(e) => Verdict::DeadLetter(format!("message body: {e}")),
            Ok(objects) => {
                let mut verdict = Verdict::Done;
                for o in objects {
                    verdict = self.stream_object(&o, &job, &stop, message_age).await;
                    if !matches!(verdict, Verdict::Done) {
                        break;
                    }
                }
                verdict
            }
        };
        heartbeat.abort();
        {
            let mut j = job.lock().unwrap_or_else(|p| p.into_inner());
            j.finished_ms = Some(epoch_ms(SystemTime::now()));
            (j.state, j.error) = match &verdict {
                Verdict::Done => (JobState::Succeeded, None),
                Verdict::DeadLetter(r) => (JobState::DeadLettered, Some(r.clone())),
                Verdict::Retry(r) => (JobState::Retrying, Some(r.clone())),
                Verdict::Return => (JobState::Returned, Some("stopped by shutdown".into())),
            };
        }
        let queue = self.cfg.queue_url.clone();
        self.settle(&queue, &m, Some(receive_count), verdict).await;
    }

    fn heartbeat(&self, receipt: String) -> tokio::task::JoinHandle<()> {
        let sqs = self.sqs.clone();
        let queue = self.cfg.queue_url.clone();
        let visibility = self.cfg.visibility;
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(visibility / 3);
            tick.tick().await;
            loop {
                tick.tick().await;
                let r = sqs
                    .change_message_visibility()
                    .queue_url(&queue)
                    .receipt_handle(&receipt)
                    .visibility_timeout(visibility.as_secs() as i32)
                    .send()
                    .await;
                if let Err(e) = r {
                    tracing::warn!(error = %aws_sdk_sqs::error::DisplayErrorContext(e), "extending the message's visibility failed");
                }
            }
        })
    }

    async fn stream_object(
        &self,
        object: &ObjectRef,
        job: &Arc<Mutex<JobReport>>,
        stop: &CancellationToken,
        message_age: Option<Duration>,
    ) -> Verdict {
        let update =
            |f: &dyn Fn(&mut JobReport)| f(&mut job.lock().unwrap_or_else(|p| p.into_inner()));
        update(&|j| j.object = Some(object.clone()));
        let stream = match self.cfg.route.stream_for(object) {
            Ok(s) => s,
            Err(e) => return Verdict::DeadLetter(e),
        };
        update(&|j| j.stream = Some(stream.to_string()));
        // Never two objects at once into one stream from this process (FIFO groups do it
        // across processes).
        let lock = self.stream_lock(&stream);
        let _turn = tokio::select! {
            () = stop.cancelled() => return Verdict::Return,
            g = lock.lock() => g,
        };
        let info = match object::head(&self.s3, object).await {
            Ok(i) => i,
            Err(e @ ObjectError::NotFound { .. }) => return Verdict::DeadLetter(e.to_string()),
            Err(e) => return Verdict::Retry(e.to_string()),
        };
        let retention = match streams::prepare(&self.kv, &stream, self.cfg.create_streams).await {
            Ok(r) => r,
            Err(e @ StreamError::NotFound(_)) => return Verdict::Retry(e.to_string()),
            Err(e) => return Verdict::Retry(e.to_string()),
        };
        let url = match object::presign(&self.s3, object).await {
            Ok(u) => u,
            Err(e) => return Verdict::Retry(e.to_string()),
        };
        let spawned = async {
            FfmpegSource::builder(Input::url_with(url, self.cfg.allow_http)?)
                .with_profile(self.cfg.profile.clone())
                .with_pacing(self.cfg.pacing)
                .build()?
                .spawn()
                .await
        }
        .await;
        let ffmpeg = match spawned {
            Ok(j) => j,
            Err(e) if e.is_input_error() => return Verdict::DeadLetter(e.to_string()),
            Err(e) => return Verdict::Retry(e.to_string()),
        };
        let duration = ffmpeg.progress().borrow().duration;
        let created = ffmpeg.plan().probe().and_then(|p| p.creation_time);
        let (anchor, source) = timing::object_anchor(
            created,
            info.last_modified,
            &info.etag,
            duration,
            SystemTime::now(),
        );
        let range = resume::object_range(anchor, duration);
        let persisted =
            match resume::persisted_timecodes(&self.config, stream.as_str(), range).await {
                Ok(p) => p,
                Err(e) => return Verdict::Retry(format!("listing what the stream holds: {e}")),
            };
        tracing::info!(
            object = %object, stream = %stream, decision = %ffmpeg.decision(),
            anchor_ms = epoch_ms(anchor), anchor_source = ?source,
            already_persisted = persisted.len(), "streaming"
        );
        update(&|j| {
            j.state = JobState::Running;
            j.anchor_ms = Some(epoch_ms(anchor));
        });
        let pipeline = Pipeline::new(ffmpeg)
            .with_timing(Timing::Anchored(anchor))
            .with_skip(persisted)
            .with_cancel(stop.child_token());
        let watcher = watch_progress(pipeline.progress(), job.clone());
        let completion = Some(streams::completion_for(retention));
        let outcome = pipeline
            .run(|mode| self.sessions.open(&stream, mode, completion))
            .await;
        watcher.abort();
        let s = &outcome.summary;
        update(&|j| {
            j.fragments = s.fragments + outcome.already_persisted;
            j.fragments_delivered = s.fragments_delivered;
            j.already_persisted = outcome.already_persisted;
            j.first_fragment_number = outcome.first_fragment_number.clone();
        });
        if let Some(hook) = &self.metrics {
            hook(&ObjectMetrics {
                stream: stream.to_string(),
                ok: outcome.result.is_ok(),
                fragments_persisted: s.fragments_persisted,
                fragments_failed: s.fragments_skipped.max(s.fragments_failed.len() as u64)
                    + s.fragments_dropped,
                persisted_latency_p50: (s.persisted_latency.count > 0)
                    .then_some(s.persisted_latency.p50),
                message_age,
            });
        }
        match outcome.result {
            Ok(()) => {
                tracing::info!(
                    object = %object, stream = %stream, fragments = s.fragments,
                    already_persisted = outcome.already_persisted, "object streamed"
                );
                Verdict::Done
            }
            Err(e) => match e.kind() {
                FailureKind::Cancelled => Verdict::Return,
                FailureKind::BadInput => Verdict::DeadLetter(format!("{object}: {e}")),
                _ => Verdict::Retry(format!("{object} into {stream}: {e}")),
            },
        }
    }

    /// Deletes, dead-letters or returns a message.
    async fn settle(
        &self,
        queue: &str,
        m: &aws_sdk_sqs::types::Message,
        receive_count: Option<u64>,
        verdict: Verdict,
    ) {
        let receipt = m.receipt_handle.as_deref().unwrap_or_default();
        let visibility = |secs: i32| {
            self.sqs
                .change_message_visibility()
                .queue_url(queue)
                .receipt_handle(receipt)
                .visibility_timeout(secs)
                .send()
        };
        match verdict {
            Verdict::Done => {}
            Verdict::Return => {
                tracing::info!(message_id = ?m.message_id, "returning the message to the queue");
                if let Err(e) = visibility(0).await {
                    tracing::warn!(error = %aws_sdk_sqs::error::DisplayErrorContext(e), "returning the message failed; it comes back after its visibility timeout");
                }
                return;
            }
            Verdict::Retry(reason) => {
                let n = receive_count.unwrap_or(1).min(6) as u32;
                let backoff = (5 * 2i32.pow(n - 1)).min(300);
                tracing::error!(message_id = ?m.message_id, receive_count, retry_in_seconds = backoff, %reason, "object failed; the message comes back (redrive dead-letters it after maxReceiveCount)");
                if let Err(e) = visibility(backoff).await {
                    tracing::warn!(error = %aws_sdk_sqs::error::DisplayErrorContext(e), "setting the retry backoff failed");
                }
                return;
            }
            Verdict::DeadLetter(reason) => {
                if !self.dead_letter(queue, m, &reason).await {
                    return;
                }
            }
        }
        let deleted = self
            .sqs
            .delete_message()
            .queue_url(queue)
            .receipt_handle(receipt)
            .send()
            .await;
        if let Err(e) = deleted {
            tracing::warn!(error = %aws_sdk_sqs::error::DisplayErrorContext(e), "DeleteMessage failed; the message will come back and find its fragments already stored");
        }
    }

    /// Sends `m` to `queue`'s dead-letter queue with `reason`; true when it may be deleted.
    async fn dead_letter(
        &self,
        queue: &str,
        m: &aws_sdk_sqs::types::Message,
        reason: &str,
    ) -> bool {
        let found = if queue == self.cfg.queue_url {
            self.dlq
                .get_or_try_init(|| self.find_dlq(queue.to_owned()))
                .await
                .cloned()
        } else {
            self.find_dlq(queue.to_owned()).await
        };
        let Ok(dlq) = found else {
            // Not knowing is not "there is none": leave the message to the redrive policy.
            tracing::error!(message_id = ?m.message_id, %reason, "not retried, but the dead-letter queue cannot be looked up (sqs:GetQueueAttributes, sqs:GetQueueUrl); the message comes back and the redrive policy moves it");
            return false;
        };
        let Some(dlq) = dlq else {
            tracing::error!(message_id = ?m.message_id, %reason, "not retried: the queue has no dead-letter queue (RedrivePolicy), so the message is deleted");
            return true;
        };
        let mut req = self
            .sqs
            .send_message()
            .queue_url(&dlq.url)
            .message_body(m.body.clone().unwrap_or_default())
            .message_attributes(
                "Reason",
                MessageAttributeValue::builder()
                    .data_type("String")
                    .string_value(reason.chars().take(1000).collect::<String>())
                    .build()
                    .expect("data type is set"),
            );
        if dlq.fifo {
            let id = m.message_id.clone().unwrap_or_default();
            req = req
                .message_group_id("dead-letters")
                .message_deduplication_id(id);
        }
        match req.send().await {
            Ok(_) => {
                tracing::error!(message_id = ?m.message_id, dead_letter_queue = %dlq.url, %reason, "dead-lettered at once: retrying cannot help");
                true
            }
            Err(e) => {
                tracing::warn!(error = %aws_sdk_sqs::error::DisplayErrorContext(e), %reason, "sending to the dead-letter queue failed; the message comes back");
                false
            }
        }
    }

    /// The queue's dead-letter queue: `Ok(None)` when it has no redrive policy, `Err` when that
    /// cannot be learned.
    async fn find_dlq(&self, queue: String) -> Result<Option<DeadLetterQueue>, ()> {
        let warn = |what: &str, e: String| tracing::warn!(error = %e, "{what} failed");
        let attrs = self
            .sqs
            .get_queue_attributes()
            .queue_url(&queue)
            .attribute_names(QueueAttributeName::RedrivePolicy)
            .send()
            .await
            .map_err(|e| {
                let e = aws_sdk_sqs::error::DisplayErrorContext(e).to_string();
                warn("GetQueueAttributes(RedrivePolicy)", e)
            })?;
        let Some(policy) = attrs
            .attributes
            .and_then(|mut a| a.remove(&QueueAttributeName::RedrivePolicy))
        else {
            return Ok(None);
        };
        let value = serde_json::from_str::<serde_json::Value>(&policy).unwrap_or_default();
        let arn = value["deadLetterTargetArn"].as_str().unwrap_or_default();
        // arn:aws:sqs:REGION:ACCOUNT:NAME
        let mut parts = arn.rsplitn(3, ':');
        let (Some(name), Some(account)) = (parts.next(), parts.next()) else {
            warn("reading the RedrivePolicy", policy.clone());
            return Err(());
        };
        let url = self
            .sqs
            .get_queue_url()
            .queue_name(name)
            .queue_owner_aws_account_id(account)
            .send()
            .await
            .map_err(|e| {
                let e = aws_sdk_sqs::error::DisplayErrorContext(e).to_string();
                warn("GetQueueUrl of the dead-letter queue", e)
            })?
            .queue_url
            .ok_or(())?;
        Ok(Some(DeadLetterQueue {
            fifo: name.ends_with(".fifo"),
            url,
        }))
    }
}

/// The forwarder's `MessageDeduplicationId`: the same S3 event forwarded twice (the intake is
/// at-least-once) is one message; a new upload of the same key has a new sequencer.
pub fn dedup_id(object: &ObjectRef) -> String {
    let mut h = sha2::Sha256::new();
    h.update(object.bucket.as_bytes());
    h.update(b"/");
    h.update(object.key.as_bytes());
    h.update(b"#");
    h.update(object.sequencer.as_deref().unwrap_or("").as_bytes());
    hex::encode(h.finalize())
}

fn watch_progress(
    mut rx: tokio::sync::watch::Receiver<Progress>,
    job: Arc<Mutex<JobReport>>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        while rx.changed().await.is_ok() {
            let p = rx.borrow_and_update().clone();
            {
                let mut j = job.lock().unwrap_or_else(|e| e.into_inner());
                j.media_time_ms = p.media_time.map_or(0, |d| d.as_millis() as u64);
                j.fragments = p.session.fragments + p.already_persisted;
                j.fragments_delivered = p.session.fragments_delivered;
                j.already_persisted = p.already_persisted;
                j.first_fragment_number = p.first_fragment_number.clone();
            }
            // At most a few updates a second.
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dedup_ids_are_stable_and_distinguish_uploads() {
        let mut a = ObjectRef::new("b", "cam/1.mp4");
        a.sequencer = Some("0055AED6DCD90281E5".into());
        let mut b = a.clone();
        assert_eq!(dedup_id(&a), dedup_id(&b));
        assert_eq!(dedup_id(&a).len(), 64, "SQS allows up to 128 characters");
        b.sequencer = Some("0055AED6DCD90281E6".into());
        assert_ne!(
            dedup_id(&a),
            dedup_id(&b),
            "a new upload of the key is a new message"
        );
    }
}
