//! Every operation proved through the unmodified AWS SDK clients.

mod support;

use std::time::Duration;

use aws_sdk_kinesisvideo::types::{
    ApiName, ComparisonOperator, StreamNameCondition, UpdateDataRetentionOperation,
};
use aws_sdk_kinesisvideoarchivedmedia::primitives::DateTime;
use aws_sdk_kinesisvideoarchivedmedia::types::{
    FragmentSelector, FragmentSelectorType, TimestampRange,
};
use aws_sdk_kinesisvideomedia::types::{StartSelector, StartSelectorType};
use bytes::Bytes;
use support::*;

#[tokio::test]
async fn control_plane() {
    let emu = emulator().await;
    let kv = aws_sdk_kinesisvideo::Client::new(&emu.sdk_config());
    let arn = kv
        .create_stream()
        .stream_name("cam-1")
        .data_retention_in_hours(2)
        .media_type("video/h264")
        .send()
        .await
        .unwrap()
        .stream_arn
        .unwrap();
    assert!(
        arn.starts_with("arn:aws:kinesisvideo:us-east-1:123456789012:stream/cam-1/"),
        "{arn}"
    );
    let err = kv
        .create_stream()
        .stream_name("cam-1")
        .send()
        .await
        .unwrap_err()
        .into_service_error();
    assert!(err.is_resource_in_use_exception(), "{err:?}");
    let err = kv
        .create_stream()
        .stream_name("bad/name")
        .send()
        .await
        .unwrap_err()
        .into_service_error();
    assert!(err.is_invalid_argument_exception(), "{err:?}");

    let info = kv
        .describe_stream()
        .stream_arn(&arn)
        .send()
        .await
        .unwrap()
        .stream_info
        .unwrap();
    assert_eq!(info.stream_name(), Some("cam-1"));
    assert_eq!(info.data_retention_in_hours(), Some(2));
    assert_eq!(info.media_type(), Some("video/h264"));
    assert_eq!(info.status().map(|s| s.as_str()), Some("ACTIVE"));
    assert!(info.creation_time().is_some());
    let version = info.version().unwrap().to_owned();

    for n in ["cam-2", "cam-3", "other"] {
        kv.create_stream().stream_name(n).send().await.unwrap();
    }
    let page = kv
        .list_streams()
        .max_results(2)
        .stream_name_condition(
            StreamNameCondition::builder()
                .comparison_operator(ComparisonOperator::BeginsWith)
                .comparison_value("cam")
                .build(),
        )
        .send()
        .await
        .unwrap();
    let names: Vec<_> = page
        .stream_info_list()
        .iter()
        .filter_map(|s| s.stream_name())
        .collect();
    assert_eq!(names, ["cam-1", "cam-2"]);
    let page2 = kv
        .list_streams()
        .next_token(page.next_token().unwrap())
        .stream_name_condition(
            StreamNameCondition::builder()
                .comparison_operator(ComparisonOperator::BeginsWith)
                .comparison_value("cam")
                .build(),
        )
        .send()
        .await
        .unwrap();
    let names: Vec<_> = page2
        .stream_info_list()
        .iter()
        .filter_map(|s| s.stream_name())
        .collect();
    assert_eq!(names, ["cam-3"]);
    assert!(page2.next_token().is_none());

    let ep = kv
        .get_data_endpoint()
        .stream_name("cam-1")
        .api_name(ApiName::PutMedia)
        .send()
        .await
        .unwrap();
    assert_eq!(ep.data_endpoint(), Some(emu.url().as_str()));

    let err = kv
        .update_data_retention()
        .stream_name("cam-1")
        .current_version("stale")
        .operation(UpdateDataRetentionOperation::IncreaseDataRetention)
        .data_retention_change_in_hours(1)
        .send()
        .await
        .unwrap_err()
        .into_service_error();
    assert!(err.is_version_mismatch_exception(), "{err:?}");
    kv.update_data_retention()
        .stream_name("cam-1")
        .current_version(&version)
        .operation(UpdateDataRetentionOperation::IncreaseDataRetention)
        .data_retention_change_in_hours(22)
        .send()
        .await
        .unwrap();
    let info = kv
        .describe_stream()
        .stream_name("cam-1")
        .send()
        .await
        .unwrap()
        .stream_info
        .unwrap();
    assert_eq!(info.data_retention_in_hours(), Some(24));

    kv.delete_stream().stream_arn(&arn).send().await.unwrap();
    let err = kv
        .describe_stream()
        .stream_name("cam-1")
        .send()
        .await
        .unwrap_err()
        .into_service_error();
    assert!(err.is_resource_not_found_exception(), "{err:?}");
    let err = kv
        .get_data_endpoint()
        .stream_name("cam-1")
        .api_name(ApiName::PutMedia)
        .send()
        .await
        .unwrap_err()
        .into_service_error();
    assert!(err.is_resource_not_found_exception(), "{err:?}");
}

#[tokio::test]
async fn wrong_secret_and_wrong_region_are_refused() {
    let emu = emulator().await;
    let bad = aws_credential_types::Credentials::new(
        emu.credentials().access_key_id,
        "nope",
        None,
        None,
        "t",
    );
    let kv = aws_sdk_kinesisvideo::Client::new(&sdk_config_with(&emu, bad));
    let err = kv.list_streams().send().await.unwrap_err();
    let raw = err.raw_response().unwrap();
    assert_eq!(raw.status().as_u16(), 403);
    assert_eq!(
        raw.headers().get("x-amzn-errortype"),
        Some("InvalidSignatureException")
    );
    let conf = aws_sdk_kinesisvideo::config::Builder::from(&emu.sdk_config())
        .region(aws_sdk_kinesisvideo::config::Region::new("eu-west-1"))
        .build();
    let err = aws_sdk_kinesisvideo::Client::from_conf(conf)
        .list_streams()
        .send()
        .await
        .unwrap_err();
    assert_eq!(err.raw_response().unwrap().status().as_u16(), 403);
}

#[tokio::test]
async fn get_media_list_fragments_and_fragment_list() {
    let emu = emulator().await;
    emu.create_stream("cam", 24).await.unwrap();
    put_raw(&emu, "cam", clip(), 8192).await;
    let stored = emu.fragments("cam");
    assert_eq!(stored.len(), 6);
    let conf = emu.sdk_config();

    let am = aws_sdk_kinesisvideoarchivedmedia::Client::new(&conf);
    let list = am.list_fragments().stream_name("cam").send().await.unwrap();
    let numbers: Vec<&str> = list
        .fragments()
        .iter()
        .filter_map(|f| f.fragment_number())
        .collect();
    let expected: Vec<&str> = stored.iter().map(|f| f.fragment_number.as_str()).collect();
    assert_eq!(numbers, expected);
    let f0 = &list.fragments()[0];
    assert_eq!(f0.fragment_size_in_bytes() as usize, stored[0].size);
    assert_eq!(
        f0.fragment_length_in_milliseconds() as u64,
        stored[0].duration_ms
    );
    // The playback duration includes the last frame's own 40 ms: 1 s GOPs at 25 fps are 1000 ms
    // fragments, and each one ends where the next begins.
    let lengths: Vec<i64> = list
        .fragments()
        .iter()
        .map(|f| f.fragment_length_in_milliseconds())
        .collect();
    assert_eq!(lengths, [1000; 6]);
    for pair in stored.windows(2) {
        assert_eq!(
            pair[0].producer_timestamp_ms + pair[0].duration_ms,
            pair[1].producer_timestamp_ms
        );
    }
    // JSON carries epoch seconds as a float; the SDK's f64 -> millis conversion may lose 1 ms.
    let listed_ms = f0.producer_timestamp().unwrap().to_millis().unwrap() as u64;
    assert!(
        listed_ms.abs_diff(stored[0].producer_timestamp_ms) <= 1,
        "{listed_ms}"
    );
    // Timestamp range selection by producer time.
    let from = DateTime::from_millis(stored[2].producer_timestamp_ms as i64);
    let to = DateTime::from_millis(stored[3].producer_timestamp_ms as i64);
    let sel = am
        .list_fragments()
        .stream_name("cam")
        .fragment_selector(
            FragmentSelector::builder()
                .fragment_selector_type(FragmentSelectorType::ProducerTimestamp)
                .timestamp_range(
                    TimestampRange::builder()
                        .start_timestamp(from)
                        .end_timestamp(to)
                        .build()
                        .unwrap(),
                )
                .build()
                .unwrap(),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(sel.fragments().len(), 2);
    // Pagination.
    let p1 = am
        .list_fragments()
        .stream_name("cam")
        .max_results(4)
        .send()
        .await
        .unwrap();
    assert_eq!(p1.fragments().len(), 4);
    let p2 = am
        .list_fragments()
        .stream_name("cam")
        .next_token(p1.next_token().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(p2.fragments().len(), 2);

    let out = am
        .get_media_for_fragment_list()
        .stream_name("cam")
        .fragments(&stored[1].fragment_number)
        .fragments(&stored[2].fragment_number)
        .send()
        .await
        .unwrap();
    assert_eq!(out.content_type(), Some("video/webm"));
    let bytes = out.payload.collect().await.unwrap().into_bytes();
    assert_eq!(video_frames_of(&bytes).unwrap(), 50);
    let err = am
        .get_media_for_fragment_list()
        .stream_name("cam")
        .fragments("91343852000000000000000000000000000000000000001")
        .send()
        .await
        .unwrap_err()
        .into_service_error();
    assert!(err.is_resource_not_found_exception(), "{err:?}");

    let media = aws_sdk_kinesisvideomedia::Client::new(&conf);
    let out = media
        .get_media()
        .stream_name("cam")
        .start_selector(
            StartSelector::builder()
                .start_selector_type(StartSelectorType::Earliest)
                .build()
                .unwrap(),
        )
        .send()
        .await
        .unwrap();
    let all = out.payload.collect().await.unwrap().into_bytes();
    assert_eq!(video_frames_of(&all).unwrap(), 150);
    let text = String::from_utf8_lossy(&all);
    assert!(text.contains("AWS_KINESISVIDEO_FRAGMENT_NUMBER"));
    assert!(text.contains(&stored[5].fragment_number));
    let out = media
        .get_media()
        .stream_name("cam")
        .start_selector(
            StartSelector::builder()
                .start_selector_type(StartSelectorType::FragmentNumber)
                .after_fragment_number(&stored[3].fragment_number)
                .build()
                .unwrap(),
        )
        .send()
        .await
        .unwrap();
    let rest = out.payload.collect().await.unwrap().into_bytes();
    assert_eq!(video_frames_of(&rest).unwrap(), 50);
}

#[tokio::test]
async fn get_media_follows_a_live_put() {
    let emu = emulator().await;
    emu.create_stream("live", 1).await.unwrap();
    let mut pm = PutMedia::open(&emu, PutMediaOptions::new(&emu, "live")).await;
    let conf = emu.sdk_config();
    let media = aws_sdk_kinesisvideomedia::Client::new(&conf);
    let out = media
        .get_media()
        .stream_name("live")
        .start_selector(
            StartSelector::builder()
                .start_selector_type(StartSelectorType::Now)
                .build()
                .unwrap(),
        )
        .send()
        .await
        .unwrap();
    let reader = tokio::spawn(async move { out.payload.collect().await.unwrap().into_bytes() });
    tokio::time::sleep(Duration::from_millis(100)).await;
    for c in clip().chunks(8192) {
        pm.send(c).await.unwrap();
    }
    pm.end().await.unwrap();
    pm.all_acks().await.1.unwrap();
    let got = tokio::time::timeout(Duration::from_secs(10), reader)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(video_frames_of(&got).unwrap(), 150);
}

#[tokio::test]
async fn sts_temporary_credentials_work_everywhere() {
    let emu = emulator().await;
    emu.create_stream("cam", 1).await.unwrap();
    let sts = aws_sdk_sts::Client::new(&emu.sdk_config());
    let me = sts.get_caller_identity().send().await.unwrap();
    assert_eq!(me.account(), Some("123456789012"));
    let assumed = sts
        .assume_role()
        .role_arn("arn:aws:iam::123456789012:role/uploader")
        .role_session_name("test-session")
        .duration_seconds(900)
        .send()
        .await
        .unwrap();
    let c = assumed.credentials().unwrap();
    assert!(c.access_key_id().starts_with("ASIA"));
    let temp = aws_credential_types::Credentials::new(
        c.access_key_id(),
        c.secret_access_key(),
        Some(c.session_token().to_owned()),
        None,
        "sts",
    );
    let temp_conf = sdk_config_with(&emu, temp.clone());
    let who = aws_sdk_sts::Client::new(&temp_conf)
        .get_caller_identity()
        .send()
        .await
        .unwrap();
    assert_eq!(
        who.arn(),
        Some("arn:aws:sts::123456789012:assumed-role/uploader/test-session")
    );
    aws_sdk_kinesisvideo::Client::new(&temp_conf)
        .describe_stream()
        .stream_name("cam")
        .send()
        .await
        .unwrap();
    emu.create_bucket("bkt").await.unwrap();
    aws_sdk_s3::Client::new(&temp_conf)
        .put_object()
        .bucket("bkt")
        .key("k")
        .body(Bytes::from_static(b"hello").into())
        .send()
        .await
        .unwrap();
    // PutMedia with the session token signed in.
    let mut o = PutMediaOptions::new(&emu, "cam");
    o.creds = temp.clone();
    assert_eq!(PutMedia::open(&emu, o).await.status, 200);

    // A wrong or missing session token is refused, by every service.
    let forged = aws_credential_types::Credentials::new(
        c.access_key_id(),
        c.secret_access_key(),
        Some("forged".into()),
        None,
        "sts",
    );
    let forged_conf = sdk_config_with(&emu, forged);
    let err = aws_sdk_kinesisvideo::Client::new(&forged_conf)
        .list_streams()
        .send()
        .await
        .unwrap_err();
    assert_eq!(err.raw_response().unwrap().status().as_u16(), 403);
    let err = aws_sdk_s3::Client::new(&forged_conf)
        .list_buckets()
        .send()
        .await
        .unwrap_err();
    assert_eq!(err.raw_response().unwrap().status().as_u16(), 403);
    let no_token = aws_credential_types::Credentials::new(
        c.access_key_id(),
        c.secret_access_key(),
        None,
        None,
        "sts",
    );
    let err = aws_sdk_sts::Client::new(&sdk_config_with(&emu, no_token))
        .get_caller_identity()
        .send()
        .await
        .unwrap_err();
    assert_eq!(err.raw_response().unwrap().status().as_u16(), 403);
    let err = sts
        .assume_role()
        .role_arn("arn:aws:iam::123456789012:role/x")
        .role_session_name("s")
        .send()
        .await
        .unwrap_err();
    assert_eq!(err.raw_response().unwrap().status().as_u16(), 400);
}

#[tokio::test]
async fn expired_session_token_is_refused() {
    let emu = emulator().await;
    let sts = aws_sdk_sts::Client::new(&emu.sdk_config());
    let c = sts
        .assume_role()
        .role_arn("arn:aws:iam::123456789012:role/uploader")
        .role_session_name("s1")
        .duration_seconds(900)
        .send()
        .await
        .unwrap()
        .credentials
        .unwrap();
    let temp = aws_credential_types::Credentials::new(
        c.access_key_id(),
        c.secret_access_key(),
        Some(c.session_token().to_owned()),
        None,
        "sts",
    );
    // Move the emulator clock past the expiry but keep SigV4 within the skew window by
    // signing at the skewed time (the SDK signs with the real clock, so use the raw client).
    emu.faults()
        .push(kvs_emulator::FaultRule::ClockSkew { offset_ms: 901_000 });
    emu.create_stream("s", 1).await.unwrap();
    let mut o = PutMediaOptions::new(&emu, "s");
    o.creds = temp;
    o.time = std::time::SystemTime::now() + Duration::from_secs(901);
    let mut pm = PutMedia::open(&emu, o).await;
    assert_eq!(pm.status, 401);
    assert_eq!(
        pm.header("x-amzn-errortype").as_deref(),
        Some("NotAuthorizedException")
    );
    assert!(
        pm.error_body().await["message"]
            .as_str()
            .unwrap()
            .contains("expired")
    );
}

#[tokio::test]
async fn s3_objects_ranges_and_presigned_urls() {
    let emu = emulator().await;
    let s3 = aws_sdk_s3::Client::new(&emu.sdk_config());
    s3.create_bucket().bucket("media").send().await.unwrap();
    s3.put_object()
        .bucket("media")
        .key("dir/clip.mkv")
        .body(Bytes::copy_from_slice(clip()).into())
        .send()
        .await
        .unwrap();
    let got = s3
        .get_object()
        .bucket("media")
        .key("dir/clip.mkv")
        .send()
        .await
        .unwrap();
    assert_eq!(
        got.body.collect().await.unwrap().into_bytes().as_ref(),
        clip()
    );
    let part = s3
        .get_object()
        .bucket("media")
        .key("dir/clip.mkv")
        .range("bytes=4-11")
        .send()
        .await
        .unwrap();
    assert_eq!(
        part.content_range(),
        Some(format!("bytes 4-11/{}", clip().len()).as_str())
    );
    assert_eq!(
        part.body.collect().await.unwrap().into_bytes().as_ref(),
        &clip()[4..12]
    );
    let err = s3
        .get_object()
        .bucket("media")
        .key("nope")
        .send()
        .await
        .unwrap_err()
        .into_service_error();
    assert!(err.is_no_such_key(), "{err:?}");

    // The library helpers go through the same S3.
    emu.create_bucket("lib").await.unwrap();
    emu.put_object("lib", "a b/c.txt", Bytes::from_static(b"xyz"))
        .await
        .unwrap();
    let got = s3
        .get_object()
        .bucket("lib")
        .key("a b/c.txt")
        .send()
        .await
        .unwrap();
    assert_eq!(
        got.body.collect().await.unwrap().into_bytes().as_ref(),
        b"xyz"
    );
    assert!(matches!(
        emu.create_bucket("lib").await,
        Err(kvs_emulator::Error::S3 { status: 409, .. })
    ));

    // Presigned GET, read by ffprobe over plain HTTP with Range requests.
    let presigned = s3
        .get_object()
        .bucket("media")
        .key("dir/clip.mkv")
        .presigned(
            aws_sdk_s3::presigning::PresigningConfig::expires_in(Duration::from_secs(300)).unwrap(),
        )
        .await
        .unwrap();
    let url = presigned.uri().to_owned();
    let frames = tokio::task::spawn_blocking(move || video_frames(&url))
        .await
        .unwrap();
    assert_eq!(frames, Ok(150));
    // A tampered presigned URL is refused.
    let bad = presigned.uri().replace("clip.mkv", "clip2.mkv");
    let status = raw_get_status(&emu, &bad).await;
    assert_eq!(status, 403);
}

/// Status of a plain GET for a full URL on the emulator.
async fn raw_get_status(emu: &kvs_emulator::Emulator, url: &str) -> u16 {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let path = url.splitn(4, '/').nth(3).unwrap();
    let mut tcp = tokio::net::TcpStream::connect(emu.addr()).await.unwrap();
    tcp.write_all(
        format!(
            "GET /{path} HTTP/1.1\r\nhost: {}\r\nconnection: close\r\n\r\n",
            emu.addr()
        )
        .as_bytes(),
    )
    .await
    .unwrap();
    let mut buf = Vec::new();
    tcp.read_to_end(&mut buf).await.unwrap();
    String::from_utf8_lossy(&buf)
        .split(' ')
        .nth(1)
        .unwrap()
        .parse()
        .unwrap()
}
