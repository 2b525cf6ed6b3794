"""KServe's Python ModelServer serving the conformance model set through a
small onnxruntime `kserve.Model` of our own, as a KServe user would write
one (the MLServer runtime in ../mlserver/onnx_runtime.py is its twin).

    python onnx_model.py REPOSITORY HTTP_PORT GRPC_PORT

REPOSITORY is what `conformance models --layout mlserver` writes: one folder
per model with its model.onnx. Like any careful model class it checks
requests against the model's signature and refuses a bad one with KServe's
InvalidInput (400 / INVALID_ARGUMENT), and returns outputs with their own
shapes.
"""

import os
import sys

import numpy as np
import onnxruntime as ort
from kserve import InferOutput, InferRequest, InferResponse, Model, ModelServer
from kserve.errors import InvalidInput

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


class OnnxModel(Model):
    def __init__(self, name: str, path: str):
        super().__init__(name)
        self.path = path

    def load(self) -> bool:
        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
        self.session = ort.InferenceSession(self.path, options, providers=["CPUExecutionProvider"])
        self.inputs = {i.name: i for i in self.session.get_inputs()}
        self.output_names = [o.name for o in self.session.get_outputs()]
        self.ready = True
        return self.ready

    @staticmethod
    def signature(tensors) -> list:
        # Symbolic ONNX dimensions are variable: -1.
        return [
            {
                "name": t.name,
                "datatype": ORT_TYPES.get(t.type, t.type),
                "shape": [d if isinstance(d, int) else -1 for d in t.shape],
            }
            for t in tensors
        ]

    def get_input_types(self) -> list:
        return self.signature(self.session.get_inputs())

    def get_output_types(self) -> list:
        return self.signature(self.session.get_outputs())

    def check(self, request_input) -> None:
        spec = self.inputs.get(request_input.name)
        if spec is None:
            raise InvalidInput(f"unexpected input '{request_input.name}' (inputs: {', '.join(self.inputs)})")
        want = ORT_TYPES.get(spec.type)
        if request_input.datatype != want:
            raise InvalidInput(f"input '{spec.name}' must be {want}, got {request_input.datatype}")
        shape = list(request_input.shape)
        dims = spec.shape
        if len(shape) != len(dims) or any(isinstance(d, int) and d != s for d, s in zip(dims, shape)):
            raise InvalidInput(f"input '{spec.name}' must have shape {dims}, got {shape}")

    async def predict(self, payload: InferRequest, headers=None, response_headers=None) -> InferResponse:
        names = {i.name for i in payload.inputs}
        missing = [n for n in self.inputs if n not in names]
        if missing:
            raise InvalidInput(f"missing inputs: {', '.join(missing)}")
        feeds = {}
        for request_input in payload.inputs:
            self.check(request_input)
            try:
                array = request_input.as_numpy()
            except Exception as e:  # a data size that disagrees with the shape
                raise InvalidInput(f"input '{request_input.name}': {e}")
            if array.size != int(np.prod(request_input.shape)):
                raise InvalidInput(f"input '{request_input.name}': {array.size} elements for shape {request_input.shape}")
            array = array.reshape(request_input.shape)
            if array.dtype == np.object_:
                # ONNX string tensors take str; BYTES arrive as bytes.
                array = np.array(
                    [v.decode("utf-8", "surrogateescape") if isinstance(v, bytes) else v for v in array.flat],
                    dtype=object,
                ).reshape(array.shape)
            feeds[request_input.name] = array
        wanted = [o.name for o in payload.request_outputs] if payload.request_outputs else self.output_names
        unknown = [n for n in wanted if n not in self.output_names]
        if unknown:
            raise InvalidInput(f"unknown outputs: {', '.join(unknown)}")
        results = self.session.run(wanted, feeds)
        outputs = []
        for name, array in zip(wanted, results):
            datatype = next(ORT_TYPES[o.type] for o in self.session.get_outputs() if o.name == name)
            if array.dtype == np.object_:
                array = np.array(
                    [v.encode("utf-8", "surrogateescape") if isinstance(v, str) else v for v in array.flat],
                    dtype=object,
                ).reshape(array.shape)
            output = InferOutput(name=name, shape=list(array.shape), datatype=datatype)
            output.set_data_from_numpy(array, binary_data=False)
            outputs.append(output)
        return InferResponse(
            response_id=payload.id or "",
            model_name=self.name,
            infer_outputs=outputs,
        )


def main() -> None:
    repository, http_port, grpc_port = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    models = []
    for name in sorted(os.listdir(repository)):
        path = os.path.join(repository, name, "model.onnx")
        if not os.path.isfile(path):
            continue
        model = OnnxModel(name, path)
        try:
            model.load()
        except Exception as e:  # a model onnxruntime cannot load stays out
            print(f"not serving {name}: {e}", file=sys.stderr)
            continue
        models.append(model)
    ModelServer(http_port=http_port, grpc_port=grpc_port, workers=1).start(models)


if __name__ == "__main__":
    main()
