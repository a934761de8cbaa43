//! Matroska reading and KVS re-fragmenting.
