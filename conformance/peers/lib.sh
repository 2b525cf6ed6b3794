# The steps the peer runs share (conformance/mlserver/run.sh,
# conformance/kserve/run.sh): a virtual environment with the peer, free
# loopback ports, waiting until the peer is ready, and the suite run whose
# failures must be exactly the documented ones. Sourced from the project
# root, not run.

# peer_venv VENV REQUIREMENTS MODULE...: VENV with REQUIREMENTS installed,
# unless every MODULE already imports there.
peer_venv() {
  local venv=$1 requirements=$2
  shift 2
  local modules
  modules=$(IFS=,; echo "$*")
  if ! "$venv/bin/python" -c "import $modules" >/dev/null 2>&1; then
    echo "installing $requirements into $venv"
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet --disable-pip-version-check -r "$requirements"
  fi
}

# free_ports N: N free loopback ports, on one line.
free_ports() {
  python3 - "$1" <<'PY'
import socket, sys
socks = [socket.socket() for _ in range(int(sys.argv[1]))]
for s in socks:
    s.bind(("127.0.0.1", 0))
print(*(s.getsockname()[1] for s in socks))
PY
}

# wait_ready NAME PID HTTP_PORT LOG: waits up to 3 minutes for
# /v2/health/ready; stops the script with the log's end when the server
# exits first.
wait_ready() {
  local name=$1 pid=$2 http=$3 log=$4
  for _ in $(seq 180); do
    if python3 -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:$http/v2/health/ready', timeout=2)" >/dev/null 2>&1; then
      return 0
    fi
    if ! kill -0 "$pid" 2>/dev/null; then
      echo "$name exited:"
      tail -40 "$log"
      exit 1
    fi
    sleep 1
  done
  echo "$name was not ready after 3 minutes:"
  tail -40 "$log"
  exit 1
}

# run_suite NAME REPORT EXPECTED TARGET [ARG...]: the suite against TARGET
# (a SERVING_TARGET list) with ARGs, its report written to REPORT.{txt,json,xml}
# (an old one deleted first) and printed; then its failures compared with
# EXPECTED. Stops the script when the suite did not finish.
run_suite() {
  local name=$1 report=$2 expected=$3 target=$4
  shift 4
  rm -f "$report".txt "$report".json "$report".xml
  local status=0
  SERVING_TARGET="$target" cargo run -q -p conformance -- run "$@" \
    --json "$report.json" --junit "$report.xml" >"$report.txt" 2>/dev/null || status=$?
  cat "$report.txt"
  # 1 is "some checks failed", compared below; anything else means no report.
  if [ "$status" -gt 1 ]; then
    echo "the conformance run did not finish (exit $status)"
    exit "$status"
  fi
  python3 conformance/expected_failures.py "$name" "$report.json" "$expected"
}

# The compatibility tests' Python (tritonclient, numpy, onnx, aiohttp):
# target/compat-venv, made first when it is missing. Prints its path.
compat_python() {
  local venv=target/compat-venv
  if [ ! -x "$venv/bin/python" ] || ! "$venv/bin/python" -c "import tritonclient.grpc.aio, tritonclient.http.aio, onnx" 2>/dev/null; then
    python3 -m venv "$venv" >&2
    "$venv/bin/pip" install --quiet --disable-pip-version-check \
      -r reference-server/tests/compat/requirements.txt aiohttp >&2
  fi
  echo "$PWD/$venv/bin/python"
}

# Writes a Python-backend model REPO/NAME (one CPU instance, no batching):
# INPUTS and OUTPUTS as config.pbtxt lists them, BODY the lines of
# execute's loop over requests (indented 12 spaces), which append to
# `responses`.
python_backend_model() {
  local repo=$1 name=$2 inputs=$3 outputs=$4 body=$5
  mkdir -p "$repo/$name/1"
  cat >"$repo/$name/config.pbtxt" <<CFG
name: "$name"
backend: "python"
max_batch_size: 0
input [ $inputs ]
output [ $outputs ]
instance_group [ { count: 1 kind: KIND_CPU } ]
CFG
  cat >"$repo/$name/1/model.py" <<PY
import triton_python_backend_utils as pb_utils

class TritonPythonModel:
    def execute(self, requests):
        responses = []
        for request in requests:
$body
        return responses
PY
}
