//! The one recovery decision of a session: what ended (a connection, or an attempt to open one)
//! -> what the driver does next. A pure function, table-tested against the table in
//! docs/reliability.md ("The recovery table"); the driver only carries it out.
//!
//! The model is docs/protocol.md §6: back off, GetDataEndpoint again after a connection failure
//! (§1.1), replay from the first fragment not RECEIVED when the service was reachable or not
//! PERSISTED when it was not, skip what is refused for good, stop when the stream cannot take
//! data; §2 for the error ids.

use super::error::Error;
use crate::ack::{AckError, ErrorAction};

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
}
