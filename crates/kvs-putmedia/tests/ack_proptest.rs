//! Property tests for the ack decoder: any chunking of a byte stream gives the same items as one
//! push; valid acks survive a round trip through the wire form; hostile bytes never panic and
//! keep the buffer within the line cap.

use kvs_putmedia::ack::{
    Ack, AckDecodeError, AckDecoder, AckError, AckErrorId, AckEventType, FragmentNumber,
};
use proptest::prelude::*;

type Item = Result<Ack, AckDecodeError>;

/// Splits `body` at `cuts` (any values; reduced modulo the length and sorted), pushes the
/// pieces draining after each one, and checks the memory bound after every drain.
fn decode_with_cuts(body: &[u8], cuts: &[usize], max_line: usize) -> Vec<Item> {
    let mut cuts: Vec<usize> = cuts.iter().map(|c| c % (body.len() + 1)).collect();
    cuts.sort_unstable();
    let mut decoder = AckDecoder::with_max_line_length(max_line);
    let mut items = Vec::new();
    let mut last = 0;
    for cut in cuts.into_iter().chain([body.len()]) {
        decoder.push(&body[last..cut]);
        last = cut;
        while let Some(item) = decoder.next_ack() {
            items.push(item);
        }
        assert!(
            decoder.buffered_len() <= max_line.saturating_add(1),
            "{} bytes buffered with a cap of {max_line}",
            decoder.buffered_len()
        );
    }
    while let Some(item) = decoder.finish() {
        items.push(item);
    }
    assert_eq!(decoder.buffered_len(), 0);
    items
}

fn decode_bytewise(body: &[u8], max_line: usize) -> Vec<Item> {
    let cuts: Vec<usize> = (1..body.len()).collect();
    decode_with_cuts(body, &cuts, max_line)
}

fn fragment_number() -> impl Strategy<Value = FragmentNumber> {
    "[1-9][0-9]{0,127}".prop_map(|s| FragmentNumber::new(s).unwrap())
}

fn error_id() -> impl Strategy<Value = AckErrorId> {
    prop_oneof![
        proptest::sample::select(AckErrorId::KNOWN.to_vec()),
        any::<u32>().prop_map(AckErrorId::from_id),
    ]
}

fn ack() -> impl Strategy<Value = Ack> {
    let known = ["BUFFERING", "RECEIVED", "PERSISTED", "ERROR", "IDLE"];
    prop_oneof![
        (any::<u64>(), fragment_number()).prop_map(|(t, n)| Ack::buffering(t, n)),
        (any::<u64>(), fragment_number()).prop_map(|(t, n)| Ack::received(t, n)),
        (any::<u64>(), fragment_number()).prop_map(|(t, n)| Ack::persisted(t, n)),
        Just(Ack::idle()),
        (
            error_id(),
            proptest::option::of("\\PC{0,24}"),
            proptest::option::of(any::<u64>()),
            proptest::option::of(fragment_number()),
        )
            .prop_map(|(id, code, t, n)| {
                let error = match code {
                    Some(code) => AckError { id, code },
                    None => AckError::new(id),
                };
                Ack::error(error, t, n)
            }),
        (
            "\\PC{0,16}".prop_filter("not a known type", move |s| !known.contains(&s.as_str())),
            proptest::option::of(any::<u64>()),
            proptest::option::of(fragment_number()),
        )
            .prop_map(|(name, t, n)| Ack {
                event: AckEventType::Unknown(name),
                fragment_timecode: t,
                fragment_number: n,
                error: None,
            }),
    ]
}

/// How a line is framed on the wire.
#[derive(Debug, Clone, Copy)]
enum Framing {
    Lf,
    CrLf,
    BlankLineBefore,
    SpacesAround,
}

fn framing() -> impl Strategy<Value = Framing> {
    prop_oneof![
        Just(Framing::Lf),
        Just(Framing::CrLf),
        Just(Framing::BlankLineBefore),
        Just(Framing::SpacesAround),
    ]
}

fn render(acks: &[(Ack, Framing)]) -> Vec<u8> {
    let mut body = Vec::new();
    for (ack, framing) in acks {
        let line = ack.to_json_line();
        let json = line.trim_end_matches('\n');
        match framing {
            Framing::Lf => body.extend_from_slice(line.as_bytes()),
            Framing::CrLf => body.extend_from_slice(format!("{json}\r\n").as_bytes()),
            Framing::BlankLineBefore => body.extend_from_slice(format!("\r\n\n{line}").as_bytes()),
            Framing::SpacesAround => body.extend_from_slice(format!(" \t{json}  \n").as_bytes()),
        }
    }
    body
}

/// A line that is never an ack (`#` cannot start JSON), possibly longer than the cap.
fn garbage_line() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        proptest::collection::vec(
            any::<u8>().prop_filter("no newline", |b| *b != b'\n'),
            0..64
        ),
        (0usize..3000).prop_map(|n| vec![b'x'; n]),
    ]
    .prop_map(|mut v| {
        v.insert(0, b'#');
        v
    })
}

/// Bytes biased towards the characters that matter to the decoder.
fn hostile_bytes() -> impl Strategy<Value = Vec<u8>> {
    let alphabet: Vec<u8> = b"\n\r {}\":,-0123456789EventTypeFragmentNumberIDLE\\u\xff".to_vec();
    prop_oneof![
        proptest::collection::vec(any::<u8>(), 0..512),
        proptest::collection::vec(proptest::sample::select(alphabet), 0..512),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn any_split_of_valid_acks_gives_the_same_acks(
        acks in proptest::collection::vec((ack(), framing()), 0..12),
        cuts in proptest::collection::vec(any::<usize>(), 0..24),
    ) {
        let body = render(&acks);
        let expected: Vec<Item> = acks.iter().map(|(a, _)| Ok(a.clone())).collect();
        // Validly generated lines all fit the default cap.
        prop_assert_eq!(&decode_with_cuts(&body, &[], 1024), &expected);
        prop_assert_eq!(&decode_with_cuts(&body, &cuts, 1024), &expected);
        prop_assert_eq!(&decode_bytewise(&body, 1024), &expected);
    }

    #[test]
    fn last_ack_without_newline_is_still_decoded(ack in ack(), cut in any::<usize>()) {
        let line = ack.to_json_line();
        let body = line.trim_end_matches('\n').as_bytes();
        prop_assert_eq!(decode_with_cuts(body, &[cut], 1024), vec![Ok(ack)]);
    }

    #[test]
    fn garbage_lines_do_not_hide_valid_acks(
        lines in proptest::collection::vec(
            prop_oneof![ack().prop_map(Ok), garbage_line().prop_map(Err)], 0..10),
        cuts in proptest::collection::vec(any::<usize>(), 0..24),
    ) {
        let mut body = Vec::new();
        let mut want_acks = Vec::new();
        let mut want_errors = Vec::new();
        for line in &lines {
            let offset = body.len() as u64;
            match line {
                Ok(ack) => {
                    body.extend_from_slice(ack.to_json_line().as_bytes());
                    want_acks.push(ack.clone());
                }
                Err(garbage) => {
                    body.extend_from_slice(garbage);
                    body.push(b'\n');
                    want_errors.push((offset, garbage.len() > 1024));
                }
            }
        }
        let items = decode_with_cuts(&body, &cuts, 1024);
        let acks: Vec<Ack> = items.iter().filter_map(|i| i.as_ref().ok().cloned()).collect();
        let errors: Vec<(u64, bool)> = items
            .iter()
            .filter_map(|i| i.as_ref().err())
            .map(|e| (e.offset(), matches!(e, AckDecodeError::LineTooLong { .. })))
            .collect();
        prop_assert_eq!(acks, want_acks);
        prop_assert_eq!(errors, want_errors);
    }

    #[test]
    fn hostile_bytes_never_panic_and_any_split_agrees(
        body in hostile_bytes(),
        cuts in proptest::collection::vec(any::<usize>(), 0..16),
        max_line in 0usize..80,
    ) {
        let whole = decode_with_cuts(&body, &[], max_line);
        prop_assert_eq!(&decode_with_cuts(&body, &cuts, max_line), &whole);
        prop_assert_eq!(&decode_bytewise(&body, max_line), &whole);
        // At most one item per line, and offsets strictly increase.
        let lines = body.iter().filter(|&&b| b == b'\n').count() + 1;
        prop_assert!(whole.len() <= lines);
        let offsets: Vec<u64> = whole.iter().filter_map(|i| i.as_ref().err()).map(|e| e.offset()).collect();
        prop_assert!(offsets.windows(2).all(|w| w[0] < w[1]), "{:?}", offsets);
        prop_assert!(offsets.iter().all(|&o| o < body.len() as u64));
    }

    #[test]
    fn fragment_number_order_is_numeric(a in 0u128.., b in 0u128..) {
        let fa = FragmentNumber::new(a.to_string()).unwrap();
        let fb = FragmentNumber::new(b.to_string()).unwrap();
        prop_assert_eq!(fa.cmp(&fb), a.cmp(&b));
    }
}
