#!/usr/bin/env bash
# Starts NVIDIA Triton Inference Server 2.51.0 (provisioned by
# conformance/triton/provision.sh, which this runs first) in the background on
# loopback, waits until /v2/health/ready answers (all models loaded: Triton's
# default strict readiness), and prints its PID, the one thing on stdout:
#
#   pid=$(conformance/triton/start.sh REPO HTTP GRPC METRICS [LOG [ARG...]])
#   trap 'kill $pid 2>/dev/null; while kill -0 $pid 2>/dev/null; do sleep 0.2; done' EXIT
#
# REPO is the model repository; HTTP, GRPC and METRICS the ports (from
# free_ports 3 in conformance/peers/lib.sh); LOG the server's log (default
# target/triton/tritonserver.log); ARGs go on to tritonserver, e.g.
# --disable-auto-complete-config (one stub start less per Python model: ready
# in about 0.3 s instead of 2 s; config.pbtxt must then be complete),
# --log-verbose=1, --model-control-mode=explicit --load-model=NAME,
# --exit-timeout-secs=5.
#
# SIGTERM stops it in about 2 s (it unloads the models first). Kill it with
# SIGTERM, not SIGKILL: the Python backend keeps /dev/shm regions that only
# a clean exit removes. Their names start with $TRITON_SHM_PREFIX (default
# serving_triton_<this script's PID>_), unique per start: a second Triton
# started while the first's regions remain (or beside it) segfaulted at
# start-up with Triton's default prefix. A caller that sets the prefix can
# remove /dev/shm/$TRITON_SHM_PREFIX* once the server is gone.
# When start.sh fails (the server exited, or was not ready in 3 minutes) it
# stops the server and prints the log's end on stderr.
set -euo pipefail
cd "$(dirname "$0")/../.."
if [ $# -lt 4 ]; then
  echo "usage: $0 REPO HTTP_PORT GRPC_PORT METRICS_PORT [LOG [TRITONSERVER-ARG...]]" >&2
  exit 2
fi
repo=$(realpath "$1")
http=$2 grpc=$3 metrics=$4
log=${5:-target/triton/tritonserver.log}
shift $(($# < 5 ? $# : 5))
conformance/triton/provision.sh >/dev/null
source target/triton/env.sh
source conformance/peers/lib.sh
mkdir -p "$(dirname "$log")"
# Triton 2.51 on CPU now and then dies while its Python stubs start (a
# segmentation fault or a bus error, in CI and here, under load; the same
# start passes before and after): a start that dies before it is ready is
# tried up to twice more, saying so.
prefix=${TRITON_SHM_PREFIX:-serving_triton_$$_}
for attempt in 1 2 3; do
  "$TRITONSERVER" --model-repository "$repo" \
    --http-address 127.0.0.1 --http-port "$http" \
    --grpc-address 127.0.0.1 --grpc-port "$grpc" \
    --metrics-address 127.0.0.1 --metrics-port "$metrics" \
    --backend-config=python,shm-region-prefix-name="$prefix" \
    "$@" >"$log" 2>&1 </dev/null &
  pid=$!
  trap 'kill $pid 2>/dev/null' EXIT
  if (wait_ready Triton "$pid" "$http" "$log" >&2); then
    trap - EXIT
    echo "$pid"
    exit 0
  fi
  kill "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
  # A Triton that died leaves its Python stubs running (they are no longer
  # its children) and their regions in /dev/shm: both carry the prefix.
  pkill -KILL -f -- "$prefix" 2>/dev/null || true
  rm -f /dev/shm/"$prefix"* 2>/dev/null || true
  [ "$attempt" != 3 ] && echo "Triton did not start (above); starting it again (attempt $((attempt + 1)) of 3)" >&2
done
exit 1
