//! A faithful local Kinesis Video Streams.
#![forbid(clippy::print_stdout, clippy::print_stderr)]

pub mod media;
