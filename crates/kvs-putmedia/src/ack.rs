//! The PutMedia acknowledgement types: what a session reports in its
//! [`SessionEvent`](crate::SessionEvent)s and errors.
//!
//! The `200` response to PutMedia is a chunked body of JSON acknowledgements, one per line
//! (docs/protocol.md §2). A session decodes that stream itself; its incremental decoder
//! (`AckDecoder`) is public only for the benches and fuzz targets and hidden from the docs.
//!
//! docs/protocol.md §2: parse by de-chunking, splitting on `\n`, skipping blank lines, decoding
//! each line, ignoring unknown keys, and keeping unknown event types and error ids rather than
//! failing; cap the line length (the official producer caps an ack at 1024 characters).

use std::borrow::Cow;
use std::cmp::Ordering;
use std::fmt;
use std::io::Write as _;
use std::str::FromStr;

use serde::Deserialize;
use serde::de::{self, Deserializer, Visitor};

/// The line-length cap of the official producer: "the official producer caps an ack at 1024
/// characters" (reference, section 2).
// Public only for the benches and fuzz targets (and this crate's tests); a session decodes acks
// itself, so users never need it. Hidden, and not covered by semver.
#[doc(hidden)]
pub const DEFAULT_MAX_LINE_LENGTH: usize = 1024;

/// "`FragmentNumber`: a decimal of up to 128 digits" (reference, section 2).
pub const MAX_FRAGMENT_NUMBER_DIGITS: usize = 128;

/// How many bytes of an offending line an [`AckDecodeError`] keeps, so errors stay small.
const ERROR_LINE_EXCERPT: usize = 200;

// ---------------------------------------------------------------------------------------------
// FragmentNumber
// ---------------------------------------------------------------------------------------------

/// The service-assigned number of a fragment.
///
/// "A decimal of up to 128 digits (47 in practice). Never parse it into an integer type"
/// (reference, section 2), so it is kept as the string sent on the wire.
///
/// Ordering is numeric for numbers without leading zeros: shorter strings first, then
/// lexicographic (`"9" < "10"`).
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct FragmentNumber(String);

impl FragmentNumber {
    /// Validates `s`: 1 to [`MAX_FRAGMENT_NUMBER_DIGITS`] ASCII decimal digits.
    pub fn new(s: impl Into<String>) -> Result<Self, InvalidFragmentNumber> {
        let s = s.into();
        Self::validate(&s)?;
        Ok(Self(s))
    }

    fn validate(s: &str) -> Result<(), InvalidFragmentNumber> {
        if s.is_empty() {
            return Err(InvalidFragmentNumber::Empty);
        }
        if s.len() > MAX_FRAGMENT_NUMBER_DIGITS {
            return Err(InvalidFragmentNumber::TooLong { len: s.len() });
        }
        if let Some(position) = s.bytes().position(|b| !b.is_ascii_digit()) {
            return Err(InvalidFragmentNumber::NotDecimal { position });
        }
        Ok(())
    }

    /// The decimal digits as sent by the service.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Consumes the number, returning its digits.
    pub fn into_string(self) -> String {
        self.0
    }
}

impl fmt::Display for FragmentNumber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for FragmentNumber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "FragmentNumber({})", self.0)
    }
}

impl Ord for FragmentNumber {
    fn cmp(&self, other: &Self) -> Ordering {
        self.0
            .len()
            .cmp(&other.0.len())
            .then_with(|| self.0.cmp(&other.0))
    }
}

impl PartialOrd for FragmentNumber {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl FromStr for FragmentNumber {
    type Err = InvalidFragmentNumber;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::new(s)
    }
}

impl AsRef<str> for FragmentNumber {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

/// Why a string is not a [`FragmentNumber`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum InvalidFragmentNumber {
    /// The string is empty.
    #[error("fragment number is empty")]
    Empty,
    /// More than [`MAX_FRAGMENT_NUMBER_DIGITS`] characters.
    #[error(
        "fragment number has {len} characters, more than the {MAX_FRAGMENT_NUMBER_DIGITS} allowed"
    )]
    TooLong {
        /// Length of the rejected string in bytes.
        len: usize,
    },
    /// A character that is not an ASCII decimal digit.
    #[error("fragment number has a non-digit at byte {position}")]
    NotDecimal {
        /// Byte position of the first non-digit.
        position: usize,
    },
}

// ---------------------------------------------------------------------------------------------
// Event types, error ids
// ---------------------------------------------------------------------------------------------

/// The `EventType` of an acknowledgement.
///
/// docs/protocol.md §2: BUFFERING: the first byte of a fragment arrived. RECEIVED: the whole
/// fragment arrived. PERSISTED: durably stored; only sent when the stream's retention is above
/// zero. IDLE: sent periodically while the connection is open but no media arrives.
/// Unknown event types are kept, not rejected.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum AckEventType {
    /// `BUFFERING`: the first byte of the fragment arrived.
    Buffering,
    /// `RECEIVED`: the whole fragment arrived.
    Received,
    /// `PERSISTED`: the fragment is durably stored (only when retention is above zero).
    Persisted,
    /// `ERROR`: the service rejected something; it ends the connection after this ack.
    Error,
    /// `IDLE`: keep-alive while no media arrives.
    Idle,
    /// An event type this crate does not know, as sent on the wire.
    Unknown(String),
}

impl AckEventType {
    /// Maps the wire name; unknown names become [`AckEventType::Unknown`].
    pub fn from_wire(name: &str) -> Self {
        match name {
            "BUFFERING" => Self::Buffering,
            "RECEIVED" => Self::Received,
            "PERSISTED" => Self::Persisted,
            "ERROR" => Self::Error,
            "IDLE" => Self::Idle,
            other => Self::Unknown(other.to_owned()),
        }
    }

    /// The name on the wire (`"BUFFERING"`, ...), or the unknown name as received.
    pub fn as_str(&self) -> &str {
        match self {
            Self::Buffering => "BUFFERING",
            Self::Received => "RECEIVED",
            Self::Persisted => "PERSISTED",
            Self::Error => "ERROR",
            Self::Idle => "IDLE",
            Self::Unknown(name) => name,
        }
    }
}

impl fmt::Display for AckEventType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What the official producer does when it receives an error ack (reference, section 2, last
/// column of the error table, and section 6).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorAction {
    /// Roll back and resend the fragment on a new connection.
    Retry,
    /// Open a new connection (with the MKV header again) and carry on; nothing was rejected.
    Reconnect,
    /// The fragment is rejected for good: skip it, never resend it.
    Skip,
    /// The stream cannot take data (deleted, inactive, KMS): stop streaming.
    Stop,
}

macro_rules! ack_error_ids {
    ($( $(#[$doc:meta])* $variant:ident = $id:literal, $code:literal, $desc:literal, $action:ident; )*) => {
        /// The `ErrorId` of an `ERROR` acknowledgement: every id in the table of docs/protocol.md §2, plus
        /// [`AckErrorId::Unknown`] for ids it does not list ("Treat an unknown id as retryable and
        /// keep its `ErrorCode` string", reference, section 2).
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        #[non_exhaustive]
        pub enum AckErrorId {
            $( $(#[$doc])* $variant, )*
            /// An id not in the table of docs/protocol.md §2.
            Unknown(u32),
        }

        impl AckErrorId {
            /// Every known id, in numeric order.
            pub const KNOWN: &'static [AckErrorId] = &[ $( AckErrorId::$variant, )* ];

            /// Maps a numeric `ErrorId`; ids not in the table become [`AckErrorId::Unknown`].
            pub fn from_id(id: u32) -> Self {
                match id {
                    $( $id => Self::$variant, )*
                    other => Self::Unknown(other),
                }
            }

            /// The numeric `ErrorId`.
            pub fn id(&self) -> u32 {
                match self {
                    $( Self::$variant => $id, )*
                    Self::Unknown(id) => *id,
                }
            }

            /// The symbolic `ErrorCode` the service sends with this id, e.g. `"INVALID_MKV_DATA"`;
            /// `"UNKNOWN"` for [`AckErrorId::Unknown`] (the code actually received is kept in
            /// [`AckError::code`]).
            pub fn code(&self) -> &'static str {
                match self {
                    $( Self::$variant => $code, )*
                    Self::Unknown(_) => "UNKNOWN",
                }
            }

            /// Maps a known symbolic code back to its id.
            pub fn from_code(code: &str) -> Option<Self> {
                match code {
                    $( $code => Some(Self::$variant), )*
                    _ => None,
                }
            }

            /// What the error means, in a few words.
            pub fn description(&self) -> &'static str {
                match self {
                    $( Self::$variant => $desc, )*
                    Self::Unknown(_) => "error id unknown to this client",
                }
            }

            /// What the official producer does on this error. Unknown ids are retried
            /// ("Treat an unknown id as retryable", reference, section 2).
            pub fn action(&self) -> ErrorAction {
                match self {
                    $( Self::$variant => ErrorAction::$action, )*
                    Self::Unknown(_) => ErrorAction::Retry,
                }
            }
        }
    };
}

ack_error_ids! {
    /// 4000 `STREAM_READ_ERROR`: error reading the data stream. Retried.
    StreamReadError = 4000, "STREAM_READ_ERROR", "error reading the data stream", Retry;
    /// 4001 `MAX_FRAGMENT_SIZE_REACHED`: fragment over 50 MB. Skipped.
    MaxFragmentSizeReached = 4001, "MAX_FRAGMENT_SIZE_REACHED", "fragment over 50 MB", Skip;
    /// 4002 `MAX_FRAGMENT_DURATION_REACHED`: fragment longer than the maximum. Skipped.
    MaxFragmentDurationReached = 4002, "MAX_FRAGMENT_DURATION_REACHED",
        "fragment longer than the maximum duration", Skip;
    /// 4003 `MAX_CONNECTION_DURATION_REACHED`: connection older than 45 minutes. Reconnect.
    MaxConnectionDurationReached = 4003, "MAX_CONNECTION_DURATION_REACHED",
        "connection older than 45 minutes", Reconnect;
    /// 4004 `FRAGMENT_TIMECODE_LESSER_THAN_PREVIOUS`: cluster timecode not strictly greater than
    /// the previous fragment's last frame (equal fails too). Skipped.
    FragmentTimecodeLesserThanPrevious = 4004, "FRAGMENT_TIMECODE_LESSER_THAN_PREVIOUS",
        "cluster timecode not strictly greater than the previous fragment's last frame", Skip;
    /// 4005 `MORE_THAN_ONE_TRACK_FOUND` (deprecated). Skipped.
    MoreThanOneTrackFound = 4005, "MORE_THAN_ONE_TRACK_FOUND",
        "more than one track found (deprecated)", Skip;
    /// 4006 `INVALID_MKV_DATA`: not parseable as MKV. Skipped.
    InvalidMkvData = 4006, "INVALID_MKV_DATA", "not parseable as MKV", Skip;
    /// 4007 `INVALID_PRODUCER_TIMESTAMP`: e.g. a producer timestamp in the future. Skipped.
    InvalidProducerTimestamp = 4007, "INVALID_PRODUCER_TIMESTAMP",
        "invalid producer timestamp (e.g. in the future)", Skip;
    /// 4008 `STREAM_NOT_ACTIVE`: stream deleted or not active. Stop.
    StreamNotActive = 4008, "STREAM_NOT_ACTIVE", "stream deleted or not active", Stop;
    /// 4009 `FRAGMENT_METADATA_LIMIT_REACHED`: more than 10 tags on a fragment. Skipped.
    FragmentMetadataLimitReached = 4009, "FRAGMENT_METADATA_LIMIT_REACHED",
        "more than 10 metadata tags on a fragment", Skip;
    /// 4010 `TRACK_NUMBER_MISMATCH`: a block's track number is not in Tracks. Skipped.
    TrackNumberMismatch = 4010, "TRACK_NUMBER_MISMATCH",
        "a block's track number is not declared in Tracks", Skip;
    /// 4011 `FRAMES_MISSING_FOR_TRACK`: a declared track has no frame in this fragment. Skipped.
    FramesMissingForTrack = 4011, "FRAMES_MISSING_FOR_TRACK",
        "a declared track has no frame in this fragment", Skip;
    /// 4012 `MORE_THAN_ALLOWED_TRACKS_FOUND`: more than 3 tracks. Skipped.
    MoreThanAllowedTracksFound = 4012, "MORE_THAN_ALLOWED_TRACKS_FOUND",
        "more than 3 tracks", Skip;
    /// 4500 `KMS_KEY_ACCESS_DENIED`. Stop.
    KmsKeyAccessDenied = 4500, "KMS_KEY_ACCESS_DENIED", "KMS key access denied", Stop;
    /// 4501 `KMS_KEY_DISABLED`. Stop.
    KmsKeyDisabled = 4501, "KMS_KEY_DISABLED", "KMS key disabled", Stop;
    /// 4502 `KMS_KEY_VALIDATION_ERROR`. Stop.
    KmsKeyValidationError = 4502, "KMS_KEY_VALIDATION_ERROR", "KMS key validation error", Stop;
    /// 4503 `KMS_KEY_UNAVAILABLE`. Stop.
    KmsKeyUnavailable = 4503, "KMS_KEY_UNAVAILABLE", "KMS key unavailable", Stop;
    /// 4504 `KMS_KEY_INVALID_USAGE`. Stop.
    KmsKeyInvalidUsage = 4504, "KMS_KEY_INVALID_USAGE", "KMS key invalid usage", Stop;
    /// 4505 `KMS_KEY_INVALID_STATE`. Stop.
    KmsKeyInvalidState = 4505, "KMS_KEY_INVALID_STATE", "KMS key in an invalid state", Stop;
    /// 4506 `KMS_KEY_NOT_FOUND`. Stop.
    KmsKeyNotFound = 4506, "KMS_KEY_NOT_FOUND", "KMS key not found", Stop;
    /// 4507 `STREAM_DELETED` (seen only in the official C core). Stop.
    StreamDeleted = 4507, "STREAM_DELETED", "stream deleted", Stop;
    /// 5000 `INTERNAL_ERROR`: internal service error. Retried.
    InternalError = 5000, "INTERNAL_ERROR", "internal service error", Retry;
    /// 5001 `ARCHIVAL_ERROR`: failed to persist. Retried.
    ArchivalError = 5001, "ARCHIVAL_ERROR", "failed to persist the fragment", Retry;
}

impl AckErrorId {
    /// Whether sending again can succeed: true for [`ErrorAction::Retry`] and
    /// [`ErrorAction::Reconnect`], and so for every unknown id.
    pub fn is_retryable(&self) -> bool {
        matches!(self.action(), ErrorAction::Retry | ErrorAction::Reconnect)
    }
}

impl fmt::Display for AckErrorId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.code(), self.id())
    }
}

/// The error carried by an `ERROR` acknowledgement.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct AckError {
    /// The `ErrorId`.
    pub id: AckErrorId,
    /// The `ErrorCode` as sent on the wire; when the service omits it, the known code of `id`
    /// ([`AckErrorId::code`]).
    pub code: String,
}

impl AckError {
    /// An error with the code this crate knows for `id`.
    pub fn new(id: AckErrorId) -> Self {
        Self {
            id,
            code: id.code().to_owned(),
        }
    }
}

impl fmt::Display for AckError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} ({}): {}",
            self.code,
            self.id.id(),
            self.id.description()
        )
    }
}

// ---------------------------------------------------------------------------------------------
// Ack
// ---------------------------------------------------------------------------------------------

/// One acknowledgement.
///
/// Acks for different fragments interleave (`RECEIVED 252200, BUFFERING 252467, RECEIVED 252467,
/// BUFFERING 253000, PERSISTED 252200, PERSISTED 252467`): "**Match acks to fragments by
/// `FragmentTimecode`, never by arrival order.**" (reference, section 2). "After any ERROR ack the
/// service ends the connection. The client must reconnect and resend the MKV header before any
/// further cluster."
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Ack {
    /// The `EventType`.
    pub event: AckEventType,
    /// The Cluster timecode as sent, in TimecodeScale units. "Absent on IDLE, may be absent or
    /// `-1` on ERROR": both give `None`.
    pub fragment_timecode: Option<u64>,
    /// The service-assigned fragment number, when present.
    pub fragment_number: Option<FragmentNumber>,
    /// `Some` exactly when `event` is [`AckEventType::Error`]. `ErrorId`/`ErrorCode` keys on other
    /// event types are ignored.
    pub error: Option<AckError>,
}

impl Ack {
    fn fragment(event: AckEventType, timecode: u64, number: FragmentNumber) -> Self {
        Self {
            event,
            fragment_timecode: Some(timecode),
            fragment_number: Some(number),
            error: None,
        }
    }

    /// A `BUFFERING` ack.
    pub fn buffering(timecode: u64, number: FragmentNumber) -> Self {
        Self::fragment(AckEventType::Buffering, timecode, number)
    }

    /// A `RECEIVED` ack.
    pub fn received(timecode: u64, number: FragmentNumber) -> Self {
        Self::fragment(AckEventType::Received, timecode, number)
    }

    /// A `PERSISTED` ack.
    pub fn persisted(timecode: u64, number: FragmentNumber) -> Self {
        Self::fragment(AckEventType::Persisted, timecode, number)
    }

    /// An `IDLE` ack.
    pub fn idle() -> Self {
        Self {
            event: AckEventType::Idle,
            fragment_timecode: None,
            fragment_number: None,
            error: None,
        }
    }

    /// An `ERROR` ack; the timecode and number are absent when the error is not about a fragment.
    pub fn error(error: AckError, timecode: Option<u64>, number: Option<FragmentNumber>) -> Self {
        Self {
            event: AckEventType::Error,
            fragment_timecode: timecode,
            fragment_number: number,
            error: Some(error),
        }
    }

    /// Whether this is an `ERROR` ack (after which the service ends the connection).
    pub fn is_error(&self) -> bool {
        self.event == AckEventType::Error
    }

    /// Appends the wire form, one JSON object and `\n`, with keys in the order the service sends
    /// them (`EventType`, `FragmentTimecode`, `FragmentNumber`, `ErrorCode`, `ErrorId`).
    pub fn write_json_line(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(b"{\"EventType\":");
        write_json_string(out, self.event.as_str());
        if let Some(timecode) = self.fragment_timecode {
            out.extend_from_slice(b",\"FragmentTimecode\":");
            let _ = write!(out, "{timecode}");
        }
        if let Some(number) = &self.fragment_number {
            // Digits only (validated), so no escaping is needed.
            out.extend_from_slice(b",\"FragmentNumber\":\"");
            out.extend_from_slice(number.as_str().as_bytes());
            out.push(b'"');
        }
        if let Some(error) = &self.error {
            out.extend_from_slice(b",\"ErrorCode\":");
            write_json_string(out, &error.code);
            out.extend_from_slice(b",\"ErrorId\":");
            let _ = write!(out, "{}", error.id.id());
        }
        out.extend_from_slice(b"}\n");
    }

    /// The wire form as a string, `\n` included.
    pub fn to_json_line(&self) -> String {
        let mut out = Vec::with_capacity(160);
        self.write_json_line(&mut out);
        // Only UTF-8 strings and ASCII were written.
        String::from_utf8(out).unwrap_or_default()
    }
}

fn write_json_string(out: &mut Vec<u8>, s: &str) {
    // serde_json escapes exactly as JSON requires; writing to a Vec cannot fail.
    let _ = serde_json::to_writer(&mut *out, s);
}

impl fmt::Display for Ack {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.event.as_str())?;
        if let Some(timecode) = self.fragment_timecode {
            write!(f, " timecode {timecode}")?;
        }
        if let Some(number) = &self.fragment_number {
            write!(f, " fragment {number}")?;
        }
        if let Some(error) = &self.error {
            write!(f, ": {error}")?;
        }
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------------
// Decode errors
// ---------------------------------------------------------------------------------------------

/// A line of the ack stream that is not an acknowledgement. Decoding continues after it.
///
/// Every offset is the stream byte offset (in the de-chunked response body) of the first byte of
/// the offending line.
// Public only for the benches and fuzz targets (and this crate's tests); a session decodes acks
// itself, so users never need it. Hidden, and not covered by semver.
#[doc(hidden)]
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AckDecodeError {
    /// A line longer than the cap; its bytes are discarded up to the next `\n`.
    #[error("ack line at byte {offset} is longer than {limit} bytes; skipped to the next newline")]
    LineTooLong {
        /// The cap, in bytes, excluding the `\n` or `\r\n` terminator.
        limit: usize,
        /// Offset of the first byte of the line.
        offset: u64,
    },
    /// Not JSON, or JSON of the wrong shape (not an object, a key with the wrong type, a
    /// duplicate key).
    #[error("ack line at byte {offset} is not a valid ack: {reason}: {line:?}")]
    InvalidJson {
        /// Offset of the first byte of the line.
        offset: u64,
        /// The start of the line (at most 200 bytes, lossily decoded).
        line: String,
        /// What serde_json reported.
        reason: String,
    },
    /// A required key is absent (`EventType`, or `ErrorId` on an `ERROR` ack).
    #[error("ack line at byte {offset} has no {field}: {line:?}")]
    MissingField {
        /// Offset of the first byte of the line.
        offset: u64,
        /// The missing key.
        field: &'static str,
        /// The start of the line (at most 200 bytes, lossily decoded).
        line: String,
    },
    /// A key with a value out of its domain (a negative timecode other than `-1`, an `ErrorId`
    /// over `u32`, a `FragmentNumber` that is not 1 to 128 decimal digits).
    #[error("ack line at byte {offset} has an invalid {field}: {reason}")]
    InvalidField {
        /// Offset of the first byte of the line.
        offset: u64,
        /// The offending key.
        field: &'static str,
        /// Why the value is rejected, with the value.
        reason: String,
    },
}

impl AckDecodeError {
    /// Stream byte offset of the first byte of the offending line.
    pub fn offset(&self) -> u64 {
        match self {
            Self::LineTooLong { offset, .. }
            | Self::InvalidJson { offset, .. }
            | Self::MissingField { offset, .. }
            | Self::InvalidField { offset, .. } => *offset,
        }
    }
}

fn excerpt(line: &[u8]) -> String {
    let cut = &line[..line.len().min(ERROR_LINE_EXCERPT)];
    String::from_utf8_lossy(cut).into_owned()
}

// ---------------------------------------------------------------------------------------------
// Line parsing
// ---------------------------------------------------------------------------------------------

/// A JSON integer of either sign, so `-1` and values above `i64::MAX` both decode.
enum JsonInt {
    Unsigned(u64),
    Negative(i64),
}

impl<'de> Deserialize<'de> for JsonInt {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct IntVisitor;
        impl Visitor<'_> for IntVisitor {
            type Value = JsonInt;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an integer")
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<JsonInt, E> {
                Ok(JsonInt::Unsigned(v))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<JsonInt, E> {
                Ok(match u64::try_from(v) {
                    Ok(v) => JsonInt::Unsigned(v),
                    Err(_) => JsonInt::Negative(v),
                })
            }
        }
        deserializer.deserialize_any(IntVisitor)
    }
}

/// The wire shape, borrowing strings from the line (no allocation unless a string has escapes).
#[derive(Deserialize)]
struct RawAck<'a> {
    #[serde(rename = "EventType", borrow, default)]
    event_type: Option<Cow<'a, str>>,
    #[serde(rename = "FragmentTimecode", default)]
    fragment_timecode: Option<JsonInt>,
    #[serde(rename = "FragmentNumber", borrow, default)]
    fragment_number: Option<Cow<'a, str>>,
    #[serde(rename = "ErrorId", default)]
    error_id: Option<JsonInt>,
    #[serde(rename = "ErrorCode", borrow, default)]
    error_code: Option<Cow<'a, str>>,
}

/// Decodes one non-blank line (terminator already removed).
fn parse_line(line: &[u8], offset: u64) -> Result<Ack, AckDecodeError> {
    let raw: RawAck<'_> =
        serde_json::from_slice(line).map_err(|e| AckDecodeError::InvalidJson {
            offset,
            line: excerpt(line),
            reason: e.to_string(),
        })?;
    let event = match raw.event_type {
        Some(name) => AckEventType::from_wire(&name),
        None => {
            return Err(AckDecodeError::MissingField {
                offset,
                field: "EventType",
                line: excerpt(line),
            });
        }
    };
    // "absent on IDLE, may be absent or -1 on ERROR"
    let fragment_timecode = match raw.fragment_timecode {
        None | Some(JsonInt::Negative(-1)) => None,
        Some(JsonInt::Unsigned(v)) => Some(v),
        Some(JsonInt::Negative(v)) => {
            return Err(AckDecodeError::InvalidField {
                offset,
                field: "FragmentTimecode",
                reason: format!("negative timecode {v} (only -1, meaning none, is allowed)"),
            });
        }
    };
    let fragment_number = match raw.fragment_number {
        None => None,
        Some(s) => {
            FragmentNumber::validate(&s).map_err(|e| AckDecodeError::InvalidField {
                offset,
                field: "FragmentNumber",
                reason: format!("{e}: {:?}", excerpt(s.as_bytes())),
            })?;
            Some(FragmentNumber(s.into_owned()))
        }
    };
    let error = if event == AckEventType::Error {
        let id = match raw.error_id {
            Some(JsonInt::Unsigned(id)) => {
                u32::try_from(id).map_err(|_| AckDecodeError::InvalidField {
                    offset,
                    field: "ErrorId",
                    reason: format!("{id} does not fit in 32 bits"),
                })?
            }
            Some(JsonInt::Negative(id)) => {
                return Err(AckDecodeError::InvalidField {
                    offset,
                    field: "ErrorId",
                    reason: format!("negative id {id}"),
                });
            }
            None => {
                return Err(AckDecodeError::MissingField {
                    offset,
                    field: "ErrorId",
                    line: excerpt(line),
                });
            }
        };
        let id = AckErrorId::from_id(id);
        let code = match raw.error_code {
            Some(code) => code.into_owned(),
            None => id.code().to_owned(),
        };
        Some(AckError { id, code })
    } else {
        None
    };
    Ok(Ack {
        event,
        fragment_timecode,
        fragment_number,
        error,
    })
}

// ---------------------------------------------------------------------------------------------
// Decoder
// ---------------------------------------------------------------------------------------------

/// Whether the decoder is splitting lines or dropping the rest of an overlong one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Lines,
    /// Dropping bytes up to the next `\n`; the buffer is empty in this mode.
    Discarding,
}

/// Incremental decoder of the acknowledgement stream: de-chunked response body bytes in, in any
/// chunking, [`Ack`]s out.
///
/// Lines end with `\n` (a `\r` before it is removed); blank lines are skipped; unknown keys are
/// ignored; unknown event types and error ids are kept. A line that is not an ack gives an
/// [`AckDecodeError`] item and decoding continues with the next line.
///
/// # Bounded memory
///
/// Lines are capped at [`max_line_length`](Self::max_line_length) bytes (default
/// [`DEFAULT_MAX_LINE_LENGTH`], the official producer's cap), terminator excluded. An overlong
/// line yields one [`AckDecodeError::LineTooLong`] and its bytes are dropped up to the next `\n`
/// as they arrive, never buffered. When [`next_ack`](Self::next_ack) has returned `None`, at most
/// `max_line_length + 1` bytes are buffered; between two drains the buffer also holds the complete
/// lines pushed since, so call `next_ack` until `None` after each [`push`](Self::push).
///
/// Bytes are scanned for `\n` once: the scan position is kept across pushes, as in tokio-util's
/// `LinesCodec`.
///
/// ```
/// use kvs_putmedia::ack::{AckDecoder, AckEventType};
///
/// let mut decoder = AckDecoder::new();
/// decoder.push(b"{\"EventType\":\"BUFFERING\",\"FragmentTimecode\":1663277247152,\"Fragm");
/// assert!(decoder.next_ack().is_none()); // the line is not complete yet
/// decoder.push(b"entNumber\":\"91343852333181432511524306419788296366724229586\"}\n");
/// let ack = decoder.next_ack().unwrap().unwrap();
/// assert_eq!(ack.event, AckEventType::Buffering);
/// assert_eq!(ack.fragment_timecode, Some(1663277247152));
/// ```
// Public only for the benches and fuzz targets (and this crate's tests); a session decodes acks
// itself, so users never need it. Hidden, and not covered by semver.
#[doc(hidden)]
#[derive(Debug, Clone)]
pub struct AckDecoder {
    buf: Vec<u8>,
    /// First byte of `buf` not yet consumed.
    start: usize,
    /// `buf[start..scan]` holds no `\n`.
    scan: usize,
    /// Stream offset of `buf[0]`.
    buf_offset: u64,
    max_line_length: usize,
    mode: Mode,
    /// An overlong line (at this stream offset) to report before anything in `buf`.
    pending_too_long: Option<u64>,
    /// Bytes examined in the search for `\n`, to test that nothing is rescanned.
    #[cfg(test)]
    scanned: u64,
}

impl Default for AckDecoder {
    fn default() -> Self {
        Self::with_max_line_length(DEFAULT_MAX_LINE_LENGTH)
    }
}

impl AckDecoder {
    /// A decoder with the official producer's 1024-byte line cap.
    pub fn new() -> Self {
        Self::default()
    }

    /// A decoder whose lines may hold at most `max` bytes, terminator excluded.
    pub fn with_max_line_length(max: usize) -> Self {
        Self {
            buf: Vec::new(),
            start: 0,
            scan: 0,
            buf_offset: 0,
            max_line_length: max,
            mode: Mode::Lines,
            pending_too_long: None,
            #[cfg(test)]
            scanned: 0,
        }
    }

    /// The line cap in bytes, terminator excluded.
    pub fn max_line_length(&self) -> usize {
        self.max_line_length
    }

    /// Bytes buffered and not yet decoded.
    pub fn buffered_len(&self) -> usize {
        self.buf.len() - self.start
    }

    /// Stream offset of the next byte [`push`](Self::push) will receive.
    pub fn stream_offset(&self) -> u64 {
        self.buf_offset + self.buf.len() as u64
    }

    /// An unterminated tail this long is overlong whatever follows (a `\r` may still be removed).
    fn tail_limit(&self) -> usize {
        self.max_line_length.saturating_add(1)
    }

    /// Feeds de-chunked response body bytes. Then call [`next_ack`](Self::next_ack) until `None`.
    pub fn push(&mut self, mut bytes: &[u8]) {
        self.compact();
        if self.mode == Mode::Discarding {
            debug_assert_eq!(self.start, self.buf.len());
            match self.find_newline(bytes) {
                None => {
                    self.buf_offset += bytes.len() as u64;
                    return;
                }
                Some(i) => {
                    self.buf_offset += (i + 1) as u64;
                    bytes = &bytes[i + 1..];
                    self.mode = Mode::Lines;
                }
            }
        }
        // Fast path: the buffer holds at most a partial line, already scanned, and nothing is
        // pending before it, so the first line of `bytes` is the next item. Deciding here whether
        // it is overlong keeps an overlong line out of the buffer altogether.
        if self.pending_too_long.is_none() && self.scan == self.buf.len() {
            let partial = self.buf.len() - self.start;
            let newline = self.find_newline(bytes);
            let line_offset = self.buf_offset + self.start as u64;
            match newline {
                None if partial + bytes.len() > self.tail_limit() => {
                    self.pending_too_long = Some(line_offset);
                    self.drop_buffer();
                    self.buf_offset += bytes.len() as u64;
                    self.mode = Mode::Discarding;
                    return;
                }
                Some(i)
                    if content_len(&self.buf[self.start..], &bytes[..i]) > self.max_line_length =>
                {
                    self.pending_too_long = Some(line_offset);
                    self.drop_buffer();
                    self.buf_offset += (i + 1) as u64;
                    bytes = &bytes[i + 1..];
                    // The rest is unscanned: appended below with `scan` left at its start.
                    self.buf.extend_from_slice(bytes);
                    return;
                }
                None => {
                    self.buf.extend_from_slice(bytes);
                    self.scan = self.buf.len();
                    return;
                }
                Some(i) => {
                    self.scan = self.buf.len() + i;
                    self.buf.extend_from_slice(bytes);
                    return;
                }
            }
        }
        self.buf.extend_from_slice(bytes);
    }

    /// Position of the first `\n` in `bytes`.
    fn find_newline(&mut self, bytes: &[u8]) -> Option<usize> {
        let found = find_lf(bytes);
        #[cfg(test)]
        {
            self.scanned += found.map_or(bytes.len(), |i| i + 1) as u64;
        }
        found
    }

    /// Position of the first `\n` in `buf[scan..]`, relative to `scan`.
    fn find_newline_in_buf(&mut self) -> Option<usize> {
        let found = find_lf(&self.buf[self.scan..]);
        #[cfg(test)]
        {
            self.scanned += found.map_or(self.buf.len() - self.scan, |i| i + 1) as u64;
        }
        found
    }

    /// Drops everything buffered (the caller accounts for the dropped stream bytes).
    fn drop_buffer(&mut self) {
        self.buf_offset += self.buf.len() as u64;
        self.buf.clear();
        self.start = 0;
        self.scan = 0;
    }

    /// Moves unconsumed bytes to the front when that costs no more than the bytes consumed, so
    /// the copying is amortised O(1) per byte.
    fn compact(&mut self) {
        if self.start == 0 {
            return;
        }
        let remaining = self.buf.len() - self.start;
        if remaining == 0 {
            self.drop_buffer();
        } else if remaining <= self.start {
            self.buf.drain(..self.start);
            self.buf_offset += self.start as u64;
            self.scan -= self.start;
            self.start = 0;
        }
    }

    /// The next ack or decode error, or `None` when more bytes are needed.
    pub fn next_ack(&mut self) -> Option<Result<Ack, AckDecodeError>> {
        loop {
            if let Some(offset) = self.pending_too_long.take() {
                return Some(Err(self.too_long(offset)));
            }
            let line_offset = self.buf_offset + self.start as u64;
            let Some(i) = self.find_newline_in_buf() else {
                self.scan = self.buf.len();
                if self.buf.len() - self.start > self.tail_limit() {
                    self.drop_buffer();
                    self.mode = Mode::Discarding;
                    return Some(Err(self.too_long(line_offset)));
                }
                return None;
            };
            let end = self.scan + i;
            let line_start = self.start;
            self.start = end + 1;
            self.scan = self.start;
            if let Some(item) = self.decode_line(line_start, end, line_offset) {
                return Some(item);
            }
        }
    }

    /// At end of stream: the remaining items, then the last line even without its `\n`. Call
    /// until `None`; the decoder is then empty and may take a new stream.
    pub fn finish(&mut self) -> Option<Result<Ack, AckDecodeError>> {
        if let Some(item) = self.next_ack() {
            return Some(item);
        }
        // An overlong last line was already reported when discarding began.
        self.mode = Mode::Lines;
        let line_start = self.start;
        let end = self.buf.len();
        let line_offset = self.buf_offset + line_start as u64;
        self.start = end;
        self.scan = end;
        let item = self.decode_line(line_start, end, line_offset);
        self.drop_buffer();
        item
    }

    /// Decodes `buf[start..end]` (terminator excluded); `None` for a blank line.
    fn decode_line(
        &self,
        start: usize,
        end: usize,
        offset: u64,
    ) -> Option<Result<Ack, AckDecodeError>> {
        let mut line = &self.buf[start..end];
        if let [rest @ .., b'\r'] = line {
            line = rest;
        }
        if line.len() > self.max_line_length {
            return Some(Err(self.too_long(offset)));
        }
        if line.iter().all(u8::is_ascii_whitespace) {
            return None;
        }
        Some(parse_line(line, offset))
    }

    fn too_long(&self, offset: u64) -> AckDecodeError {
        AckDecodeError::LineTooLong {
            limit: self.max_line_length,
            offset,
        }
    }
}

/// Decodes a complete response body: every item [`AckDecoder::next_ack`] and
/// [`AckDecoder::finish`] give, in order.
// Public only for the benches and fuzz targets (and this crate's tests); a session decodes acks
// itself, so users never need it. Hidden, and not covered by semver.
#[doc(hidden)]
pub fn decode_all(body: &[u8]) -> Vec<Result<Ack, AckDecodeError>> {
    let mut decoder = AckDecoder::new();
    decoder.push(body);
    let mut items = Vec::new();
    while let Some(item) = decoder.finish() {
        items.push(item);
    }
    items
}

/// Length of the line `head ++ tail` once a trailing `\r` is removed.
fn content_len(head: &[u8], tail: &[u8]) -> usize {
    let len = head.len() + tail.len();
    let last = tail.last().or(head.last());
    if last == Some(&b'\r') { len - 1 } else { len }
}

/// Position of the first `\n`.
#[inline]
fn find_lf(bytes: &[u8]) -> Option<usize> {
    bytes.iter().position(|&b| b == b'\n')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn drain(decoder: &mut AckDecoder) -> usize {
        let mut n = 0;
        while decoder.next_ack().is_some() {
            n += 1;
        }
        n
    }

    #[test]
    fn bytes_are_scanned_once_when_a_line_arrives_byte_by_byte() {
        let line =
            Ack::persisted(123_456, FragmentNumber::new("9".repeat(128)).unwrap()).to_json_line();
        let mut body = Vec::new();
        for _ in 0..10 {
            body.extend_from_slice(line.as_bytes());
        }
        let mut decoder = AckDecoder::new();
        let mut acks = 0;
        for byte in &body {
            decoder.push(std::slice::from_ref(byte));
            acks += drain(&mut decoder);
        }
        assert_eq!(acks, 10);
        // Each byte once, plus at most one re-look at each newline: linear, not quadratic.
        assert!(
            decoder.scanned <= body.len() as u64 + 10,
            "{} scanned",
            decoder.scanned
        );
    }

    #[test]
    fn bytes_are_scanned_once_when_lines_pile_up_between_drains() {
        let line = Ack::idle().to_json_line();
        let mut decoder = AckDecoder::new();
        let mut total = 0;
        for _ in 0..100 {
            // Pushing without draining takes the slow path; the later drain scans each byte once.
            decoder.push(line.as_bytes());
            decoder.push(b"\r\n");
            total += line.len() + 2;
        }
        assert_eq!(drain(&mut decoder), 100);
        assert!(
            decoder.scanned <= total as u64 + 200,
            "{} scanned",
            decoder.scanned
        );
    }

    #[test]
    fn discarding_drops_bytes_without_buffering_them() {
        let mut decoder = AckDecoder::with_max_line_length(4);
        decoder.push(b"0123456789");
        assert_eq!(decoder.buffered_len(), 0);
        assert_eq!(decoder.mode, Mode::Discarding);
        decoder.push(b"abc");
        assert_eq!(decoder.buffered_len(), 0);
        decoder.push(b"def\n{}");
        assert_eq!(decoder.mode, Mode::Lines);
        assert_eq!(decoder.stream_offset(), 19);
        assert_eq!(decoder.buffered_len(), 2);
    }

    #[test]
    fn every_known_id_round_trips_through_id_and_code() {
        assert_eq!(AckErrorId::KNOWN.len(), 23);
        for &id in AckErrorId::KNOWN {
            assert_eq!(AckErrorId::from_id(id.id()), id);
            assert_eq!(AckErrorId::from_code(id.code()), Some(id));
            assert!(!id.description().is_empty());
        }
    }
}
