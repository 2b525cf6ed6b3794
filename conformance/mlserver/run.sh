#!/usr/bin/env bash
# Runs the conformance suite against Seldon MLServer, installed from PyPI
# into target/mlserver-venv and started on loopback with the conformance
# models (OIP over gRPC and REST), and checks that its failures are exactly
# the deviations documented in docs/conformance.md.
#
#   conformance/mlserver/run.sh
#
# The report is written to target/mlserver-report.{txt,json,xml}.
set -euo pipefail
cd "$(dirname "$0")/../.."
venv=target/mlserver-venv
if ! "$venv/bin/python" -c 'import mlserver, onnxruntime' >/dev/null 2>&1; then
  echo "installing MLServer into $venv"
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check -r conformance/mlserver/requirements.txt
fi
repo=$(mktemp -d)
log=target/mlserver.log
cargo run -q -p conformance -- models --layout mlserver --out "$repo"
read -r http grpc metrics < <(python3 -c '
import socket
ports = []
socks = []
for _ in range(3):
    s = socket.socket(); s.bind(("127.0.0.1", 0)); socks.append(s); ports.append(s.getsockname()[1])
print(*ports)')
# 4 MiB gRPC limit, the boundary the suite checks (SERVING_TARGET_MAX_MSG_MB).
(cd "$repo" && MLSERVER_HOST=127.0.0.1 MLSERVER_HTTP_PORT=$http MLSERVER_GRPC_PORT=$grpc \
  MLSERVER_METRICS_PORT=$metrics MLSERVER_GRPC_MAX_MESSAGE_LENGTH=4194304 \
  MLSERVER_PARALLEL_WORKERS=0 exec "$OLDPWD/$venv/bin/mlserver" start "$repo") >"$log" 2>&1 &
pid=$!
trap 'kill $pid 2>/dev/null; wait $pid 2>/dev/null; rm -rf "$repo"' EXIT
for _ in $(seq 180); do
  if python3 -c "import urllib.request,sys; urllib.request.urlopen('http://127.0.0.1:$http/v2/health/ready', timeout=2)" >/dev/null 2>&1; then break; fi
  if ! kill -0 $pid 2>/dev/null; then echo "MLServer exited:"; tail -40 "$log"; exit 1; fi
  sleep 1
done
echo "MLServer is up: gRPC $grpc, REST $http"
rm -f target/mlserver-report.*
status=0
SERVING_TARGET="oip+grpc://127.0.0.1:$grpc,oip+http://127.0.0.1:$http" SERVING_TARGET_MAX_MSG_MB=4 \
  cargo run -q -p conformance -- run --json target/mlserver-report.json --junit target/mlserver-report.xml \
  >target/mlserver-report.txt 2>/dev/null || status=$?
cat target/mlserver-report.txt
# 1 is "some checks failed", compared below; anything else means no report.
if [ "$status" -gt 1 ]; then echo "the conformance run did not finish (exit $status)"; exit "$status"; fi
python3 conformance/expected_failures.py MLServer target/mlserver-report.json conformance/mlserver/expected-failures.txt

# The client's control extensions against MLServer (client/examples/control.rs):
# MLServer offers the repository extension (index, load, unload) on both
# transports and accepts gzip on both; it has no model configuration or
# statistics (REST 404, gRPC UNIMPLEMENTED). docs/client.md lists the
# differences.
echo "serving-client control calls against MLServer"
cargo run -q -p serving-client --example control -- "http://127.0.0.1:$http" add --require repository,compression
cargo run -q -p serving-client --example control -- "grpc://127.0.0.1:$grpc" add --require repository,compression
