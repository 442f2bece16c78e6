#!/usr/bin/env bash
# Install the system packages the integration tests use (Redis, PostgreSQL, bubblewrap, Chromium,
# podman). The tests start their own server processes on loopback from these binaries.
set -euo pipefail
need=()
command -v redis-server >/dev/null || need+=(redis-server)
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || need+=(postgresql)
command -v bwrap >/dev/null || need+=(bubblewrap)
command -v chromium >/dev/null || need+=(chromium)
command -v podman >/dev/null || need+=(podman runc debootstrap)
if [ ${#need[@]} -gt 0 ]; then
  apt-get update -qq
  apt-get install -y -qq "${need[@]}" >/dev/null
fi
if [ -x scripts/setup_podman.sh ]; then
  bash scripts/setup_podman.sh
fi
