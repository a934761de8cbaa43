//! Re-fragmenter configuration.

use std::time::Duration;

use super::ConfigError;

/// KVS maximum fragment duration (docs/protocol.md §3: 20 s; older pages say 10 s).
pub const KVS_MAX_FRAGMENT_DURATION: Duration = Duration::from_secs(20);
/// KVS maximum fragment size (docs/protocol.md §3: 50 MB; error 4001).
pub const KVS_MAX_FRAGMENT_BYTES: usize = 50_000_000;
/// KVS maximum fragment rate (docs/protocol.md §3: at most 5 fragments per second).
pub const KVS_MIN_FRAGMENT_INTERVAL: Duration = Duration::from_millis(200);
/// KVS maximum number of tracks (docs/protocol.md §3, error 4012).
pub const KVS_MAX_TRACKS: usize = 3;

/// How output Cluster timecodes relate to wall-clock time (docs/protocol.md §4.10).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TimecodeMode {
    /// The first output Cluster timecode is 0; the producer start timestamp travels separately in
    /// the `x-amzn-producer-start-timestamp` header (`x-amzn-fragment-timecode-type: RELATIVE`).
    #[default]
    Relative,
    /// Cluster timecode = `origin_epoch_ms` + media time since the first output frame
    /// (`x-amzn-fragment-timecode-type: ABSOLUTE`): the timecodes are epoch milliseconds.
    Absolute {
        /// Epoch milliseconds of the first output frame.
        origin_epoch_ms: u64,
    },
}

impl TimecodeMode {
    /// ABSOLUTE timecodes for media of `duration` sent faster than real time (a recording being
    /// backfilled): they start `duration` plus one second before `now`, so the last frame lies in
    /// the past. The service refuses producer timestamps in the future with 4007 and accepts past
    /// ones (docs/protocol.md §4.10). `now` is passed in so the rule is a pure function.
    pub fn backfill(duration: std::time::Duration, now: std::time::SystemTime) -> Self {
        let now_ms = now
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        TimecodeMode::Absolute {
            origin_epoch_ms: now_ms.saturating_sub(duration.as_millis() as u64 + 1_000),
        }
    }
}

#[cfg(test)]
mod timecode_mode_tests {
    use super::TimecodeMode;
    use std::time::{Duration, UNIX_EPOCH};

    #[test]
    fn backfill_ends_one_second_before_now() {
        let now = UNIX_EPOCH + Duration::from_millis(1_700_000_100_000);
        assert_eq!(
            TimecodeMode::backfill(Duration::from_secs(60), now),
            TimecodeMode::Absolute {
                origin_epoch_ms: 1_700_000_039_000
            }
        );
        // Never underflows before the epoch.
        assert_eq!(
            TimecodeMode::backfill(Duration::from_secs(60), UNIX_EPOCH),
            TimecodeMode::Absolute { origin_epoch_ms: 0 }
        );
    }
}

/// Validated settings of a [`Refragmenter`](super::Refragmenter). Build with
/// [`RefragmentConfig::builder`]; every instance respects the KVS limits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefragmentConfig {
    pub(crate) target_fragment_duration: Duration,
    pub(crate) max_fragment_duration: Duration,
    pub(crate) max_fragment_bytes: usize,
    pub(crate) min_fragment_interval: Duration,
    pub(crate) timecode_mode: TimecodeMode,
    pub(crate) max_element_size: u64,
    pub(crate) late_frame_window: Duration,
    pub(crate) segment_uid: Option<[u8; 16]>,
}

impl Default for RefragmentConfig {
    fn default() -> Self {
        Self {
            target_fragment_duration: Duration::from_secs(2),
            max_fragment_duration: KVS_MAX_FRAGMENT_DURATION,
            max_fragment_bytes: KVS_MAX_FRAGMENT_BYTES,
            min_fragment_interval: KVS_MIN_FRAGMENT_INTERVAL,
            timecode_mode: TimecodeMode::Relative,
            max_element_size: 64 << 20,
            late_frame_window: Duration::from_secs(1),
            segment_uid: None,
        }
    }
}

impl RefragmentConfig {
    /// A builder starting from the defaults: 2 s target, 20 s and 50 MB maxima, 200 ms minimum
    /// interval, [`TimecodeMode::Relative`], 64 MiB element cap, 1 s late-frame window.
    pub fn builder() -> RefragmentConfigBuilder {
        RefragmentConfigBuilder {
            config: Self::default(),
        }
    }

    /// Duration a fragment aims at: it is cut at the first video keyframe once it is this long.
    pub fn target_fragment_duration(&self) -> Duration {
        self.target_fragment_duration
    }

    /// Hard maximum fragment duration; reached without a keyframe, the fragment is cut anyway
    /// and a [`Warning`](super::Warning) is emitted.
    pub fn max_fragment_duration(&self) -> Duration {
        self.max_fragment_duration
    }

    /// Hard maximum fragment size in bytes.
    pub fn max_fragment_bytes(&self) -> usize {
        self.max_fragment_bytes
    }

    /// Minimum time between two fragment starts.
    pub fn min_fragment_interval(&self) -> Duration {
        self.min_fragment_interval
    }

    /// How output timecodes are rebased.
    pub fn timecode_mode(&self) -> TimecodeMode {
        self.timecode_mode
    }

    /// Largest element the reader buffers whole (a block, Tracks, Info); larger is an error.
    pub fn max_element_size(&self) -> u64 {
        self.max_element_size
    }

    /// How long (in media time past a cut) frames of other tracks timed before the cut may still
    /// arrive and join the fragment they belong to.
    pub fn late_frame_window(&self) -> Duration {
        self.late_frame_window
    }

    /// The SegmentUID forced on the output, if any.
    pub fn segment_uid(&self) -> Option<[u8; 16]> {
        self.segment_uid
    }
}

/// Builder of [`RefragmentConfig`]; [`build`](Self::build) validates.
#[derive(Debug, Clone)]
#[must_use]
pub struct RefragmentConfigBuilder {
    config: RefragmentConfig,
}

impl RefragmentConfigBuilder {
    /// Target fragment duration (default 2 s; KVS playback works best with 1-6 s).
    pub fn with_target_fragment_duration(mut self, d: Duration) -> Self {
        self.config.target_fragment_duration = d;
        self
    }

    /// Maximum fragment duration (default and cap 20 s).
    pub fn with_max_fragment_duration(mut self, d: Duration) -> Self {
        self.config.max_fragment_duration = d;
        self
    }

    /// Maximum fragment size in bytes (default and cap 50 MB).
    pub fn with_max_fragment_bytes(mut self, n: usize) -> Self {
        self.config.max_fragment_bytes = n;
        self
    }

    /// Minimum interval between fragment starts (default and floor 200 ms: 5 fragments/s).
    pub fn with_min_fragment_interval(mut self, d: Duration) -> Self {
        self.config.min_fragment_interval = d;
        self
    }

    /// Timecode rebasing (default [`TimecodeMode::Relative`]).
    pub fn with_timecode_mode(mut self, mode: TimecodeMode) -> Self {
        self.config.timecode_mode = mode;
        self
    }

    /// Cap for any element buffered whole (default 64 MiB).
    pub fn with_max_element_size(mut self, n: u64) -> Self {
        self.config.max_element_size = n;
        self
    }

    /// Window for late frames of other tracks after a cut (default 1 s).
    pub fn with_late_frame_window(mut self, d: Duration) -> Self {
        self.config.late_frame_window = d;
        self
    }

    /// Force the output SegmentUID, to reuse one across the connections of a logical stream
    /// (docs/protocol.md §4.3). Without it the input's is kept, or a stable one derived from Tracks.
    pub fn with_segment_uid(mut self, uid: [u8; 16]) -> Self {
        self.config.segment_uid = Some(uid);
        self
    }

    /// Validate against the KVS limits (docs/protocol.md §3).
    pub fn build(self) -> Result<RefragmentConfig, ConfigError> {
        let c = self.config;
        let ms = |d: Duration| format!("{d:?}");
        if c.max_fragment_duration > KVS_MAX_FRAGMENT_DURATION {
            return Err(ConfigError::OverLimit {
                field: "max_fragment_duration",
                value: ms(c.max_fragment_duration),
                limit: ms(KVS_MAX_FRAGMENT_DURATION),
            });
        }
        if c.max_fragment_bytes > KVS_MAX_FRAGMENT_BYTES {
            return Err(ConfigError::OverLimit {
                field: "max_fragment_bytes",
                value: c.max_fragment_bytes.to_string(),
                limit: KVS_MAX_FRAGMENT_BYTES.to_string(),
            });
        }
        if c.min_fragment_interval < KVS_MIN_FRAGMENT_INTERVAL {
            return Err(ConfigError::OverLimit {
                field: "min_fragment_interval",
                value: ms(c.min_fragment_interval),
                limit: ms(KVS_MIN_FRAGMENT_INTERVAL),
            });
        }
        if c.target_fragment_duration < c.min_fragment_interval {
            return Err(ConfigError::Invalid {
                field: "target_fragment_duration",
                value: ms(c.target_fragment_duration),
                why: "shorter than min_fragment_interval",
            });
        }
        if c.target_fragment_duration > c.max_fragment_duration {
            return Err(ConfigError::Invalid {
                field: "target_fragment_duration",
                value: ms(c.target_fragment_duration),
                why: "longer than max_fragment_duration",
            });
        }
        if c.max_fragment_bytes < 4096 {
            return Err(ConfigError::Invalid {
                field: "max_fragment_bytes",
                value: c.max_fragment_bytes.to_string(),
                why: "below 4096 bytes",
            });
        }
        if c.max_element_size < 4096 {
            return Err(ConfigError::Invalid {
                field: "max_element_size",
                value: c.max_element_size.to_string(),
                why: "below 4096 bytes",
            });
        }
        if c.late_frame_window > c.max_fragment_duration {
            return Err(ConfigError::Invalid {
                field: "late_frame_window",
                value: ms(c.late_frame_window),
                why: "longer than max_fragment_duration",
            });
        }
        Ok(c)
    }
}
