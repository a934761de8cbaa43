//! The text a playback session serves: HLS master and media playlists (RFC 8216) and the DASH
//! manifest (ISO/IEC 23009-1), built from a list of segments. Every segment is one KVS fragment,
//! as in the service (see the GetHLSStreamingSessionURL reference,
//! <https://docs.aws.amazon.com/kinesisvideostreams/latest/dg/API_reader_GetHLSStreamingSessionURL.html>).

use std::fmt::Write as _;

/// One media segment: one stored fragment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Segment {
    /// The fragment number, used in the segment's URL.
    pub fragment_number: String,
    /// Position on the session's timeline, ms (what the segment's `tfdt` says).
    pub start_ms: u64,
    /// Duration, ms.
    pub duration_ms: u64,
    /// Producer timestamp (epoch ms), for `EXT-X-PROGRAM-DATE-TIME`.
    pub producer_timestamp_ms: u64,
    /// A discontinuity precedes this segment.
    pub discontinuity: bool,
}

/// How the media segments are packaged (`ContainerFormat`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Container {
    /// `FRAGMENTED_MP4`: an init segment and `moof`/`mdat` media segments.
    FragmentedMp4,
    /// `MPEG_TS`: self-contained transport-stream segments.
    MpegTs,
}

/// A media playlist's settings.
#[derive(Debug, Clone)]
pub struct MediaPlaylist<'a> {
    /// `SessionToken=...` query value, added to every URL.
    pub token: &'a str,
    /// Packaging.
    pub container: Container,
    /// `EXT-X-MEDIA-SEQUENCE`: the index of the first segment in the stream.
    pub media_sequence: u64,
    /// Whether the list is complete (`EXT-X-ENDLIST`).
    pub ended: bool,
    /// `EXT-X-PLAYLIST-TYPE:VOD` (ON_DEMAND).
    pub vod: bool,
    /// Write `EXT-X-PROGRAM-DATE-TIME` before each segment (DisplayFragmentTimestamp ALWAYS).
    pub program_date_time: bool,
}

/// The HLS master playlist: one variant, the media playlist of track 1 (video and, when
/// present, audio are muxed into the same segments, as the service does).
pub fn hls_master(
    token: &str,
    codecs: &str,
    bandwidth: u64,
    resolution: Option<(u32, u32)>,
) -> String {
    let mut s = String::from("#EXTM3U\n#EXT-X-VERSION:7\n#EXT-X-INDEPENDENT-SEGMENTS\n");
    let _ = write!(
        s,
        "#EXT-X-STREAM-INF:BANDWIDTH={bandwidth},CODECS=\"{codecs}\""
    );
    if let Some((w, h)) = resolution {
        let _ = write!(s, ",RESOLUTION={w}x{h}");
    }
    let _ = writeln!(
        s,
        "\ngetHLSMediaPlaylist.m3u8?SessionToken={token}&TrackNumber=1"
    );
    s
}

/// The HLS media playlist of `segments`.
pub fn hls_media(p: &MediaPlaylist<'_>, segments: &[Segment]) -> String {
    let target = segments
        .iter()
        .map(|s| s.duration_ms.div_ceil(1000))
        .max()
        .unwrap_or(1)
        .max(1);
    let version = match p.container {
        Container::FragmentedMp4 => 7,
        Container::MpegTs => 3,
    };
    let mut s = format!(
        "#EXTM3U\n#EXT-X-VERSION:{version}\n#EXT-X-TARGETDURATION:{target}\n#EXT-X-MEDIA-SEQUENCE:{}\n",
        p.media_sequence
    );
    if p.vod {
        s.push_str("#EXT-X-PLAYLIST-TYPE:VOD\n");
    }
    if p.container == Container::FragmentedMp4 {
        let _ = writeln!(
            s,
            "#EXT-X-MAP:URI=\"getMP4InitFragment.mp4?SessionToken={}\"",
            p.token
        );
    }
    for seg in segments {
        if seg.discontinuity {
            s.push_str("#EXT-X-DISCONTINUITY\n");
        }
        if p.program_date_time {
            let _ = writeln!(
                s,
                "#EXT-X-PROGRAM-DATE-TIME:{}",
                iso8601_ms(seg.producer_timestamp_ms)
            );
        }
        let (path, ext) = match p.container {
            Container::FragmentedMp4 => ("getMP4MediaFragment", "mp4"),
            Container::MpegTs => ("getTSFragment", "ts"),
        };
        let _ = write!(
            s,
            "#EXTINF:{}.{:03},\n{path}.{ext}?SessionToken={}&FragmentNumber={}\n",
            seg.duration_ms / 1000,
            seg.duration_ms % 1000,
            p.token,
            seg.fragment_number
        );
    }
    if p.ended {
        s.push_str("#EXT-X-ENDLIST\n");
    }
    s
}

/// A DASH manifest's settings.
#[derive(Debug, Clone)]
pub struct Manifest<'a> {
    /// `SessionToken=...` query value, added to every URL.
    pub token: &'a str,
    /// RFC 6381 codecs of the representation.
    pub codecs: &'a str,
    /// Estimated bits per second.
    pub bandwidth: u64,
    /// Width and height, when known.
    pub resolution: Option<(u32, u32)>,
    /// Whether the list is complete (`type="static"`).
    pub ended: bool,
    /// `availabilityStartTime` of a dynamic manifest, epoch ms.
    pub availability_start_ms: u64,
    /// `publishTime`, epoch ms.
    pub now_ms: u64,
}

/// The DASH manifest (MPD) of `segments`: a `SegmentList` with an explicit `SegmentTimeline`,
/// `type="static"` when complete, else `dynamic` with a one-second update period.
pub fn dash_mpd(m: &Manifest<'_>, segments: &[Segment]) -> String {
    let Manifest {
        token,
        codecs,
        bandwidth,
        resolution,
        ended,
        availability_start_ms,
        now_ms,
    } = *m;
    let total: u64 = segments.iter().map(|s| s.duration_ms).sum();
    let mut s = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    let _ = write!(
        s,
        "<MPD xmlns=\"urn:mpeg:dash:schema:mpd:2011\" profiles=\"urn:mpeg:dash:profile:isoff-live:2011\" minBufferTime=\"PT2S\""
    );
    if ended {
        let _ = write!(
            s,
            " type=\"static\" mediaPresentationDuration=\"PT{}.{:03}S\">",
            total / 1000,
            total % 1000
        );
    } else {
        let _ = write!(
            s,
            " type=\"dynamic\" minimumUpdatePeriod=\"PT1S\" availabilityStartTime=\"{}\" publishTime=\"{}\" timeShiftBufferDepth=\"PT{}S\">",
            iso8601_ms(availability_start_ms),
            iso8601_ms(now_ms),
            total.div_ceil(1000).max(1)
        );
    }
    s.push_str("\n  <Period id=\"0\" start=\"PT0S\">\n");
    s.push_str(
        "    <AdaptationSet mimeType=\"video/mp4\" segmentAlignment=\"true\" startWithSAP=\"1\">\n",
    );
    let _ = write!(
        s,
        "      <Representation id=\"1\" codecs=\"{codecs}\" bandwidth=\"{bandwidth}\""
    );
    if let Some((w, h)) = resolution {
        let _ = write!(s, " width=\"{w}\" height=\"{h}\"");
    }
    s.push_str(">\n        <SegmentList timescale=\"1000\">\n");
    let _ = writeln!(
        s,
        "          <Initialization sourceURL=\"getMP4InitFragment.mp4?SessionToken={token}\"/>"
    );
    s.push_str("          <SegmentTimeline>\n");
    for seg in segments {
        let _ = writeln!(
            s,
            "            <S t=\"{}\" d=\"{}\"/>",
            seg.start_ms, seg.duration_ms
        );
    }
    s.push_str("          </SegmentTimeline>\n");
    for seg in segments {
        let _ = writeln!(
            s,
            "          <SegmentURL media=\"getMP4MediaFragment.mp4?SessionToken={token}&amp;FragmentNumber={}\"/>",
            seg.fragment_number
        );
    }
    s.push_str("        </SegmentList>\n      </Representation>\n    </AdaptationSet>\n  </Period>\n</MPD>\n");
    s
}

/// `2023-11-14T22:13:20.000Z`.
pub fn iso8601_ms(epoch_ms: u64) -> String {
    let t = time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(epoch_ms) * 1_000_000)
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second(),
        t.millisecond()
    )
}

/// The RFC 6381 codecs string of an initialization segment: `avc1.PPCCLL` from the `avcC`
/// box, `hvc1` for HEVC, plus `mp4a.40.2` when an AAC track is present.
pub fn codecs_of_init(init: &[u8]) -> String {
    let mut out = Vec::new();
    if let Some(i) = find_subslice(init, b"avcC") {
        // avcC payload: configurationVersion, AVCProfileIndication, profile_compatibility,
        // AVCLevelIndication (ISO/IEC 14496-15 §5.3.3.1).
        if let Some(b) = init.get(i + 5..i + 8) {
            out.push(format!("avc1.{:02x}{:02x}{:02x}", b[0], b[1], b[2]));
        }
    } else if find_subslice(init, b"hvcC").is_some() {
        out.push("hvc1".to_owned());
    }
    if find_subslice(init, b"mp4a").is_some() {
        out.push("mp4a.40.2".to_owned());
    }
    out.join(",")
}

fn find_subslice(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn segs() -> Vec<Segment> {
        (0..3)
            .map(|i| Segment {
                fragment_number: format!("9134{i}"),
                start_ms: i * 2000,
                duration_ms: 2000 - i,
                producer_timestamp_ms: 1_700_000_000_000 + i * 2000,
                discontinuity: i == 2,
            })
            .collect()
    }

    #[test]
    fn media_playlist_lists_every_segment_in_order() {
        let p = MediaPlaylist {
            token: "TOK",
            container: Container::FragmentedMp4,
            media_sequence: 4,
            ended: true,
            vod: true,
            program_date_time: true,
        };
        let text = hls_media(&p, &segs());
        assert!(text.starts_with(
            "#EXTM3U\n#EXT-X-VERSION:7\n#EXT-X-TARGETDURATION:2\n#EXT-X-MEDIA-SEQUENCE:4\n"
        ));
        assert!(text.contains("#EXT-X-MAP:URI=\"getMP4InitFragment.mp4?SessionToken=TOK\""));
        assert!(text.contains(
            "#EXTINF:1.999,\ngetMP4MediaFragment.mp4?SessionToken=TOK&FragmentNumber=91341\n"
        ));
        assert!(text.contains("#EXT-X-PROGRAM-DATE-TIME:2023-11-14T22:13:20.000Z"));
        assert_eq!(text.matches("#EXT-X-DISCONTINUITY").count(), 1);
        assert!(text.ends_with("#EXT-X-ENDLIST\n"));
        let live = hls_media(
            &MediaPlaylist {
                container: Container::MpegTs,
                ended: false,
                vod: false,
                program_date_time: false,
                ..p
            },
            &segs(),
        );
        assert!(!live.contains("ENDLIST") && !live.contains("EXT-X-MAP"));
        assert!(live.contains("getTSFragment.ts?SessionToken=TOK&FragmentNumber=91340"));
    }

    #[test]
    fn mpd_static_and_dynamic() {
        let m = Manifest {
            token: "T",
            codecs: "avc1.42c01e",
            bandwidth: 1000,
            resolution: Some((320, 240)),
            ended: true,
            availability_start_ms: 0,
            now_ms: 0,
        };
        let s = dash_mpd(&m, &segs());
        assert!(s.contains("type=\"static\" mediaPresentationDuration=\"PT5.997S\""));
        assert_eq!(s.matches("<S t=").count(), 3);
        assert!(s.contains("FragmentNumber=91342\"/>"));
        let d = dash_mpd(
            &Manifest {
                resolution: None,
                ended: false,
                availability_start_ms: 1_700_000_000_000,
                now_ms: 1_700_000_006_000,
                ..m
            },
            &segs(),
        );
        assert!(d.contains("type=\"dynamic\""));
        assert!(d.contains("availabilityStartTime=\"2023-11-14T22:13:20.000Z\""));
    }

    #[test]
    fn codecs_from_avcc() {
        let mut init = b"....avcC".to_vec();
        init.extend_from_slice(&[1, 0x64, 0x00, 0x1f, 0xff]);
        init.extend_from_slice(b"mp4a");
        assert_eq!(codecs_of_init(&init), "avc1.64001f,mp4a.40.2");
    }
}
