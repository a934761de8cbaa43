//! ffmpeg as a stream of MKV bytes.
