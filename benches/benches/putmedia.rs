//! PutMedia sink throughput and client CPU, next to a plain hyper chunked POST of the same bytes
//! to the same emulator endpoint (the floor: what any HTTP client must spend), and the same bytes
//! through `kvs_pipeline::Pipeline` (what the binaries run: the sink plus progress, the ack
//! reader and the outcome).
//!
//! A synthetic, pre-encoded MKV (32 MiB, 1 s keyframe-aligned clusters of ~256 KB, absolute
//! timecodes an hour in the past so nothing is "in the future") is streamed with no pacing into
//! a fresh kvs-emulator per iteration (persist delay 1 ms, ingest rate limit off). Both paths end
//! when the emulator ends the response after the last PERSISTED ack.
//!
//! The client runs on a current-thread runtime on the bench thread and the emulator on its own
//! runtime threads, so `getrusage(RUSAGE_THREAD)` around each run is the client's CPU alone. The
//! CPU per GB of both paths is printed at the end.
//!
//! Run: `cargo bench -p kvs-benches --bench putmedia`; figures in docs/performance.md.

use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use aws_credential_types::Credentials;
use bytes::{BufMut, Bytes, BytesMut};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use futures::SinkExt;
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Frame;
use kvs_emulator::Emulator;
use kvs_pipeline::{ByteStream, Pipeline, Timing};
use kvs_putmedia::mkv::{RefragmentConfig, TimecodeMode};
use kvs_putmedia::{CompletionAck, PutMediaClient, PutMediaClientBuilder};

const MIB: usize = 1 << 20;
const CHUNK: usize = 64 * 1024;

static CPU: Mutex<Vec<(&'static str, f64, u64)>> = Mutex::new(Vec::new());

/// CPU time (user + system) of the calling thread.
#[allow(unsafe_code)]
fn thread_cpu() -> Duration {
    // SAFETY: an all-zero rusage is valid, and getrusage only writes the struct we pass.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    let rc = unsafe { libc::getrusage(libc::RUSAGE_THREAD, &mut ru) };
    assert_eq!(rc, 0);
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

fn put_id(out: &mut BytesMut, id: u32) {
    let b = id.to_be_bytes();
    let skip = b.iter().take_while(|&&x| x == 0).count();
    out.put_slice(&b[skip..]);
}

fn el(out: &mut BytesMut, id: u32, data: &[u8]) {
    put_id(out, id);
    out.put_u8(0x01);
    out.put_slice(&(data.len() as u64).to_be_bytes()[1..]);
    out.put_slice(data);
}

fn uint(out: &mut BytesMut, id: u32, v: u64) {
    el(out, id, &v.to_be_bytes());
}

/// A KVS-shaped MKV: one H.264-labelled track, 25 fps, a keyframe and a Cluster every second,
/// `frame_bytes` per frame, `total` bytes in all. `origin_ms` is the first Cluster timecode.
fn mkv(total: usize, frame_bytes: usize, origin_ms: u64) -> Bytes {
    let mut out = BytesMut::with_capacity(total + MIB);
    let mut ebml = BytesMut::new();
    uint(&mut ebml, 0x4286, 1);
    uint(&mut ebml, 0x42F7, 1);
    uint(&mut ebml, 0x42F2, 4);
    uint(&mut ebml, 0x42F3, 8);
    el(&mut ebml, 0x4282, b"matroska");
    uint(&mut ebml, 0x4287, 4);
    uint(&mut ebml, 0x4285, 2);
    el(&mut out, 0x1A45DFA3, &ebml);
    put_id(&mut out, 0x18538067);
    out.put_slice(&[0x01, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF]);
    let mut info = BytesMut::new();
    uint(&mut info, 0x2AD7B1, 1_000_000);
    el(&mut info, 0x4D80, b"bench");
    el(&mut info, 0x5741, b"bench");
    el(&mut out, 0x1549A966, &info);
    let mut entry = BytesMut::new();
    uint(&mut entry, 0xD7, 1);
    uint(&mut entry, 0x73C5, 1);
    uint(&mut entry, 0x83, 1);
    el(&mut entry, 0x86, b"V_MPEG4/ISO/AVC");
    el(&mut entry, 0x63A2, &[1, 0x42, 0xC0, 0x1E, 0xFF, 0xE0, 0x00]);
    let mut tracks = BytesMut::new();
    el(&mut tracks, 0xAE, &entry);
    el(&mut out, 0x1654AE6B, &tracks);
    let payload = vec![0u8; frame_bytes];
    let mut second = 0u64;
    while out.len() < total {
        let tc = origin_ms + second * 1000;
        let mut cluster = BytesMut::new();
        uint(&mut cluster, 0xE7, tc);
        for i in 0..25u8 {
            let mut block = BytesMut::new();
            block.put_u8(0x81);
            block.put_i16(i16::from(i) * 40);
            block.put_u8(if i == 0 { 0x80 } else { 0 });
            block.put_slice(&payload);
            el(&mut cluster, 0xA3, &block);
        }
        el(&mut out, 0x1F43B675, &cluster);
        second += 1;
    }
    out.freeze()
}

struct Env {
    emu_rt: tokio::runtime::Runtime,
    rt: tokio::runtime::Runtime,
}

impl Env {
    fn emulator(&self) -> Emulator {
        self.emu_rt.block_on(async {
            let emu = Emulator::builder()
                .with_persist_delay(Duration::from_millis(1))
                .with_ingest_rate_limit(1 << 40)
                .start()
                .await
                .unwrap();
            emu.create_stream("bench", 24).await.unwrap();
            emu
        })
    }
}

fn client(emu: &Emulator, origin_ms: u64) -> PutMediaClientBuilder {
    let c = emu.credentials();
    PutMediaClient::builder()
        .with_stream_name("bench")
        .with_region(emu.region())
        .with_credentials(Credentials::new(
            c.access_key_id,
            c.secret_access_key,
            None,
            None,
            "bench",
        ))
        .with_endpoint_url(emu.url())
        .with_allow_http(true)
        // As measured in docs/performance.md: no DescribeStream call per session.
        .with_completion_ack(CompletionAck::Persisted)
        .with_timecode_mode(TimecodeMode::Absolute {
            origin_epoch_ms: origin_ms,
        })
        .with_refragment_config(
            RefragmentConfig::builder()
                .with_target_fragment_duration(Duration::from_secs(1))
                .build()
                .unwrap(),
        )
}

async fn run_sink(emu: &Emulator, data: &Bytes, origin_ms: u64) {
    let client = client(emu, origin_ms).build().unwrap();
    let (mut sink, _acks) = client.start().await.unwrap();
    for i in (0..data.len()).step_by(CHUNK) {
        sink.send(data.slice(i..(i + CHUNK).min(data.len())))
            .await
            .unwrap();
    }
    let summary = sink.close().await.unwrap();
    // A run that delivered less would look cheaper: every fragment must be delivered, once.
    assert!(summary.fragments > 0);
    assert_eq!(summary.fragments_delivered, summary.fragments);
    assert_eq!(summary.fragments_sent, summary.fragments, "no resend");
}

/// The same bytes through the pipeline the binaries use: a `ByteStream` source, the timecodes
/// chosen by `Timing` (anchored at the same origin), the session opened by the pipeline.
async fn run_pipeline(emu: &Emulator, data: &Bytes, origin_ms: u64) {
    let builder = client(emu, origin_ms);
    let chunks = (0..data.len())
        .step_by(CHUNK)
        .map(|i| Ok::<_, std::io::Error>(data.slice(i..(i + CHUNK).min(data.len()))));
    let origin = UNIX_EPOCH + Duration::from_millis(origin_ms);
    let outcome = Pipeline::new(ByteStream::new(futures::stream::iter(chunks)))
        .with_timing(Timing::Anchored(origin))
        .run(|mode| async move { builder.with_timecode_mode(mode).build()?.start().await })
        .await;
    outcome.result.unwrap();
    let summary = outcome.summary;
    assert!(summary.fragments > 0);
    assert_eq!(summary.fragments_delivered, summary.fragments);
    assert_eq!(summary.fragments_sent, summary.fragments, "no resend");
}

/// The floor: the same bytes in the same 64 KiB chunks as one signed chunked POST through a
/// bare hyper 1 connection; reads the ack stream to its end without decoding it.
async fn run_plain(emu: &Emulator, data: &Bytes, clusters: usize) {
    let c = emu.credentials();
    let creds = Credentials::new(c.access_key_id, c.secret_access_key, None, None, "bench");
    let addr = emu.addr();
    let now = SystemTime::now();
    let ms = now.duration_since(UNIX_EPOCH).unwrap().as_millis();
    let mut req = http::Request::post(format!("http://{addr}/putMedia"))
        .header("host", addr.to_string())
        .header("x-amzn-stream-name", "bench")
        .header("x-amzn-fragment-timecode-type", "ABSOLUTE")
        .header(
            "x-amzn-producer-start-timestamp",
            format!("{}.{:03}", ms / 1000, ms % 1000),
        )
        .header("x-amzn-fragment-acknowledgment-required", "1")
        .body(())
        .unwrap();
    {
        use aws_sigv4::http_request::{SignableBody, SignableRequest, SigningSettings, sign};
        let identity = creds.into();
        let params = aws_sigv4::sign::v4::SigningParams::builder()
            .identity(&identity)
            .region(emu.region())
            .name("kinesisvideo")
            .time(now)
            .settings(SigningSettings::default())
            .build()
            .unwrap()
            .into();
        let headers: Vec<(String, String)> = req
            .headers()
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_str().unwrap().to_owned()))
            .collect();
        let signable = SignableRequest::new(
            "POST",
            req.uri().to_string(),
            headers.iter().map(|(k, v)| (k.as_str(), v.as_str())),
            SignableBody::Bytes(&[]),
        )
        .unwrap();
        let (instructions, _) = sign(signable, &params).unwrap().into_parts();
        instructions.apply_to_request_http1x(&mut req);
    }
    let chunks: Vec<Result<Frame<Bytes>, std::convert::Infallible>> = (0..data.len())
        .step_by(CHUNK)
        .map(|i| Ok(Frame::data(data.slice(i..(i + CHUNK).min(data.len())))))
        .collect();
    let body = StreamBody::new(futures::stream::iter(chunks));
    let (parts, ()) = req.into_parts();
    let req = http::Request::from_parts(parts, body);
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (mut send, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tcp))
        .await
        .unwrap();
    tokio::spawn(conn);
    let resp = send.send_request(req).await.unwrap();
    assert_eq!(resp.status(), 200);
    let mut body = resp.into_body();
    let mut acks = Vec::new();
    while let Some(frame) = body.frame().await {
        if let Ok(d) = frame.unwrap().into_data() {
            acks.extend_from_slice(&d);
        }
    }
    // The baseline must have delivered the same media: every Cluster PERSISTED, no ERROR (an
    // ERROR ends the response early, which would make the floor look cheaper).
    let acks = String::from_utf8_lossy(&acks);
    assert!(!acks.contains("\"ERROR\""), "{acks}");
    assert_eq!(acks.matches("\"PERSISTED\"").count(), clusters);
}

fn bench(c: &mut Criterion) {
    let env = Env {
        emu_rt: tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap(),
        rt: tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap(),
    };
    let origin_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
        - 3_600_000;
    let data = mkv(32 * MIB, 10_000, origin_ms);
    let clusters = data
        .windows(4)
        .filter(|w| *w == [0x1F, 0x43, 0xB6, 0x75])
        .count();
    let mut g = c.benchmark_group("putmedia");
    g.sample_size(10);
    g.measurement_time(Duration::from_secs(20));
    g.throughput(Throughput::Bytes(data.len() as u64));
    for name in ["plain_hyper_post", "sink", "pipeline"] {
        g.bench_function(name, |b| {
            b.iter_custom(|iters| {
                let mut wall = Duration::ZERO;
                for _ in 0..iters {
                    let emu = env.emulator();
                    let (t0, c0) = (Instant::now(), thread_cpu());
                    match name {
                        "sink" => env.rt.block_on(run_sink(&emu, &data, origin_ms)),
                        "pipeline" => env.rt.block_on(run_pipeline(&emu, &data, origin_ms)),
                        _ => env.rt.block_on(run_plain(&emu, &data, clusters)),
                    }
                    wall += t0.elapsed();
                    let cpu = (thread_cpu() - c0).as_secs_f64();
                    CPU.lock().unwrap().push((name, cpu, data.len() as u64));
                    env.emu_rt.block_on(emu.shutdown());
                }
                wall
            });
        });
    }
    g.finish();
    let runs = CPU.lock().unwrap();
    for name in ["plain_hyper_post", "sink", "pipeline"] {
        let (cpu, bytes) = runs
            .iter()
            .filter(|r| r.0 == name)
            .fold((0.0, 0u64), |a, r| (a.0 + r.1, a.1 + r.2));
        let gb = bytes as f64 / 1e9;
        eprintln!(
            "putmedia/{name}: client CPU {:.3} s per GB over {:.2} GB",
            cpu / gb,
            gb
        );
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
