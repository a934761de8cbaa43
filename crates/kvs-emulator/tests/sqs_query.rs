//! The SQS query protocol (form body with `Action=`, XML out) that older SDKs (boto3 before the
//! JSON switch, the AWS CLI v1) send, signed by `aws-sigv4` and sent over plain HTTP.

mod support;

use std::time::SystemTime;

use aws_sigv4::http_request::{SignableBody, SignableRequest, SigningSettings, sign};
use aws_sigv4::sign::v4;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use kvs_emulator::Emulator;
use kvs_emulator::xml::{XmlElement, parse_xml};
use support::*;

/// Posts a signed query-protocol request; returns the status and the parsed XML.
async fn call(emu: &Emulator, path: &str, form: &[(&str, &str)]) -> (u16, XmlElement) {
    let body: String = url::form_urlencoded::Serializer::new(String::new())
        .extend_pairs(form)
        .finish();
    let url = format!("{}{path}", emu.url());
    let headers = vec![
        (
            "content-type".to_owned(),
            "application/x-www-form-urlencoded; charset=utf-8".to_owned(),
        ),
        (
            "host".to_owned(),
            emu.url().trim_start_matches("http://").to_owned(),
        ),
    ];
    let identity = credentials(emu).into();
    let params = v4::SigningParams::builder()
        .identity(&identity)
        .region(emu.region())
        .name("sqs")
        .time(SystemTime::now())
        .settings(SigningSettings::default())
        .build()
        .unwrap()
        .into();
    let signable = SignableRequest::new(
        "POST",
        &url,
        headers.iter().map(|(k, v)| (k.as_str(), v.as_str())),
        SignableBody::Bytes(body.as_bytes()),
    )
    .unwrap();
    let (instructions, _) = sign(signable, &params).unwrap().into_parts();
    let mut req = http::Request::builder().method("POST").uri(&url);
    for (k, v) in &headers {
        req = req.header(k, v);
    }
    for h in instructions.into_parts().0 {
        req = req.header(h.name(), h.value());
    }
    let req = req.body(Full::new(bytes::Bytes::from(body))).unwrap();
    let client = Client::builder(TokioExecutor::new()).build_http();
    let resp = client.request(req).await.unwrap();
    let status = resp.status().as_u16();
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    let text = String::from_utf8(bytes.to_vec()).unwrap();
    (
        status,
        parse_xml(&text).unwrap_or_else(|e| panic!("{e}: {text}")),
    )
}

fn text<'a>(el: &'a XmlElement, path: &[&str]) -> &'a str {
    let mut cur = el;
    for p in path {
        cur = cur
            .first(p)
            .unwrap_or_else(|| panic!("no <{p}> in {cur:?}"));
    }
    &cur.text
}

fn md5_hex(data: &[u8]) -> String {
    use md5::Digest as _;
    hex::encode(md5::Md5::digest(data))
}

#[tokio::test]
async fn query_protocol_round_trip() {
    let emu = emulator().await;
    let (status, x) = call(
        &emu,
        "/",
        &[
            ("Action", "CreateQueue"),
            ("QueueName", "legacy"),
            ("Attribute.1.Name", "VisibilityTimeout"),
            ("Attribute.1.Value", "7"),
            ("Version", "2012-11-05"),
        ],
    )
    .await;
    assert_eq!(status, 200, "{x:?}");
    assert_eq!(x.name, "CreateQueueResponse");
    let url = text(&x, &["CreateQueueResult", "QueueUrl"]).to_owned();
    assert_eq!(url, emu.queue_url("legacy"));

    let (_, x) = call(
        &emu,
        "/",
        &[
            ("Action", "SendMessage"),
            ("QueueUrl", &url),
            ("MessageBody", "hello <world> & more"),
            ("MessageAttribute.1.Name", "k"),
            ("MessageAttribute.1.Value.DataType", "String"),
            ("MessageAttribute.1.Value.StringValue", "v"),
        ],
    )
    .await;
    assert_eq!(
        text(&x, &["SendMessageResult", "MD5OfMessageBody"]),
        md5_hex(b"hello <world> & more")
    );
    assert!(!text(&x, &["SendMessageResult", "MD5OfMessageAttributes"]).is_empty());

    // Older clients post to the queue URL itself.
    let (_, x) = call(
        &emu,
        "/123456789012/legacy",
        &[
            ("Action", "ReceiveMessage"),
            ("AttributeName.1", "All"),
            ("MessageAttributeName.1", "All"),
            ("MaxNumberOfMessages", "10"),
        ],
    )
    .await;
    let m = x
        .first("ReceiveMessageResult")
        .and_then(|r| r.first("Message"))
        .unwrap();
    assert_eq!(text(m, &["Body"]), "hello <world> & more");
    let attrs: Vec<(&str, &str)> = m
        .all("Attribute")
        .map(|a| (text(a, &["Name"]), text(a, &["Value"])))
        .collect();
    assert!(
        attrs.contains(&("ApproximateReceiveCount", "1")),
        "{attrs:?}"
    );
    let ma = m.first("MessageAttribute").unwrap();
    assert_eq!(text(ma, &["Name"]), "k");
    assert_eq!(text(ma, &["Value", "StringValue"]), "v");
    assert_eq!(text(ma, &["Value", "DataType"]), "String");
    let handle = text(m, &["ReceiptHandle"]).to_owned();

    let (_, x) = call(
        &emu,
        "/",
        &[
            ("Action", "DeleteMessageBatch"),
            ("QueueUrl", &url),
            ("DeleteMessageBatchRequestEntry.1.Id", "a"),
            ("DeleteMessageBatchRequestEntry.1.ReceiptHandle", &handle),
            ("DeleteMessageBatchRequestEntry.2.Id", "b"),
            ("DeleteMessageBatchRequestEntry.2.ReceiptHandle", "junk"),
        ],
    )
    .await;
    let r = x.first("DeleteMessageBatchResult").unwrap();
    assert_eq!(text(r, &["DeleteMessageBatchResultEntry", "Id"]), "a");
    assert_eq!(
        text(r, &["BatchResultErrorEntry", "Code"]),
        "ReceiptHandleIsInvalid"
    );
    assert!(emu.queue_messages("legacy").is_empty());

    let (_, x) = call(
        &emu,
        "/",
        &[
            ("Action", "GetQueueAttributes"),
            ("QueueUrl", &url),
            ("AttributeName.1", "VisibilityTimeout"),
        ],
    )
    .await;
    let a = x
        .first("GetQueueAttributesResult")
        .and_then(|r| r.first("Attribute"))
        .unwrap();
    assert_eq!(
        (text(a, &["Name"]), text(a, &["Value"])),
        ("VisibilityTimeout", "7")
    );

    let (status, x) = call(
        &emu,
        "/",
        &[("Action", "GetQueueUrl"), ("QueueName", "missing")],
    )
    .await;
    assert_eq!(status, 400);
    assert_eq!(x.name, "ErrorResponse");
    assert_eq!(
        text(&x, &["Error", "Code"]),
        "AWS.SimpleQueueService.NonExistentQueue"
    );
    assert_eq!(text(&x, &["Error", "Type"]), "Sender");
}
