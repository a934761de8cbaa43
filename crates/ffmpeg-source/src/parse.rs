//! `FromStr` and `Display` for the policy enums, so a command line parses them directly (`clap`
//! picks `FromStr` up through `value_parser!`). The text forms are the lower-case names ffmpeg
//! and x264 use where they have one, and round-trip: `p.to_string().parse() == Ok(p)`.

use std::fmt;
use std::str::FromStr;

use crate::profile::{AudioChannels, Mode, Pacing, X264Preset, X264Tune};

/// A name that is not one of the accepted values.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{value}` is not a valid {what}; expected one of: {}", expected.join(", "))]
#[non_exhaustive]
pub struct ParseEnumError {
    /// What was being parsed, e.g. `x264 preset`.
    pub what: &'static str,
    /// The text given.
    pub value: String,
    /// The accepted values.
    pub expected: Vec<&'static str>,
}

/// Enums whose every value has one text form.
trait Named: Copy + 'static {
    const WHAT: &'static str;
    const ALL: &'static [Self];
    fn name(self) -> &'static str;
}

fn parse_named<T: Named>(s: &str) -> Result<T, ParseEnumError> {
    let norm = s.trim().to_ascii_lowercase().replace('_', "-");
    T::ALL
        .iter()
        .copied()
        .find(|v| v.name() == norm)
        .ok_or_else(|| ParseEnumError {
            what: T::WHAT,
            value: s.to_owned(),
            expected: T::ALL.iter().map(|v| v.name()).collect(),
        })
}

macro_rules! text_form {
    ($($t:ty),*) => {$(
        impl fmt::Display for $t {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.name())
            }
        }

        impl FromStr for $t {
            type Err = ParseEnumError;

            fn from_str(s: &str) -> Result<Self, Self::Err> {
                parse_named(s)
            }
        }
    )*};
}

text_form!(Pacing, X264Preset, X264Tune, AudioChannels, Mode);

impl Named for Pacing {
    const WHAT: &'static str = "pacing";
    const ALL: &'static [Self] = &[Pacing::Realtime, Pacing::Fast];
    fn name(self) -> &'static str {
        match self {
            Pacing::Realtime => "realtime",
            Pacing::Fast => "fast",
        }
    }
}

impl Named for X264Preset {
    const WHAT: &'static str = "x264 preset";
    const ALL: &'static [Self] = &[
        X264Preset::Ultrafast,
        X264Preset::Superfast,
        X264Preset::Veryfast,
        X264Preset::Faster,
        X264Preset::Fast,
        X264Preset::Medium,
        X264Preset::Slow,
        X264Preset::Slower,
        X264Preset::Veryslow,
    ];
    fn name(self) -> &'static str {
        self.as_str()
    }
}

impl Named for X264Tune {
    const WHAT: &'static str = "x264 tune";
    const ALL: &'static [Self] = &[
        X264Tune::Film,
        X264Tune::Animation,
        X264Tune::Grain,
        X264Tune::Stillimage,
        X264Tune::Fastdecode,
        X264Tune::Zerolatency,
    ];
    fn name(self) -> &'static str {
        self.as_str()
    }
}

impl Named for AudioChannels {
    const WHAT: &'static str = "audio channel policy";
    const ALL: &'static [Self] = &[AudioChannels::AtMostStereo, AudioChannels::Source];
    fn name(self) -> &'static str {
        match self {
            AudioChannels::AtMostStereo => "at-most-stereo",
            AudioChannels::Source => "source",
        }
    }
}

impl Named for Mode {
    const WHAT: &'static str = "mode";
    const ALL: &'static [Self] = &[Mode::Copy, Mode::Transcode];
    fn name(self) -> &'static str {
        match self {
            Mode::Copy => "copy",
            Mode::Transcode => "transcode",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trips<
        T: Named + fmt::Display + FromStr<Err = ParseEnumError> + PartialEq + fmt::Debug,
    >() {
        for v in T::ALL {
            assert_eq!(v.to_string().parse::<T>(), Ok(*v));
            assert_eq!(v.to_string().to_uppercase().parse::<T>(), Ok(*v));
        }
    }

    #[test]
    fn every_value_round_trips() {
        round_trips::<Pacing>();
        round_trips::<X264Preset>();
        round_trips::<X264Tune>();
        round_trips::<AudioChannels>();
        round_trips::<Mode>();
    }

    #[test]
    fn a_bad_value_names_what_is_accepted() {
        let e = "warp".parse::<Pacing>().unwrap_err();
        assert_eq!(
            e.to_string(),
            "`warp` is not a valid pacing; expected one of: realtime, fast"
        );
        assert_eq!("at_most_stereo".parse(), Ok(AudioChannels::AtMostStereo));
    }
}
