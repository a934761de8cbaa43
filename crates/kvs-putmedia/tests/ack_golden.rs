//! Golden ack sequences from docs/protocol.md §2 and scripted chunk boundaries, in the
//! style of tokio-util's `tests/framed_read.rs`.
//!
//! Each `testdata/acks/NAME.jsonl` is a response body; `NAME.expected` holds one line per item
//! the decoder must produce, written by hand from the table of docs/protocol.md §2s.

use std::path::PathBuf;

use kvs_putmedia::ack::{
    Ack, AckDecodeError, AckDecoder, AckErrorId, AckEventType, DEFAULT_MAX_LINE_LENGTH, ErrorAction,
};

type Item = Result<Ack, AckDecodeError>;

fn testdata(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("testdata/acks")
        .join(name)
}

fn describe(item: &Item) -> String {
    match item {
        Ok(ack) => {
            let event = match &ack.event {
                AckEventType::Unknown(name) => format!("{name}(unknown)"),
                known => known.to_string(),
            };
            let tc = ack
                .fragment_timecode
                .map_or_else(|| "-".to_owned(), |t| t.to_string());
            let fragment = ack
                .fragment_number
                .as_ref()
                .map_or_else(|| "-".to_owned(), |n| n.to_string());
            let mut out = format!("ack {event} tc={tc} fn={fragment}");
            if let Some(error) = &ack.error {
                out += &format!(
                    " error={} code={} known={} action={:?} retryable={}",
                    error.id.id(),
                    error.code,
                    error.id.code(),
                    error.id.action(),
                    error.id.is_retryable()
                );
            }
            out
        }
        Err(AckDecodeError::LineTooLong { limit, offset }) => {
            format!("err LineTooLong offset={offset} limit={limit}")
        }
        Err(AckDecodeError::InvalidJson { offset, .. }) => {
            format!("err InvalidJson offset={offset}")
        }
        Err(AckDecodeError::MissingField { offset, field, .. }) => {
            format!("err MissingField offset={offset} field={field}")
        }
        Err(AckDecodeError::InvalidField { offset, field, .. }) => {
            format!("err InvalidField offset={offset} field={field}")
        }
        Err(other) => format!("err {other:?}"),
    }
}

/// Pushes `chunks` in order, draining after each, then finishes.
fn decode_chunks<'a>(
    decoder: &mut AckDecoder,
    chunks: impl IntoIterator<Item = &'a [u8]>,
) -> Vec<Item> {
    let mut items = Vec::new();
    for chunk in chunks {
        decoder.push(chunk);
        while let Some(item) = decoder.next_ack() {
            items.push(item);
        }
        assert!(
            decoder.buffered_len() <= decoder.max_line_length() + 1,
            "buffer holds {} bytes after draining",
            decoder.buffered_len()
        );
    }
    while let Some(item) = decoder.finish() {
        items.push(item);
    }
    assert_eq!(decoder.buffered_len(), 0);
    items
}

fn decode_split(body: &[u8], cuts: &[usize]) -> Vec<Item> {
    let mut chunks = Vec::new();
    let mut last = 0;
    for &cut in cuts {
        chunks.push(&body[last..cut]);
        last = cut;
    }
    chunks.push(&body[last..]);
    decode_chunks(&mut AckDecoder::new(), chunks)
}

fn check_golden(name: &str) {
    let body = std::fs::read(testdata(&format!("{name}.jsonl"))).unwrap();
    let expected = std::fs::read_to_string(testdata(&format!("{name}.expected"))).unwrap();
    let expected: Vec<&str> = expected.lines().collect();

    let whole = decode_split(&body, &[]);
    let got: Vec<String> = whole.iter().map(describe).collect();
    assert_eq!(got, expected, "{name}: one push");

    // Every single cut point, and one byte at a time, give the same items.
    for cut in 0..=body.len() {
        assert_eq!(decode_split(&body, &[cut]), whole, "{name}: cut at {cut}");
    }
    let bytes: Vec<usize> = (1..body.len()).collect();
    assert_eq!(decode_split(&body, &bytes), whole, "{name}: 1-byte pushes");
}

#[test]
fn golden_reference_example_six_lines() {
    check_golden("reference_example");
}

#[test]
fn golden_interleaved_acks_keep_arrival_order_and_timecodes() {
    check_golden("interleaved");
    // The decoder reports acks in arrival order; matching is by timecode, so both fragments
    // that got BUFFERING must later be PERSISTED under the same timecode.
    let body = std::fs::read(testdata("interleaved.jsonl")).unwrap();
    let acks: Vec<Ack> = decode_split(&body, &[])
        .into_iter()
        .map(Result::unwrap)
        .collect();
    let persisted: Vec<u64> = acks
        .iter()
        .filter(|a| a.event == AckEventType::Persisted)
        .filter_map(|a| a.fragment_timecode)
        .collect();
    assert_eq!(persisted, [252200, 252467]);
}

#[test]
fn golden_error_forms() {
    check_golden("error_forms");
}

#[test]
fn golden_quirks_crlf_blank_unknown_invalid_overlong() {
    check_golden("quirks");
}

#[test]
fn golden_crlf_terminators_give_the_same_acks() {
    for name in ["reference_example", "interleaved", "error_forms"] {
        let body = std::fs::read(testdata(&format!("{name}.jsonl"))).unwrap();
        let crlf: Vec<u8> = String::from_utf8(body.clone())
            .unwrap()
            .replace('\n', "\r\n")
            .into_bytes();
        let lf: Vec<String> = decode_split(&body, &[]).iter().map(describe).collect();
        let got: Vec<String> = decode_split(&crlf, &[]).iter().map(describe).collect();
        assert_eq!(got, lf, "{name}");
    }
}

const BUFFERING: &[u8] = br#"{"EventType":"BUFFERING","FragmentTimecode":1663277247152,"FragmentNumber":"91343852333181432511524306419788296366724229586"}"#;

#[test]
fn scripted_one_ack_split_across_three_reads() {
    let mut decoder = AckDecoder::new();
    decoder.push(&BUFFERING[..10]);
    assert!(decoder.next_ack().is_none());
    decoder.push(&BUFFERING[10..]);
    assert!(decoder.next_ack().is_none());
    assert_eq!(decoder.buffered_len(), BUFFERING.len());
    decoder.push(b"\n");
    let ack = decoder.next_ack().unwrap().unwrap();
    assert_eq!(ack.event, AckEventType::Buffering);
    assert_eq!(ack.fragment_timecode, Some(1663277247152));
    assert_eq!(
        ack.fragment_number.unwrap().as_str(),
        "91343852333181432511524306419788296366724229586"
    );
    assert!(decoder.next_ack().is_none());
    assert_eq!(decoder.buffered_len(), 0);
}

#[test]
fn scripted_several_acks_in_one_read() {
    let mut decoder = AckDecoder::new();
    decoder.push(
        b"{\"EventType\":\"IDLE\"}\n\n{\"EventType\":\"IDLE\"}\r\n{\"EventType\":\"RECEIVED\",\"Fr",
    );
    assert_eq!(decoder.next_ack().unwrap().unwrap(), Ack::idle());
    assert_eq!(decoder.next_ack().unwrap().unwrap(), Ack::idle());
    assert!(decoder.next_ack().is_none());
    decoder.push(b"agmentTimecode\":7}\n");
    let ack = decoder.next_ack().unwrap().unwrap();
    assert_eq!(
        (ack.event, ack.fragment_timecode),
        (AckEventType::Received, Some(7))
    );
    assert!(decoder.next_ack().is_none());
}

#[test]
fn scripted_eof_mid_line_yields_the_last_line() {
    let mut decoder = AckDecoder::new();
    decoder.push(b"{\"EventType\":\"IDLE\"}\n{\"EventType\":\"IDLE\"}");
    assert_eq!(decoder.next_ack().unwrap().unwrap(), Ack::idle());
    assert!(decoder.next_ack().is_none());
    assert_eq!(decoder.finish().unwrap().unwrap(), Ack::idle());
    assert!(decoder.finish().is_none());
}

#[test]
fn scripted_eof_mid_json_is_invalid_json_at_the_line_offset() {
    let mut decoder = AckDecoder::new();
    decoder.push(b"{\"EventType\":\"IDLE\"}\n{\"EventType\":\"RECEI");
    assert!(decoder.next_ack().unwrap().is_ok());
    match decoder.finish() {
        Some(Err(AckDecodeError::InvalidJson { offset, line, .. })) => {
            assert_eq!(offset, 21);
            assert_eq!(line, "{\"EventType\":\"RECEI");
        }
        other => panic!("expected InvalidJson, got {other:?}"),
    }
    assert!(decoder.finish().is_none());
}

#[test]
fn scripted_finish_on_blank_tail_or_empty_stream_gives_nothing() {
    let mut decoder = AckDecoder::new();
    assert!(decoder.finish().is_none());
    decoder.push(b"\r\n  \r");
    assert!(decoder.next_ack().is_none());
    assert!(decoder.finish().is_none());
}

#[test]
fn scripted_decoder_is_reusable_after_finish() {
    let mut decoder = AckDecoder::new();
    decoder.push(b"{\"EventType\":\"IDLE\"}");
    assert!(decoder.finish().unwrap().is_ok());
    assert!(decoder.finish().is_none());
    decoder.push(b"garbage\n");
    let err = decoder.next_ack().unwrap().unwrap_err();
    // Offsets keep counting: the second stream continues after the 20 bytes of the first.
    assert_eq!(err.offset(), 20);
}

#[test]
fn line_of_exactly_the_cap_is_accepted_and_one_more_byte_is_not() {
    let cap = 64;
    let make = |len: usize| {
        let prefix = b"{\"EventType\":\"IDLE\",\"P\":\"";
        let mut line = prefix.to_vec();
        line.resize(len - 2, b'x');
        line.extend_from_slice(b"\"}");
        assert_eq!(line.len(), len);
        line
    };
    for terminator in [&b"\n"[..], b"\r\n"] {
        let mut body = make(cap);
        body.extend_from_slice(terminator);
        let mut next = make(cap + 1);
        next.extend_from_slice(terminator);
        body.extend_from_slice(&next);
        body.extend_from_slice(b"{\"EventType\":\"IDLE\"}\n");
        for chunk in [1, 7, 64, 65, 66, body.len()] {
            let mut decoder = AckDecoder::with_max_line_length(cap);
            let items = decode_chunks(&mut decoder, body.chunks(chunk));
            let second = (cap + terminator.len()) as u64;
            assert_eq!(
                items,
                vec![
                    Ok(Ack::idle()),
                    Err(AckDecodeError::LineTooLong {
                        limit: cap,
                        offset: second
                    }),
                    Ok(Ack::idle()),
                ],
                "chunk size {chunk}, terminator {terminator:?}"
            );
        }
    }
}

#[test]
fn overlong_line_streamed_in_small_reads_gives_one_error_and_bounded_memory() {
    let mut decoder = AckDecoder::new();
    decoder.push(b"{\"EventType\":\"IDLE\"}\n");
    assert!(decoder.next_ack().unwrap().is_ok());
    // 10 MiB without a newline, in 4 KiB reads: ten thousand times the cap.
    let junk = vec![b'a'; 4096];
    let mut errors = Vec::new();
    for _ in 0..2560 {
        decoder.push(&junk);
        while let Some(item) = decoder.next_ack() {
            errors.push(item.unwrap_err());
        }
        assert!(decoder.buffered_len() <= DEFAULT_MAX_LINE_LENGTH + 1);
    }
    decoder.push(b"tail of the long line\n{\"EventType\":\"RECEIVED\",\"FragmentTimecode\":3}\n");
    let ack = decoder.next_ack().unwrap().unwrap();
    assert_eq!(ack.fragment_timecode, Some(3));
    assert!(decoder.next_ack().is_none());
    assert_eq!(
        errors,
        vec![AckDecodeError::LineTooLong {
            limit: DEFAULT_MAX_LINE_LENGTH,
            offset: 21
        }]
    );
}

#[test]
fn overlong_line_in_one_big_read_between_valid_lines() {
    let mut body = b"{\"EventType\":\"IDLE\"}\n".to_vec();
    body.extend(std::iter::repeat_n(b'{', 5000));
    body.extend_from_slice(b"\n{\"EventType\":\"IDLE\"}\n");
    let mut decoder = AckDecoder::new();
    let items = decode_chunks(&mut decoder, [&body[..]]);
    assert_eq!(
        items,
        vec![
            Ok(Ack::idle()),
            Err(AckDecodeError::LineTooLong {
                limit: 1024,
                offset: 21
            }),
            Ok(Ack::idle()),
        ]
    );
}

#[test]
fn overlong_line_is_dropped_as_it_arrives_when_the_caller_drains() {
    // After a drain the next read's first line is checked on arrival, so an overlong line is
    // never copied into the buffer even when it comes in one read.
    let mut decoder = AckDecoder::with_max_line_length(16);
    let mut body = vec![b'x'; 100_000];
    body.extend_from_slice(b"\n{\"EventType\":\"IDLE\"}\n");
    decoder.push(&body);
    assert_eq!(decoder.buffered_len(), 21);
    assert_eq!(
        decoder.next_ack(),
        Some(Err(AckDecodeError::LineTooLong {
            limit: 16,
            offset: 0
        }))
    );
    assert_eq!(
        decoder.next_ack(),
        Some(Err(AckDecodeError::LineTooLong {
            limit: 16,
            offset: 100_001
        }))
    );
}

#[test]
fn overlong_line_at_eof_is_reported_once() {
    let mut decoder = AckDecoder::with_max_line_length(8);
    let items = decode_chunks(&mut decoder, [&b"123456789012"[..], b"34"]);
    assert_eq!(
        items,
        vec![Err(AckDecodeError::LineTooLong {
            limit: 8,
            offset: 0
        })]
    );
}

#[test]
fn invalid_json_does_not_stop_decoding_and_keeps_an_excerpt() {
    let mut body = vec![b'#'; 500];
    body.push(b'\n');
    body.extend_from_slice(b"{\"EventType\":\"IDLE\"}\n");
    let items = decode_chunks(&mut AckDecoder::new(), [&body[..]]);
    assert_eq!(items.len(), 2);
    match &items[0] {
        Err(AckDecodeError::InvalidJson {
            offset: 0,
            line,
            reason,
        }) => {
            assert_eq!(line.len(), 200, "the excerpt is capped");
            assert!(!reason.is_empty());
        }
        other => panic!("expected InvalidJson, got {other:?}"),
    }
    assert_eq!(items[1], Ok(Ack::idle()));
}

#[test]
fn invalid_utf8_in_a_string_is_an_error_item_not_a_panic() {
    let body = b"{\"EventType\":\"ID\xffLE\"}\n{\"EventType\":\"IDLE\"}\n";
    let items = decode_chunks(&mut AckDecoder::new(), [&body[..]]);
    assert!(matches!(
        items[0],
        Err(AckDecodeError::InvalidJson { offset: 0, .. })
    ));
    assert_eq!(items[1], Ok(Ack::idle()));
}

#[test]
fn error_ack_without_error_code_takes_the_known_code() {
    let items = decode_chunks(
        &mut AckDecoder::new(),
        [&b"{\"EventType\":\"ERROR\",\"ErrorId\":4001}\n"[..]],
    );
    let ack = items[0].as_ref().unwrap();
    let error = ack.error.as_ref().unwrap();
    assert_eq!(error.id, AckErrorId::MaxFragmentSizeReached);
    assert_eq!(error.code, "MAX_FRAGMENT_SIZE_REACHED");
    assert_eq!(error.id.action(), ErrorAction::Skip);
}

#[test]
fn error_display_names_the_offset() {
    let err = AckDecodeError::LineTooLong {
        limit: 1024,
        offset: 77,
    };
    assert!(err.to_string().contains("byte 77"), "{err}");
    assert!(err.to_string().contains("1024"), "{err}");
}
