//! Pure pieces of the archived-media playback APIs: ISO BMFF (MP4) box walking for the
//! fragmented-MP4 segments ffmpeg writes, the `tfdt` rewrite that puts every segment on one
//! continuous timeline, and the HLS and DASH text the sessions serve.
//!
//! No I/O here: the server spawns ffmpeg and caches; the fuzz target drives [`mp4`].

pub mod mp4;
pub mod playlist;
