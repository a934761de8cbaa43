//! Independent MKV validation for ingested media.
