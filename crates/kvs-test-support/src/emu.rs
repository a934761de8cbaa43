//! The emulator as tests use it.

use std::time::{Duration, Instant, SystemTime};

use aws_credential_types::Credentials;
use aws_credential_types::provider::SharedCredentialsProvider;
use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use kvs_emulator::Emulator;
use kvs_putmedia::mkv::TimecodeMode;
use kvs_putmedia::{PutMediaClientBuilder, SessionSummary};

/// An emulator with test-friendly timings: PERSISTED 20 ms after RECEIVED, IDLE acks every
/// 200 ms, idle connections closed after 5 s.
pub async fn emulator() -> Emulator {
    Emulator::builder()
        .with_persist_delay(Duration::from_millis(20))
        .with_idle_ack_interval(Duration::from_millis(200))
        .with_idle_timeout(Duration::from_secs(5))
        .start()
        .await
        .expect("the emulator starts")
}

/// An emulator that persists after 5 ms and never slows a producer down (ingest limit 1 TiB/s):
/// for tests of a client's own behaviour.
pub async fn fast_emulator() -> Emulator {
    Emulator::builder()
        .with_persist_delay(Duration::from_millis(5))
        .with_ingest_rate_limit(1 << 40)
        .start()
        .await
        .expect("the emulator starts")
}

/// The emulator's long-term credentials as SDK credentials.
pub fn credentials(emu: &Emulator) -> Credentials {
    let c = emu.credentials();
    Credentials::new(c.access_key_id, c.secret_access_key, None, None, "emu")
}

/// [`Emulator::sdk_config`] with other credentials (e.g. STS-issued ones, or wrong ones).
pub fn sdk_config_with(emu: &Emulator, creds: Credentials) -> aws_config::SdkConfig {
    emu.sdk_config()
        .into_builder()
        .credentials_provider(SharedCredentialsProvider::new(creds))
        .build()
}

/// A PutMedia client builder for `stream` on the emulator: its SDK configuration and URL, plain
/// HTTP allowed.
pub fn putmedia_client(emu: &Emulator, stream: &str) -> PutMediaClientBuilder {
    PutMediaClientBuilder::new()
        .with_sdk_config(emu.sdk_config())
        .with_endpoint_url(emu.url())
        .with_allow_http(true)
        .with_stream_name(stream)
}

/// Polls `done` every 50 ms until it is true; panics naming `what` after `timeout`.
pub async fn wait_until(what: &str, timeout: Duration, mut done: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !done().await {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Streams `mkv` into `stream` through the kvs-putmedia client with `mode`, reading its acks,
/// and returns the summary; panics unless every fragment was delivered.
pub async fn put_mkv(
    emu: &Emulator,
    stream: &str,
    mkv: Vec<u8>,
    mode: TimecodeMode,
) -> SessionSummary {
    let client = putmedia_client(emu, stream)
        .with_timecode_mode(mode)
        .build()
        .expect("a valid client");
    let (mut sink, mut acks) = client.start().await.expect("the session starts");
    let drain = tokio::spawn(async move { while acks.next().await.is_some() {} });
    sink.send(Bytes::from(mkv))
        .await
        .expect("the media is accepted");
    let summary = sink.close().await.expect("the session ends");
    drain.await.expect("the ack reader ends");
    assert!(
        summary.fragments_failed.is_empty(),
        "failed fragments: {:?}",
        summary.fragments_failed
    );
    summary
}

/// Milliseconds since the Unix epoch, now.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .expect("the clock is after 1970")
        .as_millis() as u64
}

/// The standard AWS environment that points a child process's SDK at the emulator: endpoint,
/// region and the emulator's keys, and no instance-metadata lookups (`Command::envs`).
pub fn aws_env(emu: &Emulator) -> [(&'static str, String); 5] {
    let c = emu.credentials();
    [
        ("AWS_ENDPOINT_URL", emu.url()),
        ("AWS_REGION", emu.region().to_owned()),
        ("AWS_ACCESS_KEY_ID", c.access_key_id),
        ("AWS_SECRET_ACCESS_KEY", c.secret_access_key),
        ("AWS_EC2_METADATA_DISABLED", "true".to_owned()),
    ]
}
