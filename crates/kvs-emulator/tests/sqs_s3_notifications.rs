//! S3 event notifications to SQS through the unmodified `aws-sdk-s3` and `aws-sdk-sqs`.

mod support;

use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{
    CompletedMultipartUpload, CompletedPart, Event, FilterRule, FilterRuleName,
    NotificationConfiguration, NotificationConfigurationFilter, QueueConfiguration, S3KeyFilter,
};
use aws_sdk_sqs::types::QueueAttributeName;
use kvs_emulator::Emulator;
use serde_json::Value;
use support::*;

async fn clients(emu: &Emulator) -> (aws_sdk_s3::Client, aws_sdk_sqs::Client) {
    let conf = sdk_config(emu).await;
    (
        aws_sdk_s3::Client::new(&conf),
        aws_sdk_sqs::Client::new(&conf),
    )
}

/// Receives every message now in the queue and deletes it; returns the bodies as JSON.
async fn drain(c: &aws_sdk_sqs::Client, url: &str) -> Vec<Value> {
    let mut out = Vec::new();
    loop {
        let got = c
            .receive_message()
            .queue_url(url)
            .max_number_of_messages(10)
            .send()
            .await
            .unwrap()
            .messages
            .unwrap_or_default();
        if got.is_empty() {
            return out;
        }
        for m in got {
            out.push(serde_json::from_str(m.body().unwrap()).unwrap());
            c.delete_message()
                .queue_url(url)
                .receipt_handle(m.receipt_handle().unwrap())
                .send()
                .await
                .unwrap();
        }
    }
}

fn config(
    queue_arn: &str,
    id: &str,
    event: Event,
    prefix: &str,
    suffix: &str,
) -> QueueConfiguration {
    QueueConfiguration::builder()
        .id(id)
        .queue_arn(queue_arn)
        .events(event)
        .filter(
            NotificationConfigurationFilter::builder()
                .key(
                    S3KeyFilter::builder()
                        .filter_rules(
                            FilterRule::builder()
                                .name(FilterRuleName::Prefix)
                                .value(prefix)
                                .build(),
                        )
                        .filter_rules(
                            FilterRule::builder()
                                .name(FilterRuleName::Suffix)
                                .value(suffix)
                                .build(),
                        )
                        .build(),
                )
                .build(),
        )
        .build()
        .unwrap()
}

#[tokio::test]
async fn object_created_events_reach_the_queue_in_the_s3_shape() {
    let emu = emulator().await;
    let (s3, sqs) = clients(&emu).await;
    s3.create_bucket().bucket("uploads").send().await.unwrap();
    let url = sqs
        .create_queue()
        .queue_name("events")
        .send()
        .await
        .unwrap()
        .queue_url
        .unwrap();
    let arn = sqs
        .get_queue_attributes()
        .queue_url(&url)
        .attribute_names(QueueAttributeName::QueueArn)
        .send()
        .await
        .unwrap()
        .attributes
        .unwrap()[&QueueAttributeName::QueueArn]
        .clone();

    s3.put_bucket_notification_configuration()
        .bucket("uploads")
        .notification_configuration(
            NotificationConfiguration::builder()
                .queue_configurations(config(
                    &arn,
                    "media",
                    Event::S3ObjectCreated,
                    "cam ",
                    ".mkv",
                ))
                .build(),
        )
        .send()
        .await
        .unwrap();
    // Storing a configuration sends the test event.
    let test = drain(&sqs, &url).await;
    assert_eq!(test.len(), 1, "{test:?}");
    assert_eq!(test[0]["Event"], "s3:TestEvent");
    assert_eq!(test[0]["Service"], "Amazon S3");
    assert_eq!(test[0]["Bucket"], "uploads");

    let got = s3
        .get_bucket_notification_configuration()
        .bucket("uploads")
        .send()
        .await
        .unwrap();
    let qc = &got.queue_configurations()[0];
    assert_eq!(qc.id(), Some("media"));
    assert_eq!(qc.queue_arn(), arn);
    assert_eq!(qc.events(), [Event::S3ObjectCreated]);
    let rules = qc.filter().unwrap().key().unwrap().filter_rules();
    assert_eq!(rules.len(), 2);
    assert_eq!(rules[0].value(), Some("cam "));

    // Matches prefix and suffix: an event, the key encoded as S3 encodes it.
    s3.put_object()
        .bucket("uploads")
        .key("cam 1/clip a+b.mkv")
        .body(ByteStream::from_static(b"0123456789"))
        .send()
        .await
        .unwrap();
    // Filtered out: wrong suffix, wrong prefix.
    for key in ["cam 1/notes.txt", "other/clip.mkv"] {
        s3.put_object()
            .bucket("uploads")
            .key(key)
            .body(ByteStream::from_static(b"x"))
            .send()
            .await
            .unwrap();
    }
    let events = drain(&sqs, &url).await;
    assert_eq!(events.len(), 1, "{events:?}");
    let r = &events[0]["Records"][0];
    assert_eq!(r["eventVersion"], "2.1");
    assert_eq!(r["eventSource"], "aws:s3");
    assert_eq!(r["awsRegion"], "us-east-1");
    assert_eq!(r["eventName"], "ObjectCreated:Put");
    assert!(r["eventTime"].as_str().unwrap().ends_with('Z'));
    assert_eq!(r["s3"]["s3SchemaVersion"], "1.0");
    assert_eq!(r["s3"]["configurationId"], "media");
    assert_eq!(r["s3"]["bucket"]["name"], "uploads");
    assert_eq!(r["s3"]["bucket"]["arn"], "arn:aws:s3:::uploads");
    let o = &r["s3"]["object"];
    assert_eq!(o["key"], "cam+1/clip+a%2Bb.mkv");
    assert_eq!(o["size"], 10);
    assert_eq!(
        o["eTag"], "781e5e245d69b566979b86e28d23f2c7",
        "MD5 of the body, unquoted"
    );
    assert!(o["sequencer"].as_str().is_some_and(|s| !s.is_empty()));

    // Multipart upload and copy fire their own event names.
    let up = s3
        .create_multipart_upload()
        .bucket("uploads")
        .key("cam 2/big.mkv")
        .send()
        .await
        .unwrap();
    let part = s3
        .upload_part()
        .bucket("uploads")
        .key("cam 2/big.mkv")
        .upload_id(up.upload_id().unwrap())
        .part_number(1)
        .body(ByteStream::from(vec![7u8; 1000]))
        .send()
        .await
        .unwrap();
    assert!(drain(&sqs, &url).await.is_empty(), "parts create no object");
    s3.complete_multipart_upload()
        .bucket("uploads")
        .key("cam 2/big.mkv")
        .upload_id(up.upload_id().unwrap())
        .multipart_upload(
            CompletedMultipartUpload::builder()
                .parts(
                    CompletedPart::builder()
                        .part_number(1)
                        .e_tag(part.e_tag().unwrap())
                        .build(),
                )
                .build(),
        )
        .send()
        .await
        .unwrap();
    s3.copy_object()
        .bucket("uploads")
        .key("cam 3/copy.mkv")
        .copy_source("uploads/cam%201/clip%20a%2Bb.mkv")
        .send()
        .await
        .unwrap();
    let events = drain(&sqs, &url).await;
    let names: Vec<(&str, &str, u64)> = events
        .iter()
        .map(|e| {
            let r = &e["Records"][0];
            (
                r["eventName"].as_str().unwrap(),
                r["s3"]["object"]["key"].as_str().unwrap(),
                r["s3"]["object"]["size"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        names,
        [
            (
                "ObjectCreated:CompleteMultipartUpload",
                "cam+2/big.mkv",
                1000
            ),
            ("ObjectCreated:Copy", "cam+3/copy.mkv", 10),
        ]
    );

    // The library's put_object goes through the same path.
    emu.put_object(
        "uploads",
        "cam 4/lib.mkv",
        bytes::Bytes::from_static(b"abc"),
    )
    .await
    .unwrap();
    let events = drain(&sqs, &url).await;
    assert_eq!(
        events[0]["Records"][0]["s3"]["object"]["key"],
        "cam+4/lib.mkv"
    );

    // An empty configuration turns notifications off.
    s3.put_bucket_notification_configuration()
        .bucket("uploads")
        .notification_configuration(NotificationConfiguration::builder().build())
        .send()
        .await
        .unwrap();
    s3.put_object()
        .bucket("uploads")
        .key("cam 5/x.mkv")
        .body(ByteStream::from_static(b"x"))
        .send()
        .await
        .unwrap();
    assert!(drain(&sqs, &url).await.is_empty());
}

#[tokio::test]
async fn configurations_are_validated_and_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let emu = Emulator::builder()
        .with_data_dir(dir.path())
        .start()
        .await
        .unwrap();
    let (s3, sqs) = clients(&emu).await;
    s3.create_bucket().bucket("bkt").send().await.unwrap();
    let url = sqs
        .create_queue()
        .queue_name("q")
        .send()
        .await
        .unwrap()
        .queue_url
        .unwrap();
    let arn = emu.queue_arn("q");
    let put = |qc: Vec<QueueConfiguration>| {
        s3.put_bucket_notification_configuration()
            .bucket("bkt")
            .notification_configuration(
                NotificationConfiguration::builder()
                    .set_queue_configurations(Some(qc))
                    .build(),
            )
            .send()
    };
    // A queue that does not exist, a FIFO queue, overlapping rules, a missing bucket.
    let err = put(vec![config(
        &emu.queue_arn("nope"),
        "x",
        Event::S3ObjectCreated,
        "",
        "",
    )])
    .await
    .unwrap_err();
    assert!(format!("{err:?}").contains("InvalidArgument"), "{err:?}");
    emu.create_queue("f.fifo", &[]).await.unwrap();
    let err = put(vec![config(
        &emu.queue_arn("f.fifo"),
        "x",
        Event::S3ObjectCreated,
        "",
        "",
    )])
    .await
    .unwrap_err();
    assert!(format!("{err:?}").contains("InvalidArgument"), "{err:?}");
    let err = put(vec![
        config(&arn, "a", Event::S3ObjectCreated, "cam", ""),
        config(&arn, "b", Event::S3ObjectCreatedPut, "cam-1/", ""),
    ])
    .await
    .unwrap_err();
    assert!(format!("{err:?}").contains("overlap"), "{err:?}");
    let err = s3
        .put_bucket_notification_configuration()
        .bucket("missing")
        .notification_configuration(NotificationConfiguration::builder().build())
        .send()
        .await
        .unwrap_err();
    assert!(format!("{err:?}").contains("NoSuchBucket"), "{err:?}");
    assert!(
        drain(&sqs, &url).await.is_empty(),
        "nothing stored, nothing sent"
    );

    put(vec![
        config(&arn, "a", Event::S3ObjectCreated, "cam-1/", ""),
        config(&arn, "b", Event::S3ObjectCreated, "cam-2/", ""),
    ])
    .await
    .unwrap();
    assert_eq!(drain(&sqs, &url).await.len(), 1, "one test event per queue");
    emu.shutdown().await;

    let emu = Emulator::builder()
        .with_data_dir(dir.path())
        .start()
        .await
        .unwrap();
    let (s3, sqs) = clients(&emu).await;
    let url = emu.queue_url("q");
    s3.put_object()
        .bucket("bkt")
        .key("cam-2/x.mkv")
        .body(ByteStream::from_static(b"x"))
        .send()
        .await
        .unwrap();
    let events = drain(&sqs, &url).await;
    assert_eq!(events.len(), 1);
    assert_eq!(events[0]["Records"][0]["s3"]["configurationId"], "b");
}
