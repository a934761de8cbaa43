//! Job registry: admission (concurrency limit, bounded queue), duplicate suppression and the
//! state that `GET /jobs` reports.
//!
//! The Lambda in front of the service retries on timeouts, so the same object can be posted
//! again while it is still streaming; a second stream of the same object into the same KVS stream
//! would interleave fragments and fail with 4004 or a connection-limit error. An object that is
//! queued or running is therefore answered with its existing job instead of a new one.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::Serialize;
use tokio::sync::{Notify, watch};
use uuid::Uuid;

use crate::Delivery;
pub use crate::object::ObjectRef;

/// Where a job is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum JobState {
    /// Admitted, waiting for a free slot.
    Queued,
    /// ffmpeg and the PutMedia session are running.
    Running,
    /// Every fragment was acknowledged as the stream's retention requires.
    Succeeded,
    /// Ended with an error; `error` says why.
    Failed,
    /// Stopped by shutdown before it finished.
    Cancelled,
}

impl JobState {
    fn is_active(self) -> bool {
        matches!(self, JobState::Queued | JobState::Running)
    }

    /// Whether the job has ended, one way or another.
    pub fn is_terminal(self) -> bool {
        !self.is_active()
    }
}

/// Per-fragment outcome counts and media progress, updated while a job runs.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Progress {
    /// Media time streamed so far, in milliseconds.
    pub media_time_ms: u64,
    /// Duration of the input when ffprobe knows it.
    pub duration_ms: Option<u64>,
    /// What the session delivered so far (the same fields as every other report).
    #[serde(flatten)]
    pub delivery: Delivery,
}

impl Progress {
    /// Copies the pipeline's live progress (the session's own metrics).
    pub fn update(&mut self, p: &crate::Progress) {
        self.media_time_ms = p.media_time.map_or(0, |d| d.as_millis() as u64);
        self.duration_ms = p.duration.map(|d| d.as_millis() as u64);
        self.delivery = Delivery::new(&p.session, p.first_fragment_number.clone());
    }

    /// Copies the final outcome.
    pub fn finish(&mut self, o: &crate::Outcome) {
        self.delivery = Delivery::from(o);
    }
}

/// What `GET /jobs/{id}` returns.
#[derive(Debug, Clone, Serialize)]
pub struct JobView {
    /// Job id (also returned by `POST /processObject`).
    pub job_id: Uuid,
    /// The object being streamed.
    pub object: ObjectRef,
    /// Current state.
    pub state: JobState,
    /// Epoch milliseconds when the job was admitted.
    pub created_ms: u64,
    /// Epoch milliseconds when it started running.
    pub started_ms: Option<u64>,
    /// Epoch milliseconds when it ended.
    pub finished_ms: Option<u64>,
    /// The first acknowledged fragment's number.
    pub start_fragment_number: Option<String>,
    /// Media and fragment progress.
    pub progress: Progress,
    /// Why the job failed, for a person to act on.
    pub error: Option<String>,
    /// The failure's class, which picks the HTTP status of a request still waiting on the job.
    #[serde(skip)]
    pub failure_kind: Option<super::JobErrorKind>,
}

/// Shared handle to one job's state.
#[derive(Debug)]
pub struct Job {
    view: Mutex<JobView>,
    changed: watch::Sender<()>,
}

impl Job {
    /// A snapshot of the job.
    pub fn view(&self) -> JobView {
        self.view.lock().expect("job lock").clone()
    }

    /// Applies `f` to the job's state and wakes whoever waits on it.
    pub fn update(&self, f: impl FnOnce(&mut JobView)) {
        f(&mut self.view.lock().expect("job lock"));
        self.changed.send_replace(());
    }

    /// Waits until `pred` holds for the job, or `timeout` passes; returns the last snapshot.
    pub async fn wait_for(&self, timeout: Duration, pred: impl Fn(&JobView) -> bool) -> JobView {
        let mut rx = self.changed.subscribe();
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let view = self.view();
            if pred(&view) {
                return view;
            }
            if tokio::time::timeout_at(deadline, rx.changed())
                .await
                .is_err()
            {
                return self.view();
            }
        }
    }
}

/// Why a job was not admitted.
#[derive(Debug, PartialEq, Eq)]
pub enum Refused {
    /// Every slot is busy and the queue is full: answer 429 with this `Retry-After`.
    Busy {
        /// Suggested wait before retrying.
        retry_after: Duration,
    },
    /// The service is shutting down: answer 503.
    ShuttingDown,
}

/// How many jobs run at once and how many may wait.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Jobs streaming at the same time.
    pub concurrency: usize,
    /// Jobs admitted but waiting for a slot; beyond this, `429`.
    pub queue: usize,
    /// Finished jobs kept for `GET /jobs` (oldest forgotten first), so memory stays bounded.
    pub history: usize,
}

#[derive(Default)]
struct Inner {
    jobs: HashMap<Uuid, Arc<Job>>,
    /// Finished jobs in the order they finished, for bounded history.
    finished: VecDeque<Uuid>,
    active_by_object: HashMap<ObjectRef, Uuid>,
    running: usize,
    queued: VecDeque<Uuid>,
    shutting_down: bool,
}

/// The registry behind the HTTP API.
pub struct Registry {
    limits: Limits,
    inner: Mutex<Inner>,
    slot_freed: Notify,
}

/// Whether `admit` created a job or found one already streaming the object.
#[derive(Debug)]
pub enum Admitted {
    /// A new job; the caller must run it through [`Registry::acquire_slot`].
    New(Arc<Job>),
    /// The object is already queued or running: the existing job.
    Existing(Arc<Job>),
}

pub(crate) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

impl Registry {
    /// A registry with these limits.
    pub fn new(limits: Limits) -> Self {
        Registry {
            limits,
            inner: Mutex::new(Inner::default()),
            slot_freed: Notify::new(),
        }
    }

    /// Admits a job for `object`, or returns the active one for the same object.
    pub fn admit(&self, object: ObjectRef) -> Result<Admitted, Refused> {
        let mut inner = self.inner.lock().expect("registry lock");
        if inner.shutting_down {
            return Err(Refused::ShuttingDown);
        }
        if let Some(id) = inner.active_by_object.get(&object) {
            return Ok(Admitted::Existing(inner.jobs[id].clone()));
        }
        if inner.running >= self.limits.concurrency && inner.queued.len() >= self.limits.queue {
            return Err(Refused::Busy {
                retry_after: Duration::from_secs(30),
            });
        }
        let id = Uuid::new_v4();
        let job = Arc::new(Job {
            view: Mutex::new(JobView {
                job_id: id,
                object: object.clone(),
                state: JobState::Queued,
                created_ms: now_ms(),
                started_ms: None,
                finished_ms: None,
                start_fragment_number: None,
                progress: Progress::default(),
                error: None,
                failure_kind: None,
            }),
            changed: watch::channel(()).0,
        });
        inner.jobs.insert(id, job.clone());
        inner.active_by_object.insert(object, id);
        inner.queued.push_back(id);
        Ok(Admitted::New(job))
    }

    /// Waits, in FIFO order, for a free slot, then marks the job running. Returns `false` when the
    /// service shut down while the job waited (the job is then cancelled).
    pub async fn acquire_slot(&self, job: &Job) -> bool {
        let id = job.view().job_id;
        loop {
            let freed = self.slot_freed.notified();
            {
                let mut inner = self.inner.lock().expect("registry lock");
                if inner.shutting_down {
                    drop(inner);
                    self.finish(
                        job,
                        JobState::Cancelled,
                        Some("service shutting down".into()),
                    );
                    return false;
                }
                if inner.running < self.limits.concurrency && inner.queued.front() == Some(&id) {
                    inner.queued.pop_front();
                    inner.running += 1;
                    drop(inner);
                    job.update(|v| {
                        v.state = JobState::Running;
                        v.started_ms = Some(now_ms());
                    });
                    // The next queued job may also fit (concurrency > 1).
                    self.slot_freed.notify_waiters();
                    return true;
                }
            }
            freed.await;
        }
    }

    /// Marks a job finished, frees its slot and its object for new requests.
    pub fn finish(&self, job: &Job, state: JobState, error: Option<String>) {
        let view = job.view();
        {
            let mut inner = self.inner.lock().expect("registry lock");
            if view.state == JobState::Running {
                inner.running -= 1;
            } else {
                inner.queued.retain(|q| *q != view.job_id);
            }
            if inner.active_by_object.get(&view.object) == Some(&view.job_id) {
                inner.active_by_object.remove(&view.object);
            }
            inner.finished.push_back(view.job_id);
            while inner.finished.len() > self.limits.history {
                if let Some(old) = inner.finished.pop_front() {
                    inner.jobs.remove(&old);
                }
            }
        }
        job.update(|v| {
            v.state = state;
            v.finished_ms = Some(now_ms());
            v.error = error;
        });
        self.slot_freed.notify_waiters();
    }

    /// One job by id.
    pub fn get(&self, id: Uuid) -> Option<Arc<Job>> {
        self.inner
            .lock()
            .expect("registry lock")
            .jobs
            .get(&id)
            .cloned()
    }

    /// Every known job, newest first.
    pub fn list(&self) -> Vec<JobView> {
        let inner = self.inner.lock().expect("registry lock");
        let mut views: Vec<JobView> = inner.jobs.values().map(|j| j.view()).collect();
        views.sort_by_key(|v| std::cmp::Reverse(v.created_ms));
        views
    }

    /// Stops intake; queued jobs are cancelled, running ones continue until they end.
    pub fn begin_shutdown(&self) {
        self.inner.lock().expect("registry lock").shutting_down = true;
        self.slot_freed.notify_waiters();
    }

    /// Jobs queued or running.
    pub fn active(&self) -> usize {
        let inner = self.inner.lock().expect("registry lock");
        inner.running + inner.queued.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn obj(k: &str) -> ObjectRef {
        ObjectRef::new("b", k)
    }

    fn limits(concurrency: usize, queue: usize) -> Limits {
        Limits {
            concurrency,
            queue,
            history: 4,
        }
    }

    #[tokio::test]
    async fn duplicate_object_returns_the_active_job() {
        let r = Registry::new(limits(1, 1));
        let Admitted::New(a) = r.admit(obj("x")).unwrap() else {
            panic!("first admit must be new")
        };
        let Admitted::Existing(b) = r.admit(obj("x")).unwrap() else {
            panic!("second admit of the same object must return the active job")
        };
        assert_eq!(a.view().job_id, b.view().job_id);
        assert!(r.acquire_slot(&a).await);
        r.finish(&a, JobState::Succeeded, None);
        // Once finished, the object may be streamed again.
        assert!(matches!(r.admit(obj("x")).unwrap(), Admitted::New(_)));
    }

    #[tokio::test]
    async fn queue_bound_refuses_with_retry_after() {
        let r = Registry::new(limits(1, 1));
        let Admitted::New(a) = r.admit(obj("a")).unwrap() else {
            panic!()
        };
        assert!(r.acquire_slot(&a).await);
        let Admitted::New(_b) = r.admit(obj("b")).unwrap() else {
            panic!()
        };
        assert!(matches!(r.admit(obj("c")), Err(Refused::Busy { .. })));
        r.finish(&a, JobState::Succeeded, None);
        assert_eq!(r.active(), 1);
    }

    #[tokio::test]
    async fn queued_job_starts_when_a_slot_frees_in_fifo_order() {
        let r = Arc::new(Registry::new(limits(1, 2)));
        let Admitted::New(a) = r.admit(obj("a")).unwrap() else {
            panic!()
        };
        assert!(r.acquire_slot(&a).await);
        let Admitted::New(b) = r.admit(obj("b")).unwrap() else {
            panic!()
        };
        let (r2, b2) = (r.clone(), b.clone());
        let waiter = tokio::spawn(async move { r2.acquire_slot(&b2).await });
        tokio::task::yield_now().await;
        assert_eq!(b.view().state, JobState::Queued);
        r.finish(&a, JobState::Succeeded, None);
        assert!(waiter.await.unwrap());
        assert_eq!(b.view().state, JobState::Running);
    }

    #[tokio::test]
    async fn shutdown_cancels_queued_jobs_and_refuses_new_ones() {
        let r = Arc::new(Registry::new(limits(1, 2)));
        let Admitted::New(a) = r.admit(obj("a")).unwrap() else {
            panic!()
        };
        assert!(r.acquire_slot(&a).await);
        let Admitted::New(b) = r.admit(obj("b")).unwrap() else {
            panic!()
        };
        let (r2, b2) = (r.clone(), b.clone());
        let waiter = tokio::spawn(async move { r2.acquire_slot(&b2).await });
        tokio::task::yield_now().await;
        r.begin_shutdown();
        assert!(!waiter.await.unwrap());
        assert_eq!(b.view().state, JobState::Cancelled);
        assert_eq!(r.admit(obj("c")).unwrap_err(), Refused::ShuttingDown);
        assert_eq!(a.view().state, JobState::Running);
    }

    #[tokio::test]
    async fn history_is_bounded() {
        let r = Registry::new(limits(1, 1));
        for i in 0..10 {
            let Admitted::New(j) = r.admit(obj(&i.to_string())).unwrap() else {
                panic!()
            };
            assert!(r.acquire_slot(&j).await);
            r.finish(&j, JobState::Succeeded, None);
        }
        assert_eq!(r.list().len(), 4);
    }
}
