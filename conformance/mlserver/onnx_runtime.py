"""An MLServer runtime over the onnxruntime package, for the conformance
model set (written by `cargo run -p conformance -- models --layout mlserver`).

Each model folder carries this file, its model-settings.json names
`onnx_runtime.OnnxModel`, and model.onnx sits beside it.
"""

import os

import numpy as np
import onnxruntime as ort
from mlserver import MLModel
from mlserver.codecs import NumpyCodec
from mlserver.types import InferenceRequest, InferenceResponse
from mlserver.utils import get_model_uri


class OnnxModel(MLModel):
    async def load(self) -> bool:
        path = await get_model_uri(self._settings)
        if os.path.isdir(path):
            path = os.path.join(path, "model.onnx")
        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
        self._session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
        self._outputs = [o.name for o in self._session.get_outputs()]
        return True

    async def predict(self, payload: InferenceRequest) -> InferenceResponse:
        feeds = {}
        for request_input in payload.inputs:
            array = NumpyCodec.decode_input(request_input)
            if array.dtype == np.object_:
                # ONNX string tensors take str; BYTES arrive as bytes.
                array = np.vectorize(
                    lambda v: v.decode("utf-8", "surrogateescape") if isinstance(v, bytes) else v,
                    otypes=[object],
                )(array).astype(object)
            feeds[request_input.name] = array
        wanted = [o.name for o in payload.outputs] if payload.outputs else self._outputs
        results = self._session.run(wanted, feeds)
        outputs = []
        for name, array in zip(wanted, results):
            if array.dtype == np.object_:
                array = np.vectorize(
                    lambda v: v.encode("utf-8", "surrogateescape") if isinstance(v, str) else v,
                    otypes=[object],
                )(array).astype(object)
            outputs.append(NumpyCodec.encode_output(name, array))
        return InferenceResponse(
            model_name=self.name,
            model_version=self.version,
            id=payload.id,
            outputs=outputs,
        )
