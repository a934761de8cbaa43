"""SQS and S3 event notifications through unmodified boto3 against the emulator.

Run by crates/kvs-emulator/tests/sqs_boto3.rs with the emulator's endpoint, region and
credentials in AWS_ENDPOINT_URL, AWS_DEFAULT_REGION, AWS_ACCESS_KEY_ID and
AWS_SECRET_ACCESS_KEY. Exits non-zero (with the failed assertion) when anything differs.
"""

import hashlib
import json
import struct
import time

import boto3
import botocore


def md5_of_attributes(attrs):
    """The SQS message attribute MD5, computed independently of the emulator."""
    buf = b""
    for name in sorted(attrs):
        a = attrs[name]
        for part in (name.encode(), a["DataType"].encode()):
            buf += struct.pack(">I", len(part)) + part
        if "StringValue" in a:
            v = a["StringValue"].encode()
            buf += b"\x01" + struct.pack(">I", len(v)) + v
        else:
            v = a["BinaryValue"]
            buf += b"\x02" + struct.pack(">I", len(v)) + v
    return hashlib.md5(buf).hexdigest()


def main():
    sqs = boto3.client("sqs")
    s3 = boto3.client("s3")

    # The protocol botocore speaks for SQS (JSON 1.0 in current releases).
    print("sqs protocol:", sqs.meta.service_model.protocol)

    url = sqs.create_queue(QueueName="py-jobs", Attributes={"VisibilityTimeout": "2"})["QueueUrl"]
    assert url.endswith("/123456789012/py-jobs"), url
    assert sqs.get_queue_url(QueueName="py-jobs")["QueueUrl"] == url

    attrs = {
        "kind": {"DataType": "String", "StringValue": "upload"},
        "raw": {"DataType": "Binary", "BinaryValue": b"\x00\x01\xff"},
    }
    body = '{"bucketName": "b", "keyName": "k"}'
    sent = sqs.send_message(QueueUrl=url, MessageBody=body, MessageAttributes=attrs)
    assert sent["MD5OfMessageBody"] == hashlib.md5(body.encode()).hexdigest(), sent
    assert sent["MD5OfMessageAttributes"] == md5_of_attributes(attrs), sent

    got = sqs.receive_message(
        QueueUrl=url,
        MaxNumberOfMessages=10,
        WaitTimeSeconds=1,
        MessageAttributeNames=["All"],
        MessageSystemAttributeNames=["All"],
    )["Messages"]
    assert len(got) == 1, got
    m = got[0]
    assert m["Body"] == body
    assert m["MessageId"] == sent["MessageId"]
    assert m["MD5OfBody"] == hashlib.md5(body.encode()).hexdigest()
    assert m["MD5OfMessageAttributes"] == md5_of_attributes(attrs)
    assert m["MessageAttributes"]["raw"]["BinaryValue"] == b"\x00\x01\xff"
    assert m["Attributes"]["ApproximateReceiveCount"] == "1"

    # Long polling answers early when the visibility timeout (2 s) ends.
    t = time.monotonic()
    again = sqs.receive_message(QueueUrl=url, WaitTimeSeconds=10, AttributeNames=["All"])["Messages"]
    took = time.monotonic() - t
    assert 1.0 < took < 5.0, took
    assert again[0]["Attributes"]["ApproximateReceiveCount"] == "2"
    sqs.change_message_visibility(QueueUrl=url, ReceiptHandle=again[0]["ReceiptHandle"], VisibilityTimeout=30)
    sqs.delete_message(QueueUrl=url, ReceiptHandle=again[0]["ReceiptHandle"])
    counts = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["All"])["Attributes"]
    assert counts["ApproximateNumberOfMessages"] == "0", counts
    assert counts["ApproximateNumberOfMessagesNotVisible"] == "0", counts

    # Errors carry the query-compatible codes boto3 users match on.
    try:
        sqs.get_queue_url(QueueName="nope")
        raise AssertionError("GetQueueUrl of a missing queue succeeded")
    except botocore.exceptions.ClientError as e:
        assert e.response["Error"]["Code"] == "AWS.SimpleQueueService.NonExistentQueue", e.response
    try:
        sqs.delete_message(QueueUrl=url, ReceiptHandle="garbage")
        raise AssertionError("a garbage receipt handle was accepted")
    except botocore.exceptions.ClientError as e:
        assert e.response["Error"]["Code"] == "ReceiptHandleIsInvalid", e.response

    # FIFO with explicit deduplication ids.
    fifo = sqs.create_queue(QueueName="py.fifo", Attributes={"FifoQueue": "true"})["QueueUrl"]
    a = sqs.send_message(QueueUrl=fifo, MessageBody="a", MessageGroupId="g", MessageDeduplicationId="1")
    b = sqs.send_message(QueueUrl=fifo, MessageBody="a", MessageGroupId="g", MessageDeduplicationId="1")
    assert a["MessageId"] == b["MessageId"] and "SequenceNumber" in a
    batch = sqs.send_message_batch(
        QueueUrl=fifo,
        Entries=[
            {"Id": "x", "MessageBody": "b", "MessageGroupId": "g", "MessageDeduplicationId": "2"},
            {"Id": "y", "MessageBody": "c", "MessageGroupId": "h", "MessageDeduplicationId": "3"},
        ],
    )
    assert sorted(e["Id"] for e in batch["Successful"]) == ["x", "y"], batch
    bodies = [m["Body"] for m in sqs.receive_message(QueueUrl=fifo, MaxNumberOfMessages=10)["Messages"]]
    assert bodies == ["a", "b", "c"], bodies

    # S3 -> SQS: the test event, then an ObjectCreated:Put with the key form-encoded.
    events = sqs.create_queue(QueueName="py-events")["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=events, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    s3.create_bucket(Bucket="py-bucket")
    s3.put_bucket_notification_configuration(
        Bucket="py-bucket",
        NotificationConfiguration={
            "QueueConfigurations": [
                {
                    "Id": "py",
                    "QueueArn": arn,
                    "Events": ["s3:ObjectCreated:*"],
                    "Filter": {"Key": {"FilterRules": [{"Name": "suffix", "Value": ".mkv"}]}},
                }
            ]
        },
    )
    conf = s3.get_bucket_notification_configuration(Bucket="py-bucket")["QueueConfigurations"]
    assert conf[0]["QueueArn"] == arn and conf[0]["Events"] == ["s3:ObjectCreated:*"], conf
    s3.put_object(Bucket="py-bucket", Key="dir/my clip.mkv", Body=b"12345")
    msgs = sqs.receive_message(QueueUrl=events, MaxNumberOfMessages=10, WaitTimeSeconds=1)["Messages"]
    bodies = [json.loads(m["Body"]) for m in msgs]
    assert bodies[0]["Event"] == "s3:TestEvent", bodies
    rec = bodies[1]["Records"][0]
    assert rec["eventName"] == "ObjectCreated:Put", rec
    assert rec["s3"]["object"]["key"] == "dir/my+clip.mkv", rec
    assert rec["s3"]["object"]["size"] == 5, rec
    print("ok")


if __name__ == "__main__":
    main()
