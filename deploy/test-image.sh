#!/usr/bin/env bash
# End-to-end test of the container image in worker mode, against the emulator on this host:
#   emulator (cargo-built kvs-emulator) with a bucket that notifies a standard intake queue and a
#   FIFO work queue with its DLQ -> upload a clip under cam1/ -> the image (`worker`, host
#   network) forwards the S3 event into the FIFO queue, streams the object into `e2e-cam1`
#   (created by the worker) -> the clip's 10 s persisted exactly once (ListFragments: lengths,
#   no overlap, no duplicate),
#   both queues empty, the container healthy (its HEALTHCHECK) -> `podman stop` (SIGTERM) -> the
#   worker drains and exits 0.
# Before that, a smoke test of the image alone: serve mode healthy, non-root, exit 0 on SIGTERM.
# The AWS side is driven with boto3 (the real SDK), as a user would.
#
# Usage: deploy/test-image.sh   (as root; builds the image with deploy/image.sh when missing)
# Env:   IMAGE (default localhost/s3-to-kvs:latest)
set -euo pipefail
cd "$(dirname "$0")/.."

IMAGE=${IMAGE:-localhost/s3-to-kvs:latest}
say() { printf '[e2e] %s\n' "$*" >&2; }
die() { printf '[e2e] FAIL: %s\n' "$*" >&2; exit 1; }
podman() { command podman --runtime runc "$@"; }
[[ $(id -u) -eq 0 ]] || die "rootful podman: run as root"

if ! podman image exists "$IMAGE"; then
  say "no $IMAGE: building it"
  IMAGE=$IMAGE deploy/image.sh
fi
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
container=kvs-e2e-$$
smoke=kvs-smoke-$$
work=
emulator_pid=
cleanup() {
  podman rm -f "$container" "$smoke" >/dev/null 2>&1 || true
  if [[ -n $emulator_pid ]]; then
    kill "$emulator_pid" 2>/dev/null || true
    wait "$emulator_pid" 2>/dev/null || true
  fi
  [[ -z $work ]] || rm -rf "$work"
}
trap cleanup EXIT

# Smoke test of the image itself, independent of the queue: the HTTP service with its embedded
# emulator runs as uid 10001, the image's HEALTHCHECK command passes, SIGTERM ends it with 0.
port=$(free_port)
say "smoke: serve mode (embedded emulator) on :$port"
podman run -d --name "$smoke" --network host --health-interval disable -e PORT="$port" \
  "$IMAGE" --emulator >/dev/null 2>&1
healthy=
for _ in $(seq 50); do
  if podman healthcheck run "$smoke" >/dev/null 2>&1; then healthy=1; break; fi
  sleep 0.2
done
[[ -n $healthy ]] || { podman logs "$smoke" >&2 || true; die "the image's HEALTHCHECK never passed"; }
user=$(podman exec "$smoke" id -u)
[[ $user == 10001 ]] || die "the service runs as uid $user, expected 10001"
podman stop --time 30 "$smoke" >/dev/null 2>&1
status=$(podman inspect --format '{{.State.ExitCode}}' "$smoke")
[[ $status == 0 ]] || die "serve mode exited with $status after SIGTERM"
podman rm -f "$smoke" >/dev/null 2>&1
say "smoke: healthy, uid 10001, exit 0 after SIGTERM"

# The worker subcommand is the queue worker (issue "Durable, scalable intake"): without it there
# is nothing to test, and saying so beats a confusing timeout.
if ! podman run --rm --network host "$IMAGE" worker --help >/dev/null 2>&1; then
  die "$IMAGE has no 'worker' subcommand (s3-to-kvs worker, the queue worker): merge it, rebuild with deploy/image.sh"
fi
python3 -c 'import boto3' 2>/dev/null || python3 -m pip install --quiet 'boto3>=1.34'

work=$(mktemp -d)

say "building kvs-emulator"
cargo build --locked --quiet -p kvs-emulator --features cli
emulator=target/debug/kvs-emulator
"$emulator" --host 127.0.0.1 --port 0 --data-dir "$work/emu" --persist-delay-ms 50 \
  >"$work/emulator.out" 2>"$work/emulator.err" &
emulator_pid=$!
for _ in $(seq 100); do
  grep -q '^listening on ' "$work/emulator.out" 2>/dev/null && break
  kill -0 "$emulator_pid" 2>/dev/null || { cat "$work/emulator.err" >&2; die "the emulator exited"; }
  sleep 0.1
done
endpoint=$(awk '/^listening on / {print $3; exit}' "$work/emulator.out")
[[ -n $endpoint ]] || die "the emulator printed no 'listening on' line"
# The emulator prints the environment to use; keep its exports (endpoint, keys, region).
eval "$(grep '^export ' "$work/emulator.out")"
# boto3 reads the region from AWS_DEFAULT_REGION.
export AWS_DEFAULT_REGION=$AWS_REGION
say "emulator at $endpoint"

# A 10 s clip (250 frames at 25 fps) with a keyframe every second.
clip=$work/clip.mp4
ffmpeg -hide_banner -loglevel error -f lavfi -i testsrc2=size=320x240:rate=25 -frames:v 250 \
  -c:v libx264 -preset ultrafast -g 25 -keyint_min 25 -sc_threshold 0 -pix_fmt yuv420p "$clip"
# (ffprobe prints side data of the first frame on a line of its own: count timestamps only.)
keyframes=$(ffprobe -v error -select_streams v:0 -skip_frame nokey -show_entries frame=pts_time \
  -of csv=p=0 "$clip" | grep -cE '^[0-9]')
[[ $keyframes -eq 10 ]] || die "the test clip has $keyframes keyframes, expected 10"
say "clip: $keyframes keyframes"

export E2E_BUCKET=e2e-uploads E2E_KEY=cam1/clip.mp4 E2E_STREAM=e2e-cam1 E2E_CLIP=$clip
python3 - >"$work/queues.env" <<'PY'
import json, os, boto3
s3 = boto3.client("s3")
sqs = boto3.client("sqs")
intake_dlq = sqs.create_queue(QueueName="e2e-intake-dlq")["QueueUrl"]
work_dlq = sqs.create_queue(QueueName="e2e-work-dlq.fifo", Attributes={"FifoQueue": "true"})["QueueUrl"]
def arn(url):
    return sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
intake = sqs.create_queue(QueueName="e2e-intake", Attributes={
    "RedrivePolicy": json.dumps({"deadLetterTargetArn": arn(intake_dlq), "maxReceiveCount": "5"})})["QueueUrl"]
work = sqs.create_queue(QueueName="e2e-work.fifo", Attributes={
    "FifoQueue": "true", "VisibilityTimeout": "60",
    "RedrivePolicy": json.dumps({"deadLetterTargetArn": arn(work_dlq), "maxReceiveCount": "5"})})["QueueUrl"]
bucket = os.environ["E2E_BUCKET"]
s3.create_bucket(Bucket=bucket)
s3.put_bucket_notification_configuration(Bucket=bucket, NotificationConfiguration={
    "QueueConfigurations": [{"QueueArn": arn(intake), "Events": ["s3:ObjectCreated:*"]}]})
print(f"INTAKE_QUEUE_URL={intake}")
print(f"QUEUE_URL={work}")
print(f"WORK_DLQ_URL={work_dlq}")
print(f"INTAKE_DLQ_URL={intake_dlq}")
PY
# shellcheck disable=SC1091
source "$work/queues.env"
export INTAKE_QUEUE_URL QUEUE_URL WORK_DLQ_URL INTAKE_DLQ_URL

health_port=$(free_port)
say "starting $IMAGE worker (health on :$health_port)"
podman run -d --name "$container" --network host --health-interval disable \
  -e QUEUE_URL -e INTAKE_QUEUE_URL -e STREAM_TEMPLATE='e2e-{key_dir}' -e CREATE_STREAMS=true \
  -e RETENTION_HOURS=1 -e CONCURRENCY=2 -e DRAIN_SECONDS=20 -e PORT="$health_port" \
  -e LOG_FORMAT=json -e AWS_ENDPOINT_URL -e AWS_ACCESS_KEY_ID -e AWS_SECRET_ACCESS_KEY \
  -e AWS_REGION "$IMAGE" worker >/dev/null

say "uploading s3://$E2E_BUCKET/$E2E_KEY"
python3 -c '
import os, boto3
boto3.client("s3").upload_file(os.environ["E2E_CLIP"], os.environ["E2E_BUCKET"], os.environ["E2E_KEY"])'

# The worker may transcode and picks its own keyframe interval, so the check does not count
# fragments: the persisted fragments must cover the clip's 10 s exactly once (lengths summing to
# its duration within a frame, without overlap or duplicates).
say "waiting for $E2E_STREAM to hold the whole clip, and empty queues"
if ! E2E_DURATION_MS=10000 python3 - <<'PY'
import datetime, os, sys, time, boto3
stream, want_ms = os.environ["E2E_STREAM"], int(os.environ["E2E_DURATION_MS"])
frame_ms = 40  # 25 fps
# A fragment's length is its playback duration (ListFragments' FragmentLengthInMilliseconds,
# last frame included), so the lengths add up to the clip's duration.
kv, sqs = boto3.client("kinesisvideo"), boto3.client("sqs")
def backlog(url):
    a = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["All"])["Attributes"]
    return int(a["ApproximateNumberOfMessages"]) + int(a["ApproximateNumberOfMessagesNotVisible"])
def fragments():
    try:
        ep = kv.get_data_endpoint(StreamName=stream, APIName="LIST_FRAGMENTS")["DataEndpoint"]
    except kv.exceptions.ResourceNotFoundException:
        return []
    am = boto3.client("kinesis-video-archived-media", endpoint_url=ep)
    out, token = [], None
    while True:
        page = am.list_fragments(StreamName=stream, **({"NextToken": token} if token else {}))
        out += page["Fragments"]
        token = page.get("NextToken")
        if not token:
            return out
deadline, state, shown = time.monotonic() + 240, "", 0.0
while time.monotonic() < deadline:
    if time.monotonic() - shown > 15:
        shown = time.monotonic()
        if state:
            print(f"[e2e] waiting: {state}", file=sys.stderr, flush=True)
    frags = sorted(fragments(), key=lambda f: f["ProducerTimestamp"])
    total_ms = sum(f["FragmentLengthInMilliseconds"] for f in frags)
    tolerance_ms = frame_ms
    queues = {n: backlog(os.environ[n]) for n in ("INTAKE_QUEUE_URL", "QUEUE_URL", "WORK_DLQ_URL", "INTAKE_DLQ_URL")}
    state = f"{len(frags)} fragments, {total_ms} ms of {want_ms}, queues {queues}"
    if queues["WORK_DLQ_URL"] or queues["INTAKE_DLQ_URL"]:
        sys.exit(f"a message was dead-lettered: {state}")
    if total_ms > want_ms + tolerance_ms:
        sys.exit(f"more media than the clip holds (duplicates?): {state}")
    if abs(total_ms - want_ms) <= tolerance_ms and queues["INTAKE_QUEUE_URL"] == 0 and queues["QUEUE_URL"] == 0:
        numbers = [f["FragmentNumber"] for f in frags]
        if len(set(numbers)) != len(numbers):
            sys.exit(f"duplicate fragment numbers: {numbers}")
        for a, b in zip(frags, frags[1:]):
            end = a["ProducerTimestamp"] + datetime.timedelta(milliseconds=a["FragmentLengthInMilliseconds"] - 1)
            if b["ProducerTimestamp"] < end:
                sys.exit(f"fragments overlap at {b['ProducerTimestamp']}: {state}")
        print(f"[e2e] {state}", file=sys.stderr)
        sys.exit(0)
    time.sleep(1)
sys.exit(f"timed out: {state}")
PY
then
  say "worker log (last 40 lines):"
  podman logs --tail 40 "$container" >&2 || true
  die "the object was not streamed completely"
fi

say "health check (the image's HEALTHCHECK command)"
podman healthcheck run "$container" || die "the container's health check failed"

say "podman stop (SIGTERM), expecting a drain and exit 0"
podman stop --time 30 "$container" >/dev/null
status=$(podman inspect --format '{{.State.ExitCode}}' "$container")
if [[ $status != 0 ]]; then
  podman logs --tail 40 "$container" >&2 || true
  die "the worker exited with $status after SIGTERM (137 = killed after the stop timeout)"
fi
emf_lines=$(podman logs "$container" 2>/dev/null | grep -c '"CloudWatchMetrics"' || true)
say "metrics: $emf_lines EMF lines on stdout"
say "ok: the whole clip persisted once, queues empty, healthy, exit 0 after SIGTERM"
