//! Scriptable, deterministic fault injection.

use std::sync::Mutex;
use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// Which requests a rule applies to.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
pub struct Scope {
    /// Only this stream (any stream when `None`).
    #[serde(default)]
    pub stream: Option<String>,
    /// Only the Nth PutMedia connection (1-based) of the stream since the emulator started;
    /// when `None`, the first matching connection.
    #[serde(default)]
    pub connection: Option<u32>,
}

impl Scope {
    /// Any stream, first matching connection.
    pub fn any() -> Self {
        Self::default()
    }
    /// One stream, first matching connection.
    pub fn stream(name: impl Into<String>) -> Self {
        Self {
            stream: Some(name.into()),
            connection: None,
        }
    }
    /// Restricts to the Nth (1-based) connection of the stream.
    pub fn with_connection(mut self, n: u32) -> Self {
        self.connection = Some(n);
        self
    }
    fn matches(&self, stream: &str, connection_ordinal: u32) -> bool {
        self.stream.as_deref().is_none_or(|s| s == stream)
            && self.connection.is_none_or(|n| n == connection_ordinal)
    }
}

/// How a refused connection is answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[non_exhaustive]
pub enum Refusal {
    /// `500 InternalFailure`.
    InternalError,
    /// `503 ServiceUnavailable`.
    ServiceUnavailable,
    /// `400 ClientLimitExceededException` (throttling).
    Throttle,
}

/// One fault. Rules that act on a connection fire once, on the first connection matching their
/// [`Scope`]; `DelayAcks` applies to every matching connection; `ClockSkew` is global.
#[derive(Debug, Clone, PartialEq, serde::Deserialize, serde::Serialize)]
#[non_exhaustive]
pub enum FaultRule {
    /// Abort the connection (no terminating chunk) once N body bytes were read.
    DropAfterBytes {
        /// Which connection.
        #[serde(default)]
        scope: Scope,
        /// Bytes to accept before dropping.
        bytes: u64,
    },
    /// Abort the connection right after the Nth fragment was received (its RECEIVED ack is
    /// sent; PERSISTED acks are not, though the fragments are stored).
    DropAfterFragments {
        /// Which connection.
        #[serde(default)]
        scope: Scope,
        /// Fragments to accept before dropping.
        fragments: u32,
    },
    /// Answer the fragment with 0-based index `fragment_index` (within the connection) with an
    /// ERROR ack carrying `error_id` instead of RECEIVED, then close, as the service does.
    ErrorAck {
        /// Which connection.
        #[serde(default)]
        scope: Scope,
        /// 0-based fragment index within the connection.
        fragment_index: u32,
        /// The error id to send (its code name is filled in from the protocol table (docs/protocol.md)).
        error_id: u32,
    },
    /// Delay every ack of matching connections by this much (order is kept).
    DelayAcks {
        /// Which connections.
        #[serde(default)]
        scope: Scope,
        /// The delay.
        #[serde(with = "millis")]
        delay: Duration,
    },
    /// After N fragments, hold every ack back for `duration` (a stalled service).
    StallAcks {
        /// Which connection.
        #[serde(default)]
        scope: Scope,
        /// Fragments acknowledged normally first.
        after_fragments: u32,
        /// How long acks stay held back.
        #[serde(with = "millis")]
        duration: Duration,
    },
    /// Refuse the next `count` matching PutMedia requests with an HTTP error.
    RefuseConnections {
        /// Which stream (the connection ordinal is ignored).
        #[serde(default)]
        scope: Scope,
        /// How to refuse.
        status: Refusal,
        /// How many requests.
        count: u32,
    },
    /// Shift the emulator's clock (SigV4 skew check, server timestamps, future-timestamp check).
    ClockSkew {
        /// Signed offset in milliseconds (negative: the server is behind).
        offset_ms: i64,
    },
    /// Drop each matching connection after a fragment with this probability, from the
    /// emulator's seeded RNG (see `EmulatorBuilder::with_seed`): deterministic given the seed.
    RandomDrops {
        /// Which connections (every matching one, not only the first).
        #[serde(default)]
        scope: Scope,
        /// Probability per fragment, 0.0 to 1.0.
        probability: f64,
    },
}

mod millis {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(d.as_millis() as u64)
    }
    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        Ok(Duration::from_millis(u64::deserialize(d)?))
    }
}

/// The fault script of a running emulator. Cheap to share; every method takes `&self`.
#[derive(Debug)]
pub struct Faults {
    rules: Mutex<Vec<FaultRule>>,
    rng: Mutex<StdRng>,
}

/// What the PutMedia session must do on one connection, taken from the script when the
/// connection opens.
#[derive(Debug, Default, Clone)]
pub(crate) struct ConnectionFaults {
    pub(crate) drop_after_bytes: Option<u64>,
    pub(crate) drop_after_fragments: Option<u32>,
    pub(crate) error_ack: Option<(u32, u32)>,
    pub(crate) delay: Duration,
    pub(crate) stall: Option<(u32, Duration)>,
    pub(crate) random_drop: Option<f64>,
}

impl Faults {
    pub(crate) fn new(seed: u64) -> Self {
        Self {
            rules: Mutex::new(Vec::new()),
            rng: Mutex::new(StdRng::seed_from_u64(seed)),
        }
    }

    /// Adds a rule at the end of the script.
    pub fn push(&self, rule: FaultRule) {
        self.rules.lock().expect("faults lock").push(rule);
    }

    /// Removes every rule.
    pub fn clear(&self) {
        self.rules.lock().expect("faults lock").clear();
    }

    /// The rules still pending.
    pub fn rules(&self) -> Vec<FaultRule> {
        self.rules.lock().expect("faults lock").clone()
    }

    /// Current clock offset in ms (sum of `ClockSkew` rules).
    pub(crate) fn clock_offset_ms(&self) -> i64 {
        self.rules
            .lock()
            .expect("faults lock")
            .iter()
            .map(|r| match r {
                FaultRule::ClockSkew { offset_ms } => *offset_ms,
                _ => 0,
            })
            .sum()
    }

    /// Consumes one refusal for `stream`, if any is scripted.
    pub(crate) fn take_refusal(&self, stream: &str) -> Option<Refusal> {
        let mut rules = self.rules.lock().expect("faults lock");
        let idx = rules.iter().position(|r| {
            matches!(r, FaultRule::RefuseConnections { scope, count, .. }
                if *count > 0 && scope.stream.as_deref().is_none_or(|s| s == stream))
        })?;
        let FaultRule::RefuseConnections { status, count, .. } = &mut rules[idx] else {
            return None;
        };
        let status = *status;
        *count -= 1;
        if *count == 0 {
            rules.remove(idx);
        }
        Some(status)
    }

    /// Takes the faults for a new connection (one-shot rules are removed from the script).
    pub(crate) fn for_connection(&self, stream: &str, ordinal: u32) -> ConnectionFaults {
        let mut out = ConnectionFaults::default();
        let mut rules = self.rules.lock().expect("faults lock");
        rules.retain(|r| match r {
            FaultRule::DropAfterBytes { scope, bytes } if scope.matches(stream, ordinal) => {
                out.drop_after_bytes.get_or_insert(*bytes);
                false
            }
            FaultRule::DropAfterFragments { scope, fragments }
                if scope.matches(stream, ordinal) =>
            {
                out.drop_after_fragments.get_or_insert(*fragments);
                false
            }
            FaultRule::ErrorAck {
                scope,
                fragment_index,
                error_id,
            } if scope.matches(stream, ordinal) => {
                out.error_ack.get_or_insert((*fragment_index, *error_id));
                false
            }
            FaultRule::StallAcks {
                scope,
                after_fragments,
                duration,
            } if scope.matches(stream, ordinal) => {
                out.stall.get_or_insert((*after_fragments, *duration));
                false
            }
            FaultRule::DelayAcks { scope, delay } if scope.matches(stream, ordinal) => {
                out.delay = *delay;
                true
            }
            FaultRule::RandomDrops { scope, probability } if scope.matches(stream, ordinal) => {
                out.random_drop = Some(probability.clamp(0.0, 1.0));
                true
            }
            _ => true,
        });
        out
    }

    /// One draw from the seeded RNG.
    pub(crate) fn chance(&self, probability: f64) -> bool {
        self.rng
            .lock()
            .expect("rng lock")
            .random_bool(probability.clamp(0.0, 1.0))
    }

    /// Random bytes from the seeded RNG (STS credentials).
    pub(crate) fn random_string(&self, len: usize, alphabet: &[u8]) -> String {
        let mut rng = self.rng.lock().expect("rng lock");
        (0..len)
            .map(|_| alphabet[rng.random_range(0..alphabet.len())] as char)
            .collect()
    }
}

/// Parses a fault script: a JSON array of rules, e.g.
/// `[{"DropAfterBytes":{"scope":{"stream":"cam"},"bytes":1000}},{"ClockSkew":{"offset_ms":-600000}}]`.
pub fn parse_fault_script(json: &str) -> Result<Vec<FaultRule>, serde_json::Error> {
    serde_json::from_str(json)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_shot_rules_fire_once_and_scope_by_connection() {
        let f = Faults::new(1);
        f.push(FaultRule::DropAfterBytes {
            scope: Scope::stream("a").with_connection(2),
            bytes: 10,
        });
        f.push(FaultRule::DelayAcks {
            scope: Scope::any(),
            delay: Duration::from_millis(5),
        });
        assert_eq!(f.for_connection("a", 1).drop_after_bytes, None);
        assert_eq!(f.for_connection("b", 2).drop_after_bytes, None);
        let c = f.for_connection("a", 2);
        assert_eq!(c.drop_after_bytes, Some(10));
        assert_eq!(c.delay, Duration::from_millis(5));
        assert_eq!(f.for_connection("a", 2).drop_after_bytes, None);
        assert_eq!(f.for_connection("a", 3).delay, Duration::from_millis(5));
    }

    #[test]
    fn refusals_count_down() {
        let f = Faults::new(1);
        f.push(FaultRule::RefuseConnections {
            scope: Scope::any(),
            status: Refusal::Throttle,
            count: 2,
        });
        assert_eq!(f.take_refusal("x"), Some(Refusal::Throttle));
        assert_eq!(f.take_refusal("y"), Some(Refusal::Throttle));
        assert_eq!(f.take_refusal("x"), None);
        assert!(f.rules().is_empty());
    }

    #[test]
    fn seeded_randomness_is_deterministic() {
        let a = Faults::new(42);
        let b = Faults::new(42);
        let da: Vec<bool> = (0..64).map(|_| a.chance(0.5)).collect();
        let db: Vec<bool> = (0..64).map(|_| b.chance(0.5)).collect();
        assert_eq!(da, db);
    }

    #[test]
    fn script_round_trips() {
        let rules = parse_fault_script(
            r#"[{"DropAfterBytes":{"scope":{"stream":"cam"},"bytes":1000}},
                {"ClockSkew":{"offset_ms":-600000}},
                {"DelayAcks":{"delay":250}},
                {"RefuseConnections":{"status":"ServiceUnavailable","count":1}}]"#,
        )
        .unwrap();
        assert_eq!(rules.len(), 4);
        assert_eq!(
            rules[1],
            FaultRule::ClockSkew {
                offset_ms: -600_000
            }
        );
        assert!(parse_fault_script("[{\"Nope\":{}}]").is_err());
    }
}
