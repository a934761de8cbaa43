//! Property tests: any chunking of the input gives byte-identical output (the rule for
//! every parser), and arbitrary or mutated input never panics.

#[path = "common/mkv_media.rs"]
mod mkv_media;
#[path = "common/mkv_synth.rs"]
mod mkv_synth;

use std::sync::OnceLock;

use kvs_putmedia::mkv::RefragmentConfig;
use mkv_media::*;
use mkv_synth::*;
use proptest::prelude::*;

fn real_media() -> &'static [u8] {
    static MEDIA: OnceLock<Vec<u8>> = OnceLock::new();
    MEDIA.get_or_init(|| node_sample(3))
}

fn synthetic() -> &'static [u8] {
    static MEDIA: OnceLock<Vec<u8>> = OnceLock::new();
    MEDIA.get_or_init(|| {
        let mut frames = av_frames(4500, 12);
        // Some held-back audio, as ffmpeg writes it.
        for i in (3..frames.len()).step_by(17) {
            frames.swap(i - 1, i);
        }
        av_stream(&frames, 6)
    })
}

/// Output and result for one chunking; errors compared as values.
fn outcome(input: &[u8], sizes: &[usize]) -> (Vec<u8>, usize, Result<(), String>) {
    let (run, r) = refragment_chunked(input, sizes, RefragmentConfig::default());
    (run.bytes, run.warnings.len(), r.map_err(|e| e.to_string()))
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn any_chunking_of_real_media_gives_identical_output(sizes in prop::collection::vec(1usize..5000, 1..20)) {
        let whole = outcome(real_media(), &[usize::MAX]);
        prop_assert!(whole.2.is_ok());
        prop_assert!(outcome(real_media(), &sizes) == whole);
    }

    #[test]
    fn any_chunking_of_synthetic_media_gives_identical_output(sizes in prop::collection::vec(1usize..300, 1..20)) {
        let whole = outcome(synthetic(), &[usize::MAX]);
        prop_assert!(whole.2.is_ok());
        prop_assert!(outcome(synthetic(), &sizes) == whole);
    }

    #[test]
    fn mutated_media_never_panics_and_ignores_chunking(
        flips in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8),
        sizes in prop::collection::vec(1usize..700, 1..10),
    ) {
        let mut input = synthetic().to_vec();
        for (i, b) in flips {
            let at = i.index(input.len());
            input[at] = b;
        }
        prop_assert!(outcome(&input, &sizes) == outcome(&input, &[usize::MAX]));
    }

    #[test]
    fn arbitrary_bytes_never_panic(tail in prop::collection::vec(any::<u8>(), 0..2000), sizes in prop::collection::vec(1usize..64, 1..5)) {
        // After a valid header, so the fuzzing reaches the cluster and block parsers.
        let mut input = ebml_header("matroska");
        input.extend(segment_start());
        input.extend(tracks(&[(1, 1, "V_MPEG4/ISO/AVC"), (2, 2, "A_AAC")]));
        input.extend(cluster_start_unknown(0));
        input.extend(tail);
        prop_assert!(outcome(&input, &sizes) == outcome(&input, &[usize::MAX]));
    }
}
