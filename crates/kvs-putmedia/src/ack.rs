//! Acknowledgement stream types and decoder.
