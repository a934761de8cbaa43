//! Independent MKV validation for ingested media (skeleton: API committed first, bodies follow).

mod chunk;
mod ebml;
mod ingest;

pub use chunk::{GetMediaTags, fragment_to_mkv, getmedia_chunk};
pub use ingest::{
    CompletedFragment, Ingest, IngestConfig, IngestEvent, TimecodeType, TrackInfo,
};
