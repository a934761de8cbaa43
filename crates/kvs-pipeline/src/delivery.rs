//! [`Delivery`]: what a pipeline delivered, flat and serializable, so every report (a CLI's
//! `--json`, a service's job view) prints the same fields from the one place they are computed.

use std::fmt;
use std::time::Duration;

use kvs_putmedia::SessionSummary;
use serde::Serialize;

use crate::pipeline::Outcome;

/// A fragment the service refused, as its ERROR ack named it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RefusedFragment {
    /// Cluster timecode, when the ack carried one.
    pub timecode: Option<u64>,
    /// Fragment number, when the ack carried one.
    pub fragment_number: Option<String>,
    /// KVS error id (docs/protocol.md §7).
    pub error_id: u32,
    /// KVS error code (`INVALID_MKV_DATA`...).
    pub error_code: String,
}

/// What a session delivered: its counts and latencies, from a [`SessionSummary`] (live, from
/// [`Progress::session`](crate::Progress::session)) or an [`Outcome`] (final). Serializes flat;
/// `Display` gives the lines a person reads.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
#[non_exhaustive]
pub struct Delivery {
    /// Fragments cut from the input (each counted once).
    pub fragments: u64,
    /// Fragments delivered (completion ack, or RECEIVED before a connection ended).
    pub fragments_delivered: u64,
    /// Fragment sends, resends included.
    pub fragments_sent: u64,
    /// Fragments sent again after a connection failure.
    pub fragments_resent: u64,
    /// Fragments acknowledged RECEIVED.
    pub fragments_received: u64,
    /// Fragments acknowledged PERSISTED.
    pub fragments_persisted: u64,
    /// Fragments refused (the skipped ones and the one whose error ended the session).
    pub fragments_failed: u64,
    /// Fragments dropped from a full replay buffer.
    pub fragments_dropped: u64,
    /// PutMedia requests opened.
    pub connections: u32,
    /// Failures retried.
    pub retries: u64,
    /// Connections rotated.
    pub rotations: u64,
    /// RECEIVED latency after a fragment's last byte, p50 and p99 in milliseconds.
    pub received_latency_ms: Option<[f64; 2]>,
    /// The refused fragments with their error ids (the first 1024).
    pub failures: Vec<RefusedFragment>,
    /// Body bytes sent (MKV header and fragments).
    pub bytes_sent: u64,
    /// From the first media byte sent to the first acknowledgement, ms.
    pub first_ack_latency_ms: Option<f64>,
    /// The first fragment number the service assigned.
    pub first_fragment_number: Option<String>,
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

impl Delivery {
    /// The fields of a session's metrics.
    pub fn new(s: &SessionSummary, first_fragment_number: Option<String>) -> Delivery {
        Delivery {
            fragments: s.fragments,
            fragments_delivered: s.fragments_delivered,
            fragments_sent: s.fragments_sent,
            fragments_resent: s.fragments_resent,
            fragments_received: s.fragments_received,
            fragments_persisted: s.fragments_persisted,
            // The list also names the fragment whose error ended the session; past 1024 only
            // the skipped count grows.
            fragments_failed: s.fragments_skipped.max(s.fragments_failed.len() as u64),
            fragments_dropped: s.fragments_dropped,
            connections: s.connections,
            retries: s.retries,
            rotations: s.rotations,
            received_latency_ms: (s.received_latency.count > 0)
                .then(|| [ms(s.received_latency.p50), ms(s.received_latency.p99)]),
            failures: s
                .fragments_failed
                .iter()
                .map(|f| RefusedFragment {
                    timecode: f.timecode,
                    fragment_number: f.fragment_number.as_ref().map(|n| n.as_str().to_owned()),
                    error_id: f.error.id.id(),
                    error_code: f.error.code.clone(),
                })
                .collect(),
            bytes_sent: s.bytes_sent,
            first_ack_latency_ms: s.first_ack_latency.map(ms),
            first_fragment_number,
        }
    }
}

impl From<&Outcome> for Delivery {
    fn from(o: &Outcome) -> Delivery {
        Delivery::new(&o.summary, o.first_fragment_number.clone())
    }
}

/// One line of counts, then (when there is something to say) retries, latency and one line per
/// refused fragment; nothing when nothing was sent.
impl fmt::Display for Delivery {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.fragments_sent == 0 && self.bytes_sent == 0 {
            return Ok(());
        }
        write!(
            f,
            "{} fragments: {} delivered, {} received, {} persisted, {} failed, {} dropped; {} bytes; first ack {}",
            self.fragments,
            self.fragments_delivered,
            self.fragments_received,
            self.fragments_persisted,
            self.fragments_failed,
            self.fragments_dropped,
            self.bytes_sent,
            self.first_ack_latency_ms
                .map_or_else(|| "-".to_owned(), |ms| format!("{ms:.0} ms")),
        )?;
        if self.connections > 1 || self.retries > 0 {
            write!(
                f,
                "\n  {} connections, {} retries, {} rotations, {} fragments resent",
                self.connections, self.retries, self.rotations, self.fragments_resent
            )?;
        }
        if let Some([p50, p99]) = self.received_latency_ms {
            write!(f, "\n  RECEIVED latency p50 {p50:.0} ms, p99 {p99:.0} ms")?;
        }
        for r in &self.failures {
            write!(
                f,
                "\n  fragment {} ({}): {} {}",
                r.timecode.map_or_else(|| "?".to_owned(), |t| t.to_string()),
                r.fragment_number.as_deref().unwrap_or("?"),
                r.error_id,
                r.error_code
            )?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_serialize_flat_and_display_only_what_happened() {
        let mut s = SessionSummary::default();
        assert_eq!(Delivery::new(&s, None).to_string(), "");
        s.fragments = 3;
        s.fragments_sent = 4;
        s.fragments_resent = 1;
        s.fragments_persisted = 3;
        s.fragments_delivered = 3;
        s.connections = 2;
        s.retries = 1;
        s.bytes_sent = 1000;
        s.first_ack_latency = Some(Duration::from_millis(250));
        let d = Delivery::new(&s, Some("9100".into()));
        let v = serde_json::to_value(&d).unwrap();
        assert_eq!(v["fragments_persisted"], 3);
        assert_eq!(v["first_ack_latency_ms"], 250.0);
        assert_eq!(v["first_fragment_number"], "9100");
        assert!(v["received_latency_ms"].is_null());
        assert_eq!(
            d.to_string(),
            "3 fragments: 3 delivered, 0 received, 3 persisted, 0 failed, 0 dropped; 1000 bytes; first ack 250 ms\n  2 connections, 1 retries, 0 rotations, 1 fragments resent"
        );
    }
}
