//! The connection driver of a session: one task that keeps a PutMedia request open, sends the
//! ledger's fragments over it in order, and replaces it after failures (with backoff and
//! replay) and before its time runs out (rotation). docs/protocol.md §6 is the model.
//!
//! It decides nothing about recovery itself: a connection's end goes through
//! [`decide`] and the retry [`Budget`], and
//! the driver carries out the answer (requeue in the ledger, abort, forget the endpoint or the
//! credentials, back off, fail the session). It talks to the client only through the
//! [`Connector`] trait, so it does not import the client module that starts it.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio::time::Instant;

use super::ack_reader::read_acks;
use super::body::BodyChunk;
use super::config::{PutMediaClientBuilder, SessionConfig};
use super::error::{Error, Result};
use super::events::SessionEvent;
use super::policy::{Jitter, Pacing, Rotation};
use super::recovery::ConnEnd;
use super::recovery::{
    Action, Budget, ConnectCause, Ended, FREE_RECONNECTS, Next, OpenError, decide,
};
use super::session::{ConnShared, Shared};
use crate::mkv::TimecodeMode;

/// What the driver needs from the client: opening requests, the clock, and the client's caches.
/// `PutMediaClient` (api.rs) implements it, so this module does not depend on the client's
/// (which starts drivers): no module cycle.
pub(crate) trait Connector: Send + Sync + 'static {
    /// The client's configuration.
    fn config(&self) -> &PutMediaClientBuilder;
    /// This session's resolved choices (timecode mode, pacing).
    fn session(&self) -> &SessionConfig;
    /// The client's wall clock.
    fn now(&self) -> SystemTime;
    /// Opens request `id` of the session: credentials, endpoint, signed head, response status.
    fn open_connection(
        &self,
        shared: &Arc<Shared>,
        id: u32,
        producer_start: SystemTime,
    ) -> impl Future<Output = Result<OpenConnection>> + Send;
    /// Forgets the cached data endpoint (GetDataEndpoint again next time).
    fn forget_endpoint(&self) -> impl Future<Output = ()> + Send;
    /// Forgets the cached credentials (provided again next time).
    fn invalidate_credentials(&self) -> impl Future<Output = ()> + Send;
}

/// One open PutMedia request.
pub(crate) struct OpenConnection {
    pub(crate) tx: mpsc::UnboundedSender<BodyChunk>,
    pub(crate) response: hyper::body::Incoming,
    pub(crate) conn: Arc<ConnShared>,
    pub(crate) credentials_expiry: Option<SystemTime>,
}

/// The request fragments are sent on now.
#[derive(Debug)]
struct Current {
    id: u32,
    tx: mpsc::UnboundedSender<BodyChunk>,
    conn: Arc<ConnShared>,
    /// Timecode of the last fragment sent on it: fragments go out in timecode order, and a
    /// Cluster timecode must exceed the previous fragment's within one request (docs/protocol.md §4.6).
    last_sent: Option<u64>,
    header_version: u64,
    rotate_at: Instant,
}

/// What the driver does next.
enum Step {
    Exit,
    /// Decide again at once.
    Again,
    Connect,
    Flush,
    Wait(Option<Instant>),
}

pub(crate) struct Driver<C> {
    shared: Arc<Shared>,
    client: C,
    rotation: Rotation,
    pause_flush: Option<Duration>,
    producer_start: SystemTime,
    jitter: Jitter,
    cur: Option<Current>,
    /// Connections opened so far (ids are 1-based).
    opened: u32,
    readers: JoinSet<()>,
    /// The retry budget: what follows a failure (`recovery.rs`).
    budget: Budget,
    reconnect_at: Option<Instant>,
    cause: ConnectCause,
    /// Resolve the data endpoint again before the next connection.
    refresh_endpoint: bool,
    /// Under [`Pacing::Realtime`], what turns a fragment's last-frame timecode (ms) into its
    /// producer timestamp (epoch ms): the producer start with RELATIVE timecodes, 0 with
    /// ABSOLUTE ones (docs/protocol.md §4.10). `None` under [`Pacing::Backfill`].
    pace_offset_ms: Option<u64>,
}

/// Fragments a request may carry that it has not acknowledged RECEIVED yet. When acks stall or
/// the connection dies, these are what the service may hold without having said so: resent,
/// they are the duplicates a fault can cause (docs/protocol.md §6 replays everything not
/// RECEIVED). Eight keeps a healthy request busy (a RECEIVED arrives one round trip after a
/// fragment's last byte) while bounding that loss.
pub(crate) const MAX_UNRECEIVED: usize = 8;

impl<C: Connector> Driver<C> {
    pub(crate) fn new(
        shared: Arc<Shared>,
        client: C,
        producer_start: SystemTime,
        seed: Option<u64>,
    ) -> Self {
        let b = client.config();
        let s = client.session();
        let pace_offset_ms = match (s.pacing, s.timecode_mode) {
            (Pacing::Backfill, _) => None,
            (_, TimecodeMode::Relative) => Some(epoch_ms(producer_start)),
            (_, TimecodeMode::Absolute { .. }) => Some(0),
        };
        Self {
            pace_offset_ms,
            budget: Budget::new(b.retry),
            rotation: b.rotation,
            pause_flush: b.pause_flush,
            shared,
            client,
            producer_start,
            jitter: Jitter::new(seed),
            cur: None,
            opened: 0,
            readers: JoinSet::new(),
            reconnect_at: None,
            cause: ConnectCause::Start,
            refresh_endpoint: false,
        }
    }

    /// Opens the first connection before `start()` returns, so that authorization and stream
    /// errors reach the caller directly (docs/protocol.md §1.7). Retryable failures are retried under
    /// the same policy as later ones.
    pub(crate) async fn connect_first(&mut self) -> Result<()> {
        loop {
            let Err((action, err)) = self.try_connect().await else {
                return Ok(());
            };
            let Some(delay) = self.backoff(action) else {
                return Err(err);
            };
            tracing::info!(stream = %self.shared.stream, error = %err, ?delay, "PutMedia start failed; retrying");
            tokio::time::sleep(delay).await;
        }
    }

    /// The budget's answer to `action`: the backoff before the next attempt, or `None` when it
    /// gives up. Not for free reconnects (see [`Self::step`]).
    fn backoff(&mut self, action: Action) -> Option<Duration> {
        match self.next(action) {
            Next::Backoff { delay, .. } => Some(delay),
            Next::Now => Some(Duration::ZERO),
            Next::GiveUp => None,
        }
    }

    /// Asks the budget what follows `action`; counts a backoff as a retry in the summary.
    fn next(&mut self, action: Action) -> Next {
        let progress = self.shared.lock().ledger.progress();
        let next = self.budget.next(action, progress, &mut self.jitter);
        if matches!(next, Next::Backoff { .. }) {
            self.shared.lock().count_retry();
        }
        next
    }

    pub(crate) async fn run(mut self) {
        loop {
            let shared = self.shared.clone();
            let notified = shared.driver.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            match self.step() {
                Step::Exit => break,
                Step::Again => {}
                Step::Connect => {
                    // Boxed: opening a connection (credentials, GetDataEndpoint, the request)
                    // is a large future, needed once per connection; inline, every session's
                    // task would carry its size for the session's whole life.
                    if let Err((action, err)) = Box::pin(self.try_connect()).await {
                        let next = self.next(action);
                        self.carry_out(next, err);
                    }
                }
                Step::Flush => {
                    if let Some(after) = self.pause_flush {
                        self.shared.pause_flush(after);
                    }
                }
                Step::Wait(deadline) => {
                    let sleep = async {
                        match deadline {
                            Some(d) => tokio::time::sleep_until(d).await,
                            None => std::future::pending().await,
                        }
                    };
                    tokio::select! {
                        () = &mut notified => {}
                        () = sleep => {}
                        Some(_) = self.readers.join_next(), if !self.readers.is_empty() => {}
                    }
                }
            }
        }
        Box::pin(self.finish()).await;
    }

    /// Decides the next action and does the synchronous work: connection ends, sends.
    fn step(&mut self) -> Step {
        let now = Instant::now();
        tracing::trace!(stream = %self.shared.stream, cur = ?self.cur.as_ref().map(|c| (c.id, c.last_sent)), "driver step");
        let shared = self.shared.clone();
        let mut st = shared.lock();
        if st.failed() || st.abandoned() {
            return Step::Exit;
        }
        // How the current connection ended: the action and the error to report.
        let mut outcome = None;
        let conn_ends = st.take_ended();
        let ended_any = !conn_ends.is_empty();
        for (id, end) in conn_ends {
            let rec = decide(end.ended(|| st.ledger.owes_unreceived(id)));
            let requeued = st.ledger.requeue(id, rec.replay);
            let is_current = self.cur.as_ref().is_some_and(|c| c.id == id);
            if !is_current {
                // A rotated connection ended owing acks. The current request holds back every
                // fragment after one still in flight elsewhere (see below), so this is a safety
                // net: never send a fragment below what the current request already carried.
                if let (Some(first), Some(c)) = (requeued, &self.cur)
                    && c.last_sent.is_some_and(|l| l >= first)
                {
                    tracing::debug!(stream = %shared.stream, "restarting the connection to replay in order");
                    self.cur = None;
                    self.cause = ConnectCause::Retry;
                }
                continue;
            }
            let ended = self.cur.take();
            if rec.abort
                && let Some(c) = &ended
            {
                c.conn.abort();
            }
            self.refresh_endpoint |= rec.new_endpoint;
            if rec.rotation {
                st.count_rotation();
            }
            self.cause = rec.cause;
            let err = match end {
                ConnEnd::Closed { error: None } => Error::Transport {
                    stream: shared.stream.clone(),
                    during: "streaming media",
                    source: Arc::new(std::io::Error::other(
                        "the service ended the response before acknowledging every fragment",
                    )),
                },
                ConnEnd::Closed { error: Some(e) } => Error::Ack {
                    stream: shared.stream.clone(),
                    id: e.error.id,
                    code: e.error.code,
                    fragment_timecode: e.timecode,
                    fragment_number: None,
                },
                ConnEnd::Stalled(e) | ConnEnd::Failed(e) => e,
            };
            outcome = Some((rec.action, err));
        }
        if ended_any {
            // Settled fragments freed room: a sink waiting at the cap must see it.
            shared.wake_sink();
        }
        if let Some((action, err)) = outcome {
            drop(st);
            match self.next(action) {
                Next::Now => {}
                next => {
                    self.carry_out(next, err);
                    return if self.shared.lock().failed() {
                        Step::Exit
                    } else {
                        Step::Again
                    };
                }
            }
            st = shared.lock();
        }
        if st.drained() {
            return Step::Exit;
        }
        // A sink waiting on our own backpressure is not a source pause: cutting its fragment
        // short would drop video up to the next keyframe.
        let pause_at = self.pause_flush.and_then(|p| st.pause_at(p));
        if pause_at.is_some_and(|t| now >= t) {
            return Step::Flush;
        }
        let want = st.ledger.unsent() > 0;
        if let Some(c) = &self.cur
            && want
            && c.last_sent.is_some()
            && (now >= c.rotate_at || c.header_version != st.ledger.header_version())
        {
            // Between two fragments by construction: every fragment is queued whole.
            if now >= c.rotate_at {
                tracing::info!(stream = %shared.stream, connection = c.id, "rotating the PutMedia connection");
                st.count_rotation();
                // docs/protocol.md §3: rotation takes a new GetDataEndpoint.
                self.refresh_endpoint = true;
            }
            self.cur = None;
            self.cause = ConnectCause::Rotation;
        }
        // Under realtime pacing, the largest last-frame timecode that is not in the future now.
        let pace_limit = self
            .pace_offset_ms
            .map(|offset| epoch_ms(self.client.now()).saturating_sub(offset));
        let mut pace_at = None;
        let Some(cur) = self.cur.as_mut() else {
            if want {
                match self.reconnect_at {
                    Some(t) if now < t => return Step::Wait(min_opt(Some(t), pause_at)),
                    _ => return Step::Connect,
                }
            }
            return Step::Wait(pause_at);
        };
        if want {
            // docs/protocol.md §4.6 across requests: a fragment still in flight on an older request
            // (rotated away, acks pending) may yet have to be resent here, and it must then go
            // before anything later. So nothing after it is sent until it is RECEIVED or
            // requeued: at most a brief pause after a rotation.
            let barrier = st.ledger.in_flight_elsewhere(cur.id);
            let header = st.ledger.header().cloned();
            let mut unreceived = st.ledger.unreceived_on(cur.id);
            let mut next = st.ledger.next_unsent(cur.last_sent);
            while let Some(tc) = next {
                if barrier.is_some_and(|b| tc > b) || unreceived >= MAX_UNRECEIVED {
                    // A RECEIVED wakes the driver again.
                    break;
                }
                // Docs/protocol.md §4.10: a producer timestamp in the future is refused (4007).
                // Fragments go in timecode order, so the first one not due holds the rest.
                if let (Some(limit), Some(last_frame_ms)) =
                    (pace_limit, st.ledger.last_frame_ms(tc))
                    && last_frame_ms > limit
                {
                    pace_at = Some(now + Duration::from_millis(last_frame_ms - limit));
                    break;
                }
                if cur.last_sent.is_none() {
                    // docs/protocol.md §2 and §4.1: every request starts with the whole header.
                    let Some(h) = header.clone() else { break };
                    cur.header_version = st.ledger.header_version();
                    if cur.tx.send(BodyChunk::header(h)).is_err() {
                        break;
                    }
                }
                let Some(parts) = st.ledger.take_for_send(tc, cur.id, &shared.eofr) else {
                    next = st.ledger.next_unsent(Some(tc));
                    continue;
                };
                let chunk = BodyChunk::fragment(tc, parts);
                cur.last_sent = Some(tc);
                unreceived += 1;
                tracing::trace!(stream = %shared.stream, connection = cur.id, timecode = tc, "fragment queued");
                if cur.tx.send(chunk).is_err() {
                    // The request is gone; its reader reports why and the fragment is requeued.
                    break;
                }
                next = st.ledger.next_unsent(Some(tc));
            }
        }
        // Rotation waits for something to send; with nothing to send, a passed rotation time
        // must not make the wait return at once (a busy loop).
        let rotate_at = (cur.rotate_at > now).then_some(cur.rotate_at);
        Step::Wait(min_opt(min_opt(rotate_at, pause_at), pace_at))
    }

    /// Carries out the budget's answer to a failure: reconnect after the backoff, or end the
    /// session with `err` (a no-op when the session has already failed: the first failure
    /// wins, e.g. the ERROR ack that stopped it).
    fn carry_out(&mut self, next: Next, err: Error) {
        let shared = self.shared.clone();
        let mut st = shared.lock();
        match next {
            Next::Now => {}
            Next::Backoff {
                attempt,
                delay,
                repeated_reconnects,
            } => {
                // Reconnects that are not failures (4003, a skipped fragment, an idle close)
                // repeated without progress: report that, not the last one's cause.
                let error = if repeated_reconnects {
                    Error::Transport {
                        stream: shared.stream.clone(),
                        during: "streaming media",
                        source: Arc::new(std::io::Error::other(format!(
                            "{FREE_RECONNECTS} reconnects in a row without an acknowledged fragment"
                        ))),
                    }
                } else {
                    err
                };
                tracing::warn!(stream = %shared.stream, attempt, ?delay, error = %error, "PutMedia connection failed; reconnecting");
                self.reconnect_at = Some(Instant::now() + delay);
                self.cause = ConnectCause::Retry;
                let ev = SessionEvent::Reconnecting {
                    attempt,
                    delay,
                    error,
                };
                st.emit(Ok(ev));
            }
            Next::GiveUp => shared.fail(&mut st, err),
        }
    }

    /// Opens a new request and makes it current.
    async fn try_connect(&mut self) -> Result<(), (Action, Error)> {
        let id = self.opened + 1;
        if std::mem::take(&mut self.refresh_endpoint) {
            self.client.forget_endpoint().await;
        }
        let open = match self
            .client
            .open_connection(&self.shared, id, self.producer_start)
            .await
        {
            Ok(open) => open,
            Err(e) => {
                let rec = decide(Ended::OpenFailed(OpenError::of(&e)));
                self.refresh_endpoint |= rec.new_endpoint;
                if rec.action == Action::RetryOnceWithNewCredentials {
                    // Whichever call failed (GetDataEndpoint or PutMedia), the retry signs
                    // with freshly provided credentials.
                    self.client.invalidate_credentials().await;
                }
                return Err((rec.action, e));
            }
        };
        let OpenConnection {
            tx,
            response,
            conn,
            credentials_expiry,
        } = open;
        let body_conn = conn.clone();
        self.opened = id;
        self.budget.on_connected();
        self.reconnect_at = None;
        let now = Instant::now();
        let mut life = self.rotation.lifetime(self.jitter.unit());
        if let Some(exp) = credentials_expiry {
            let left = exp
                .duration_since(self.client.now())
                .unwrap_or_default()
                .saturating_sub(self.rotation.before_credential_expiry);
            life = life.min(left.max(Duration::from_secs(1)));
        }
        let timeouts = self.client.config().timeouts;
        self.readers
            .spawn(read_acks(self.shared.clone(), conn, response, timeouts));
        let cause = std::mem::replace(&mut self.cause, ConnectCause::Retry);
        let shared = self.shared.clone();
        let mut st = shared.lock();
        let header_version = st.ledger.header_version();
        st.connection_opened(id);
        let replay = st.ledger.replay_count();
        tracing::info!(stream = %shared.stream, connection = id, ?cause, replay, "PutMedia connection open");
        st.emit(Ok(SessionEvent::Connected {
            connection: id,
            cause,
            replay,
        }));
        self.cur = Some(Current {
            id,
            tx,
            conn: body_conn,
            last_sent: None,
            header_version,
            rotate_at: now + life,
        });
        Ok(())
    }

    /// The session is over: end the body of the current request and give its reader a moment
    /// to see the response end, so the service sees a clean end of stream.
    async fn finish(mut self) {
        let completed = {
            let st = self.shared.lock();
            !st.failed() && st.drained()
        };
        // Dropping the sender ends the body: hyper writes the terminating zero-length chunk.
        // Unless the session completed, the request is aborted instead, so the service does
        // not take a failed or abandoned session for a cleanly ended stream.
        if let Some(c) = self.cur.take()
            && !completed
        {
            c.conn.abort();
        }
        if completed {
            // The response normally ends right after the body; a service that keeps it open
            // only delays `close()` a little.
            let limit = self
                .client
                .config()
                .timeouts
                .final_drain
                .min(Duration::from_secs(2));
            let _ = tokio::time::timeout(limit, async {
                while self.readers.join_next().await.is_some() {}
            })
            .await;
        }
        self.readers.abort_all();
        self.shared.end_events();
    }
}

fn epoch_ms(t: SystemTime) -> u64 {
    t.duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

fn min_opt(a: Option<Instant>, b: Option<Instant>) -> Option<Instant> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, None) => a,
        (None, b) => b,
    }
}
