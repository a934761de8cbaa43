//! Throughput of the MKV re-fragmenter over typical media.
//!
//! The media: 30 s of 640x480 30 fps H.264 at about 6 Mbit/s plus AAC, muxed by ffmpeg to a
//! pipe with the muxer's pipe defaults, as the Node sample runs it (clusters of 1 s or 32 KiB,
//! not keyframe aligned, CRC-32 elements; ffmpeg-source itself asks for 20 ms clusters and no
//! CRC-32), generated once with lavfi into the bench's temp dir (about 23 MB). Read
//! patterns: 64 KiB chunks (a pipe read) and 4 KiB chunks (small reads, more boundary work).
//! Every fragment is drained and its byte count summed, so the zero-copy output is exercised.
//!
//! Run: `cargo bench -p kvs-benches --bench refragment`; figures in docs/performance.md.

use std::hint::black_box;
use std::path::PathBuf;
use std::process::{Command, Stdio};

use bytes::Bytes;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use kvs_putmedia::mkv::{Output, RefragmentConfig, Refragmenter};

fn media() -> Bytes {
    let path = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("refragment-bench-30s.mkv");
    if !path.exists() {
        let tmp = path.with_extension("partial");
        let out = Command::new("ffmpeg")
            .args(["-nostdin", "-hide_banner", "-loglevel", "error", "-y"])
            .args(["-f", "lavfi", "-i", "testsrc2=size=640x480:rate=30"])
            .args(["-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000"])
            .args([
                "-t",
                "30",
                "-c:v",
                "libx264",
                "-preset",
                "ultrafast",
                "-b:v",
                "6M",
            ])
            .args(["-g", "60", "-c:a", "aac", "-f", "matroska"])
            .arg(&tmp)
            .stdin(Stdio::null())
            .output()
            .expect("ffmpeg is installed");
        assert!(
            out.status.success(),
            "ffmpeg: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        std::fs::rename(&tmp, &path).expect("rename");
    }
    Bytes::from(std::fs::read(&path).expect("read bench media"))
}

/// Re-fragments the whole input; returns (fragments, fragment bytes).
fn run(chunks: &[Bytes]) -> (usize, usize) {
    let mut r = Refragmenter::new(RefragmentConfig::default());
    let mut total = (0, 0);
    let mut drain = |r: &mut Refragmenter| {
        while let Some(o) = r.next_output() {
            if let Output::Fragment(f) = o {
                total.0 += 1;
                total.1 += black_box(f.chunks()).iter().map(Bytes::len).sum::<usize>();
            }
        }
    };
    for c in chunks {
        r.push(c.clone()).expect("valid media");
        drain(&mut r);
    }
    r.finish().expect("valid media");
    drain(&mut r);
    total
}

fn bench(c: &mut Criterion) {
    let media = media();
    let mut g = c.benchmark_group("refragment");
    g.throughput(Throughput::Bytes(media.len() as u64));
    g.sample_size(20);
    for chunk in [64 * 1024, 4 * 1024] {
        let chunks: Vec<Bytes> = (0..media.len())
            .step_by(chunk)
            .map(|i| media.slice(i..(i + chunk).min(media.len())))
            .collect();
        // A re-fragmenter that dropped media would look faster: check the output first. 30 s
        // with a 2 s GOP and the 2 s default target: 15 fragments holding nearly all the input.
        let (fragments, bytes) = run(&chunks);
        assert_eq!(fragments, 15);
        assert!(bytes >= media.len() * 9 / 10, "{bytes} of {}", media.len());
        g.bench_function(
            format!("ffmpeg_30s_640x480_{}KiB_reads", chunk / 1024),
            |b| b.iter(|| run(black_box(&chunks))),
        );
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
