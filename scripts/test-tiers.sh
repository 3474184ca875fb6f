#!/usr/bin/env bash
# `make test`: every tier, as two pytest sessions that overlap.
#
# The cloud and netboot e2e (tests/e2e/test_cloud.py, test_netboot.py) spend
# most of their time in one long chain: the live image, the controller bake, the
# controller's first starts and qemu boots under software emulation. Run after
# the rest, that chain alone took about a third of the suite; run beside it, it
# uses the time the other tiers spend waiting on the Docker engine. Each session
# has its own prefix, state directory, package cache and lab namespace, so
# neither waits on the other's locks. The cloud session's output goes to a file
# while it runs (two pytest progress lines would interleave) and is printed in
# full at the end; the exit status is non-zero if either session failed.
set -uo pipefail
cd "$(dirname "$0")/.."

PY=.venv/bin/python
CLOUD_TIER=(tests/e2e/test_cloud.py tests/e2e/test_netboot.py)
out=.workbench/test-cloud-tier.out
mkdir -p .workbench

# Its own process group: an interrupted `make test` interrupts the whole session (pytest, fab, qemu),
# and SIGINT lets pytest and fab clean up as they do on Ctrl-C. A non-interactive shell starts
# its background jobs with SIGINT ignored, and an ignored signal stays ignored across exec:
# the session is started with it set back to its default first.
setsid "$PY" -c 'import os, signal, sys; signal.signal(signal.SIGINT, signal.SIG_DFL)
os.execv(sys.executable, [sys.executable, "-m", "pytest", *sys.argv[1:]])' \
    -q --durations=10 -p no:cacheprovider "${CLOUD_TIER[@]}" >"$out" 2>&1 &
cloud=$!
stop_cloud() { kill -INT -- "-$cloud" 2>/dev/null; wait "$cloud"; }
trap 'stop_cloud; exit 130' INT TERM
echo "test: the cloud and netboot e2e run beside the other tiers (pid $cloud); their output: $out" >&2

ignores=()
for path in "${CLOUD_TIER[@]}"; do ignores+=("--ignore=$path"); done
"$PY" -m pytest -q --durations=15 "${ignores[@]}" tests/unit tests/integration tests/e2e
main=$?

started=$(date +%s)
wait "$cloud"
cloud_status=$?
trap - INT TERM
echo
echo "==== the cloud and netboot e2e (${CLOUD_TIER[*]}; waited $(($(date +%s) - started)) s more for them) ===="
cat "$out"
echo "test: other tiers exit $main, cloud and netboot e2e exit $cloud_status"
[ "$main" -eq 0 ] && [ "$cloud_status" -eq 0 ]
