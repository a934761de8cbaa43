//! Stream Matroska into Amazon Kinesis Video Streams over PutMedia.
#![forbid(clippy::print_stdout, clippy::print_stderr)]

pub mod ack;
pub mod mkv;

#[cfg(feature = "client")]
mod client;
#[cfg(feature = "client")]
pub use client::*;
