//! `FromStr` and `Display` for the session's policy enums, so a command line or a configuration
//! file parses them directly (`clap` picks `FromStr` up through `value_parser!`). The text forms
//! are lower-case kebab-case and round-trip: `p.to_string().parse() == Ok(p)`.

use std::fmt;
use std::str::FromStr;

use super::config::CompletionAck;
use super::policy::OverflowPolicy;
use super::sign::PayloadHash;

/// A policy name that is not one of the accepted values.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{value}` is not a valid {what}; expected one of: {}", expected.join(", "))]
#[non_exhaustive]
pub struct ParsePolicyError {
    /// What was being parsed, e.g. `overflow policy`.
    pub what: &'static str,
    /// The text given.
    pub value: String,
    /// The accepted values.
    pub expected: &'static [&'static str],
}

/// Looks `s` up (ASCII case-insensitive, `_` read as `-`) in `table`.
fn lookup<T: Copy>(
    what: &'static str,
    expected: &'static [&'static str],
    table: &[(&str, T)],
    s: &str,
) -> Result<T, ParsePolicyError> {
    let norm = s.trim().to_ascii_lowercase().replace('_', "-");
    table
        .iter()
        .find(|(name, _)| *name == norm)
        .map(|(_, v)| *v)
        .ok_or_else(|| ParsePolicyError {
            what,
            value: s.to_owned(),
            expected,
        })
}

impl OverflowPolicy {
    /// The text form: `backpressure` or `drop-oldest`.
    pub fn as_str(self) -> &'static str {
        match self {
            OverflowPolicy::Backpressure => "backpressure",
            OverflowPolicy::DropOldest => "drop-oldest",
        }
    }
}

impl fmt::Display for OverflowPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `backpressure` (also `wait`, what it means for the caller) or `drop-oldest`.
impl FromStr for OverflowPolicy {
    type Err = ParsePolicyError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        lookup(
            "overflow policy",
            &["backpressure", "wait", "drop-oldest"],
            &[
                ("backpressure", OverflowPolicy::Backpressure),
                ("wait", OverflowPolicy::Backpressure),
                ("drop-oldest", OverflowPolicy::DropOldest),
            ],
            s,
        )
    }
}

impl CompletionAck {
    /// The text form: `auto`, `persisted` or `received`.
    pub fn as_str(self) -> &'static str {
        match self {
            CompletionAck::Auto => "auto",
            CompletionAck::Persisted => "persisted",
            CompletionAck::Received => "received",
        }
    }
}

impl fmt::Display for CompletionAck {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `auto`, `persisted` or `received`.
impl FromStr for CompletionAck {
    type Err = ParsePolicyError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        lookup(
            "completion ack",
            &["auto", "persisted", "received"],
            &[
                ("auto", CompletionAck::Auto),
                ("persisted", CompletionAck::Persisted),
                ("received", CompletionAck::Received),
            ],
            s,
        )
    }
}

impl PayloadHash {
    /// The text form: `empty-string-sha256` or `unsigned`.
    pub fn as_str(self) -> &'static str {
        match self {
            PayloadHash::EmptyStringSha256 => "empty-string-sha256",
            PayloadHash::Unsigned => "unsigned",
        }
    }
}

impl fmt::Display for PayloadHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `empty-string-sha256` or `unsigned` (also `unsigned-payload`, the header's value).
impl FromStr for PayloadHash {
    type Err = ParsePolicyError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        lookup(
            "payload hash",
            &["empty-string-sha256", "unsigned", "unsigned-payload"],
            &[
                ("empty-string-sha256", PayloadHash::EmptyStringSha256),
                ("unsigned", PayloadHash::Unsigned),
                ("unsigned-payload", PayloadHash::Unsigned),
            ],
            s,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trips<T>(all: &[T])
    where
        T: Copy + fmt::Display + FromStr<Err = ParsePolicyError> + PartialEq + fmt::Debug,
    {
        for v in all {
            assert_eq!(v.to_string().parse::<T>(), Ok(*v));
            assert_eq!(v.to_string().to_uppercase().parse::<T>(), Ok(*v));
        }
    }

    #[test]
    fn every_value_round_trips() {
        round_trips(&[OverflowPolicy::Backpressure, OverflowPolicy::DropOldest]);
        round_trips(&[
            CompletionAck::Auto,
            CompletionAck::Persisted,
            CompletionAck::Received,
        ]);
        round_trips(&[PayloadHash::EmptyStringSha256, PayloadHash::Unsigned]);
    }

    #[test]
    fn aliases_and_spelling() {
        assert_eq!("wait".parse(), Ok(OverflowPolicy::Backpressure));
        assert_eq!("drop_oldest".parse(), Ok(OverflowPolicy::DropOldest));
        assert_eq!("UNSIGNED-PAYLOAD".parse(), Ok(PayloadHash::Unsigned));
    }

    #[test]
    fn a_bad_value_names_what_is_accepted() {
        let e = "newest".parse::<OverflowPolicy>().unwrap_err();
        assert_eq!(
            e.to_string(),
            "`newest` is not a valid overflow policy; expected one of: backpressure, wait, drop-oldest"
        );
        assert!("".parse::<CompletionAck>().is_err());
    }
}
