"""Writes the model repository NVIDIA's Python client examples expect
(triton-inference-server/client, src/python/examples), for
conformance/triton/client_examples.sh:

    python client_examples_repo.py OUT [MODEL,MODEL,...] [EXTRA-IDENTITY...]

simple, simple_int8 and simple_string are ONNX models (add and subtract,
INT8 and STRING through Cast to INT32); simple_identity (BYTES, any bytes,
NUL included), simple_sequence (START adds 1) and the decoupled
repeat_int32 are Python-backend models, written from their descriptions
in the examples. EXTRA-IDENTITY names add INT32 identity models (the model
control examples count the repository's models).
"""
import os, sys
import onnx
from onnx import helper, TensorProto as T

out = sys.argv[1]
only = set(sys.argv[2].split(",")) if len(sys.argv) > 2 else None

def write(path, data, mode="w"):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, mode) as f:
        f.write(data)

def save(name, graph):
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    os.makedirs(f"{out}/{name}/1", exist_ok=True)
    onnx.save(m, f"{out}/{name}/1/model.onnx")

def addsub(name, onnx_type, cfg_type, via_int32):
    vi = lambda n: helper.make_tensor_value_info(n, onnx_type, ["N", 16])
    nodes = []
    a, b = "INPUT0", "INPUT1"
    if via_int32:
        nodes += [helper.make_node("Cast", ["INPUT0"], ["a"], to=T.INT32),
                  helper.make_node("Cast", ["INPUT1"], ["b"], to=T.INT32)]
        a, b = "a", "b"
    nodes += [helper.make_node("Add", [a, b], ["s"]), helper.make_node("Sub", [a, b], ["d"])]
    nodes += [helper.make_node("Cast", ["s"], ["OUTPUT0"], to=onnx_type),
              helper.make_node("Cast", ["d"], ["OUTPUT1"], to=onnx_type)]
    save(name, helper.make_graph(nodes, name, [vi("INPUT0"), vi("INPUT1")], [vi("OUTPUT0"), vi("OUTPUT1")]))
    write(f"{out}/{name}/config.pbtxt", f'''name: "{name}"
platform: "onnxruntime_onnx"
max_batch_size: 8
input [ {{ name: "INPUT0" data_type: {cfg_type} dims: [ 16 ] }}, {{ name: "INPUT1" data_type: {cfg_type} dims: [ 16 ] }} ]
output [ {{ name: "OUTPUT0" data_type: {cfg_type} dims: [ 16 ] }}, {{ name: "OUTPUT1" data_type: {cfg_type} dims: [ 16 ] }} ]
''')

def python_model(name, config, code):
    write(f"{out}/{name}/config.pbtxt", config)
    write(f"{out}/{name}/1/model.py", code)

models = {}
models["simple"] = lambda: addsub("simple", T.INT32, "TYPE_INT32", False)
models["simple_int8"] = lambda: addsub("simple_int8", T.INT8, "TYPE_INT8", True)
models["simple_string"] = lambda: addsub("simple_string", T.STRING, "TYPE_STRING", True)
models["simple_identity"] = lambda: python_model("simple_identity", '''name: "simple_identity"
backend: "python"
max_batch_size: 8
input [ { name: "INPUT0" data_type: TYPE_STRING dims: [ -1 ] } ]
output [ { name: "OUTPUT0" data_type: TYPE_STRING dims: [ -1 ] } ]
''', '''import triton_python_backend_utils as pb_utils

class TritonPythonModel:
    def execute(self, requests):
        out = []
        for r in requests:
            x = pb_utils.get_input_tensor_by_name(r, "INPUT0").as_numpy()
            out.append(pb_utils.InferenceResponse([pb_utils.Tensor("OUTPUT0", x)]))
        return out
''')
models["simple_sequence"] = lambda: python_model("simple_sequence", '''name: "simple_sequence"
backend: "python"
max_batch_size: 8
sequence_batching {
  max_sequence_idle_microseconds: 5000000
  control_input [
    { name: "START" control [ { kind: CONTROL_SEQUENCE_START int32_false_true: [ 0, 1 ] } ] },
    { name: "READY" control [ { kind: CONTROL_SEQUENCE_READY int32_false_true: [ 0, 1 ] } ] }
  ]
}
input [ { name: "INPUT" data_type: TYPE_INT32 dims: [ 1 ] } ]
output [ { name: "OUTPUT" data_type: TYPE_INT32 dims: [ 1 ] } ]
''', '''import numpy as np
import triton_python_backend_utils as pb_utils

class TritonPythonModel:
    def execute(self, requests):
        out = []
        for r in requests:
            x = pb_utils.get_input_tensor_by_name(r, "INPUT").as_numpy()
            start = pb_utils.get_input_tensor_by_name(r, "START").as_numpy()
            y = (x + start.reshape(x.shape)).astype(np.int32)
            out.append(pb_utils.InferenceResponse([pb_utils.Tensor("OUTPUT", y)]))
        return out
''')
models["repeat_int32"] = lambda: python_model("repeat_int32", '''name: "repeat_int32"
backend: "python"
max_batch_size: 0
model_transaction_policy { decoupled: true }
input [ { name: "IN" data_type: TYPE_INT32 dims: [ -1 ] }, { name: "DELAY" data_type: TYPE_UINT32 dims: [ -1 ] }, { name: "WAIT" data_type: TYPE_UINT32 dims: [ 1 ] } ]
output [ { name: "OUT" data_type: TYPE_INT32 dims: [ 1 ] }, { name: "IDX" data_type: TYPE_UINT32 dims: [ 1 ] } ]
''', '''import time
import numpy as np
import triton_python_backend_utils as pb_utils

class TritonPythonModel:
    def execute(self, requests):
        for r in requests:
            sender = r.get_response_sender()
            ins = pb_utils.get_input_tensor_by_name(r, "IN").as_numpy()
            delays = pb_utils.get_input_tensor_by_name(r, "DELAY").as_numpy()
            for i, v in enumerate(ins):
                time.sleep(float(delays[i]) / 1000.0)
                sender.send(pb_utils.InferenceResponse([
                    pb_utils.Tensor("OUT", np.array([v], dtype=np.int32)),
                    pb_utils.Tensor("IDX", np.array([i], dtype=np.uint32))]))
            sender.send(flags=pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL)
        return None
''')
for name, make in models.items():
    if only is None or name in only:
        make()
print("wrote", sorted(os.listdir(out)))

def identity_int32(name):
    vi = lambda n: helper.make_tensor_value_info(n, T.INT32, ["N", "D"])
    save(name, helper.make_graph([helper.make_node("Identity", ["INPUT0"], ["OUTPUT0"])], name, [vi("INPUT0")], [vi("OUTPUT0")]))
    write(f"{out}/{name}/config.pbtxt", f'''name: "{name}"
platform: "onnxruntime_onnx"
max_batch_size: 8
input [ {{ name: "INPUT0" data_type: TYPE_INT32 dims: [ -1 ] }} ]
output [ {{ name: "OUTPUT0" data_type: TYPE_INT32 dims: [ -1 ] }} ]
''')
for name in sys.argv[3:]:
    identity_int32(name)
