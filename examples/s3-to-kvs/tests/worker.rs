//! `s3-to-kvs worker` against the emulator: real processes, real SQS/S3/KVS SDK clients, real
//! ffmpeg. The crash test kills a worker with SIGKILL mid-object and proves that a second worker
//! finishes the object with every fragment stored exactly once.

use std::collections::BTreeSet;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use aws_sdk_sqs::types::QueueAttributeName;
use bytes::Bytes;
use kvs_emulator::Emulator;

const BUCKET: &str = "uploads";

/// A `seconds`-long 320x240 H.264 + AAC MP4 recorded an hour ago (its `creation_time`).
fn clip(seconds: u32) -> Bytes {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("clip.mp4");
    // ISO 8601, as phones write it.
    let created = "2024-05-01T12:00:00.000000Z";
    let status = Command::new("ffmpeg")
        .args(["-nostdin", "-loglevel", "error", "-y", "-f", "lavfi", "-i"])
        .arg(format!("testsrc2=size=320x240:rate=25:duration={seconds}"))
        .args(["-f", "lavfi", "-i"])
        .arg(format!(
            "sine=frequency=440:sample_rate=44100:duration={seconds}"
        ))
        .args([
            "-c:v",
            "libx264",
            "-preset",
            "ultrafast",
            "-pix_fmt",
            "yuv420p",
        ])
        .args(["-c:a", "aac", "-shortest", "-metadata"])
        .arg(format!("creation_time={created}"))
        .arg(&path)
        .status()
        .unwrap();
    assert!(status.success());
    Bytes::from(std::fs::read(&path).unwrap())
}

struct Env {
    emu: Emulator,
    sqs: aws_sdk_sqs::Client,
}

impl Env {
    async fn start() -> Env {
        let emu = Emulator::builder()
            .persist_delay(Duration::from_millis(20))
            .start()
            .await
            .unwrap();
        emu.create_bucket(BUCKET).await.unwrap();
        let c = emu.credentials();
        let config = aws_config::defaults(aws_config::BehaviorVersion::latest())
            .region(aws_config::Region::new(emu.region().to_owned()))
            .endpoint_url(emu.url())
            .credentials_provider(aws_sdk_s3::config::Credentials::new(
                c.access_key_id,
                c.secret_access_key,
                None,
                None,
                "test",
            ))
            .load()
            .await;
        Env {
            sqs: aws_sdk_sqs::Client::new(&config),
            emu,
        }
    }

    async fn fifo(&self, name: &str) -> String {
        self.sqs
            .create_queue()
            .queue_name(name)
            .attributes(QueueAttributeName::FifoQueue, "true")
            .send()
            .await
            .unwrap()
            .queue_url
            .unwrap()
    }

    async fn send(&self, queue: &str, group: &str, key: &str) {
        self.sqs
            .send_message()
            .queue_url(queue)
            .message_body(serde_json::json!({ "bucketName": BUCKET, "keyName": key }).to_string())
            .message_group_id(group)
            .message_deduplication_id(format!("{group}-{key}"))
            .send()
            .await
            .unwrap();
    }

    async fn messages_left(&self, queue: &str) -> u64 {
        let a = self
            .sqs
            .get_queue_attributes()
            .queue_url(queue)
            .attribute_names(QueueAttributeName::ApproximateNumberOfMessages)
            .attribute_names(QueueAttributeName::ApproximateNumberOfMessagesNotVisible)
            .send()
            .await
            .unwrap()
            .attributes
            .unwrap_or_default();
        a.values().map(|v| v.parse::<u64>().unwrap_or(0)).sum()
    }

    fn worker(&self, queue: &str, stream: &str, pace: &str) -> std::process::Child {
        self.worker_with(queue, stream, pace, &[])
    }

    /// [`worker`](Self::worker) with more (or overriding) environment variables.
    fn worker_with(
        &self,
        queue: &str,
        stream: &str,
        pace: &str,
        extra: &[(&str, &str)],
    ) -> std::process::Child {
        let c = self.emu.credentials();
        Command::new(env!("CARGO_BIN_EXE_s3-to-kvs"))
            .arg("worker")
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("AWS_ENDPOINT_URL", self.emu.url())
            .env("AWS_ACCESS_KEY_ID", &c.access_key_id)
            .env("AWS_SECRET_ACCESS_KEY", &c.secret_access_key)
            .env("AWS_REGION", self.emu.region())
            .env("AWS_EC2_METADATA_DISABLED", "true")
            .env("QUEUE_URL", queue)
            // No stream name: `extra` sets STREAM_TEMPLATE.
            .envs((!stream.is_empty()).then_some(("STREAM_NAME", stream)))
            .env("CREATE_STREAMS", "true")
            .env("VISIBILITY_SECONDS", "4")
            .env("PACE", pace)
            .env("HOST", "127.0.0.1")
            .env("PORT", "0")
            .env("RUST_LOG", "info")
            .envs(extra.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap()
    }

    async fn wait_until(&self, what: &str, timeout: Duration, mut done: impl AsyncFnMut() -> bool) {
        let deadline = Instant::now() + timeout;
        while !done().await {
            assert!(Instant::now() < deadline, "timed out waiting until {what}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

fn producer_times(emu: &Emulator, stream: &str) -> Vec<u64> {
    emu.fragments(stream)
        .iter()
        .filter(|f| f.persisted)
        .map(|f| f.producer_timestamp_ms)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_killed_mid_object_is_finished_by_the_next_with_every_fragment_once() {
    let env = Env::start().await;
    env.emu
        .put_object(BUCKET, "cam/long.mp4", clip(16))
        .await
        .unwrap();

    // A clean run into a reference stream: the fragments the object makes.
    let clean_q = env.fifo("clean.fifo").await;
    env.send(&clean_q, "ref", "cam/long.mp4").await;
    let mut clean = env.worker(&clean_q, "ref", "fast");
    env.wait_until(
        "the clean run is done",
        Duration::from_secs(90),
        async || env.messages_left(&clean_q).await == 0,
    )
    .await;
    clean.kill().unwrap();
    clean.wait().unwrap();
    let reference = producer_times(&env.emu, "ref");
    assert!(
        reference.len() >= 6,
        "a 16 s clip makes ~8 fragments: {reference:?}"
    );

    // Worker A streams at native rate and is killed (SIGKILL: no cleanup) mid-object.
    let q = env.fifo("work.fifo").await;
    env.send(&q, "crash", "cam/long.mp4").await;
    let mut a = env.worker(&q, "crash", "realtime");
    env.wait_until(
        "A stored 3 fragments",
        Duration::from_secs(60),
        async || producer_times(&env.emu, "crash").len() >= 3,
    )
    .await;
    a.kill().unwrap(); // SIGKILL
    a.wait().unwrap();
    let partial = producer_times(&env.emu, "crash").len();
    assert!(partial < reference.len(), "A was killed mid-object");

    // Worker B gets the message back after its visibility timeout and finishes it.
    let mut b = env.worker(&q, "crash", "fast");
    env.wait_until(
        "B finished and deleted the message",
        Duration::from_secs(90),
        async || env.messages_left(&q).await == 0,
    )
    .await;
    b.kill().unwrap();
    b.wait().unwrap();

    let got = producer_times(&env.emu, "crash");
    let unique: BTreeSet<u64> = got.iter().copied().collect();
    assert_eq!(
        unique.len(),
        got.len(),
        "a fragment was stored twice: {got:?}"
    );
    assert_eq!(
        unique,
        reference.iter().copied().collect::<BTreeSet<u64>>(),
        "every fragment of the object exactly once (A stored {partial})"
    );
    let all = env.emu.fragments("crash");
    assert!(all.iter().all(|f| f.persisted), "{} stored", all.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn not_media_and_missing_objects_are_dead_lettered_at_once_with_the_reason() {
    let env = Env::start().await;
    env.emu
        .put_object(
            BUCKET,
            "cam/notes.mp4",
            Bytes::from_static(b"not a video at all"),
        )
        .await
        .unwrap();
    let dlq = env.fifo("dlq.fifo").await;
    let dlq_arn = env
        .sqs
        .get_queue_attributes()
        .queue_url(&dlq)
        .attribute_names(QueueAttributeName::QueueArn)
        .send()
        .await
        .unwrap()
        .attributes
        .unwrap()
        .remove(&QueueAttributeName::QueueArn)
        .unwrap();
    let q = env.fifo("dl-work.fifo").await;
    env.sqs
        .set_queue_attributes()
        .queue_url(&q)
        .attributes(
            QueueAttributeName::RedrivePolicy,
            serde_json::json!({ "deadLetterTargetArn": dlq_arn, "maxReceiveCount": 5 }).to_string(),
        )
        .send()
        .await
        .unwrap();
    env.send(&q, "dl", "cam/notes.mp4").await;
    env.send(&q, "dl", "cam/missing.mp4").await;
    let mut w = env.worker(&q, "dl", "fast");
    env.wait_until(
        "both messages left the work queue",
        Duration::from_secs(60),
        async || env.messages_left(&q).await == 0,
    )
    .await;
    w.kill().unwrap();
    w.wait().unwrap();
    let got = env
        .sqs
        .receive_message()
        .queue_url(&dlq)
        .max_number_of_messages(10)
        .message_attribute_names("All")
        .send()
        .await
        .unwrap()
        .messages
        .unwrap_or_default();
    assert_eq!(got.len(), 2, "{got:?}");
    let reasons: Vec<String> = got
        .iter()
        .map(|m| {
            m.message_attributes.as_ref().unwrap()["Reason"]
                .string_value()
                .unwrap()
                .to_owned()
        })
        .collect();
    assert!(
        reasons
            .iter()
            .any(|r| r.contains("cam/missing.mp4: no such object")),
        "{reasons:?}"
    );
    assert!(
        reasons.iter().any(|r| r.contains("cam/notes.mp4")),
        "{reasons:?}"
    );
    assert!(env.emu.fragments("dl").is_empty());
}

/// The ffmpeg processes whose parent is `pid` (from /proc: `PID (COMM) STATE PPID ...`).
fn ffmpeg_children(pid: u32) -> Vec<u32> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(child) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        let Some((head, rest)) = stat.rsplit_once(')') else {
            continue;
        };
        let ppid = rest.split_whitespace().nth(1).and_then(|p| p.parse().ok());
        if head.ends_with("(ffmpeg") && ppid == Some(pid) {
            found.push(child);
        }
    }
    found
}

/// Sends SIGTERM to `pid` (what ECS and Kubernetes send on scale-in).
#[allow(unsafe_code)]
fn sigterm(pid: u32) {
    let pid = libc::pid_t::try_from(pid).unwrap();
    // SAFETY: kill(2) takes two integers and touches no memory of ours.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0);
}

/// True when `pid` is gone: no such process, a zombie, or the pid reused by something other
/// than ffmpeg.
fn process_gone(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(stat) => {
            let (head, rest) = stat.rsplit_once(')').unwrap_or((&stat, ""));
            !head.ends_with("(ffmpeg") || rest.split_whitespace().next() == Some("Z")
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_stops_receiving_and_returns_what_is_in_flight_within_the_drain_time() {
    const DRAIN_SECONDS: u64 = 4;
    let env = Env::start().await;
    env.emu
        .put_object(BUCKET, "cam/long.mp4", clip(20))
        .await
        .unwrap();
    let q = env.fifo("drain.fifo").await;
    env.send(&q, "drain", "cam/long.mp4").await;
    // A long visibility timeout: the message is visible right after the exit only if the worker
    // returned it (visibility 0), not because its timeout ran out.
    let drain = DRAIN_SECONDS.to_string();
    let mut w = env.worker_with(
        &q,
        "drain",
        "realtime",
        &[("DRAIN_SECONDS", &drain), ("VISIBILITY_SECONDS", "120")],
    );
    let pid = w.id();
    env.wait_until(
        "the worker stored 2 fragments",
        Duration::from_secs(60),
        async || producer_times(&env.emu, "drain").len() >= 2,
    )
    .await;
    let ffmpeg = ffmpeg_children(pid);
    assert!(
        !ffmpeg.is_empty(),
        "the worker streams through an ffmpeg child"
    );

    sigterm(pid);
    let signalled = Instant::now();
    // Sent after the signal: a worker that stopped receiving never takes it.
    tokio::time::sleep(Duration::from_millis(500)).await;
    env.send(&q, "later", "cam/long.mp4").await;

    let status = loop {
        if let Some(s) = w.try_wait().unwrap() {
            break s;
        }
        if signalled.elapsed() > Duration::from_secs(DRAIN_SECONDS + 10) {
            w.kill().unwrap();
            panic!("the worker did not exit within the drain time");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let took = signalled.elapsed();
    assert_eq!(status.code(), Some(0), "{status}");
    assert!(
        took < Duration::from_secs(DRAIN_SECONDS + 3),
        "exit {took:?} after SIGTERM, drain is {DRAIN_SECONDS} s"
    );
    for p in &ffmpeg {
        assert!(process_gone(*p), "ffmpeg {p} outlived its worker");
    }
    assert!(ffmpeg_children(pid).is_empty());

    // A 20 s object at native rate cannot finish within the drain: its message is back at once.
    let stored = producer_times(&env.emu, "drain");
    assert!(stored.len() < 10, "stopped mid-object: {stored:?}");
    let left = env.emu.queue_messages(&q);
    assert_eq!(left.len(), 2, "{left:?}");
    let first = left
        .iter()
        .find(|m| m.group_id.as_deref() == Some("drain"))
        .unwrap();
    assert!(!first.in_flight, "returned with visibility 0: {first:?}");
    assert_eq!(first.receive_count, 1);
    let later = left
        .iter()
        .find(|m| m.group_id.as_deref() == Some("later"))
        .unwrap();
    assert_eq!(later.receive_count, 0, "received after SIGTERM: {later:?}");
    let all = env.emu.fragments("drain");
    assert!(
        all.iter().all(|f| f.persisted),
        "what was sent before the stop was persisted: {} stored, {} persisted",
        all.len(),
        stored.len()
    );
}
