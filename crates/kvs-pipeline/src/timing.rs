//! The one rule that picks a source's fragment timecodes (docs/protocol.md §4.10).
//!
//! KVS refuses producer timestamps in the future (4007) and accepts past ones, so:
//! - media sent at its native rate (a live camera, `-re`) uses RELATIVE timecodes from the
//!   session start ([`Timing::Live`]);
//! - a recording sent faster than real time is backfilled ([`Timing::Backfill`]): ABSOLUTE
//!   timecodes that start one media duration plus a second before now, so the last frame lies in
//!   the past; with an unknown duration they start now and say so (the session paces to the wall
//!   clock, or the service refuses what runs ahead);
//! - a queue worker needs the same timestamps every time it streams an object, so that a second
//!   attempt finds what the first one persisted ([`Timing::Anchored`], from [`object_anchor`]).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use ffmpeg_source::Pacing;
use kvs_putmedia::mkv::TimecodeMode;

/// How a session's producer timestamps are chosen. See the module docs for the rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Timing {
    /// RELATIVE timecodes: producer time is the session's start plus media time.
    Live,
    /// ABSOLUTE timecodes starting now (the first frame is "now").
    Now,
    /// ABSOLUTE timecodes ending a second before now: the media's duration is subtracted.
    /// Unknown duration: as [`Timing::Now`], with a warning.
    Backfill,
    /// ABSOLUTE timecodes starting this long before now (`kvs-put --backfill SECONDS`).
    BackfillBy(Duration),
    /// ABSOLUTE timecodes whose first frame is at this instant: deterministic per object.
    Anchored(SystemTime),
}

impl Timing {
    /// The default for a pacing: native rate is live, fast is backfilled. `absolute` overrides
    /// the timecode type (`kvs-put --timecode`): `Some(false)` is always [`Timing::Live`],
    /// `Some(true)` at native rate is [`Timing::Now`].
    pub fn for_pace(pace: Pacing, absolute: Option<bool>) -> Timing {
        match (absolute, pace) {
            (Some(false), _) => Timing::Live,
            (_, Pacing::Fast) => Timing::Backfill,
            (Some(true), _) => Timing::Now,
            (None, _) => Timing::Live,
        }
    }

    /// The timecode mode for media of `duration` (when known), with `now` passed in so the rule
    /// is a pure function.
    pub fn mode(self, duration: Option<Duration>, now: SystemTime) -> TimecodeMode {
        let abs = |t: SystemTime| TimecodeMode::Absolute {
            origin_epoch_ms: epoch_ms(t),
        };
        match (self, duration) {
            (Timing::Live, _) => TimecodeMode::Relative,
            (Timing::Now, _) => abs(now),
            (Timing::Backfill, Some(d)) => TimecodeMode::backfill(d, now),
            (Timing::Backfill, None) => {
                tracing::warn!(
                    "the input's duration is unknown: timestamps start now, and media sent faster \
                     than real time waits for the wall clock or is refused as in the future (4007)"
                );
                abs(now)
            }
            (Timing::BackfillBy(d), _) => abs(now.checked_sub(d).unwrap_or(UNIX_EPOCH)),
            (Timing::Anchored(t), _) => abs(t),
        }
    }
}

/// Milliseconds since the epoch (0 before it).
pub fn epoch_ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// Where the producer time of an object's first frame comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AnchorSource {
    /// The media's own creation time (container `creation_time`).
    CreationTime,
    /// The object's metadata: upload time minus duration, millisecond from the eTag.
    Upload,
}

/// The deterministic producer time of an object's first frame, and where it came from.
///
/// The rule, the same for every attempt at the same object:
/// 1. the media's `creation_time` when it has one and the media then ends at least a second
///    before `now` (a clock in the future would be refused with 4007);
/// 2. otherwise the upload: `last_modified` (S3 `LastModified`, whole seconds) minus the media
///    duration (0 when unknown) minus one second, at the millisecond given by the first bytes
///    of the eTag (0-999), so that two objects uploaded in the same second into one stream do
///    not get the same timestamps.
///
/// `now` only decides whether the creation time is usable; it never moves the anchor, so a
/// second attempt (after a crash) gets the same timestamps as long as the first was accepted.
pub fn object_anchor(
    creation_time: Option<SystemTime>,
    last_modified: SystemTime,
    etag: &str,
    duration: Option<Duration>,
    now: SystemTime,
) -> (SystemTime, AnchorSource) {
    let length = duration.unwrap_or_default() + Duration::from_secs(1);
    if let Some(c) = creation_time
        && c > UNIX_EPOCH
        && c + length <= now
    {
        return (c, AnchorSource::CreationTime);
    }
    let whole = UNIX_EPOCH + Duration::from_secs(epoch_ms(last_modified) / 1000);
    let digest = etag
        .trim_matches('"')
        .bytes()
        .fold(0u32, |h, b| h.wrapping_mul(31).wrapping_add(u32::from(b)));
    let start = whole.checked_sub(length).unwrap_or(UNIX_EPOCH)
        + Duration::from_millis(u64::from(digest % 1000));
    (start, AnchorSource::Upload)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(ms: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_millis(ms)
    }

    #[test]
    fn pacing_picks_live_or_backfill_and_the_flag_overrides() {
        assert_eq!(Timing::for_pace(Pacing::Realtime, None), Timing::Live);
        assert_eq!(Timing::for_pace(Pacing::Fast, None), Timing::Backfill);
        assert_eq!(Timing::for_pace(Pacing::Fast, Some(false)), Timing::Live);
        assert_eq!(Timing::for_pace(Pacing::Realtime, Some(true)), Timing::Now);
    }

    #[test]
    fn modes() {
        let now = at(1_700_000_100_000);
        let d = Some(Duration::from_secs(60));
        assert_eq!(Timing::Live.mode(d, now), TimecodeMode::Relative);
        // docs/protocol.md §4.10: the last frame (origin + 60 s) lies a second before now.
        assert_eq!(
            Timing::Backfill.mode(d, now),
            TimecodeMode::Absolute {
                origin_epoch_ms: 1_700_000_039_000
            }
        );
        assert_eq!(
            Timing::Backfill.mode(None, now),
            TimecodeMode::Absolute {
                origin_epoch_ms: 1_700_000_100_000
            },
            "unknown duration: one rule for both binaries (absolute from now)"
        );
        assert_eq!(
            Timing::BackfillBy(Duration::from_secs(5)).mode(None, now),
            TimecodeMode::Absolute {
                origin_epoch_ms: 1_700_000_095_000
            }
        );
        assert_eq!(
            Timing::Anchored(at(42)).mode(d, now),
            TimecodeMode::Absolute {
                origin_epoch_ms: 42
            }
        );
    }

    #[test]
    fn anchor_prefers_a_plausible_creation_time_and_is_deterministic() {
        let now = at(2_000_000_000_000);
        let modified = at(1_999_999_990_500);
        let d = Some(Duration::from_secs(30));
        let created = at(1_999_000_000_123);
        assert_eq!(
            object_anchor(Some(created), modified, "\"abc\"", d, now),
            (created, AnchorSource::CreationTime)
        );
        // A creation time whose media would end in the future is not used.
        let future = at(1_999_999_990_000);
        let (a, src) = object_anchor(Some(future), modified, "\"abc\"", d, now);
        assert_eq!(src, AnchorSource::Upload);
        // Upload rule: LastModified to the second, minus 31 s, plus the eTag's millisecond.
        let ms = epoch_ms(a);
        assert_eq!(ms / 1000, 1_999_999_990 - 31);
        assert_eq!(
            object_anchor(None, modified, "\"abc\"", d, at(u64::MAX / 4)),
            (a, AnchorSource::Upload),
            "the anchor does not move with the clock"
        );
        let (b, _) = object_anchor(None, modified, "\"abd\"", d, now);
        assert_ne!(a, b, "another eTag, another millisecond");
    }
}
