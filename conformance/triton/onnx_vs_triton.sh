#!/usr/bin/env bash
# Ours against NVIDIA Triton 2.51 measured by NVIDIA's own load generator
# (perf_analyzer 2.41.1), in alternating rounds: `add` (two FP32 [4]
# inputs) and `identity` (FP32 [262144], 1 MiB) at concurrency 1, 16 and
# 64 on gRPC and REST. Ours serves the models as ONNX (ONNX Runtime on
# CPU); Triton serves the same computation as Python-backend numpy models,
# since its ONNX Runtime backend is in no package registry (the PyPI Triton
# carries the Python backend only). Prints each server's median
# throughput over the rounds and ours / Triton; every run's output stays in
# target/onnx-vs-triton/.
#
#   conformance/triton/onnx_vs_triton.sh [SECONDS per window, default 2 [ROUNDS, default 2]]
#
# A benchmark, not a test: run it on an otherwise idle machine; the figures
# in docs/benchmarks.md come from it.
set -euo pipefail
cd "$(dirname "$0")/../.."
seconds=${1:-2}
rounds=${2:-2}
source conformance/peers/lib.sh
conformance/triton/provision.sh >/dev/null
source target/triton/env.sh
cargo build -q --release -p reference-server
out=target/onnx-vs-triton
rm -rf "$out" && mkdir -p "$out"
# Triton's repository: numpy in the Python backend.
python_backend_model "$out/triton" add '{ name: "a" data_type: TYPE_FP32 dims: [ 4 ] }, { name: "b" data_type: TYPE_FP32 dims: [ 4 ] }' \
  '{ name: "sum" data_type: TYPE_FP32 dims: [ 4 ] }' \
  '            a = pb_utils.get_input_tensor_by_name(request, "a").as_numpy()
            b = pb_utils.get_input_tensor_by_name(request, "b").as_numpy()
            responses.append(pb_utils.InferenceResponse([pb_utils.Tensor("sum", a + b)]))'
python_backend_model "$out/triton" identity '{ name: "x" data_type: TYPE_FP32 dims: [ 262144 ] }' \
  '{ name: "y" data_type: TYPE_FP32 dims: [ 262144 ] }' \
  '            x = pb_utils.get_input_tensor_by_name(request, "x").as_numpy()
            responses.append(pb_utils.InferenceResponse([pb_utils.Tensor("y", x)]))'
# Ours: the same signatures as ONNX graphs (Add, Identity).
"$(compat_python)" - "$out/ours" <<'PY'
import os, sys
import onnx
from onnx import helper, TensorProto as T
out = sys.argv[1]
def save(name, nodes, inputs, outputs, n):
    vi = lambda v: helper.make_tensor_value_info(v, T.FLOAT, [n])
    g = helper.make_graph(nodes, name, [vi(i) for i in inputs], [vi(o) for o in outputs])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    os.makedirs(f"{out}/{name}/1", exist_ok=True)
    onnx.save(m, f"{out}/{name}/1/model.onnx")
save("add", [helper.make_node("Add", ["a", "b"], ["sum"])], ["a", "b"], ["sum"], 4)
save("identity", [helper.make_node("Identity", ["x"], ["y"])], ["x"], ["y"], 262144)
PY
read -r th tg tm oh og < <(free_ports 5)
tpid=$(conformance/triton/start.sh "$out/triton" "$th" "$tg" "$tm" "$out/triton.log")
target/release/reference-server --model-repository "$out/ours" \
  --rest-address "127.0.0.1:$oh" --grpc-address "127.0.0.1:$og" >"$out/ours.log" 2>&1 </dev/null &
opid=$!
trap 'kill $tpid $opid 2>/dev/null; wait $opid 2>/dev/null || true' EXIT
wait_ready reference-server "$opid" "$oh" "$out/ours.log" >&2
median() { sort -g | awk '{v[NR]=$1} END {if (NR) print v[int((NR+1)/2)]; else print ""}'; }
printf '%-9s %-5s %-5s %14s %14s %8s\n' model proto conc "Triton infer/s" "ours infer/s" "ours/T"
for case in "add a,b 4" "identity x 262144"; do
  read -r name inputs n <<<"$case"
  shape=()
  IFS=, read -ra names <<<"$inputs"
  for i in "${names[@]}"; do shape+=(--shape "$i:$n"); done
  for proto in grpc http; do
    for conc in 1 16 64; do
      : >"$out/t.txt"
      : >"$out/o.txt"
      for round in $(seq "$rounds"); do
        for server in triton ours; do
          if [ "$server" = triton ]; then port=$tg; [ "$proto" = http ] && port=$th; else port=$og; [ "$proto" = http ] && port=$oh; fi
          log="$out/$server-$name-$proto-c$conc-r$round.log"
          timeout 300 "$PERF_ANALYZER" -m "$name" -u "127.0.0.1:$port" -i "$proto" "${shape[@]}" \
            --concurrency-range "$conc:$conc" --measurement-interval $((seconds * 1000)) \
            --max-trials 6 >"$log" 2>&1 || true
          # A run without a stable measurement prints none: left out.
          tput=$(grep -m1 -oE "throughput: [0-9.]+" "$log" | awk '{print $2}' || true)
          [ -n "$tput" ] && echo "$tput" >>"$out/${server:0:1}.txt"
        done
      done
      t=$(median <"$out/t.txt")
      o=$(median <"$out/o.txt")
      ratio=-
      [ -n "$t" ] && [ -n "$o" ] && ratio=$(awk -v o="$o" -v t="$t" 'BEGIN {printf "%.2fx", o / t}')
      printf '%-9s %-5s %-5s %14s %14s %8s\n' "$name" "$proto" "$conc" "${t:-unstable}" "${o:-unstable}" "$ratio"
    done
  done
done
