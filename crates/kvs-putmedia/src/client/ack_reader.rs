//! The acknowledgement side of one connection: [`read_acks`] reads its response, decodes the
//! acks and applies each to the ledger ([`Shared::on_ack`], matched by `FragmentTimecode`), and
//! reports to the driver how the connection ended.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use http_body_util::BodyExt;
use tokio::time::Instant;

use super::config::Timeouts;
use super::error::{BoxError, Error, TimeoutPhase};
use super::events::{FragmentAck, SessionEvent};
use super::ledger::Acked;
use super::recovery::{ConnEnd, EndingError, error_ack_action};
use super::session::{ConnShared, Shared, State};
use super::summary::FailedFragment;
use crate::ack::{
    Ack, AckDecoder, AckError, AckErrorId, AckEventType, ErrorAction, FragmentNumber,
};

/// Reads one connection's acknowledgement stream until the response ends, an ERROR ack ends the
/// connection, or a time limit passes; then reports how it ended to the driver.
///
/// Limits: the first ack must come within `first_ack` of the connection's first media byte, and
/// then some ack (IDLE included) at least every `staleness`; docs/protocol.md §6: "if no
/// BUFFERING/IDLE ack arrives for a configured time (60 s default), reset the connection".
/// Once the input has ended, a connection that owes acknowledgements for fragments it carried
/// and acknowledges none for `final_drain` (IDLE acks do not count: they only say the
/// connection is open) is reset too, checked at least every quarter of that limit: a stall at
/// the end is recovered like one in the middle, not left to fail the session.
pub(crate) async fn read_acks(
    shared: Arc<Shared>,
    conn: Arc<ConnShared>,
    mut body: hyper::body::Incoming,
    timeouts: Timeouts,
) {
    let mut decoder = AckDecoder::new();
    let mut last_ack = Instant::now();
    let mut got_ack = false;
    let mut first_byte_at: Option<Instant> = None;
    let drain = timeouts.final_drain;
    let mut last_fragment_ack = Instant::now();
    let mut drain_check = Instant::now() + drain / 4;
    let stalled = |got_ack: bool, e: Error| {
        if got_ack {
            ConnEnd::Stalled(e)
        } else {
            ConnEnd::Failed(e)
        }
    };
    let end = loop {
        if first_byte_at.is_none() && conn.first_byte_sent.load(Ordering::Relaxed) {
            first_byte_at = Some(Instant::now());
        }
        let (deadline, phase, waited) = match first_byte_at {
            Some(first)
                if !got_ack && first + timeouts.first_ack < last_ack + timeouts.staleness =>
            {
                (
                    first + timeouts.first_ack,
                    TimeoutPhase::FirstAck,
                    timeouts.first_ack,
                )
            }
            _ => (
                last_ack + timeouts.staleness,
                TimeoutPhase::Staleness,
                timeouts.staleness,
            ),
        };
        tokio::select! {
            frame = body.frame() => match frame {
                Some(Ok(frame)) => {
                    let Ok(data) = frame.into_data() else { continue };
                    decoder.push(&data);
                    let mut ended = None;
                    while let Some(item) = decoder.next_ack() {
                        last_ack = Instant::now();
                        got_ack = true;
                        if item.as_ref().is_ok_and(|a| a.fragment_timecode.is_some()) {
                            last_fragment_ack = last_ack;
                        }
                        if let Some(err) = handle_decoded(&shared, conn.id, item) {
                            ended = Some(err);
                            break;
                        }
                    }
                    // docs/protocol.md §2: "After any ERROR ack the service ends the connection".
                    if let Some(err) = ended {
                        break ConnEnd::Closed { error: Some(err) };
                    }
                }
                Some(Err(e)) => break ConnEnd::Failed(Error::Transport {
                    stream: shared.stream.clone(),
                    during: "reading acknowledgements",
                    source: BoxError::from(Box::new(e) as Box<dyn std::error::Error + Send + Sync>),
                }),
                None => {
                    let mut error = None;
                    while let Some(item) = decoder.finish() {
                        if let Some(e) = handle_decoded(&shared, conn.id, item) {
                            error = Some(e);
                        }
                    }
                    break ConnEnd::Closed { error };
                }
            },
            () = tokio::time::sleep_until(deadline) => {
                let e = Error::Timeout { stream: shared.stream.clone(), phase, waited };
                break match phase {
                    TimeoutPhase::Staleness => stalled(got_ack, e),
                    _ => ConnEnd::Failed(e),
                };
            }
            () = tokio::time::sleep_until(drain_check) => {
                let now = Instant::now();
                match shared.drain_owed_since(conn.id) {
                    Some(since) => {
                        let since = since.max(last_fragment_ack);
                        if now >= since + drain {
                            let e = Error::Timeout {
                                stream: shared.stream.clone(),
                                phase: TimeoutPhase::FinalDrain,
                                waited: drain,
                            };
                            break stalled(got_ack, e);
                        }
                        drain_check = since + drain;
                    }
                    None => drain_check = now + drain / 4,
                }
            }
            () = conn.first_byte.notified(), if first_byte_at.is_none() => {}
        }
    };
    drop(body);
    tracing::debug!(stream = %shared.stream, connection = conn.id, end = ?end, "PutMedia connection ended");
    shared.lock().connection_ended(conn.id, end);
    shared.driver.notify_one();
}

fn handle_decoded(
    shared: &Shared,
    conn: u32,
    item: std::result::Result<Ack, crate::ack::AckDecodeError>,
) -> Option<EndingError> {
    match item {
        Ok(ack) => {
            tracing::trace!(connection = conn, event = %ack.event, timecode = ?ack.fragment_timecode, "ack");
            shared.on_ack(ack)
        }
        // The decoder recovers after a bad line: report it and keep reading.
        Err(e) => {
            tracing::debug!(error = %e, "undecodable ack line");
            let ev = SessionEvent::UndecodableAck {
                reason: e.to_string(),
            };
            shared.lock().emit(Ok(ev));
            None
        }
    }
}

impl Shared {
    /// After the input ended: when connection `conn` owes acknowledgements for fragments it
    /// carried, the time from which their silence counts (the last of their last bytes handed to
    /// the socket; now while one is still being written). `None` while the input goes on or
    /// when the connection owes nothing.
    pub(crate) fn drain_owed_since(&self, conn: u32) -> Option<Instant> {
        let st = self.lock();
        if !st.input_done() {
            return None;
        }
        st.ledger.owed_since(conn, Instant::now())
    }

    /// Applies one acknowledgement to the ledger. Matching is by `FragmentTimecode`, never by
    /// arrival order (docs/protocol.md §2). Returns the error of an ERROR ack, which ends the
    /// connection.
    pub(crate) fn on_ack(&self, ack: Ack) -> Option<EndingError> {
        let now = Instant::now();
        let mut st = self.lock();
        st.record_ack(now);
        match (&ack.event, ack.fragment_timecode) {
            (AckEventType::Idle, _) => st.emit(Ok(SessionEvent::Idle)),
            (AckEventType::Error, tc) => {
                let error = ack
                    .error
                    .clone()
                    .unwrap_or_else(|| AckError::new(AckErrorId::Unknown(0)));
                return Some(self.on_error_ack(&mut st, error, tc, ack.fragment_number));
            }
            (event, Some(tc)) => {
                let Some(acked) = st.ledger.on_ack(tc, event, now) else {
                    st.emit(Ok(SessionEvent::UnmatchedAck(ack)));
                    return None;
                };
                if matches!(event, AckEventType::Received) {
                    // The driver may hold sends for this RECEIVED (a resend's too): the
                    // request's window of unreceived fragments, or an older request's barrier.
                    self.driver.notify_one();
                }
                if acked.first
                    && let Some(l) = acked.latency
                {
                    st.record_latency(event, l);
                }
                if acked.completed {
                    self.wake_sink();
                    self.driver.notify_one();
                }
                let Acked { size, latency, .. } = acked;
                let fa = FragmentAck {
                    event: event.clone(),
                    timecode: tc,
                    fragment_number: ack.fragment_number,
                    size,
                    latency,
                };
                st.emit(Ok(SessionEvent::Fragment(fa)));
            }
            (_, None) => st.emit(Ok(SessionEvent::UnmatchedAck(ack))),
        }
        None
    }

    /// Carries out what an ERROR ack does ([`error_ack_action`] decides): end the session,
    /// skip the fragment it names, or mark a RECEIVED fragment it names as owed again. The
    /// connection's end is then handled by the driver ([`decide`](super::recovery::decide)).
    fn on_error_ack(
        &self,
        st: &mut State,
        error: AckError,
        tc: Option<u64>,
        fragment_number: Option<FragmentNumber>,
    ) -> EndingError {
        let names_owed = tc.is_some_and(|t| st.ledger.owes(t));
        let action = error_ack_action(error.id, names_owed);
        match action {
            // docs/protocol.md §2 table: 4008, KMS errors and 4507 mean the stream cannot take data.
            ErrorAction::Stop => {
                // The refused fragment is reported like a skipped one, so every caller's
                // summary names it, not only the error.
                st.record_failed(FailedFragment {
                    timecode: tc,
                    fragment_number: fragment_number.clone(),
                    error: error.clone(),
                });
                let err = Error::Ack {
                    stream: self.stream.clone(),
                    id: error.id,
                    code: error.code.clone(),
                    fragment_timecode: tc,
                    fragment_number: fragment_number.map(FragmentNumber::into_string),
                };
                self.fail(st, err);
            }
            // docs/protocol.md §6: "Fragments rejected with a non-retryable error are skipped, never
            // resent."
            ErrorAction::Skip => {
                if let Some(tc) = tc
                    && st.ledger.skip(tc)
                {
                    self.wake_sink();
                    let failed = FailedFragment {
                        timecode: Some(tc),
                        fragment_number,
                        error: error.clone(),
                    };
                    st.record_failed(failed.clone());
                    tracing::warn!(stream = %self.stream, timecode = tc, error = %error.id, "fragment refused for good; skipped");
                    st.emit(Ok(SessionEvent::Skipped(failed)));
                }
            }
            ErrorAction::Retry | ErrorAction::Reconnect => {
                // A retryable error naming a fragment already RECEIVED (5001 ARCHIVAL_ERROR:
                // "failed to persist") means it is not safe: send it again.
                if let Some(tc) = tc {
                    st.ledger.on_retryable_error(tc);
                }
                if error.id.action() == ErrorAction::Skip {
                    tracing::warn!(stream = %self.stream, timecode = ?tc, error = %error.id, "ERROR ack names no fragment of this session; retrying");
                } else {
                    tracing::debug!(stream = %self.stream, timecode = ?tc, error = %error.id, "retryable ERROR ack");
                }
            }
        }
        EndingError {
            error,
            timecode: tc,
            action,
        }
    }
}
