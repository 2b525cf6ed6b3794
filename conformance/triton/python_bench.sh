#!/usr/bin/env bash
# Python models, ours against Triton 2.51's Python backend, side by side in
# one run with one load generator (NVIDIA's perf_analyzer 2.41.1): the same
# model.py files and configurations served by both, an identity model on
# 4 KiB and 4 MiB FP32 inputs, an add model on 4 KiB inputs and an ensemble
# of the two (identity, add, identity) on 4 KiB inputs, at
# concurrency 1 and 16, over gRPC. Prints a table (throughput, p50 and p99
# latency) and keeps every run's output in target/python-bench/.
#
#   [BENCH_CASES="pipeline add"] conformance/triton/python_bench.sh [SECONDS per measurement, default 5]
#
# A benchmark, not a test: run it on an otherwise idle machine; the figures
# in docs/benchmarks.md come from it.
set -euo pipefail
cd "$(dirname "$0")/../.."
seconds=${1:-5}
source conformance/peers/lib.sh
conformance/triton/provision.sh >/dev/null
source target/triton/env.sh
cargo build -q --release -p reference-server
out=target/python-bench
rm -rf "$out" && mkdir -p "$out"
repo="$out/models"
python_backend_model "$repo" identity '{ name: "x" data_type: TYPE_FP32 dims: [ -1 ] }' \
  '{ name: "y" data_type: TYPE_FP32 dims: [ -1 ] }' \
  '            x = pb_utils.get_input_tensor_by_name(request, "x").as_numpy()
            responses.append(pb_utils.InferenceResponse([pb_utils.Tensor("y", x)]))'
python_backend_model "$repo" add '{ name: "a" data_type: TYPE_FP32 dims: [ -1 ] }, { name: "b" data_type: TYPE_FP32 dims: [ -1 ] }' \
  '{ name: "sum" data_type: TYPE_FP32 dims: [ -1 ] }' \
  '            a = pb_utils.get_input_tensor_by_name(request, "a").as_numpy()
            b = pb_utils.get_input_tensor_by_name(request, "b").as_numpy()
            responses.append(pb_utils.InferenceResponse([pb_utils.Tensor("sum", a + b)]))'
# An ensemble of the two: identity, add (x + x), identity.
mkdir -p "$repo/pipeline/1"
cat >"$repo/pipeline/config.pbtxt" <<EOF
name: "pipeline"
platform: "ensemble"
max_batch_size: 0
input [ { name: "x" data_type: TYPE_FP32 dims: [ -1 ] } ]
output [ { name: "out" data_type: TYPE_FP32 dims: [ -1 ] } ]
ensemble_scheduling {
  step [
    { model_name: "identity" model_version: -1 input_map { key: "x" value: "x" } output_map { key: "y" value: "t1" } },
    { model_name: "add" model_version: -1 input_map { key: "a" value: "t1" } input_map { key: "b" value: "t1" }
      output_map { key: "sum" value: "t2" } },
    { model_name: "identity" model_version: -1 input_map { key: "x" value: "t2" } output_map { key: "y" value: "out" } }
  ]
}
EOF
py=$TRITON_PYTHON_BIN/python
read -r th tg tm oh og < <(free_ports 5)
tpid=$(conformance/triton/start.sh "$repo" "$th" "$tg" "$tm" "$out/triton.log")
target/release/reference-server --model-repository "$repo" --python "$py" \
  --rest-address "127.0.0.1:$oh" --grpc-address "127.0.0.1:$og" >"$out/ours.log" 2>&1 </dev/null &
opid=$!
trap 'kill $tpid $opid 2>/dev/null; wait $opid 2>/dev/null || true' EXIT
wait_ready reference-server "$opid" "$oh" "$out/ours.log" >&2
printf '%-10s %-9s %-5s %-7s %12s %10s %10s\n' server model size conc "infer/s" "p50 us" "p99 us"
cases=("identity x 1024 4KiB" "identity x 1048576 4MiB" "add a,b 1024 4KiB" "pipeline x 1024 4KiB")
# BENCH_CASES picks some of them by model name (e.g. "pipeline").
[ -n "${BENCH_CASES:-}" ] && mapfile -t cases < <(printf '%s\n' "${cases[@]}" | grep -E "^(${BENCH_CASES// /|}) ")
for case in "${cases[@]}"; do
  read -r name inputs n size <<<"$case"
  shape=()
  IFS=, read -ra names <<<"$inputs"
  for i in "${names[@]}"; do shape+=(--shape "$i:$n"); done
  for conc in 1 16; do
    for server in triton ours; do
      port=$tg
      [ "$server" = ours ] && port=$og
      log="$out/$server-$name-$size-c$conc.log"
      timeout 300 "$PERF_ANALYZER" -m "$name" -u "127.0.0.1:$port" -i grpc "${shape[@]}" \
        --concurrency-range "$conc:$conc" --measurement-interval $((seconds * 1000)) \
        --percentile 50 >"$log" 2>&1 || true
      # A run without a stable measurement prints none: FAILED, and on.
      tput=$(grep -m1 -oE "throughput: [0-9.]+" "$log" | awk '{print $2}' || true)
      p50=$(grep -m1 -oE "p50 latency: [0-9]+" "$log" | awk '{print $3}' || true)
      p99=$(grep -m1 -oE "p99 latency: [0-9]+" "$log" | awk '{print $3}' || true)
      printf '%-10s %-9s %-5s %-7s %12s %10s %10s\n' "$server" "$name" "$size" "$conc" \
        "${tput:-FAILED}" "${p50:--}" "${p99:--}"
    done
  done
done
