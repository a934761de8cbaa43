//! The ack types pin the table of docs/protocol.md §2s (section 2): every error id with its code and the
//! official producer's reaction, fragment numbers as strings, and the wire form.

use kvs_putmedia::ack::{
    Ack, AckError, AckErrorId, AckEventType, ErrorAction, FragmentNumber, InvalidFragmentNumber,
    decode_all,
};

#[test]
fn error_table_matches_the_reference() {
    use ErrorAction::*;
    // (id, code, official producer on replay), copied from the table of docs/protocol.md §2.
    let table: &[(u32, &str, ErrorAction)] = &[
        (4000, "STREAM_READ_ERROR", Retry),
        (4001, "MAX_FRAGMENT_SIZE_REACHED", Skip),
        (4002, "MAX_FRAGMENT_DURATION_REACHED", Skip),
        (4003, "MAX_CONNECTION_DURATION_REACHED", Reconnect),
        (4004, "FRAGMENT_TIMECODE_LESSER_THAN_PREVIOUS", Skip),
        (4005, "MORE_THAN_ONE_TRACK_FOUND", Skip),
        (4006, "INVALID_MKV_DATA", Skip),
        (4007, "INVALID_PRODUCER_TIMESTAMP", Skip),
        (4008, "STREAM_NOT_ACTIVE", Stop),
        (4009, "FRAGMENT_METADATA_LIMIT_REACHED", Skip),
        (4010, "TRACK_NUMBER_MISMATCH", Skip),
        (4011, "FRAMES_MISSING_FOR_TRACK", Skip),
        (4012, "MORE_THAN_ALLOWED_TRACKS_FOUND", Skip),
        (4500, "KMS_KEY_ACCESS_DENIED", Stop),
        (4501, "KMS_KEY_DISABLED", Stop),
        (4502, "KMS_KEY_VALIDATION_ERROR", Stop),
        (4503, "KMS_KEY_UNAVAILABLE", Stop),
        (4504, "KMS_KEY_INVALID_USAGE", Stop),
        (4505, "KMS_KEY_INVALID_STATE", Stop),
        (4506, "KMS_KEY_NOT_FOUND", Stop),
        (4507, "STREAM_DELETED", Stop),
        (5000, "INTERNAL_ERROR", Retry),
        (5001, "ARCHIVAL_ERROR", Retry),
    ];
    assert_eq!(AckErrorId::KNOWN.len(), table.len());
    for (&(id, code, action), &known) in table.iter().zip(AckErrorId::KNOWN) {
        let parsed = AckErrorId::from_id(id);
        assert_eq!(parsed, known, "{id}");
        assert!(!matches!(parsed, AckErrorId::Unknown(_)), "{id}");
        assert_eq!(parsed.id(), id);
        assert_eq!(parsed.code(), code, "{id}");
        assert_eq!(parsed.action(), action, "{id}");
        assert_eq!(
            parsed.is_retryable(),
            matches!(action, Retry | Reconnect),
            "{id}"
        );
        assert_eq!(AckErrorId::from_code(code), Some(parsed));
    }
    assert_eq!(AckErrorId::KmsKeyAccessDenied.id(), 4500);
    assert_eq!(AckErrorId::StreamDeleted.id(), 4507);
    assert_eq!(
        AckErrorId::InvalidMkvData.to_string(),
        "INVALID_MKV_DATA (4006)"
    );
}

#[test]
fn unknown_error_ids_are_retryable_and_keep_their_number() {
    for id in [0, 3999, 4013, 4499, 4508, 5002, u32::MAX] {
        let parsed = AckErrorId::from_id(id);
        assert_eq!(parsed, AckErrorId::Unknown(id));
        assert_eq!(parsed.id(), id);
        assert_eq!(parsed.code(), "UNKNOWN");
        assert_eq!(parsed.action(), ErrorAction::Retry);
        assert!(parsed.is_retryable());
    }
    assert_eq!(AckErrorId::from_code("MIN_FRAGMENT_DURATION_REACHED"), None);
}

#[test]
fn fragment_number_is_validated_and_kept_as_a_string() {
    let big = "91343852333181432511524306419788296366724229586";
    let n: FragmentNumber = big.parse().unwrap();
    assert_eq!(n.as_str(), big);
    assert_eq!(n.to_string(), big);
    assert_eq!(format!("{n:?}"), format!("FragmentNumber({big})"));
    assert!(FragmentNumber::new("1".repeat(128)).is_ok());
    assert_eq!(
        FragmentNumber::new("1".repeat(129)),
        Err(InvalidFragmentNumber::TooLong { len: 129 })
    );
    assert_eq!(FragmentNumber::new(""), Err(InvalidFragmentNumber::Empty));
    assert_eq!(
        FragmentNumber::new("12-3"),
        Err(InvalidFragmentNumber::NotDecimal { position: 2 })
    );
    assert_eq!(
        FragmentNumber::new("+1"),
        Err(InvalidFragmentNumber::NotDecimal { position: 0 })
    );
    // Numeric order for 47-digit numbers that no u64 can hold.
    let a = FragmentNumber::new("9".repeat(46)).unwrap();
    let b = FragmentNumber::new(format!("1{}", "0".repeat(46))).unwrap();
    assert!(a < b);
}

#[test]
fn event_types_map_to_and_from_the_wire() {
    for (name, event) in [
        ("BUFFERING", AckEventType::Buffering),
        ("RECEIVED", AckEventType::Received),
        ("PERSISTED", AckEventType::Persisted),
        ("ERROR", AckEventType::Error),
        ("IDLE", AckEventType::Idle),
    ] {
        assert_eq!(AckEventType::from_wire(name), event);
        assert_eq!(event.as_str(), name);
    }
    // Case matters on the wire; anything else is kept.
    assert_eq!(
        AckEventType::from_wire("idle"),
        AckEventType::Unknown("idle".into())
    );
}

#[test]
fn wire_form_reproduces_the_reference_lines_byte_for_byte() {
    let body = std::fs::read(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("testdata/acks/reference_example.jsonl"),
    )
    .unwrap();
    let acks: Vec<Ack> = decode_all(&body).into_iter().map(Result::unwrap).collect();
    let rendered: String = acks.iter().map(Ack::to_json_line).collect();
    assert_eq!(rendered.as_bytes(), &body[..]);
}

#[test]
fn wire_form_escapes_strings() {
    let ack = Ack::error(
        AckError {
            id: AckErrorId::Unknown(4242),
            code: "A\"B\\C\u{1}".into(),
        },
        None,
        None,
    );
    let line = ack.to_json_line();
    assert_eq!(
        line,
        "{\"EventType\":\"ERROR\",\"ErrorCode\":\"A\\\"B\\\\C\\u0001\",\"ErrorId\":4242}\n"
    );
    assert_eq!(decode_all(line.as_bytes()), vec![Ok(ack)]);
}

#[test]
fn display_names_event_timecode_fragment_and_error() {
    let ack = Ack::error(
        AckError::new(AckErrorId::FragmentTimecodeLesserThanPrevious),
        Some(160),
        Some(FragmentNumber::new("42").unwrap()),
    );
    assert!(ack.is_error());
    assert_eq!(
        ack.to_string(),
        "ERROR timecode 160 fragment 42: FRAGMENT_TIMECODE_LESSER_THAN_PREVIOUS (4004): \
         cluster timecode not strictly greater than the previous fragment's last frame"
    );
    assert_eq!(Ack::idle().to_string(), "IDLE");
}
