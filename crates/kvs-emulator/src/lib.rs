//! The Kinesis Video Streams emulator.
