#!/usr/bin/env bash
# The whole test suite, exactly as CI runs it (.ci/run calls this and nothing else):
# system deps, format, lints, every test (unit, integration against the emulator with real ffmpeg,
# property tests, doc tests), then a bounded fuzzing pass over every parser.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/system-deps.sh
ensure_system_deps

step() { printf '\n==> %s\n' "$*" >&2; }

step "cargo fmt --check"
cargo fmt --all -- --check

step "cargo clippy (all targets, -D warnings)"
cargo clippy --workspace --all-targets --locked -- -D warnings

step "cargo test"
cargo test --workspace --locked

# The emulator's binary and its test need the `cli` feature, which the workspace build leaves off so
# that library users do not compile clap, anyhow and tracing-subscriber.
step "kvs-emulator binary (feature cli)"
cargo clippy -p kvs-emulator --features cli --all-targets --locked -- -D warnings
cargo test -p kvs-emulator --features cli --test binary --test python_boto3 --locked

# The three libraries as crates.io would receive them: packaged in dependency order and each built
# from its package against the others' packages (not the registry), so a file missing from a
# package or a path-only dependency fails here. About 10 minutes on 2 cores (dependencies are
# rebuilt for the packaged manifests).
step "cargo publish --dry-run (kvs-emulator, kvs-putmedia, ffmpeg-source)"
cargo publish --dry-run --allow-dirty --locked -p kvs-emulator -p kvs-putmedia -p ffmpeg-source

# The emulator's web console in headless Chromium (opt-in test: it needs chromium and npm deps).
step "console in headless chromium"
(cd crates/kvs-emulator/tests/browser && npm ci --no-audit --no-fund --loglevel=error)
cargo test -p kvs-emulator --locked --test console_browser -- --ignored

# Fuzzing: each target runs for FUZZ_SECONDS (bounded, so CI time is predictable). cargo-fuzz needs
# nightly flags; RUSTC_BOOTSTRAP=1 enables them on the stable toolchain (AddressSanitizer included).
step "cargo fuzz (${FUZZ_SECONDS:=20} s per target)"
if ! cargo fuzz --version >/dev/null 2>&1; then
  cargo install cargo-fuzz --locked --quiet
fi
log=$(mktemp)
trap 'rm -f "$log"' EXIT
for target in $(cd fuzz && RUSTC_BOOTSTRAP=1 cargo fuzz list); do
  step "fuzz $target"
  if ! (cd fuzz && RUSTC_BOOTSTRAP=1 cargo fuzz run "$target" -- \
      -max_total_time="$FUZZ_SECONDS" -rss_limit_mb=2048) >"$log" 2>&1; then
    tail -n 80 "$log" >&2
    echo "fuzz target $target failed (crash input saved under fuzz/artifacts/$target)" >&2
    exit 1
  fi
  grep -E '^Done [0-9]+ runs' "$log" >&2 || tail -n 3 "$log" >&2
done

# Deployment: the CDK app offline (npm ci, jest, synth, cfn-lint, checkov), then the container
# image built with rootful podman and run end to end in worker mode against the emulator.
step "deploy/test-cdk.sh (jest, cdk synth, cfn-lint, checkov)"
deploy/test-cdk.sh

step "deploy/image.sh (container image, podman)"
deploy/image.sh

step "deploy/test-image.sh (the image in worker mode against the emulator)"
deploy/test-image.sh
