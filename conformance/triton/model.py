"""The conformance models as Triton Python-backend models.

`conformance models --layout triton-python` writes this file as
`<model>/1/model.py` for every model of the set, beside a config.pbtxt
with `backend: "python"`: it computes what the model's ONNX graph computes
(the Triton distribution on PyPI carries no ONNX Runtime backend), chosen
by the model's name.

- identity_*: each output yN is its input xN, bytes for bytes (DLPack,
  which carries every fixed-size type, BF16 included; numpy for BYTES).
- add, add_batch, add_cached: y = x1 + x2.
- multi_output: double = x + x, negated = -x.
- size_probe: n = [number of elements of x], INT64.
"""

import json

import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def initialize(self, args):
        config = json.loads(args["model_config"])
        self.name = config["name"]
        self.inputs = [i["name"] for i in config["input"]]
        self.outputs = [o["name"] for o in config["output"]]

    def execute(self, requests):
        responses = []
        for request in requests:
            try:
                outputs = self.run(request)
                responses.append(pb_utils.InferenceResponse(output_tensors=outputs))
            except Exception as e:  # the request's error, not the model's end
                responses.append(
                    pb_utils.InferenceResponse(output_tensors=[], error=pb_utils.TritonError(str(e)))
                )
        return responses

    def run(self, request):
        def get(name):
            return pb_utils.get_input_tensor_by_name(request, name)

        if self.name.startswith("identity"):
            out = []
            for x, y in zip(self.inputs, self.outputs):
                t = get(x)
                if t is None:
                    continue
                try:
                    out.append(pb_utils.Tensor.from_dlpack(y, t.to_dlpack()))
                except Exception:
                    out.append(pb_utils.Tensor(y, t.as_numpy()))
            return out
        if self.name in ("add", "add_batch", "add_cached"):
            a, b = get("x1").as_numpy(), get("x2").as_numpy()
            return [pb_utils.Tensor("y", (a + b).astype(np.float32))]
        if self.name == "multi_output":
            x = get("x").as_numpy()
            return [
                pb_utils.Tensor("double", (x + x).astype(np.float32)),
                pb_utils.Tensor("negated", (-x).astype(np.float32)),
            ]
        if self.name == "size_probe":
            x = get("x").as_numpy()
            return [pb_utils.Tensor("n", np.array([x.size], dtype=np.int64))]
        raise pb_utils.TritonModelException(f"no computation for model {self.name}")
