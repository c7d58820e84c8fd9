#!/usr/bin/env bash
# Bench a bundle on a device reachable over ssh and add its rows to a run's reports.
#   tools/bench_on_device.sh BUNDLE user@host[:port] [RUN_DIR] [REMOTE_PYTHON]
# The device needs Python 3 with numpy and the bundle's runtime (see the bundle's manifest.json "runtime.package").
# Uses your ssh agent / ~/.ssh/config; EDGEKIT_SSH_KEY names a key file, EDGEKIT_KNOWN_HOSTS a known_hosts file
# (new host keys are accepted into it), EDGEKIT_SECONDS the timed seconds per mode (default 2).
set -euo pipefail
if [ $# -lt 2 ]; then
  echo "usage: $0 BUNDLE user@host[:port] [RUN_DIR] [REMOTE_PYTHON]" >&2
  exit 2
fi
bundle=$1 device=$2 run=${3:-} python=${4:-python3}
args=(device-bench "$bundle" --device "ssh://$device" --python "$python" --seconds "${EDGEKIT_SECONDS:-2}")
[ -n "$run" ] && args+=(--run "$run")
[ -n "${EDGEKIT_SSH_KEY:-}" ] && args+=(--identity "$EDGEKIT_SSH_KEY")
[ -n "${EDGEKIT_KNOWN_HOSTS:-}" ] && args+=(--known-hosts "$EDGEKIT_KNOWN_HOSTS")
exec "${EDGEKIT:-edgekit}" "${args[@]}"
