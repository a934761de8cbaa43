#!/usr/bin/env bash
# The main job: S3 object -> ffmpeg -> KVS PutMedia, all on the embedded emulator (no AWS account).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/system-deps.sh
ensure_system_deps
exec cargo run --release --locked --quiet -p s3-to-kvs -- demo "$@"
