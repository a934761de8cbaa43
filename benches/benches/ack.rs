//! Throughput of the acknowledgement decoder over a realistic ack stream.
//!
//! The stream: 10 000 fragments, each acknowledged BUFFERING, RECEIVED and PERSISTED with
//! 47-digit fragment numbers and epoch-millisecond timecodes, interleaved as docs/protocol.md §2 shows
//! (`RECEIVED n, BUFFERING n+1, ..., PERSISTED n`), an IDLE every 50 fragments and an ERROR at
//! the end. Two read patterns: one ack per push (the service sends each ack as its own HTTP
//! chunk) and 16 KiB reads (a proxy coalescing acks).
//!
//! Run: `cargo bench -p kvs-benches --bench ack`; figures in docs/performance.md.

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use kvs_putmedia::ack::{Ack, AckDecoder, AckError, AckErrorId, FragmentNumber};

const FRAGMENTS: u64 = 10_000;

/// The ack stream, and where each ack's line ends.
fn ack_stream() -> (Vec<u8>, Vec<usize>) {
    let number = |i: u64| {
        FragmentNumber::new(format!("9134385233318143251152430641978829636672{:07}", i)).unwrap()
    };
    let timecode = |i: u64| 1_663_277_247_152 + i * 2_000;
    let mut acks = Vec::new();
    for i in 0..FRAGMENTS {
        acks.push(Ack::buffering(timecode(i), number(i)));
        if i > 0 {
            acks.push(Ack::received(timecode(i - 1), number(i - 1)));
        }
        if i > 1 {
            acks.push(Ack::persisted(timecode(i - 2), number(i - 2)));
        }
        if i % 50 == 49 {
            acks.push(Ack::idle());
        }
    }
    acks.push(Ack::error(
        AckError::new(AckErrorId::InvalidMkvData),
        Some(timecode(FRAGMENTS)),
        Some(number(FRAGMENTS)),
    ));
    let mut body = Vec::new();
    let mut ends = Vec::new();
    for ack in &acks {
        ack.write_json_line(&mut body);
        ends.push(body.len());
    }
    (body, ends)
}

fn decode_reads<'a>(reads: impl Iterator<Item = &'a [u8]>) -> usize {
    let mut decoder = AckDecoder::new();
    let mut n = 0;
    for read in reads {
        decoder.push(read);
        while let Some(item) = decoder.next_ack() {
            black_box(item.expect("valid ack"));
            n += 1;
        }
    }
    n
}

fn one_ack_per_push(body: &[u8], ends: &[usize]) -> usize {
    let mut start = 0;
    decode_reads(ends.iter().map(|&end| {
        let read = &body[start..end];
        start = end;
        read
    }))
}

fn bench_ack(c: &mut Criterion) {
    let (body, ends) = ack_stream();
    let acks = ends.len();
    assert_eq!(one_ack_per_push(&body, &ends), acks);
    assert_eq!(decode_reads(body.chunks(16 * 1024)), acks);

    let mut bytes = c.benchmark_group("ack_decoder_bytes");
    bytes.throughput(Throughput::Bytes(body.len() as u64));
    bytes.bench_function("one_ack_per_push", |b| {
        b.iter(|| one_ack_per_push(black_box(&body), &ends))
    });
    bytes.bench_function("16k_reads", |b| {
        b.iter(|| decode_reads(black_box(&body).chunks(16 * 1024)))
    });
    bytes.finish();

    let mut elements = c.benchmark_group("ack_decoder_acks");
    elements.throughput(Throughput::Elements(acks as u64));
    elements.bench_function("one_ack_per_push", |b| {
        b.iter(|| one_ack_per_push(black_box(&body), &ends))
    });
    elements.finish();
}

criterion_group!(benches, bench_ack);
criterion_main!(benches);
