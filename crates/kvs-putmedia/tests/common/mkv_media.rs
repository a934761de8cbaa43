//! Shared helpers of the `mkv_*` tests: media generated with ffmpeg lavfi at test time, the
//! re-fragmenter driven over a chunking, and checks with independent tools.
#![allow(dead_code, unused_imports)]

use std::path::{Path, PathBuf};
use std::process::Command;

use bytes::Bytes;
use kvs_putmedia::mkv::{
    Fragment, Header, MkvError, Output, RefragmentConfig, Refragmenter, Warning,
};

pub use kvs_test_support::media::ffmpeg_mkv;

/// The Node sample's exact settings, on a short lavfi source (docs/protocol.md §5: its clusters are
/// not keyframe aligned).
pub fn node_sample(seconds: u32) -> Vec<u8> {
    let t = seconds.to_string();
    ffmpeg_mkv(&[
        "-f",
        "lavfi",
        "-i",
        "testsrc2=size=320x240:rate=25",
        "-f",
        "lavfi",
        "-i",
        "sine=frequency=440:sample_rate=44100",
        "-t",
        &t,
        "-c:v",
        "libx264",
        "-profile:v",
        "baseline",
        "-s",
        "640x480",
        "-c:a",
        "aac",
    ])
}

/// Everything a run produced.
#[derive(Debug, Default)]
pub struct Run {
    pub header: Option<Header>,
    pub fragments: Vec<Fragment>,
    pub warnings: Vec<Warning>,
    /// Header then fragments, in order: what would go on the wire.
    pub bytes: Vec<u8>,
}

/// Feed `input` in chunks of the given sizes (cycled), then finish.
pub fn refragment_chunked(
    input: &[u8],
    sizes: &[usize],
    config: RefragmentConfig,
) -> (Run, Result<(), MkvError>) {
    let mut r = Refragmenter::new(config);
    let mut run = Run::default();
    let input = Bytes::copy_from_slice(input);
    let mut pos = 0;
    let mut i = 0;
    let mut result = Ok(());
    while pos < input.len() {
        let n = sizes[i % sizes.len()].max(1).min(input.len() - pos);
        i += 1;
        let pushed = r.push(input.slice(pos..pos + n));
        pos += n;
        drain(&mut r, &mut run);
        if let Err(e) = pushed {
            result = Err(e);
            break;
        }
    }
    if result.is_ok() {
        result = r.finish();
    }
    drain(&mut r, &mut run);
    (run, result)
}

/// Feed `input` in 64 KiB chunks (a pipe read) and expect success.
pub fn refragment(input: &[u8], config: RefragmentConfig) -> Run {
    let (run, r) = refragment_chunked(input, &[65536], config);
    r.expect("re-fragmenting succeeds");
    run
}

fn drain(r: &mut Refragmenter, run: &mut Run) {
    while let Some(o) = r.next_output() {
        match o {
            Output::Header(h) => {
                assert!(run.header.is_none(), "one header only");
                assert!(run.fragments.is_empty(), "header before fragments");
                run.bytes.extend_from_slice(h.bytes());
                run.header = Some(h);
            }
            Output::Fragment(f) => {
                for c in f.chunks() {
                    run.bytes.extend_from_slice(c);
                }
                run.fragments.push(f);
            }
            Output::Warning(w) => run.warnings.push(w),
            other => panic!("unexpected output {other:?}"),
        }
    }
}

/// A temp file holding `bytes`.
pub fn temp_file(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, bytes).expect("write temp file");
    p
}

/// (video frames, audio frames) decoded by ffprobe.
pub fn decoded_frames(path: &Path) -> (u64, u64) {
    let out = Command::new("ffprobe")
        .args([
            "-v",
            "error",
            "-count_frames",
            "-show_entries",
            "stream=codec_type,nb_read_frames",
        ])
        .args(["-of", "csv=p=0"])
        .arg(path)
        .output()
        .expect("ffprobe runs");
    assert!(
        out.status.success(),
        "ffprobe failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.stderr.is_empty(),
        "ffprobe complained: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (mut v, mut a) = (0, 0);
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let mut it = line.split(',');
        let kind = it.next().unwrap_or_default();
        let n: u64 = it.next().and_then(|n| n.trim().parse().ok()).unwrap_or(0);
        match kind {
            "video" => v += n,
            "audio" => a += n,
            _ => {}
        }
    }
    (v, a)
}

/// `mkvinfo` output for `path`, asserting it found no error.
pub fn mkvinfo_ok(path: &Path) -> String {
    let out = Command::new("mkvinfo")
        .arg(path)
        .output()
        .expect("mkvinfo runs");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "mkvinfo failed: {text} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        !text.contains("Error") && !text.contains("error"),
        "mkvinfo: {text}"
    );
    text
}

/// The KVS rules of docs/protocol.md §3/§4 every run must satisfy.
pub fn check_kvs_rules(run: &Run, config: &RefragmentConfig, expect_keyframes: bool) {
    let header = run.header.as_ref().expect("a header");
    assert!(!run.fragments.is_empty(), "at least one fragment");
    let mut prev: Option<&Fragment> = None;
    for (i, f) in run.fragments.iter().enumerate() {
        if expect_keyframes {
            assert!(
                f.starts_with_keyframe(),
                "fragment {i} at {} starts without a keyframe",
                f.timecode()
            );
        }
        assert!(
            f.duration() <= config.max_fragment_duration(),
            "fragment {i}: {:?}",
            f.duration()
        );
        assert!(
            f.len() <= config.max_fragment_bytes(),
            "fragment {i}: {} bytes",
            f.len()
        );
        assert!(f.first_frame_timecode() >= f.timecode());
        assert!(f.last_frame_timecode() >= f.first_frame_timecode());
        if let Some(p) = prev {
            // docs/protocol.md §4.6: strictly greater, equal gives 4004.
            assert!(
                f.timecode() > p.last_frame_timecode(),
                "fragment {i}: cluster {} not above previous last frame {}",
                f.timecode(),
                p.last_frame_timecode()
            );
            let interval = f.timecode() - p.timecode();
            assert!(
                interval >= config.min_fragment_interval().as_millis() as u64,
                "fragment {i}: {interval} ms after the previous"
            );
        }
        let n: usize = f.chunks().iter().map(Bytes::len).sum();
        assert_eq!(n, f.len());
        prev = Some(f);
    }
    // Every declared track in every fragment but possibly the last (where the input may end).
    let last = run.fragments.len() - 1;
    for (i, f) in run.fragments.iter().enumerate().take(last) {
        for t in header.tracks() {
            assert!(
                f.frame_count(t.number()) > 0,
                "fragment {i} lacks track {}",
                t.number()
            );
        }
    }
}

/// `mkvinfo -a` (every element, blocks included) for `path`.
pub fn mkvinfo_all(path: &Path) -> String {
    let out = Command::new("mkvinfo")
        .arg("-a")
        .arg(path)
        .output()
        .expect("mkvinfo runs");
    assert!(out.status.success());
    String::from_utf8_lossy(&out.stdout).into_owned()
}
