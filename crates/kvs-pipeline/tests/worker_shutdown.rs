//! Shutdown of the queue worker while its SQS long poll is under way, against the emulator
//! through the real SDK: what the poll receives as shutdown begins goes back to the queue at once
//! (not lost, not hidden for the whole visibility timeout).

use std::time::{Duration, Instant};

use kvs_emulator::Emulator;
use kvs_pipeline::streams::{Route, Sessions};
use kvs_pipeline::worker::{Worker, WorkerConfig};
use kvs_putmedia::PutMediaClientBuilder;
use tokio_util::sync::CancellationToken;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_the_last_poll_receives_during_shutdown_goes_back_to_the_queue() {
    let emu = Emulator::builder().start().await.unwrap();
    let config = emu.sdk_config();
    let sqs = aws_sdk_sqs::Client::new(&config);
    let work = emu.create_queue("work", &[]).await.unwrap();

    let mut cfg = WorkerConfig::new(&work, Route::template("cam-{key_dir}").unwrap());
    // Long enough that a message hidden by a lost poll is still hidden when the test looks.
    cfg.visibility = Duration::from_secs(120);
    let sessions =
        Sessions::new(PutMediaClientBuilder::from_env_with(config.clone()).with_allow_http(true))
            .unwrap();
    let worker = std::sync::Arc::new(Worker::new(cfg, &config, sessions));
    let shutdown = CancellationToken::new();
    let running = tokio::spawn(worker.clone().run(shutdown.clone()));

    // The worker is now in its 20 s long poll on an empty queue. Shutdown begins, and a message
    // arrives while that poll is still open.
    tokio::time::sleep(Duration::from_millis(500)).await;
    shutdown.cancel();
    tokio::time::sleep(Duration::from_millis(200)).await;
    sqs.send_message()
        .queue_url(&work)
        .message_body(r#"{"bucketName":"uploads","keyName":"a/clip.mkv"}"#)
        .send()
        .await
        .unwrap();

    let started = Instant::now();
    tokio::time::timeout(Duration::from_secs(30), running)
        .await
        .expect("the worker stopped")
        .unwrap();
    assert!(started.elapsed() < Duration::from_secs(25));
    assert!(
        worker.jobs().is_empty(),
        "nothing was streamed during shutdown"
    );

    // Received once (by the poll that was open), and visible again right away.
    let queued = emu.queue_messages(&work);
    assert_eq!(queued.len(), 1, "{queued:?}");
    assert_eq!(queued[0].receive_count, 1, "{queued:?}");
    assert!(!queued[0].in_flight, "handed back, not hidden: {queued:?}");
    let again = sqs
        .receive_message()
        .queue_url(&work)
        .wait_time_seconds(1)
        .send()
        .await
        .unwrap();
    assert_eq!(again.messages().len(), 1);
}
