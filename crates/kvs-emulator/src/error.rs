//! The emulator library's error type.

use std::net::SocketAddr;
use std::path::PathBuf;

use crate::api::ApiError;

/// Errors from starting or driving an [`Emulator`](crate::Emulator) through its library API.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The listener could not be bound.
    #[error("cannot bind {addr}: {source}")]
    Bind {
        /// Requested address.
        addr: SocketAddr,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// The data directory (or the temporary one) could not be prepared, read or written.
    #[error("data directory {path}: {source}")]
    DataDir {
        /// The path involved.
        path: PathBuf,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// The persisted state in the data directory is not readable.
    #[error("corrupt emulator state {path}: {reason}")]
    CorruptState {
        /// The file.
        path: PathBuf,
        /// What failed.
        reason: String,
    },
    /// A builder setting is out of range.
    #[error("invalid emulator configuration: {reason}")]
    InvalidConfig {
        /// What is wrong.
        reason: String,
    },
    /// A KVS operation failed with the error the service would have returned.
    #[error("stream {stream:?}: {source}")]
    Kvs {
        /// The stream involved.
        stream: String,
        /// The AWS-shaped error.
        #[source]
        source: ApiError,
    },
    /// An S3 operation failed.
    #[error("s3 {bucket}/{key}: HTTP {status}: {message}")]
    S3 {
        /// Bucket.
        bucket: String,
        /// Key (empty for bucket operations).
        key: String,
        /// HTTP status s3s answered with.
        status: u16,
        /// Body or error text.
        message: String,
    },
    /// An SQS operation failed with the error the service would have returned.
    #[error("sqs queue {queue:?}: {code}: {message}")]
    Sqs {
        /// The queue involved.
        queue: String,
        /// The SQS error code, e.g. `AWS.SimpleQueueService.NonExistentQueue`.
        code: String,
        /// The error message.
        message: String,
    },
}
