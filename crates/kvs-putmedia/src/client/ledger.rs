//! The per-fragment ledger of a session: every fragment from the moment the re-fragmenter
//! completes it until nothing more is owed for it, keyed by its Cluster timecode.
//! docs/protocol.md §6: "Ledger per fragment, keyed by cluster timecode: sent -> buffering ->
//! received -> persisted | error. A fragment's bytes are freed on PERSISTED (or on RECEIVED when
//! the stream keeps no data)."
//!
//! [`Ledger`] owns the fragments and every count derived from them; its fields are private and
//! each transition is one method, so the counts cannot drift from the entries (the property test
//! in `ledger/tests.rs` recounts them after every step of random operation sequences).

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use bytes::Bytes;
use tokio::time::Instant;

use super::config::CompletionAck;
use super::events::DroppedFragment;
use super::recovery::Replay;
use crate::ack::AckEventType;

/// Completed fragments whose metadata is kept to match late acks (e.g. PERSISTED after RECEIVED
/// completed them, or the acks of a resend): at most this many, so the ledger stays bounded...
const COMPLETED_KEPT: usize = 64;
/// ...and of those, beyond [`COMPLETED_MIN`], only the ones that end within this much media
/// time of the newest fragment. Late acks come seconds after the first ones; a fixed count
/// alone kept minutes of 2 s fragments, ~8 KiB per session (docs/performance.md, fleet).
const COMPLETED_WINDOW_MS: u64 = 30_000;
const COMPLETED_MIN: usize = 8;

/// Where a fragment is (docs/protocol.md §6: "sent -> buffering -> received -> persisted | error").
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Status {
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
    /// Freed from the replay buffer by [`OverflowPolicy::DropOldest`](crate::OverflowPolicy).
    Dropped,
}

/// One fragment in the ledger, keyed by its Cluster timecode.
#[derive(Debug)]
struct Entry {
    /// The fragment's bytes while it may have to be resent; `None` once done (freed).
    data: Option<Vec<Bytes>>,
    size: usize,
    /// Media time span in milliseconds, for the duration cap.
    start_ms: u64,
    end_ms: u64,
    last_frame_ms: u64,
    status: Status,
    /// Done: its completion ack came, or it failed or was dropped. Nothing more is owed.
    done: bool,
    /// Waits for the current connection to send it.
    needs_send: bool,
    /// The connection that last took it (0: none yet).
    sent_on: u32,
    sends: u32,
    last_byte_sent: Option<Instant>,
    /// Counted already (a resend is acknowledged again).
    counted_received: bool,
    counted_persisted: bool,
}

impl Entry {
    /// Taken by request `conn` and not acknowledged RECEIVED there yet (nor settled).
    fn unreceived_on(&self, conn: u32) -> bool {
        self.sent_on == conn && !self.done && !self.needs_send && self.status < Status::Received
    }

    /// Sent on a request other than `current`, still owed there: neither acknowledged RECEIVED
    /// nor requeued.
    fn in_flight_elsewhere(&self, current: u32) -> bool {
        self.sent_on != 0
            && self.sent_on != current
            && !self.done
            && !self.needs_send
            && self.status < Status::Received
    }
}

/// A fragment the re-fragmenter completed, entering the ledger.
#[derive(Debug)]
pub(crate) struct NewFragment {
    /// Its Cluster timecode (the ledger's key).
    pub(crate) timecode: u64,
    /// Its bytes, as slices.
    pub(crate) data: Vec<Bytes>,
    /// Media time span in milliseconds, for the duration cap.
    pub(crate) start_ms: u64,
    pub(crate) end_ms: u64,
    /// Timecode of its last frame in milliseconds: with the producer start (RELATIVE) or as is
    /// (ABSOLUTE), the latest producer timestamp it carries, which pacing compares with the
    /// wall clock.
    pub(crate) last_frame_ms: u64,
}

/// The ledger's counts, for the session summary (a copy: reading it changes nothing).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Counts {
    /// Fragments added.
    pub(crate) fragments: u64,
    /// Fragment sends handed to a connection's socket.
    pub(crate) sent: u64,
    /// Sends of a fragment sent before.
    pub(crate) resent: u64,
    /// Fragments acknowledged RECEIVED (each once).
    pub(crate) received: u64,
    /// Fragments acknowledged PERSISTED (each once).
    pub(crate) persisted: u64,
    /// Fragments settled by their completion ack, or RECEIVED on a request that ended while
    /// the service was reachable.
    pub(crate) delivered: u64,
    /// Fragments refused for good.
    pub(crate) skipped: u64,
    /// Fragments evicted from a full replay buffer.
    pub(crate) dropped: u64,
    /// Most bytes held at once.
    pub(crate) peak_held: usize,
}

/// What one non-ERROR acknowledgement did to its fragment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Acked {
    /// The fragment's size in bytes.
    pub(crate) size: usize,
    /// From the last byte of its latest send, for RECEIVED and PERSISTED.
    pub(crate) latency: Option<Duration>,
    /// First RECEIVED (or first PERSISTED) of this fragment: its latency counts.
    pub(crate) first: bool,
    /// It completed the fragment: nothing more is owed for it.
    pub(crate) completed: bool,
}

/// The replay buffer's caps.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Caps {
    pub(crate) bytes: usize,
    pub(crate) duration: Duration,
}

/// The fragments of a session and the counts derived from them. See the module docs.
#[derive(Debug)]
pub(crate) struct Ledger {
    entries: BTreeMap<u64, Entry>,
    /// Timecodes of the entries that still hold their bytes (the ones not done), oldest first.
    retained: BTreeSet<u64>,
    /// Bytes of the retained entries.
    held: usize,
    /// Entries not done.
    outstanding: usize,
    /// Entries waiting to be sent.
    unsent: usize,
    largest_fragment: usize,
    /// The MKV header every connection starts with (docs/protocol.md §2: "resend the MKV header
    /// before any further cluster"), and a version that changes if the input's header changes.
    header: Option<Bytes>,
    header_version: u64,
    completion: CompletionAck,
    caps: Caps,
    counts: Counts,
}

impl Ledger {
    /// An empty ledger completing fragments on `completion` (`Auto` counts as PERSISTED: it is
    /// resolved before a session starts), holding bytes within `caps`.
    pub(crate) fn new(completion: CompletionAck, caps: Caps) -> Self {
        Self {
            entries: BTreeMap::new(),
            retained: BTreeSet::new(),
            held: 0,
            outstanding: 0,
            unsent: 0,
            largest_fragment: 0,
            header: None,
            header_version: 0,
            completion,
            caps,
            counts: Counts::default(),
        }
    }

    // ---- reading -----------------------------------------------------------------------

    /// Bytes of the fragments kept for replay.
    pub(crate) fn held(&self) -> usize {
        self.held
    }

    /// Media duration of the fragments kept for replay.
    pub(crate) fn held_duration(&self) -> Duration {
        let (Some(first), Some(last)) = (self.retained.first(), self.retained.last()) else {
            return Duration::ZERO;
        };
        let start = self.entries.get(first).map_or(0, |e| e.start_ms);
        let end = self.entries.get(last).map_or(0, |e| e.end_ms);
        Duration::from_millis(end.saturating_sub(start))
    }

    /// Fragments still owed (not done).
    pub(crate) fn outstanding(&self) -> usize {
        self.outstanding
    }

    /// Fragments waiting to be sent.
    pub(crate) fn unsent(&self) -> usize {
        self.unsent
    }

    /// The largest fragment so far, in bytes.
    pub(crate) fn largest_fragment(&self) -> usize {
        self.largest_fragment
    }

    /// Increases on every fragment newly RECEIVED or skipped: the driver's "progress".
    pub(crate) fn progress(&self) -> u64 {
        self.counts.received + self.counts.skipped
    }

    /// The counts the session summary reports.
    pub(crate) fn counts(&self) -> Counts {
        self.counts
    }

    /// The MKV header, once the input gave one.
    pub(crate) fn header(&self) -> Option<&Bytes> {
        self.header.as_ref()
    }

    /// Changes whenever the header does; a request started on another version is replaced.
    pub(crate) fn header_version(&self) -> u64 {
        self.header_version
    }

    /// Whether the replay buffer is over a cap with `extra` more bytes (never while nothing is
    /// owed: one fragment larger than the cap must still go).
    pub(crate) fn over(&self, extra: usize) -> bool {
        self.outstanding > 0
            && (self.held + extra > self.caps.bytes || self.held_duration() > self.caps.duration)
    }

    /// Whether the fragment is known and still owed.
    pub(crate) fn owes(&self, tc: u64) -> bool {
        self.entries.get(&tc).is_some_and(|e| !e.done)
    }

    /// The first fragment after `after` (from the start: `None`) waiting to be sent. Fragments
    /// go out in timecode order.
    pub(crate) fn next_unsent(&self, after: Option<u64>) -> Option<u64> {
        let from = match after {
            Some(l) => l.checked_add(1)?,
            None => 0,
        };
        self.entries
            .range(from..)
            .find(|(_, e)| e.needs_send)
            .map(|(tc, _)| *tc)
    }

    /// The first fragment still in flight on a request other than `current` (sent there, not
    /// acknowledged RECEIVED, not requeued): nothing after it may go out on `current` yet
    /// (docs/protocol.md §4.6 across requests).
    pub(crate) fn in_flight_elsewhere(&self, current: u32) -> Option<u64> {
        self.entries
            .iter()
            .find(|(_, e)| e.in_flight_elsewhere(current))
            .map(|(tc, _)| *tc)
    }

    /// Fragments request `conn` carries that it has not acknowledged RECEIVED.
    pub(crate) fn unreceived_on(&self, conn: u32) -> usize {
        self.entries
            .values()
            .filter(|e| e.unreceived_on(conn))
            .count()
    }

    /// Whether connection `conn` carried fragments it did not acknowledge RECEIVED and that are
    /// still owed.
    pub(crate) fn owes_unreceived(&self, conn: u32) -> bool {
        self.entries
            .values()
            .any(|e| e.data.is_some() && e.unreceived_on(conn))
    }

    /// The fragment's last-frame time in milliseconds (see [`NewFragment::last_frame_ms`]).
    pub(crate) fn last_frame_ms(&self, tc: u64) -> Option<u64> {
        self.entries.get(&tc).map(|e| e.last_frame_ms)
    }

    /// Counts the entries sent before that wait to go out again.
    pub(crate) fn replay_count(&self) -> u64 {
        self.entries
            .values()
            .filter(|e| e.needs_send && e.sends > 0)
            .count() as u64
    }

    /// When connection `conn` owes acknowledgements for fragments it carried: the time from
    /// which their silence counts (the last of their last bytes handed to the socket; `now`
    /// while one is still being written). `None` when it owes nothing.
    pub(crate) fn owed_since(&self, conn: u32, now: Instant) -> Option<Instant> {
        self.entries
            .values()
            .filter(|e| e.sent_on == conn && !e.done && !e.needs_send)
            .map(|e| e.last_byte_sent.unwrap_or(now))
            .max()
    }

    // ---- transitions -------------------------------------------------------------------

    /// Keeps the input's MKV header; a changed header gets a new version.
    pub(crate) fn set_header(&mut self, header: &Bytes) {
        if self.header.as_ref() != Some(header) {
            self.header = Some(header.clone());
            self.header_version += 1;
        }
    }

    /// Adds a fragment the re-fragmenter cut, queued for sending. `Err` with its timecode when
    /// the ledger already has one with that timecode (the ledger is unchanged).
    pub(crate) fn add(&mut self, f: NewFragment) -> Result<(), u64> {
        let tc = f.timecode;
        if self.entries.contains_key(&tc) {
            return Err(tc);
        }
        let size = f.data.iter().map(Bytes::len).sum();
        self.entries.insert(
            tc,
            Entry {
                data: Some(f.data),
                size,
                start_ms: f.start_ms,
                end_ms: f.end_ms,
                last_frame_ms: f.last_frame_ms,
                status: Status::Queued,
                done: false,
                needs_send: true,
                sent_on: 0,
                sends: 0,
                last_byte_sent: None,
                counted_received: false,
                counted_persisted: false,
            },
        );
        self.retained.insert(tc);
        self.counts.fragments += 1;
        self.held += size;
        self.outstanding += 1;
        self.unsent += 1;
        self.largest_fragment = self.largest_fragment.max(size);
        self.counts.peak_held = self.counts.peak_held.max(self.held);
        Ok(())
    }

    /// Hands fragment `tc` to connection `conn`: returns its bytes followed by `eofr`, or
    /// `None` (and it no longer waits) when it has none left to send.
    pub(crate) fn take_for_send(&mut self, tc: u64, conn: u32, eofr: &Bytes) -> Option<Vec<Bytes>> {
        let e = self.entries.get_mut(&tc)?;
        if e.needs_send {
            e.needs_send = false;
            self.unsent -= 1;
        }
        let data = e.data.as_ref()?;
        let mut parts = Vec::with_capacity(data.len() + 1);
        parts.extend(data.iter().cloned());
        // docs/protocol.md §3 "Idle" and §2: a fragment ends "at an end-of-fragment tag", so the
        // tag after each whole fragment gets it RECEIVED at once instead of when the next one
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
        self.counts.resent += u64::from(e.sends > 1);
        Some(parts)
    }

    /// The last byte of a fragment's send went to the connection at `now`.
    pub(crate) fn on_last_byte_sent(&mut self, tc: u64, now: Instant) {
        self.counts.sent += 1;
        if let Some(e) = self.entries.get_mut(&tc) {
            e.last_byte_sent = Some(now);
            if e.status == Status::Queued {
                e.status = Status::Sent;
            }
        }
    }

    /// Applies a BUFFERING, RECEIVED or PERSISTED ack (or one of an unknown type) of fragment
    /// `tc` at `now`; `None` when no fragment of the ledger has that timecode.
    pub(crate) fn on_ack(&mut self, tc: u64, event: &AckEventType, now: Instant) -> Option<Acked> {
        let e = self.entries.get_mut(&tc)?;
        let latency = match event {
            AckEventType::Received | AckEventType::Persisted => {
                e.last_byte_sent.map(|t| now.saturating_duration_since(t))
            }
            _ => None,
        };
        let rank = match event {
            AckEventType::Buffering => Some(Status::Buffering),
            AckEventType::Received => Some(Status::Received),
            AckEventType::Persisted => Some(Status::Persisted),
            _ => None,
        };
        if let Some(rank) = rank
            && e.status < rank
            && e.status <= Status::Persisted
        {
            e.status = rank;
        }
        let mut first = false;
        match event {
            AckEventType::Received if !e.counted_received => {
                e.counted_received = true;
                first = true;
                self.counts.received += 1;
            }
            AckEventType::Persisted if !e.counted_persisted => {
                e.counted_persisted = true;
                first = true;
                self.counts.persisted += 1;
            }
            _ => {}
        }
        let size = e.size;
        let completes = !e.done
            && e.status <= Status::Persisted
            && match self.completion {
                CompletionAck::Received => e.status >= Status::Received,
                CompletionAck::Persisted | CompletionAck::Auto => e.status >= Status::Persisted,
            };
        if completes {
            self.finish(tc);
            self.counts.delivered += 1;
            self.prune();
        }
        Some(Acked {
            size,
            latency,
            first,
            completed: completes,
        })
    }

    /// A non-retryable ERROR ack refused fragment `tc`: it is never resent (docs/protocol.md
    /// §6). `false` when it is not a fragment still owed (nothing to skip).
    pub(crate) fn skip(&mut self, tc: u64) -> bool {
        if !self.owes(tc) {
            return false;
        }
        if let Some(e) = self.entries.get_mut(&tc) {
            e.status = Status::Failed;
        }
        self.finish(tc);
        self.counts.skipped += 1;
        self.prune();
        true
    }

    /// A retryable ERROR ack named fragment `tc`: if it was acknowledged RECEIVED (5001
    /// ARCHIVAL_ERROR: "failed to persist"), it is not safe, so it counts as sent again and is
    /// resent with the others its request owed.
    pub(crate) fn on_retryable_error(&mut self, tc: u64) {
        if let Some(e) = self.entries.get_mut(&tc)
            && !e.done
            && e.status >= Status::Received
            && e.status <= Status::Persisted
        {
            e.status = Status::Sent;
        }
    }

    /// Settles the fragments a connection that ended had taken (docs/protocol.md §6: "replay
    /// from the first fragment not RECEIVED when the service was reachable, or not PERSISTED
    /// when it was not"). With [`Replay::NotReceived`] a RECEIVED fragment is delivered even if
    /// its PERSISTED ack was lost with the connection; the others are marked for sending again.
    /// With [`Replay::NotPersisted`] every fragment not PERSISTED goes again (on a stream that
    /// keeps no data RECEIVED is all there is). Returns the smallest timecode marked.
    pub(crate) fn requeue(&mut self, conn: u32, replay: Replay) -> Option<u64> {
        let limit = match replay {
            Replay::Nothing => return None,
            Replay::NotPersisted if self.completion != CompletionAck::Received => Status::Persisted,
            Replay::NotReceived | Replay::NotPersisted => Status::Received,
        };
        let mut first = None;
        let mut settled = Vec::new();
        for (tc, e) in self.entries.iter_mut() {
            if e.sent_on != conn || e.done || e.needs_send || e.data.is_none() {
                continue;
            }
            if e.status < limit {
                e.needs_send = true;
                self.unsent += 1;
                first.get_or_insert(*tc);
            } else if e.status <= Status::Persisted {
                settled.push(*tc);
            }
        }
        let any_settled = !settled.is_empty();
        for tc in settled {
            self.finish(tc);
            self.counts.delivered += 1;
        }
        if any_settled {
            self.prune();
        }
        first
    }

    /// docs/protocol.md §6: "on pressure the producer reports and drops whole fragments, oldest
    /// first, never partial ones", while over a cap. The newest fragment always stays.
    pub(crate) fn evict_oldest(&mut self) -> Vec<DroppedFragment> {
        let mut dropped = Vec::new();
        while self.retained.len() > 1 && self.over(0) {
            let Some(tc) = self.retained.first().copied() else {
                break;
            };
            let Some(e) = self.entries.get_mut(&tc) else {
                break;
            };
            let received = e.status >= Status::Received;
            let size = e.size;
            e.status = Status::Dropped;
            self.finish(tc);
            self.counts.dropped += 1;
            dropped.push(DroppedFragment {
                timecode: tc,
                size,
                received,
            });
        }
        self.prune();
        dropped
    }

    /// Marks an entry done (nothing more owed) and frees its bytes.
    fn finish(&mut self, tc: u64) {
        let Some(e) = self.entries.get_mut(&tc) else {
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
        if e.data.take().is_some() {
            self.held -= e.size;
            self.retained.remove(&tc);
        }
    }

    /// Forgets the oldest done entries beyond [`COMPLETED_KEPT`], and those beyond
    /// [`COMPLETED_MIN`] that ended more than [`COMPLETED_WINDOW_MS`] before the newest
    /// fragment.
    fn prune(&mut self) {
        let mut done = self.entries.len() - self.outstanding;
        if done <= COMPLETED_MIN {
            return;
        }
        let newest_end = self.entries.last_key_value().map_or(0, |(_, e)| e.end_ms);
        let stale = |e: &Entry| e.end_ms.saturating_add(COMPLETED_WINDOW_MS) < newest_end;
        // Oldest first (the key is the timecode); a few dozen entries at most.
        self.entries.retain(|_, e| {
            if e.done && done > COMPLETED_MIN && (done > COMPLETED_KEPT || stale(e)) {
                done -= 1;
                false
            } else {
                true
            }
        });
    }
}

#[cfg(test)]
mod tests;
