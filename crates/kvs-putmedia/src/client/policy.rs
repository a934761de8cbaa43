//! Reliability policies of a session: retry with backoff, connection rotation, the replay
//! buffer's limits, and the injectable randomness behind their jitter.
//!
//! docs/protocol.md §6 ("How the official producer recovers") is the model: back off, reconnect,
//! resend the header, replay; rotate before 45 minutes and before the credentials expire; keep a
//! bounded store and drop whole fragments, oldest first, on pressure.

use std::time::Duration;

/// How a session retries after a dropped connection, a timeout, a retryable ERROR ack or a
/// retryable HTTP error.
///
/// The delay before attempt `n` (1-based, counting consecutive failures without progress) is
/// drawn uniformly from `[d/2, d]` with `d = min(initial_backoff * 2^(n-1), max_backoff)`
/// ("equal jitter": never zero, so a fleet of producers does not reconnect in lock step, and
/// never more than the cap). A failure after which some fragment was acknowledged RECEIVED (or
/// skipped) starts the count again: a stream that keeps moving is never given up on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct RetryPolicy {
    /// Delay cap for the first retry (200 ms).
    pub initial_backoff: Duration,
    /// Largest delay (10 s).
    pub max_backoff: Duration,
    /// Consecutive failures without progress after which the session ends with the last error
    /// (10, about a minute of trying with the default delays). `0` disables retries.
    pub max_attempts: u32,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            initial_backoff: Duration::from_millis(200),
            max_backoff: Duration::from_secs(10),
            max_attempts: 10,
        }
    }
}

impl RetryPolicy {
    /// No retry: the first failure ends the session (the behaviour of the Node sample).
    pub fn none() -> Self {
        Self {
            max_attempts: 0,
            ..Self::default()
        }
    }
    /// Sets [`initial_backoff`](Self::initial_backoff).
    pub fn with_initial_backoff(mut self, d: Duration) -> Self {
        self.initial_backoff = d;
        self
    }
    /// Sets [`max_backoff`](Self::max_backoff).
    pub fn with_max_backoff(mut self, d: Duration) -> Self {
        self.max_backoff = d;
        self
    }
    /// Sets [`max_attempts`](Self::max_attempts).
    pub fn with_max_attempts(mut self, n: u32) -> Self {
        self.max_attempts = n;
        self
    }

    /// The delay before retry `attempt` (1-based), with `unit` a uniform draw from `[0, 1)`.
    pub(crate) fn delay(&self, attempt: u32, unit: f64) -> Duration {
        let shift = attempt.saturating_sub(1).min(30);
        let cap = self
            .initial_backoff
            .saturating_mul(1 << shift)
            .min(self.max_backoff);
        cap / 2 + cap.mul_f64(unit.clamp(0.0, 1.0) / 2.0)
    }
}

/// When a session replaces its connection by a new one on its own (docs/protocol.md §3: the service
/// closes a connection after 45 minutes with 4003; "the official producer rotates at about 40
/// minutes (with jitter)"; §6: "Rotation before 45 minutes and before credentials expire").
///
/// A connection is rotated `interval - jitter * u` after it opened (`u` uniform in `[0, 1)`), or
/// [`before_credential_expiry`](Self::before_credential_expiry) before the credentials that
/// signed it expire, whichever comes first. The switch happens between two fragments: the old
/// request's body ends (its remaining acks still arrive) and the next fragment goes out on the
/// new request, after the MKV header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct Rotation {
    /// Nominal connection lifetime (40 min).
    pub interval: Duration,
    /// Random reduction of the lifetime, so a fleet does not rotate in lock step (2 min).
    pub jitter: Duration,
    /// Margin kept before the signing credentials' expiry (1 min).
    pub before_credential_expiry: Duration,
}

impl Default for Rotation {
    fn default() -> Self {
        Self {
            interval: Duration::from_secs(40 * 60),
            jitter: Duration::from_secs(2 * 60),
            before_credential_expiry: Duration::from_secs(60),
        }
    }
}

impl Rotation {
    /// Sets [`interval`](Self::interval).
    pub fn with_interval(mut self, d: Duration) -> Self {
        self.interval = d;
        self
    }
    /// Sets [`jitter`](Self::jitter).
    pub fn with_jitter(mut self, d: Duration) -> Self {
        self.jitter = d;
        self
    }
    /// Sets [`before_credential_expiry`](Self::before_credential_expiry).
    pub fn with_before_credential_expiry(mut self, d: Duration) -> Self {
        self.before_credential_expiry = d;
        self
    }

    /// The lifetime of one connection, with `unit` a uniform draw from `[0, 1)`.
    pub(crate) fn lifetime(&self, unit: f64) -> Duration {
        self.interval
            .saturating_sub(self.jitter.mul_f64(unit.clamp(0.0, 1.0)))
    }
}

/// What a session does when the fragments it keeps for replay reach their cap
/// ([`PutMediaClientBuilder::with_buffer_bound`](crate::PutMediaClientBuilder::with_buffer_bound),
/// [`with_buffer_duration`](crate::PutMediaClientBuilder::with_buffer_duration)).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum OverflowPolicy {
    /// `poll_ready` waits until acknowledgements free room. Nothing is lost; the source is
    /// slowed down. Right for files and anything that can wait. The default.
    #[default]
    Backpressure,
    /// Free the oldest whole fragments, never a part of one (docs/protocol.md §6: "on pressure the
    /// producer reports and drops whole fragments, oldest first"), each reported as
    /// [`SessionEvent::Dropped`](crate::SessionEvent::Dropped). The sink never waits. Right for
    /// live sources, where waiting would only lose media at the source instead.
    DropOldest,
}

/// When a session sends a complete fragment, relative to the wall clock.
///
/// The service refuses a fragment whose producer timestamp lies in the future with 4007
/// `INVALID_PRODUCER_TIMESTAMP` (docs/protocol.md §4.10). With RELATIVE timecodes a fragment's
/// producer timestamp is the session's producer start plus its timecode; with ABSOLUTE ones it
/// is the timecode itself. A recording read from a file is complete long before those times:
/// sent at once, most of it would be refused.
///
/// Parses from and prints as `realtime` / `backfill`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Pacing {
    /// Hold each fragment until the producer timestamp of its last frame is no longer in the
    /// future on the client's clock, then send it. A live source is never held (its fragments
    /// complete after their media happened); a file read faster than real time goes out at
    /// real time, and the replay buffer's caps slow the reader down meanwhile. With timecodes
    /// that already lie in the past ([`TimecodeMode::backfill`](crate::mkv::TimecodeMode::backfill))
    /// nothing is held. The default.
    #[default]
    Realtime,
    /// Send each fragment as soon as it is complete, without looking at the clock: recorded
    /// media backfilled as fast as the network allows, for timecodes that lie in the past
    /// (ABSOLUTE ones from [`TimecodeMode::backfill`](crate::mkv::TimecodeMode::backfill), the
    /// media's duration and "now"). A fragment that is in the future after all is refused with
    /// 4007, skipped, and [`PutMediaSink::close`](crate::PutMediaSink::close) returns
    /// [`Error::Incomplete`](crate::Error::Incomplete).
    Backfill,
}

impl Pacing {
    /// The name `FromStr` accepts: `realtime` or `backfill`.
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Realtime => "realtime",
            Self::Backfill => "backfill",
        }
    }
}

impl std::fmt::Display for Pacing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Pacing {
    type Err = crate::Error;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "realtime" => Ok(Self::Realtime),
            "backfill" => Ok(Self::Backfill),
            _ => Err(crate::Error::Config {
                reason: format!("pacing {s:?} is neither \"realtime\" nor \"backfill\""),
            }),
        }
    }
}

/// A small, seedable generator for jitter (SplitMix64): deterministic under a seed, so tests of
/// backoff and rotation are reproducible; seeded from the clock and the address space otherwise.
#[derive(Debug, Clone)]
pub(crate) struct Jitter(u64);

impl Jitter {
    pub(crate) fn new(seed: Option<u64>) -> Self {
        Self(seed.unwrap_or_else(|| {
            let t = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos() as u64);
            let local = 0u8;
            t ^ (&raw const local as u64).rotate_left(32)
        }))
    }

    /// A uniform draw from `[0, 1)`.
    pub(crate) fn unit(&mut self) -> f64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        (z >> 11) as f64 / (1u64 << 53) as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_within_equal_jitter_and_caps() {
        let p = RetryPolicy::default();
        assert_eq!(p.delay(1, 0.0), Duration::from_millis(100));
        assert_eq!(
            p.delay(1, 0.999_999),
            Duration::from_millis(200) - Duration::from_nanos(100)
        );
        assert_eq!(p.delay(2, 0.0), Duration::from_millis(200));
        assert_eq!(p.delay(3, 0.0), Duration::from_millis(400));
        assert_eq!(p.delay(50, 1.0), Duration::from_secs(10));
        assert_eq!(p.delay(50, 0.0), Duration::from_secs(5));
    }

    #[test]
    fn rotation_lifetime_is_jittered_below_the_interval() {
        let r = Rotation::default();
        assert_eq!(r.lifetime(0.0), Duration::from_secs(40 * 60));
        assert_eq!(r.lifetime(0.5), Duration::from_secs(39 * 60));
        let short = Rotation::default()
            .with_interval(Duration::from_secs(1))
            .with_jitter(Duration::from_secs(5));
        assert_eq!(short.lifetime(0.9), Duration::ZERO);
    }

    #[test]
    fn pacing_parses_what_it_prints() {
        for p in [Pacing::Realtime, Pacing::Backfill] {
            assert_eq!(p.to_string().parse::<Pacing>().unwrap(), p);
        }
        assert_eq!("BackFill".parse::<Pacing>().unwrap(), Pacing::Backfill);
        assert_eq!(Pacing::default(), Pacing::Realtime);
        let err = "fast".parse::<Pacing>().unwrap_err().to_string();
        assert!(err.contains("\"fast\""), "{err}");
    }

    #[test]
    fn jitter_is_deterministic_under_a_seed_and_uniform_enough() {
        let mut a = Jitter::new(Some(7));
        let mut b = Jitter::new(Some(7));
        let xs: Vec<f64> = (0..1000).map(|_| a.unit()).collect();
        let ys: Vec<f64> = (0..1000).map(|_| b.unit()).collect();
        assert_eq!(xs, ys);
        assert!(xs.iter().all(|x| (0.0..1.0).contains(x)));
        let mean = xs.iter().sum::<f64>() / 1000.0;
        assert!((0.45..0.55).contains(&mean), "{mean}");
    }
}
