//! Fuzzes the emulator's ISO BMFF reader (`kvs_emulator::playback::mp4`): on any bytes, no
//! panic; boxes found tile their parent exactly; a `tfdt` shift either fails cleanly or moves
//! every reported `tfdt` by exactly the shift and changes no other byte.

#![no_main]

use kvs_emulator::playback::mp4;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(boxes) = mp4::children(data, 0..data.len()) {
        let mut at = 0;
        for b in &boxes {
            assert_eq!(b.range.start, at);
            assert!(b.body.start >= b.range.start && b.body.end == b.range.end);
            at = b.range.end;
        }
        assert_eq!(at, data.len());
    }
    let _ = mp4::split_init(data);
    let _ = mp4::track_timescales(data);
    let before = mp4::tfdts(data);
    let mut shifted = data.to_vec();
    if mp4::shift_tfdt(&mut shifted, |_| Some(7)).is_ok()
        && let Ok(before) = before
    {
        let after = mp4::tfdts(&shifted).expect("a shifted segment still parses");
        assert_eq!(before.len(), after.len());
        for ((ia, ta), (ib, tb)) in before.iter().zip(&after) {
            assert_eq!(ia, ib);
            assert_eq!(ta.wrapping_add(7), *tb);
        }
        assert_eq!(shifted.len(), data.len());
    }
});
