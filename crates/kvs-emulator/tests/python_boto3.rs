//! The emulator through the real boto3 (`tests/python/test_boto3.py`), configured only by the
//! exports the `kvs-emulator` binary prints: region, S3 with SigV4 and SigV2 (presigned and
//! header-signed, accepted and refused as real S3 does), KVS, STS and web identity.
//!
//! Needs `python3` with boto3 (`scripts/system-deps.sh` installs it); fails, naming the fix,
//! when it is missing.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

#[test]
fn boto3_works_with_the_printed_exports() {
    let probe = Command::new("python3")
        .args(["-c", "import boto3, botocore; print(boto3.__version__)"])
        .output();
    let version = match probe {
        Ok(out) if out.status.success() => String::from_utf8_lossy(&out.stdout).trim().to_owned(),
        Ok(out) => panic!(
            "boto3 is missing: run `pip install boto3` (scripts/system-deps.sh does it): {}",
            String::from_utf8_lossy(&out.stderr)
        ),
        Err(e) => panic!("python3 is missing ({e}): install python3 and boto3"),
    };

    let mut emu = Command::new(env!("CARGO_BIN_EXE_kvs-emulator"))
        .args(["--port", "0", "--log", "warn"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut out = BufReader::new(emu.stdout.take().unwrap());
    let mut exports = Vec::new();
    let mut line = String::new();
    while out.read_line(&mut line).unwrap() > 0 {
        if let Some((k, v)) = line
            .trim()
            .strip_prefix("export ")
            .and_then(|e| e.split_once('='))
        {
            exports.push((k.to_owned(), v.to_owned()));
        }
        line.clear();
        if exports.len() == 5 {
            break;
        }
    }

    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/python/test_boto3.py");
    let home = tempfile::tempdir().unwrap();
    let mut cmd = Command::new("python3");
    cmd.arg(script);
    // Only the printed exports: no AWS_* from the outside, no ~/.aws files.
    for (k, _) in std::env::vars() {
        if k.starts_with("AWS_") {
            cmd.env_remove(k);
        }
    }
    cmd.env("HOME", home.path())
        .env("AWS_CONFIG_FILE", home.path().join("config"))
        .env(
            "AWS_SHARED_CREDENTIALS_FILE",
            home.path().join("credentials"),
        )
        .envs(exports.iter().map(|(k, v)| (k.as_str(), v.as_str())));
    let t0 = Instant::now();
    let result = cmd.output().unwrap();
    let _ = emu.kill();
    let _ = emu.wait();
    let stdout = String::from_utf8_lossy(&result.stdout);
    let stderr = String::from_utf8_lossy(&result.stderr);
    assert!(
        result.status.success() && stdout.trim_end().ends_with("boto3 checks passed"),
        "boto3 {version} against the emulator failed.\nexports: {exports:?}\nstdout:\n{stdout}\nstderr:\n{stderr}"
    );
    assert!(t0.elapsed() < Duration::from_secs(120));
}
