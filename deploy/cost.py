#!/usr/bin/env python3
"""Computed cost of one hour of video through the deployed stack (deploy/cdk).

Prices: published on-demand list prices for US East (N. Virginia, us-east-1), as read on
2026-12-07 from the AWS pricing pages named next to each constant. They change: check the pages,
or pass other values on the command line. Everything here is computed, nothing is measured on AWS.

    python3 deploy/cost.py                      # the defaults used in docs/deploy.md
    python3 deploy/cost.py --mbps 4 --concurrency 1 --upload-days 7
"""
import argparse

GB = 1e9  # AWS bills data in GB; decimal here (1 GiB would change results by 7%)

# https://aws.amazon.com/kinesis/video-streams/pricing/
KVS_INGEST_PER_GB = 0.0085
KVS_STORAGE_PER_GB_MONTH = 0.023
# https://aws.amazon.com/fargate/pricing/ (Linux/x86)
FARGATE_VCPU_HOUR = 0.04048
FARGATE_GB_HOUR = 0.004445
# https://aws.amazon.com/vpc/pricing/ (public IPv4 address, per hour)
PUBLIC_IPV4_HOUR = 0.005
# https://aws.amazon.com/sqs/pricing/ (per request, after the free tier)
SQS_STANDARD_PER_REQUEST = 0.40 / 1e6
SQS_FIFO_PER_REQUEST = 0.50 / 1e6
# https://aws.amazon.com/s3/pricing/ (S3 Standard)
S3_STORAGE_PER_GB_MONTH = 0.023
S3_PUT_PER_REQUEST = 0.005 / 1000
S3_GET_PER_REQUEST = 0.0004 / 1000
# https://aws.amazon.com/cloudwatch/pricing/ (logs ingestion, standard class)
LOGS_INGEST_PER_GB = 0.50
HOURS_PER_MONTH = 730


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--mbps", type=float, default=2.0, help="video bitrate, Mbit/s (default 2: 1080p H.264 surveillance)")
    p.add_argument("--cpu", type=float, default=1.0, help="task vCPU (deploy/cdk default 1)")
    p.add_argument("--memory-gb", type=float, default=2.0, help="task memory, GB (default 2)")
    p.add_argument("--concurrency", type=int, default=4, help="objects one task streams at once (CONCURRENCY, default 4)")
    p.add_argument("--kvs-retention-hours", type=float, default=24, help="stream retention (RETENTION_HOURS, default 24)")
    p.add_argument("--upload-days", type=float, default=30, help="days the upload stays in S3 (default 30)")
    p.add_argument("--fragment-seconds", type=float, default=2, help="fragment duration (keyframe interval, default 2)")
    p.add_argument("--log-bytes-per-fragment", type=float, default=1000, help="log + EMF bytes per fragment (default 1000)")
    a = p.parse_args()

    gb = a.mbps * 1e6 / 8 * 3600 / GB
    fragments = 3600 / a.fragment_seconds
    # Realtime pacing: one hour of video occupies one of CONCURRENCY slots for an hour.
    task_hours = 1 / a.concurrency
    # Per object: S3 -> intake send, receive, delete; worker -> FIFO send, receive, a visibility
    # extension every 5 minutes while streaming, delete. Plus each task's long polls (20 s, two
    # queues) for the time it runs, counted at the FIFO rate.
    standard_requests = 3
    fifo_requests = 3 + 60 / 5
    poll_requests = task_hours * 2 * 3600 / 20
    rows = [
        ("KVS ingestion", gb * KVS_INGEST_PER_GB),
        (f"KVS storage ({a.kvs_retention_hours:g} h)", gb * KVS_STORAGE_PER_GB_MONTH * a.kvs_retention_hours / HOURS_PER_MONTH),
        (f"Fargate ({a.cpu:g} vCPU, {a.memory_gb:g} GB, 1/{a.concurrency} task-hour)",
         task_hours * (a.cpu * FARGATE_VCPU_HOUR + a.memory_gb * FARGATE_GB_HOUR)),
        ("public IPv4 of the task", task_hours * PUBLIC_IPV4_HOUR),
        (f"S3 storage of the upload ({a.upload_days:g} days)", gb * S3_STORAGE_PER_GB_MONTH * a.upload_days * 24 / HOURS_PER_MONTH),
        ("S3 requests (multipart PUT in 16 MB parts, GET)", (gb * GB / 16e6 + 2) * S3_PUT_PER_REQUEST + 2 * S3_GET_PER_REQUEST),
        ("SQS requests", standard_requests * SQS_STANDARD_PER_REQUEST + (fifo_requests + poll_requests) * SQS_FIFO_PER_REQUEST),
        ("CloudWatch Logs (JSON logs + EMF)", fragments * a.log_bytes_per_fragment / GB * LOGS_INGEST_PER_GB),
    ]
    print(f"one hour of video at {a.mbps:g} Mbit/s = {gb:.3f} GB, {fragments:.0f} fragments (computed, us-east-1 list prices of 2026-12-07)")
    width = max(len(name) for name, _ in rows)
    for name, usd in rows:
        print(f"  {name:<{width}}  ${usd:.5f}")
    print(f"  {'total':<{width}}  ${sum(u for _, u in rows):.4f}")


if __name__ == "__main__":
    main()
