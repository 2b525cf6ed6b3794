#!/usr/bin/env bash
# Runs conformance/triton/differential.py end to end: writes the two model
# repositories (Python-backend models for Triton 2.51, the suite's ONNX
# models for the reference server), starts both servers fresh on free
# loopback ports, runs the battery, stops both servers. Fails (exit 1) when
# a difference is not listed in conformance/triton/differences.toml, or an
# entry there no longer matches anything (CI runs it in explicit mode).
#
#   conformance/triton/differential.sh OUT [SERVER [CONFORMANCE [MODE [SECTIONS]]]]
#
# OUT         folder for the repositories, the logs and the results
#             (OUT/diff-MODE.txt, OUT/answers-MODE.json)
# SERVER      reference-server binary (default target/debug/reference-server;
#             copy it elsewhere first if a build may replace it)
# CONFORMANCE conformance binary (default target/debug/conformance)
# MODE        default | explicit: Triton's model control mode
#             (explicit: --model-control-mode=explicit --load-model=*)
# SECTIONS    differential.py --sections (default: all but `crash`)
# BACKEND     onnx (default): we serve the suite's ONNX models; python: we
#             serve the same Python-backend models as Triton (our Python
#             backend against Triton's), results OUT/diff-MODE-python.txt
set -euo pipefail
cd "$(dirname "$0")/../.."
out=$(realpath -m "${1:?usage: $0 OUT [SERVER [CONFORMANCE [MODE [SECTIONS]]]]}")
server=${2:-target/debug/reference-server}
conformance=${3:-target/debug/conformance}
mode=${4:-default}
sections=${5:-}
backend=${6:-onnx}
mkdir -p "$out"
conformance/triton/provision.sh >/dev/null
source target/triton/env.sh
source conformance/peers/lib.sh
py=$TRITON_PYTHON_BIN/python
# Written afresh on every run: repositories left by an older probe lack
# the models newer probes ask for.
"$conformance" models --layout triton --out "$out/suite-models" >/dev/null
"$py" conformance/triton/differential.py repos --suite "$out/suite-models" --out "$out/repos"
read -r th tg tm oh og < <(free_ports 5)
# Both with a response cache, for the models that enable it (add_cached).
cache=(--cache-config local,size=1048576)
targs=("${cache[@]}")
[ "$mode" = explicit ] && targs+=(--model-control-mode=explicit '--load-model=*')
export TRITON_SHM_PREFIX="serving_differential_$$_"
tpid=$(conformance/triton/start.sh "$out/repos/triton" "$th" "$tg" "$tm" "$out/triton-$mode.log" "${targs[@]}")
# Our repository's ONNX models, and the Python models both repositories
# share (seq_acc), run with the interpreter Triton's stubs use.
ours=("$out/repos/ours" --python "$py")
expect=(--expect conformance/triton/differences.toml)
if [ "$backend" = python ]; then
  # The same model.py files, run by our Python backend with the
  # interpreter Triton's stubs use; the setup differences go away.
  ours=("$out/repos/triton" --python "$py")
  expect=(--expect conformance/triton/differences.toml --expect conformance/triton/differences-python.toml
    --unused-ok setup)
  mode=$mode-python
fi
"$server" --model-repository "${ours[@]}" --rest-address "127.0.0.1:$oh" \
  --grpc-address "127.0.0.1:$og" --allow-shared-memory "${cache[@]}" >"$out/ours-$mode.log" 2>&1 </dev/null &
opid=$!
# The Python backend's stubs, by PID: when Triton dies (the `crash` section)
# they outlive it, holding their /dev/shm region; the trap stops them too.
stubs=$(pgrep -P "$tpid" | tr '\n' ' ' || true)
trap 'kill $tpid $opid 2>/dev/null; while kill -0 $tpid 2>/dev/null; do sleep 0.2; done; sleep 1; kill -9 $stubs 2>/dev/null || true; rm -f /dev/shm/"$TRITON_SHM_PREFIX"*' EXIT
wait_ready reference-server "$opid" "$oh" "$out/ours-$mode.log" >&2
echo "Triton ($mode) pid $tpid: HTTP $th gRPC $tg; ours pid $opid: HTTP $oh gRPC $og" >&2
"$py" conformance/triton/differential.py probe \
  --a-http "127.0.0.1:$th" --a-grpc "127.0.0.1:$tg" --a-name triton \
  --b-http "127.0.0.1:$oh" --b-grpc "127.0.0.1:$og" --b-name ours \
  ${sections:+--sections "$sections"} --width 400 "${expect[@]}" \
  --json "$out/answers-$mode.json" | tee "$out/diff-$mode.txt"
