//! Fuzzes `kvs_putmedia::ack::AckDecoder`: whatever the bytes and wherever the reads split
//! them, the decoder must not panic, must give the same items as one push, must keep its buffer
//! within the line cap after each drain, and must report strictly increasing offsets.
//!
//! Input layout: byte 0 picks the line cap (`byte * 8`, so 0 to 2040, covering the default
//! 1024), byte 1 the number of cut points (mod 16), then two bytes per cut point (little-endian,
//! taken modulo the body length), then the body.

#![no_main]

use kvs_putmedia::ack::{Ack, AckDecodeError, AckDecoder};
use libfuzzer_sys::fuzz_target;

type Item = Result<Ack, AckDecodeError>;

fn decode(body: &[u8], max_line: usize, cuts: &[usize]) -> Vec<Item> {
    let mut decoder = AckDecoder::with_max_line_length(max_line);
    let mut items = Vec::new();
    let mut last = 0;
    for &cut in cuts.iter().chain(&[body.len()]) {
        decoder.push(&body[last..cut]);
        last = cut;
        while let Some(item) = decoder.next_ack() {
            items.push(item);
        }
        assert!(
            decoder.buffered_len() <= max_line + 1,
            "{} bytes buffered after a drain with a cap of {max_line}",
            decoder.buffered_len()
        );
    }
    while let Some(item) = decoder.finish() {
        items.push(item);
    }
    assert_eq!(decoder.buffered_len(), 0);
    items
}

fn assert_same(expected: &[Item], got: &[Item], how: &str, body: &[u8]) {
    if expected == got {
        return;
    }
    let at = expected
        .iter()
        .zip(got)
        .position(|(a, b)| a != b)
        .unwrap_or(expected.len().min(got.len()));
    panic!(
        "{how} differs from one push at item {at} ({} vs {} items)\n one push: {:?}\n {how}: {:?}\n body: {}",
        expected.len(),
        got.len(),
        expected.get(at),
        got.get(at),
        hex(body),
    );
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fuzz_target!(|data: &[u8]| {
    let [cap, ncuts, rest @ ..] = data else {
        return;
    };
    let max_line = usize::from(*cap) * 8;
    let ncuts = usize::from(*ncuts % 16);
    if rest.len() < ncuts * 2 {
        return;
    }
    let (cut_bytes, body) = rest.split_at(ncuts * 2);
    let mut cuts: Vec<usize> = cut_bytes
        .chunks_exact(2)
        .map(|c| usize::from(u16::from_le_bytes([c[0], c[1]])) % (body.len() + 1))
        .collect();
    cuts.sort_unstable();

    let whole = decode(body, max_line, &[]);
    assert_same(
        &whole,
        &decode(body, max_line, &cuts),
        "fuzzer-chosen split",
        body,
    );
    if body.len() <= 4096 {
        let bytewise: Vec<usize> = (1..body.len()).collect();
        assert_same(
            &whole,
            &decode(body, max_line, &bytewise),
            "1-byte pushes",
            body,
        );
    }

    let lines = body.iter().filter(|&&b| b == b'\n').count() + 1;
    assert!(
        whole.len() <= lines,
        "{} items from {lines} lines",
        whole.len()
    );
    let mut last_offset = None;
    for item in &whole {
        if let Err(e) = item {
            assert!(e.offset() < body.len() as u64);
            assert!(
                last_offset < Some(e.offset()),
                "offsets not increasing: {whole:?}"
            );
            last_offset = Some(e.offset());
        }
        // Every decoded ack survives a round trip through its wire form.
        if let Ok(ack) = item {
            let line = ack.to_json_line();
            let mut decoder = AckDecoder::with_max_line_length(usize::MAX);
            decoder.push(line.as_bytes());
            assert_eq!(
                decoder.next_ack().as_ref(),
                Some(&Ok(ack.clone())),
                "round trip of {line}"
            );
        }
    }
});
