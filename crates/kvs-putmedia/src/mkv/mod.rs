//! Matroska reading and KVS re-fragmenting.
//!
//! ffmpeg's Matroska output on a pipe is not what KVS wants (docs/protocol.md §5): its clusters are cut
//! every second or 32 KiB rather than at keyframes, carry CRC-32 and Void elements, and an audio
//! packet held back by the muxer can start a cluster below the keyframe's timestamp (error 4004).
//! [`Refragmenter`] reads any MKV byte stream incrementally and re-emits it in the shape KVS
//! accepts (docs/protocol.md §4): one [`Header`], then [`Fragment`]s, each one unknown-size Cluster that
//! starts on a video keyframe.
//!
//! ```
//! use kvs_putmedia::mkv::{Output, RefragmentConfig, Refragmenter};
//! # fn send(_: &[bytes::Bytes]) {}
//! # fn run(input: Vec<bytes::Bytes>) -> Result<(), kvs_putmedia::mkv::MkvError> {
//! let mut r = Refragmenter::new(RefragmentConfig::default());
//! for chunk in input {
//!     r.push(chunk)?;
//!     while let Some(out) = r.next_output() {
//!         match out {
//!             Output::Header(h) => send(std::slice::from_ref(h.bytes())),
//!             Output::Fragment(f) => send(f.chunks()),
//!             Output::Warning(w) => tracing::warn!(?w, "re-fragmenter"),
//!             _ => {}
//!         }
//!     }
//! }
//! r.finish()?;
//! // ... drain next_output() once more.
//! # Ok(()) }
//! ```
//!
//! Memory is bounded: the reader buffers at most one element whole (capped by
//! [`RefragmentConfig::max_element_size`]), skips uninteresting elements without buffering, and
//! holds at most the open fragment plus the one waiting for late frames (each capped by
//! [`RefragmentConfig::max_fragment_bytes`]), as reference-counted slices of the input.

mod config;
mod cut;
mod demux;
mod ebml;
mod error;
mod input;
mod output;
mod refragment;

use bytes::{Bytes, BytesMut};

pub use config::{
    KVS_MAX_FRAGMENT_BYTES, KVS_MAX_FRAGMENT_DURATION, KVS_MAX_TRACKS, KVS_MIN_FRAGMENT_INTERVAL,
    RefragmentConfig, RefragmentConfigBuilder, TimecodeMode,
};
pub use error::{ConfigError, InvalidReason, MkvError};
pub use output::{DropReason, Fragment, Header, Output, Track, TrackFrames, TrackKind, Warning};
pub use refragment::Refragmenter;

/// The output TimecodeScale: 1 ms, the KVS norm (docs/protocol.md §4.3).
pub const OUTPUT_TIMECODE_SCALE_NS: u64 = 1_000_000;

/// The SimpleTag name KVS reads as "the open fragment ends here" (docs/protocol.md §3, "Idle").
pub const END_OF_FRAGMENT_TAG_NAME: &str = "AWS_KINESISVIDEO_END_OF_FRAGMENT";

/// A level-1 Tags element holding one SimpleTag `AWS_KINESISVIDEO_END_OF_FRAGMENT` with an empty
/// value: a producer that pauses sends it so KVS acknowledges the open fragment at once
/// (docs/protocol.md §3, "Idle"). Send it between fragments, never inside one.
pub fn end_of_fragment_tag() -> Bytes {
    use ebml::{id, put_bytes_element};
    let mut simple = BytesMut::new();
    put_bytes_element(
        &mut simple,
        id::TAG_NAME,
        END_OF_FRAGMENT_TAG_NAME.as_bytes(),
    );
    put_bytes_element(&mut simple, id::TAG_STRING, b"");
    let mut tag = BytesMut::new();
    put_bytes_element(&mut tag, id::TARGETS, b"");
    put_bytes_element(&mut tag, id::SIMPLE_TAG, &simple);
    let mut tag_el = BytesMut::new();
    put_bytes_element(&mut tag_el, id::TAG, &tag);
    let mut out = BytesMut::new();
    put_bytes_element(&mut out, id::TAGS, &tag_el);
    out.freeze()
}
