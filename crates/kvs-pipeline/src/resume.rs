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
use aws_sdk_kinesisvideo::types::ApiName;
use aws_sdk_kinesisvideoarchivedmedia::primitives::DateTime;
use aws_sdk_kinesisvideoarchivedmedia::types::{
    FragmentSelector, FragmentSelectorType, TimestampRange,
};

use crate::source::BoxError;
use crate::timing::epoch_ms;

/// Slack after an object's expected end when listing its fragments: the last fragment's start
/// lies before the end, this only covers a duration ffprobe got slightly wrong.
pub const RANGE_SLACK: Duration = Duration::from_secs(60);

/// Fragments listed at most per `ListFragments` page.
const PAGE: i64 = 1000;

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
    let kv = aws_sdk_kinesisvideo::Client::new(config);
    let endpoint = kv
        .get_data_endpoint()
        .stream_name(stream)
        .api_name(ApiName::ListFragments)
        .send()
        .await
        .map_err(|e| {
            format!(
                "GetDataEndpoint(LIST_FRAGMENTS) for {stream}: {}",
                aws_sdk_kinesisvideo::error::DisplayErrorContext(e)
            )
        })?
        .data_endpoint
        .ok_or("GetDataEndpoint returned no endpoint")?;
    let archived = aws_sdk_kinesisvideoarchivedmedia::Client::from_conf(
        aws_sdk_kinesisvideoarchivedmedia::config::Builder::from(config)
            .endpoint_url(endpoint)
            .build(),
    );
    let selector = FragmentSelector::builder()
        .fragment_selector_type(FragmentSelectorType::ProducerTimestamp)
        .timestamp_range(
            TimestampRange::builder()
                .start_timestamp(DateTime::from(range.0))
                .end_timestamp(DateTime::from(range.1))
                .build()?,
        )
        .build()?;
    let mut out = BTreeSet::new();
    let mut token: Option<String> = None;
    loop {
        let page = archived
            .list_fragments()
            .stream_name(stream)
            .max_results(PAGE)
            .set_next_token(token.take())
            .fragment_selector(selector.clone())
            .send()
            .await
            .map_err(|e| {
                format!(
                    "ListFragments on {stream}: {}",
                    aws_sdk_kinesisvideoarchivedmedia::error::DisplayErrorContext(e)
                )
            })?;
        for f in page.fragments.unwrap_or_default() {
            if let Some(t) = f.producer_timestamp {
                // Rounded, not truncated: the wire carries epoch seconds as a decimal, and
                // 1796678883.609 can arrive as ...608999999 ns.
                let ms = t.secs() * 1000 + i64::from((t.subsec_nanos() + 500_000) / 1_000_000);
                let ms = u64::try_from(ms).unwrap_or(0);
                let in_range = ms >= epoch_ms(range.0) && ms <= epoch_ms(range.1);
                if in_range {
                    out.insert(ms);
                }
            }
        }
        match page.next_token {
            Some(t) if !t.is_empty() => token = Some(t),
            _ => return Ok(out),
        }
    }
}
