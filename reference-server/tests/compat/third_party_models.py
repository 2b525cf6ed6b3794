"""Serves ONNX models no one here wrote, and checks the answers.

The models come from the onnx package's backend tests:
- the PyTorch-converted ones (onnx/backend/test/data/pytorch-*), each with
  the inputs and the reference outputs its exporter computed
  (test_data_set_0/*.pb);
- the image CNNs of data/light (AlexNet, ResNet-50, SqueezeNet, ...) with
  the inputs the onnx package's backend runner gives them and the
  reference outputs it ships beside them.

The server serves them from a bare Triton repository (REPO/<name>/1/
model.onnx, no config.pbtxt); tritonclient sends the inputs over HTTP
(binary tensors) and gRPC, and every output must match its reference.

Usage: third_party_models.py GRPC_ADDR REST_ADDR DATA_DIR NAME=SOURCE...
(SOURCE a test directory under DATA_DIR, or light/<file>.onnx). Prints one
line per model; exits non-zero if any differs.
"""

import glob
import os
import sys

import numpy as np
import onnx
from onnx import numpy_helper
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient

TYPES = {
    np.dtype(np.float32): "FP32",
    np.dtype(np.float64): "FP64",
    np.dtype(np.float16): "FP16",
    np.dtype(np.int64): "INT64",
    np.dtype(np.int32): "INT32",
    np.dtype(np.int8): "INT8",
    np.dtype(np.uint8): "UINT8",
    np.dtype(np.bool_): "BOOL",
}


def tensors(pattern):
    out = []
    for path in sorted(glob.glob(pattern), key=lambda p: int(p.rsplit("_", 1)[1].split(".")[0])):
        t = onnx.load_tensor(path)
        out.append((t.name, numpy_helper.to_array(t)))
    return out


# rtol of the onnx package's own tests of the light models.
LIGHT_RTOL = {"light_densenet121": 2e-3}


def light_case(path):
    """The inputs of a light model as the onnx package's backend runner
    makes them (arange(n) / n, in the input's shape), and the reference
    outputs the package ships beside it (light_<name>_output_<i>.pb)."""
    model = onnx.load(path)
    initialized = {i.name for i in model.graph.initializer}
    inputs = []
    for i in model.graph.input:
        if i.name in initialized:
            continue
        dims = i.type.tensor_type.shape.dim
        shape = tuple(d.dim_value if d.HasField("dim_value") else 1 for d in dims)
        n = int(np.prod(shape))
        inputs.append((i.name, (np.arange(n).reshape(shape) / n).astype(np.float32)))
    prefix = os.path.splitext(path)[0]
    expected = tensors(prefix + "_output_*.pb")
    return inputs, expected


def main():
    grpc_addr, rest_addr, data_dir, names = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4:]
    http = httpclient.InferenceServerClient(url=rest_addr)
    grpc = grpcclient.InferenceServerClient(url=grpc_addr)
    failed = []
    for name, source in (n.split("=", 1) for n in names):
        if source.endswith(".onnx"):
            inputs, expected = light_case(os.path.join(data_dir, source))
        else:
            case = os.path.join(data_dir, source, "test_data_set_0")
            inputs = tensors(os.path.join(case, "input_*.pb"))
            expected = tensors(os.path.join(case, "output_*.pb"))
        meta = http.get_model_metadata(name)
        in_names = [i["name"] for i in meta["inputs"]]
        out_names = [o["name"] for o in meta["outputs"]]
        results = {}
        for client, module in ((http, httpclient), (grpc, grpcclient)):
            reqs = []
            for (tname, value), iname in zip(inputs, in_names):
                i = module.InferInput(iname, list(value.shape), TYPES[value.dtype])
                if module is httpclient:
                    i.set_data_from_numpy(value, binary_data=True)
                else:
                    i.set_data_from_numpy(value)
                reqs.append(i)
            r = client.infer(name, reqs)
            results[module.__name__] = [r.as_numpy(o) for o in out_names]
        ok = True
        for transport, got in results.items():
            for (ename, want), value in zip(expected, got):
                rtol = LIGHT_RTOL.get(name, 1e-3)
                if value is None or value.shape != want.shape or not np.allclose(value, want, rtol=rtol, atol=1e-4, equal_nan=True):
                    ok = False
                    diff = "" if value is None or value.shape != want.shape else f", largest difference {np.nanmax(np.abs(value - want))}, nan {np.isnan(value).sum()} vs {np.isnan(want).sum()}"
                    print(f"MISMATCH {name} over {transport}: output {ename} {None if value is None else value.shape} vs {want.shape}{diff}")
        print(f"{'ok' if ok else 'FAILED'}: {name} ({len(inputs)} inputs, {len(expected)} outputs)")
        if not ok:
            failed.append(name)
    if failed:
        raise SystemExit(f"FAILED: {len(failed)} of {len(names)} models: {', '.join(failed)}")
    print(f"all {len(names)} third-party models match their references")


if __name__ == "__main__":
    main()
