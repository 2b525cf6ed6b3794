"""Calls MindSpore servables (servable_config.py files, see
tests/mindspore_servables.rs) served by a running reference server:

- grpcio with stubs that grpcio-tools generates from ms_service.proto,
  calling Predict the way MindSpore's Python client does (its package is not
  on the package index; its protocol is what it speaks);
- requests posting MindSpore REST bodies, as MindSpore's own tests do;
- NVIDIA's tritonclient (HTTP and gRPC) through the Open Inference Protocol.

Usage: mindspore_servables.py GRPC_ADDR REST_ADDR PROTO_DIR
Exits non-zero on the first mismatch.
"""

import importlib
import sys
import tempfile

import numpy as np


def check(cond, what):
    if not cond:
        raise SystemExit(f"FAILED: {what}")
    print(f"ok: {what}")


def expected(text, scale):
    x1 = np.array([float(v) for v in text.split(",")], dtype=np.float32)
    y = x1 + x1 * np.float32(scale)
    return "sum=%g" % float(y.sum()), y, y.max()


def stubs(proto_dir):
    from grpc_tools import protoc

    out = tempfile.mkdtemp()
    rc = protoc.main(["protoc", f"-I{proto_dir}", f"--python_out={out}", f"--grpc_python_out={out}",
                      "ms_service.proto"])
    check(rc == 0, "grpcio-tools compiles ms_service.proto")
    sys.path.insert(0, out)
    return importlib.import_module("ms_service_pb2"), importlib.import_module("ms_service_pb2_grpc")


def mindspore_grpc(grpc_addr, proto_dir):
    import grpc

    pb, pb_grpc = stubs(proto_dir)
    stub = pb_grpc.MSServiceStub(grpc.insecure_channel(grpc_addr))

    def array(a):
        dtypes = {np.float32: pb.MS_FLOAT32, np.int32: pb.MS_INT32}
        t = pb.Tensor(dtype=dtypes[a.dtype.type], data=a.tobytes())
        t.shape.dims.extend(a.shape)
        return t

    def numpy_of(t):
        dtypes = {pb.MS_FLOAT32: np.float32, pb.MS_INT32: np.int32, pb.MS_INT64: np.int64,
                  pb.MS_FLOAT64: np.float64}
        return np.frombuffer(t.data, dtype=dtypes[t.dtype]).reshape(list(t.shape.dims))

    # Pre-processing in Python, the model, batched post-processing.
    req = pb.PredictRequest()
    req.servable_spec.name = "text_add"
    req.servable_spec.method_name = "add_text"
    texts = [f"{i},1,2,3" for i in range(6)]
    for text in texts:
        inst = req.instances.add()
        t = pb.Tensor(dtype=pb.MS_STRING)
        t.bytes_val.append(text.encode())
        inst.items["text"].CopyFrom(t)
        inst.items["scale"].CopyFrom(array(np.array([2], dtype=np.float32)))
    reply = stub.Predict(req, timeout=60)
    check(len(reply.error_msg) == 0 and len(reply.instances) == 6,
          f"Predict add_text: 6 instances, no errors ({[e.error_msg for e in reply.error_msg]})")
    batches = []
    for text, inst in zip(texts, reply.instances):
        label, y, peak = expected(text, 2)
        got = inst.items["label"]
        check(got.dtype == pb.MS_STRING and got.bytes_val[0].decode() == label and list(got.shape.dims) == [],
              f"Predict add_text {text!r}: label {label} (a str result is MS_STRING)")
        check(np.array_equal(numpy_of(inst.items["y"]), y), f"Predict add_text {text!r}: the model's y")
        check(numpy_of(inst.items["peak"]).shape == () and numpy_of(inst.items["peak"]) == peak,
              f"Predict add_text {text!r}: peak, a scalar")
        batches.append(int(numpy_of(inst.items["batch"])))
    check(max(batches) > 1 and max(batches) <= 4,
          f"the batched post-processing took several instances per call, at most batch_size 4: {batches}")

    # MindSpore's own add example, in the deprecated form.
    req = pb.PredictRequest()
    req.servable_spec.name = "add"
    req.servable_spec.method_name = "add_cast"
    x1 = np.array([[1, 2], [3, 4]], dtype=np.int32)
    x2 = np.ones((2, 2), dtype=np.int32)
    inst = req.instances.add()
    inst.items["x1"].CopyFrom(array(x1))
    inst.items["x2"].CopyFrom(array(x2))
    reply = stub.Predict(req, timeout=60)
    check(len(reply.error_msg) == 0, f"Predict add_cast: no errors ({[e.error_msg for e in reply.error_msg]})")
    y = numpy_of(reply.instances[0].items["y"])
    check(y.dtype == np.float32 and np.array_equal(y, (x1 + x2).astype(np.float32)),
          "Predict add_cast (call_preprocess, call_servable): int32 cast to float32, added")

    # A method that returns its input, with no stage.
    req = pb.PredictRequest()
    req.servable_spec.name = "add"
    req.servable_spec.method_name = "echo"
    x = np.array([[1.5, 2.5, 3.5]], dtype=np.float32)
    req.instances.add().items["x"].CopyFrom(array(x))
    req.instances.add().items["x"].CopyFrom(array(np.array([7], dtype=np.int32)))
    reply = stub.Predict(req, timeout=60)
    check(len(reply.error_msg) == 0 and np.array_equal(numpy_of(reply.instances[0].items["x"]), x)
          and numpy_of(reply.instances[1].items["x"]).tolist() == [7],
          "Predict echo: a method without stages returns its input as it came")

    # A failing stage: MindSpore's text, for that request alone.
    req = pb.PredictRequest()
    req.servable_spec.name = "text_add"
    req.servable_spec.method_name = "fails"
    req.instances.add().items["x"].CopyFrom(array(np.array([7], dtype=np.int32)))
    reply = stub.Predict(req, timeout=60)
    text = reply.error_msg[0].error_msg.decode() if reply.error_msg else ""
    want = "Call Function 'text_add.boom' Failed, method: 'fails', stage index(begin with 1): 1, error msg: bad value 7"
    check(len(reply.error_msg) == 1 and want in text, f"Predict fails: {text}")


def mindspore_rest(rest):
    import requests

    body = {"instances": [{"text": "1,2,3,4", "scale": [2.0]}, {"text": "0,0,0,1", "scale": [1.0]}]}
    r = requests.post(f"http://{rest}/model/text_add:add_text", json=body, timeout=60)
    check(r.status_code == 200, f"REST add_text: {r.status_code} {r.text[:300]}")
    got = r.json()["instances"]
    for inst, want in zip(got, [expected("1,2,3,4", 2.0), expected("0,0,0,1", 1.0)]):
        check(inst["label"] == want[0] and inst["y"] == want[1].tolist() and inst["peak"] == float(want[2]),
              f"REST add_text: {inst}")
    r = requests.post(f"http://{rest}/model/add:add_common",
                      json={"instances": [{"x1": [[1.0, 2.0], [3.0, 4.0]], "x2": [[1.0, 1.0], [1.0, 1.0]]}]},
                      timeout=60)
    check(r.json() == {"instances": [{"y": [[2.0, 3.0], [4.0, 5.0]]}]}, f"REST add_common: {r.text[:300]}")
    r = requests.post(f"http://{rest}/model/add:add_cast",
                      json={"instances": [{"x1": [[1, 2], [3, 4]], "x2": [[1, 1], [1, 1]]}]}, timeout=60)
    check(r.json() == {"instances": [{"y": [[2.0, 3.0], [4.0, 5.0]]}]}, f"REST add_cast: {r.text[:300]}")
    # Model.call from a Python stage: one instance, then two as one batch.
    r = requests.post(f"http://{rest}/model/text_add:add_by_call",
                      json={"instances": [{"x1": [1.0, 2.0, 3.0, 4.0], "x2": [1.0, 1.0, 1.0, 1.0]},
                                          {"x1": [0.0, 0.0, 0.0, 0.5], "x2": [0.0, 0.0, 0.0, 0.5]}]}, timeout=60)
    check(r.json() == {"instances": [{"y": [2.0, 3.0, 4.0, 5.0], "doubled": [4.0, 6.0, 8.0, 10.0]},
                                     {"y": [0.0, 0.0, 0.0, 1.0], "doubled": [0.0, 0.0, 0.0, 2.0]}]},
          f"REST add_by_call (Model.call): {r.text[:300]}")
    r = requests.post(f"http://{rest}/model/text_add:call_errors_method",
                      json={"instances": [{"x": [1.0, 2.0, 3.0, 4.0]}]}, timeout=60)
    errors = r.json()["instances"][0]["errors"].split("\n")
    want = ["Model(tensor_add.mindir).call() failed: no inputs provided",
            "Model(tensor_add.mindir).call() failed: Input instances count is 0",
            "Model(tensor_add.mindir).call() failed: inputs format invalid",
            "Model(tensor_add.mindir).call() failed: The inputs count 3 of instance 0 is not equal to the inputs count 2 of the model",
            "The model does not have subgraph of index 1, the subgraph count of the model is 1",
            "Model(tensor_add.mindir).call() failed: Given model input 0 data type INT32 not match the data type FP32 defined in model",
            "Model(tensor_add.mindir).call() failed: Given model input 0 size 8 not match the size 16 defined in model"]
    check(errors == want, f"REST call_errors (Model.call's errors): {errors}")


def triton(client, module, what):
    meta = client.get_model_metadata("text_add.add_text", **({"as_json": True} if what == "grpc" else {}))
    inputs = {i["name"]: i for i in meta["inputs"]}
    check(inputs["text"]["datatype"] == "ANY" and inputs["scale"]["datatype"] == "ANY",
          f"tritonclient.{what}: inputs that feed Python stages first are untyped (ANY)")
    texts = ["1,2,3,4", "0,0,0,1"]
    scale = np.array([[2.0], [1.0]], dtype=np.float32)
    inputs = [module.InferInput("text", [2], "BYTES"), module.InferInput("scale", [2, 1], "FP32")]
    inputs[0].set_data_from_numpy(np.array([t.encode() for t in texts], dtype=object))
    inputs[1].set_data_from_numpy(scale)
    r = client.infer("text_add.add_text", inputs)
    labels = [e.decode() for e in r.as_numpy("label")]
    wants = [expected(t, s) for t, s in zip(texts, [2.0, 1.0])]
    check(labels == [w[0] for w in wants], f"tritonclient.{what} add_text labels: {labels}")
    check(np.array_equal(r.as_numpy("y"), np.stack([w[1] for w in wants])), f"tritonclient.{what} add_text y")
    x1 = np.arange(12, dtype=np.float32).reshape(3, 4)
    inputs = [module.InferInput("x1", [3, 4], "FP32"), module.InferInput("x2", [3, 4], "FP32")]
    inputs[0].set_data_from_numpy(x1)
    inputs[1].set_data_from_numpy(x1)
    r = client.infer("text_add.add_common", inputs)
    check(np.array_equal(r.as_numpy("y"), x1 + x1), f"tritonclient.{what} add_common (model stage only)")
    x = np.array([[3]], dtype=np.int32)
    inputs = [module.InferInput("x", [1, 1], "INT32")]
    inputs[0].set_data_from_numpy(x)
    try:
        client.infer("text_add.fails", inputs)
        check(False, f"tritonclient.{what} fails raises")
    except Exception as e:  # InferenceServerException
        check("Call Function 'text_add.boom' Failed" in str(e) and "bad value 3" in str(e),
              f"tritonclient.{what} fails: {e}")


def main():
    grpc_addr, rest, proto_dir = sys.argv[1:4]
    mindspore_grpc(grpc_addr, proto_dir)
    mindspore_rest(rest)
    import tritonclient.grpc as grpcclient
    import tritonclient.http as httpclient

    triton(httpclient.InferenceServerClient(url=rest), httpclient, "http")
    triton(grpcclient.InferenceServerClient(url=grpc_addr), grpcclient, "grpc")
    print("all MindSpore servable checks pass")


if __name__ == "__main__":
    main()
