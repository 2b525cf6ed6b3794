"""Drives a running reference server with clients no one here wrote.

- NVIDIA's tritonclient (HTTP and gRPC) for the Open Inference Protocol;
- grpcio (gRPC C-core) with stubs that grpcio-tools generates from our
  ms_service.proto, calling Predict the way MindSpore's Python client does;
- requests posting MindSpore REST bodies, as MindSpore's own tests do;
- grpcio-health-checking for grpc.health.v1.

Usage: third_party_clients.py GRPC_ADDR REST_ADDR PROTO_DIR
Exits non-zero on the first mismatch.
"""

import importlib
import os
import sys
import tempfile

import numpy as np


def check(cond, what):
    if not cond:
        raise SystemExit(f"FAILED: {what}")
    print(f"ok: {what}")


def triton_http(rest):
    import tritonclient.http as http

    c = http.InferenceServerClient(url=rest)
    check(c.is_server_live(), "tritonclient.http is_server_live")
    check(c.is_server_ready(), "tritonclient.http is_server_ready")
    check(c.is_model_ready("add"), "tritonclient.http is_model_ready")
    meta = c.get_model_metadata("add")
    check([i["name"] for i in meta["inputs"]] == ["x1", "x2"], "tritonclient.http model metadata")
    x1 = np.arange(4, dtype=np.float32).reshape(2, 2)
    x2 = np.full((2, 2), 0.5, dtype=np.float32)
    for binary in (False, True):
        inputs = [http.InferInput("x1", [2, 2], "FP32"), http.InferInput("x2", [2, 2], "FP32")]
        inputs[0].set_data_from_numpy(x1, binary_data=binary)
        inputs[1].set_data_from_numpy(x2, binary_data=binary)
        outputs = [http.InferRequestedOutput("y", binary_data=binary)]
        r = c.infer("add", inputs, outputs=outputs, request_id="42")
        check(np.array_equal(r.as_numpy("y"), x1 + x2), f"tritonclient.http infer binary={binary}")
        check(r.get_response()["id"] == "42", "tritonclient.http echoes the request id")
    try:
        missing = http.InferInput("x", [1], "FP32")
        missing.set_data_from_numpy(np.zeros(1, dtype=np.float32))
        c.infer("nope", [missing])
        check(False, "tritonclient.http unknown model raises")
    except Exception as e:  # InferenceServerException
        check("not found" in str(e), f"tritonclient.http unknown model: {e}")


def triton_grpc(grpc_addr):
    import tritonclient.grpc as grpcclient

    c = grpcclient.InferenceServerClient(url=grpc_addr)
    check(c.is_server_live(), "tritonclient.grpc is_server_live")
    check(c.is_server_ready(), "tritonclient.grpc is_server_ready")
    check(c.is_model_ready("add"), "tritonclient.grpc is_model_ready")
    meta = c.get_model_metadata("add", as_json=True)
    check(meta["platform"] == "onnxruntime_onnx", "tritonclient.grpc model metadata")
    check(c.get_server_metadata(as_json=True)["name"] == "serving-reference-server", "tritonclient.grpc server metadata")
    x1 = np.arange(4, dtype=np.int32).reshape(2, 2)
    x2 = np.ones((2, 2), dtype=np.int32)
    inputs = [grpcclient.InferInput("x1", [2, 2], "INT32"), grpcclient.InferInput("x2", [2, 2], "INT32")]
    inputs[0].set_data_from_numpy(x1)
    inputs[1].set_data_from_numpy(x2)
    r = c.infer("add.add_cast", inputs)
    check(np.array_equal(r.as_numpy("y"), (x1 + x2).astype(np.float32)), "tritonclient.grpc infer add.add_cast")


def mindspore_grpc(grpc_addr, proto_dir):
    import grpc
    from grpc_tools import protoc

    out = tempfile.mkdtemp()
    rc = protoc.main(["protoc", f"-I{proto_dir}", f"--python_out={out}", f"--grpc_python_out={out}", "ms_service.proto"])
    check(rc == 0, "grpcio-tools compiles ms_service.proto")
    sys.path.insert(0, out)
    pb = importlib.import_module("ms_service_pb2")
    stub_mod = importlib.import_module("ms_service_pb2_grpc")
    channel = grpc.insecure_channel(
        grpc_addr,
        options=[("grpc.max_send_message_length", 512 << 20), ("grpc.max_receive_message_length", 512 << 20)],
    )
    stub = stub_mod.MSServiceStub(channel)

    def tensor(arr):
        dtypes = {np.float32: pb.MS_FLOAT32, np.int32: pb.MS_INT32}
        t = pb.Tensor(dtype=dtypes[arr.dtype.type], data=arr.tobytes())
        t.shape.dims.extend(arr.shape)
        return t

    req = pb.PredictRequest()
    req.servable_spec.name = "add"
    req.servable_spec.method_name = "add_common"
    xs = []
    for i in range(3):
        x1 = np.full((2, 2), i, dtype=np.float32)
        x2 = np.arange(4, dtype=np.float32).reshape(2, 2)
        inst = req.instances.add()
        inst.items["x1"].CopyFrom(tensor(x1))
        inst.items["x2"].CopyFrom(tensor(x2))
        xs.append(x1 + x2)
    reply = stub.Predict(req)
    check(len(reply.error_msg) == 0 and len(reply.instances) == 3, "grpcio Predict: 3 instances, no errors")
    for i, inst in enumerate(reply.instances):
        y = inst.items["y"]
        got = np.frombuffer(y.data, dtype=np.float32).reshape(list(y.shape.dims))
        check(np.array_equal(got, xs[i]), f"grpcio Predict instance {i}")
    req.servable_spec.name = "nope"
    reply = stub.Predict(req)
    check(
        len(reply.error_msg) == 1
        and reply.error_msg[0].error_msg.decode() == "Request servable(nope) method(add_common) , servable is not available",
        "grpcio Predict: in-band error with MindSpore's text",
    )
    req.ClearField("instances")
    req.servable_spec.name = "add"
    reply = stub.Predict(req, timeout=10)
    check(len(reply.error_msg) == 1, "grpcio Predict: zero instances answered, not hung")
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    h = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=""))
    check(h.status == health_pb2.HealthCheckResponse.SERVING, "grpcio health check")


def mindspore_rest(rest):
    import requests

    instances = [{"x1": [[1.0, 2.0], [3.0, 4.0]], "x2": [[1.0, 1.0], [1.0, 1.0]]}]
    r = requests.post(f"http://{rest}/model/add:add_common", json={"instances": instances}, timeout=10)
    check(r.json() == {"instances": [{"y": [[2.0, 3.0], [4.0, 5.0]]}]}, "requests MindSpore REST add_common")
    r = requests.post(f"http://{rest}/model/add/version/1:add_cast", json={"instances": [{"x1": [[1, 2], [3, 4]], "x2": [[1, 1], [1, 1]]}]}, timeout=10)
    check(r.json() == {"instances": [{"y": [[2.0, 3.0], [4.0, 5.0]]}]}, "requests MindSpore REST add_cast")


def main():
    grpc_addr, rest, proto_dir = sys.argv[1:4]
    triton_http(rest)
    triton_grpc(grpc_addr)
    mindspore_grpc(grpc_addr, proto_dir)
    mindspore_rest(rest)
    print("all third-party clients agree")


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    main()
