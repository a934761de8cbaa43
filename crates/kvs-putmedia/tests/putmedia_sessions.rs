//! One `PutMediaClient`, many sessions: concurrent sessions on many streams against the
//! emulator over real HTTP, sharing one credentials cache (one STS AssumeRole), one SDK client
//! and a per-stream endpoint cache. Control-plane calls are counted by a byte-level relay in
//! front of the emulator.
#![cfg(feature = "client")]

#[path = "common/putmedia.rs"]
mod putmedia_common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use kvs_emulator::Emulator;
use kvs_putmedia::mkv::{RefragmentConfig, TimecodeMode};
use kvs_putmedia::{
    CompletionAck, Error, OverflowPolicy, PutMediaClient, PutMediaClientBuilder, SessionOptions,
    StreamId,
};
use kvs_test_support::emu::fast_emulator;
use putmedia_common::{SynthMkv, chunks};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Counts occurrences of byte patterns in what clients send to the emulator.
#[derive(Debug, Default)]
struct Counts {
    patterns: Vec<(&'static [u8], AtomicUsize)>,
}

impl Counts {
    fn new(patterns: &[&'static [u8]]) -> Arc<Self> {
        Arc::new(Self {
            patterns: patterns.iter().map(|p| (*p, AtomicUsize::new(0))).collect(),
        })
    }

    fn get(&self, pattern: &[u8]) -> usize {
        self.patterns
            .iter()
            .find(|(p, _)| *p == pattern)
            .map_or(0, |(_, n)| n.load(Ordering::SeqCst))
    }
}

/// A TCP relay on 127.0.0.1 to `upstream` that counts the patterns in the client's bytes
/// (plain HTTP, so the request lines and form bodies are visible). Returns its URL.
async fn counting_relay(upstream: std::net::SocketAddr, counts: Arc<Counts>) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((client, _)) = listener.accept().await {
            let counts = counts.clone();
            tokio::spawn(async move {
                let Ok(server) = TcpStream::connect(upstream).await else {
                    return;
                };
                let (mut cr, mut cw) = client.into_split();
                let (mut sr, mut sw) = server.into_split();
                let down = tokio::spawn(async move {
                    let _ = tokio::io::copy(&mut sr, &mut cw).await;
                    let _ = cw.shutdown().await;
                });
                let mut buf = vec![0u8; 16 * 1024];
                // The tail of the previous read, so a pattern split across reads is still seen.
                let mut carry: Vec<u8> = Vec::new();
                loop {
                    let n = match cr.read(&mut buf).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => n,
                    };
                    let mut window = std::mem::take(&mut carry);
                    let old = window.len();
                    window.extend_from_slice(&buf[..n]);
                    for (p, count) in &counts.patterns {
                        // Only matches that end in the new bytes are new.
                        let found = window
                            .windows(p.len())
                            .enumerate()
                            .filter(|(i, w)| w == p && i + p.len() > old)
                            .count();
                        count.fetch_add(found, Ordering::SeqCst);
                    }
                    let keep = window.len().min(64);
                    carry = window[window.len() - keep..].to_vec();
                    if sw.write_all(&buf[..n]).await.is_err() {
                        break;
                    }
                }
                let _ = sw.shutdown().await;
                let _ = down.await;
            });
        }
    });
    format!("http://{addr}")
}

/// Four 1 s fragments of synthetic media.
fn media() -> Bytes {
    SynthMkv {
        frames: 100,
        frame_ms: 40,
        gop: 25,
        frame_bytes: 200,
        cluster_frames: 25,
    }
    .build()
}

fn one_second_fragments(b: PutMediaClientBuilder) -> PutMediaClientBuilder {
    b.with_refragment_config(
        RefragmentConfig::builder()
            .with_target_fragment_duration(Duration::from_secs(1))
            .build()
            .unwrap(),
    )
}

/// A client with no stream of its own, its control plane behind `endpoint`.
fn shared_client(emu: &Emulator, endpoint: &str) -> PutMediaClientBuilder {
    let c = emu.credentials();
    one_second_fragments(
        PutMediaClient::builder()
            .with_region(emu.region())
            .with_credentials(aws_credential_types::Credentials::new(
                c.access_key_id,
                c.secret_access_key,
                None,
                None,
                "emulator",
            ))
            .with_endpoint_url(endpoint)
            .with_allow_http(true),
    )
}

/// Streams `mkv` into one session of `client`; returns fragments persisted per the summary.
async fn run_session(client: PutMediaClient, opts: SessionOptions, mkv: Bytes) -> u64 {
    let (mut sink, mut acks) = client.start_session(opts).await.unwrap();
    let drain = tokio::spawn(async move { while acks.next().await.is_some() {} });
    for c in chunks(&mkv, 4096) {
        sink.send(c).await.unwrap();
    }
    let summary = sink.close().await.unwrap();
    drain.await.unwrap();
    summary.fragments_persisted
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_sessions_from_one_client_all_persist_and_share_one_assumed_role() {
    const SESSIONS: usize = 50;
    let emu = fast_emulator().await;
    let counts = Counts::new(&[
        b"Action=AssumeRole",
        b"/getDataEndpoint",
        b"/describeStream",
    ]);
    let endpoint = counting_relay(emu.addr(), counts.clone()).await;
    for i in 0..SESSIONS {
        emu.create_stream(&format!("cam-{i}"), 24).await.unwrap();
    }
    let client = shared_client(&emu, &endpoint)
        .with_assume_role("arn:aws:iam::123456789012:role/kvs-producer")
        .build()
        .unwrap();
    assert!(client.stream().is_none());
    // No stream on the builder: `start` says so instead of guessing.
    assert!(matches!(client.start().await, Err(Error::Config { .. })));

    let mkv = media();
    let mut tasks = Vec::new();
    for i in 0..SESSIONS {
        // A clone is the same client: same caches, same connector.
        let client = client.clone();
        let opts = SessionOptions::new(format!("cam-{i}"));
        tasks.push(tokio::spawn(run_session(client, opts, mkv.clone())));
    }
    for t in tasks {
        assert_eq!(t.await.unwrap(), 4);
    }
    for i in 0..SESSIONS {
        let frags = emu.fragments(&format!("cam-{i}"));
        assert_eq!(frags.len(), 4, "cam-{i}");
        assert!(frags.iter().all(|f| f.persisted), "cam-{i}");
    }
    // One role assumption for fifty sessions; one endpoint and retention lookup per stream.
    assert_eq!(counts.get(b"Action=AssumeRole"), 1);
    assert_eq!(counts.get(b"/getDataEndpoint"), SESSIONS);
    assert_eq!(counts.get(b"/describeStream"), SESSIONS);

    // A second session on a known stream reuses both caches.
    let persisted = run_session(client.clone(), SessionOptions::new("cam-0"), media()).await;
    assert_eq!(persisted, 4);
    assert_eq!(counts.get(b"/getDataEndpoint"), SESSIONS);
    assert_eq!(counts.get(b"/describeStream"), SESSIONS);
    assert_eq!(counts.get(b"Action=AssumeRole"), 1);
}

#[tokio::test]
async fn session_options_override_the_builder_defaults() {
    let emu = fast_emulator().await;
    emu.create_stream("abs", 24).await.unwrap();
    emu.create_stream("rel", 0).await.unwrap();
    let counts = Counts::new(&[b"/describeStream"]);
    let endpoint = counting_relay(emu.addr(), counts.clone()).await;
    let client = shared_client(&emu, &endpoint)
        .with_stream_name("rel")
        .build()
        .unwrap();
    assert_eq!(client.stream(), Some(&StreamId::Name("rel".into())));

    // The builder's stream, defaults: RELATIVE, Auto completion (RECEIVED: zero retention).
    let (mut sink, acks) = client.start().await.unwrap();
    let drain = tokio::spawn(acks.collect::<Vec<_>>());
    for c in chunks(&media(), 4096) {
        sink.send(c).await.unwrap();
    }
    let summary = sink.close().await.unwrap();
    drain.await.unwrap();
    assert_eq!(summary.fragments_received, 4);
    assert_eq!(summary.fragments_persisted, 0);
    assert_eq!(counts.get(b"/describeStream"), 1);

    // Per-session choices: ABSOLUTE timecodes, PERSISTED without asking DescribeStream.
    let origin = 1_700_000_000_000;
    let opts = SessionOptions::new("abs")
        .with_timecode_mode(TimecodeMode::Absolute {
            origin_epoch_ms: origin,
        })
        .with_completion_ack(CompletionAck::Persisted)
        .with_buffer_bound(1 << 20)
        .with_buffer_duration(Duration::from_secs(30))
        .with_overflow_policy(OverflowPolicy::Backpressure);
    assert_eq!(run_session(client.clone(), opts, media()).await, 4);
    assert_eq!(counts.get(b"/describeStream"), 1);
    let headers = &emu.connections("abs")[0].headers;
    let tc_type = headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("x-amzn-fragment-timecode-type"))
        .map(|(_, v)| v.as_str());
    assert_eq!(tc_type, Some("ABSOLUTE"));
    let first = &emu.fragments("abs")[0];
    assert_eq!(first.producer_timestamp_ms, origin);

    // Per-session options are validated when the session starts.
    let err = client
        .start_session(SessionOptions::new("abs").with_buffer_bound(10))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Config { .. }), "{err:?}");
    let err = client
        .start_session(SessionOptions::new("has space"))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("has space"), "{err}");
}

#[test]
fn stream_ids_from_strings() {
    assert_eq!(StreamId::from("cam-1"), StreamId::Name("cam-1".into()));
    let arn = "arn:aws:kinesisvideo:us-east-1:123456789012:stream/cam-1/1";
    assert_eq!(StreamId::from(arn), StreamId::Arn(arn.into()));
    assert_eq!(SessionOptions::new(arn).stream().as_str(), arn);
}

/// A tiny HTTP proxy on 127.0.0.1: `CONNECT host:port` opens a tunnel, any other request
/// (absolute-form, how HTTP clients send plain-HTTP requests to a proxy) is relayed as is to its
/// host. Counts both.
async fn proxy(connects: Arc<AtomicUsize>, forwards: Arc<AtomicUsize>) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut client, _)) = listener.accept().await {
            let (connects, forwards) = (connects.clone(), forwards.clone());
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut byte = [0u8; 1];
                while !head.ends_with(b"\r\n\r\n") {
                    match client.read(&mut byte).await {
                        Ok(1) => head.push(byte[0]),
                        _ => return,
                    }
                }
                let text = String::from_utf8_lossy(&head).to_string();
                let mut words = text.split_whitespace();
                let (method, target) = (words.next().unwrap_or(""), words.next().unwrap_or(""));
                let host = if method == "CONNECT" {
                    target.to_owned()
                } else {
                    let uri: http::Uri = target.parse().unwrap();
                    uri.authority().unwrap().to_string()
                };
                let Ok(mut server) = TcpStream::connect(&host).await else {
                    return;
                };
                if method == "CONNECT" {
                    connects.fetch_add(1, Ordering::SeqCst);
                    client
                        .write_all(b"HTTP/1.1 200 Connection Established\r\n\r\n")
                        .await
                        .unwrap();
                } else {
                    forwards.fetch_add(1, Ordering::SeqCst);
                    server.write_all(&head).await.unwrap();
                }
                let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
            });
        }
    });
    format!("http://{addr}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn putmedia_and_sdk_calls_go_through_the_proxy_unless_no_proxy_says_otherwise() {
    let emu = fast_emulator().await;
    emu.create_stream("proxied", 24).await.unwrap();
    let (connects, forwards) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let url = proxy(connects.clone(), forwards.clone()).await;

    let via = kvs_putmedia::ProxySettings::none()
        .with_http(&url)
        .with_https(&url);
    let client = shared_client(&emu, &emu.url())
        .with_proxy(via.clone())
        .build()
        .unwrap();
    let persisted = run_session(client, SessionOptions::new("proxied"), media()).await;
    assert_eq!(persisted, 4);
    // PutMedia through a CONNECT tunnel; DescribeStream and GetDataEndpoint (the SDK) through
    // the same proxy, on one kept-alive connection (the relay counts connections).
    assert_eq!(connects.load(Ordering::SeqCst), 1);
    assert_eq!(forwards.load(Ordering::SeqCst), 1);

    // NO_PROXY: straight to the emulator.
    let (c0, f0) = (
        connects.load(Ordering::SeqCst),
        forwards.load(Ordering::SeqCst),
    );
    let client = shared_client(&emu, &emu.url())
        .with_proxy(via.with_no_proxy("127.0.0.1"))
        .build()
        .unwrap();
    assert_eq!(
        run_session(client, SessionOptions::new("proxied"), media()).await,
        4
    );
    assert_eq!(connects.load(Ordering::SeqCst), c0);
    assert_eq!(forwards.load(Ordering::SeqCst), f0);

    // A proxy that is not http://host is refused when the client is built.
    let err = shared_client(&emu, &emu.url())
        .with_proxy(kvs_putmedia::ProxySettings::none().with_https("socks5://127.0.0.1:1"))
        .build()
        .unwrap_err();
    assert!(err.to_string().contains("socks5"), "{err}");
}

#[tokio::test]
async fn credential_errors_that_cannot_heal_fail_at_once() {
    #[derive(Debug)]
    struct NoProvider(Arc<AtomicUsize>);
    impl aws_credential_types::provider::ProvideCredentials for NoProvider {
        fn provide_credentials<'a>(
            &'a self,
        ) -> aws_credential_types::provider::future::ProvideCredentials<'a>
        where
            Self: 'a,
        {
            self.0.fetch_add(1, Ordering::SeqCst);
            aws_credential_types::provider::future::ProvideCredentials::ready(Err(
                aws_credential_types::provider::error::CredentialsError::not_loaded(
                    "no provider in the chain gave credentials",
                ),
            ))
        }
    }

    let emu = fast_emulator().await;
    emu.create_stream("creds", 24).await.unwrap();
    // No provider in the chain: one try, then the error.
    let calls = Arc::new(AtomicUsize::new(0));
    let t0 = std::time::Instant::now();
    let err = shared_client(&emu, &emu.url())
        .with_credentials(NoProvider(calls.clone()))
        // No DescribeStream: the provider is asked by PutMedia only.
        .with_completion_ack(CompletionAck::Persisted)
        .build()
        .unwrap()
        .start_session(SessionOptions::new("creds"))
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            Error::Credentials {
                retryable: false,
                ..
            }
        ),
        "{err:?}"
    );
    assert!(!err.is_retryable());
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    assert!(t0.elapsed() < Duration::from_secs(3), "{:?}", t0.elapsed());

    // STS refuses the AssumeRole (unknown base credentials): no retry either.
    let t0 = std::time::Instant::now();
    let err = shared_client(&emu, &emu.url())
        .with_credentials(aws_credential_types::Credentials::new(
            "AKIDUNKNOWN000000000",
            "not-a-secret",
            None,
            None,
            "wrong",
        ))
        .with_assume_role("arn:aws:iam::123456789012:role/kvs-producer")
        .build()
        .unwrap()
        .start_session(SessionOptions::new("creds"))
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            Error::Credentials {
                retryable: false,
                ..
            }
        ),
        "{err:?}"
    );
    assert!(t0.elapsed() < Duration::from_secs(3), "{:?}", t0.elapsed());
    assert!(emu.connections("creds").is_empty());
}

/// A TLS server on 127.0.0.1 with a certificate for `localhost` issued by a fresh CA; it
/// answers every request with 403 AccessDeniedException. Returns its port and the CA (PEM).
async fn tls_server() -> (u16, String) {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair};
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let leaf_key = KeyPair::generate().unwrap();
    let leaf = CertificateParams::new(vec!["localhost".to_owned()])
        .unwrap()
        .signed_by(&leaf_key, &ca, &ca_key)
        .unwrap();
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(
            vec![leaf.der().clone()],
            rustls::pki_types::PrivateKeyDer::Pkcs8(leaf_key.serialize_der().into()),
        )
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let mut head = Vec::new();
                let mut buf = [0u8; 1024];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match tls.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                let body = br#"{"message":"denied by the TLS test server"}"#;
                let resp = format!(
                    "HTTP/1.1 403 Forbidden\r\nx-amzn-ErrorType: AccessDeniedException\r\n\
                     content-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
                    body.len()
                );
                let _ = tls.write_all(resp.as_bytes()).await;
                let _ = tls.write_all(body).await;
                let _ = tls.shutdown().await;
            });
        }
    });
    (port, ca.pem())
}

/// A client of the [`tls_server`] at `endpoint`, with test credentials.
fn tls_client(b: PutMediaClientBuilder, endpoint: &str) -> PutMediaClient {
    b.with_region("us-east-1")
        .with_credentials(aws_credential_types::Credentials::for_tests())
        .with_data_endpoint(endpoint)
        .with_completion_ack(CompletionAck::Persisted)
        .with_stream_name("tls")
        .build()
        .unwrap()
}

#[tokio::test]
async fn putmedia_trusts_a_ca_bundle_and_nothing_unknown() {
    let (port, ca_pem) = tls_server().await;
    let endpoint = format!("https://localhost:{port}");
    let client = |b: PutMediaClientBuilder| tls_client(b, &endpoint);
    // Platform roots only: the test CA is unknown, the handshake fails, and at once: no
    // retry can change the trust store.
    let t0 = std::time::Instant::now();
    let err = client(PutMediaClient::builder()).start().await.unwrap_err();
    assert!(
        matches!(err, Error::Config { .. }) && err.to_string().contains("AWS_CA_BUNDLE"),
        "expected a refused certificate, got {err:?}"
    );
    assert!(t0.elapsed() < Duration::from_secs(3), "{:?}", t0.elapsed());
    // With the bundle the handshake succeeds and the server's answer comes through.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ca.pem");
    std::fs::write(&path, &ca_pem).unwrap();
    let err = client(PutMediaClient::builder().with_ca_bundle(&path))
        .start()
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Auth { status: 403, .. }), "{err:?}");
    let err = client(PutMediaClient::builder().with_ca_bundle_pem(ca_pem))
        .start()
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Auth { status: 403, .. }), "{err:?}");
}

/// Set in the child process of [`a_profiles_ca_bundle_is_trusted_by_putmedia`]: the endpoint of
/// the parent's TLS server.
const PROFILE_CHILD: &str = "KVS_PUTMEDIA_PROFILE_CA_CHILD";

/// Runs [`child_builds_from_a_profile`] in a child process whose only AWS setting is the
/// config file `config` (the builder reads the process environment, which tests cannot set).
async fn run_profile_child(endpoint: &str, dir: &std::path::Path, config: &str) -> String {
    std::fs::write(dir.join("config"), config).unwrap();
    let mut cmd = tokio::process::Command::new(std::env::current_exe().unwrap());
    cmd.args([
        "--exact",
        "child_builds_from_a_profile",
        "--include-ignored",
        "--nocapture",
    ]);
    for (k, _) in std::env::vars() {
        if k.starts_with("AWS_") || k.starts_with("SSL_CERT") {
            cmd.env_remove(k);
        }
    }
    cmd.env(PROFILE_CHILD, endpoint)
        .env("HOME", dir)
        .env("AWS_CONFIG_FILE", dir.join("config"))
        .env("AWS_SHARED_CREDENTIALS_FILE", dir.join("credentials"))
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .kill_on_drop(true);
    let out = tokio::time::timeout(Duration::from_secs(60), cmd.output())
        .await
        .expect("the child finished")
        .unwrap();
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[tokio::test]
async fn a_profiles_ca_bundle_is_trusted_by_putmedia() {
    let (port, ca_pem) = tls_server().await;
    let endpoint = format!("https://localhost:{port}");
    let dir = tempfile::tempdir().unwrap();
    let bundle = dir.path().join("ca.pem");
    std::fs::write(&bundle, &ca_pem).unwrap();
    // The profile names the bundle: the handshake succeeds and the server's 403 comes through.
    let with = format!("[default]\nca_bundle = {}\n", bundle.display());
    let out = run_profile_child(&endpoint, dir.path(), &with).await;
    assert!(out.contains("CHILD_GOT Auth 403"), "{out}");
    // The same profile without it: the test CA is unknown and the certificate is refused.
    let out = run_profile_child(&endpoint, dir.path(), "[default]\n").await;
    assert!(out.contains("CHILD_GOT Config"), "{out}");
}

#[tokio::test]
#[ignore = "run by a_profiles_ca_bundle_is_trusted_by_putmedia in a child process"]
async fn child_builds_from_a_profile() {
    let Ok(endpoint) = std::env::var(PROFILE_CHILD) else {
        return; // run directly: nothing to do without the parent's environment
    };
    let err = tls_client(PutMediaClientBuilder::from_env().await, &endpoint)
        .start()
        .await
        .unwrap_err();
    match err {
        Error::Auth { status, .. } => println!("CHILD_GOT Auth {status}"),
        Error::Config { .. } => println!("CHILD_GOT Config: {err}"),
        other => println!("CHILD_GOT other: {other:?}"),
    }
}
