#!/usr/bin/env bash
# Builds the service image from deploy/Dockerfile with rootful podman, on a machine that reaches
# no container registry: both base images the Dockerfile names are made here first, under the
# same names, so the Dockerfile itself stays the one that builds anywhere.
#   - debian:bookworm-slim: debootstrap (minbase) from the Debian mirror apt already uses; the
#     root filesystem tarball is cached in $KVS_IMAGE_CACHE so later runs skip debootstrap.
#   - rust:1.95-slim-bookworm: that Debian plus gcc/libc6-dev and a copy of this machine's
#     installed Rust toolchain, laid out like the official image (/usr/local/rustup, /usr/local/cargo).
# Then `podman build --pull=never`, and the image's size and the build time are printed.
#
# Usage: deploy/image.sh            (as root, or with sudo available)
# Env:   IMAGE (default localhost/s3-to-kvs:latest), KVS_IMAGE_CACHE (default /var/cache/kvs-stream)
set -euo pipefail
cd "$(dirname "$0")/.."

IMAGE=${IMAGE:-localhost/s3-to-kvs:latest}
CACHE_DIR=${KVS_IMAGE_CACHE:-/var/cache/kvs-stream}
DOCKERFILE=deploy/Dockerfile
# The base image names come from the Dockerfile, so the two cannot drift apart.
RUST_IMAGE=$(awk '/^FROM .* AS build/ {print $2; exit}' "$DOCKERFILE")
DEBIAN_IMAGE=$(awk '/^FROM / {img=$2} END {print img}' "$DOCKERFILE")

say() { printf '[image] %s\n' "$*" >&2; }
die() { printf '[image] error: %s\n' "$*" >&2; exit 1; }

SUDO=()
if [[ $(id -u) -ne 0 ]]; then
  command -v sudo >/dev/null 2>&1 || die "rootful podman and debootstrap need root (or sudo)"
  SUDO=(sudo)
fi
podman() { "${SUDO[@]}" command podman --runtime runc "$@"; }

ensure_tools() {
  local missing=()
  for tool in podman runc debootstrap; do
    command -v "$tool" >/dev/null 2>&1 || missing+=("$tool")
  done
  ((${#missing[@]})) || return 0
  say "installing ${missing[*]} with apt-get"
  "${SUDO[@]}" apt-get update -qq
  DEBIAN_FRONTEND=noninteractive "${SUDO[@]}" apt-get install -y -qq "${missing[@]}" >/dev/null
}

# Rootful podman in a container (as on CI) cannot raise the nofile limit it sets by default;
# an empty default_ulimits leaves the limits as they are.
ensure_containers_conf() {
  local conf=/etc/containers/containers.conf
  if [[ -f $conf ]] && grep -Eq '^[[:space:]]*default_ulimits[[:space:]]*=[[:space:]]*\[\]' "$conf"; then
    return 0
  fi
  say "setting default_ulimits = [] in $conf"
  "${SUDO[@]}" mkdir -p /etc/containers
  if [[ -f $conf ]] && grep -q '^\[containers\]' "$conf"; then
    "${SUDO[@]}" sed -i '/^\[containers\]/a default_ulimits = []' "$conf"
  else
    printf '[containers]\ndefault_ulimits = []\n' | "${SUDO[@]}" tee -a "$conf" >/dev/null
  fi
}

# The mirror of the main Debian archive apt uses (deb822 .sources or one-line sources.list).
debian_mirror() {
  local files=(/etc/apt/sources.list /etc/apt/sources.list.d/*.list /etc/apt/sources.list.d/*.sources)
  local uri
  uri=$(cat "${files[@]}" 2>/dev/null |
    awk '/^URIs:/ {print $2} /^deb / {for (i = 2; i <= NF; i++) if ($i ~ /^https?:/) {print $i; break}}' |
    grep -v -- '-security' | grep -E '/debian/?$' | head -n 1 || true)
  echo "${uri:-http://deb.debian.org/debian}"
}

# Bump when the recipe of the local base images changes: cached tarballs and images made by an
# older recipe are then made again (the label is inherited by the rust image).
BASE_RECIPE=2
recipe_of() { podman image inspect --format '{{index .Labels "org.kvs-stream.base-recipe"}}' "$1" 2>/dev/null || true; }

make_debian_image() {
  if [[ $(recipe_of "$DEBIAN_IMAGE") == "$BASE_RECIPE" ]]; then
    say "$DEBIAN_IMAGE present"
    return 0
  fi
  local tarball=$CACHE_DIR/debian-bookworm-minbase-r$BASE_RECIPE.tar
  if [[ ! -s $tarball ]]; then
    local mirror root
    mirror=$(debian_mirror)
    root=$(mktemp -d)
    say "debootstrap --variant=minbase bookworm from $mirror (cached afterwards in $tarball)"
    "${SUDO[@]}" debootstrap --variant=minbase bookworm "$root" "$mirror" >/dev/null
    # What the official slim image does: security updates in the sources, no docs/man/locales
    # installed by later apt-get calls, no package lists left in the image.
    printf 'Types: deb\nURIs: %s\nSuites: bookworm bookworm-updates\nComponents: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n\nTypes: deb\nURIs: %s-security\nSuites: bookworm-security\nComponents: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n' \
      "$mirror" "${mirror%/debian}/debian" | "${SUDO[@]}" tee "$root/etc/apt/sources.list.d/debian.sources" >/dev/null
    "${SUDO[@]}" rm -f "$root/etc/apt/sources.list"
    printf 'path-exclude /usr/share/doc/*\npath-include /usr/share/doc/*/copyright\npath-exclude /usr/share/man/*\npath-exclude /usr/share/info/*\npath-exclude /usr/share/locale/*\n' |
      "${SUDO[@]}" tee "$root/etc/dpkg/dpkg.cfg.d/docker-slim" >/dev/null
    # apt deletes downloaded .deb files after installing and fetches no translations
    # (/etc/apt/apt.conf.d/docker-clean and docker-no-languages in the official image).
    printf '%s\n' \
      'DPkg::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };' \
      'APT::Update::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };' \
      'Dir::Cache::pkgcache ""; Dir::Cache::srcpkgcache "";' | "${SUDO[@]}" tee "$root/etc/apt/apt.conf.d/docker-clean" >/dev/null
    echo 'Acquire::Languages "none";' | "${SUDO[@]}" tee "$root/etc/apt/apt.conf.d/docker-no-languages" >/dev/null
    "${SUDO[@]}" chroot "$root" apt-get clean
    "${SUDO[@]}" rm -rf "$root"/var/lib/apt/lists/* "$root"/usr/share/doc/* "$root"/usr/share/man/* "$root"/usr/share/locale/*
    "${SUDO[@]}" mkdir -p "$CACHE_DIR"
    "${SUDO[@]}" tar --numeric-owner -C "$root" -cf "$tarball.part" .
    "${SUDO[@]}" mv "$tarball.part" "$tarball"
    "${SUDO[@]}" rm -rf "$root"
  else
    say "reusing $tarball"
  fi
  podman import --change 'CMD ["bash"]' --change "LABEL org.kvs-stream.base-recipe=$BASE_RECIPE" \
    "$tarball" "$DEBIAN_IMAGE" >/dev/null
  say "imported $DEBIAN_IMAGE"
}

make_rust_image() {
  if [[ $(recipe_of "$RUST_IMAGE") == "$BASE_RECIPE" ]]; then
    say "$RUST_IMAGE present"
    return 0
  fi
  local want=${RUST_IMAGE#*rust:}
  want=${want%%-*}
  command -v rustc >/dev/null 2>&1 || die "no installed Rust toolchain to make $RUST_IMAGE from"
  local have sysroot
  have=$(rustc --version | awk '{print $2}')
  [[ $have == "$want" || $have == "$want".* ]] ||
    die "$DOCKERFILE wants Rust $want, the installed toolchain is $have"
  sysroot=$(rustc --print sysroot)
  local ctx
  ctx=$(mktemp -d)
  local toolchain=$have-x86_64-unknown-linux-gnu
  say "making $RUST_IMAGE from the installed toolchain ($sysroot, without its docs)"
  mkdir -p "$ctx/rustup/toolchains/$toolchain" "$ctx/cargo/bin"
  # bin, lib and libexec are what rustc and cargo run; share/doc (~800 MB of HTML) is not.
  cp -a "$sysroot/bin" "$sysroot/lib" "$sysroot/libexec" "$ctx/rustup/toolchains/$toolchain/"
  printf 'version = "12"\ndefault_toolchain = "%s"\nprofile = "minimal"\n' "$toolchain" >"$ctx/rustup/settings.toml"
  # rustup's proxies (cargo, rustc, ...) are the rustup binary under other names.
  cp "$(command -v rustup)" "$ctx/cargo/bin/rustup"
  for proxy in cargo rustc rustdoc cargo-clippy clippy-driver rustfmt cargo-fmt; do
    ln -s rustup "$ctx/cargo/bin/$proxy"
  done
  cat >"$ctx/Containerfile" <<CONTAINERFILE
FROM $DEBIAN_IMAGE
RUN apt-get update \\
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends ca-certificates gcc libc6-dev \\
 && rm -rf /var/lib/apt/lists/*
COPY rustup /usr/local/rustup
COPY cargo /usr/local/cargo
ENV RUSTUP_HOME=/usr/local/rustup CARGO_HOME=/usr/local/cargo PATH=/usr/local/cargo/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin RUST_VERSION=$have
RUN rustc --version && cargo --version
CONTAINERFILE
  podman build --network host --pull=never -t "$RUST_IMAGE" "$ctx" >&2
  rm -rf "$ctx"
}

ensure_tools
ensure_containers_conf
make_debian_image
make_rust_image

say "podman build -f $DOCKERFILE -t $IMAGE"
start=$(date +%s)
# This machine reaches crates.io through a TLS-inspecting proxy whose CA only the host trusts
# (/usr/local/share/ca-certificates). The build stage is built first with the host's CA bundle
# bind-mounted for its RUN steps (bind mounts are never committed); the full build then finds
# that stage in the layer cache, so the run-time stage (whose ca-certificates install rewrites
# the bundle) runs without the mount and no image carries the host's trust.
host_bundle=/etc/ssl/certs/ca-certificates.crt
if [[ -s $host_bundle ]] && compgen -G '/usr/local/share/ca-certificates/*.crt' >/dev/null; then
  podman build --network host --pull=never --format docker --target build \
    --volume "$host_bundle:$host_bundle:ro" -f "$DOCKERFILE" . >&2
fi
# --format docker keeps HEALTHCHECK (the OCI image format has no field for it).
podman build --network host --pull=never --format docker -f "$DOCKERFILE" -t "$IMAGE" . >&2
elapsed=$(($(date +%s) - start))
size=$(podman image inspect --format '{{.Size}}' "$IMAGE")
say "built $IMAGE in ${elapsed} s; size $((size / 1000000)) MB ($size bytes)"
# The image runs: the binary starts as the non-root user and answers --version.
# (--no-healthcheck: podman would start a systemd timer for it, and there is no systemd here.)
podman run --rm --network host --no-healthcheck "$IMAGE" --version >&2
