//! The per-fragment ledger of a session: every fragment from the moment the re-fragmenter
//! completes it until nothing more is owed for it, keyed by its Cluster timecode.
//! docs/protocol.md §6: "Ledger per fragment, keyed by cluster timecode: sent -> buffering ->
//! received -> persisted | error. A fragment's bytes are freed on PERSISTED (or on RECEIVED when
//! the stream keeps no data)."

use std::time::Duration;

use bytes::Bytes;
use tokio::time::Instant;

use super::config::CompletionAck;
use super::recovery::Replay;
use super::session::State;

/// Completed fragments whose metadata is kept to match late acks (e.g. PERSISTED after RECEIVED
/// completed them); older ones are forgotten so the ledger stays bounded.
const COMPLETED_KEPT: usize = 64;

/// Where a fragment is (docs/protocol.md §6: "sent -> buffering -> received -> persisted | error").
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Status {
    /// Waiting to be taken by a connection.
    Queued,
    /// Handed to a connection.
    Sent,
    /// BUFFERING acknowledged.
    Buffering,
    /// RECEIVED acknowledged.
    Received,
    /// PERSISTED acknowledged.
    Persisted,
    /// Refused with a non-retryable error id; never resent.
    Failed,
    /// Freed from the replay buffer by [`OverflowPolicy::DropOldest`].
    Dropped,
}

/// One fragment in the ledger, keyed by its Cluster timecode.
#[derive(Debug)]
pub(crate) struct Entry {
    /// The fragment's bytes while it may have to be resent; `None` once freed.
    pub(crate) data: Option<Vec<Bytes>>,
    pub(crate) size: usize,
    /// Media time span in milliseconds, for the duration cap.
    pub(crate) start_ms: u64,
    pub(crate) end_ms: u64,
    /// Timecode of its last frame in milliseconds: with the producer start (RELATIVE) or as is
    /// (ABSOLUTE), the latest producer timestamp it carries, which pacing compares with the
    /// wall clock.
    pub(crate) last_frame_ms: u64,
    pub(crate) status: Status,
    /// Done: its completion ack came, or it failed or was dropped. Nothing more is owed.
    pub(crate) done: bool,
    /// Waits for the current connection to send it.
    pub(crate) needs_send: bool,
    /// The connection that last took it (0: none yet).
    pub(crate) sent_on: u32,
    pub(crate) sends: u32,
    pub(crate) last_byte_sent: Option<Instant>,
    /// Counted in the summary already (a resend is acknowledged again).
    pub(crate) counted_received: bool,
    pub(crate) counted_persisted: bool,
}

impl Entry {
    /// Taken by request `conn` and not acknowledged RECEIVED there yet (nor settled).
    pub(crate) fn unreceived_on(&self, conn: u32) -> bool {
        self.sent_on == conn && !self.done && !self.needs_send && self.status < Status::Received
    }

    /// Sent on a request other than `current`, still owed there: neither acknowledged RECEIVED
    /// nor requeued.
    pub(crate) fn in_flight_elsewhere(&self, current: u32) -> bool {
        self.sent_on != 0
            && self.sent_on != current
            && !self.done
            && !self.needs_send
            && self.status < Status::Received
    }
}

impl State {
    pub(crate) fn held_duration(&self) -> Duration {
        let (Some(first), Some(last)) = (self.retained.first(), self.retained.last()) else {
            return Duration::ZERO;
        };
        let start = self.ledger.get(first).map_or(0, |e| e.start_ms);
        let end = self.ledger.get(last).map_or(0, |e| e.end_ms);
        Duration::from_millis(end.saturating_sub(start))
    }

    /// Frees an entry's bytes.
    pub(crate) fn release(&mut self, tc: u64) {
        if let Some(e) = self.ledger.get_mut(&tc)
            && e.data.take().is_some()
        {
            self.held -= e.size;
            self.retained.remove(&tc);
        }
    }

    /// Marks an entry done (nothing more owed) and frees its bytes.
    pub(crate) fn finish_entry(&mut self, tc: u64) {
        let Some(e) = self.ledger.get_mut(&tc) else {
            return;
        };
        if e.done {
            return;
        }
        e.done = true;
        if e.needs_send {
            e.needs_send = false;
            self.unsent -= 1;
        }
        self.outstanding -= 1;
        self.release(tc);
    }

    pub(crate) fn set_needs_send(&mut self, tc: u64, needs: bool) {
        if let Some(e) = self.ledger.get_mut(&tc)
            && e.needs_send != needs
        {
            e.needs_send = needs;
            if needs {
                self.unsent += 1;
            } else {
                self.unsent -= 1;
            }
        }
    }

    /// Settles the fragments a connection that ended had taken (docs/protocol.md §6: "replay from the
    /// first fragment not RECEIVED when the service was reachable, or not PERSISTED when it was
    /// not"). When the service was reachable (the response ended, possibly after an ERROR ack),
    /// a RECEIVED fragment is delivered even if its PERSISTED ack was lost with the connection;
    /// the others are marked for sending again. When it was not (transport failure, timeout),
    /// every fragment not PERSISTED goes again (with zero retention RECEIVED is all there is).
    /// Returns the smallest timecode marked.
    pub(crate) fn requeue(
        &mut self,
        conn: u32,
        replay: Replay,
        completion: CompletionAck,
    ) -> Option<u64> {
        let limit = match replay {
            Replay::Nothing => return None,
            Replay::NotPersisted if completion != CompletionAck::Received => Status::Persisted,
            Replay::NotReceived | Replay::NotPersisted => Status::Received,
        };
        let mut first = None;
        let mut settled = Vec::new();
        let mut marked = 0;
        for (tc, e) in self.ledger.iter_mut() {
            if e.sent_on != conn || e.done || e.needs_send || e.data.is_none() {
                continue;
            }
            if e.status < limit {
                e.needs_send = true;
                marked += 1;
                first.get_or_insert(*tc);
            } else if e.status <= Status::Persisted {
                settled.push(*tc);
            }
        }
        self.unsent += marked;
        let any_settled = !settled.is_empty();
        for tc in settled {
            self.finish_entry(tc);
            self.summary.fragments_delivered += 1;
        }
        if any_settled {
            self.prune();
        }
        first
    }

    /// Whether connection `conn` carried fragments it did not acknowledge RECEIVED and that are
    /// still owed.
    pub(crate) fn owes_unreceived(&self, conn: u32) -> bool {
        self.ledger
            .values()
            .any(|e| e.data.is_some() && e.unreceived_on(conn))
    }

    /// Marks an entry as taken by connection `conn`; returns its bytes, followed by `eofr`.
    pub(crate) fn take_for_send(&mut self, tc: u64, conn: u32, eofr: &Bytes) -> Option<Vec<Bytes>> {
        let e = self.ledger.get_mut(&tc)?;
        let data = e.data.as_ref()?;
        let mut parts = Vec::with_capacity(data.len() + 1);
        parts.extend(data.iter().cloned());
        // docs/protocol.md §3 "Idle" and §2: a fragment ends "at an end-of-fragment tag", so the tag
        // after each whole fragment gets it RECEIVED at once instead of when the next one
        // starts (one fragment duration later).
        parts.push(eofr.clone());
        e.sent_on = conn;
        e.sends += 1;
        // Set again when this send's last byte goes out; until then the drain check counts
        // the fragment as still being written.
        e.last_byte_sent = None;
        // Acks from an earlier connection say nothing about this send: if this request fails
        // too, only its own acks decide what is resent.
        e.status = Status::Sent;
        let resend = e.sends > 1;
        if e.needs_send {
            e.needs_send = false;
            self.unsent -= 1;
        }
        self.summary.fragments_resent += u64::from(resend);
        Some(parts)
    }

    /// Counts the entries sent before that wait to go out again.
    pub(crate) fn replay_count(&self) -> u64 {
        self.ledger
            .values()
            .filter(|e| e.needs_send && e.sends > 0)
            .count() as u64
    }

    pub(crate) fn prune(&mut self) {
        let done = self.ledger.len() - self.outstanding;
        if done <= COMPLETED_KEPT {
            return;
        }
        let mut excess = done - COMPLETED_KEPT;
        self.ledger.retain(|_, e| {
            if excess > 0 && e.done {
                excess -= 1;
                false
            } else {
                true
            }
        });
    }
}
