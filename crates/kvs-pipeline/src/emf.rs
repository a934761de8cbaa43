//! Metrics without an agent: CloudWatch Embedded Metric Format (EMF) lines on stdout.
//!
//! On ECS with the `awslogs` driver every stdout line becomes a CloudWatch Logs event, and
//! CloudWatch extracts the metrics of any event that is an EMF document, so no agent or
//! `PutMetricData` call (and no IAM permission for it) is needed. Format:
//! <https://docs.aws.amazon.com/AmazonCloudWatch/latest/monitoring/CloudWatch_Embedded_Metric_Format_Specification.html>.
//!
//! Each line carries two dimension sets: `["Stream"]` (per target stream) and `[]` (the
//! aggregate across streams, which the deployment's alarms watch, since a stream template
//! makes the set of streams open-ended). Logs go to stderr, so stdout holds metrics only.
//!
//! ```no_run
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use kvs_pipeline::emf::{DEFAULT_NAMESPACE, Emf, Metric};
//! let metrics = Emf::new(DEFAULT_NAMESPACE, std::io::stdout())?;
//! metrics.emit("cam-front", &[(Metric::FragmentsPersisted, 12.0), (Metric::PutMediaLatency, 830.0)])?;
//! # Ok(()) }
//! ```

use std::io::{self, Write};
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::{Map, Value, json};

/// The namespace the deployment (deploy/cdk) alarms on unless configured otherwise.
pub const DEFAULT_NAMESPACE: &str = "KvsStream";

/// The dimension that names the target stream.
pub const STREAM_DIMENSION: &str = "Stream";

/// CloudWatch limits a namespace to 255 characters.
const MAX_NAMESPACE_LEN: usize = 255;

/// CloudWatch accepts at most 100 values of one metric in one EMF document.
const MAX_VALUES_PER_METRIC: usize = 100;

/// The metrics the worker reports. Their names are what the alarms in deploy/cdk refer to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Metric {
    /// Fragments KVS acknowledged as persisted (`Count`).
    FragmentsPersisted,
    /// Fragments KVS refused or never acknowledged (`Count`); the failed-fragments alarm.
    FragmentsFailed,
    /// Time from sending a fragment to its acknowledgement (`Milliseconds`; the worker reports
    /// the median RECEIVED latency of each object).
    PutMediaLatency,
    /// Objects streamed completely, every fragment persisted (`Count`).
    ObjectsDone,
    /// Objects that failed (retried or dead-lettered) (`Count`).
    ObjectsFailed,
    /// Age of a queue message when the worker picked it up (`Seconds`).
    MessageAgeSeconds,
}

impl Metric {
    /// Every metric, in a fixed order.
    pub const ALL: [Metric; 6] = [
        Metric::FragmentsPersisted,
        Metric::FragmentsFailed,
        Metric::PutMediaLatency,
        Metric::ObjectsDone,
        Metric::ObjectsFailed,
        Metric::MessageAgeSeconds,
    ];

    /// The CloudWatch metric name.
    pub fn name(self) -> &'static str {
        match self {
            Metric::FragmentsPersisted => "FragmentsPersisted",
            Metric::FragmentsFailed => "FragmentsFailed",
            Metric::PutMediaLatency => "PutMediaLatency",
            Metric::ObjectsDone => "ObjectsDone",
            Metric::ObjectsFailed => "ObjectsFailed",
            Metric::MessageAgeSeconds => "MessageAgeSeconds",
        }
    }

    /// The CloudWatch unit (one of the spec's unit names).
    pub fn unit(self) -> &'static str {
        match self {
            Metric::PutMediaLatency => "Milliseconds",
            Metric::MessageAgeSeconds => "Seconds",
            _ => "Count",
        }
    }
}

/// A namespace CloudWatch would refuse.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvalidNamespace {
    /// The namespace given.
    pub namespace: String,
    /// What is wrong with it.
    pub reason: &'static str,
}

impl std::fmt::Display for InvalidNamespace {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "invalid CloudWatch namespace {:?}: {}",
            self.namespace, self.reason
        )
    }
}

impl std::error::Error for InvalidNamespace {}

/// Writes one EMF document per line to a writer (stdout in the service).
///
/// Safe to share between tasks: each line is written whole under a lock, so lines from
/// concurrent objects never interleave.
#[derive(Debug)]
pub struct Emf<W> {
    namespace: String,
    out: Mutex<W>,
}

impl<W: Write> Emf<W> {
    /// Metrics written to `out` under `namespace` (validated against CloudWatch's rules).
    pub fn new(namespace: impl Into<String>, out: W) -> Result<Self, InvalidNamespace> {
        let namespace = namespace.into();
        validate_namespace(&namespace)?;
        Ok(Emf {
            namespace,
            out: Mutex::new(out),
        })
    }

    /// Writes one line with `values` for `stream`, timestamped now.
    pub fn emit(&self, stream: &str, values: &[(Metric, f64)]) -> io::Result<()> {
        self.emit_at(SystemTime::now(), stream, values)
    }

    /// Writes one line with `values` for `stream`, timestamped `at`. Nothing is written when no
    /// value is finite (JSON has no NaN or infinity, and an EMF document needs a metric).
    pub fn emit_at(
        &self,
        at: SystemTime,
        stream: &str,
        values: &[(Metric, f64)],
    ) -> io::Result<()> {
        let Some(mut line) = render(&self.namespace, at, stream, values) else {
            return Ok(());
        };
        line.push('\n');
        let mut out = self.out.lock().unwrap_or_else(|e| e.into_inner());
        out.write_all(line.as_bytes())?;
        out.flush()
    }

    /// The writer back (tests read what was written).
    #[cfg(test)]
    pub fn into_inner(self) -> W {
        self.out.into_inner().unwrap_or_else(|e| e.into_inner())
    }
}

fn validate_namespace(namespace: &str) -> Result<(), InvalidNamespace> {
    let reason = if namespace.is_empty() {
        Some("empty")
    } else if namespace.len() > MAX_NAMESPACE_LEN {
        Some("longer than 255 characters")
    } else if namespace.starts_with("AWS/") {
        // CloudWatch reserves the AWS/ prefix for AWS services.
        Some("the AWS/ prefix is reserved")
    } else if namespace.chars().any(|c| c.is_control()) {
        Some("contains a control character")
    } else {
        None
    };
    match reason {
        Some(reason) => Err(InvalidNamespace {
            namespace: namespace.to_owned(),
            reason,
        }),
        None => Ok(()),
    }
}

/// One EMF document (without the newline), or `None` when no value is finite.
///
/// Several values of one metric become an array (EMF's way to carry many samples in one event),
/// at most 100 per document as CloudWatch allows; further values of that metric are dropped with
/// a warning rather than making CloudWatch reject the whole line.
pub fn render(
    namespace: &str,
    at: SystemTime,
    stream: &str,
    values: &[(Metric, f64)],
) -> Option<String> {
    let timestamp_ms = at
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0);
    let mut root = Map::new();
    let mut definitions = Vec::new();
    for metric in Metric::ALL {
        let samples: Vec<f64> = values
            .iter()
            .filter(|(m, v)| *m == metric && v.is_finite())
            .map(|(_, v)| *v)
            .collect();
        if samples.is_empty() {
            continue;
        }
        if samples.len() > MAX_VALUES_PER_METRIC {
            tracing::warn!(
                metric = metric.name(),
                given = samples.len(),
                kept = MAX_VALUES_PER_METRIC,
                "more values than one EMF document carries; the rest are dropped"
            );
        }
        let value = match samples.as_slice() {
            [one] => json!(one),
            many => json!(&many[..many.len().min(MAX_VALUES_PER_METRIC)]),
        };
        root.insert(metric.name().to_owned(), value);
        definitions.push(json!({ "Name": metric.name(), "Unit": metric.unit() }));
    }
    if definitions.is_empty() {
        return None;
    }
    root.insert(STREAM_DIMENSION.to_owned(), json!(stream));
    root.insert(
        "_aws".to_owned(),
        json!({
            "Timestamp": timestamp_ms,
            "CloudWatchMetrics": [{
                "Namespace": namespace,
                "Dimensions": [[STREAM_DIMENSION], []],
                "Metrics": definitions,
            }],
        }),
    );
    Some(Value::Object(root).to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    const UNITS: &[&str] = &[
        "Seconds",
        "Microseconds",
        "Milliseconds",
        "Bytes",
        "Kilobytes",
        "Megabytes",
        "Gigabytes",
        "Terabytes",
        "Bits",
        "Kilobits",
        "Megabits",
        "Gigabits",
        "Terabits",
        "Percent",
        "Count",
        "Bytes/Second",
        "Kilobytes/Second",
        "Megabytes/Second",
        "Gigabytes/Second",
        "Terabytes/Second",
        "Bits/Second",
        "Kilobits/Second",
        "Megabits/Second",
        "Gigabits/Second",
        "Terabits/Second",
        "Count/Second",
        "None",
    ];

    /// Checks a document against the rules of the EMF specification, so a format change that
    /// CloudWatch would silently ignore fails here instead.
    fn assert_valid_emf(doc: &Value) {
        let root = doc.as_object().expect("root is an object");
        let aws = root["_aws"].as_object().expect("_aws is an object");
        let ts = &aws["Timestamp"];
        assert!(ts.is_u64(), "Timestamp is a number of milliseconds: {ts}");
        let directives = aws["CloudWatchMetrics"]
            .as_array()
            .expect("CloudWatchMetrics array");
        assert!(!directives.is_empty());
        for d in directives {
            let d = d.as_object().expect("MetricDirective is an object");
            let ns = d["Namespace"].as_str().expect("Namespace string");
            assert!(!ns.is_empty() && ns.len() <= 255);
            for set in d["Dimensions"].as_array().expect("Dimensions array") {
                let set = set.as_array().expect("DimensionSet array");
                assert!(set.len() <= 30, "at most 30 dimensions per set");
                for key in set {
                    let key = key.as_str().expect("dimension key string");
                    assert!(
                        root.get(key).is_some_and(Value::is_string),
                        "dimension {key} is a string member of the root"
                    );
                }
            }
            let metrics = d["Metrics"].as_array().expect("Metrics array");
            assert!(!metrics.is_empty() && metrics.len() <= 100);
            for m in metrics {
                let name = m["Name"].as_str().expect("Name string");
                assert!(!name.is_empty() && name.len() <= 1024);
                if let Some(unit) = m.get("Unit") {
                    assert!(
                        UNITS.contains(&unit.as_str().expect("Unit string")),
                        "{unit}"
                    );
                }
                let value = &root[name];
                match value {
                    Value::Number(_) => {}
                    Value::Array(vs) => {
                        assert!(!vs.is_empty() && vs.len() <= 100);
                        assert!(vs.iter().all(Value::is_number));
                    }
                    other => panic!("metric {name} has a non-numeric value {other}"),
                }
            }
        }
    }

    fn at(ms: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_millis(ms)
    }

    #[test]
    fn the_exact_document() {
        let line = render(
            "KvsStream",
            at(1_765_000_000_123),
            "cam-front",
            &[
                (Metric::FragmentsPersisted, 3.0),
                (Metric::PutMediaLatency, 812.5),
            ],
        )
        .unwrap();
        let doc: Value = serde_json::from_str(&line).unwrap();
        assert_eq!(
            doc,
            json!({
                "_aws": {
                    "Timestamp": 1_765_000_000_123u64,
                    "CloudWatchMetrics": [{
                        "Namespace": "KvsStream",
                        "Dimensions": [["Stream"], []],
                        "Metrics": [
                            {"Name": "FragmentsPersisted", "Unit": "Count"},
                            {"Name": "PutMediaLatency", "Unit": "Milliseconds"},
                        ],
                    }],
                },
                "Stream": "cam-front",
                "FragmentsPersisted": 3.0,
                "PutMediaLatency": 812.5,
            })
        );
        assert_valid_emf(&doc);
        assert!(!line.contains('\n'), "one document is one line");
    }

    #[test]
    fn every_metric_is_valid_emf_with_its_unit() {
        let values: Vec<_> = Metric::ALL.iter().map(|m| (*m, 1.0)).collect();
        let doc: Value = serde_json::from_str(&render("ns", at(1), "s", &values).unwrap()).unwrap();
        assert_valid_emf(&doc);
        let defs = doc["_aws"]["CloudWatchMetrics"][0]["Metrics"]
            .as_array()
            .unwrap();
        let names: Vec<_> = defs.iter().map(|d| d["Name"].as_str().unwrap()).collect();
        assert_eq!(
            names,
            [
                "FragmentsPersisted",
                "FragmentsFailed",
                "PutMediaLatency",
                "ObjectsDone",
                "ObjectsFailed",
                "MessageAgeSeconds"
            ]
        );
        assert_eq!(defs[5]["Unit"], "Seconds");
        assert_eq!(defs[1]["Unit"], "Count");
    }

    #[test]
    fn repeated_values_become_an_array_capped_at_100() {
        let mut values = vec![(Metric::PutMediaLatency, 1.0), (Metric::ObjectsDone, 1.0)];
        values.extend((0..150).map(|i| (Metric::PutMediaLatency, f64::from(i))));
        let doc: Value = serde_json::from_str(&render("ns", at(1), "s", &values).unwrap()).unwrap();
        assert_valid_emf(&doc);
        let latencies = doc["PutMediaLatency"].as_array().unwrap();
        assert_eq!(latencies.len(), 100);
        assert_eq!(latencies[0], 1.0);
        assert_eq!(doc["ObjectsDone"], 1.0);
    }

    #[test]
    fn non_finite_values_are_left_out_and_an_empty_document_is_not_written() {
        let doc: Value = serde_json::from_str(
            &render(
                "ns",
                at(1),
                "s",
                &[
                    (Metric::PutMediaLatency, f64::NAN),
                    (Metric::ObjectsFailed, 1.0),
                ],
            )
            .unwrap(),
        )
        .unwrap();
        assert_valid_emf(&doc);
        assert!(doc.get("PutMediaLatency").is_none());
        assert_eq!(
            render(
                "ns",
                at(1),
                "s",
                &[(Metric::PutMediaLatency, f64::INFINITY)]
            ),
            None
        );

        let emf = Emf::new("ns", Vec::new()).unwrap();
        emf.emit("s", &[]).unwrap();
        emf.emit("s", &[(Metric::FragmentsFailed, f64::NAN)])
            .unwrap();
        assert!(emf.into_inner().is_empty());
    }

    #[test]
    fn a_stream_name_is_escaped_not_injected() {
        let name = "a\"b\\c\n}";
        let doc: Value = serde_json::from_str(
            &render("ns", at(1), name, &[(Metric::ObjectsDone, 1.0)]).unwrap(),
        )
        .unwrap();
        assert_eq!(doc["Stream"], name);
        assert_valid_emf(&doc);
    }

    #[test]
    fn lines_are_whole_and_newline_terminated() {
        let emf = Emf::new("KvsStream", Vec::new()).unwrap();
        emf.emit_at(at(5), "a", &[(Metric::ObjectsDone, 1.0)])
            .unwrap();
        emf.emit_at(at(6), "b", &[(Metric::FragmentsFailed, 2.0)])
            .unwrap();
        let out = String::from_utf8(emf.into_inner()).unwrap();
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines.len(), 2);
        assert!(out.ends_with('\n'));
        for (line, (ts, stream)) in lines.iter().zip([(5, "a"), (6, "b")]) {
            let doc: Value = serde_json::from_str(line).unwrap();
            assert_valid_emf(&doc);
            assert_eq!(doc["_aws"]["Timestamp"], ts);
            assert_eq!(doc["Stream"], stream);
        }
    }

    #[test]
    fn namespaces_cloudwatch_refuses_are_refused() {
        for (ns, reason) in [
            ("", "empty"),
            ("AWS/Kinesis", "the AWS/ prefix is reserved"),
            ("a\tb", "contains a control character"),
        ] {
            let err = Emf::new(ns, Vec::new()).unwrap_err();
            assert_eq!(err.reason, reason, "{ns:?}");
            assert!(err.to_string().contains(reason));
        }
        assert!(Emf::new("x".repeat(256), Vec::new()).is_err());
        assert!(Emf::new("x".repeat(255), Vec::new()).is_ok());
        assert_eq!(
            Emf::new(DEFAULT_NAMESPACE, Vec::new()).unwrap().namespace,
            "KvsStream"
        );
    }
}
