//! What a session did: [`SessionSummary`] with its latency percentiles and the list of refused
//! fragments.

use std::time::Duration;

use crate::ack::{AckError, FragmentNumber};

/// Rejected fragments listed in [`SessionSummary::fragments_failed`]; later ones are counted
/// only, so a stream of bad media cannot grow memory.
pub(crate) const FAILED_KEPT: usize = 1024;

/// A fragment the service rejected.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct FailedFragment {
    /// Its timecode, when the ERROR ack named one.
    pub timecode: Option<u64>,
    /// Its fragment number, when the ERROR ack carried one.
    pub fragment_number: Option<FragmentNumber>,
    /// The error id and code.
    pub error: AckError,
}

/// Percentiles of an acknowledgement latency over the whole session, from a log-linear
/// histogram: within 12.5% of the exact value (`max` is exact).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct LatencyStats {
    /// Acknowledgements measured in the session.
    pub count: u64,
    /// Median.
    pub p50: Duration,
    /// 99th percentile.
    pub p99: Duration,
    /// Largest.
    pub max: Duration,
}

/// What a session did, from [`PutMediaSink::close`](crate::PutMediaSink::close) or a snapshot at any time
/// ([`PutMediaSink::summary`](crate::PutMediaSink::summary), [`AckStream::summary`](crate::AckStream::summary)): the session's metrics.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct SessionSummary {
    /// Fragments the re-fragmenter produced from the input (each counted once).
    pub fragments: u64,
    /// Fragments delivered: acknowledged with the completion ack ([`CompletionAck`](crate::CompletionAck)), or
    /// RECEIVED on a connection that then ended while the service was reachable (its PERSISTED
    /// ack was lost with the connection; docs/protocol.md §6 replays only what was not RECEIVED).
    pub fragments_delivered: u64,
    /// Fragment sends handed to a connection (resends included).
    pub fragments_sent: u64,
    /// Fragments sent again on a new connection (replay after a failure).
    pub fragments_resent: u64,
    /// Fragments acknowledged RECEIVED.
    pub fragments_received: u64,
    /// Fragments acknowledged PERSISTED.
    pub fragments_persisted: u64,
    /// Fragments refused for good by the service, the first 1024 of them: the skipped ones
    /// (counted in [`fragments_skipped`](Self::fragments_skipped)) and the one whose error ended
    /// the session (4008, KMS), if any.
    pub fragments_failed: Vec<FailedFragment>,
    /// Fragments refused with a non-retryable error id and skipped.
    pub fragments_skipped: u64,
    /// Fragments dropped from the replay buffer ([`OverflowPolicy::DropOldest`](crate::OverflowPolicy::DropOldest)).
    pub fragments_dropped: u64,
    /// Body bytes handed to connections (headers, fragments, tags, resends).
    pub bytes_sent: u64,
    /// PutMedia requests opened (the first one included).
    pub connections: u32,
    /// Failures retried (dropped connections, timeouts, retryable errors, refused requests).
    pub retries: u64,
    /// Connections replaced by rotation (or after a 4003).
    pub rotations: u64,
    /// From the first media byte handed to the socket to the first acknowledgement.
    pub first_ack_latency: Option<Duration>,
    /// From a fragment's last byte handed to the socket to its RECEIVED ack.
    pub received_latency: LatencyStats,
    /// From a fragment's last byte handed to the socket to its PERSISTED ack.
    pub persisted_latency: LatencyStats,
    /// Bytes of fragments kept for replay now.
    pub buffered_bytes: usize,
    /// Media duration of the fragments kept for replay now.
    pub buffered_duration: Duration,
    /// Highest number of bytes kept for replay at once.
    pub peak_buffered_bytes: usize,
    /// Re-fragmenter warnings.
    pub warnings: u64,
    /// Events not delivered because the [`AckStream`](crate::AckStream) was not read.
    pub events_dropped: u64,
}

impl SessionSummary {
    /// Whether every fragment the input produced was delivered: none refused and skipped,
    /// none dropped from a full replay buffer, none still owed.
    /// [`PutMediaSink::close`](crate::PutMediaSink::close) returns [`Error::Incomplete`](crate::Error::Incomplete)
    /// instead of the summary when this is false.
    pub fn is_complete(&self) -> bool {
        self.fragments_skipped == 0
            && self.fragments_dropped == 0
            && self.fragments_failed.is_empty()
            && self.fragments_delivered == self.fragments
    }

    /// Fragments not delivered, for messages: the input's fragments minus the delivered ones.
    pub(crate) fn undelivered(&self) -> u64 {
        self.fragments.saturating_sub(self.fragments_delivered)
    }
}

/// Sub-buckets per power of two in [`Latencies`]: percentiles within 1/8 (12.5%) of the value.
const LATENCY_SUB: u32 = 8;
/// Microsecond values from 2^LATENCY_MAX_EXP up (about 12 days) share the last bucket.
const LATENCY_MAX_EXP: u32 = 40;
const LATENCY_BUCKETS: usize = (16 + (LATENCY_MAX_EXP - 3) * LATENCY_SUB) as usize;

/// A log-linear histogram of latencies in microseconds, over the whole session: a fixed 1.2 KB
/// however long the stream, allocated at the first sample (a fleet of streams pays per stream).
#[derive(Debug, Default)]
pub(crate) struct Latencies {
    count: u64,
    max: Duration,
    buckets: Option<Box<[u32; LATENCY_BUCKETS]>>,
}

impl Latencies {
    fn bucket(us: u64) -> usize {
        if us < 16 {
            return us as usize;
        }
        let e = (63 - us.leading_zeros()).min(LATENCY_MAX_EXP);
        let mantissa = if e >= LATENCY_MAX_EXP {
            LATENCY_SUB as u64 - 1
        } else {
            (us >> (e - 3)) & (u64::from(LATENCY_SUB) - 1)
        };
        (16 + (e - 4) * LATENCY_SUB) as usize + mantissa as usize
    }

    /// The middle of a bucket's range, in microseconds.
    fn value(idx: usize) -> u64 {
        if idx < 16 {
            return idx as u64;
        }
        let e = (idx - 16) as u32 / LATENCY_SUB + 4;
        let mantissa = (idx - 16) as u64 % u64::from(LATENCY_SUB);
        let low = (1u64 << e) + (mantissa << (e - 3));
        low + (1u64 << (e - 3)) / 2
    }

    pub(crate) fn record(&mut self, d: Duration) {
        self.count += 1;
        self.max = self.max.max(d);
        let us = u64::try_from(d.as_micros()).unwrap_or(u64::MAX);
        let b = self
            .buckets
            .get_or_insert_with(|| Box::new([0; LATENCY_BUCKETS]));
        let slot = &mut b[Self::bucket(us).min(LATENCY_BUCKETS - 1)];
        *slot = slot.saturating_add(1);
    }

    pub(crate) fn stats(&self) -> LatencyStats {
        let Some(b) = &self.buckets else {
            return LatencyStats::default();
        };
        let total: u64 = b.iter().map(|&n| u64::from(n)).sum();
        let at = |q: f64| {
            let rank = ((total as f64) * q).ceil().max(1.0) as u64;
            let mut seen = 0;
            for (i, &n) in b.iter().enumerate() {
                seen += u64::from(n);
                if seen >= rank {
                    return Duration::from_micros(Self::value(i)).min(self.max);
                }
            }
            self.max
        };
        LatencyStats {
            count: self.count,
            p50: at(0.5),
            p99: at(0.99),
            max: self.max,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn complete_only_when_every_fragment_is_delivered() {
        let mut s = SessionSummary {
            fragments: 3,
            fragments_delivered: 3,
            ..SessionSummary::default()
        };
        assert!(s.is_complete());
        assert!(
            SessionSummary::default().is_complete(),
            "no input, nothing owed"
        );
        s.fragments_delivered = 2;
        assert!(!s.is_complete());
        s.fragments_delivered = 3;
        s.fragments_dropped = 1;
        assert!(!s.is_complete());
        s.fragments_dropped = 0;
        s.fragments_skipped = 1;
        assert!(!s.is_complete());
        s.fragments_skipped = 0;
        s.fragments_failed.push(FailedFragment {
            timecode: Some(1),
            fragment_number: None,
            error: AckError::new(crate::ack::AckErrorId::from_id(4008)),
        });
        assert!(!s.is_complete());
    }

    #[test]
    fn latency_histogram_percentiles_are_within_an_eighth() {
        let mut l = Latencies::default();
        assert_eq!(l.stats(), LatencyStats::default());
        // 1..=1000 ms, uniform: p50 near 500 ms, p99 near 990 ms.
        for ms in 1..=1000u64 {
            l.record(Duration::from_millis(ms));
        }
        let s = l.stats();
        assert_eq!(s.count, 1000);
        assert_eq!(s.max, Duration::from_millis(1000));
        let near = |got: Duration, want: f64| {
            let g = got.as_secs_f64() * 1000.0;
            assert!((g - want).abs() <= want / 8.0, "{g} ms vs {want} ms");
        };
        near(s.p50, 500.0);
        near(s.p99, 990.0);
        // Buckets cover every value, in order.
        let mut last = 0;
        for us in [0u64, 1, 15, 16, 17, 100, 1_000, 123_456, 1 << 39, u64::MAX] {
            let b = Latencies::bucket(us).min(LATENCY_BUCKETS - 1);
            assert!(b >= last, "{us}");
            last = b;
        }
        let mut tiny = Latencies::default();
        tiny.record(Duration::from_micros(3));
        assert_eq!(tiny.stats().p99, Duration::from_micros(3));
    }
}
