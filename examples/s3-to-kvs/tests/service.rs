//! The `s3-to-kvs` binary against the emulator, as it runs in production: real HTTP, the real AWS
//! SDK clients, real ffmpeg, the standard AWS environment pointing at the emulator.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use kvs_emulator::Emulator;
use serde_json::{Value, json};

const STREAM: &str = "service-test";
const BUCKET: &str = "uploads";
const SECRET: &str = "service-test-secret/0123456789abcdefghijk";

/// A short 320x240 H.264 + AAC MP4 with its index at the end (what phones upload).
fn clip(seconds: u32) -> Bytes {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("clip.mp4");
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
        .args(["-c:a", "aac", "-shortest"])
        .arg(&path)
        .status()
        .unwrap();
    assert!(status.success());
    Bytes::from(std::fs::read(&path).unwrap())
}

struct Service {
    child: Child,
    addr: SocketAddr,
    emu: Emulator,
    /// Unique to this test's emulator: finds ffmpeg processes that read from it.
    emu_port: String,
    logs: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

impl Service {
    async fn start(extra_env: &[(&str, &str)]) -> Service {
        let emu = Emulator::builder()
            .with_credentials("AKIASERVICETEST00000", SECRET)
            .with_persist_delay(Duration::from_millis(20))
            .start()
            .await
            .unwrap();
        emu.create_stream(STREAM, 24).await.unwrap();
        emu.create_bucket(BUCKET).await.unwrap();
        let creds = emu.credentials();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_s3-to-kvs"));
        cmd.env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("AWS_ENDPOINT_URL", emu.url())
            .env("AWS_ACCESS_KEY_ID", &creds.access_key_id)
            .env("AWS_SECRET_ACCESS_KEY", &creds.secret_access_key)
            .env("AWS_REGION", emu.region())
            .env("AWS_EC2_METADATA_DISABLED", "true")
            .env("KVS_STREAM_NAME", STREAM)
            .env("HOST", "127.0.0.1")
            .env("PORT", "0")
            .env("PACE", "fast")
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        for (k, v) in extra_env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().unwrap();
        let stderr = child.stderr.take().unwrap();
        let (tx, rx) = mpsc::channel();
        let logs = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let sink = logs.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Ok(v) = serde_json::from_str::<Value>(&line)
                    && v["message"] == "listening"
                {
                    let _ = tx.send(v["addr"].as_str().unwrap().parse::<SocketAddr>().unwrap());
                }
                sink.lock().unwrap().push(line);
            }
        });
        let addr = rx
            .recv_timeout(Duration::from_secs(20))
            .expect("service did not start");
        let emu_port = emu.addr().port().to_string();
        Service {
            child,
            addr,
            emu,
            emu_port,
            logs,
        }
    }

    fn logs(&self) -> Vec<String> {
        self.logs.lock().unwrap().clone()
    }

    async fn upload(&self, key: &str, body: Bytes) {
        self.emu.put_object(BUCKET, key, body).await.unwrap();
    }

    async fn request(
        &self,
        method: &str,
        path: &str,
        body: impl Into<Bytes>,
    ) -> (u16, Value, Option<String>) {
        let stream = tokio::net::TcpStream::connect(self.addr).await.unwrap();
        let (mut sender, conn) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
                .await
                .unwrap();
        tokio::spawn(conn);
        let req = hyper::Request::builder()
            .method(method)
            .uri(path)
            .header("host", self.addr.to_string())
            .body(Full::new(body.into()))
            .unwrap();
        let resp = sender.send_request(req).await.unwrap();
        let status = resp.status().as_u16();
        let retry_after = resp
            .headers()
            .get("retry-after")
            .map(|v| v.to_str().unwrap().to_owned());
        let bytes = resp.into_body().collect().await.unwrap().to_bytes();
        (
            status,
            serde_json::from_slice(&bytes).unwrap_or(Value::Null),
            retry_after,
        )
    }

    async fn process(&self, key: &str) -> (u16, Value) {
        let body = json!({ "bucketName": BUCKET, "keyName": key }).to_string();
        let (s, v, _) = self.request("POST", "/processObject", body).await;
        (s, v)
    }

    async fn wait_job(&self, id: &str) -> Value {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let (_, v, _) = self.request("GET", &format!("/jobs/{id}"), "").await;
            if !matches!(v["state"].as_str(), Some("queued" | "running")) {
                return v;
            }
            assert!(Instant::now() < deadline, "job {id} did not end: {v}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// ffmpeg processes reading from this test's emulator (none may outlive a job).
    fn ffmpeg_processes(&self) -> Vec<u32> {
        let mut pids = Vec::new();
        for entry in std::fs::read_dir("/proc").unwrap().flatten() {
            let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
                continue;
            };
            let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
            let cmdline = String::from_utf8_lossy(&cmdline);
            if cmdline.starts_with("ffmpeg")
                && cmdline.contains(&format!("127.0.0.1:{}", self.emu_port))
            {
                pids.push(pid);
            }
        }
        pids
    }

    fn terminate(&mut self) -> std::process::ExitStatus {
        // SIGTERM, as ECS stops a task.
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(Instant::now() < deadline, "service ignored SIGTERM");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_an_object_end_to_end_and_reports_the_job() {
    let svc = Service::start(&[]).await;
    let (status, health, _) = svc.request("GET", "/", "").await;
    assert_eq!((status, health["status"].as_str()), (200, Some("ok")));

    svc.upload("in/clip one.mp4", clip(5)).await;
    let (status, answer) = svc.process("in/clip one.mp4").await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["streamName"], STREAM);
    let first = answer["startFragmentNumber"]
        .as_str()
        .expect("startFragmentNumber")
        .to_owned();
    assert_eq!(first.len(), 47, "fragment numbers are 47 digits: {first}");

    let job = svc.wait_job(answer["jobId"].as_str().unwrap()).await;
    assert_eq!(job["state"], "succeeded", "{job}");
    let stored = svc.emu.fragments(STREAM);
    assert_eq!(stored.len(), 3, "a 5 s clip at 2 s fragments: 0, 2 and 4 s");
    assert_eq!(stored[0].fragment_number, first);
    assert!(stored.iter().all(|f| f.persisted));
    assert_eq!(
        job["progress"]["fragments_persisted"].as_u64(),
        Some(stored.len() as u64)
    );
    assert_eq!(job["progress"]["fragments_failed"].as_u64(), Some(0));

    let (_, jobs, _) = svc.request("GET", "/jobs", "").await;
    assert_eq!(jobs["jobs"].as_array().unwrap().len(), 1);
    assert!(svc.ffmpeg_processes().is_empty());

    // JSON logs, one object per line, and never the secret key or a presigned signature.
    let logs = svc.logs();
    assert!(logs.iter().any(|l| l.contains("streaming")));
    for line in &logs {
        serde_json::from_str::<Value>(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
        assert!(!line.contains(SECRET), "secret key in logs: {line}");
        assert!(
            !line.contains("X-Amz-Signature="),
            "presigned signature in logs: {line}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_inputs_get_clear_errors_and_the_service_keeps_serving() {
    let svc = Service::start(&[]).await;
    svc.upload("notes.txt", Bytes::from_static(b"this is not a video\n"))
        .await;

    let (s, v, _) = svc.request("POST", "/processObject", "{not json").await;
    assert_eq!(s, 400, "{v}");
    assert!(v["message"].as_str().unwrap().contains("not valid JSON"));
    let (s, v, _) = svc
        .request("POST", "/processObject", r#"{"bucketName":"uploads"}"#)
        .await;
    assert_eq!(s, 400);
    assert!(v["message"].as_str().unwrap().contains("keyName"));
    let (s, _, _) = svc
        .request("POST", "/processObject", vec![b' '; 70_000])
        .await;
    assert_eq!(s, 413);

    let (s, v) = svc.process("no/such/key.mp4").await;
    assert_eq!(s, 404, "{v}");
    let body = json!({ "bucketName": "no-such-bucket", "keyName": "k.mp4" }).to_string();
    let (s, v, _) = svc.request("POST", "/processObject", body).await;
    assert_eq!(s, 404, "{v}");

    let (s, v) = svc.process("notes.txt").await;
    assert_eq!(s, 422, "{v}");
    let message = v["message"].as_str().unwrap();
    assert!(message.contains("notes.txt"), "names the input: {message}");

    let (s, _, _) = svc.request("GET", "/jobs/not-a-uuid", "").await;
    assert_eq!(s, 404);
    let (s, _, _) = svc.request("DELETE", "/processObject", "").await;
    assert_eq!(s, 405);
    let (s, _, _) = svc.request("GET", "/", "").await;
    assert_eq!(s, 200);
    assert!(svc.emu.fragments(STREAM).is_empty());
    assert!(svc.ffmpeg_processes().is_empty(), "no orphan ffmpeg");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_event_body_streams_every_record_in_turn() {
    let svc = Service::start(&[]).await;
    svc.upload("a b.mp4", clip(3)).await;
    svc.upload("c.mp4", clip(3)).await;
    let event = json!({ "Records": [
        { "eventSource": "aws:s3", "s3": { "bucket": { "name": BUCKET }, "object": { "key": "a+b.mp4" } } },
        { "eventSource": "aws:s3", "s3": { "bucket": { "name": BUCKET }, "object": { "key": "c.mp4" } } },
    ]});
    let (s, v, _) = svc
        .request("POST", "/processObject", event.to_string())
        .await;
    assert!(s == 200 || s == 202, "{s} {v}");
    let results = v["results"].as_array().unwrap();
    assert_eq!(results.len(), 2);
    for r in results {
        let job = svc.wait_job(r["jobId"].as_str().unwrap()).await;
        assert_eq!(job["state"], "succeeded", "{job}");
    }
    let keys: Vec<String> = svc.request("GET", "/jobs", "").await.1["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|j| j["object"]["key"].as_str().unwrap().to_owned())
        .collect();
    assert!(
        keys.contains(&"a b.mp4".to_owned()),
        "URL-decoded key: {keys:?}"
    );
    // One PutMedia connection at a time on the stream: never refused for a concurrent one.
    let conns = svc.emu.connections(STREAM);
    assert_eq!(conns.len(), 2);
    assert!(conns[0].ended_ms.unwrap() <= conns[1].started_ms);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queue_limit_duplicates_and_sigterm() {
    // Real-time pacing keeps the first job running while the others arrive.
    let mut svc = Service::start(&[
        ("PACE", "realtime"),
        ("MAX_QUEUED_OBJECTS", "1"),
        ("FIRST_ACK_WAIT_SECONDS", "1"),
        ("DRAIN_SECONDS", "15"),
    ])
    .await;
    svc.upload("long.mp4", clip(12)).await;
    svc.upload("next.mp4", clip(2)).await;
    svc.upload("third.mp4", clip(2)).await;

    // 200 once the first fragment is acknowledged, 202 if that takes longer than the wait.
    let (s, first) = svc.process("long.mp4").await;
    assert!(s == 200 || s == 202, "{s} {first}");
    // The Lambda retried: the same object is not streamed twice.
    let (s, again) = svc.process("long.mp4").await;
    assert!(s == 200 || s == 202, "{s} {again}");
    assert_eq!(again["jobId"], first["jobId"]);
    let (_, running, _) = svc
        .request(
            "GET",
            &format!("/jobs/{}", first["jobId"].as_str().unwrap()),
            "",
        )
        .await;
    assert_eq!(running["state"], "running", "{running}");
    let (_, all, _) = svc.request("GET", "/jobs", "").await;
    assert_eq!(
        all["jobs"].as_array().unwrap().len(),
        1,
        "no second job: {all}"
    );

    let (s, queued) = svc.process("next.mp4").await;
    assert_eq!(s, 202, "queued behind the running job: {queued}");
    assert_eq!(queued["state"], "queued");
    let (s, busy, retry_after) = svc
        .request(
            "POST",
            "/processObject",
            json!({"bucketName": BUCKET, "keyName": "third.mp4"}).to_string(),
        )
        .await;
    assert_eq!(s, 429, "{busy}");
    assert_eq!(retry_after.as_deref(), Some("30"));

    // Let a few fragments through, then SIGTERM mid-stream: intake stops, the running stream
    // ends cleanly, the process exits.
    let deadline = Instant::now() + Duration::from_secs(20);
    while svc.emu.fragments(STREAM).len() < 2 {
        assert!(Instant::now() < deadline, "no fragment stored");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let status = svc.terminate();
    assert!(status.success(), "exit status {status}");
    let conns = svc.emu.connections(STREAM);
    assert_eq!(conns.len(), 1, "the queued job never started");
    assert!(conns[0].ended_ms.is_some());
    let stored = svc.emu.fragments(STREAM);
    assert!(
        !stored.is_empty() && stored.len() < 6,
        "stopped early: {} fragments",
        stored.len()
    );
    assert!(
        stored.iter().all(|f| f.persisted),
        "every sent fragment acknowledged"
    );
    assert!(
        svc.ffmpeg_processes().is_empty(),
        "no orphan ffmpeg after SIGTERM"
    );
}
