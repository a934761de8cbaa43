//! Exactly-once fragments across crashes: what a stream already holds for an object.
//!
//! An object's producer timestamps are deterministic ([`crate::timing::object_anchor`]), and so
//! are its fragments (cut at the same keyframes every time). After a crash the next attempt
//! lists the fragments the stream holds in the object's time range (`ListFragments` by producer
//! timestamp) and [`Pipeline::with_skip`](crate::Pipeline::with_skip) leaves those out, so the
//! stream ends with every fragment of the object exactly once.

use std::collections::BTreeSet;
use std::time::{Duration, SystemTime};

use aws_config::SdkConfig;

use crate::readback::{Archive, Timestamps};
use crate::source::BoxError;
use crate::timing::epoch_ms;

/// Slack after an object's expected end when listing its fragments: the last fragment's start
/// lies before the end, this only covers a duration ffprobe got slightly wrong.
pub const RANGE_SLACK: Duration = Duration::from_secs(60);

/// The time range an object's fragments start in: from its anchor to the anchor plus its
/// duration (six hours when unknown) plus [`RANGE_SLACK`].
pub fn object_range(anchor: SystemTime, duration: Option<Duration>) -> (SystemTime, SystemTime) {
    let length = duration.unwrap_or(Duration::from_secs(6 * 3600));
    (anchor, anchor + length + RANGE_SLACK)
}

/// The producer timestamps, in epoch milliseconds, of the fragments `stream` holds that start
/// within `range` (inclusive).
pub async fn persisted_timecodes(
    config: &SdkConfig,
    stream: &str,
    range: (SystemTime, SystemTime),
) -> Result<BTreeSet<u64>, BoxError> {
    let archive = Archive::connect(config, stream).await?;
    let listed = archive.list(Timestamps::Producer, range).await?;
    let (from, to) = (epoch_ms(range.0), epoch_ms(range.1));
    Ok(listed
        .into_iter()
        .filter_map(|f| u64::try_from(f.producer_ms).ok())
        .filter(|ms| (from..=to).contains(ms))
        .collect())
}
