//! SQS through the unmodified `aws-sdk-sqs` client (AWS JSON 1.0 protocol).

mod support;

use std::time::{Duration, Instant};

use aws_sdk_sqs::Client;
use aws_sdk_sqs::error::ProvideErrorMetadata;
use aws_sdk_sqs::types::{MessageAttributeValue, MessageSystemAttributeName, QueueAttributeName};
use kvs_emulator::Emulator;
use support::*;

async fn sqs(emu: &Emulator) -> Client {
    Client::new(&emu.sdk_config())
}

fn md5_hex(data: &[u8]) -> String {
    use md5::Digest as _;
    hex::encode(md5::Md5::digest(data))
}

/// MD5 of message attributes as the SQS developer guide specifies it, written independently
/// of the emulator's.
fn md5_attrs(attrs: &[(&str, &str, &[u8], u8)]) -> String {
    let mut sorted = attrs.to_vec();
    sorted.sort_by_key(|a| a.0);
    let mut buf = Vec::new();
    for (name, ty, value, transport) in sorted {
        for part in [name.as_bytes(), ty.as_bytes()] {
            buf.extend_from_slice(&(part.len() as u32).to_be_bytes());
            buf.extend_from_slice(part);
        }
        buf.push(transport);
        buf.extend_from_slice(&(value.len() as u32).to_be_bytes());
        buf.extend_from_slice(value);
    }
    md5_hex(&buf)
}

async fn attr(c: &Client, url: &str, name: QueueAttributeName) -> String {
    c.get_queue_attributes()
        .queue_url(url)
        .attribute_names(name.clone())
        .send()
        .await
        .unwrap()
        .attributes()
        .and_then(|a| a.get(&name))
        .cloned()
        .unwrap_or_default()
}

#[tokio::test]
async fn standard_queue_send_receive_visibility_delete() {
    let emu = emulator().await;
    let c = sqs(&emu).await;
    let url = create_queue(&c, "jobs", &[(QueueAttributeName::VisibilityTimeout, "1")]).await;
    assert_eq!(url, format!("{}/123456789012/jobs", emu.url()));
    assert_eq!(url, emu.queue_url("jobs"));
    let got = c.get_queue_url().queue_name("jobs").send().await.unwrap();
    assert_eq!(got.queue_url(), Some(url.as_str()));
    // Same attributes again: the same queue (CreateQueue is idempotent).
    c.create_queue()
        .queue_name("jobs")
        .attributes(QueueAttributeName::VisibilityTimeout, "1")
        .send()
        .await
        .unwrap();

    let body = r#"{"bucketName":"b","keyName":"cam 1/a.mkv"}"#;
    let sent = c
        .send_message()
        .queue_url(&url)
        .message_body(body)
        .message_attributes(
            "kind",
            MessageAttributeValue::builder()
                .data_type("String")
                .string_value("upload")
                .build()
                .unwrap(),
        )
        .message_attributes(
            "blob",
            MessageAttributeValue::builder()
                .data_type("Binary")
                .binary_value(aws_sdk_sqs::primitives::Blob::new(vec![0u8, 1, 2, 255]))
                .build()
                .unwrap(),
        )
        .message_attributes(
            "n",
            MessageAttributeValue::builder()
                .data_type("Number.int")
                .string_value("42")
                .build()
                .unwrap(),
        )
        .send()
        .await
        .unwrap();
    let expected_attrs_md5 = md5_attrs(&[
        ("kind", "String", b"upload", 1),
        ("blob", "Binary", &[0, 1, 2, 255], 2),
        ("n", "Number.int", b"42", 1),
    ]);
    assert_eq!(
        sent.md5_of_message_body(),
        Some(md5_hex(body.as_bytes()).as_str())
    );
    assert_eq!(
        sent.md5_of_message_attributes(),
        Some(expected_attrs_md5.as_str())
    );
    let id = sent.message_id().unwrap().to_owned();
    assert_eq!(
        attr(&c, &url, QueueAttributeName::ApproximateNumberOfMessages).await,
        "1"
    );

    let recv = c
        .receive_message()
        .queue_url(&url)
        .max_number_of_messages(10)
        .message_system_attribute_names(MessageSystemAttributeName::All)
        .message_attribute_names("All")
        .send()
        .await
        .unwrap();
    let m = &recv.messages()[0];
    assert_eq!(recv.messages().len(), 1);
    assert_eq!(m.message_id(), Some(id.as_str()));
    assert_eq!(m.body(), Some(body));
    assert_eq!(m.md5_of_body(), Some(md5_hex(body.as_bytes()).as_str()));
    assert_eq!(
        m.md5_of_message_attributes(),
        Some(expected_attrs_md5.as_str())
    );
    let attrs = m.message_attributes().unwrap();
    assert_eq!(attrs["kind"].string_value(), Some("upload"));
    assert_eq!(
        attrs["blob"].binary_value().unwrap().as_ref(),
        &[0, 1, 2, 255]
    );
    let sys = m.attributes().unwrap();
    assert_eq!(
        sys[&MessageSystemAttributeName::ApproximateReceiveCount],
        "1"
    );
    assert!(sys.contains_key(&MessageSystemAttributeName::SentTimestamp));
    assert!(sys.contains_key(&MessageSystemAttributeName::ApproximateFirstReceiveTimestamp));
    assert!(sys.contains_key(&MessageSystemAttributeName::SenderId));
    let first_handle = m.receipt_handle().unwrap().to_owned();

    // In flight: invisible until its visibility timeout (1 s) is over.
    assert_eq!(
        attr(
            &c,
            &url,
            QueueAttributeName::ApproximateNumberOfMessagesNotVisible
        )
        .await,
        "1"
    );
    let again = c.receive_message().queue_url(&url).send().await.unwrap();
    assert!(again.messages().is_empty());
    let again = c
        .receive_message()
        .queue_url(&url)
        .wait_time_seconds(3)
        .message_system_attribute_names(MessageSystemAttributeName::ApproximateReceiveCount)
        .send()
        .await
        .unwrap();
    let m2 = &again.messages()[0];
    assert_eq!(m2.message_id(), Some(id.as_str()));
    assert_eq!(
        m2.attributes().unwrap()[&MessageSystemAttributeName::ApproximateReceiveCount],
        "2"
    );
    assert!(
        m2.message_attributes().is_none(),
        "attributes only when asked for"
    );
    let handle = m2.receipt_handle().unwrap().to_owned();
    assert_ne!(
        handle, first_handle,
        "each receive gives a new receipt handle"
    );

    // The stale handle: the call succeeds, the message stays (SQS developer guide).
    c.delete_message()
        .queue_url(&url)
        .receipt_handle(&first_handle)
        .send()
        .await
        .unwrap();
    assert_eq!(emu.queue_messages("jobs").len(), 1);
    // Extending the current handle keeps it invisible; visibility 0 returns it at once.
    c.change_message_visibility()
        .queue_url(&url)
        .receipt_handle(&handle)
        .visibility_timeout(60)
        .send()
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(1200)).await;
    assert!(
        c.receive_message()
            .queue_url(&url)
            .send()
            .await
            .unwrap()
            .messages()
            .is_empty()
    );
    c.change_message_visibility()
        .queue_url(&url)
        .receipt_handle(&handle)
        .visibility_timeout(0)
        .send()
        .await
        .unwrap();
    let third = c.receive_message().queue_url(&url).send().await.unwrap();
    let handle = third.messages()[0].receipt_handle().unwrap().to_owned();
    c.delete_message()
        .queue_url(&url)
        .receipt_handle(&handle)
        .send()
        .await
        .unwrap();
    assert!(emu.queue_messages("jobs").is_empty());
    assert_eq!(
        attr(&c, &url, QueueAttributeName::ApproximateNumberOfMessages).await,
        "0"
    );
}

#[tokio::test]
async fn long_polling_answers_when_a_message_arrives() {
    let emu = emulator().await;
    let c = sqs(&emu).await;
    let url = create_queue(&c, "lp", &[]).await;

    // Nothing arrives: the call lasts the whole wait.
    let t = Instant::now();
    let r = c
        .receive_message()
        .queue_url(&url)
        .wait_time_seconds(1)
        .send()
        .await
        .unwrap();
    assert!(r.messages().is_empty());
    assert!(
        t.elapsed() >= Duration::from_millis(950),
        "{:?}",
        t.elapsed()
    );

    // A message sent 300 ms into a 10 s wait is answered right away.
    let c2 = c.clone();
    let url2 = url.clone();
    let sender = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(300)).await;
        c2.send_message()
            .queue_url(&url2)
            .message_body("hi")
            .send()
            .await
            .unwrap();
    });
    let t = Instant::now();
    let r = c
        .receive_message()
        .queue_url(&url)
        .wait_time_seconds(10)
        .send()
        .await
        .unwrap();
    let took = t.elapsed();
    sender.await.unwrap();
    assert_eq!(r.messages()[0].body(), Some("hi"));
    assert!(
        took >= Duration::from_millis(250) && took < Duration::from_secs(3),
        "{took:?}"
    );

    // A queue-level ReceiveMessageWaitTimeSeconds applies when the call names none, and a
    // delayed message is delivered when its delay ends, inside the wait.
    c.set_queue_attributes()
        .queue_url(&url)
        .attributes(QueueAttributeName::ReceiveMessageWaitTimeSeconds, "5")
        .send()
        .await
        .unwrap();
    c.send_message()
        .queue_url(&url)
        .message_body("later")
        .delay_seconds(1)
        .send()
        .await
        .unwrap();
    assert_eq!(
        attr(
            &c,
            &url,
            QueueAttributeName::ApproximateNumberOfMessagesDelayed
        )
        .await,
        "1"
    );
    let t = Instant::now();
    let r = c.receive_message().queue_url(&url).send().await.unwrap();
    assert_eq!(r.messages()[0].body(), Some("later"));
    assert!(
        t.elapsed() >= Duration::from_millis(700),
        "{:?}",
        t.elapsed()
    );
    assert!(t.elapsed() < Duration::from_secs(4), "{:?}", t.elapsed());
}

#[tokio::test]
async fn errors_carry_the_documented_codes() {
    let emu = emulator().await;
    let c = sqs(&emu).await;
    let err = c
        .get_queue_url()
        .queue_name("missing")
        .send()
        .await
        .unwrap_err()
        .into_service_error();
    assert!(err.is_queue_does_not_exist(), "{err:?}");
    assert_eq!(err.code(), Some("AWS.SimpleQueueService.NonExistentQueue"));
    let err = c
        .send_message()
        .queue_url(emu.queue_url("missing"))
        .message_body("x")
        .send()
        .await
        .unwrap_err()
        .into_service_error();
    assert!(err.is_queue_does_not_exist(), "{err:?}");

    let url = create_queue(&c, "q", &[]).await;
    let err = c
        .create_queue()
        .queue_name("q")
        .attributes(QueueAttributeName::VisibilityTimeout, "99")
        .send()
        .await
        .unwrap_err()
        .into_service_error();
    assert!(err.is_queue_name_exists(), "{err:?}");
    let err = c
        .delete_message()
        .queue_url(&url)
        .receipt_handle("not-a-handle")
        .send()
        .await
        .unwrap_err()
        .into_service_error();
    assert!(err.is_receipt_handle_is_invalid(), "{err:?}");
    let err = c
        .receive_message()
        .queue_url(&url)
        .max_number_of_messages(11)
        .send()
        .await
        .unwrap_err()
        .into_service_error();
    assert_eq!(err.code(), Some("InvalidParameterValue"), "{err:?}");
    let err = c
        .receive_message()
        .queue_url(&url)
        .wait_time_seconds(21)
        .send()
        .await
        .unwrap_err()
        .into_service_error();
    assert_eq!(err.code(), Some("InvalidParameterValue"), "{err:?}");
    let err = c
        .create_queue()
        .queue_name("bad name")
        .send()
        .await
        .unwrap_err()
        .into_service_error();
    assert_eq!(err.code(), Some("InvalidParameterValue"), "{err:?}");
    let err = c
        .set_queue_attributes()
        .queue_url(&url)
        .attributes(QueueAttributeName::VisibilityTimeout, "50000")
        .send()
        .await
        .unwrap_err()
        .into_service_error();
    assert!(err.is_invalid_attribute_value(), "{err:?}");
    let err = c
        .send_message()
        .queue_url(&url)
        .message_body("bad \u{1} char")
        .send()
        .await
        .unwrap_err()
        .into_service_error();
    assert!(err.is_invalid_message_contents(), "{err:?}");
    // A handle of a message that is not in flight any more cannot change visibility.
    c.send_message()
        .queue_url(&url)
        .message_body("m")
        .send()
        .await
        .unwrap();
    let h = c
        .receive_message()
        .queue_url(&url)
        .visibility_timeout(0)
        .send()
        .await
        .unwrap()
        .messages()[0]
        .receipt_handle()
        .unwrap()
        .to_owned();
    let err = c
        .change_message_visibility()
        .queue_url(&url)
        .receipt_handle(&h)
        .visibility_timeout(5)
        .send()
        .await
        .unwrap_err()
        .into_service_error();
    assert_eq!(
        err.code(),
        Some("AWS.SimpleQueueService.MessageNotInflight"),
        "{err:?}"
    );

    c.delete_queue().queue_url(&url).send().await.unwrap();
    let err = c
        .get_queue_url()
        .queue_name("q")
        .send()
        .await
        .unwrap_err()
        .into_service_error();
    assert!(err.is_queue_does_not_exist(), "{err:?}");
}

#[tokio::test]
async fn concurrent_long_polls_never_share_a_message() {
    let emu = emulator().await;
    let c = sqs(&emu).await;
    let url = create_queue(&c, "many", &[]).await;
    let pollers: Vec<_> = (0..6)
        .map(|_| {
            let c = c.clone();
            let url = url.clone();
            tokio::spawn(async move {
                c.receive_message()
                    .queue_url(url)
                    .wait_time_seconds(2)
                    .max_number_of_messages(10)
                    .send()
                    .await
                    .unwrap()
                    .messages
                    .unwrap_or_default()
                    .into_iter()
                    .map(|m| m.body.unwrap())
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(200)).await;
    for i in 0..4 {
        c.send_message()
            .queue_url(&url)
            .message_body(format!("m{i}"))
            .send()
            .await
            .unwrap();
    }
    let mut got = Vec::new();
    for p in pollers {
        got.extend(p.await.unwrap());
    }
    got.sort();
    assert_eq!(
        got,
        ["m0", "m1", "m2", "m3"],
        "each message to exactly one poller"
    );

    // A waiting poll is woken when an in-flight message is made visible again.
    let handle = {
        c.send_message()
            .queue_url(&url)
            .message_body("back")
            .send()
            .await
            .unwrap();
        let r = c
            .receive_message()
            .queue_url(&url)
            .max_number_of_messages(10)
            .send()
            .await
            .unwrap();
        let m = r
            .messages()
            .iter()
            .find(|m| m.body() == Some("back"))
            .unwrap();
        m.receipt_handle().unwrap().to_owned()
    };
    let c2 = c.clone();
    let url2 = url.clone();
    let waiter = tokio::spawn(async move {
        let t = Instant::now();
        let r = c2
            .receive_message()
            .queue_url(url2)
            .wait_time_seconds(10)
            .send()
            .await
            .unwrap();
        (
            t.elapsed(),
            r.messages()
                .first()
                .and_then(|m| m.body().map(str::to_owned)),
        )
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    c.change_message_visibility()
        .queue_url(&url)
        .receipt_handle(&handle)
        .visibility_timeout(0)
        .send()
        .await
        .unwrap();
    let (took, body) = waiter.await.unwrap();
    assert_eq!(body.as_deref(), Some("back"));
    assert!(took < Duration::from_secs(3), "{took:?}");
}
