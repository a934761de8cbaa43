//! Builders for stored fragments.

/// The `AWS_KINESISVIDEO_*` tags of one GetMedia chunk.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GetMediaTags {
    /// `AWS_KINESISVIDEO_FRAGMENT_NUMBER`.
    pub fragment_number: String,
    /// `AWS_KINESISVIDEO_SERVER_TIMESTAMP`, epoch milliseconds.
    pub server_timestamp_ms: u64,
    /// `AWS_KINESISVIDEO_PRODUCER_TIMESTAMP`, epoch milliseconds.
    pub producer_timestamp_ms: u64,
    /// `AWS_KINESISVIDEO_MILLIS_BEHIND_NOW`, when known.
    pub millis_behind_now: Option<u64>,
    /// `AWS_KINESISVIDEO_CONTINUATION_TOKEN`, when known.
    pub continuation_token: Option<String>,
    /// The fragment's own metadata tags.
    pub metadata: Vec<(String, String)>,
}

/// A standalone playable MKV of one fragment.
pub fn fragment_to_mkv(header: &[u8], cluster: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(header.len() + cluster.len());
    out.extend_from_slice(header);
    out.extend_from_slice(cluster);
    out
}

/// One GetMedia chunk.
pub fn getmedia_chunk(header: &[u8], cluster: &[u8], tags: &GetMediaTags) -> Vec<u8> {
    let _ = tags;
    fragment_to_mkv(header, cluster)
}
