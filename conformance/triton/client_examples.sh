#!/usr/bin/env bash
# Runs NVIDIA's Python client examples unchanged against the reference
# server: the scripts of triton-inference-server/client's
# src/python/examples (give the folder; they are NVIDIA's, not in this
# repository), on the model repository they expect
# (conformance/triton/client_examples_repo.py), with the server started as
# a Triton user would: --id triton --allow-shared-memory, and in explicit
# model control mode for the two model control examples (whose
# repositories hold 7 and 8 models, as each example counts).
#
#   conformance/triton/client_examples.sh EXAMPLES_DIR [SERVER]
#
# SERVER is the reference-server binary (default target/debug/reference-server).
# Each example passes when it exits 0, prints no error, and prints its
# PASS line where it has one (several exit 0 on a failed check). Exits 1
# when any fails.
set -euo pipefail
cd "$(dirname "$0")/../.."
examples=$(realpath "${1:?usage: $0 EXAMPLES_DIR [SERVER]}")
server=$(realpath "${2:-target/debug/reference-server}")
source conformance/peers/lib.sh
# tritonclient, numpy and onnx: the compatibility tests' environment.
py=$(compat_python)
work=$(mktemp -d)
pids=()
trap 'kill "${pids[@]}" 2>/dev/null; rm -rf "$work"' EXIT
all=simple,simple_int8,simple_string,simple_identity,simple_sequence,repeat_int32
"$py" conformance/triton/client_examples_repo.py "$work/repo" "$all" >/dev/null
"$py" conformance/triton/client_examples_repo.py "$work/repo7" "$all" custom_identity_int32 >/dev/null
"$py" conformance/triton/client_examples_repo.py "$work/repo8" "$all" custom_identity_int32 identity_int32_b >/dev/null
# Starts a server on REPO (in this shell, so that the trap stops it);
# its ports are left in $http and $grpc.
start() { # repo log args...
  local repo=$1 log=$2 metrics
  shift 2
  read -r http grpc metrics < <(free_ports 3)
  "$server" --model-repository "$repo" --http-port "$http" --grpc-port "$grpc" \
    --metrics-port "$metrics" --id triton --python "$py" "$@" >"$log" 2>&1 </dev/null &
  pids+=($!)
  (wait_ready reference-server $! "$http" "$log" >&2)
}
start "$work/repo" "$work/server.log" --allow-shared-memory
h=$http g=$grpc
start "$work/repo7" "$work/server7.log" --model-control-mode=explicit
h7=$http
start "$work/repo8" "$work/server8.log" --model-control-mode=explicit
g8=$grpc
passed=0 failed=0
run() { # script args...
  local f=$1; shift
  local out rc=0
  out=$(cd "$examples" && timeout 120 "$py" "$f" "$@" 2>&1) || rc=$?
  if [ $rc = 0 ] && ! grep -q -E "^error|FAILED|Traceback|improper" <<<"$out" \
    && { ! grep -q 'print("PASS' "$examples/$f" || grep -q "^PASS" <<<"$out"; }; then
    echo "pass  $f $*"
    passed=$((passed + 1))
  else
    echo "FAIL  $f $* (exit $rc):"
    tail -5 <<<"$out" | sed 's/^/      /'
    failed=$((failed + 1))
  fi
}
for f in simple_http_infer_client.py simple_http_async_infer_client.py \
  simple_http_aio_infer_client.py simple_http_health_metadata.py \
  simple_http_string_infer_client.py simple_http_shm_client.py \
  simple_http_shm_string_client.py simple_http_sequence_sync_infer_client.py; do
  run "$f" -u "localhost:$h"
done
for f in simple_grpc_infer_client.py simple_grpc_async_infer_client.py \
  simple_grpc_aio_infer_client.py simple_grpc_custom_args_client.py \
  simple_grpc_keepalive_client.py grpc_explicit_int_content_client.py \
  grpc_explicit_int8_content_client.py grpc_explicit_byte_content_client.py \
  simple_grpc_health_metadata.py simple_grpc_string_infer_client.py \
  simple_grpc_shm_client.py simple_grpc_shm_string_client.py \
  simple_grpc_sequence_sync_infer_client.py \
  simple_grpc_sequence_stream_infer_client.py simple_grpc_custom_repeat.py; do
  run "$f" -u "localhost:$g"
done
run reuse_infer_objects_client.py -u "localhost:$h"
run reuse_infer_objects_client.py -i grpc -u "localhost:$g"
run simple_http_model_control.py -u "localhost:$h7"
run simple_grpc_model_control.py -u "localhost:$g8"
echo "NVIDIA's client examples: $passed passed, $failed failed"
[ "$failed" = 0 ]
