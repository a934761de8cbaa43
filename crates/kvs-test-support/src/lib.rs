//! Test helpers shared by the workspace's test suites (crates/*/tests, examples/*/tests) and
//! benches, so each suite calls them instead of carrying its own copy.
//!
//! - [`media`]: real media made by ffmpeg from lavfi sources ([`media::Clip`],
//!   [`media::ffmpeg_file`]) and checks with ffprobe ([`media::video_frames`],
//!   [`media::ffprobe_csv`]).
//! - [`emu`]: a kvs-emulator with test-friendly timings, its SDK configuration with other
//!   credentials, a PutMedia client builder pointing at it, [`emu::put_mkv`],
//!   [`emu::aws_env`] for child processes, and [`emu::wait_until`].
//! - [`sqs`]: queue set-up through the real SDK client.
//!
//! Dev-only (`publish = false`): add it as a path-only `[dev-dependency]`.

pub mod emu;
pub mod media;
pub mod sqs;
