#!/usr/bin/env bash
# Runs the conformance suite against KServe's Python ModelServer 0.21,
# installed from PyPI into target/kserve-venv and started on loopback with
# the conformance models served by conformance/kserve/onnx_model.py (OIP over
# gRPC and REST), and checks that its failures are exactly the deviations
# documented in docs/conformance.md ("KServe").
#
#   conformance/kserve/run.sh
#
# The report is written to target/kserve-report.{txt,json,xml}.
set -euo pipefail
cd "$(dirname "$0")/../.."
source conformance/peers/lib.sh
venv=target/kserve-venv
peer_venv "$venv" conformance/kserve/requirements.txt kserve onnxruntime
repo=$(mktemp -d)
log=target/kserve.log
cargo run -q -p conformance -- models --layout mlserver --out "$repo"
read -r http grpc < <(free_ports 2)
"$venv/bin/python" conformance/kserve/onnx_model.py "$repo" "$http" "$grpc" >"$log" 2>&1 &
pid=$!
trap 'kill $pid 2>/dev/null; wait $pid 2>/dev/null; rm -rf "$repo"' EXIT
wait_ready KServe "$pid" "$http" "$log"
echo "KServe is up: gRPC $grpc, REST $http"
# KServe's gRPC server takes messages of up to 8 MiB by default
# (MAX_GRPC_MESSAGE_LENGTH); its REST server has no body limit.
run_suite KServe target/kserve-report conformance/kserve/expected-failures.txt \
  "oip+grpc://127.0.0.1:$grpc,oip+http://127.0.0.1:$http" --limit grpc=8 --limit http=none
