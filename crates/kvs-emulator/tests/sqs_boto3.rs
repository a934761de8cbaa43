//! Runs `tests/python/sqs_boto3.py` (unmodified boto3) against a live emulator.
//! Needs `python3` with boto3 (`pip install boto3`); fails, saying so, when it is missing.

mod support;

use std::process::Command;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn boto3_speaks_sqs_and_s3_notifications() {
    let probe = Command::new("python3")
        .args(["-c", "import boto3"])
        .output();
    assert!(
        probe.as_ref().is_ok_and(|o| o.status.success()),
        "python3 with boto3 is needed for this test (pip install boto3): {probe:?}"
    );
    let emu = support::emulator().await;
    let c = emu.credentials();
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/python/sqs_boto3.py");
    let url = emu.url();
    let region = emu.region().to_owned();
    let out = tokio::task::spawn_blocking(move || {
        Command::new("python3")
            .arg(script)
            .env("AWS_ENDPOINT_URL", url)
            .env("AWS_DEFAULT_REGION", region)
            .env("AWS_ACCESS_KEY_ID", c.access_key_id)
            .env("AWS_SECRET_ACCESS_KEY", c.secret_access_key)
            .env_remove("AWS_SESSION_TOKEN")
            .env_remove("AWS_PROFILE")
            .env("AWS_CONFIG_FILE", "/dev/null")
            .env("AWS_SHARED_CREDENTIALS_FILE", "/dev/null")
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "boto3 script failed:\n{stdout}\n{stderr}"
    );
    assert!(stdout.contains("sqs protocol: json"), "{stdout}");
    assert!(stdout.trim_end().ends_with("ok"), "{stdout}");
}
