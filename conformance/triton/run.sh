#!/usr/bin/env bash
# Runs the conformance suite against NVIDIA Triton Inference Server 2.51
# (the tritonserver binary of the PyPI package nvidia-pytriton, provisioned
# into target/triton by conformance/triton/provision.sh), serving the
# conformance models as Python-backend models (`conformance models --layout
# triton-python`: the PyPI Triton carries no ONNX Runtime backend), and
# checks that its failures are exactly the deviations documented in
# docs/conformance.md ("Triton").
#
#   conformance/triton/run.sh
#
# Triton runs as KServe runs it: --model-control-mode=explicit with every
# model loaded at start (--load-model=*), so that the repository extension's
# load and unload are allowed (in its default mode Triton refuses them:
# "explicit model load / unload is not allowed if polling is enabled").
# The report is written to target/triton-report.{txt,json,xml}.
set -euo pipefail
cd "$(dirname "$0")/../.."
source conformance/peers/lib.sh
conformance/triton/provision.sh >/dev/null
repo=$(mktemp -d)
log=target/triton.log
cargo run -q -p conformance -- models --layout triton-python --out "$repo"
read -r http grpc metrics < <(free_ports 3)
pid=$(conformance/triton/start.sh "$repo" "$http" "$grpc" "$metrics" "$log" \
  --model-control-mode=explicit --load-model='*' --disable-auto-complete-config \
  --exit-timeout-secs=10 --cache-config local,size=1048576)
# SIGTERM (not SIGKILL): the Python backend's /dev/shm region goes with a
# clean exit only.
trap 'kill $pid 2>/dev/null; while kill -0 $pid 2>/dev/null; do sleep 0.2; done; rm -rf "$repo"' EXIT
echo "Triton is up: gRPC $grpc, REST $http"
# Triton's gRPC limit is 2 GiB - 1, with no flag to lower it, and its REST
# server has no body limit: neither is declared, so limits.boundary does
# not apply (the suite sends no 2 GiB message).
run_suite Triton target/triton-report conformance/triton/expected-failures.txt \
  "oip+grpc://127.0.0.1:$grpc,oip+http://127.0.0.1:$http"
# serving-client's control calls against Triton (client/examples/control.rs):
# configuration, statistics, repository load/unload, gzip, and the CUDA
# shared-memory calls tools make at exit (Triton without a GPU lists none).
echo "serving-client control calls against Triton"
for url in "http://127.0.0.1:$http" "grpc://127.0.0.1:$grpc"; do
  cargo run -q -p serving-client --example control -- "$url" add \
    --require config,statistics,repository,compression,cuda_shared_memory
done
