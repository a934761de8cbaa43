//! SQS batches, FIFO queues, dead-letter redrive and persistence, through `aws-sdk-sqs`.

mod support;

use aws_sdk_sqs::Client;
use aws_sdk_sqs::error::ProvideErrorMetadata;
use aws_sdk_sqs::types::{
    ChangeMessageVisibilityBatchRequestEntry, DeleteMessageBatchRequestEntry,
    MessageSystemAttributeName, QueueAttributeName, SendMessageBatchRequestEntry,
};
use kvs_emulator::Emulator;
use support::*;

async fn sqs(emu: &Emulator) -> Client {
    Client::new(&sdk_config(emu).await)
}

async fn receive_all(c: &Client, url: &str, max: i32) -> Vec<aws_sdk_sqs::types::Message> {
    c.receive_message()
        .queue_url(url)
        .max_number_of_messages(max)
        .message_system_attribute_names(MessageSystemAttributeName::All)
        .send()
        .await
        .unwrap()
        .messages
        .unwrap_or_default()
}

#[tokio::test]
async fn batches_report_each_entry() {
    let emu = emulator().await;
    let c = sqs(&emu).await;
    let url = c
        .create_queue()
        .queue_name("b")
        .send()
        .await
        .unwrap()
        .queue_url
        .unwrap();
    let entry = |id: &str, body: &str| {
        SendMessageBatchRequestEntry::builder()
            .id(id)
            .message_body(body)
            .build()
            .unwrap()
    };
    let out = c
        .send_message_batch()
        .queue_url(&url)
        .entries(entry("a", "one"))
        .entries(entry("b", "two"))
        .entries(entry("bad", "\u{0}"))
        .send()
        .await
        .unwrap();
    assert_eq!(out.successful().len(), 2);
    assert_eq!(out.failed().len(), 1);
    assert_eq!(out.failed()[0].id(), "bad");
    assert_eq!(out.failed()[0].code(), "InvalidMessageContents");
    assert!(out.failed()[0].sender_fault());

    let err = c
        .send_message_batch()
        .queue_url(&url)
        .entries(entry("x", "1"))
        .entries(entry("x", "2"))
        .send()
        .await
        .unwrap_err()
        .into_service_error();
    assert!(err.is_batch_entry_ids_not_distinct(), "{err:?}");
    let mut too_many = c.send_message_batch().queue_url(&url);
    for i in 0..11 {
        too_many = too_many.entries(entry(&format!("e{i}"), "x"));
    }
    let err = too_many.send().await.unwrap_err().into_service_error();
    assert_eq!(
        err.code(),
        Some("AWS.SimpleQueueService.TooManyEntriesInBatchRequest")
    );

    let msgs = receive_all(&c, &url, 10).await;
    assert_eq!(msgs.len(), 2);
    let vis = c
        .change_message_visibility_batch()
        .queue_url(&url)
        .entries(
            ChangeMessageVisibilityBatchRequestEntry::builder()
                .id("v0")
                .receipt_handle(msgs[0].receipt_handle().unwrap())
                .visibility_timeout(0)
                .build()
                .unwrap(),
        )
        .entries(
            ChangeMessageVisibilityBatchRequestEntry::builder()
                .id("v1")
                .receipt_handle("garbage")
                .visibility_timeout(0)
                .build()
                .unwrap(),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(vis.successful().len(), 1);
    assert_eq!(vis.failed()[0].code(), "ReceiptHandleIsInvalid");
    // The first is visible again: receiving it gives a fresh handle.
    let again = receive_all(&c, &url, 10).await;
    assert_eq!(again.len(), 1);
    let del = c
        .delete_message_batch()
        .queue_url(&url)
        .entries(
            DeleteMessageBatchRequestEntry::builder()
                .id("d0")
                .receipt_handle(again[0].receipt_handle().unwrap())
                .build()
                .unwrap(),
        )
        .entries(
            DeleteMessageBatchRequestEntry::builder()
                .id("d1")
                .receipt_handle(msgs[1].receipt_handle().unwrap())
                .build()
                .unwrap(),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(del.successful().len(), 2, "{del:?}");
    assert!(emu.queue_messages("b").is_empty());
}

#[tokio::test]
async fn fifo_groups_deliver_in_order_one_in_flight_at_a_time() {
    let emu = emulator().await;
    let c = sqs(&emu).await;
    let url = c
        .create_queue()
        .queue_name("w.fifo")
        .attributes(QueueAttributeName::FifoQueue, "true")
        .attributes(QueueAttributeName::ContentBasedDeduplication, "true")
        .send()
        .await
        .unwrap()
        .queue_url
        .unwrap();
    let send = |body: &'static str, group: &'static str| {
        let c = c.clone();
        let url = url.clone();
        async move {
            c.send_message()
                .queue_url(url)
                .message_body(body)
                .message_group_id(group)
                .send()
                .await
                .unwrap()
        }
    };
    let a1 = send("a1", "cam-a").await;
    assert!(a1.sequence_number().is_some());
    send("a2", "cam-a").await;
    send("b1", "cam-b").await;
    // The same body again inside five minutes: deduplicated (content-based), same MessageId.
    let dup = send("a1", "cam-a").await;
    assert_eq!(dup.message_id(), a1.message_id());
    assert_eq!(emu.queue_messages("w.fifo").len(), 3);

    // One message per receive: a1 first, then b1 (cam-a is held while a1 is in flight).
    let first = receive_all(&c, &url, 1).await;
    assert_eq!(first[0].body(), Some("a1"));
    let attrs = first[0].attributes().unwrap();
    assert_eq!(attrs[&MessageSystemAttributeName::MessageGroupId], "cam-a");
    assert!(attrs.contains_key(&MessageSystemAttributeName::SequenceNumber));
    assert!(attrs.contains_key(&MessageSystemAttributeName::MessageDeduplicationId));
    let second = receive_all(&c, &url, 10).await;
    assert_eq!(
        second.iter().map(|m| m.body().unwrap()).collect::<Vec<_>>(),
        ["b1"]
    );
    assert!(receive_all(&c, &url, 10).await.is_empty());
    // Deleting a1 frees cam-a for a2.
    c.delete_message()
        .queue_url(&url)
        .receipt_handle(first[0].receipt_handle().unwrap())
        .send()
        .await
        .unwrap();
    let third = receive_all(&c, &url, 10).await;
    assert_eq!(
        third.iter().map(|m| m.body().unwrap()).collect::<Vec<_>>(),
        ["a2"]
    );

    // FIFO rules: a group id is required, per-message delays are refused, and without
    // content-based deduplication a deduplication id is required.
    let err = c
        .send_message()
        .queue_url(&url)
        .message_body("x")
        .send()
        .await
        .unwrap_err()
        .into_service_error();
    assert_eq!(err.code(), Some("MissingParameter"), "{err:?}");
    let plain = c
        .create_queue()
        .queue_name("p.fifo")
        .attributes(QueueAttributeName::FifoQueue, "true")
        .send()
        .await
        .unwrap()
        .queue_url
        .unwrap();
    let err = c
        .send_message()
        .queue_url(&plain)
        .message_body("x")
        .message_group_id("g")
        .send()
        .await
        .unwrap_err()
        .into_service_error();
    assert_eq!(err.code(), Some("InvalidParameterValue"), "{err:?}");
    for _ in 0..2 {
        c.send_message()
            .queue_url(&plain)
            .message_body("x")
            .message_group_id("g")
            .message_deduplication_id("obj-1")
            .send()
            .await
            .unwrap();
    }
    assert_eq!(emu.queue_messages("p.fifo").len(), 1);
    let err = c
        .create_queue()
        .queue_name("nofifo.fifo")
        .send()
        .await
        .unwrap_err()
        .into_service_error();
    assert_eq!(err.code(), Some("InvalidParameterValue"), "{err:?}");
}

#[tokio::test]
async fn redrive_moves_a_message_after_max_receive_count() {
    let emu = emulator().await;
    let c = sqs(&emu).await;
    let dlq = c
        .create_queue()
        .queue_name("dead")
        .send()
        .await
        .unwrap()
        .queue_url
        .unwrap();
    let dlq_arn = emu.queue_arn("dead");
    assert_eq!(dlq_arn, "arn:aws:sqs:us-east-1:123456789012:dead");
    let url = c
        .create_queue()
        .queue_name("work")
        .attributes(
            QueueAttributeName::RedrivePolicy,
            format!(r#"{{"deadLetterTargetArn":"{dlq_arn}","maxReceiveCount":"2"}}"#),
        )
        .send()
        .await
        .unwrap()
        .queue_url
        .unwrap();
    let policy = c
        .get_queue_attributes()
        .queue_url(&url)
        .attribute_names(QueueAttributeName::All)
        .send()
        .await
        .unwrap()
        .attributes
        .unwrap();
    assert!(policy[&QueueAttributeName::RedrivePolicy].contains(&dlq_arn));
    assert_eq!(
        policy[&QueueAttributeName::QueueArn],
        "arn:aws:sqs:us-east-1:123456789012:work"
    );
    let sources = c
        .list_dead_letter_source_queues()
        .queue_url(&dlq)
        .send()
        .await
        .unwrap();
    assert_eq!(sources.queue_urls(), std::slice::from_ref(&url));

    let id = c
        .send_message()
        .queue_url(&url)
        .message_body("poison")
        .send()
        .await
        .unwrap()
        .message_id
        .unwrap();
    for n in 1..=2 {
        let m = c
            .receive_message()
            .queue_url(&url)
            .visibility_timeout(0)
            .message_system_attribute_names(MessageSystemAttributeName::ApproximateReceiveCount)
            .send()
            .await
            .unwrap()
            .messages
            .unwrap();
        assert_eq!(
            m[0].attributes().unwrap()[&MessageSystemAttributeName::ApproximateReceiveCount],
            n.to_string()
        );
    }
    // The third receive would exceed maxReceiveCount 2: the message moves instead.
    assert!(receive_all(&c, &url, 10).await.is_empty());
    let dead = receive_all(&c, &dlq, 10).await;
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].message_id(), Some(id.as_str()));
    assert_eq!(dead[0].body(), Some("poison"));
    assert_eq!(
        dead[0].attributes().unwrap()[&MessageSystemAttributeName::DeadLetterQueueSourceArn],
        "arn:aws:sqs:us-east-1:123456789012:work"
    );

    // A redrive target must exist and be of the same type.
    let err = c
        .set_queue_attributes()
        .queue_url(&url)
        .attributes(
            QueueAttributeName::RedrivePolicy,
            r#"{"deadLetterTargetArn":"arn:aws:sqs:us-east-1:123456789012:nope","maxReceiveCount":1}"#,
        )
        .send()
        .await
        .unwrap_err()
        .into_service_error();
    assert!(err.is_invalid_attribute_value(), "{err:?}");
}

#[tokio::test]
async fn queues_and_messages_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let start = || Emulator::builder().with_data_dir(dir.path()).start();
    let emu = start().await.unwrap();
    let c = sqs(&emu).await;
    let url = c
        .create_queue()
        .queue_name("keep")
        .attributes(QueueAttributeName::VisibilityTimeout, "300")
        .send()
        .await
        .unwrap()
        .queue_url
        .unwrap();
    for b in ["one", "two"] {
        c.send_message()
            .queue_url(&url)
            .message_body(b)
            .send()
            .await
            .unwrap();
    }
    let in_flight = receive_all(&c, &url, 1).await;
    assert_eq!(in_flight[0].body(), Some("one"));
    emu.shutdown().await;

    let emu = start().await.unwrap();
    let c = sqs(&emu).await;
    let url = c
        .get_queue_url()
        .queue_name("keep")
        .send()
        .await
        .unwrap()
        .queue_url
        .unwrap();
    assert_eq!(
        c.get_queue_attributes()
            .queue_url(&url)
            .attribute_names(QueueAttributeName::VisibilityTimeout)
            .send()
            .await
            .unwrap()
            .attributes
            .unwrap()[&QueueAttributeName::VisibilityTimeout],
        "300"
    );
    // "one" is still in flight (its 300 s timeout survives); "two" is delivered.
    let got = receive_all(&c, &url, 10).await;
    assert_eq!(
        got.iter().map(|m| m.body().unwrap()).collect::<Vec<_>>(),
        ["two"]
    );
    // The handle issued before the restart still deletes "one".
    c.delete_message()
        .queue_url(&url)
        .receipt_handle(in_flight[0].receipt_handle().unwrap())
        .send()
        .await
        .unwrap();
    let left = emu.queue_messages("keep");
    assert_eq!(left.len(), 1);
    assert_eq!(left[0].body, "two");
    let list = c.list_queues().send().await.unwrap();
    assert_eq!(list.queue_urls(), [url]);
}
