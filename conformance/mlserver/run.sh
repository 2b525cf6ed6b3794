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
source conformance/peers/lib.sh
venv=target/mlserver-venv
peer_venv "$venv" conformance/mlserver/requirements.txt mlserver onnxruntime
repo=$(mktemp -d)
log=target/mlserver.log
cargo run -q -p conformance -- models --layout mlserver --out "$repo"
read -r http grpc metrics < <(free_ports 3)
# 4 MiB gRPC limit, the boundary the suite checks (SERVING_TARGET_MAX_MSG_MB).
(cd "$repo" && MLSERVER_HOST=127.0.0.1 MLSERVER_HTTP_PORT=$http MLSERVER_GRPC_PORT=$grpc \
  MLSERVER_METRICS_PORT=$metrics MLSERVER_GRPC_MAX_MESSAGE_LENGTH=4194304 \
  MLSERVER_PARALLEL_WORKERS=0 exec "$OLDPWD/$venv/bin/mlserver" start "$repo") >"$log" 2>&1 &
pid=$!
trap 'kill $pid 2>/dev/null; wait $pid 2>/dev/null; rm -rf "$repo"' EXIT
wait_ready MLServer "$pid" "$http" "$log"
echo "MLServer is up: gRPC $grpc, REST $http"
SERVING_TARGET_MAX_MSG_MB=4 run_suite MLServer target/mlserver-report conformance/mlserver/expected-failures.txt \
  "oip+grpc://127.0.0.1:$grpc,oip+http://127.0.0.1:$http"

# The client's control extensions against MLServer (client/examples/control.rs):
# MLServer offers the repository extension (index, load, unload) on both
# transports and accepts gzip on both; it has no model configuration or
# statistics (REST 404, gRPC UNIMPLEMENTED). docs/client.md lists the
# differences.
echo "serving-client control calls against MLServer"
cargo run -q -p serving-client --example control -- "http://127.0.0.1:$http" add --require repository,compression
cargo run -q -p serving-client --example control -- "grpc://127.0.0.1:$grpc" add --require repository,compression
