//! The ledger without a network: focused tests of each transition, and a property test that
//! runs random operation sequences and checks the invariants after every step.

use std::collections::{BTreeMap, BTreeSet};

use proptest::prelude::*;

use super::*;

const NO_CAP: Caps = Caps {
    bytes: usize::MAX,
    duration: Duration::MAX,
};

fn fragment(tc: u64, size: usize) -> NewFragment {
    NewFragment {
        timecode: tc,
        data: vec![Bytes::from(vec![0u8; size])],
        start_ms: tc,
        end_ms: tc + 1000,
        last_frame_ms: tc + 960,
    }
}

fn eofr() -> Bytes {
    Bytes::from_static(b"EOFR")
}

/// A ledger holding fragments 0, 1000, 2000, ... of `size` bytes each.
fn ledger(completion: CompletionAck, n: u64, size: usize) -> Ledger {
    let mut l = Ledger::new(completion, NO_CAP);
    for i in 0..n {
        l.add(fragment(i * 1000, size)).unwrap();
    }
    l
}

/// Sends everything waiting on connection `conn`, in order; returns the timecodes.
fn send_all(l: &mut Ledger, conn: u32) -> Vec<u64> {
    let mut sent = Vec::new();
    let mut next = l.next_unsent(None);
    while let Some(tc) = next {
        if l.take_for_send(tc, conn, &eofr()).is_some() {
            l.on_last_byte_sent(tc, Instant::now());
            sent.push(tc);
        }
        next = l.next_unsent(Some(tc));
    }
    sent
}

/// The invariants: every count equals a recount of the entries.
fn check(l: &Ledger) {
    let not_done: Vec<_> = l.entries.values().filter(|e| !e.done).collect();
    assert_eq!(l.outstanding, not_done.len(), "outstanding");
    assert_eq!(
        l.unsent,
        l.entries.values().filter(|e| e.needs_send).count(),
        "unsent"
    );
    assert_eq!(
        l.held,
        not_done.iter().map(|e| e.size).sum::<usize>(),
        "held"
    );
    let with_data: BTreeSet<u64> = l
        .entries
        .iter()
        .filter(|(_, e)| e.data.is_some())
        .map(|(tc, _)| *tc)
        .collect();
    assert_eq!(l.retained, with_data, "retained");
    for (tc, e) in &l.entries {
        assert_eq!(
            e.data.is_some(),
            !e.done,
            "{tc}: bytes kept exactly while owed"
        );
        assert!(
            !(e.needs_send && e.done),
            "{tc}: a done fragment waits to be sent"
        );
        assert!(e.size <= l.largest_fragment);
    }
    assert!(
        l.entries.len() - l.outstanding <= COMPLETED_KEPT,
        "done entries are pruned"
    );
    assert!(l.counts.peak_held >= l.held);
    assert_eq!(l.progress(), l.counts.received + l.counts.skipped);
}

#[test]
fn add_queues_and_refuses_a_second_fragment_with_the_same_timecode() {
    let mut l = ledger(CompletionAck::Persisted, 2, 10);
    assert_eq!(l.add(fragment(1000, 99)), Err(1000));
    assert_eq!((l.outstanding(), l.unsent(), l.held()), (2, 2, 20));
    assert_eq!(l.counts().fragments, 2);
    assert_eq!(l.held_duration(), Duration::from_millis(2000));
    check(&l);
}

#[test]
fn take_for_send_appends_the_end_of_fragment_tag_and_counts_resends() {
    let mut l = ledger(CompletionAck::Persisted, 1, 10);
    let parts = l.take_for_send(0, 1, &eofr()).unwrap();
    assert_eq!(parts.last().unwrap(), &eofr());
    assert_eq!(l.unsent(), 0);
    assert_eq!(l.unreceived_on(1), 1);
    assert!(l.owes_unreceived(1));
    assert_eq!(l.requeue(1, Replay::NotReceived), Some(0));
    assert_eq!(l.replay_count(), 1);
    assert!(l.take_for_send(0, 2, &eofr()).is_some());
    assert_eq!(l.counts().resent, 1);
    check(&l);
}

#[test]
fn the_completion_ack_settles_a_fragment_and_a_late_ack_still_matches() {
    for (completion, settles_on) in [
        (CompletionAck::Received, AckEventType::Received),
        (CompletionAck::Persisted, AckEventType::Persisted),
    ] {
        let mut l = ledger(completion, 1, 10);
        send_all(&mut l, 1);
        let b = l
            .on_ack(0, &AckEventType::Buffering, Instant::now())
            .unwrap();
        assert!(!b.completed && b.latency.is_none());
        let r = l
            .on_ack(0, &AckEventType::Received, Instant::now())
            .unwrap();
        assert!(r.first && r.latency.is_some());
        assert_eq!(r.completed, settles_on == AckEventType::Received);
        let p = l
            .on_ack(0, &AckEventType::Persisted, Instant::now())
            .unwrap();
        assert_eq!(p.completed, settles_on == AckEventType::Persisted);
        assert_eq!(l.outstanding(), 0);
        assert_eq!(l.held(), 0);
        assert_eq!(l.counts().delivered, 1);
        // A duplicate ack counts nothing twice.
        let again = l
            .on_ack(0, &AckEventType::Received, Instant::now())
            .unwrap();
        assert!(!again.first && !again.completed);
        assert_eq!((l.counts().received, l.counts().persisted), (1, 1));
        assert!(
            l.on_ack(5, &AckEventType::Received, Instant::now())
                .is_none()
        );
        check(&l);
    }
}

#[test]
fn a_skipped_fragment_is_never_resent() {
    let mut l = ledger(CompletionAck::Persisted, 2, 10);
    send_all(&mut l, 1);
    assert!(l.skip(0));
    assert!(!l.skip(0), "skipped once");
    assert!(!l.skip(77), "not a fragment of the ledger");
    assert_eq!(l.requeue(1, Replay::NotPersisted), Some(1000));
    assert_eq!(send_all(&mut l, 2), vec![1000]);
    assert_eq!((l.counts().skipped, l.progress()), (1, 1));
    check(&l);
}

#[test]
fn a_reachable_end_delivers_what_was_received_and_resends_the_rest() {
    let mut l = ledger(CompletionAck::Persisted, 3, 10);
    send_all(&mut l, 1);
    l.on_ack(0, &AckEventType::Received, Instant::now());
    l.on_ack(1000, &AckEventType::Buffering, Instant::now());
    assert_eq!(l.requeue(1, Replay::NotReceived), Some(1000));
    assert_eq!(l.counts().delivered, 1);
    assert_eq!(send_all(&mut l, 2), vec![1000, 2000]);
    check(&l);
}

#[test]
fn a_failed_transport_resends_everything_not_persisted() {
    let mut l = ledger(CompletionAck::Persisted, 3, 10);
    send_all(&mut l, 1);
    l.on_ack(0, &AckEventType::Received, Instant::now());
    assert_eq!(l.requeue(1, Replay::NotPersisted), Some(0));
    assert_eq!(l.replay_count(), 3);
    assert_eq!(send_all(&mut l, 2), vec![0, 1000, 2000]);
    // On a stream that keeps no data RECEIVED is all there is: NotPersisted means not RECEIVED.
    let mut l = ledger(CompletionAck::Received, 2, 10);
    send_all(&mut l, 1);
    l.on_ack(0, &AckEventType::Received, Instant::now());
    assert_eq!(l.requeue(1, Replay::NotPersisted), Some(1000));
    check(&l);
}

#[test]
fn a_retryable_error_naming_a_received_fragment_makes_it_owed_again() {
    let mut l = ledger(CompletionAck::Persisted, 1, 10);
    send_all(&mut l, 1);
    l.on_ack(0, &AckEventType::Received, Instant::now());
    assert!(!l.owes_unreceived(1));
    l.on_retryable_error(0);
    assert!(l.owes_unreceived(1));
    assert_eq!(l.requeue(1, Replay::NotReceived), Some(0));
    check(&l);
}

#[test]
fn eviction_drops_the_oldest_whole_fragments_and_keeps_the_newest() {
    let caps = Caps {
        bytes: 25,
        duration: Duration::MAX,
    };
    let mut l = Ledger::new(CompletionAck::Persisted, caps);
    l.add(fragment(0, 10)).unwrap();
    send_all(&mut l, 1);
    l.on_ack(0, &AckEventType::Received, Instant::now());
    l.add(fragment(1000, 10)).unwrap();
    assert!(l.evict_oldest().is_empty());
    assert!(l.over(10));
    l.add(fragment(2000, 10)).unwrap();
    let dropped = l.evict_oldest();
    assert_eq!(
        dropped,
        vec![DroppedFragment {
            timecode: 0,
            size: 10,
            received: true
        }]
    );
    // One fragment over the cap on its own stays.
    l.add(fragment(3000, 100)).unwrap();
    let dropped: Vec<u64> = l.evict_oldest().iter().map(|d| d.timecode).collect();
    assert_eq!(dropped, vec![1000, 2000]);
    assert_eq!((l.outstanding(), l.held(), l.counts().dropped), (1, 100, 3));
    check(&l);
}

#[test]
fn a_fragment_in_flight_on_an_older_request_holds_back_the_newer_one() {
    let mut l = ledger(CompletionAck::Persisted, 2, 10);
    l.take_for_send(0, 1, &eofr());
    assert_eq!(l.in_flight_elsewhere(2), Some(0));
    assert_eq!(l.in_flight_elsewhere(1), None);
    l.on_ack(0, &AckEventType::Received, Instant::now());
    assert_eq!(l.in_flight_elsewhere(2), None);
}

#[test]
fn owed_since_is_the_last_byte_of_what_the_connection_still_owes() {
    let mut l = ledger(CompletionAck::Persisted, 2, 10);
    let t0 = Instant::now();
    assert_eq!(l.owed_since(1, t0), None);
    l.take_for_send(0, 1, &eofr());
    // Still being written: counts from now.
    let now = t0 + Duration::from_secs(5);
    assert_eq!(l.owed_since(1, now), Some(now));
    l.on_last_byte_sent(0, t0);
    assert_eq!(l.owed_since(1, now), Some(t0));
    l.on_ack(0, &AckEventType::Persisted, now);
    assert_eq!(l.owed_since(1, now), None);
}

#[test]
fn done_fragments_are_forgotten_beyond_the_kept_number() {
    // 100 ms fragments: the count, not the media window, is the bound.
    let n = COMPLETED_KEPT as u64 * 2;
    let mut l = Ledger::new(CompletionAck::Received, NO_CAP);
    for i in 0..n {
        let mut f = fragment(i * 100, 1);
        f.end_ms = f.start_ms + 100;
        l.add(f).unwrap();
    }
    send_all(&mut l, 1);
    for i in 0..n {
        l.on_ack(i * 100, &AckEventType::Received, Instant::now());
        check(&l);
    }
    assert_eq!(l.entries.len(), COMPLETED_KEPT);
    assert_eq!(l.counts().delivered, n);
}

#[test]
fn done_fragments_older_than_the_window_are_forgotten_and_late_acks_inside_it_still_count() {
    // 1 s fragments: 30 s of media behind the newest one are kept, not 64 fragments.
    let n = COMPLETED_KEPT as u64 * 2;
    let mut l = ledger(CompletionAck::Received, n, 1);
    send_all(&mut l, 1);
    for i in 0..n {
        l.on_ack(i * 1000, &AckEventType::Received, Instant::now());
        check(&l);
    }
    let newest_end = (n - 1) * 1000 + 1000;
    let kept: Vec<u64> = l.entries.keys().copied().collect();
    assert!(
        kept.len() >= COMPLETED_MIN && kept.len() < COMPLETED_KEPT,
        "{kept:?}"
    );
    assert!(
        kept.iter()
            .all(|tc| tc + 1000 + COMPLETED_WINDOW_MS >= newest_end),
        "{kept:?}"
    );
    // A late PERSISTED for a fragment inside the window is matched and counted.
    let late = *kept.first().unwrap();
    assert!(
        l.on_ack(late, &AckEventType::Persisted, Instant::now())
            .is_some()
    );
    assert_eq!(l.counts().persisted, 1);
    assert_eq!(l.counts().delivered, n);
}

#[test]
fn the_header_version_changes_only_with_the_header() {
    let mut l = Ledger::new(CompletionAck::Persisted, NO_CAP);
    assert!(l.header().is_none());
    l.set_header(&Bytes::from_static(b"a"));
    l.set_header(&Bytes::from_static(b"a"));
    assert_eq!(l.header_version(), 1);
    l.set_header(&Bytes::from_static(b"b"));
    assert_eq!(l.header_version(), 2);
    assert_eq!(l.header().unwrap(), &Bytes::from_static(b"b"));
}

/// One step of a random session.
#[derive(Debug, Clone)]
enum Op {
    /// The re-fragmenter cuts a fragment `gap` after the last one.
    Add {
        gap: u64,
        size: usize,
    },
    /// A fragment with a timecode the ledger may already have.
    AddAgain {
        pick: usize,
    },
    /// The driver sends up to `n` fragments on the current connection.
    Send {
        n: usize,
    },
    Ack {
        pick: usize,
        event: u8,
    },
    Skip {
        pick: usize,
    },
    RetryableError {
        pick: usize,
    },
    /// The current connection ends; the next one starts with nothing sent.
    End {
        failed: bool,
    },
    Evict,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => (1..3000u64, 1..400usize).prop_map(|(gap, size)| Op::Add { gap, size }),
        1 => any::<usize>().prop_map(|pick| Op::AddAgain { pick }),
        3 => (1..5usize).prop_map(|n| Op::Send { n }),
        5 => (any::<usize>(), 0..3u8).prop_map(|(pick, event)| Op::Ack { pick, event }),
        1 => any::<usize>().prop_map(|pick| Op::Skip { pick }),
        1 => any::<usize>().prop_map(|pick| Op::RetryableError { pick }),
        1 => any::<bool>().prop_map(|failed| Op::End { failed }),
        1 => Just(Op::Evict),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// After every step: the counts equal a recount of the entries; nothing acknowledged
    /// PERSISTED is sent again; nothing not yet acknowledged (nor skipped, nor dropped) is
    /// forgotten; each connection sends in timecode order.
    #[test]
    fn random_sessions_keep_the_invariants(
        ops in proptest::collection::vec(op(), 1..200),
        received_completes in any::<bool>(),
        cap in 200..3000usize,
    ) {
        let completion = if received_completes {
            CompletionAck::Received
        } else {
            CompletionAck::Persisted
        };
        let caps = Caps { bytes: cap, duration: Duration::from_secs(20) };
        let mut l = Ledger::new(completion, caps);
        let mut tcs: Vec<u64> = Vec::new();
        let mut next_tc = 0u64;
        let mut conn = 1u32;
        let mut last_sent: Option<u64> = None;
        // Fragments acknowledged PERSISTED (and not named by a retryable error since).
        let mut persisted = BTreeSet::new();
        // Fragments the ledger no longer owes, by what let them go.
        let mut acked = BTreeSet::new();
        let mut let_go = BTreeSet::new();
        let mut firsts = BTreeMap::<u8, u64>::new();
        let pick = |tcs: &[u64], i: usize| (!tcs.is_empty()).then(|| tcs[i % tcs.len()]);
        for op in ops {
            match op {
                Op::Add { gap, size } => {
                    let tc = next_tc;
                    next_tc += gap;
                    prop_assert!(l.add(fragment(tc, size)).is_ok());
                    tcs.push(tc);
                }
                Op::AddAgain { pick: i } => {
                    // A timecode the ledger still knows (done ones are forgotten after a while;
                    // the re-fragmenter never repeats one, this is the guard behind it).
                    if let Some(tc) = pick(&tcs, i).filter(|tc| l.entries.contains_key(tc)) {
                        let before = (l.outstanding(), l.unsent(), l.held(), l.counts());
                        prop_assert_eq!(l.add(fragment(tc, 5)), Err(tc));
                        prop_assert_eq!(before, (l.outstanding(), l.unsent(), l.held(), l.counts()));
                    }
                }
                Op::Send { n } => {
                    for _ in 0..n {
                        let Some(tc) = l.next_unsent(last_sent) else { break };
                        if l.take_for_send(tc, conn, &eofr()).is_some() {
                            prop_assert!(!persisted.contains(&tc), "{} PERSISTED, sent again", tc);
                            prop_assert!(last_sent.is_none_or(|l| tc > l), "timecode order");
                            last_sent = Some(tc);
                            l.on_last_byte_sent(tc, Instant::now());
                        }
                    }
                }
                Op::Ack { pick: i, event } => {
                    if let Some(tc) = pick(&tcs, i) {
                        let event = match event {
                            0 => AckEventType::Buffering,
                            1 => AckEventType::Received,
                            _ => AckEventType::Persisted,
                        };
                        let owed = l.owes(tc);
                        if let Some(a) = l.on_ack(tc, &event, Instant::now()) {
                            if a.first {
                                *firsts.entry(u8::from(event == AckEventType::Persisted)).or_default() += 1;
                            }
                            if a.completed {
                                prop_assert!(owed);
                                acked.insert(tc);
                            }
                        }
                        if event == AckEventType::Persisted {
                            persisted.insert(tc);
                        }
                        if event == AckEventType::Received {
                            acked.insert(tc);
                        }
                    }
                }
                Op::Skip { pick: i } => {
                    if let Some(tc) = pick(&tcs, i) {
                        let owed = l.owes(tc);
                        prop_assert_eq!(l.skip(tc), owed);
                        if owed {
                            let_go.insert(tc);
                        }
                    }
                }
                Op::RetryableError { pick: i } => {
                    if let Some(tc) = pick(&tcs, i) {
                        l.on_retryable_error(tc);
                        if l.owes(tc) {
                            persisted.remove(&tc);
                        }
                    }
                }
                Op::End { failed } => {
                    let replay = if failed { Replay::NotPersisted } else { Replay::NotReceived };
                    l.requeue(conn, replay);
                    conn += 1;
                    last_sent = None;
                }
                Op::Evict => {
                    for d in l.evict_oldest() {
                        let_go.insert(d.timecode);
                    }
                }
            }
            check(&l);
            prop_assert_eq!(l.counts().fragments, tcs.len() as u64);
            prop_assert_eq!(l.counts().skipped + l.counts().dropped, let_go.len() as u64);
            prop_assert_eq!(l.counts().received, firsts.get(&0).copied().unwrap_or(0));
            prop_assert_eq!(l.counts().persisted, firsts.get(&1).copied().unwrap_or(0));
            // Nothing unacknowledged is forgotten: never RECEIVED (nor PERSISTED), skipped or
            // dropped means still owed, with its bytes.
            for tc in &tcs {
                if !acked.contains(tc) && !persisted.contains(tc) && !let_go.contains(tc) {
                    prop_assert!(l.owes(*tc), "{} forgotten", tc);
                }
            }
        }
        // Whatever is owed is sent again, in timecode order, on a fresh connection.
        l.requeue(conn, Replay::NotPersisted);
        conn += 1;
        let mut prev = None;
        let mut next = l.next_unsent(None);
        while let Some(tc) = next {
            prop_assert!(prev.is_none_or(|p| tc > p));
            prop_assert!(l.take_for_send(tc, conn, &eofr()).is_some());
            prev = Some(tc);
            next = l.next_unsent(Some(tc));
        }
        check(&l);
    }
}
