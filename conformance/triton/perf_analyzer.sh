#!/usr/bin/env bash
# Runs NVIDIA's perf_analyzer (2.41.1, from the tritonclient wheel;
# provisioned by conformance/triton/provision.sh) against this project's
# reference server in every mode Triton supports on CPU, and fails on any
# error or warning but the four GPU metrics that a CPU-only Triton lacks as
# well (with --collect-metrics, perf_analyzer warns "Unable to parse
# 'nv_gpu_utilization' metric" against Triton 2.51 on CPU too).
#
#   conformance/triton/perf_analyzer.sh
#
# The server serves the conformance models (`conformance models --layout
# triton`, ONNX) with shared memory allowed; each mode measures `add` for
# one short interval. The output of every run is kept in
# target/perf-analyzer/<mode>.log.
set -euo pipefail
cd "$(dirname "$0")/../.."
source conformance/peers/lib.sh
conformance/triton/provision.sh >/dev/null
source target/triton/env.sh
cargo build -q -p reference-server -p conformance
repo=$(mktemp -d)
out=target/perf-analyzer
mkdir -p "$out"
target/debug/conformance models --layout triton --out "$repo" >/dev/null
read -r http grpc metrics < <(free_ports 3)
# --metrics-port: Triton's own metrics listener, which perf_analyzer's
# --collect-metrics scrapes by default.
target/debug/reference-server --model-repository "$repo" --allow-shared-memory \
  --grpc-address "127.0.0.1:$grpc" --rest-address "127.0.0.1:$http" --metrics-port "$metrics" \
  >"$out/server.log" 2>&1 &
pid=$!
trap 'kill $pid 2>/dev/null; wait $pid 2>/dev/null; rm -rf "$repo"' EXIT
wait_ready reference-server "$pid" "$http" "$out/server.log"
# The modes: <name> <protocol> <perf_analyzer arguments...>
modes=(
  "grpc grpc"
  "http http"
  "grpc-shm grpc --shared-memory system --output-shared-memory-size 64"
  "http-shm http --shared-memory system --output-shared-memory-size 64"
  "grpc-streaming grpc --streaming"
  "grpc-streaming-async grpc --streaming --async"
  "grpc-async grpc --async"
  "http-async http --async"
  "grpc-request-rate grpc --request-rate-range 100:200:100"
  "http-metrics http --collect-metrics --metrics-url 127.0.0.1:$http/metrics"
  "grpc-metrics-port grpc --collect-metrics --metrics-url 127.0.0.1:$metrics/metrics"
)
failed=0
for mode in "${modes[@]}"; do
  read -r name protocol args <<<"$mode"
  port=$grpc
  [ "$protocol" = http ] && port=$http
  status=0
  # shellcheck disable=SC2086
  # A check of what works, not a benchmark (conformance perf and
  # docs/benchmarks.md measure): any three measurements count as stable, so
  # that a busy machine cannot fail it with "Failed to obtain stable
  # measurement".
  timeout 120 "$PERF_ANALYZER" -m add -u "127.0.0.1:$port" -i "$protocol" $args \
    --measurement-interval 1000 --stability-percentage 1000 >"$out/$name.log" 2>&1 || status=$?
  problems=$(grep -iE "error|warn|fail|unable" "$out/$name.log" |
    grep -vE "^WARNING: Unable to parse 'nv_gpu_(utilization|power_usage|memory_used_bytes|memory_total_bytes)' metric\.$" || true)
  throughput=$(grep -m1 -E "throughput:" "$out/$name.log" || true)
  if [ "$status" -ne 0 ] || [ -n "$problems" ] || [ -z "$throughput" ]; then
    echo "perf_analyzer $name: FAILED (exit $status)"
    echo "${problems:-$(tail -5 "$out/$name.log")}"
    failed=1
  else
    echo "perf_analyzer $name: ok ($throughput)"
  fi
done
exit "$failed"
