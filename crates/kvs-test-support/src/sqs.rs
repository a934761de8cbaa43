//! SQS set-up through the real SDK client.

use aws_sdk_sqs::Client;
use aws_sdk_sqs::types::QueueAttributeName;

/// Creates the queue `name` with `attributes` through `CreateQueue` and returns its URL; panics
/// if the call fails.
pub async fn create_queue(
    sqs: &Client,
    name: &str,
    attributes: &[(QueueAttributeName, &str)],
) -> String {
    let mut req = sqs.create_queue().queue_name(name);
    for (k, v) in attributes {
        req = req.attributes(k.clone(), *v);
    }
    let out = req.send().await.expect("CreateQueue");
    out.queue_url.expect("CreateQueue answers a queue URL")
}
