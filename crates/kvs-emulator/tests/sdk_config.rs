//! `Emulator::sdk_config` is all a test needs to reach every service the emulator serves with
//! the real SDK clients, whatever the developer's own AWS environment says.

use kvs_emulator::Emulator;

#[tokio::test]
async fn one_sdk_config_reaches_every_service() {
    // A developer's own setup must not leak in: the config is built from nothing.
    let emu = Emulator::builder().start().await.expect("emulator");
    let config = emu.sdk_config();
    assert_eq!(config.region().map(|r| r.as_ref()), Some(emu.region()));
    assert_eq!(config.endpoint_url(), Some(emu.url().as_str()));

    let kvs = aws_sdk_kinesisvideo::Client::new(&config);
    let arn = kvs
        .create_stream()
        .stream_name("cfg")
        .data_retention_in_hours(1)
        .send()
        .await
        .expect("CreateStream")
        .stream_arn
        .expect("an ARN");
    assert!(arn.contains(":stream/cfg/"), "{arn}");

    let s3 = aws_sdk_s3::Client::new(&config);
    s3.create_bucket()
        .bucket("cfg-bucket")
        .send()
        .await
        .expect("CreateBucket");
    let buckets = s3.list_buckets().send().await.expect("ListBuckets");
    assert!(
        buckets
            .buckets()
            .iter()
            .any(|b| b.name() == Some("cfg-bucket"))
    );

    let sts = aws_sdk_sts::Client::new(&config);
    let who = sts
        .get_caller_identity()
        .send()
        .await
        .expect("GetCallerIdentity");
    assert!(who.account().is_some());

    let sqs = aws_sdk_sqs::Client::new(&config);
    let url = sqs
        .create_queue()
        .queue_name("cfg-queue")
        .send()
        .await
        .expect("CreateQueue")
        .queue_url
        .expect("a queue URL");
    assert!(url.starts_with(&emu.url()), "{url}");
}

#[tokio::test]
async fn the_config_carries_the_emulator_credentials() {
    use aws_credential_types::provider::ProvideCredentials;
    let emu = Emulator::builder()
        .with_credentials("AKIDCONFIG", "secret-config")
        .start()
        .await
        .expect("emulator");
    let config = emu.sdk_config();
    let creds = config
        .credentials_provider()
        .expect("a provider")
        .provide_credentials()
        .await
        .expect("credentials");
    assert_eq!(creds.access_key_id(), "AKIDCONFIG");
    assert_eq!(creds.secret_access_key(), "secret-config");
}
