#!/usr/bin/env bash
# Installs the system tools the pipeline and its tests run for real (ffmpeg, ffprobe, mkvinfo)
# when they are missing. Sourced by scripts/demo.sh and scripts/test.sh so that a fresh Debian
# machine with only the Rust toolchain can run both Quickstart commands.
ensure_system_deps() {
  # The emulator's boto3 test (crates/kvs-emulator/tests/python) runs the real boto3.
  if command -v python3 >/dev/null 2>&1 && ! python3 -c 'import boto3' >/dev/null 2>&1; then
    echo "installing boto3 with pip" >&2
    python3 -m pip install -q boto3 >/dev/null 2>&1 \
      || python3 -m pip install -q --user --break-system-packages boto3 >/dev/null \
      || echo "could not pip install boto3; the emulator's boto3 test will fail" >&2
  fi
  local missing=()
  command -v ffmpeg >/dev/null 2>&1 && command -v ffprobe >/dev/null 2>&1 || missing+=(ffmpeg)
  command -v mkvinfo >/dev/null 2>&1 || missing+=(mkvtoolnix)
  # The console's browser test (crates/kvs-emulator/tests/console_browser.rs).
  command -v chromium >/dev/null 2>&1 || missing+=(chromium)
  command -v npm >/dev/null 2>&1 || missing+=(npm)
  ((${#missing[@]})) || return 0
  local sudo=()
  if [[ $(id -u) -ne 0 ]]; then
    command -v sudo >/dev/null 2>&1 || { echo "need root (or sudo) to apt-get install ${missing[*]}" >&2; return 1; }
    sudo=(sudo)
  fi
  echo "installing ${missing[*]} with apt-get" >&2
  # The package lists of a fresh machine are empty or stale: update first.
  "${sudo[@]}" apt-get update -qq
  DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}
