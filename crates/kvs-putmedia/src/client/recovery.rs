//! The one place a session's recovery is decided. Three steps, each unit-tested here without a
//! network:
//! - [`error_ack_action`]: what an ERROR ack does when it arrives (stop, skip the fragment, or
//!   end the connection for a retry or reconnect);
//! - [`decide`]: what ended (a connection, or an attempt to open one) -> the action, the replay,
//!   a new endpoint, a new credential, the cause of the next connection. A pure function,
//!   table-tested against the table in docs/reliability.md ("The recovery table");
//! - [`Budget::next`]: the action -> reconnect now, back off (how long), or give up, from the
//!   retry budget ([`RetryPolicy`]), the one credential refresh per run of failures, and the
//!   free reconnects that repeat without progress.
//!
//! The driver (`driver.rs`) and the ack reader (`ack_reader.rs`) only carry the decisions out.
//!
//! The model is docs/protocol.md §6: back off, GetDataEndpoint again after a connection failure
//! (§1.1), replay from the first fragment not RECEIVED when the service was reachable or not
//! PERSISTED when it was not, skip what is refused for good, stop when the stream cannot take
//! data; §2 for the error ids.

use std::time::Duration;

use super::error::Error;
use super::policy::{Jitter, RetryPolicy};
use crate::ack::{AckError, AckErrorId, ErrorAction};

/// An ERROR ack that ended a connection, with what the session made of it.
#[derive(Debug, Clone)]
pub(crate) struct EndingError {
    pub(crate) error: AckError,
    pub(crate) timecode: Option<u64>,
    /// The action taken: the id's action, except that a "skip" naming no fragment of this
    /// session is retried (there is nothing to skip).
    pub(crate) action: ErrorAction,
}

/// How a connection ended, reported by its reader to the driver.
#[derive(Debug, Clone)]
pub(crate) enum ConnEnd {
    /// The response ended, after an ERROR ack or not: the service was reachable.
    Closed {
        /// The ERROR ack that ended it, if one did.
        error: Option<EndingError>,
    },
    /// The service acknowledged over this connection, then went silent (staleness, or no
    /// fragment acknowledged for the final-drain limit after the input ended). The transport
    /// stayed up and what was RECEIVED was received while the service was reachable
    /// (docs/protocol.md §6), so only what was not RECEIVED goes again.
    Stalled(Error),
    /// Transport failure, or a timeout before any acknowledgement: whether the service kept
    /// what it acknowledged is unknown.
    Failed(Error),
}

impl ConnEnd {
    /// What ended, for [`decide`]; `owing` says whether the connection carried fragments it
    /// did not acknowledge RECEIVED (asked only for a response that ended without an error).
    pub(crate) fn ended(&self, owing: impl FnOnce() -> bool) -> Ended {
        match self {
            Self::Closed { error: None } => Ended::Closed { owing: owing() },
            Self::Closed { error: Some(e) } => Ended::ErrorAck(e.action),
            Self::Stalled(_) => Ended::Stalled,
            Self::Failed(_) => Ended::Failed,
        }
    }
}

/// Why a session opened a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ConnectCause {
    /// The first connection.
    Start,
    /// After a failure: dropped connection, timeout, retryable error.
    Retry,
    /// Rotation before the maximum connection duration or the credentials' expiry, or a
    /// `MAX_CONNECTION_DURATION_REACHED` (4003) from the service.
    Rotation,
    /// Media resumed after the service closed an idle connection.
    Resume,
}

/// What ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Ended {
    /// Opening a request failed (credentials, GetDataEndpoint, the PutMedia answer).
    OpenFailed(OpenError),
    /// The response ended without an ERROR ack; `owing`: fragments it carried were not
    /// acknowledged RECEIVED.
    Closed { owing: bool },
    /// An ERROR ack ended the response; the id's action (docs/protocol.md §2), already turned
    /// into `Retry` for a skip naming no fragment of the session.
    ErrorAck(ErrorAction),
    /// The service acknowledged, then went silent (staleness, final-drain limit).
    Stalled,
    /// Transport failure, or a timeout before any acknowledgement.
    Failed,
}

/// How an attempt to open a request failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum OpenError {
    /// 401/403 or `ResourceNotFoundException`: maybe stale credentials.
    AuthOrNotFound,
    /// Throttling, 5xx, connection errors, timeouts...
    Retryable,
    /// Configuration, other 4xx.
    Fatal,
}

impl OpenError {
    pub(crate) fn of(e: &Error) -> Self {
        if matches!(e, Error::Auth { .. } | Error::StreamNotFound { .. }) {
            Self::AuthOrNotFound
        } else if e.is_retryable() {
            Self::Retryable
        } else {
            Self::Fatal
        }
    }
}

/// What the driver does about it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Action {
    /// A failure: back off, then reconnect; counted against the retry budget.
    Retry,
    /// Like `Retry`, once per run of failures, with freshly provided credentials; a second one
    /// in a row ends the session.
    RetryOnceWithNewCredentials,
    /// Not a failure: reconnect at once (still backed off when it repeats without progress).
    ReconnectNow,
    /// Reconnect when there is media to send.
    ReconnectOnMedia,
    /// End the session with the error.
    Stop,
}

/// Which fragments a connection that ended gives back for sending again.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Replay {
    /// Not applicable: no connection carried anything.
    Nothing,
    /// Every fragment it carried that was not acknowledged RECEIVED (the service was reachable).
    NotReceived,
    /// Every fragment it carried that was not acknowledged PERSISTED (it was not), or not
    /// RECEIVED on a stream that keeps no data.
    NotPersisted,
}

/// The decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct Recovery {
    pub(crate) action: Action,
    /// Forget the data endpoint: GetDataEndpoint again before the next request.
    pub(crate) new_endpoint: bool,
    /// End the old request without its terminating chunk, so the service does not take the
    /// stream as cleanly ended.
    pub(crate) abort: bool,
    pub(crate) replay: Replay,
    /// Why the next connection is opened (reported in `SessionEvent::Connected`).
    pub(crate) cause: ConnectCause,
    /// Counted as a rotation in the summary.
    pub(crate) rotation: bool,
}

/// The recovery table (docs/reliability.md).
pub(crate) fn decide(ended: Ended) -> Recovery {
    let r = |action, new_endpoint, abort, replay, cause| Recovery {
        action,
        new_endpoint,
        abort,
        replay,
        cause,
        rotation: false,
    };
    use Action::*;
    use ConnectCause::{Resume, Retry as Again, Rotation};
    match ended {
        // The API layer already forgot the endpoint when the failure calls for it (connection
        // errors, 5xx, InvalidEndpointException).
        Ended::OpenFailed(OpenError::AuthOrNotFound) => r(
            RetryOnceWithNewCredentials,
            false,
            false,
            Replay::Nothing,
            Again,
        ),
        Ended::OpenFailed(OpenError::Retryable) => r(Retry, false, false, Replay::Nothing, Again),
        Ended::OpenFailed(OpenError::Fatal) => r(Stop, false, false, Replay::Nothing, Again),
        // An idle close: the service ends a request that got no data for 30 s (§2).
        Ended::Closed { owing: false } => {
            r(ReconnectOnMedia, false, false, Replay::NotReceived, Resume)
        }
        Ended::Closed { owing: true } => r(Retry, false, false, Replay::NotReceived, Again),
        // 4003: the connection is too old; §3: a new GetDataEndpoint with the new connection.
        Ended::ErrorAck(ErrorAction::Reconnect) => Recovery {
            rotation: true,
            ..r(ReconnectNow, true, false, Replay::NotReceived, Rotation)
        },
        // The refused fragment is out of the ledger; the rest goes on at once.
        Ended::ErrorAck(ErrorAction::Skip) => {
            r(ReconnectNow, false, false, Replay::NotReceived, Again)
        }
        Ended::ErrorAck(ErrorAction::Retry) => r(Retry, false, false, Replay::NotReceived, Again),
        Ended::ErrorAck(ErrorAction::Stop) => r(Stop, false, false, Replay::NotReceived, Again),
        // §1.1: GetDataEndpoint again after any connection failure.
        Ended::Stalled => r(Retry, true, true, Replay::NotReceived, Again),
        Ended::Failed => r(Retry, true, true, Replay::NotPersisted, Again),
    }
}

/// What an ERROR ack with id `id` does, decided when it arrives (docs/protocol.md §2 gives each
/// id its action). A skip-class id that names no fragment this session still owes (no timecode,
/// or one already settled) has nothing to skip: it is retried under the backoff and budget, the
/// only safe reading.
pub(crate) fn error_ack_action(id: AckErrorId, names_owed_fragment: bool) -> ErrorAction {
    match id.action() {
        ErrorAction::Skip if !names_owed_fragment => ErrorAction::Retry,
        action => action,
    }
}

/// Reconnects that are not failures (4003, skip, idle close) allowed in a row without progress
/// before they are treated as one: a service answering 4003 at once must not make the session
/// reconnect in a loop.
pub(crate) const FREE_RECONNECTS: u32 = 3;

/// What the driver does after [`decide`], given the [`Budget`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Next {
    /// Reconnect at once (or on media): not a failure.
    Now,
    /// A failure: reconnect after `delay`; `attempt` failures in a row without progress.
    Backoff {
        attempt: u32,
        delay: Duration,
        /// Free reconnects repeated [`FREE_RECONNECTS`] times without progress.
        repeated_reconnects: bool,
    },
    /// End the session with the error.
    GiveUp,
}

/// Counts events in a row during which no fragment made progress (was RECEIVED or skipped).
#[derive(Debug, Default)]
struct NoProgress {
    count: u32,
    mark: u64,
}

impl NoProgress {
    /// Counts one more event at session progress `progress`; returns the run's length.
    fn bump(&mut self, progress: u64) -> u32 {
        if progress != self.mark {
            self.mark = progress;
            self.count = 0;
        }
        self.count += 1;
        self.count
    }
}

/// A session's retry budget: failures in a row without progress, the credential refresh, and
/// the free reconnects.
#[derive(Debug)]
pub(crate) struct Budget {
    policy: RetryPolicy,
    failures: NoProgress,
    free: NoProgress,
    auth_retried: bool,
}

impl Budget {
    pub(crate) fn new(policy: RetryPolicy) -> Self {
        Self {
            policy,
            failures: NoProgress::default(),
            free: NoProgress::default(),
            auth_retried: false,
        }
    }

    /// A request opened: the next authorization failure gets its credential refresh again.
    pub(crate) fn on_connected(&mut self) {
        self.auth_retried = false;
    }

    /// What to do about `action` at session progress `progress` (fragments RECEIVED or
    /// skipped so far: any progress starts the runs afresh); `jitter` spreads the backoff.
    pub(crate) fn next(&mut self, action: Action, progress: u64, jitter: &mut Jitter) -> Next {
        let repeated_reconnects = match action {
            Action::Stop => return Next::GiveUp,
            Action::RetryOnceWithNewCredentials if self.auth_retried => return Next::GiveUp,
            Action::RetryOnceWithNewCredentials => {
                self.auth_retried = true;
                false
            }
            Action::Retry => false,
            Action::ReconnectNow | Action::ReconnectOnMedia => {
                if self.free.bump(progress) <= FREE_RECONNECTS {
                    return Next::Now;
                }
                true
            }
        };
        let attempt = self.failures.bump(progress);
        if attempt > self.policy.max_attempts {
            return Next::GiveUp;
        }
        Next::Backoff {
            attempt,
            delay: self.policy.delay(attempt, jitter.unit()),
            repeated_reconnects,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every case, by the name the docs table gives it.
    fn cases() -> Vec<(&'static str, Ended)> {
        vec![
            (
                "open: auth or not found",
                Ended::OpenFailed(OpenError::AuthOrNotFound),
            ),
            ("open: retryable", Ended::OpenFailed(OpenError::Retryable)),
            ("open: fatal", Ended::OpenFailed(OpenError::Fatal)),
            ("closed, nothing owed", Ended::Closed { owing: false }),
            ("closed, owing", Ended::Closed { owing: true }),
            (
                "ERROR, reconnect (4003)",
                Ended::ErrorAck(ErrorAction::Reconnect),
            ),
            ("ERROR, skip", Ended::ErrorAck(ErrorAction::Skip)),
            ("ERROR, retry", Ended::ErrorAck(ErrorAction::Retry)),
            ("ERROR, stop", Ended::ErrorAck(ErrorAction::Stop)),
            ("stalled", Ended::Stalled),
            ("failed", Ended::Failed),
        ]
    }

    fn words(r: &Recovery) -> [String; 6] {
        let yes = |b: bool| if b { "yes" } else { "no" }.to_owned();
        [
            match r.action {
                Action::Retry => "retry",
                Action::RetryOnceWithNewCredentials => "retry once, new credentials",
                Action::ReconnectNow => "reconnect now",
                Action::ReconnectOnMedia => "reconnect on media",
                Action::Stop => "stop",
            }
            .to_owned(),
            yes(r.new_endpoint),
            yes(r.abort),
            match r.replay {
                Replay::Nothing => "-",
                Replay::NotReceived => "not RECEIVED",
                Replay::NotPersisted => "not PERSISTED",
            }
            .to_owned(),
            format!("{:?}", r.cause),
            yes(r.rotation),
        ]
    }

    /// The rows of the recovery table in docs/reliability.md, as (what ended, six cells).
    fn doc_rows(doc: &str) -> Vec<(String, Vec<String>)> {
        let start = doc
            .find("## The recovery table")
            .expect("docs/reliability.md has a recovery table");
        doc[start..]
            .lines()
            .skip_while(|l| !l.starts_with('|'))
            .take_while(|l| l.starts_with('|'))
            .skip(2)
            .map(|l| {
                let cells: Vec<String> = l
                    .trim_matches('|')
                    .split('|')
                    .map(|c| c.trim().trim_matches('`').to_owned())
                    .collect();
                (cells[0].clone(), cells[1..].to_vec())
            })
            .collect()
    }

    #[test]
    fn the_decision_is_the_documented_table() {
        let path =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/reliability.md");
        // The packaged crate has no docs/ folder; the repository's test run does.
        let Ok(doc) = std::fs::read_to_string(&path) else {
            return;
        };
        let rows = doc_rows(&doc);
        let cases = cases();
        assert_eq!(rows.len(), cases.len(), "one row per case: {rows:?}");
        for ((name, cells), (case, ended)) in rows.iter().zip(&cases) {
            assert_eq!(name, case, "rows in the order of the cases");
            assert_eq!(
                cells.as_slice(),
                words(&decide(*ended)).as_slice(),
                "row {name:?}"
            );
        }
    }

    #[test]
    fn failures_back_off_and_only_failures_replay_unpersisted() {
        for (name, ended) in cases() {
            let r = decide(ended);
            // Only a failed transport leaves the service's state unknown.
            assert_eq!(
                r.replay == Replay::NotPersisted,
                ended == Ended::Failed,
                "{name}"
            );
            // A request given up is never ended cleanly.
            assert_eq!(
                r.abort,
                matches!(ended, Ended::Stalled | Ended::Failed),
                "{name}"
            );
            if r.rotation {
                assert_eq!(r.cause, ConnectCause::Rotation);
                assert!(r.new_endpoint);
            }
        }
        assert_eq!(
            decide(Ended::OpenFailed(OpenError::of(&Error::config("x")))).action,
            Action::Stop
        );
        let throttled = Error::Throttled {
            stream: "s".into(),
            message: String::new(),
            request_id: String::new(),
        };
        assert_eq!(OpenError::of(&throttled), OpenError::Retryable);
        let auth = Error::from_http("s", 403, "", String::new(), String::new());
        assert_eq!(OpenError::of(&auth), OpenError::AuthOrNotFound);
    }

    #[test]
    fn an_error_ack_stops_skips_or_ends_the_connection_by_its_id() {
        for &id in AckErrorId::KNOWN.iter().chain(&[AckErrorId::Unknown(9999)]) {
            for named in [true, false] {
                let expected = match (id.action(), named) {
                    (ErrorAction::Skip, false) => ErrorAction::Retry,
                    (a, _) => a,
                };
                assert_eq!(
                    error_ack_action(id, named),
                    expected,
                    "{id:?} named={named}"
                );
            }
        }
        assert_eq!(
            error_ack_action(AckErrorId::InvalidMkvData, true),
            ErrorAction::Skip
        );
        assert_eq!(
            error_ack_action(AckErrorId::InvalidMkvData, false),
            ErrorAction::Retry
        );
        assert_eq!(
            error_ack_action(AckErrorId::MaxConnectionDurationReached, false),
            ErrorAction::Reconnect
        );
        assert_eq!(
            error_ack_action(AckErrorId::Unknown(9999), true),
            ErrorAction::Retry
        );
    }

    fn budget(max_attempts: u32) -> (Budget, Jitter) {
        let policy = RetryPolicy::default().with_max_attempts(max_attempts);
        (Budget::new(policy), Jitter::new(Some(1)))
    }

    fn attempt(n: Next) -> Option<u32> {
        match n {
            Next::Backoff { attempt, .. } => Some(attempt),
            _ => None,
        }
    }

    #[test]
    fn failures_back_off_until_the_budget_is_spent_and_progress_renews_it() {
        let (mut b, mut j) = budget(3);
        let runs: Vec<_> = (0..4)
            .map(|_| attempt(b.next(Action::Retry, 0, &mut j)))
            .collect();
        assert_eq!(runs, vec![Some(1), Some(2), Some(3), None]);
        assert_eq!(b.next(Action::Retry, 0, &mut j), Next::GiveUp);
        // A fragment RECEIVED since: a new run.
        assert_eq!(attempt(b.next(Action::Retry, 1, &mut j)), Some(1));
        let Next::Backoff { delay, .. } = b.next(Action::Retry, 1, &mut j) else {
            panic!("second attempt backs off");
        };
        assert!(delay >= RetryPolicy::default().initial_backoff);
        assert_eq!(budget(0).0.next(Action::Retry, 0, &mut j), Next::GiveUp);
        assert_eq!(b.next(Action::Stop, 7, &mut j), Next::GiveUp);
    }

    #[test]
    fn new_credentials_are_tried_once_per_run_of_failures() {
        let (mut b, mut j) = budget(10);
        let once = Action::RetryOnceWithNewCredentials;
        assert_eq!(attempt(b.next(once, 0, &mut j)), Some(1));
        assert_eq!(b.next(once, 0, &mut j), Next::GiveUp);
        b.on_connected();
        assert_eq!(attempt(b.next(once, 0, &mut j)), Some(2));
    }

    #[test]
    fn free_reconnects_back_off_once_they_repeat_without_progress() {
        let (mut b, mut j) = budget(10);
        for _ in 0..FREE_RECONNECTS {
            assert_eq!(b.next(Action::ReconnectNow, 0, &mut j), Next::Now);
        }
        match b.next(Action::ReconnectOnMedia, 0, &mut j) {
            Next::Backoff {
                attempt: 1,
                repeated_reconnects: true,
                ..
            } => {}
            other => panic!("{other:?}"),
        }
        // Progress: free again.
        assert_eq!(b.next(Action::ReconnectNow, 1, &mut j), Next::Now);
    }
}
