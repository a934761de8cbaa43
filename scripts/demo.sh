#!/usr/bin/env bash
# The main job, as a system: uploads to a bucket that notifies a queue -> the s3-to-kvs worker ->
# one KVS stream per prefix, streamed concurrently, each read back and verified; all on the
# embedded emulator (no AWS account). `--keep-running` leaves it up to watch; `--help` for more.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/system-deps.sh
ensure_system_deps
exec cargo run --release --locked --quiet -p s3-to-kvs -- demo "$@"
