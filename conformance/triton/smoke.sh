#!/usr/bin/env bash
# Checks the Triton set-up end to end: provisions target/triton, serves a
# Python-backend model "add" (OUTPUT0 = INPUT0 + INPUT1, FP32 [-1]) from a
# temporary repository, infers once over REST (curl, JSON) and once over gRPC
# (tritonclient), runs perf_analyzer over gRPC and HTTP, and stops the server.
#
#   conformance/triton/smoke.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
conformance/triton/provision.sh >/dev/null
source target/triton/env.sh
source conformance/peers/lib.sh
repo=$(mktemp -d)
mkdir -p "$repo/add/1"
cat >"$repo/add/config.pbtxt" <<'EOF'
name: "add"
backend: "python"
max_batch_size: 0
input [
  { name: "INPUT0" data_type: TYPE_FP32 dims: [ -1 ] },
  { name: "INPUT1" data_type: TYPE_FP32 dims: [ -1 ] }
]
output [
  { name: "OUTPUT0" data_type: TYPE_FP32 dims: [ -1 ] }
]
instance_group [ { kind: KIND_CPU count: 1 } ]
EOF
cat >"$repo/add/1/model.py" <<'EOF'
import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def execute(self, requests):
        responses = []
        for request in requests:
            a = pb_utils.get_input_tensor_by_name(request, "INPUT0").as_numpy()
            b = pb_utils.get_input_tensor_by_name(request, "INPUT1").as_numpy()
            out = pb_utils.Tensor("OUTPUT0", (a + b).astype(np.float32))
            responses.append(pb_utils.InferenceResponse(output_tensors=[out]))
        return responses
EOF
read -r http grpc metrics < <(free_ports 3)
log=target/triton/smoke.log
pid=$(conformance/triton/start.sh "$repo" "$http" "$grpc" "$metrics" "$log")
trap 'kill $pid 2>/dev/null; while kill -0 $pid 2>/dev/null; do sleep 0.2; done; rm -rf "$repo"' EXIT
echo "Triton is up (pid $pid): REST $http, gRPC $grpc, metrics $metrics"
curl -sf "http://127.0.0.1:$http/v2"
echo
curl -sf -X POST "http://127.0.0.1:$http/v2/models/add/infer" -H 'Content-Type: application/json' \
  -d '{"inputs":[{"name":"INPUT0","shape":[4],"datatype":"FP32","data":[1,2,3,4]},
                 {"name":"INPUT1","shape":[4],"datatype":"FP32","data":[10,20,30,40]}]}'
echo
"$TRITON_PYTHON_BIN/python" - "$grpc" <<'EOF'
import sys
import numpy as np
import tritonclient.grpc as grpcclient

client = grpcclient.InferenceServerClient(f"127.0.0.1:{sys.argv[1]}")
inputs = [grpcclient.InferInput(name, [3], "FP32") for name in ("INPUT0", "INPUT1")]
inputs[0].set_data_from_numpy(np.array([1, 2, 3], np.float32))
inputs[1].set_data_from_numpy(np.array([0.5, 0.5, 0.5], np.float32))
out = client.infer("add", inputs).as_numpy("OUTPUT0")
assert out.tolist() == [1.5, 2.5, 3.5], out
print("gRPC infer:", out)
EOF
for protocol in grpc http; do
  port=$grpc
  [ "$protocol" = http ] && port=$http
  "$PERF_ANALYZER" -m add -u "127.0.0.1:$port" -i "$protocol" --shape INPUT0:4 --shape INPUT1:4 \
    --measurement-interval 1000 | tail -1
done
