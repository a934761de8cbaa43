//! The emulator for clients other than this workspace's (issue 12, item 5): S3 Signature
//! Version 2 refused the way real S3 refuses it. Accepting correct SigV2 signatures is proved
//! with the real boto3 (`python_boto3.rs`), which signs them.

mod support;

use kvs_emulator::Emulator;
use support::raw_exchange;

async fn emulator_with_object() -> Emulator {
    let emu = Emulator::builder().start().await.unwrap();
    emu.create_bucket("bkt").await.unwrap();
    emu.put_object("bkt", "k", bytes::Bytes::from_static(b"v"))
        .await
        .unwrap();
    emu
}

fn code(text: &str) -> &str {
    text.split("<Code>")
        .nth(1)
        .and_then(|t| t.split("</Code>").next())
        .unwrap_or("")
}

fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

#[tokio::test]
async fn sigv2_refusals_are_real_s3_errors() {
    let emu = emulator_with_object().await;
    let akid = emu.credentials().access_key_id;

    // Header-signed with a wrong signature: routed to S3 (not "missing authentication") and
    // refused there.
    let date = httpdate::fmt_http_date(std::time::SystemTime::now());
    let req = format!(
        "GET /bkt/k HTTP/1.1\r\nhost: x\r\ndate: {date}\r\nauthorization: AWS {akid}:AAAAAAAAAAAAAAAAAAAAAAAAAAA=\r\nconnection: close\r\n\r\n"
    );
    let (status, text) = raw_exchange(&emu, req.as_bytes()).await;
    assert_eq!(
        (status, code(&text)),
        (403, "SignatureDoesNotMatch"),
        "{text}"
    );

    // Header-signed an hour ago: too skewed.
    let old = httpdate::fmt_http_date(
        std::time::SystemTime::now() - std::time::Duration::from_secs(3600),
    );
    let req = format!(
        "GET /bkt/k HTTP/1.1\r\nhost: x\r\ndate: {old}\r\nauthorization: AWS {akid}:AAAAAAAAAAAAAAAAAAAAAAAAAAA=\r\nconnection: close\r\n\r\n"
    );
    let (status, text) = raw_exchange(&emu, req.as_bytes()).await;
    assert_eq!(
        (status, code(&text)),
        (403, "RequestTimeTooSkewed"),
        "{text}"
    );

    // Presigned, wrong signature.
    let expires = now_secs() + 300;
    let req = format!(
        "GET /bkt/k?AWSAccessKeyId={akid}&Expires={expires}&Signature=AAAAAAAAAAAAAAAAAAAAAAAAAAA%3D HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n"
    );
    let (status, text) = raw_exchange(&emu, req.as_bytes()).await;
    assert_eq!(
        (status, code(&text)),
        (403, "SignatureDoesNotMatch"),
        "{text}"
    );

    // Presigned, expired.
    let expired = now_secs() - 5;
    let req = format!(
        "GET /bkt/k?AWSAccessKeyId={akid}&Expires={expired}&Signature=AAAAAAAAAAAAAAAAAAAAAAAAAAA%3D HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n"
    );
    let (status, text) = raw_exchange(&emu, req.as_bytes()).await;
    assert_eq!((status, code(&text)), (403, "AccessDenied"), "{text}");
    assert!(text.contains("Request has expired"), "{text}");

    // An unknown key.
    let req = format!(
        "GET /bkt/k?AWSAccessKeyId=AKIANOBODY&Expires={expires}&Signature=AAAA HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n"
    );
    let (status, text) = raw_exchange(&emu, req.as_bytes()).await;
    assert_eq!((status, code(&text)), (403, "InvalidAccessKeyId"), "{text}");
}

#[tokio::test]
async fn unsigned_requests_other_than_web_identity_are_still_refused() {
    let emu = Emulator::builder().start().await.unwrap();
    let body = "Action=GetCallerIdentity&Version=2011-06-15";
    let req = format!(
        "POST / HTTP/1.1\r\nhost: x\r\ncontent-type: application/x-www-form-urlencoded\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    let (status, text) = raw_exchange(&emu, req.as_bytes()).await;
    assert_eq!(status, 403, "{text}");
    assert_eq!(code(&text), "MissingAuthenticationToken", "{text}");
}
