//! A faithful local Kinesis Video Streams, with the S3 and STS pieces around it.
//!
//! One port serves every service; each request is routed by the service in its SigV4
//! credential scope (`kinesisvideo`, `s3`, `sts`), so `AWS_ENDPOINT_URL=http://127.0.0.1:PORT`
//! is all a client sets. The contract is `docs/protocol.md`; `docs/emulator.md` lists
//! every rule enforced and what is deliberately left out.
//!
//! With the default `server` feature this crate offers [`Emulator`]; without it, only the pure
//! internal modules build (`media`, `sigv4`, `api`, `xml`, `playback`), which is what the fuzz
//! targets use.
//!
//! ```no_run
//! # async fn demo() -> Result<(), kvs_emulator::Error> {
//! use kvs_emulator::{Emulator, FaultRule, Scope};
//! let emu = Emulator::builder().with_persist_delay(std::time::Duration::from_millis(10)).start().await?;
//! emu.create_stream("cam-1", 24).await?;
//! emu.faults().push(FaultRule::DropAfterFragments { scope: Scope::stream("cam-1"), fragments: 3 });
//! // point a producer at emu.url() with emu.credentials() ...
//! for f in emu.fragments("cam-1") {
//!     assert_eq!(f.fragment_number.len(), 47);
//! }
//! # Ok(()) }
//! ```
#![forbid(clippy::print_stdout, clippy::print_stderr)]
#![warn(missing_docs)]

// The parsers and wire formats behind the server. Public only so the fuzz targets and this
// crate's integration tests can reach them; not part of the supported API, and may change in
// any release.
#[doc(hidden)]
pub mod api;
#[doc(hidden)]
pub mod media;
#[doc(hidden)]
pub mod playback;
#[doc(hidden)]
pub mod sigv4;
#[doc(hidden)]
pub mod xml;

#[cfg(feature = "server")]
mod error;
#[cfg(feature = "server")]
mod server;

#[cfg(feature = "server")]
pub use error::Error;
#[cfg(feature = "server")]
pub use server::faults::{FaultRule, Faults, Refusal, Scope, parse_fault_script};
#[cfg(feature = "server")]
pub use server::putmedia_error_code as error_code;
#[cfg(feature = "server")]
pub use server::{
    AckEventType, ConnectionEnd, ConnectionRecord, DEFAULT_ACCESS_KEY_ID, DEFAULT_ROTATION_OVERLAP,
    DEFAULT_SECRET_ACCESS_KEY, Emulator, EmulatorBuilder, EmulatorCredentials, MediaRetention,
    SentAck, StoredFragment,
};
#[cfg(feature = "server")]
pub use server::{QueuedMessage, encode_event_key};
