//! The re-fragmenter.

use bytes::Bytes;

use super::{Header, MkvError, Output, RefragmentConfig};

/// Turns an MKV byte stream, in any chunking, into KVS-shaped media.
#[derive(Debug)]
pub struct Refragmenter {
    config: RefragmentConfig,
    header: Option<Header>,
}

impl Refragmenter {
    /// A re-fragmenter with a validated configuration.
    pub fn new(config: RefragmentConfig) -> Self {
        Self { config, header: None }
    }

    /// Feed the next chunk of input.
    pub fn push(&mut self, chunk: Bytes) -> Result<(), MkvError> {
        let _ = (&self.config, chunk);
        Ok(())
    }

    /// End of input: emits the last fragment.
    pub fn finish(&mut self) -> Result<(), MkvError> {
        Ok(())
    }

    /// The next output item; drain after every `push` and `finish`.
    pub fn next_output(&mut self) -> Option<Output> {
        None
    }

    /// The stream header, once parsed; re-send it at the start of every new connection.
    pub fn header(&self) -> Option<&Header> {
        self.header.as_ref()
    }
}
