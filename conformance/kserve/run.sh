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
venv=target/kserve-venv
if ! "$venv/bin/python" -c 'import kserve, onnxruntime' >/dev/null 2>&1; then
  echo "installing KServe into $venv"
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check -r conformance/kserve/requirements.txt
fi
repo=$(mktemp -d)
log=target/kserve.log
cargo run -q -p conformance -- models --layout mlserver --out "$repo"
read -r http grpc < <(python3 -c '
import socket
ports = []
socks = []
for _ in range(2):
    s = socket.socket(); s.bind(("127.0.0.1", 0)); socks.append(s); ports.append(s.getsockname()[1])
print(*ports)')
"$venv/bin/python" conformance/kserve/onnx_model.py "$repo" "$http" "$grpc" >"$log" 2>&1 &
pid=$!
trap 'kill $pid 2>/dev/null; wait $pid 2>/dev/null; rm -rf "$repo"' EXIT
for _ in $(seq 180); do
  if python3 -c "import urllib.request,sys; urllib.request.urlopen('http://127.0.0.1:$http/v2/health/ready', timeout=2)" >/dev/null 2>&1; then break; fi
  if ! kill -0 $pid 2>/dev/null; then echo "KServe exited:"; tail -40 "$log"; exit 1; fi
  sleep 1
done
echo "KServe is up: gRPC $grpc, REST $http"
rm -f target/kserve-report.*
status=0
# KServe's gRPC server takes messages of up to 8 MiB by default
# (MAX_GRPC_MESSAGE_LENGTH); its REST server has no body limit.
SERVING_TARGET="oip+grpc://127.0.0.1:$grpc,oip+http://127.0.0.1:$http" \
  cargo run -q -p conformance -- run --limit grpc=8 --limit http=none \
  --json target/kserve-report.json --junit target/kserve-report.xml \
  >target/kserve-report.txt 2>/dev/null || status=$?
cat target/kserve-report.txt
# 1 is "some checks failed", compared below; anything else means no report.
if [ "$status" -gt 1 ]; then echo "the conformance run did not finish (exit $status)"; exit "$status"; fi
python3 conformance/expected_failures.py KServe target/kserve-report.json conformance/kserve/expected-failures.txt
