//! Builders for what the emulator serves back: standalone fragments and GetMedia chunks.

use super::ebml::{self, id};

/// Which API a chunk is for: the two name their timestamp tags differently.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ChunkApi {
    /// GetMedia: `AWS_KINESISVIDEO_SERVER_TIMESTAMP` / `AWS_KINESISVIDEO_PRODUCER_TIMESTAMP`
    /// (the names seen in real GetMedia output).
    GetMedia,
    /// GetMediaForFragmentList: `AWS_KINESISVIDEO_SERVER_SIDE_TIMESTAMP` /
    /// `AWS_KINESISVIDEO_PRODUCER_SIDE_TIMESTAMP`, as that API's documentation names them (not
    /// checked against the live service).
    GetMediaForFragmentList,
}

/// The `AWS_KINESISVIDEO_*` tags of one GetMedia chunk.
///
/// Real GetMedia output (seen in captures of Amazon Connect streams and read by the KVS parser
/// library) is, per fragment: EBML header, unknown-size Segment, Info, Tracks, a Tags element with
/// `AWS_KINESISVIDEO_FRAGMENT_NUMBER`, `AWS_KINESISVIDEO_SERVER_TIMESTAMP` and
/// `AWS_KINESISVIDEO_PRODUCER_TIMESTAMP`, the Cluster, the fragment's own metadata tags (one Tags
/// element each), and last a Tags element with `AWS_KINESISVIDEO_MILLIS_BEHIND_NOW` and
/// `AWS_KINESISVIDEO_CONTINUATION_TOKEN` (the fragment number). Timestamps are epoch seconds with
/// a millisecond fraction (`1726677687.758`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GetMediaTags {
    /// `AWS_KINESISVIDEO_FRAGMENT_NUMBER`, a decimal string.
    pub fragment_number: String,
    /// `AWS_KINESISVIDEO_SERVER_TIMESTAMP`, epoch milliseconds.
    pub server_timestamp_ms: u64,
    /// `AWS_KINESISVIDEO_PRODUCER_TIMESTAMP`, epoch milliseconds.
    pub producer_timestamp_ms: u64,
    /// `AWS_KINESISVIDEO_MILLIS_BEHIND_NOW`; GetMedia sends it, GetMediaForFragmentList does not.
    pub millis_behind_now: Option<u64>,
    /// `AWS_KINESISVIDEO_CONTINUATION_TOKEN`; GetMedia sends the fragment number.
    pub continuation_token: Option<String>,
    /// The fragment's own metadata tags, as ingested.
    pub metadata: Vec<(String, String)>,
}

/// Formats epoch milliseconds as the tags do: seconds with a zero-padded millisecond fraction.
fn seconds(ms: u64) -> String {
    format!("{}.{:03}", ms / 1000, ms % 1000)
}

/// Appends a level-1 Tags element holding one Tag with these SimpleTags. No Targets: real
/// GetMedia chunks carry none, and a Tag without Targets applies to the whole Segment.
fn write_tags(out: &mut Vec<u8>, pairs: &[(&str, &str)]) {
    let mut tag = Vec::new();
    for (name, value) in pairs {
        let mut simple = Vec::new();
        ebml::write_element(&mut simple, id::TAG_NAME, name.as_bytes());
        ebml::write_element(&mut simple, id::TAG_STRING, value.as_bytes());
        ebml::write_element(&mut tag, id::SIMPLE_TAG, &simple);
    }
    let mut tags = Vec::new();
    ebml::write_element(&mut tags, id::TAG, &tag);
    ebml::write_element(out, id::TAGS, &tags);
}

/// A standalone MKV of one fragment: `header` (from [`Ingest::header`](super::Ingest::header))
/// followed by the fragment's self-delimiting Cluster
/// ([`CompletedFragment::cluster`](super::CompletedFragment::cluster)). ffprobe and mkvinfo read
/// it (tested in `tests/media_builders.rs`).
pub fn fragment_to_mkv(header: &[u8], cluster: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(header.len() + cluster.len());
    out.extend_from_slice(header);
    out.extend_from_slice(cluster);
    out
}

/// One GetMedia chunk, laid out as [`GetMediaTags`] describes. A GetMedia response body is these
/// chunks back to back.
pub fn getmedia_chunk(header: &[u8], cluster: &[u8], tags: &GetMediaTags) -> Vec<u8> {
    chunk(header, cluster, tags, ChunkApi::GetMedia)
}

/// One GetMediaForFragmentList chunk: like [`getmedia_chunk`], but with the timestamp tags named
/// `AWS_KINESISVIDEO_SERVER_SIDE_TIMESTAMP` and `AWS_KINESISVIDEO_PRODUCER_SIDE_TIMESTAMP` as that
/// API's documentation says (not checked against the live service), and without the
/// MILLIS_BEHIND_NOW / CONTINUATION_TOKEN trailer, which only GetMedia documents; those fields of
/// `tags` are ignored.
pub fn fragment_list_chunk(header: &[u8], cluster: &[u8], tags: &GetMediaTags) -> Vec<u8> {
    chunk(header, cluster, tags, ChunkApi::GetMediaForFragmentList)
}

fn chunk(header: &[u8], cluster: &[u8], tags: &GetMediaTags, api: ChunkApi) -> Vec<u8> {
    let mut out = Vec::with_capacity(header.len() + cluster.len() + 512);
    out.extend_from_slice(header);
    let server = seconds(tags.server_timestamp_ms);
    let producer = seconds(tags.producer_timestamp_ms);
    let (server_name, producer_name) = match api {
        ChunkApi::GetMedia => (
            "AWS_KINESISVIDEO_SERVER_TIMESTAMP",
            "AWS_KINESISVIDEO_PRODUCER_TIMESTAMP",
        ),
        ChunkApi::GetMediaForFragmentList => (
            "AWS_KINESISVIDEO_SERVER_SIDE_TIMESTAMP",
            "AWS_KINESISVIDEO_PRODUCER_SIDE_TIMESTAMP",
        ),
    };
    write_tags(
        &mut out,
        &[
            ("AWS_KINESISVIDEO_FRAGMENT_NUMBER", &tags.fragment_number),
            (server_name, &server),
            (producer_name, &producer),
        ],
    );
    out.extend_from_slice(cluster);
    for (name, value) in &tags.metadata {
        write_tags(&mut out, &[(name, value)]);
    }
    if api == ChunkApi::GetMediaForFragmentList {
        return out;
    }
    let behind = tags.millis_behind_now.map(|ms| ms.to_string());
    let mut trailer: Vec<(&str, &str)> = Vec::new();
    if let Some(behind) = &behind {
        trailer.push(("AWS_KINESISVIDEO_MILLIS_BEHIND_NOW", behind));
    }
    if let Some(token) = &tags.continuation_token {
        trailer.push(("AWS_KINESISVIDEO_CONTINUATION_TOKEN", token));
    }
    if !trailer.is_empty() {
        write_tags(&mut out, &trailer);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_are_seconds_with_zero_padded_millis() {
        assert_eq!(seconds(1_726_677_687_058), "1726677687.058");
        assert_eq!(seconds(5), "0.005");
    }
}
