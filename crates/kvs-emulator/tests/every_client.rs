//! The emulator for clients other than this workspace's (issue 12, item 5): S3 Signature
//! Version 2 refused the way real S3 refuses it. Accepting correct SigV2 signatures is proved
//! with the real boto3 (`python_boto3.rs`), which signs them.

mod support;

use kvs_emulator::{Emulator, api, sigv4};
use proptest::prelude::*;
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

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    /// The SigV2 header form is found wherever it is, and SigV4 is never taken for it.
    #[test]
    fn sigv2_header_detection(akid in "[A-Z0-9]{1,40}", sig in "[A-Za-z0-9+/=]{1,40}", junk in ".{0,200}") {
        let header = format!("AWS {akid}:{sig}");
        let v2 = sigv4::sigv2(Some(&header), None);
        prop_assert_eq!(v2.map(|v| v.access_key_id().to_owned()), Some(akid.clone()));
        let v4 = format!("AWS4-HMAC-SHA256 Credential={akid}/20240101/us-east-1/s3/aws4_request, SignedHeaders=host, Signature={sig}");
        prop_assert!(sigv4::sigv2(Some(&v4), None).is_none());
        prop_assert_eq!(sigv4::scope_service(Some(&v4), None), Some("s3".to_owned()));
        let _ = sigv4::sigv2(Some(&junk), Some(&junk));
        let _ = sigv4::scope_service(Some(&junk), Some(&junk));
    }

    /// The presigned SigV2 form needs all of AWSAccessKeyId and Signature, in any order.
    #[test]
    fn sigv2_query_detection(akid in "[A-Z0-9]{1,20}", expires in 0u64..4_000_000_000, shuffle in any::<bool>()) {
        let parts = [format!("AWSAccessKeyId={akid}"), format!("Expires={expires}"), "Signature=abc%3D".to_owned()];
        let q = if shuffle { format!("{}&{}&{}", parts[2], parts[0], parts[1]) } else { parts.join("&") };
        match sigv4::sigv2(None, Some(&q)) {
            Some(sigv4::SigV2::Query { access_key_id, expires: e, security_token }) => {
                prop_assert_eq!(&access_key_id, &akid);
                prop_assert_eq!(e, Some(expires as i64));
                prop_assert_eq!(security_token, None);
            }
            other => prop_assert!(false, "{other:?}"),
        }
        prop_assert_eq!(sigv4::scope_service(None, Some(&q)), Some("s3".to_owned()));
        let unsigned = format!("AWSAccessKeyId={akid}&Expires={expires}");
        prop_assert!(sigv4::sigv2(None, Some(&unsigned)).is_none());
    }

    /// Web identity tokens: a well-formed one always parses to its claims; anything else is an
    /// STS error, never a panic.
    #[test]
    fn web_identity_tokens(sub in "[a-z:/.-]{1,60}", aud in "[a-z.]{0,30}", junk in ".{0,300}") {
        use base64::Engine as _;
        let enc = |v: serde_json::Value| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string());
        let token = format!("{}.{}.sig", enc(serde_json::json!({"alg": "RS256"})), enc(serde_json::json!({"sub": sub, "aud": [aud], "exp": 2_000_000_000u64})));
        let id = api::parse_web_identity_token(&token, 1_700_000_000_000).unwrap();
        prop_assert_eq!(&id.subject, &sub);
        prop_assert_eq!(&id.audience, &aud);
        let expired = api::parse_web_identity_token(&token, 2_000_000_000_000).unwrap_err();
        prop_assert_eq!(expired.error_type, "ExpiredTokenException");
        if let Err(e) = api::parse_web_identity_token(&junk, 1_700_000_000_000) {
            prop_assert!(e.status == 400);
        }
    }
}
