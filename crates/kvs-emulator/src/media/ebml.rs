//! Minimal EBML primitives.
