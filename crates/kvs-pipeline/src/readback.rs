//! Reading a stream back and checking what it holds: `ListFragments` (every page),
//! `GetMediaForFragmentList` (in batches of 1000), and the check a playable recording passes:
//! every fragment starts with a video keyframe, no gap or overlap between consecutive ones.
//!
//! Each fragment comes back as its own Matroska document (EBML header, Segment, one Cluster;
//! <https://docs.aws.amazon.com/kinesisvideostreams/latest/dg/API_reader_GetMediaForFragmentList.html>).
//! The documents are read with `kvs_putmedia`'s own Matroska reader ([`Refragmenter`]), not a
//! second parser: it refuses a second EBML header at its offset (where the next document
//! starts), and it drops (and reports) video frames before the first keyframe, which is exactly
//! "the fragment does not start with a keyframe".

use std::time::SystemTime;

use aws_config::SdkConfig;
use aws_sdk_kinesisvideo::types::ApiName;
use aws_sdk_kinesisvideoarchivedmedia::error::DisplayErrorContext;
use aws_sdk_kinesisvideoarchivedmedia::primitives::DateTime;
use aws_sdk_kinesisvideoarchivedmedia::types::{
    FragmentSelector, FragmentSelectorType, TimestampRange,
};
use bytes::Bytes;
use kvs_putmedia::mkv::{
    DropReason, MkvError, Output, RefragmentConfig, Refragmenter, TrackKind, Warning,
};
use serde::Serialize;

/// Fragments per `ListFragments` page and per `GetMediaForFragmentList` request (the API's
/// maximum for both).
const BATCH: usize = 1000;

/// Which timestamps a listed range selects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Timestamps {
    /// The producer's (the cluster timecodes the producer sent).
    Producer,
    /// The service's (when each fragment arrived).
    Server,
}

impl std::str::FromStr for Timestamps {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s.to_ascii_lowercase().as_str() {
            "producer" => Ok(Timestamps::Producer),
            "server" => Ok(Timestamps::Server),
            _ => Err(format!("`{s}`: expected one of: producer, server")),
        }
    }
}

impl std::fmt::Display for Timestamps {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Timestamps::Producer => "producer",
            Timestamps::Server => "server",
        })
    }
}

/// One fragment the stream holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredFragment {
    /// Fragment number.
    pub number: String,
    /// Producer timestamp, epoch ms (rounded: the wire carries decimal seconds, and
    /// 1796678883.609 can arrive as ...608999999 ns).
    pub producer_ms: i64,
    /// Server timestamp, epoch ms.
    pub server_ms: i64,
    /// Duration, ms.
    pub duration_ms: i64,
    /// Whether the first video frame is a keyframe (`None`: media not read).
    pub keyframe_first: Option<bool>,
}

/// Why reading back failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ReadbackError {
    /// A Kinesis Video Streams call failed (the stream does not exist, credentials...).
    #[error("{call} for stream {stream}: {message}")]
    Service {
        /// The API call.
        call: &'static str,
        /// The stream.
        stream: String,
        /// The SDK's error with its context.
        message: String,
    },
    /// The fragment media is not the Matroska documents the API returns.
    #[error("fragment media of stream {stream}: {source}")]
    Media {
        /// The stream.
        stream: String,
        /// What the Matroska reader found.
        source: MkvError,
    },
    /// `GetMediaForFragmentList` returned another number of fragments than requested.
    #[error("GetMediaForFragmentList returned {got} fragments for {requested} requested")]
    Count {
        /// Documents in the answer.
        got: usize,
        /// Fragments requested.
        requested: usize,
    },
    /// The caller's handler of a fragment failed.
    #[error("fragment {number}: {source}")]
    Handler {
        /// The fragment number.
        number: String,
        /// The handler's error.
        source: std::io::Error,
    },
}

/// One Matroska document of a `GetMediaForFragmentList` answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Document {
    /// The document's bytes (a standalone, playable MKV file).
    pub bytes: Bytes,
    /// Whether its first video frame (for audio-only media: its first frame) is a keyframe.
    pub keyframe_first: bool,
}

/// Splits a `GetMediaForFragmentList` answer into its documents and checks each one's first
/// frame. Any input gives the documents or an error naming what was wrong, never a panic.
pub fn documents(mut body: Bytes) -> Result<Vec<Document>, MkvError> {
    let mut docs = Vec::new();
    while !body.is_empty() {
        // The reader refuses a second EBML header at its offset: the next document's start.
        let mut probe = Refragmenter::new(RefragmentConfig::default());
        let len = match probe.push(body.clone()).and_then(|()| probe.finish()) {
            Err(MkvError::MultipleSegments { offset }) if offset > 0 => offset as usize,
            Err(e) => return Err(e),
            Ok(()) => body.len(),
        };
        let bytes = body.split_to(len.min(body.len()));
        let keyframe_first = keyframe_first(&bytes)?;
        docs.push(Document {
            bytes,
            keyframe_first,
        });
    }
    Ok(docs)
}

/// Whether one document's first video frame is a keyframe: the reader drops video frames before
/// the first keyframe and says so; with no drop and a video frame cut, the first one was a
/// keyframe. Without a video track, any frame will do.
fn keyframe_first(doc: &Bytes) -> Result<bool, MkvError> {
    let mut r = Refragmenter::new(RefragmentConfig::default());
    r.push(doc.clone())?;
    r.finish()?;
    let (mut video, mut started) = (None, false);
    while let Some(out) = r.next_output() {
        match out {
            Output::Header(h) => {
                video = h
                    .tracks()
                    .iter()
                    .find(|t| t.kind() == TrackKind::Video)
                    .map(|t| t.number())
            }
            Output::Warning(Warning::FramesDropped {
                reason: DropReason::BeforeFirstKeyframe,
                ..
            }) => return Ok(false),
            Output::Fragment(f) => started |= video.is_none_or(|v| f.frame_count(v) > 0),
            _ => {}
        }
    }
    Ok(started)
}

/// A stream's archive: the `GetDataEndpoint` answer and a client for it.
#[derive(Debug, Clone)]
pub struct Archive {
    client: aws_sdk_kinesisvideoarchivedmedia::Client,
    stream: String,
}

impl Archive {
    /// Asks `GetDataEndpoint` where `stream`'s archive is and builds a client for it.
    pub async fn connect(config: &SdkConfig, stream: &str) -> Result<Archive, ReadbackError> {
        let kv = aws_sdk_kinesisvideo::Client::new(config);
        let endpoint = kv
            .get_data_endpoint()
            .stream_name(stream)
            .api_name(ApiName::ListFragments)
            .send()
            .await
            .map_err(|e| service("GetDataEndpoint", stream, DisplayErrorContext(e)))?
            .data_endpoint
            .ok_or_else(|| service("GetDataEndpoint", stream, "no endpoint in the answer"))?;
        let client = aws_sdk_kinesisvideoarchivedmedia::Client::from_conf(
            aws_sdk_kinesisvideoarchivedmedia::config::Builder::from(config)
                .endpoint_url(endpoint)
                .build(),
        );
        Ok(Archive {
            client,
            stream: stream.to_owned(),
        })
    }

    /// Every fragment whose `by` timestamp lies in `range` (inclusive), every page, sorted by
    /// producer timestamp then number (`ListFragments` promises no order).
    pub async fn list(
        &self,
        by: Timestamps,
        range: (SystemTime, SystemTime),
    ) -> Result<Vec<StoredFragment>, ReadbackError> {
        let fail = |e: &dyn std::fmt::Display| service("ListFragments", &self.stream, e);
        let selector = FragmentSelector::builder()
            .fragment_selector_type(match by {
                Timestamps::Producer => FragmentSelectorType::ProducerTimestamp,
                Timestamps::Server => FragmentSelectorType::ServerTimestamp,
            })
            .timestamp_range(
                TimestampRange::builder()
                    .start_timestamp(DateTime::from(range.0))
                    .end_timestamp(DateTime::from(range.1))
                    .build()
                    .map_err(|e| fail(&e))?,
            )
            .build()
            .map_err(|e| fail(&e))?;
        let ms = |t: Option<&DateTime>| {
            t.map_or(0, |t| {
                t.secs() * 1000 + i64::from((t.subsec_nanos() + 500_000) / 1_000_000)
            })
        };
        let mut out = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let page = self
                .client
                .list_fragments()
                .stream_name(&self.stream)
                .max_results(BATCH as i64)
                .fragment_selector(selector.clone())
                .set_next_token(token.take())
                .send()
                .await
                .map_err(|e| fail(&DisplayErrorContext(e)))?;
            out.extend(page.fragments().iter().map(|f| StoredFragment {
                number: f.fragment_number().unwrap_or_default().to_owned(),
                producer_ms: ms(f.producer_timestamp()),
                server_ms: ms(f.server_timestamp()),
                duration_ms: f.fragment_length_in_milliseconds(),
                keyframe_first: None,
            }));
            match page.next_token {
                Some(t) if !t.is_empty() => token = Some(t),
                _ => break,
            }
        }
        out.sort_by(|a, b| (a.producer_ms, &a.number).cmp(&(b.producer_ms, &b.number)));
        Ok(out)
    }

    /// Fetches the media of `fragments` (in batches of 1000), sets each one's `keyframe_first`
    /// and hands it with its document to `each`, in order; returns the media bytes fetched.
    pub async fn fetch(
        &self,
        fragments: &mut [StoredFragment],
        mut each: impl FnMut(&StoredFragment, Bytes) -> std::io::Result<()>,
    ) -> Result<u64, ReadbackError> {
        let mut bytes = 0;
        for batch in fragments.chunks_mut(BATCH) {
            let fail =
                |e: &dyn std::fmt::Display| service("GetMediaForFragmentList", &self.stream, e);
            let media = self
                .client
                .get_media_for_fragment_list()
                .stream_name(&self.stream)
                .set_fragments(Some(batch.iter().map(|f| f.number.clone()).collect()))
                .send()
                .await
                .map_err(|e| fail(&DisplayErrorContext(e)))?
                .payload
                .collect()
                .await
                .map_err(|e| fail(&e))?
                .into_bytes();
            bytes += media.len() as u64;
            let docs = documents(media).map_err(|source| ReadbackError::Media {
                stream: self.stream.clone(),
                source,
            })?;
            if docs.len() != batch.len() {
                return Err(ReadbackError::Count {
                    got: docs.len(),
                    requested: batch.len(),
                });
            }
            for (f, doc) in batch.iter_mut().zip(docs) {
                f.keyframe_first = Some(doc.keyframe_first);
                each(f, doc.bytes).map_err(|source| ReadbackError::Handler {
                    number: f.number.clone(),
                    source,
                })?;
            }
        }
        Ok(bytes)
    }
}

fn service(call: &'static str, stream: &str, e: impl std::fmt::Display) -> ReadbackError {
    ReadbackError::Service {
        call,
        stream: stream.to_owned(),
        message: e.to_string(),
    }
}

/// One finding of [`check`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Problem {
    /// The fragment does not start with a keyframe: players cannot start there.
    NotKeyframeFirst {
        /// The fragment number.
        fragment: String,
    },
    /// Media missing between two fragments.
    Gap {
        /// The fragment before the gap.
        after: String,
        /// The fragment after it.
        before: String,
        /// Its length, ms.
        ms: i64,
    },
    /// Two fragments cover the same time.
    Overlap {
        /// The earlier fragment.
        after: String,
        /// The later one.
        before: String,
        /// How much they share, ms.
        ms: i64,
    },
}

/// What [`check`] found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Check {
    /// True when no problem was found.
    pub ok: bool,
    /// Fragments checked.
    pub fragments: usize,
    /// First producer timestamp to the end of the last fragment, ms.
    pub span_ms: i64,
    /// Sum of the fragments' durations, ms.
    pub media_ms: i64,
    /// What is wrong.
    pub problems: Vec<Problem>,
}

/// Checks fragments sorted by producer timestamp (as [`Archive::list`] returns them): each
/// read one starts with a keyframe, and no gap over `gap_tolerance_ms` nor any overlap lies
/// between consecutive ones.
pub fn check(fragments: &[StoredFragment], gap_tolerance_ms: u64) -> Check {
    let mut problems: Vec<Problem> = fragments
        .iter()
        .filter(|f| f.keyframe_first == Some(false))
        .map(|f| Problem::NotKeyframeFirst {
            fragment: f.number.clone(),
        })
        .collect();
    for w in fragments.windows(2) {
        let (after, before) = (w[0].number.clone(), w[1].number.clone());
        let delta = w[1].producer_ms - (w[0].producer_ms + w[0].duration_ms);
        if delta > i64::try_from(gap_tolerance_ms).unwrap_or(i64::MAX) {
            problems.push(Problem::Gap {
                after,
                before,
                ms: delta,
            });
        } else if delta < 0 {
            problems.push(Problem::Overlap {
                after,
                before,
                ms: -delta,
            });
        }
    }
    let span_ms = match (fragments.first(), fragments.last()) {
        (Some(a), Some(b)) => b.producer_ms + b.duration_ms - a.producer_ms,
        _ => 0,
    };
    Check {
        ok: problems.is_empty(),
        fragments: fragments.len(),
        span_ms,
        media_ms: fragments.iter().map(|f| f.duration_ms).sum(),
        problems,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn el(id: &[u8], body: &[u8]) -> Vec<u8> {
        assert!(body.len() < 0x3FFF);
        let mut v = id.to_vec();
        v.extend_from_slice(&(0x4000 | body.len() as u16).to_be_bytes());
        v.extend_from_slice(body);
        v
    }

    fn track(number: u8, kind: u8, codec: &[u8]) -> Vec<u8> {
        let body = [
            el(&[0xD7], &[number]),
            el(&[0x83], &[kind]),
            el(&[0x86], codec),
        ]
        .concat();
        el(&[0xAE], &body)
    }

    /// A GetMediaForFragmentList-shaped document: H.264 video (track 1) and AAC audio (track
    /// 2); `blocks` are (track, keyframe) in order, 40 ms apart.
    fn doc(blocks: &[(u8, bool)]) -> Vec<u8> {
        let mut cluster = el(&[0xE7], &[0]);
        for (i, (t, key)) in blocks.iter().enumerate() {
            let time = (i as u16 * 40).to_be_bytes();
            let flags = if *key { 0x80 } else { 0 };
            cluster.extend(el(&[0xA3], &[0x80 | t, time[0], time[1], flags, 1, 2, 3]));
        }
        let segment = [
            el(
                &[0x15, 0x49, 0xA9, 0x66],
                &el(&[0x2A, 0xD7, 0xB1], &[0x0F, 0x42, 0x40]),
            ),
            el(
                &[0x16, 0x54, 0xAE, 0x6B],
                &[track(1, 1, b"V_MPEG4/ISO/AVC"), track(2, 2, b"A_AAC")].concat(),
            ),
            el(&[0x1F, 0x43, 0xB6, 0x75], &cluster),
        ]
        .concat();
        [
            el(&[0x1A, 0x45, 0xDF, 0xA3], &el(&[0x42, 0x82], b"matroska")),
            el(&[0x18, 0x53, 0x80, 0x67], &segment),
        ]
        .concat()
    }

    fn frag(n: &str, at: i64, dur: i64) -> StoredFragment {
        StoredFragment {
            number: n.into(),
            producer_ms: at,
            server_ms: at,
            duration_ms: dur,
            keyframe_first: Some(true),
        }
    }

    #[test]
    fn documents_split_and_the_first_video_frame_decides() {
        let key = doc(&[(1, true), (2, true), (1, false)]);
        // Audio first (every audio frame is a keyframe) does not hide a video delta frame.
        let not_key = doc(&[(2, true), (1, false), (1, true)]);
        let data = Bytes::from([key.clone(), not_key.clone()].concat());
        let docs = documents(data).unwrap();
        assert_eq!(docs.len(), 2);
        assert_eq!(docs[0].bytes, key);
        assert_eq!(docs[1].bytes, not_key);
        assert!(docs[0].keyframe_first);
        assert!(!docs[1].keyframe_first);
        assert!(documents(Bytes::from_static(b"\xA3\x80")).is_err());
        assert!(documents(Bytes::from(key[..key.len() - 3].to_vec())).is_err());
        assert!(documents(Bytes::new()).unwrap().is_empty());
    }

    #[test]
    fn gaps_and_overlaps() {
        let r = check(
            &[
                frag("a", 0, 1000),
                frag("b", 1000, 1000),
                frag("c", 2050, 1000),
            ],
            100,
        );
        assert!(r.ok, "{:?}", r.problems);
        assert_eq!((r.span_ms, r.media_ms, r.fragments), (3050, 3000, 3));
        let r = check(
            &[
                frag("a", 0, 1000),
                frag("b", 1500, 1000),
                frag("c", 2400, 100),
            ],
            100,
        );
        assert_eq!(
            r.problems,
            vec![
                Problem::Gap {
                    after: "a".into(),
                    before: "b".into(),
                    ms: 500
                },
                Problem::Overlap {
                    after: "b".into(),
                    before: "c".into(),
                    ms: 100
                },
            ]
        );
        let mut k = frag("k", 0, 1);
        k.keyframe_first = Some(false);
        assert_eq!(
            check(&[k], 100).problems,
            vec![Problem::NotKeyframeFirst {
                fragment: "k".into()
            }]
        );
        assert!(check(&[], 100).ok);
        for t in [Timestamps::Producer, Timestamps::Server] {
            assert_eq!(t.to_string().parse::<Timestamps>(), Ok(t));
        }
        assert!(
            "client"
                .parse::<Timestamps>()
                .unwrap_err()
                .contains("producer, server")
        );
    }

    fn blocks() -> impl Strategy<Value = Vec<(u8, bool)>> {
        proptest::collection::vec((1u8..=2, any::<bool>()), 1..8)
    }

    proptest! {
        #[test]
        fn any_input_is_documents_or_a_clean_error(data in proptest::collection::vec(any::<u8>(), 0..300)) {
            if let Ok(docs) = documents(Bytes::from(data.clone())) {
                // The documents are the input, cut, nothing lost or added.
                prop_assert_eq!(docs.iter().flat_map(|d| d.bytes.to_vec()).collect::<Vec<_>>(), data);
            }
        }

        #[test]
        fn every_document_is_found_with_its_first_video_frame(
            docs in proptest::collection::vec(blocks(), 1..12),
        ) {
            let raw: Vec<Vec<u8>> = docs.iter().map(|b| doc(b)).collect();
            let got = documents(Bytes::from(raw.concat())).unwrap();
            prop_assert_eq!(got.len(), raw.len());
            for ((d, r), b) in got.iter().zip(&raw).zip(&docs) {
                prop_assert_eq!(&d.bytes[..], &r[..]);
                let first_video = b.iter().find(|(t, _)| *t == 1).map(|(_, k)| *k);
                // No video frame: nothing a player can start on.
                prop_assert_eq!(d.keyframe_first, first_video.unwrap_or(false));
            }
        }
    }
}
