"""An MLServer runtime over the onnxruntime package, for the conformance
model set (written by `cargo run -p conformance -- models --layout mlserver`).

Each model folder carries this file, its model-settings.json names
`onnx_runtime.OnnxModel`, and model.onnx sits beside it. Like any careful
runtime it checks requests against the model's signature and answers a bad
request with MLServer's InferenceError (400), and it returns outputs with
their own shapes (MLServer's NumpyCodec would add a batch dimension to 1-D
outputs).
"""

import os

import numpy as np
import onnxruntime as ort
from mlserver import MLModel
from mlserver.codecs import NumpyCodec
from mlserver.errors import InferenceError
from mlserver.types import InferenceRequest, InferenceResponse
from mlserver.utils import get_model_uri

# ONNX Runtime type names -> Open Inference Protocol datatypes.
ORT_TYPES = {
    "tensor(bool)": "BOOL",
    "tensor(int8)": "INT8",
    "tensor(int16)": "INT16",
    "tensor(int32)": "INT32",
    "tensor(int64)": "INT64",
    "tensor(uint8)": "UINT8",
    "tensor(uint16)": "UINT16",
    "tensor(uint32)": "UINT32",
    "tensor(uint64)": "UINT64",
    "tensor(float16)": "FP16",
    "tensor(bfloat16)": "BF16",
    "tensor(float)": "FP32",
    "tensor(double)": "FP64",
    "tensor(string)": "BYTES",
}


class OnnxModel(MLModel):
    async def load(self) -> bool:
        path = await get_model_uri(self._settings)
        if os.path.isdir(path):
            path = os.path.join(path, "model.onnx")
        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
        self._session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
        self._inputs = {i.name: i for i in self._session.get_inputs()}
        self._outputs = [o.name for o in self._session.get_outputs()]
        return True

    def _check(self, request_input) -> None:
        spec = self._inputs.get(request_input.name)
        if spec is None:
            raise InferenceError(f"unexpected input '{request_input.name}' (inputs: {', '.join(self._inputs)})")
        want = ORT_TYPES.get(spec.type)
        if request_input.datatype != want:
            raise InferenceError(f"input '{spec.name}' must be {want}, got {request_input.datatype}")
        shape = list(request_input.shape)
        dims = spec.shape
        if len(shape) != len(dims) or any(isinstance(d, int) and d != s for d, s in zip(dims, shape)):
            raise InferenceError(f"input '{spec.name}' must have shape {dims}, got {shape}")

    async def predict(self, payload: InferenceRequest) -> InferenceResponse:
        names = {i.name for i in payload.inputs}
        missing = [n for n in self._inputs if n not in names]
        if missing:
            raise InferenceError(f"missing inputs: {', '.join(missing)}")
        feeds = {}
        for request_input in payload.inputs:
            self._check(request_input)
            try:
                array = NumpyCodec.decode_input(request_input)
            except Exception as e:  # a data size that disagrees with the shape
                raise InferenceError(f"input '{request_input.name}': {e}")
            if array.size != int(np.prod(request_input.shape)):
                raise InferenceError(f"input '{request_input.name}': {array.size} elements for shape {request_input.shape}")
            array = array.reshape(request_input.shape)
            if array.dtype == np.object_:
                # ONNX string tensors take str; BYTES arrive as bytes.
                array = np.array(
                    [v.decode("utf-8", "surrogateescape") if isinstance(v, bytes) else v for v in array.flat],
                    dtype=object,
                ).reshape(array.shape)
            feeds[request_input.name] = array
        wanted = [o.name for o in payload.outputs] if payload.outputs else self._outputs
        unknown = [n for n in wanted if n not in self._outputs]
        if unknown:
            raise InferenceError(f"unknown outputs: {', '.join(unknown)}")
        results = self._session.run(wanted, feeds)
        outputs = []
        for name, array in zip(wanted, results):
            if array.dtype == np.object_:
                array = np.array(
                    [v.encode("utf-8", "surrogateescape") if isinstance(v, str) else v for v in array.flat],
                    dtype=object,
                ).reshape(array.shape)
            output = NumpyCodec.encode_output(name, array)
            output.shape = list(array.shape)
            outputs.append(output)
        return InferenceResponse(
            model_name=self.name,
            model_version=self.version,
            id=payload.id,
            outputs=outputs,
        )
