//! The emulator's own MKV validator for PutMedia bodies, and the builders of what it serves back.
//!
//! This is an EBML/Matroska reader written independently of `kvs-putmedia`'s (from RFC 8794 and
//! the Matroska element table, without reading that crate), so that a misreading in one does not
//! hide itself in the other. It is pure and synchronous: [`Ingest`] takes the request body in
//! chunks of any size and emits [`IngestEvent`]s; the server turns them into acks.
//!
//! ```
//! use kvs_emulator::media::{Ingest, IngestConfig, IngestEvent};
//!
//! let mut ingest = Ingest::new(IngestConfig::default());
//! let mut events = Vec::new();
//! ingest.push(b"not mkv", 1_700_000_000_000, &mut events);
//! assert!(matches!(events[0], IngestEvent::Error { error_id: 4006, .. }));
//! ```
//!
//! # Rules enforced
//!
//! Section numbers refer to `docs/protocol.md`. After any error the validator emits
//! nothing more (the service closes the connection after an ERROR ack, section 2). A metadata
//! error (4009) is reported when the Cluster the Tags apply to starts, so it names that
//! fragment's timecode and the fragment open when the Tags arrived is still received.
//!
//! | rule | error id | code | reference |
//! |---|---|---|---|
//! | body is not parseable EBML: bad vint (longer than 8 bytes), element id longer than 4 bytes or reserved, child overrunning its parent, truncated element at end of body, unknown size anywhere but Segment and Cluster | 4006 | `INVALID_MKV_DATA` | §2 |
//! | body does not start with an EBML header; DocType not `matroska`/`webm`; EBMLMaxIDLength > 4 or EBMLMaxSizeLength > 8 | 4006 | `INVALID_MKV_DATA` | §2, §4.1 |
//! | a second EBML header or Segment; anything after a known-size Segment ends | 4006 | `INVALID_MKV_DATA` | §4.1 |
//! | a Cluster before Tracks; Info or Tracks twice or after the first Cluster; Tracks without a TrackEntry; TrackNumber missing, zero or repeated; TimecodeScale zero | 4006 | `INVALID_MKV_DATA` | §4.1, §4.3, §4.4 |
//! | a Cluster without Timecode, a block before the Cluster Timecode, two Timecodes, a BlockGroup without exactly one Block, a block too short for its header | 4006 | `INVALID_MKV_DATA` | §4.8 |
//! | a laced SimpleBlock or Block | 4006 | `INVALID_MKV_DATA` | §4.8 ("no lacing") |
//! | an element over its cap: Info/Tracks/Tags over `max_element_size` (1 MiB), EBML header over 4 KiB, a skipped element over `max_fragment_bytes` | 4006 | `INVALID_MKV_DATA` | §2 |
//! | fragment (Cluster) over `max_fragment_bytes` (50 MiB), checked as each child arrives and against a known declared size | 4001 | `MAX_FRAGMENT_SIZE_REACHED` | §2, §3 |
//! | a frame more than `max_fragment_duration_ms` (20 s) after the Cluster timecode | 4002 | `MAX_FRAGMENT_DURATION_REACHED` | §2, §3 |
//! | more than `max_fragments_per_second` (5) fragments whose producer timestamps lie within one second. **Inference**: the protocol account (docs/protocol.md) names no error id for this (the limits page's `MIN_FRAGMENT_DURATION_REACHED` has none); fragments that close together are under 200 ms long, so the emulator sends the fragment-duration id 4002 with that id's own code, and counts producer time, not arrival time, so that uploading a recording faster than real time (§4.10) is not refused | 4002 | `MAX_FRAGMENT_DURATION_REACHED` | §3 |
//! | Cluster timecode not strictly greater than the previous Cluster's timecode and the previous fragment's last frame (equal fails too) | 4004 | `FRAGMENT_TIMECODE_LESSER_THAN_PREVIOUS` | §2, §4.6 |
//! | a frame at or before the previous fragment's last frame (e.g. a negative block timecode), or earlier than the previous frame of the same track (B-frames) | 4004 | `FRAGMENT_TIMECODE_LESSER_THAN_PREVIOUS` | §4.6, §4.8 |
//! | producer timestamp (ABSOLUTE: Cluster timecode as epoch ms; RELATIVE: `producer_start_ms` + timecode) more than `max_future_ms` (10 s, an inference) after `now_epoch_ms` | 4007 | `INVALID_PRODUCER_TIMESTAMP` | §2, §4.10 |
//! | more than `max_metadata_tags` (10) metadata tags for one fragment, counted over all level-1 Tags since the previous Cluster. **Inference**: SimpleTags of a Tag whose Targets name a track, edition, chapter or attachment (ffmpeg writes an ENCODER tag per track) describe that target and are not counted; nor are the [`RECOGNISED_RESERVED_TAGS`] | 4009 | `FRAGMENT_METADATA_LIMIT_REACHED` | §2, §3, §4.9 |
//! | a metadata tag name starting with `AWS` other than `AWS_KINESISVIDEO_END_OF_FRAGMENT` and the [`RECOGNISED_RESERVED_TAGS`] (`AWS_KINESISVIDEO_NOTIFICATION`, `_IMAGE_GENERATION`, `_IMAGE_PREFIX`), a name over 128 bytes or a value over 256 bytes. **Inference**: the protocol account (docs/protocol.md) gives the rule, not its error id | 4009 | `FRAGMENT_METADATA_LIMIT_REACHED` | §4.9 |
//! | a block for a track number Tracks does not declare | 4010 | `TRACK_NUMBER_MISMATCH` | §2, §4.7 |
//! | a declared track without a frame in a fragment (checked when the fragment ends) | 4011 | `FRAMES_MISSING_FOR_TRACK` | §2, §4.7 |
//! | more than `max_tracks` (3) TrackEntry elements | 4012 | `MORE_THAN_ALLOWED_TRACKS_FOUND` | §2, §4.4 |
//!
//! Accepted, as the service accepts them: unknown-size and known-size Segments and Clusters
//! (section 4.2), SimpleBlock and BlockGroup, CRC-32 and Void anywhere, SeekHead, Cues, Chapters,
//! Attachments and unknown level-1 elements (skipped unread), fragments that do not start with a
//! keyframe (reported in [`CompletedFragment::first_frame_keyframe`]), any CodecPrivate (section
//! 4.4), past producer timestamps (section 4.10).
//!
//! Not enforced: the 1 s minimum fragment duration (the protocol account (docs/protocol.md) knows no error id for it), the
//! 12.5 MB/s rate, connection age and idle time (the server's job).
//!
//! # Fragments and events
//!
//! Section 2: a fragment is one Cluster. It starts ([`IngestEvent::FragmentStarted`], ack
//! BUFFERING) when its Timecode element arrives, and ends ([`IngestEvent::FragmentCompleted`], ack
//! RECEIVED) at the next Cluster, at a level-1 Tags element holding the SimpleTag
//! `AWS_KINESISVIDEO_END_OF_FRAGMENT` (preceded by [`IngestEvent::EndOfFragmentTag`]), or at
//! [`Ingest::finish`]. Other level-1 Tags are fragment metadata for the next Cluster (section 4.9).
//! Events depend only on the bytes and on `now_epoch_ms`, never on how the body was chunked.
//!
//! # What is served back
//!
//! [`fragment_to_mkv`] makes a standalone, playable MKV of one fragment; [`getmedia_chunk`] makes
//! a GetMedia chunk with the `AWS_KINESISVIDEO_*` tags in the places real GetMedia puts them, and
//! [`fragment_list_chunk`] the GetMediaForFragmentList variant.

mod chunk;
mod ebml;
mod ingest;

pub use chunk::{GetMediaTags, fragment_list_chunk, fragment_to_mkv, getmedia_chunk};
pub use ingest::{
    CompletedFragment, END_OF_FRAGMENT_TAG, Ingest, IngestConfig, IngestEvent, MAX_TAG_NAME_BYTES,
    MAX_TAG_VALUE_BYTES, RECOGNISED_RESERVED_TAGS, TimecodeType, TrackInfo,
};

/// The `ErrorCode` of an ack `ErrorId` (docs/protocol.md §2, "Error ids"); `UNKNOWN_ERROR` for an
/// id the table does not know. Every ERROR ack the emulator writes takes its code from here.
pub fn error_code(id: u32) -> &'static str {
    match id {
        4000 => "STREAM_READ_ERROR",
        4001 => "MAX_FRAGMENT_SIZE_REACHED",
        4002 => "MAX_FRAGMENT_DURATION_REACHED",
        4003 => "MAX_CONNECTION_DURATION_REACHED",
        4004 => "FRAGMENT_TIMECODE_LESSER_THAN_PREVIOUS",
        4005 => "MORE_THAN_ONE_TRACK_FOUND",
        4006 => "INVALID_MKV_DATA",
        4007 => "INVALID_PRODUCER_TIMESTAMP",
        4008 => "STREAM_NOT_ACTIVE",
        4009 => "FRAGMENT_METADATA_LIMIT_REACHED",
        4010 => "TRACK_NUMBER_MISMATCH",
        4011 => "FRAMES_MISSING_FOR_TRACK",
        4012 => "MORE_THAN_ALLOWED_TRACKS_FOUND",
        4500 => "KMS_KEY_ACCESS_DENIED",
        4501 => "KMS_KEY_DISABLED",
        4502 => "KMS_KEY_VALIDATION_ERROR",
        4503 => "KMS_KEY_UNAVAILABLE",
        4504 => "KMS_KEY_INVALID_USAGE",
        4505 => "KMS_KEY_INVALID_STATE",
        4506 => "KMS_KEY_NOT_FOUND",
        4507 => "STREAM_DELETED",
        5000 => "INTERNAL_ERROR",
        5001 => "ARCHIVAL_ERROR",
        _ => "UNKNOWN_ERROR",
    }
}
