//! The forwarder alone, against the emulator through the real SDK clients: S3 event
//! notifications from a bucket to a standard intake queue, forwarded into a FIFO work queue
//! grouped by target stream and deduplicated, the `s3:TestEvent` dropped.

use std::time::Duration;

use aws_sdk_s3::types::{Event, NotificationConfiguration, QueueConfiguration};
use aws_sdk_sqs::types::MessageSystemAttributeName;
use bytes::Bytes;
use kvs_emulator::Emulator;
use kvs_pipeline::object::{self, ObjectRef};
use kvs_pipeline::streams::{Route, Sessions};
use kvs_pipeline::worker::{Worker, WorkerConfig, dedup_id};
use kvs_putmedia::PutMediaClientBuilder;
use kvs_test_support::emu::wait_until;
use tokio_util::sync::CancellationToken;

const BUCKET: &str = "uploads";

/// How long the forwarder may take for each step.
const WAIT: Duration = Duration::from_secs(30);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_events_are_forwarded_once_into_fifo_groups_by_stream_and_the_test_event_is_dropped() {
    let emu = Emulator::builder().start().await.unwrap();
    let config = emu.sdk_config();
    let s3 = aws_sdk_s3::Client::new(&config);
    let sqs = aws_sdk_sqs::Client::new(&config);

    emu.create_bucket(BUCKET).await.unwrap();
    let intake_dlq = emu.create_queue("intake-dlq", &[]).await.unwrap();
    let redrive = serde_json::json!({
        "deadLetterTargetArn": emu.queue_arn("intake-dlq"),
        "maxReceiveCount": 3,
    })
    .to_string();
    let intake = emu
        .create_queue("intake", &[("RedrivePolicy", &redrive)])
        .await
        .unwrap();
    let work = emu.create_queue("work.fifo", &[]).await.unwrap();

    s3.put_bucket_notification_configuration()
        .bucket(BUCKET)
        .notification_configuration(
            NotificationConfiguration::builder()
                .queue_configurations(
                    QueueConfiguration::builder()
                        .queue_arn(emu.queue_arn("intake"))
                        .events(Event::S3ObjectCreated)
                        .build()
                        .unwrap(),
                )
                .build(),
        )
        .send()
        .await
        .unwrap();
    wait_until("the test event is on the intake queue", WAIT, async || {
        emu.queue_messages(&intake).len() == 1
    })
    .await;
    assert!(emu.queue_messages(&intake)[0].body.contains("s3:TestEvent"));

    // Uploads in this order; a key with a space, which S3 events encode as '+'.
    let keys = ["cam1/a.mp4", "cam2/c d.mp4", "cam1/b.mp4"];
    for k in keys {
        emu.put_object(BUCKET, k, Bytes::from_static(b"media"))
            .await
            .unwrap();
    }
    wait_until(
        "the three events are on the intake queue",
        WAIT,
        async || emu.queue_messages(&intake).len() == 4,
    )
    .await;
    let events: Vec<String> = emu
        .queue_messages(&intake)
        .into_iter()
        .map(|m| m.body)
        .filter(|b| !b.contains("s3:TestEvent"))
        .collect();
    // The intake queue is at-least-once: the same event delivered twice.
    emu.send_message(&intake, &events[0]).await.unwrap();
    assert_eq!(emu.queue_messages(&intake).len(), 5);
    let expected: Vec<ObjectRef> = events
        .iter()
        .flat_map(|b| object::parse(b.as_bytes()).unwrap())
        .collect();
    assert_eq!(
        expected.iter().map(|o| o.key.as_str()).collect::<Vec<_>>(),
        keys
    );
    assert!(expected.iter().all(|o| o.sequencer.is_some()));

    let mut cfg = WorkerConfig::new(&work, Route::template("cam-{key_dir}").unwrap());
    cfg.intake_queue_url = Some(intake.clone());
    let sessions =
        Sessions::new(PutMediaClientBuilder::from_env_with(config.clone()).with_allow_http(true))
            .unwrap();
    let worker = Worker::new(cfg, &config, sessions);
    let stop = CancellationToken::new();
    let forwarding = {
        let stop = stop.clone();
        let intake = intake.clone();
        tokio::spawn(async move { worker.forward(&intake, stop).await })
    };
    wait_until("the intake queue is empty", WAIT, async || {
        emu.queue_messages(&intake).is_empty()
    })
    .await;
    stop.cancel();
    forwarding.await.unwrap();
    assert!(
        emu.queue_messages(&intake_dlq).is_empty(),
        "nothing dead-lettered: {:?}",
        emu.queue_messages(&intake_dlq)
    );

    // Exactly one message per upload: the duplicate was deduplicated, the test event dropped.
    let queued = emu.queue_messages(&work);
    assert_eq!(queued.len(), 3, "{queued:?}");
    // Per group in upload order, each with its deduplication id (receive, delete, repeat: a
    // FIFO group hands out its next message only after the previous one is deleted).
    let mut got = Vec::new();
    loop {
        let messages = sqs
            .receive_message()
            .queue_url(&work)
            .max_number_of_messages(10)
            .message_system_attribute_names(MessageSystemAttributeName::All)
            .send()
            .await
            .unwrap()
            .messages
            .unwrap_or_default();
        if messages.is_empty() {
            break;
        }
        for m in messages {
            let attrs = m.attributes.clone().unwrap_or_default();
            let attr = |n: MessageSystemAttributeName| attrs.get(&n).cloned().unwrap_or_default();
            let body: serde_json::Value = serde_json::from_str(m.body().unwrap()).unwrap();
            got.push((
                attr(MessageSystemAttributeName::MessageGroupId),
                body["keyName"].as_str().unwrap().to_owned(),
                attr(MessageSystemAttributeName::MessageDeduplicationId),
            ));
            assert_eq!(body["bucketName"], BUCKET);
            sqs.delete_message()
                .queue_url(&work)
                .receipt_handle(m.receipt_handle().unwrap())
                .send()
                .await
                .unwrap();
        }
    }
    let want: Vec<(String, String, String)> = expected
        .iter()
        .map(|o| {
            let group = format!("cam-{}", o.key.split('/').next().unwrap());
            (group, o.key.clone(), dedup_id(o))
        })
        .collect();
    let in_group = |g: &str, v: &[(String, String, String)]| -> Vec<(String, String, String)> {
        v.iter().filter(|m| m.0 == g).cloned().collect()
    };
    for g in ["cam-cam1", "cam-cam2"] {
        assert_eq!(in_group(g, &got), in_group(g, &want), "group {g}");
    }
    assert_eq!(got.len(), 3, "{got:?}");
}
