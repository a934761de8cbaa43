//! The archived-media playback APIs through the unmodified SDK client: HLS (fMP4 and MPEG-TS,
//! ON_DEMAND and a LIVE playlist that grows while PutMedia streams), DASH, GetClip, GetImages,
//! and their documented errors. What comes out is checked by ffprobe, not by this crate.

mod media_support;
mod support;

use std::path::Path;
use std::time::Duration;

use aws_sdk_kinesisvideoarchivedmedia::error::ProvideErrorMetadata;
use aws_sdk_kinesisvideoarchivedmedia::primitives::DateTime;
use aws_sdk_kinesisvideoarchivedmedia::types::{
    ClipFragmentSelector, ClipFragmentSelectorType, ContainerFormat, DashFragmentSelector,
    DashFragmentSelectorType, DashPlaybackMode, Format, FormatConfigKey, HlsDiscontinuityMode,
    HlsFragmentSelector, HlsFragmentSelectorType, HlsPlaybackMode, ImageSelectorType,
};
use kvs_emulator::{Emulator, FaultRule};
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

async fn archived(emu: &Emulator) -> aws_sdk_kinesisvideoarchivedmedia::Client {
    aws_sdk_kinesisvideoarchivedmedia::Client::new(&emu.sdk_config())
}

/// A plain HTTP GET (the session URLs are not signed): status, content type, body.
async fn http_get(url: &str) -> (u16, String, Vec<u8>) {
    let rest = url.strip_prefix("http://").expect("http URL");
    let (host, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    let mut tcp = tokio::net::TcpStream::connect(host).await.unwrap();
    tcp.write_all(
        format!("GET {path} HTTP/1.1\r\nhost: {host}\r\nconnection: close\r\n\r\n").as_bytes(),
    )
    .await
    .unwrap();
    let mut raw = Vec::new();
    tokio::time::timeout(Duration::from_secs(30), tcp.read_to_end(&mut raw))
        .await
        .expect("response within 30 s")
        .unwrap();
    let split = raw.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
    let head = String::from_utf8_lossy(&raw[..split]).into_owned();
    let status = head.split(' ').nth(1).unwrap().parse().unwrap();
    let ctype = header_value(&head, "content-type").unwrap_or_default();
    let body = raw[split + 4..].to_vec();
    let body = if header_value(&head, "transfer-encoding").is_some_and(|v| v.contains("chunked")) {
        dechunk(&body)
    } else {
        body
    };
    (status, ctype, body)
}

fn dechunk(mut b: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let eol = b.windows(2).position(|w| w == b"\r\n").unwrap();
        let n = usize::from_str_radix(std::str::from_utf8(&b[..eol]).unwrap().trim(), 16).unwrap();
        if n == 0 {
            return out;
        }
        out.extend_from_slice(&b[eol + 2..eol + 2 + n]);
        b = &b[eol + 4 + n..];
    }
}

/// URIs (non-comment lines) of a playlist, resolved against `base`.
fn uris(playlist: &str, base: &str) -> Vec<String> {
    let dir = &base[..base.rfind('/').unwrap() + 1];
    playlist
        .lines()
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| format!("{dir}{l}"))
        .collect()
}

fn map_uri(playlist: &str, base: &str) -> String {
    let dir = &base[..base.rfind('/').unwrap() + 1];
    let l = playlist
        .lines()
        .find_map(|l| l.strip_prefix("#EXT-X-MAP:URI=\""))
        .expect("EXT-X-MAP");
    format!("{dir}{}", l.trim_end_matches('"'))
}

/// ffprobe's video packets (dts, pts in seconds) of a file, failing on any ffprobe error.
fn probe_packets(path: &Path) -> Vec<(f64, f64)> {
    let out = std::process::Command::new("ffprobe")
        .args([
            "-v",
            "error",
            "-select_streams",
            "v:0",
            "-show_entries",
            "packet=dts_time,pts_time",
            "-of",
            "csv=p=0",
        ])
        .arg(path)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.stderr.is_empty(),
        "ffprobe complained: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        // MPEG-TS packets add a side-data line and a trailing field: keep pts,dts lines only.
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let mut it = l.split(',').map(|v| v.parse::<f64>().unwrap());
            let pts = it.next().unwrap();
            let dts = it.next().unwrap();
            (dts, pts)
        })
        .collect()
}

/// Timestamps strictly increase and never jump more than two frame times (25 fps clip).
fn assert_continuous(packets: &[(f64, f64)]) {
    for w in packets.windows(2) {
        let step = w[1].0 - w[0].0;
        assert!(step > 0.0 && step < 0.081, "dts {} then {}", w[0].0, w[1].0);
    }
}

async fn session_url(
    am: &aws_sdk_kinesisvideoarchivedmedia::Client,
    stream: &str,
    from_ms: u64,
    to_ms: u64,
    container: ContainerFormat,
) -> String {
    am.get_hls_streaming_session_url()
        .stream_name(stream)
        .playback_mode(HlsPlaybackMode::OnDemand)
        .container_format(container)
        .hls_fragment_selector(
            HlsFragmentSelector::builder()
                .fragment_selector_type(HlsFragmentSelectorType::ProducerTimestamp)
                .timestamp_range(
                    aws_sdk_kinesisvideoarchivedmedia::types::HlsTimestampRange::builder()
                        .start_timestamp(DateTime::from_millis(from_ms as i64))
                        .end_timestamp(DateTime::from_millis(to_ms as i64))
                        .build(),
                )
                .build(),
        )
        .send()
        .await
        .unwrap()
        .hls_streaming_session_url
        .unwrap()
}

#[tokio::test]
async fn hls_on_demand_fmp4_is_one_continuous_playable_timeline() {
    let emu = emulator().await;
    emu.create_stream("cam", 24).await.unwrap();
    put_raw(&emu, "cam", clip(), 8192).await;
    let stored = emu.fragments("cam");
    assert_eq!(stored.len(), 6);
    // The data endpoint the SDK asks for is this emulator.
    let kv = aws_sdk_kinesisvideo::Client::new(&emu.sdk_config());
    let ep = kv
        .get_data_endpoint()
        .stream_name("cam")
        .api_name(aws_sdk_kinesisvideo::types::ApiName::GetHlsStreamingSessionUrl)
        .send()
        .await
        .unwrap();
    assert_eq!(ep.data_endpoint(), Some(emu.url().as_str()));
    let am = archived(&emu).await;
    let url = session_url(
        &am,
        "cam",
        stored[0].producer_timestamp_ms,
        stored[5].producer_timestamp_ms + 1,
        ContainerFormat::FragmentedMp4,
    )
    .await;
    assert!(url.starts_with(&format!(
        "{}/hls/v1/getHLSMasterPlaylist.m3u8?SessionToken=",
        emu.url()
    )));
    let (status, ctype, master) = http_get(&url).await;
    assert_eq!(
        (status, ctype.as_str()),
        (200, "application/vnd.apple.mpegurl")
    );
    let master = String::from_utf8(master).unwrap();
    assert!(master.contains("CODECS=\"avc1.42c0"), "{master}");
    let media_url = uris(&master, &url).remove(0);
    let (_, _, media) = http_get(&media_url).await;
    let media = String::from_utf8(media).unwrap();
    assert!(
        media.contains("#EXT-X-PLAYLIST-TYPE:VOD") && media.ends_with("#EXT-X-ENDLIST\n"),
        "{media}"
    );
    let segs = uris(&media, &media_url);
    assert_eq!(segs.len(), 6);
    for (s, f) in segs.iter().zip(&stored) {
        assert!(s.ends_with(&format!("FragmentNumber={}", f.fragment_number)));
    }
    let (status, ctype, mut file) = http_get(&map_uri(&media, &media_url)).await;
    assert_eq!((status, ctype.as_str()), (200, "video/mp4"));
    for s in &segs {
        let (status, _, body) = http_get(s).await;
        assert_eq!(status, 200);
        file.extend_from_slice(&body);
    }
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("hls.mp4");
    std::fs::write(&p, &file).unwrap();
    let packets = probe_packets(&p);
    assert_eq!(packets.len(), 150);
    assert_continuous(&packets);
    // Segment k starts where fragment k sits on the producer timeline.
    let tfdts = kvs_emulator::playback::mp4::tfdts(&file).unwrap();
    assert_eq!(tfdts.len(), 6);
    for (k, (_, t)) in tfdts.iter().enumerate() {
        let want = (stored[k].producer_timestamp_ms - stored[0].producer_timestamp_ms) * 16;
        assert_eq!(*t, want, "segment {k}");
    }
}

#[tokio::test]
async fn hls_mpeg_ts_and_dash_play() {
    let emu = emulator().await;
    emu.create_stream("cam", 24).await.unwrap();
    put_raw(&emu, "cam", clip(), 8192).await;
    let stored = emu.fragments("cam");
    let (a, b) = (
        stored[0].producer_timestamp_ms,
        stored[5].producer_timestamp_ms + 1,
    );
    let am = archived(&emu).await;
    let url = session_url(&am, "cam", a, b, ContainerFormat::MpegTs).await;
    let (_, _, master) = http_get(&url).await;
    let media_url = uris(&String::from_utf8(master).unwrap(), &url).remove(0);
    let (_, _, media) = http_get(&media_url).await;
    let media = String::from_utf8(media).unwrap();
    assert!(!media.contains("EXT-X-MAP"));
    let mut ts = Vec::new();
    for s in uris(&media, &media_url) {
        assert!(s.contains("getTSFragment.ts"));
        let (status, ctype, body) = http_get(&s).await;
        assert_eq!((status, ctype.as_str()), (200, "video/mp2t"));
        ts.extend_from_slice(&body);
    }
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("hls.ts");
    std::fs::write(&p, &ts).unwrap();
    let packets = probe_packets(&p);
    assert_eq!(packets.len(), 150);
    assert_continuous(&packets);

    let dash = am
        .get_dash_streaming_session_url()
        .stream_name("cam")
        .playback_mode(DashPlaybackMode::OnDemand)
        .dash_fragment_selector(
            DashFragmentSelector::builder()
                .fragment_selector_type(DashFragmentSelectorType::ProducerTimestamp)
                .timestamp_range(
                    aws_sdk_kinesisvideoarchivedmedia::types::DashTimestampRange::builder()
                        .start_timestamp(DateTime::from_millis(a as i64))
                        .end_timestamp(DateTime::from_millis(b as i64))
                        .build(),
                )
                .build(),
        )
        .send()
        .await
        .unwrap()
        .dash_streaming_session_url
        .unwrap();
    assert!(dash.contains("/dash/v1/getDASHManifest.mpd?SessionToken="));
    let (status, ctype, mpd) = http_get(&dash).await;
    assert_eq!((status, ctype.as_str()), (200, "application/dash+xml"));
    let mpd = String::from_utf8(mpd).unwrap();
    assert!(mpd.contains("type=\"static\""));
    let dir_url = &dash[..dash.rfind('/').unwrap() + 1];
    let attr = |tag: &str| -> Vec<String> {
        mpd.split(tag)
            .skip(1)
            .map(|s| s[..s.find('"').unwrap()].replace("&amp;", "&"))
            .collect()
    };
    let init = attr("sourceURL=\"");
    let segs = attr("media=\"");
    assert_eq!((init.len(), segs.len()), (1, 6));
    let (_, _, mut file) = http_get(&format!("{dir_url}{}", init[0])).await;
    for s in segs {
        file.extend_from_slice(&http_get(&format!("{dir_url}{s}")).await.2);
    }
    let p = dir.path().join("dash.mp4");
    std::fs::write(&p, &file).unwrap();
    assert_continuous(&probe_packets(&p));
}

#[tokio::test]
async fn live_playlist_grows_while_a_producer_streams() {
    let emu = emulator().await;
    emu.create_stream("live", 1).await.unwrap();
    let mut pm = PutMedia::open(&emu, PutMediaOptions::new(&emu, "live")).await;
    assert_eq!(pm.status, 200);
    let data = clip();
    let chunks: Vec<&[u8]> = data.chunks(data.len() / 24 + 1).collect();
    let am = archived(&emu).await;
    // Stream the first quarter, so one fragment is stored, then open a LIVE session.
    let mut sent = 0;
    while emu.fragments("live").iter().filter(|f| f.persisted).count() < 1 {
        pm.send(chunks[sent]).await.unwrap();
        sent += 1;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let url = am
        .get_hls_streaming_session_url()
        .stream_name("live")
        .playback_mode(HlsPlaybackMode::Live)
        .discontinuity_mode(HlsDiscontinuityMode::Never)
        .send()
        .await
        .unwrap()
        .hls_streaming_session_url
        .unwrap();
    let (_, _, master) = http_get(&url).await;
    let media_url = uris(&String::from_utf8(master).unwrap(), &url).remove(0);
    let mut seen: Vec<String> = Vec::new();
    let mut growths = 0;
    for c in &chunks[sent..] {
        pm.send(c).await.unwrap();
        tokio::time::sleep(Duration::from_millis(150)).await;
        let (_, _, media) = http_get(&media_url).await;
        let media = String::from_utf8(media).unwrap();
        assert!(!media.contains("ENDLIST"), "a LIVE playlist never ends");
        let last = uris(&media, &media_url).pop().unwrap();
        if seen.last() != Some(&last) {
            growths += 1;
            seen.push(last);
        }
    }
    pm.end().await.unwrap();
    pm.all_acks().await.1.unwrap();
    assert!(growths >= 3, "the live playlist grew only {growths} times");
    // Every segment the playlist showed is playable after the init segment.
    let (_, _, media) = http_get(&media_url).await;
    let media = String::from_utf8(media).unwrap();
    assert_eq!(
        uris(&media, &media_url).len(),
        5,
        "default window of 5 fragments"
    );
    let (_, _, mut file) = http_get(&map_uri(&media, &media_url)).await;
    for s in &seen {
        file.extend_from_slice(&http_get(s).await.2);
    }
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("live.mp4");
    std::fs::write(&p, &file).unwrap();
    assert_continuous(&probe_packets(&p));
}

#[tokio::test]
async fn get_clip_is_one_playable_mp4() {
    let emu = emulator().await;
    emu.create_stream("cam", 24).await.unwrap();
    put_raw(&emu, "cam", clip(), 8192).await;
    let stored = emu.fragments("cam");
    let am = archived(&emu).await;
    let clip = |a: u64, b: u64| {
        am.get_clip().stream_name("cam").clip_fragment_selector(
            ClipFragmentSelector::builder()
                .fragment_selector_type(ClipFragmentSelectorType::ProducerTimestamp)
                .timestamp_range(
                    aws_sdk_kinesisvideoarchivedmedia::types::ClipTimestampRange::builder()
                        .start_timestamp(DateTime::from_millis(a as i64))
                        .end_timestamp(DateTime::from_millis(b as i64))
                        .build()
                        .unwrap(),
                )
                .build()
                .unwrap(),
        )
    };
    let out = clip(
        stored[1].producer_timestamp_ms,
        stored[3].producer_timestamp_ms + 1,
    )
    .send()
    .await
    .unwrap();
    assert_eq!(out.content_type(), Some("video/mp4"));
    let bytes = out.payload.collect().await.unwrap().into_bytes();
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("clip.mp4");
    std::fs::write(&p, &bytes).unwrap();
    let packets = probe_packets(&p);
    assert_eq!(packets.len(), 75, "fragments 1, 2 and 3");
    assert_continuous(&packets);
    // A range without fragments.
    let e = clip(1_000_000, 2_000_000).send().await.unwrap_err();
    assert_eq!(
        e.as_service_error().and_then(|e| e.code()),
        Some("ResourceNotFoundException")
    );
}

fn image_dims(bytes: &[u8]) -> (u32, u32, String) {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("img");
    std::fs::write(&p, bytes).unwrap();
    let out = std::process::Command::new("ffprobe")
        .args([
            "-v",
            "error",
            "-show_entries",
            "stream=width,height,codec_name",
            "-of",
            "csv=p=0",
        ])
        .arg(&p)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let parts: Vec<&str> = text.trim().split(',').collect();
    (
        parts[1].parse().unwrap(),
        parts[2].parse().unwrap(),
        parts[0].to_owned(),
    )
}

#[tokio::test]
async fn get_images_samples_formats_sizes_and_pages() {
    let emu = emulator().await;
    emu.create_stream("cam", 24).await.unwrap();
    put_raw(&emu, "cam", clip(), 8192).await;
    let stored = emu.fragments("cam");
    let t0 = stored[0].producer_timestamp_ms;
    let am = archived(&emu).await;
    let req = || {
        am.get_images()
            .stream_name("cam")
            .image_selector_type(ImageSelectorType::ProducerTimestamp)
            .start_timestamp(DateTime::from_millis(t0 as i64 - 2000))
            .end_timestamp(DateTime::from_millis(t0 as i64 + 5000))
            .sampling_interval(1000)
    };
    let out = req()
        .format(Format::Jpeg)
        .format_config(FormatConfigKey::JpegQuality, "90")
        .width_pixels(160)
        .send()
        .await
        .unwrap();
    let images = out.images();
    assert_eq!(images.len(), 8);
    assert!(out.next_token().is_none());
    // Two seconds before the first fragment: no media there.
    for img in &images[..2] {
        assert_eq!(img.error().map(|e| e.as_str()), Some("NO_MEDIA"));
        assert!(img.image_content().is_none());
    }
    for (k, img) in images[2..].iter().enumerate() {
        assert_eq!(
            // Epoch seconds with a fraction are inexact in binary: round to the millisecond, as
            // a client of the service must.
            (img.time_stamp().unwrap().as_secs_f64() * 1000.0).round() as u64,
            t0 + k as u64 * 1000
        );
        use base64::Engine as _;
        let jpeg = base64::engine::general_purpose::STANDARD
            .decode(img.image_content().unwrap())
            .unwrap();
        assert_eq!(&jpeg[..2], &[0xFF, 0xD8]);
        assert_eq!(image_dims(&jpeg), (160, 120, "mjpeg".into()));
    }
    let png = req()
        .format(Format::Png)
        .height_pixels(60)
        .max_results(3)
        .send()
        .await
        .unwrap();
    assert_eq!(png.images().len(), 3);
    let token = png.next_token().unwrap().to_owned();
    let next = req()
        .format(Format::Png)
        .height_pixels(60)
        .max_results(3)
        .next_token(token)
        .send()
        .await
        .unwrap();
    assert_eq!(next.images().len(), 3);
    use base64::Engine as _;
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(next.images()[0].image_content().unwrap())
        .unwrap();
    assert_eq!(&bytes[..4], b"\x89PNG");
    assert_eq!(image_dims(&bytes), (80, 60, "png".into()));
    // Over 300 s, and a too-small interval, are refused.
    for bad in [
        req()
            .format(Format::Jpeg)
            .end_timestamp(DateTime::from_millis(t0 as i64 + 400_000)),
        req().format(Format::Jpeg).sampling_interval(10),
        req().format(Format::Jpeg).width_pixels(5000),
    ] {
        let e = bad.send().await.unwrap_err();
        assert_eq!(
            e.as_service_error().and_then(|e| e.code()),
            Some("InvalidArgumentException")
        );
    }
}

#[tokio::test]
async fn documented_errors() {
    let emu = emulator().await;
    emu.create_stream("cam", 24).await.unwrap();
    emu.create_stream("noretention", 0).await.unwrap();
    put_raw(&emu, "cam", clip(), 8192).await;
    let am = archived(&emu).await;
    let code = |e: &dyn ProvideErrorMetadata| e.code().map(str::to_owned);
    let e = am
        .get_hls_streaming_session_url()
        .stream_name("nope")
        .playback_mode(HlsPlaybackMode::Live)
        .send()
        .await
        .unwrap_err();
    assert_eq!(
        code(e.as_service_error().unwrap()).as_deref(),
        Some("ResourceNotFoundException")
    );
    let e = am
        .get_hls_streaming_session_url()
        .stream_name("noretention")
        .send()
        .await
        .unwrap_err();
    assert_eq!(
        code(e.as_service_error().unwrap()).as_deref(),
        Some("NoDataRetentionException")
    );
    let e = am
        .get_hls_streaming_session_url()
        .stream_name("cam")
        .expires(30)
        .send()
        .await
        .unwrap_err();
    assert_eq!(
        code(e.as_service_error().unwrap()).as_deref(),
        Some("InvalidArgumentException")
    );
    // ON_DEMAND without a range, and with a range holding no fragment.
    let e = am
        .get_hls_streaming_session_url()
        .stream_name("cam")
        .playback_mode(HlsPlaybackMode::OnDemand)
        .send()
        .await
        .unwrap_err();
    assert_eq!(
        code(e.as_service_error().unwrap()).as_deref(),
        Some("InvalidArgumentException")
    );
    let e = am
        .get_images()
        .stream_name("nope")
        .image_selector_type(ImageSelectorType::ServerTimestamp)
        .start_timestamp(DateTime::from_secs(1))
        .end_timestamp(DateTime::from_secs(2))
        .format(Format::Png)
        .send()
        .await
        .unwrap_err();
    assert_eq!(
        code(e.as_service_error().unwrap()).as_deref(),
        Some("ResourceNotFoundException")
    );
    // An expired session: the session URL answers 401 NotAuthorizedException.
    let url = am
        .get_hls_streaming_session_url()
        .stream_name("cam")
        .playback_mode(HlsPlaybackMode::Live)
        .send()
        .await
        .unwrap()
        .hls_streaming_session_url
        .unwrap();
    assert_eq!(http_get(&url).await.0, 200);
    emu.faults()
        .push(FaultRule::ClockSkew { offset_ms: 301_000 });
    let (status, _, body) = http_get(&url).await;
    assert_eq!(status, 401);
    assert!(String::from_utf8_lossy(&body).contains("expired"));
    // A token that was never issued.
    let forged = format!(
        "{}/hls/v1/getHLSMasterPlaylist.m3u8?SessionToken=abc",
        emu.url()
    );
    assert_eq!(http_get(&forged).await.0, 401);
}

#[tokio::test]
async fn codec_requirements_and_undecodable_media() {
    use media_support as m;
    let emu = emulator().await;
    emu.create_stream("nocp", 24).await.unwrap();
    emu.create_stream("vp8", 24).await.unwrap();
    // H.264 declared, but no CodecPrivate (and frames that are not H.264).
    put_raw(&emu, "nocp", &m::valid_stream(0, 3), usize::MAX).await;
    let mut vp8 = m::cat(&[
        m::ebml_header(),
        m::el_unknown(m::SEGMENT),
        m::info(),
        m::el(m::TRACKS, &m::track_entry(1, "V_VP8")),
    ]);
    for i in 0..3 {
        let blocks: Vec<_> = (0..25)
            .map(|f| m::simple_block(1, f * 40, f == 0))
            .collect();
        vp8.extend(m::cluster_unknown(i * 1000, &blocks));
    }
    put_raw(&emu, "vp8", &vp8, usize::MAX).await;
    let am = archived(&emu).await;
    for (stream, want) in [
        ("nocp", "MissingCodecPrivateDataException"),
        ("vp8", "UnsupportedStreamMediaTypeException"),
    ] {
        let e = am
            .get_hls_streaming_session_url()
            .stream_name(stream)
            .playback_mode(HlsPlaybackMode::Live)
            .send()
            .await
            .unwrap_err();
        assert_eq!(
            e.as_service_error().and_then(|e| e.code()),
            Some(want),
            "{stream}"
        );
    }
    // GetImages over frames ffmpeg cannot decode says MEDIA_ERROR, never an empty image.
    let t0 = emu.fragments("nocp")[0].producer_timestamp_ms as i64;
    let out = am
        .get_images()
        .stream_name("nocp")
        .image_selector_type(ImageSelectorType::ProducerTimestamp)
        .start_timestamp(DateTime::from_millis(t0))
        .end_timestamp(DateTime::from_millis(t0 + 1000))
        .sampling_interval(1000)
        .format(Format::Png)
        .send()
        .await
        .unwrap();
    assert_eq!(out.images().len(), 2);
    for img in out.images() {
        assert_eq!(img.error().map(|e| e.as_str()), Some("MEDIA_ERROR"));
        assert!(img.image_content().is_none());
    }
}

#[tokio::test]
async fn live_replay_starts_at_the_timestamp_and_ends_at_the_end() {
    let emu = emulator().await;
    emu.create_stream("cam", 24).await.unwrap();
    put_raw(&emu, "cam", clip(), 8192).await;
    let stored = emu.fragments("cam");
    let am = archived(&emu).await;
    let replay = |end: Option<u64>| {
        let range = aws_sdk_kinesisvideoarchivedmedia::types::HlsTimestampRange::builder()
            .start_timestamp(DateTime::from_millis(
                stored[1].producer_timestamp_ms as i64,
            ))
            .set_end_timestamp(end.map(|e| DateTime::from_millis(e as i64)))
            .build();
        am.get_hls_streaming_session_url()
            .stream_name("cam")
            .playback_mode(HlsPlaybackMode::LiveReplay)
            .hls_fragment_selector(
                HlsFragmentSelector::builder()
                    .fragment_selector_type(HlsFragmentSelectorType::ProducerTimestamp)
                    .timestamp_range(range)
                    .build(),
            )
            .max_media_playlist_fragment_results(3)
            .send()
    };
    for (end, ended, count) in [
        (None, false, 3),
        (Some(stored[2].producer_timestamp_ms), true, 2),
    ] {
        let url = replay(end)
            .await
            .unwrap()
            .hls_streaming_session_url
            .unwrap();
        let (_, _, master) = http_get(&url).await;
        let media_url = uris(&String::from_utf8(master).unwrap(), &url).remove(0);
        let media = String::from_utf8(http_get(&media_url).await.2).unwrap();
        assert!(media.contains("#EXT-X-MEDIA-SEQUENCE:1\n"), "{media}");
        assert_eq!(media.contains("#EXT-X-ENDLIST"), ended, "{media}");
        let segs = uris(&media, &media_url);
        assert_eq!(segs.len(), count, "{media}");
        assert!(segs[0].ends_with(&stored[1].fragment_number));
    }
    // LIVE_REPLAY without a StartTimestamp is refused.
    let e = am
        .get_hls_streaming_session_url()
        .stream_name("cam")
        .playback_mode(HlsPlaybackMode::LiveReplay)
        .send()
        .await
        .unwrap_err();
    assert_eq!(
        e.as_service_error().and_then(|e| e.code()),
        Some("InvalidArgumentException")
    );
}
