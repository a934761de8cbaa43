//! The `kvs-emulator` binary: output contract, SIGTERM stop, `--data-dir` persistence, faults
//! from flags.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use aws_credential_types::Credentials;

struct Running {
    child: Child,
    url: String,
    env: Vec<(String, String)>,
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn spawn(args: &[&str]) -> Running {
    let mut child = Command::new(env!("CARGO_BIN_EXE_kvs-emulator"))
        .args(["--port", "0", "--log", "warn"])
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut first = String::new();
    out.read_line(&mut first).unwrap();
    let url = first
        .trim()
        .strip_prefix("listening on ")
        .expect(&first)
        .to_owned();
    assert!(url.starts_with("http://127.0.0.1:"), "{url}");
    let mut env = Vec::new();
    for _ in 0..5 {
        let mut l = String::new();
        out.read_line(&mut l).unwrap();
        let (k, v) = l
            .trim()
            .strip_prefix("export ")
            .unwrap()
            .split_once('=')
            .unwrap();
        env.push((k.to_owned(), v.to_owned()));
    }
    Running { child, url, env }
}

fn get<'a>(env: &'a [(String, String)], k: &str) -> &'a str {
    &env.iter().find(|(n, _)| n == k).unwrap().1
}

async fn config(r: &Running) -> aws_config::SdkConfig {
    aws_config::SdkConfig::builder()
        .behavior_version(aws_config::BehaviorVersion::latest())
        .endpoint_url(get(&r.env, "AWS_ENDPOINT_URL"))
        .region(aws_config::Region::new(
            get(&r.env, "AWS_REGION").to_owned(),
        ))
        .credentials_provider(
            aws_credential_types::provider::SharedCredentialsProvider::new(Credentials::new(
                get(&r.env, "AWS_ACCESS_KEY_ID"),
                get(&r.env, "AWS_SECRET_ACCESS_KEY"),
                None,
                None,
                "env",
            )),
        )
        .build()
}

fn sigterm_and_wait(r: Running) {
    signal_and_wait(r, "-TERM");
}

fn signal_and_wait(mut r: Running, signal: &str) {
    let pid = r.child.id().to_string();
    assert!(
        Command::new("kill")
            .args([signal, &pid])
            .status()
            .unwrap()
            .success()
    );
    let t0 = std::time::Instant::now();
    loop {
        if let Some(status) = r.child.try_wait().unwrap() {
            assert!(status.success(), "clean exit on {signal}: {status}");
            return;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(5),
            "stopped within 5 s of {signal}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[tokio::test]
async fn output_contract_sigterm_and_data_dir_persistence() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_str().unwrap();
    let r = spawn(&[
        "--data-dir",
        d,
        "--region",
        "eu-west-1",
        "--access-key-id",
        "AKIATESTBINARY000000",
    ]);
    assert_eq!(get(&r.env, "AWS_ENDPOINT_URL"), r.url);
    assert_eq!(get(&r.env, "AWS_REGION"), "eu-west-1");
    // boto3 reads only AWS_DEFAULT_REGION (NoRegionError without it).
    assert_eq!(get(&r.env, "AWS_DEFAULT_REGION"), "eu-west-1");
    assert_eq!(get(&r.env, "AWS_ACCESS_KEY_ID"), "AKIATESTBINARY000000");
    let conf = config(&r).await;
    let kv = aws_sdk_kinesisvideo::Client::new(&conf);
    kv.create_stream()
        .stream_name("kept")
        .data_retention_in_hours(1)
        .send()
        .await
        .unwrap();
    let s3 = aws_sdk_s3::Client::new(&conf);
    s3.create_bucket().bucket("bkt").send().await.unwrap();
    s3.put_object()
        .bucket("bkt")
        .key("k")
        .body(bytes::Bytes::from_static(b"v").into())
        .send()
        .await
        .unwrap();
    sigterm_and_wait(r);

    let r = spawn(&[
        "--data-dir",
        d,
        "--region",
        "eu-west-1",
        "--access-key-id",
        "AKIATESTBINARY000000",
    ]);
    let conf = config(&r).await;
    let kv = aws_sdk_kinesisvideo::Client::new(&conf);
    let info = kv
        .describe_stream()
        .stream_name("kept")
        .send()
        .await
        .unwrap()
        .stream_info
        .unwrap();
    assert_eq!(info.data_retention_in_hours(), Some(1));
    let got = aws_sdk_s3::Client::new(&conf)
        .get_object()
        .bucket("bkt")
        .key("k")
        .send()
        .await
        .unwrap();
    assert_eq!(
        got.body.collect().await.unwrap().into_bytes().as_ref(),
        b"v"
    );
    sigterm_and_wait(r);
}

#[tokio::test]
async fn in_memory_by_default_and_faults_from_flags() {
    let r = spawn(&["--fault", r#"{"ClockSkew":{"offset_ms":600000}}"#]);
    let kv = aws_sdk_kinesisvideo::Client::new(&config(&r).await);
    // The scripted 10-minute skew makes every signed request "expired".
    let err = kv.list_streams().send().await.unwrap_err();
    assert_eq!(err.raw_response().unwrap().status().as_u16(), 403);
    // Ctrl-C (SIGINT) stops it cleanly too.
    signal_and_wait(r, "-INT");

    let bad = Command::new(env!("CARGO_BIN_EXE_kvs-emulator"))
        .args(["--port", "0", "--fault", "{not json"])
        .output()
        .unwrap();
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("--fault"));
}

#[tokio::test]
async fn logs_have_no_colour_codes_when_stderr_is_not_a_terminal() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_kvs-emulator"))
        .args(["--port", "0", "--log", "debug"])
        .env_remove("NO_COLOR")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut first = String::new();
    out.read_line(&mut first).unwrap();
    let url = first
        .trim()
        .strip_prefix("listening on ")
        .unwrap()
        .to_owned();
    // A refused request logs at debug level too.
    let addr = url.strip_prefix("http://").unwrap();
    let mut tcp = std::net::TcpStream::connect(addr).unwrap();
    std::io::Write::write_all(
        &mut tcp,
        b"GET /nothing HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n",
    )
    .unwrap();
    let mut answer = String::new();
    let _ = std::io::Read::read_to_string(&mut tcp, &mut answer);
    let pid = child.id().to_string();
    Command::new("kill").args(["-TERM", &pid]).status().unwrap();
    let mut stderr = String::new();
    std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut stderr).unwrap();
    assert!(child.wait().unwrap().success());
    assert!(stderr.contains("listening"), "{stderr}");
    assert!(stderr.contains("stopping"), "{stderr}");
    assert!(
        !stderr.contains('\x1b'),
        "ANSI escape codes in a piped stderr: {stderr:?}"
    );
}
