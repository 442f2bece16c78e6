#!/usr/bin/env bash
# Set up podman as a Docker-API engine for the container sandbox (CI and developers).
#
#   scripts/setup_podman.sh [SOCKET_PATH]        (default: /run/evoforge/podman.sock)
#
# Idempotent: installs podman/runc/debootstrap if missing, writes /etc/containers/containers.conf,
# builds the evaluator base image `evoforge-eval-base:latest` with debootstrap (no registry pulls
# needed; the rootfs tarball is cached under $EVOFORGE_CACHE, default /var/cache/evoforge) only if
# the image is absent, starts `podman system service` on the socket if it is not answering, waits
# for it, and prints `DOCKER_HOST=unix://SOCKET` as its last line of stdout.
#
# Needs root. Environment: EVOFORGE_IMAGE (default evoforge-eval-base:latest), EVOFORGE_CACHE,
# EVOFORGE_DEBIAN_MIRROR (default: the URIs line of /etc/apt/sources.list.d/debian.sources).
set -euo pipefail

SOCK="${1:-${EVOFORGE_PODMAN_SOCK:-/run/evoforge/podman.sock}}"
IMAGE="${EVOFORGE_IMAGE:-evoforge-eval-base:latest}"
CACHE="${EVOFORGE_CACHE:-/var/cache/evoforge}"
# Bump RECIPE when the package list or the trimming below changes: a stale image is rebuilt.
RECIPE=4
PACKAGES="python3-minimal,python3-numpy,python3-scipy,libopenblas0-pthread"
ROOTFS_TAR="$CACHE/eval-base-rootfs-r$RECIPE.tar"
LOG="$CACHE/podman-service.log"

log() { echo "setup_podman: $*" >&2; }

if [ "$(id -u)" != 0 ]; then
  log "must run as root (installs packages, writes /etc/containers)"; exit 1
fi

# 1. packages
missing=()
for pkg_bin in podman:podman runc:runc debootstrap:debootstrap; do
  command -v "${pkg_bin#*:}" >/dev/null 2>&1 || missing+=("${pkg_bin%%:*}")
done
if [ "${#missing[@]}" -gt 0 ]; then
  log "installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >&2
  apt-get install -y -qq "${missing[@]}" >&2
fi

# 2. engine config: runc (crun is not usable here) and bounded default ulimits
mkdir -p /etc/containers
CONF=/etc/containers/containers.conf
WANT='[containers]
default_ulimits = ["nofile=1024:1024", "nproc=4096:4096"]

[engine]
runtime = "runc"'
if [ ! -f "$CONF" ] || [ "$(cat "$CONF")" != "$WANT" ]; then
  log "writing $CONF"
  printf '%s\n' "$WANT" > "$CONF"
fi

# Drop what an evaluator never needs: docs, package caches, and the C/C++ toolchain, headers
# and static libraries that python3-scipy drags in through python3-pythran (about 450 MB).
trim_rootfs() {
  local r="$1"
  rm -rf "$r"/var/cache/apt/archives/*.deb "$r"/var/lib/apt/lists/* \
    "$r"/usr/share/doc/* "$r"/usr/share/man/* "$r"/usr/share/locale/* "$r"/usr/share/info/* \
    "$r"/usr/include "$r"/usr/lib/gcc "$r"/usr/libexec/gcc \
    "$r"/usr/lib/python3.11/config-3.11-x86_64-linux-gnu/*.a
  find "$r/usr/bin" -name 'x86_64-linux-gnu-*' -delete
  find "$r/usr/lib" -name '*.a' -delete
  find "$r/usr/lib/x86_64-linux-gnu" -maxdepth 1 \( -name 'libasan.so*' -o -name 'libtsan.so*' \
    -o -name 'liblsan.so*' -o -name 'libubsan.so*' -o -name 'libhwasan.so*' \) -delete
}

# 3. base image (python3 + numpy + scipy on OpenBLAS), built from Debian packages: no registry needed
mkdir -p "$CACHE"
have_recipe="$(podman image inspect --format '{{ index .Config.Labels "evoforge.recipe" }}' "$IMAGE" 2>/dev/null || true)"
if [ "$have_recipe" != "$RECIPE" ]; then
  find "$CACHE" -maxdepth 1 -name "eval-base-rootfs*.tar" ! -name "${ROOTFS_TAR##*/}" -delete
  if [ ! -s "$ROOTFS_TAR" ]; then
    MIRROR="${EVOFORGE_DEBIAN_MIRROR:-}"
    if [ -z "$MIRROR" ] && [ -f /etc/apt/sources.list.d/debian.sources ]; then
      MIRROR="$(awk '/^URIs:/ {print $2; exit}' /etc/apt/sources.list.d/debian.sources)"
    fi
    MIRROR="${MIRROR:-http://deb.debian.org/debian}"
    ROOTFS="$(mktemp -d "$CACHE/rootfs.XXXXXX")"
    trap 'rm -rf "$ROOTFS"' EXIT
    log "debootstrap bookworm from $MIRROR into $ROOTFS (about a minute)"
    debootstrap --variant=minbase --include="$PACKAGES" \
      bookworm "$ROOTFS" "$MIRROR" >&2
    trim_rootfs "$ROOTFS"
    mkdir -p "$ROOTFS/sbx"   # mount point of the per-run volume
    tar -C "$ROOTFS" -cf "$ROOTFS_TAR.part" .
    mv "$ROOTFS_TAR.part" "$ROOTFS_TAR"
    rm -rf "$ROOTFS"; trap - EXIT
  fi
  old_id="$(podman image inspect --format '{{.Id}}' "$IMAGE" 2>/dev/null || true)"
  log "importing $ROOTFS_TAR as $IMAGE"
  podman import --change 'CMD ["python3"]' --change 'WORKDIR /tmp' \
    --change "LABEL evoforge.recipe=$RECIPE" \
    "$ROOTFS_TAR" "$IMAGE" >&2
  [ -z "$old_id" ] || podman rmi "$old_id" >/dev/null 2>&1 || true   # the superseded recipe
fi

# 4. the Docker-API service
answers() { curl -sf --max-time 2 --unix-socket "$SOCK" http://d/_ping >/dev/null 2>&1; }
if ! command -v curl >/dev/null 2>&1; then
  answers() { python3 - "$SOCK" <<'PY' 2>/dev/null
import socket, sys
s = socket.socket(socket.AF_UNIX); s.settimeout(2); s.connect(sys.argv[1])
s.sendall(b"GET /_ping HTTP/1.0\r\nHost: d\r\n\r\n")
sys.exit(0 if b" 200 " in s.recv(256) else 1)
PY
  }
fi
if ! answers; then
  mkdir -p "$(dirname "$SOCK")"
  rm -f "$SOCK"
  log "starting podman system service on $SOCK (log: $LOG)"
  # From the cache directory: conmon leaves an `oom` marker file in the service's working
  # directory when a container is OOM-killed, which must not land in the caller's checkout.
  cd "$CACHE"
  setsid nohup podman system service --time=0 "unix://$SOCK" >>"$LOG" 2>&1 &
  for _ in $(seq 1 100); do
    answers && break
    sleep 0.2
  done
  if ! answers; then log "podman service did not answer on $SOCK; see $LOG"; exit 1; fi
fi

echo "DOCKER_HOST=unix://$SOCK"
