#!/usr/bin/env python3
"""Differential probe: the same battery of Open Inference Protocol (KServe v2)
requests against two servers (A and B), over tritonclient.http,
tritonclient.grpc, raw HTTP and the raw gRPC stub; prints every observable
difference, both answers verbatim (long texts truncated).

Run it with the Triton venv's python (tritonclient + numpy):

  PY=target/triton/venv/bin/python
  # 1. repositories: Python-backend models for Triton, ONNX (from the suite's
  #    Triton layout) for the reference server; same names, dtypes, dims,
  #    max_batch_size and label files.
  conformance models --layout triton --out /tmp/suite
  $PY conformance/triton/differential.py repos --suite /tmp/suite --out /tmp/dp
  #    -> /tmp/dp/triton (backend "python"), /tmp/dp/ours (onnxruntime_onnx)
  # 2. start both servers (Triton: conformance/triton/start.sh /tmp/dp/triton ...;
  #    ours: reference-server --model-repository /tmp/dp/ours --allow-shared-memory)
  # 3. probe:
  $PY conformance/triton/differential.py probe \
      --a-http 127.0.0.1:8000 --a-grpc 127.0.0.1:8001 --a-name triton \
      --b-http 127.0.0.1:1500 --b-grpc 127.0.0.1:5500 --b-name ours \
      [--sections server,infer,...] [--json OUT.json] [--width 300]

Sections (default: all but `crash`): server health metadata config infer
infer_bad classify params stats shm cudashm trace stream http_misc repository.
Section `crash` holds the probes that kill Triton 2.51 (classification of a
BYTES output: SIGFPE); ask for it by name, last.
The `repository` section loads/unloads models: run it last (it is last in
the default order) and against a Triton in --model-control-mode=explicit
to see explicit-mode behaviour.

Every probe records a JSON-able answer per server; answers are flattened to
path -> value and compared; values matching a mask (timings, timestamps)
are replaced by a placeholder first. Exit status 0 whether or not there are
differences (1 on a usage error).
"""

import argparse
import base64
import gzip
import http.client
import json
import os
import re
import shutil
import struct
import sys
import threading
import time
import traceback

import numpy as np

# --------------------------------------------------------------------------
# repositories


PY_MODEL = '''import json
import numpy as np
import triton_python_backend_utils as pb_utils

OP = "{op}"


class TritonPythonModel:
    def initialize(self, args):
        cfg = json.loads(args["model_config"])
        self.ins = [i["name"] for i in cfg["input"]]
        self.outs = [(o["name"], pb_utils.triton_string_to_numpy(o["data_type"]))
                     for o in cfg["output"]]

    def execute(self, requests):
        responses = []
        for request in requests:
            xs = [pb_utils.get_input_tensor_by_name(request, n).as_numpy() for n in self.ins]
            if OP == "identity":
                ys = xs
            elif OP == "add":
                ys = [xs[0] + xs[1]]
            elif OP == "multi":
                ys = [xs[0] + xs[0], -xs[0]]
            else:
                raise ValueError(OP)
            tensors = [pb_utils.Tensor(name, np.asarray(y).astype(dt))
                       for (name, dt), y in zip(self.outs, ys)]
            responses.append(pb_utils.InferenceResponse(output_tensors=tensors))
        return responses
'''

LABELS = "zero\none\ntwo\nthree\n"


def tensors(key, specs):
    out = [f"{key} ["]
    rows = []
    for s in specs:
        name, dtype, dims = s[0], s[1], s[2]
        extra = s[3] if len(s) > 3 else ""
        rows.append(f'  {{ name: "{name}" data_type: TYPE_{dtype} dims: [ {", ".join(map(str, dims))} ]{extra} }}')
    out.append(",\n".join(rows))
    out.append("]")
    return "\n".join(out)


def identity_specs(dtype):
    # x0 is [1] for both: Triton refuses an empty reshape on a non-batching
    # model ("scalar tensors are not supported"), and the suite's Triton
    # layout declares its scalars as [1] in the ONNX graph too.
    ins = [("x0", dtype, [1]), ("x1", dtype, [-1]),
           ("x2", dtype, [-1, -1]), ("x3", dtype, [-1, -1, -1])]
    outs = [("y" + s[0][1:],) + s[1:] for s in ins]
    return ins, outs


# name: (suite model whose ONNX serves it, op, max_batch_size, inputs, outputs, extra config, versions)
def model_table():
    t = {}
    t["add"] = ("add", "add", 0,
                [("x1", "FP32", [2, 2]), ("x2", "FP32", [2, 2])],
                [("y", "FP32", [2, 2])], "", [1, 2])
    t["add_batch"] = ("add_batch", "add", 8,
                      [("x1", "FP32", [2]), ("x2", "FP32", [2])],
                      [("y", "FP32", [2], ' label_filename: "labels.txt"')],
                      "dynamic_batching { }\n", [1])
    # add_batch with the response cache (both servers run with
    # --cache-config local,size=...).
    t["add_cached"] = ("add_batch", "add", 8,
                       [("x1", "FP32", [2]), ("x2", "FP32", [2])],
                       [("y", "FP32", [2])],
                       "dynamic_batching { }\nresponse_cache { enable: true }\n", [1])
    t["multi_output"] = ("multi_output", "multi", 0,
                         [("x", "FP32", [-1])],
                         [("double", "FP32", [-1], ' label_filename: "labels.txt"'),
                          ("negated", "FP32", [-1])], "", [1])
    for d in ("FP32", "INT64", "BOOL", "FP16", "UINT8", "INT32"):
        ins, outs = identity_specs(d)
        t["identity_" + d.lower()] = ("identity_" + d.lower(), "identity", 0, ins, outs, "", [1])
    ins, outs = identity_specs("STRING")
    t["identity_bytes"] = ("identity_bytes", "identity", 0, ins, outs, "", [1])
    t["identity_string"] = ("identity_string", "identity", 0,
                            [("x", "STRING", [1])], [("y", "STRING", [1])], "", [1])
    return t


def write_repos(suite, out):
    for flavour in ("triton", "ours"):
        root = os.path.join(out, flavour)
        shutil.rmtree(root, ignore_errors=True)
        for name, (src, op, mbs, ins, outs, extra, versions) in model_table().items():
            d = os.path.join(root, name)
            os.makedirs(d)
            head = (f'name: "{name}"\nbackend: "python"\n' if flavour == "triton"
                    else f'name: "{name}"\nplatform: "onnxruntime_onnx"\n')
            cfg = head + f"max_batch_size: {mbs}\n" + tensors("input", ins) + "\n" + tensors("output", outs) + "\n" + extra
            with open(os.path.join(d, "config.pbtxt"), "w") as f:
                f.write(cfg)
            if "label_filename" in cfg:
                with open(os.path.join(d, "labels.txt"), "w") as f:
                    f.write(LABELS)
            for v in versions:
                vd = os.path.join(d, str(v))
                os.makedirs(vd)
                if flavour == "triton":
                    with open(os.path.join(vd, "model.py"), "w") as f:
                        f.write(PY_MODEL.format(op=op))
                else:
                    shutil.copy(os.path.join(suite, src, "1", "model.onnx"), os.path.join(vd, "model.onnx"))
        # The same ensemble in both: add_batch twice, (x1 + x2) doubled.
        d = os.path.join(root, "ensemble_add")
        os.makedirs(os.path.join(d, "1"))
        with open(os.path.join(d, "config.pbtxt"), "w") as f:
            f.write(ENSEMBLE_ADD)
        # The same sequence model (a Python accumulator) in both.
        d = os.path.join(root, "seq_acc")
        os.makedirs(os.path.join(d, "1"))
        with open(os.path.join(d, "config.pbtxt"), "w") as f:
            f.write(SEQ_ACC_CONFIG)
        with open(os.path.join(d, "1", "model.py"), "w") as f:
            f.write(SEQ_ACC)
        # The same BLS models in both: bls_stream reads the decoupled
        # bls_repeat's responses, and add's one, with exec(decoupled=True).
        for name, config, code in (("bls_repeat", BLS_REPEAT_CONFIG, BLS_REPEAT),
                                   ("bls_stream", BLS_STREAM_CONFIG, BLS_STREAM)):
            d = os.path.join(root, name)
            os.makedirs(os.path.join(d, "1"))
            with open(os.path.join(d, "config.pbtxt"), "w") as f:
                f.write(config)
            with open(os.path.join(d, "1", "model.py"), "w") as f:
                f.write(code)
    print(f"wrote {out}/triton and {out}/ours")


ENSEMBLE_ADD = """name: "ensemble_add"
platform: "ensemble"
max_batch_size: 8
input [ { name: "A" data_type: TYPE_FP32 dims: [ 2 ] }, { name: "B" data_type: TYPE_FP32 dims: [ 2 ] } ]
output [ { name: "OUT" data_type: TYPE_FP32 dims: [ 2 ] } ]
ensemble_scheduling {
  step [
    { model_name: "add_batch" model_version: -1
      input_map { key: "x1" value: "A" } input_map { key: "x2" value: "B" }
      output_map { key: "y" value: "sum" } },
    { model_name: "add_batch" model_version: 1
      input_map { key: "x1" value: "sum" } input_map { key: "x2" value: "sum" }
      output_map { key: "y" value: "OUT" } }
  ]
}
"""


# A running sum per correlation ID, in the instance: START resets it,
# READY false rows (a direct batcher's fillers) answer 0; it echoes what the
# controls said.
SEQ_ACC = """import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def initialize(self, args):
        self.sums = {}

    def execute(self, requests):
        out = []
        for r in requests:
            get = lambda n: pb_utils.get_input_tensor_by_name(r, n).as_numpy()
            x, start, end, ready, corrid = get("INPUT"), get("START"), get("END"), get("READY"), get("CORRID")
            if not ready[0][0]:
                y = np.zeros((1, 1), np.int32)
            else:
                key = int(corrid[0][0])
                if start[0][0]:
                    self.sums[key] = 0
                self.sums[key] = self.sums.get(key, 0) + int(x[0][0])
                y = np.array([[self.sums[key]]], np.int32)
                if end[0][0]:
                    self.sums.pop(key)
            flags = np.array([[int(start[0][0]), int(end[0][0]), int(ready[0][0]), int(corrid[0][0])]], np.int64)
            out.append(pb_utils.InferenceResponse([pb_utils.Tensor("OUTPUT", y), pb_utils.Tensor("FLAGS", flags)]))
        return out
"""

# A decoupled model: one response per value of IN (from a thread of its
# own), then the final flag alone.
BLS_REPEAT = """import threading
import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def initialize(self, args):
        self.threads = []

    def execute(self, requests):
        for request in requests:
            x = pb_utils.get_input_tensor_by_name(request, "IN").as_numpy().copy()
            t = threading.Thread(target=self.repeat, args=(x, request.get_response_sender()))
            t.start()
            self.threads.append(t)
        return None

    def repeat(self, x, sender):
        for i, v in enumerate(x):
            sender.send(pb_utils.InferenceResponse([
                pb_utils.Tensor("OUT", np.array([v], dtype=np.int32)),
                pb_utils.Tensor("IDX", np.array([i], dtype=np.uint32))]))
        sender.send(flags=pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL)

    def finalize(self):
        for t in self.threads:
            t.join()
"""

BLS_REPEAT_CONFIG = """name: "bls_repeat"
backend: "python"
max_batch_size: 0
model_transaction_policy { decoupled: true }
input [ { name: "IN" data_type: TYPE_INT32 dims: [ -1 ] } ]
output [ { name: "OUT" data_type: TYPE_INT32 dims: [ 1 ] }, { name: "IDX" data_type: TYPE_UINT32 dims: [ 1 ] } ]
"""

# BLS with exec(decoupled=True): every response of bls_repeat as it comes
# (the last empty: the final flag alone), and the one response of add, a
# model that answers once; reports what it read.
BLS_STREAM = """import json
import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def execute(self, requests):
        out = []
        for r in requests:
            x = pb_utils.get_input_tensor_by_name(r, "IN").as_numpy()
            seen = []
            for response in pb_utils.InferenceRequest(
                    model_name="bls_repeat", requested_output_names=["OUT", "IDX"],
                    inputs=[pb_utils.Tensor("IN", x)]).exec(decoupled=True):
                if response.has_error():
                    seen.append({"error": response.error().message()})
                else:
                    seen.append({t.name(): t.as_numpy().tolist() for t in response.output_tensors()})
            square = np.array([[1, 2], [3, 4]], np.float32)
            once = [{t.name(): t.as_numpy().tolist() for t in response.output_tensors()}
                    for response in pb_utils.InferenceRequest(
                        model_name="add", requested_output_names=["y"],
                        inputs=[pb_utils.Tensor("x1", square), pb_utils.Tensor("x2", square)]).exec(decoupled=True)]
            report = json.dumps({"repeat": seen, "add": once}, sort_keys=True)
            out.append(pb_utils.InferenceResponse([
                pb_utils.Tensor("report", np.array([report.encode()], dtype=object))]))
        return out
"""

BLS_STREAM_CONFIG = """name: "bls_stream"
backend: "python"
max_batch_size: 0
input [ { name: "IN" data_type: TYPE_INT32 dims: [ -1 ] } ]
output [ { name: "report" data_type: TYPE_STRING dims: [ 1 ] } ]
"""

SEQ_ACC_CONFIG = """name: "seq_acc"
backend: "python"
max_batch_size: 2
input [ { name: "INPUT" data_type: TYPE_INT32 dims: [ 1 ] } ]
output [ { name: "OUTPUT" data_type: TYPE_INT32 dims: [ 1 ] }, { name: "FLAGS" data_type: TYPE_INT64 dims: [ 4 ] } ]
sequence_batching {
  max_sequence_idle_microseconds: 2000000
  control_input [
    { name: "START" control [ { kind: CONTROL_SEQUENCE_START int32_false_true: [ 0, 1 ] } ] },
    { name: "END" control [ { kind: CONTROL_SEQUENCE_END int32_false_true: [ 0, 1 ] } ] },
    { name: "READY" control [ { kind: CONTROL_SEQUENCE_READY int32_false_true: [ 0, 1 ] } ] },
    { name: "CORRID" control [ { kind: CONTROL_SEQUENCE_CORRID data_type: TYPE_UINT64 } ] }
  ]
}
"""


# --------------------------------------------------------------------------
# answers


def np_value(a):
    if a is None:
        return None
    if a.dtype == np.object_:
        return {"dtype": "object", "shape": list(a.shape),
                "values": [repr(x) for x in a.reshape(-1).tolist()]}
    vals = a.reshape(-1).tolist()
    vals = [repr(v) if isinstance(v, float) and (v != v or v in (float("inf"), float("-inf"))) else v for v in vals]
    return {"dtype": str(a.dtype), "shape": list(a.shape), "values": vals}


def exc_answer(e):
    from tritonclient.utils import InferenceServerException
    if isinstance(e, InferenceServerException):
        return {"error": {"type": type(e).__name__, "status": str(e.status()), "msg": e.message()}}
    return {"error": {"type": type(e).__name__, "msg": str(e)}}


def call(fn):
    try:
        return fn()
    except Exception as e:  # noqa: BLE001  the exception is the answer
        return exc_answer(e)


HEADER_KEEP = {"content-type", "inference-header-content-length", "content-encoding",
               "content-length", "transfer-encoding", "connection", "server", "allow",
               "grpc-status", "www-authenticate", "access-control-allow-origin", "vary"}


def raw_http(side, method, path, body=None, headers=None, parse_binary=True):
    host, port = side.http.rsplit(":", 1)
    conn = http.client.HTTPConnection(host, int(port), timeout=30)
    hdrs = dict(headers or {})
    if isinstance(body, (dict, list)):
        body = json.dumps(body).encode()
        hdrs.setdefault("Content-Type", "application/json")
    elif isinstance(body, str):
        body = body.encode()
    try:
        conn.request(method, path, body=body, headers=hdrs)
        r = conn.getresponse()
        data = r.read()
    except Exception as e:  # noqa: BLE001
        return {"error": {"type": type(e).__name__, "msg": str(e)}}
    finally:
        conn.close()
    h = {k.lower(): v for k, v in r.getheaders() if k.lower() in HEADER_KEEP}
    ans = {"status": r.status, "headers": h}
    if h.get("content-encoding") == "gzip":
        try:
            data = gzip.decompress(data)
            ans["decompressed"] = True
        except Exception as e:  # noqa: BLE001
            ans["decompress_error"] = str(e)
    hl = h.get("inference-header-content-length")
    if hl is not None and parse_binary:
        n = int(hl)
        try:
            ans["json"] = json.loads(data[:n])
        except Exception:  # noqa: BLE001
            ans["json_text"] = data[:n].decode(errors="replace")
        ans["binary_hex"] = data[n:].hex()
        return ans
    try:
        ans["json"] = json.loads(data) if data else None
    except Exception:  # noqa: BLE001
        ans["text"] = data.decode(errors="replace")
    return ans


class Side:
    def __init__(self, label, http_url, grpc_url):
        import grpc
        import tritonclient.grpc as grpcclient
        import tritonclient.grpc.service_pb2_grpc as pb_grpc
        import tritonclient.http as httpclient
        self.label = label
        self.http = http_url
        self.grpc = grpc_url
        self.hc = httpclient.InferenceServerClient(http_url, network_timeout=60.0)
        self.gc = grpcclient.InferenceServerClient(grpc_url)
        self.channel = grpc.insecure_channel(grpc_url)
        self.stub = pb_grpc.GRPCInferenceServiceStub(self.channel)

    def close(self):
        for c in (self.hc, self.gc, self.channel):
            try:
                c.close()
            except Exception:  # noqa: BLE001
                pass


def raw_grpc(side, method, request):
    import grpc
    from google.protobuf.json_format import MessageToDict
    try:
        resp = getattr(side.stub, method)(request, timeout=30)
        return {"reply": MessageToDict(resp, preserving_proto_field_name=True)}
    except grpc.RpcError as e:
        return {"error": {"type": "RpcError", "status": str(e.code()), "msg": e.details()}}


# --------------------------------------------------------------------------
# the battery

PROBES = []  # (section, name, fn(side) -> answer)


def probe(section, name):
    def wrap(fn):
        PROBES.append((section, name, fn))
        return fn
    return wrap


def h_infer_answer(r):
    resp = r.get_response()
    outs = {}
    for o in resp.get("outputs", []):
        outs[o["name"]] = np_value(r.as_numpy(o["name"]))
    return {"response": resp, "as_numpy": outs}


def g_infer_answer(r):
    resp = r.get_response(as_json=True)
    outs = {}
    for o in resp.get("outputs", []):
        outs[o["name"]] = np_value(r.as_numpy(o["name"]))
    return {"response": resp, "as_numpy": outs}


def hin(name, arr, dtype, binary=True):
    import tritonclient.http as httpclient
    i = httpclient.InferInput(name, list(arr.shape), dtype)
    i.set_data_from_numpy(arr, binary_data=binary)
    return i


def gin(name, arr, dtype):
    import tritonclient.grpc as grpcclient
    i = grpcclient.InferInput(name, list(arr.shape), dtype)
    i.set_data_from_numpy(arr)
    return i


A22 = np.array([[1, 2], [3, 4]], np.float32)
B22 = np.array([[0.5, 0.25], [-1, 1e30]], np.float32)


def add_json(**extra):
    body = {"inputs": [
        {"name": "x1", "shape": [2, 2], "datatype": "FP32", "data": [1, 2, 3, 4]},
        {"name": "x2", "shape": [2, 2], "datatype": "FP32", "data": [0.5, 0.25, -1, 1e30]}]}
    body.update(extra)
    return body


# ---- server / health

@probe("server", "http GET /v2 (raw)")
def _(s):
    return raw_http(s, "GET", "/v2")


@probe("server", "http client get_server_metadata")
def _(s):
    return call(lambda: s.hc.get_server_metadata())


@probe("server", "grpc ServerMetadata")
def _(s):
    return call(lambda: s.gc.get_server_metadata(as_json=True))


@probe("health", "http is_server_live/ready")
def _(s):
    return {"live": call(s.hc.is_server_live), "ready": call(s.hc.is_server_ready)}


@probe("health", "grpc is_server_live/ready")
def _(s):
    return {"live": call(s.gc.is_server_live), "ready": call(s.gc.is_server_ready)}


for _path in ("/v2/health/live", "/v2/health/ready", "/v2/models/add/ready",
              "/v2/models/add/versions/2/ready", "/v2/models/add/versions/1/ready",
              "/v2/models/nope/ready", "/v2/models/add/versions/7/ready",
              "/v2/models/add/versions/abc/ready"):
    probe("health", f"raw GET {_path}")(lambda s, p=_path: raw_http(s, "GET", p))


@probe("health", "http/grpc is_model_ready (add, add v1, add v2, nope)")
def _(s):
    out = {}
    for m, v in (("add", ""), ("add", "1"), ("add", "2"), ("nope", "")):
        out[f"http {m}:{v}"] = call(lambda: s.hc.is_model_ready(m, v))
        out[f"grpc {m}:{v}"] = call(lambda: s.gc.is_model_ready(m, v))
    return out


@probe("health", "raw gRPC ServerLive/ServerReady/ModelReady(empty name)")
def _(s):
    import tritonclient.grpc.service_pb2 as pb
    return {"live": raw_grpc(s, "ServerLive", pb.ServerLiveRequest()),
            "ready": raw_grpc(s, "ServerReady", pb.ServerReadyRequest()),
            "model_empty": raw_grpc(s, "ModelReady", pb.ModelReadyRequest(name=""))}


# ---- metadata

META_MODELS = ("add", "add_batch", "multi_output", "identity_bytes", "identity_string", "identity_bool")
for _m in META_MODELS:
    probe("metadata", f"http get_model_metadata {_m}")(lambda s, m=_m: call(lambda: s.hc.get_model_metadata(m)))
    probe("metadata", f"grpc get_model_metadata {_m}")(lambda s, m=_m: call(lambda: s.gc.get_model_metadata(m, as_json=True)))

for _m, _v in (("add", "1"), ("add", "2"), ("add", "3"), ("add", "abc"), ("nope", "")):
    probe("metadata", f"http get_model_metadata {_m} v{_v!r}")(lambda s, m=_m, v=_v: call(lambda: s.hc.get_model_metadata(m, v)))
    probe("metadata", f"grpc get_model_metadata {_m} v{_v!r}")(lambda s, m=_m, v=_v: call(lambda: s.gc.get_model_metadata(m, v, as_json=True)))

probe("metadata", "raw GET /v2/models/add")(lambda s: raw_http(s, "GET", "/v2/models/add"))
probe("metadata", "raw GET /v2/models/nope")(lambda s: raw_http(s, "GET", "/v2/models/nope"))
probe("metadata", "raw GET /v2/models/add/versions/2")(lambda s: raw_http(s, "GET", "/v2/models/add/versions/2"))

# ---- config

for _m in ("add", "add_batch", "multi_output", "identity_bytes", "identity_fp16"):
    probe("config", f"http get_model_config {_m}")(lambda s, m=_m: call(lambda: s.hc.get_model_config(m)))
    probe("config", f"grpc get_model_config {_m}")(lambda s, m=_m: call(lambda: s.gc.get_model_config(m, as_json=True)))
probe("config", "http get_model_config nope")(lambda s: call(lambda: s.hc.get_model_config("nope")))
probe("config", "grpc get_model_config nope")(lambda s: call(lambda: s.gc.get_model_config("nope", as_json=True)))
probe("config", "raw GET /v2/models/add/versions/3/config")(lambda s: raw_http(s, "GET", "/v2/models/add/versions/3/config"))

# ---- infer, valid

probe("infer", "raw JSON add (no outputs, id)")(lambda s: raw_http(s, "POST", "/v2/models/add/infer", add_json(id="r-1")))
probe("infer", "raw JSON add (outputs binary_data false, parameters)")(
    lambda s: raw_http(s, "POST", "/v2/models/add/infer",
                       add_json(parameters={"custom": "v", "n": 3},
                                outputs=[{"name": "y", "parameters": {"binary_data": False}}])))
probe("infer", "raw JSON add (binary_data_output true)")(
    lambda s: raw_http(s, "POST", "/v2/models/add/infer", add_json(parameters={"binary_data_output": True})))
probe("infer", "raw JSON add (outputs [y] binary_data true)")(
    lambda s: raw_http(s, "POST", "/v2/models/add/infer",
                       add_json(outputs=[{"name": "y", "parameters": {"binary_data": True}}])))
probe("infer", "raw JSON add (binary_data_output true + outputs [y] binary false)")(
    lambda s: raw_http(s, "POST", "/v2/models/add/infer",
                       add_json(parameters={"binary_data_output": True}, outputs=[{"name": "y", "parameters": {"binary_data": False}}])))
probe("infer", "raw JSON add nested data [[1,2],[3,4]]")(
    lambda s: raw_http(s, "POST", "/v2/models/add/infer", {"inputs": [
        {"name": "x1", "shape": [2, 2], "datatype": "FP32", "data": [[1, 2], [3, 4]]},
        {"name": "x2", "shape": [2, 2], "datatype": "FP32", "data": [[1, 1], [1, 1]]}]}))
probe("infer", "raw JSON add version 2 path")(lambda s: raw_http(s, "POST", "/v2/models/add/versions/2/infer", add_json()))


def binary_body(inputs, extra=None):
    """inputs: (name, shape, dtype, bytes)."""
    hdr = {"inputs": [{"name": n, "shape": sh, "datatype": dt, "parameters": {"binary_data_size": len(b)}}
                      for n, sh, dt, b in inputs]}
    hdr.update(extra or {})
    j = json.dumps(hdr).encode()
    return j + b"".join(b for *_, b in inputs), {"Inference-Header-Content-Length": str(len(j)),
                                                 "Content-Type": "application/octet-stream"}


@probe("infer", "raw binary add (outputs unlisted)")
def _(s):
    body, h = binary_body([("x1", [2, 2], "FP32", A22.tobytes()), ("x2", [2, 2], "FP32", B22.tobytes())])
    return raw_http(s, "POST", "/v2/models/add/infer", body, h)


@probe("infer", "raw binary add, Content-Type absent")
def _(s):
    body, h = binary_body([("x1", [2, 2], "FP32", A22.tobytes()), ("x2", [2, 2], "FP32", B22.tobytes())])
    del h["Content-Type"]
    return raw_http(s, "POST", "/v2/models/add/infer", body, h)


@probe("infer", "http client add binary in, no outputs listed")
def _(s):
    return call(lambda: h_infer_answer(s.hc.infer("add", [hin("x1", A22, "FP32"), hin("x2", B22, "FP32")])))


@probe("infer", "http client add JSON in, outputs [y binary_data=False]")
def _(s):
    import tritonclient.http as httpclient
    return call(lambda: h_infer_answer(s.hc.infer(
        "add", [hin("x1", A22, "FP32", False), hin("x2", B22, "FP32", False)],
        outputs=[httpclient.InferRequestedOutput("y", binary_data=False)], request_id="id-7")))


@probe("infer", "http client add, outputs [y binary_data=True]")
def _(s):
    import tritonclient.http as httpclient
    return call(lambda: h_infer_answer(s.hc.infer(
        "add", [hin("x1", A22, "FP32", False), hin("x2", B22, "FP32")],
        outputs=[httpclient.InferRequestedOutput("y", binary_data=True)])))


@probe("infer", "http client add gzip request+response compression")
def _(s):
    return call(lambda: h_infer_answer(s.hc.infer(
        "add", [hin("x1", A22, "FP32"), hin("x2", B22, "FP32")],
        request_compression_algorithm="gzip", response_compression_algorithm="gzip")))


@probe("infer", "http client add deflate request+response compression")
def _(s):
    return call(lambda: h_infer_answer(s.hc.infer(
        "add", [hin("x1", A22, "FP32"), hin("x2", B22, "FP32")],
        request_compression_algorithm="deflate", response_compression_algorithm="deflate")))


@probe("infer", "raw JSON add, Accept-Encoding: gzip")
def _(s):
    return raw_http(s, "POST", "/v2/models/add/infer", add_json(), {"Accept-Encoding": "gzip"})


@probe("infer", "grpc client add (raw contents), id")
def _(s):
    return call(lambda: g_infer_answer(s.gc.infer("add", [gin("x1", A22, "FP32"), gin("x2", B22, "FP32")], request_id="g-1")))


@probe("infer", "grpc client add, outputs [y], gzip compression")
def _(s):
    import tritonclient.grpc as grpcclient
    return call(lambda: g_infer_answer(s.gc.infer("add", [gin("x1", A22, "FP32"), gin("x2", B22, "FP32")],
                                                  outputs=[grpcclient.InferRequestedOutput("y")],
                                                  compression_algorithm="gzip")))


def typed_request(model, inputs, outputs=None, **kw):
    """inputs: (name, shape, dtype, contents field, values)."""
    import tritonclient.grpc.service_pb2 as pb
    req = pb.ModelInferRequest(model_name=model, **kw)
    for n, sh, dt, field, vals in inputs:
        t = req.inputs.add()
        t.name, t.datatype = n, dt
        t.shape.extend(sh)
        getattr(t.contents, field).extend(vals)
    for o in outputs or []:
        req.outputs.add().name = o
    return req


probe("infer", "raw gRPC add typed fp32_contents")(lambda s: raw_grpc(s, "ModelInfer", typed_request(
    "add", [("x1", [2, 2], "FP32", "fp32_contents", [1, 2, 3, 4]), ("x2", [2, 2], "FP32", "fp32_contents", [1, 1, 1, 1])])))


@probe("infer", "raw gRPC add raw_input_contents")
def _(s):
    import tritonclient.grpc.service_pb2 as pb
    req = pb.ModelInferRequest(model_name="add", id="raw-1")
    for n in ("x1", "x2"):
        t = req.inputs.add()
        t.name, t.datatype = n, "FP32"
        t.shape.extend([2, 2])
    req.raw_input_contents.extend([A22.tobytes(), B22.tobytes()])
    return raw_grpc(s, "ModelInfer", req)


probe("infer", "raw gRPC identity_int64 typed int64_contents")(lambda s: raw_grpc(s, "ModelInfer", typed_request(
    "identity_int64", [("x0", [1], "INT64", "int64_contents", [2 ** 62 + 1]),
                       ("x1", [2], "INT64", "int64_contents", [-1, 2 ** 63 - 1]),
                       ("x2", [1, 1], "INT64", "int64_contents", [7]),
                       ("x3", [1, 1, 1], "INT64", "int64_contents", [8])])))
probe("infer", "raw gRPC identity_bytes typed bytes_contents")(lambda s: raw_grpc(s, "ModelInfer", typed_request(
    "identity_bytes", [("x0", [1], "BYTES", "bytes_contents", [b"a"]),
                       ("x1", [2], "BYTES", "bytes_contents", [b"", "z\u00e9".encode()]),
                       ("x2", [1, 1], "BYTES", "bytes_contents", [b"hello"]),
                       ("x3", [1, 1, 1], "BYTES", "bytes_contents", [b"w"])])))
probe("infer", "raw gRPC identity_bool typed bool_contents")(lambda s: raw_grpc(s, "ModelInfer", typed_request(
    "identity_bool", [("x0", [1], "BOOL", "bool_contents", [True]),
                      ("x1", [2], "BOOL", "bool_contents", [False, True]),
                      ("x2", [1, 1], "BOOL", "bool_contents", [True]),
                      ("x3", [1, 1, 1], "BOOL", "bool_contents", [False])])))
probe("infer", "raw gRPC identity_uint8 typed uint_contents")(lambda s: raw_grpc(s, "ModelInfer", typed_request(
    "identity_uint8", [("x0", [1], "UINT8", "uint_contents", [255]),
                       ("x1", [2], "UINT8", "uint_contents", [0, 1]),
                       ("x2", [1, 1], "UINT8", "uint_contents", [2]),
                       ("x3", [1, 1, 1], "UINT8", "uint_contents", [3])])))
probe("infer", "raw gRPC identity_uint8 typed uint_contents out of range 256")(lambda s: raw_grpc(s, "ModelInfer", typed_request(
    "identity_uint8", [("x0", [1], "UINT8", "uint_contents", [256]),
                       ("x1", [2], "UINT8", "uint_contents", [0, 1]),
                       ("x2", [1, 1], "UINT8", "uint_contents", [2]),
                       ("x3", [1, 1, 1], "UINT8", "uint_contents", [3])])))
probe("infer", "raw gRPC add typed + raw mixed")(lambda s: raw_grpc(s, "ModelInfer", (lambda r: (r.raw_input_contents.extend([A22.tobytes()]), r)[1])(typed_request(
    "add", [("x1", [2, 2], "FP32", "fp32_contents", [1, 2, 3, 4]), ("x2", [2, 2], "FP32", "fp32_contents", [1, 1, 1, 1])]))))
probe("infer", "raw gRPC add typed wrong field (int_contents for FP32)")(lambda s: raw_grpc(s, "ModelInfer", typed_request(
    "add", [("x1", [2, 2], "FP32", "int_contents", [1, 2, 3, 4]), ("x2", [2, 2], "FP32", "fp32_contents", [1, 1, 1, 1])])))
probe("infer", "raw gRPC add typed count short (3 of 4)")(lambda s: raw_grpc(s, "ModelInfer", typed_request(
    "add", [("x1", [2, 2], "FP32", "fp32_contents", [1, 2, 3]), ("x2", [2, 2], "FP32", "fp32_contents", [1, 1, 1, 1])])))


def identity_arrays(dtype):
    if dtype == "BYTES":
        mk = lambda vals: np.array(vals, dtype=np.object_)  # noqa: E731
        return [mk([b"a"]), mk([b"", "z\u00e9".encode()]), mk([[b"hello"]]), mk([[[b"w", "\u20ac".encode()]]])]
    npdt = {"FP32": np.float32, "INT64": np.int64, "BOOL": np.bool_, "FP16": np.float16,
            "UINT8": np.uint8, "INT32": np.int32}[dtype]
    if dtype == "BOOL":
        return [np.array([True]), np.array([False, True]), np.array([[True]]), np.array([[[False, True]]])]
    if dtype == "INT64":
        return [np.array([2 ** 62 + 1], npdt), np.array([-1, 2 ** 63 - 1], npdt), np.array([[7]], npdt), np.array([[[8, -9]]], npdt)]
    if dtype in ("FP32", "FP16"):
        return [np.array([1.5], npdt), np.array([-0.0, 3.25], npdt), np.array([[1e-3]], npdt), np.array([[[-2.5, 65504]]], npdt)]
    return [np.array([1], npdt), np.array([0, 2], npdt), np.array([[3]], npdt), np.array([[[4, 5]]], npdt)]


for _dt in ("FP32", "INT64", "BOOL", "FP16", "UINT8", "INT32", "BYTES"):
    _model = "identity_bytes" if _dt == "BYTES" else "identity_" + _dt.lower()

    def _h(s, dt=_dt, model=_model, binary=True):
        import tritonclient.http as httpclient
        xs = identity_arrays(dt)
        return call(lambda: h_infer_answer(s.hc.infer(
            model, [hin(f"x{i}", x, dt, binary) for i, x in enumerate(xs)],
            outputs=[httpclient.InferRequestedOutput(f"y{i}", binary_data=binary) for i in range(4)])))

    def _g(s, dt=_dt, model=_model):
        xs = identity_arrays(dt)
        return call(lambda: g_infer_answer(s.gc.infer(model, [gin(f"x{i}", x, dt) for i, x in enumerate(xs)])))

    probe("infer", f"http client {_model} binary")(_h)
    probe("infer", f"http client {_model} JSON")(lambda s, f=_h: f(s, binary=False))
    probe("infer", f"grpc client {_model}")(_g)


@probe("infer", "raw JSON identity_bytes (strings, unicode)")
def _(s):
    return raw_http(s, "POST", "/v2/models/identity_bytes/infer", {"inputs": [
        {"name": "x0", "shape": [1], "datatype": "BYTES", "data": ["a"]},
        {"name": "x1", "shape": [2], "datatype": "BYTES", "data": ["", "héllo"]},
        {"name": "x2", "shape": [1, 1], "datatype": "BYTES", "data": ["x"]},
        {"name": "x3", "shape": [1, 1, 1], "datatype": "BYTES", "data": ["\u20ac"]}]})


@probe("infer", "raw JSON identity_bool (true/false, and 0/1)")
def _(s):
    return raw_http(s, "POST", "/v2/models/identity_bool/infer", {"inputs": [
        {"name": "x0", "shape": [1], "datatype": "BOOL", "data": [True]},
        {"name": "x1", "shape": [2], "datatype": "BOOL", "data": [False, True]},
        {"name": "x2", "shape": [1, 1], "datatype": "BOOL", "data": [1]},
        {"name": "x3", "shape": [1, 1, 1], "datatype": "BOOL", "data": [0]}]})


@probe("infer", "raw JSON identity_int64 big values")
def _(s):
    return raw_http(s, "POST", "/v2/models/identity_int64/infer", {"inputs": [
        {"name": "x0", "shape": [1], "datatype": "INT64", "data": [2 ** 62 + 1]},
        {"name": "x1", "shape": [2], "datatype": "INT64", "data": [-(2 ** 63), 2 ** 63 - 1]},
        {"name": "x2", "shape": [1, 1], "datatype": "INT64", "data": [7]},
        {"name": "x3", "shape": [1, 1, 1], "datatype": "INT64", "data": [8]}]})


@probe("infer", "raw JSON identity_int64 float value 1.5")
def _(s):
    return raw_http(s, "POST", "/v2/models/identity_int64/infer", {"inputs": [
        {"name": "x0", "shape": [1], "datatype": "INT64", "data": [1.5]},
        {"name": "x1", "shape": [1], "datatype": "INT64", "data": [1]},
        {"name": "x2", "shape": [1, 1], "datatype": "INT64", "data": [7]},
        {"name": "x3", "shape": [1, 1, 1], "datatype": "INT64", "data": [8]}]})


@probe("infer", "raw JSON identity_fp16 values")
def _(s):
    return raw_http(s, "POST", "/v2/models/identity_fp16/infer", {"inputs": [
        {"name": "x0", "shape": [1], "datatype": "FP16", "data": [1.5]},
        {"name": "x1", "shape": [2], "datatype": "FP16", "data": [0.1, 2]},
        {"name": "x2", "shape": [1, 1], "datatype": "FP16", "data": [-2]},
        {"name": "x3", "shape": [1, 1, 1], "datatype": "FP16", "data": [1e-8]}]})


@probe("infer", "raw JSON identity_string")
def _(s):
    return raw_http(s, "POST", "/v2/models/identity_string/infer",
                    {"inputs": [{"name": "x", "shape": [1], "datatype": "BYTES", "data": ["héllo"]}]})


@probe("infer", "http client identity_fp32 JSON with inf/nan (client writes Infinity/NaN)")
def _(s):
    import tritonclient.http as httpclient
    xs = [np.array([np.nan], np.float32), np.array([np.inf, -np.inf], np.float32), np.array([[1]], np.float32), np.array([[[2]]], np.float32)]
    return call(lambda: h_infer_answer(s.hc.infer(
        "identity_fp32", [hin(f"x{i}", x, "FP32", False) for i, x in enumerate(xs)],
        outputs=[httpclient.InferRequestedOutput(f"y{i}", binary_data=False) for i in range(4)])))


@probe("infer", "http client identity_fp32 binary with inf/nan, JSON outputs")
def _(s):
    import tritonclient.http as httpclient
    xs = [np.array([np.nan], np.float32), np.array([np.inf, -np.inf], np.float32), np.array([[1]], np.float32), np.array([[[2]]], np.float32)]
    return call(lambda: h_infer_answer(s.hc.infer(
        "identity_fp32", [hin(f"x{i}", x, "FP32", True) for i, x in enumerate(xs)],
        outputs=[httpclient.InferRequestedOutput(f"y{i}", binary_data=False) for i in range(4)])))


@probe("infer", "http client identity_bytes binary non-UTF-8 and NUL")
def _(s):
    mk = lambda vals: np.array(vals, dtype=np.object_)  # noqa: E731
    xs = [mk([b"a"]), mk([b"", b"\xff\x00z"]), mk([[b"\x00"]]), mk([[[b"w"]]])]
    return call(lambda: h_infer_answer(s.hc.infer("identity_bytes", [hin(f"x{i}", x, "BYTES") for i, x in enumerate(xs)])))


@probe("infer", "raw JSON identity_bytes with NUL char in string")
def _(s):
    return raw_http(s, "POST", "/v2/models/identity_bytes/infer", {"inputs": [
        {"name": "x0", "shape": [1], "datatype": "BYTES", "data": ["a"]},
        {"name": "x1", "shape": [1], "datatype": "BYTES", "data": ["b"]},
        {"name": "x2", "shape": [1, 1], "datatype": "BYTES", "data": ["x"]},
        {"name": "x3", "shape": [1, 1, 1], "datatype": "BYTES", "data": ["\u0000nul"]}]})


@probe("infer", "raw JSON identity_fp64-like precision: FP32 0.1 and 16777217")
def _(s):
    return raw_http(s, "POST", "/v2/models/identity_fp32/infer", {"inputs": [
        {"name": "x0", "shape": [1], "datatype": "FP32", "data": [0.1]},
        {"name": "x1", "shape": [2], "datatype": "FP32", "data": [16777217, 3.4e38]},
        {"name": "x2", "shape": [1, 1], "datatype": "FP32", "data": [1e-45]},
        {"name": "x3", "shape": [1, 1, 1], "datatype": "FP32", "data": [-0.0]}]})


@probe("infer", "raw JSON identity_fp32 empty tensor x1 [0]")
def _(s):
    return raw_http(s, "POST", "/v2/models/identity_fp32/infer", {"inputs": [
        {"name": "x0", "shape": [1], "datatype": "FP32", "data": [1]},
        {"name": "x1", "shape": [0], "datatype": "FP32", "data": []},
        {"name": "x2", "shape": [0, 3], "datatype": "FP32", "data": []},
        {"name": "x3", "shape": [1, 1, 1], "datatype": "FP32", "data": [8]}]})


@probe("infer", "http client add_batch 3 rows")
def _(s):
    x = np.arange(6, dtype=np.float32).reshape(3, 2)
    return call(lambda: h_infer_answer(s.hc.infer("add_batch", [hin("x1", x, "FP32"), hin("x2", x, "FP32")])))


@probe("infer", "grpc client add_batch 8 rows (== max_batch_size)")
def _(s):
    x = np.arange(16, dtype=np.float32).reshape(8, 2)
    return call(lambda: g_infer_answer(s.gc.infer("add_batch", [gin("x1", x, "FP32"), gin("x2", x, "FP32")])))


@probe("infer", "http client multi_output, outputs [negated] only")
def _(s):
    import tritonclient.http as httpclient
    x = np.array([1, -2, 3], np.float32)
    return call(lambda: h_infer_answer(s.hc.infer("multi_output", [hin("x", x, "FP32")],
                                                  outputs=[httpclient.InferRequestedOutput("negated", binary_data=False)])))


@probe("infer", "http client multi_output, outputs [double binary, negated JSON]")
def _(s):
    import tritonclient.http as httpclient
    x = np.array([1, -2, 3], np.float32)
    return call(lambda: h_infer_answer(s.hc.infer("multi_output", [hin("x", x, "FP32")],
                                                  outputs=[httpclient.InferRequestedOutput("double", binary_data=True),
                                                           httpclient.InferRequestedOutput("negated", binary_data=False)])))


@probe("infer", "grpc client multi_output, outputs [negated, double] (order)")
def _(s):
    import tritonclient.grpc as grpcclient
    x = np.array([1, -2, 3], np.float32)
    return call(lambda: g_infer_answer(s.gc.infer("multi_output", [gin("x", x, "FP32")],
                                                  outputs=[grpcclient.InferRequestedOutput("negated"),
                                                           grpcclient.InferRequestedOutput("double")])))


probe("infer", "raw JSON multi_output outputs [negated, double] order")(
    lambda s: raw_http(s, "POST", "/v2/models/multi_output/infer", {
        "inputs": [{"name": "x", "shape": [2], "datatype": "FP32", "data": [1, 2]}],
        "outputs": [{"name": "negated"}, {"name": "double"}]}))

# ---- infer, invalid


def _bad_json(name, model, body, path=None, headers=None):
    probe("infer_bad", f"raw {name}")(lambda s: raw_http(s, "POST", path or f"/v2/models/{model}/infer", body, headers))


_bad_json("JSON unknown model", "nope", add_json())
_bad_json("JSON unknown version 3", None, add_json(), "/v2/models/add/versions/3/infer")
_bad_json("JSON unserved version 1 (policy latest 1)", None, add_json(), "/v2/models/add/versions/1/infer")
_bad_json("JSON version abc", None, add_json(), "/v2/models/add/versions/abc/infer")
_bad_json("JSON wrong datatype INT32", "add", {"inputs": [
    {"name": "x1", "shape": [2, 2], "datatype": "INT32", "data": [1, 2, 3, 4]},
    {"name": "x2", "shape": [2, 2], "datatype": "FP32", "data": [1, 2, 3, 4]}]})
_bad_json("JSON unknown datatype FP8", "add", {"inputs": [
    {"name": "x1", "shape": [2, 2], "datatype": "FP8", "data": [1, 2, 3, 4]},
    {"name": "x2", "shape": [2, 2], "datatype": "FP32", "data": [1, 2, 3, 4]}]})
_bad_json("JSON wrong shape [4]", "add", {"inputs": [
    {"name": "x1", "shape": [4], "datatype": "FP32", "data": [1, 2, 3, 4]},
    {"name": "x2", "shape": [2, 2], "datatype": "FP32", "data": [1, 2, 3, 4]}]})
_bad_json("JSON shape/data count mismatch", "add", {"inputs": [
    {"name": "x1", "shape": [2, 2], "datatype": "FP32", "data": [1, 2, 3]},
    {"name": "x2", "shape": [2, 2], "datatype": "FP32", "data": [1, 2, 3, 4]}]})
_bad_json("JSON negative shape", "add", {"inputs": [
    {"name": "x1", "shape": [-2, -2], "datatype": "FP32", "data": [1, 2, 3, 4]},
    {"name": "x2", "shape": [2, 2], "datatype": "FP32", "data": [1, 2, 3, 4]}]})
_bad_json("JSON missing input x2", "add", {"inputs": [
    {"name": "x1", "shape": [2, 2], "datatype": "FP32", "data": [1, 2, 3, 4]}]})
_bad_json("JSON extra input x3", "add", {"inputs": [
    {"name": "x1", "shape": [2, 2], "datatype": "FP32", "data": [1, 2, 3, 4]},
    {"name": "x2", "shape": [2, 2], "datatype": "FP32", "data": [1, 2, 3, 4]},
    {"name": "x3", "shape": [2, 2], "datatype": "FP32", "data": [1, 2, 3, 4]}]})
_bad_json("JSON duplicate input x1", "add", {"inputs": [
    {"name": "x1", "shape": [2, 2], "datatype": "FP32", "data": [1, 2, 3, 4]},
    {"name": "x1", "shape": [2, 2], "datatype": "FP32", "data": [5, 6, 7, 8]},
    {"name": "x2", "shape": [2, 2], "datatype": "FP32", "data": [1, 2, 3, 4]}]})
_bad_json("JSON unknown output", "add", add_json(outputs=[{"name": "zz"}]))
_bad_json("JSON duplicate output", "add", add_json(outputs=[{"name": "y"}, {"name": "y"}]))
_bad_json("JSON no inputs key", "add", {"outputs": []})
_bad_json("JSON inputs empty", "add", {"inputs": []})
_bad_json("bad JSON (truncated)", "add", '{"inputs": [')
_bad_json("JSON top-level array", "add", "[1,2]")
_bad_json("empty body", "add", "")
_bad_json("JSON NaN literal", "add", '{"inputs":[{"name":"x1","shape":[2,2],"datatype":"FP32","data":[NaN,1,2,3]},'
          '{"name":"x2","shape":[2,2],"datatype":"FP32","data":[1,2,3,4]}]}')
_bad_json("JSON \"NaN\" string", "add", {"inputs": [
    {"name": "x1", "shape": [2, 2], "datatype": "FP32", "data": ["NaN", 1, 2, 3]},
    {"name": "x2", "shape": [2, 2], "datatype": "FP32", "data": [1, 2, 3, 4]}]})
_bad_json("JSON 1e39 into FP32", "add", {"inputs": [
    {"name": "x1", "shape": [2, 2], "datatype": "FP32", "data": [1e39, 1, 2, 3]},
    {"name": "x2", "shape": [2, 2], "datatype": "FP32", "data": [1, 2, 3, 4]}]})
_bad_json("JSON string into FP32", "add", {"inputs": [
    {"name": "x1", "shape": [2, 2], "datatype": "FP32", "data": ["a", 1, 2, 3]},
    {"name": "x2", "shape": [2, 2], "datatype": "FP32", "data": [1, 2, 3, 4]}]})
_bad_json("JSON BYTES into FP32 input", "add", {"inputs": [
    {"name": "x1", "shape": [2, 2], "datatype": "BYTES", "data": ["a", "b", "c", "d"]},
    {"name": "x2", "shape": [2, 2], "datatype": "FP32", "data": [1, 2, 3, 4]}]})
_bad_json("JSON 300 into UINT8", "identity_uint8", {"inputs": [
    {"name": "x0", "shape": [1], "datatype": "UINT8", "data": [300]},
    {"name": "x1", "shape": [1], "datatype": "UINT8", "data": [1]},
    {"name": "x2", "shape": [1, 1], "datatype": "UINT8", "data": [1]},
    {"name": "x3", "shape": [1, 1, 1], "datatype": "UINT8", "data": [1]}]})
_bad_json("JSON -1 into UINT8", "identity_uint8", {"inputs": [
    {"name": "x0", "shape": [1], "datatype": "UINT8", "data": [-1]},
    {"name": "x1", "shape": [1], "datatype": "UINT8", "data": [1]},
    {"name": "x2", "shape": [1, 1], "datatype": "UINT8", "data": [1]},
    {"name": "x3", "shape": [1, 1, 1], "datatype": "UINT8", "data": [1]}]})
_bad_json("JSON add_batch 9 rows (> max_batch_size 8)", "add_batch", {"inputs": [
    {"name": "x1", "shape": [9, 2], "datatype": "FP32", "data": [0] * 18},
    {"name": "x2", "shape": [9, 2], "datatype": "FP32", "data": [0] * 18}]})
_bad_json("JSON add_batch without batch dim [2]", "add_batch", {"inputs": [
    {"name": "x1", "shape": [2], "datatype": "FP32", "data": [0, 1]},
    {"name": "x2", "shape": [2], "datatype": "FP32", "data": [0, 1]}]})
_bad_json("JSON add_batch rows differ 2 vs 3", "add_batch", {"inputs": [
    {"name": "x1", "shape": [2, 2], "datatype": "FP32", "data": [0] * 4},
    {"name": "x2", "shape": [3, 2], "datatype": "FP32", "data": [0] * 6}]})
_bad_json("JSON parameters not an object", "add", add_json(parameters=[1]))
_bad_json("JSON binary_data_size on JSON body", "add", {"inputs": [
    {"name": "x1", "shape": [2, 2], "datatype": "FP32", "parameters": {"binary_data_size": 16}},
    {"name": "x2", "shape": [2, 2], "datatype": "FP32", "data": [1, 2, 3, 4]}]})
_bad_json("wrong Content-Type text/plain", "add", json.dumps(add_json()), headers={"Content-Type": "text/plain"})


@probe("infer_bad", "raw binary size mismatch (binary_data_size 16, 12 bytes sent)")
def _(s):
    body, h = binary_body([("x1", [2, 2], "FP32", A22.tobytes()), ("x2", [2, 2], "FP32", B22.tobytes()[:12])])
    body = body.replace(b'"binary_data_size": 12', b'"binary_data_size": 16')
    return raw_http(s, "POST", "/v2/models/add/infer", body, h)


@probe("infer_bad", "raw binary extra trailing bytes")
def _(s):
    body, h = binary_body([("x1", [2, 2], "FP32", A22.tobytes()), ("x2", [2, 2], "FP32", B22.tobytes())])
    return raw_http(s, "POST", "/v2/models/add/infer", body + b"\0\0\0\0", h)


@probe("infer_bad", "raw binary header length beyond body")
def _(s):
    body, h = binary_body([("x1", [2, 2], "FP32", A22.tobytes()), ("x2", [2, 2], "FP32", B22.tobytes())])
    h["Inference-Header-Content-Length"] = str(len(body) + 10)
    return raw_http(s, "POST", "/v2/models/add/infer", body, h)


@probe("infer_bad", "raw binary header length not a number")
def _(s):
    body, h = binary_body([("x1", [2, 2], "FP32", A22.tobytes()), ("x2", [2, 2], "FP32", B22.tobytes())])
    h["Inference-Header-Content-Length"] = "abc"
    return raw_http(s, "POST", "/v2/models/add/infer", body, h)


@probe("infer_bad", "raw binary BYTES element length beyond data")
def _(s):
    xs = [b"\x01\x00\x00\x00a", b"\x05\x00\x00\x00ab", b"\x01\x00\x00\x00a", b"\x01\x00\x00\x00a"]
    shapes = [[1], [1], [1, 1], [1, 1, 1]]
    body, h = binary_body([(f"x{i}", shapes[i], "BYTES", x) for i, x in enumerate(xs)])
    return raw_http(s, "POST", "/v2/models/identity_bytes/infer", body, h)


def _grpc_bad(name, fn):
    probe("infer_bad", f"grpc client {name}")(lambda s: call(lambda: g_infer_answer(fn(s))))


def _http_bad(name, fn):
    probe("infer_bad", f"http client {name}")(lambda s: call(lambda: h_infer_answer(fn(s))))


for _mk, _reg, _in in (("grpc", _grpc_bad, gin), ("http", _http_bad, hin)):
    def _c(s, mk=_mk):
        return s.gc if mk == "grpc" else s.hc
    _reg("unknown model", lambda s, c=_c, i=_in: c(s).infer("nope", [i("x1", A22, "FP32"), i("x2", B22, "FP32")]))
    _reg("unknown version 3", lambda s, c=_c, i=_in: c(s).infer("add", [i("x1", A22, "FP32"), i("x2", B22, "FP32")], model_version="3"))
    _reg("wrong datatype INT32", lambda s, c=_c, i=_in: c(s).infer("add", [i("x1", A22.astype(np.int32), "INT32"), i("x2", B22, "FP32")]))
    _reg("wrong shape [4]", lambda s, c=_c, i=_in: c(s).infer("add", [i("x1", A22.reshape(4), "FP32"), i("x2", B22, "FP32")]))
    _reg("missing input", lambda s, c=_c, i=_in: c(s).infer("add", [i("x1", A22, "FP32")]))
    _reg("extra input", lambda s, c=_c, i=_in: c(s).infer("add", [i("x1", A22, "FP32"), i("x2", B22, "FP32"), i("x9", B22, "FP32")]))
    _reg("duplicate input", lambda s, c=_c, i=_in: c(s).infer("add", [i("x1", A22, "FP32"), i("x1", A22, "FP32"), i("x2", B22, "FP32")]))
    _reg("batch 9 > max_batch_size", lambda s, c=_c, i=_in: c(s).infer("add_batch", [i("x1", np.zeros((9, 2), np.float32), "FP32"), i("x2", np.zeros((9, 2), np.float32), "FP32")]))


@probe("infer_bad", "grpc client unknown output")
def _(s):
    import tritonclient.grpc as grpcclient
    return call(lambda: g_infer_answer(s.gc.infer("add", [gin("x1", A22, "FP32"), gin("x2", B22, "FP32")],
                                                  outputs=[grpcclient.InferRequestedOutput("zz")])))


@probe("infer_bad", "raw gRPC raw_input_contents size mismatch (12 of 16 bytes)")
def _(s):
    import tritonclient.grpc.service_pb2 as pb
    req = pb.ModelInferRequest(model_name="add")
    for n in ("x1", "x2"):
        t = req.inputs.add()
        t.name, t.datatype = n, "FP32"
        t.shape.extend([2, 2])
    req.raw_input_contents.extend([A22.tobytes(), B22.tobytes()[:12]])
    return raw_grpc(s, "ModelInfer", req)


@probe("infer_bad", "raw gRPC raw_input_contents count (1 for 2 inputs)")
def _(s):
    import tritonclient.grpc.service_pb2 as pb
    req = pb.ModelInferRequest(model_name="add")
    for n in ("x1", "x2"):
        t = req.inputs.add()
        t.name, t.datatype = n, "FP32"
        t.shape.extend([2, 2])
    req.raw_input_contents.extend([A22.tobytes()])
    return raw_grpc(s, "ModelInfer", req)


probe("infer_bad", "raw gRPC empty model name")(lambda s: raw_grpc(s, "ModelInfer", typed_request(
    "", [("x1", [2, 2], "FP32", "fp32_contents", [1, 2, 3, 4])])))
probe("infer_bad", "raw gRPC typed NaN fp32 (valid: NaN passes)")(lambda s: raw_grpc(s, "ModelInfer", typed_request(
    "add", [("x1", [2, 2], "FP32", "fp32_contents", [float("nan"), 2, 3, 4]), ("x2", [2, 2], "FP32", "fp32_contents", [1, 1, 1, 1])])))

# ---- classification


def _cls_h(model, x, out, k, binary):
    def f(s):
        import tritonclient.http as httpclient
        return call(lambda: h_infer_answer(s.hc.infer(
            model, [hin(n, a, "FP32") for n, a in x],
            outputs=[httpclient.InferRequestedOutput(out, binary_data=binary, class_count=k)])))
    return f


def _cls_g(model, x, out, k):
    def f(s):
        import tritonclient.grpc as grpcclient
        return call(lambda: g_infer_answer(s.gc.infer(
            model, [gin(n, a, "FP32") for n, a in x],
            outputs=[grpcclient.InferRequestedOutput(out, class_count=k)])))
    return f


_MX = [("x", np.array([0.5, 3, -1, 2, 7, 3], np.float32))]
_BX = [("x1", np.array([[1, 5], [9, 2], [3, 3]], np.float32)), ("x2", np.zeros((3, 2), np.float32))]
probe("classify", "http multi_output double class_count=3 binary (labels file)")(_cls_h("multi_output", _MX, "double", 3, True))
probe("classify", "http multi_output double class_count=3 JSON (labels file)")(_cls_h("multi_output", _MX, "double", 3, False))
probe("classify", "http multi_output negated class_count=2 JSON (no labels)")(_cls_h("multi_output", _MX, "negated", 2, False))
probe("classify", "http multi_output double class_count=100 JSON")(_cls_h("multi_output", _MX, "double", 100, False))
probe("classify", "grpc multi_output double class_count=3")(_cls_g("multi_output", _MX, "double", 3))
probe("classify", "http add_batch y class_count=1 (batched, labels)")(_cls_h("add_batch", _BX, "y", 1, False))
probe("classify", "grpc add_batch y class_count=2 (batched, labels)")(_cls_g("add_batch", _BX, "y", 2))
probe("classify", "http add y class_count=2 (no labels, 2x2)")(_cls_h("add", [("x1", A22), ("x2", B22)], "y", 2, False))
probe("classify", "raw JSON classification 0")(lambda s: raw_http(s, "POST", "/v2/models/multi_output/infer", {
    "inputs": [{"name": "x", "shape": [2], "datatype": "FP32", "data": [1, 2]}],
    "outputs": [{"name": "double", "parameters": {"classification": 0}}]}))
probe("classify", "raw JSON classification -1")(lambda s: raw_http(s, "POST", "/v2/models/multi_output/infer", {
    "inputs": [{"name": "x", "shape": [2], "datatype": "FP32", "data": [1, 2]}],
    "outputs": [{"name": "double", "parameters": {"classification": -1}}]}))
probe("classify", "raw JSON classification \"2\" (string)")(lambda s: raw_http(s, "POST", "/v2/models/multi_output/infer", {
    "inputs": [{"name": "x", "shape": [2], "datatype": "FP32", "data": [1, 2]}],
    "outputs": [{"name": "double", "parameters": {"classification": "2"}}]}))
# Triton 2.51 dies of SIGFPE ("trap divide error" in the kernel log) on this
# one: it is in section `crash`, run only when asked for by name.
probe("crash", "raw JSON classification 2 identity_bytes (BYTES output)")(lambda s: raw_http(s, "POST", "/v2/models/identity_bytes/infer", {
    "inputs": [{"name": "x0", "shape": [1], "datatype": "BYTES", "data": ["a"]},
               {"name": "x1", "shape": [1], "datatype": "BYTES", "data": ["a"]},
               {"name": "x2", "shape": [1, 1], "datatype": "BYTES", "data": ["a"]},
               {"name": "x3", "shape": [1, 1, 1], "datatype": "BYTES", "data": ["a"]}],
    "outputs": [{"name": "y1", "parameters": {"classification": 2}}]}))

# ---- request parameters


def _param_probe(name, **kw):
    @probe("params", f"grpc {name}")
    def _g(s):
        return call(lambda: g_infer_answer(s.gc.infer("add", [gin("x1", A22, "FP32"), gin("x2", B22, "FP32")], **kw)))

    @probe("params", f"http {name}")
    def _h(s):
        return call(lambda: h_infer_answer(s.hc.infer("add", [hin("x1", A22, "FP32"), hin("x2", B22, "FP32")], **kw)))


_param_probe("priority=1 (add, no dynamic batching)", priority=1)
_param_probe("timeout=1000000us", timeout=1000000)
_param_probe("timeout=1us", timeout=1)
_param_probe("custom parameters {str,int,bool}", parameters={"custom_s": "v", "custom_i": 5, "custom_b": True})
_param_probe("sequence_id=5 start (non-sequence model)", sequence_id=5, sequence_start=True)
_param_probe("sequence_id='abc' string", sequence_id="abc")


@probe("params", "grpc add_batch priority=2 (dynamic batching, 0 levels)")
def _(s):
    x = np.ones((1, 2), np.float32)
    return call(lambda: g_infer_answer(s.gc.infer("add_batch", [gin("x1", x, "FP32"), gin("x2", x, "FP32")], priority=2)))


@probe("params", "grpc client reserved parameter name 'priority' in parameters")
def _(s):
    return call(lambda: g_infer_answer(s.gc.infer("add", [gin("x1", A22, "FP32"), gin("x2", B22, "FP32")], parameters={"priority": 1})))


probe("params", "raw JSON parameters priority/timeout numbers")(
    lambda s: raw_http(s, "POST", "/v2/models/add/infer", add_json(parameters={"priority": 1, "timeout": 100000})))
probe("params", "raw JSON parameters priority=-1")(
    lambda s: raw_http(s, "POST", "/v2/models/add/infer", add_json(parameters={"priority": -1})))
probe("params", "raw JSON parameters timeout=\"x\"")(
    lambda s: raw_http(s, "POST", "/v2/models/add/infer", add_json(parameters={"timeout": "x"})))
probe("params", "raw JSON parameters nested object value")(
    lambda s: raw_http(s, "POST", "/v2/models/add/infer", add_json(parameters={"o": {"a": 1}})))
probe("params", "raw JSON parameters float value")(
    lambda s: raw_http(s, "POST", "/v2/models/add/infer", add_json(parameters={"f": 1.5})))
probe("params", "raw JSON input parameters unknown key")(
    lambda s: raw_http(s, "POST", "/v2/models/add/infer", {"inputs": [
        {"name": "x1", "shape": [2, 2], "datatype": "FP32", "data": [1, 2, 3, 4], "parameters": {"whatever": 1}},
        {"name": "x2", "shape": [2, 2], "datatype": "FP32", "data": [1, 2, 3, 4]}]}))


@probe("params", "raw gRPC parameters double_param + uint64_param")
def _(s):
    req = typed_request("add", [("x1", [2, 2], "FP32", "fp32_contents", [1, 2, 3, 4]),
                                ("x2", [2, 2], "FP32", "fp32_contents", [1, 1, 1, 1])])
    req.parameters["d"].double_param = 1.5
    req.parameters["u"].uint64_param = 2 ** 64 - 1
    return raw_grpc(s, "ModelInfer", req)


@probe("params", "raw gRPC parameters priority as string_param")
def _(s):
    req = typed_request("add", [("x1", [2, 2], "FP32", "fp32_contents", [1, 2, 3, 4]),
                                ("x2", [2, 2], "FP32", "fp32_contents", [1, 1, 1, 1])])
    req.parameters["priority"].string_param = "high"
    return raw_grpc(s, "ModelInfer", req)

# ---- statistics


STAT_MASK = re.compile(r"(\.ns$|_ns$|last_inference|timestamp|\.ns\b|memory_usage)")


@probe("stats", "http get_inference_statistics add")
def _(s):
    return call(lambda: s.hc.get_inference_statistics("add"))


@probe("stats", "grpc get_inference_statistics add")
def _(s):
    return call(lambda: s.gc.get_inference_statistics("add", as_json=True))


@probe("stats", "http get_inference_statistics add_batch (batch_stats)")
def _(s):
    return call(lambda: s.hc.get_inference_statistics("add_batch"))


@probe("stats", "http get_inference_statistics all (model list)")
def _(s):
    r = call(lambda: s.hc.get_inference_statistics())
    if "model_stats" in r:
        return {"models": sorted(f"{m['name']}:{m['version']}" for m in r["model_stats"])}
    return r


@probe("stats", "grpc get_inference_statistics all (model list)")
def _(s):
    r = call(lambda: s.gc.get_inference_statistics(as_json=True))
    if "model_stats" in r:
        return {"models": sorted(f"{m.get('name')}:{m.get('version')}" for m in r["model_stats"])}
    return r


probe("stats", "http get_inference_statistics nope")(lambda s: call(lambda: s.hc.get_inference_statistics("nope")))
probe("stats", "grpc get_inference_statistics nope")(lambda s: call(lambda: s.gc.get_inference_statistics("nope", as_json=True)))
probe("stats", "http get_inference_statistics add v3")(lambda s: call(lambda: s.hc.get_inference_statistics("add", "3")))
probe("stats", "raw GET /v2/models/stats")(lambda s: (lambda r: {"status": r.get("status"), "headers": r.get("headers"),
                                                                  "n_models": len((r.get("json") or {}).get("model_stats", []))})(
    raw_http(s, "GET", "/v2/models/stats")))

# ---- shared memory


def _shm_key(tag):
    """The same key for both servers (each probe destroys its regions), so
    that status answers compare."""
    return f"/dp_{os.getpid()}_{tag}"


@probe("shm", "system shm status (empty) http/grpc")
def _(s):
    return {"http": call(lambda: s.hc.get_system_shared_memory_status()),
            "grpc": call(lambda: s.gc.get_system_shared_memory_status(as_json=True))}


def _shm_infer(s, proto):
    import tritonclient.utils.shared_memory as shm
    mod = __import__("tritonclient." + proto, fromlist=["x"])
    c = s.hc if proto == "http" else s.gc
    key_in, key_out = _shm_key("in"), _shm_key("out")
    hin_ = shm.create_shared_memory_region("dp_in", key_in, 32)
    hout = shm.create_shared_memory_region("dp_out", key_out, 16)
    ans = {}
    try:
        shm.set_shared_memory_region(hin_, [A22, B22])
        ans["register_in"] = call(lambda: c.register_system_shared_memory("dp_in", key_in, 32))
        ans["register_out"] = call(lambda: c.register_system_shared_memory("dp_out", key_out, 16))
        ans["register_same_key_new_name_first"] = call(lambda: c.register_system_shared_memory("dp_in_alias", key_in, 16, offset=16))
        st = call(lambda: c.get_system_shared_memory_status() if proto == "http" else c.get_system_shared_memory_status(as_json=True))
        ans["status"] = st
        i1 = mod.InferInput("x1", [2, 2], "FP32")
        i1.set_shared_memory("dp_in", 16)
        i2 = mod.InferInput("x2", [2, 2], "FP32")
        i2.set_shared_memory("dp_in", 16, offset=16)
        o = mod.InferRequestedOutput("y")
        o.set_shared_memory("dp_out", 16)
        r = call(lambda: c.infer("add", [i1, i2], outputs=[o]))
        if isinstance(r, dict):
            ans["infer"] = r
        else:
            ans["infer"] = r.get_response() if proto == "http" else r.get_response(as_json=True)
            ans["out_values"] = shm.get_contents_as_numpy(hout, np.float32, [2, 2]).reshape(-1).tolist()
        # output region too small
        o2 = mod.InferRequestedOutput("y")
        o2.set_shared_memory("dp_out", 8)
        ans["infer_out_too_small"] = call(lambda: (lambda r: r.get_response() if proto == "http" else r.get_response(as_json=True))(
            c.infer("add", [i1, i2], outputs=[o2])))
        # input beyond the region
        i3 = mod.InferInput("x2", [2, 2], "FP32")
        i3.set_shared_memory("dp_in", 16, offset=24)
        ans["infer_in_beyond"] = call(lambda: (lambda r: r.get_response() if proto == "http" else r.get_response(as_json=True))(
            c.infer("add", [i1, i3])))
        # input size not the tensor's
        i4 = mod.InferInput("x2", [2, 2], "FP32")
        i4.set_shared_memory("dp_in", 12)
        ans["infer_in_wrong_size"] = call(lambda: (lambda r: r.get_response() if proto == "http" else r.get_response(as_json=True))(
            c.infer("add", [i1, i4])))
        # unregistered region
        i5 = mod.InferInput("x2", [2, 2], "FP32")
        i5.set_shared_memory("nope_region", 16)
        ans["infer_unregistered"] = call(lambda: (lambda r: r.get_response() if proto == "http" else r.get_response(as_json=True))(
            c.infer("add", [i1, i5])))
        ans["register_dup_name"] = call(lambda: c.register_system_shared_memory("dp_in", key_in, 32))
        ans["register_bad_key"] = call(lambda: c.register_system_shared_memory("dp_bad", "/dp_no_such_key_x", 32))
        ans["register_offset_beyond"] = call(lambda: c.register_system_shared_memory("dp_off", key_in, 16, offset=4096 * 4))
        ans["register_size_beyond"] = call(lambda: c.register_system_shared_memory("dp_big", key_in, 1 << 20))
        ans["register_same_key_new_name_after_failures"] = call(lambda: c.register_system_shared_memory("dp_in2", key_in, 32))
        ans["status_one"] = call(lambda: c.get_system_shared_memory_status("dp_in") if proto == "http" else c.get_system_shared_memory_status("dp_in", as_json=True))
        ans["status_unknown"] = call(lambda: c.get_system_shared_memory_status("nope") if proto == "http" else c.get_system_shared_memory_status("nope", as_json=True))
        ans["unregister_one"] = call(lambda: c.unregister_system_shared_memory("dp_in"))
        ans["unregister_unknown"] = call(lambda: c.unregister_system_shared_memory("nope"))
        ans["unregister_all"] = call(lambda: c.unregister_system_shared_memory())
        ans["status_after"] = call(lambda: c.get_system_shared_memory_status() if proto == "http" else c.get_system_shared_memory_status(as_json=True))
    finally:
        call(lambda: c.unregister_system_shared_memory())
        shm.destroy_shared_memory_region(hin_)
        shm.destroy_shared_memory_region(hout)
    return ans


probe("shm", "system shm register/status/infer/unregister over http")(lambda s: _shm_infer(s, "http"))
probe("shm", "system shm register/status/infer/unregister over grpc")(lambda s: _shm_infer(s, "grpc"))


@probe("shm", "register: same key twice (two names); offset 16 (not page-aligned)")
def _(s):
    import tritonclient.utils.shared_memory as shm
    key = _shm_key("twice")
    hnd = shm.create_shared_memory_region("dp_t", key, 8192)
    try:
        return {"first": call(lambda: s.hc.register_system_shared_memory("dp_t1", key, 32)),
                "same_key_second_name": call(lambda: s.hc.register_system_shared_memory("dp_t2", key, 32)),
                "unregister_all": call(lambda: s.hc.unregister_system_shared_memory()),
                "offset_16": call(lambda: s.gc.register_system_shared_memory("dp_t3", key, 16, offset=16)),
                "offset_4096": call(lambda: s.gc.register_system_shared_memory("dp_t4", key, 16, offset=4096)),
                "status": call(lambda: s.gc.get_system_shared_memory_status(as_json=True))}
    finally:
        call(lambda: s.hc.unregister_system_shared_memory())
        shm.destroy_shared_memory_region(hnd)


@probe("shm", "raw HTTP shm register body variants")
def _(s):
    import tritonclient.utils.shared_memory as shm
    key = _shm_key("raw")
    hnd = shm.create_shared_memory_region("dp_raw", key, 64)
    try:
        out = {
            "missing_key": raw_http(s, "POST", "/v2/systemsharedmemory/region/dp_raw/register", {"byte_size": 64}),
            "byte_size_string": raw_http(s, "POST", "/v2/systemsharedmemory/region/dp_raw/register", {"key": key, "byte_size": "64"}),
            "ok": raw_http(s, "POST", "/v2/systemsharedmemory/region/dp_raw/register", {"key": key, "offset": 0, "byte_size": 64}),
            "status": raw_http(s, "GET", "/v2/systemsharedmemory/status"),
            "status_region": raw_http(s, "GET", "/v2/systemsharedmemory/region/dp_raw/status"),
            "unregister": raw_http(s, "POST", "/v2/systemsharedmemory/region/dp_raw/unregister"),
            "unregister_all": raw_http(s, "POST", "/v2/systemsharedmemory/unregister"),
            "GET_register": raw_http(s, "GET", "/v2/systemsharedmemory/region/dp_raw/register"),
        }
    finally:
        raw_http(s, "POST", "/v2/systemsharedmemory/unregister")
        shm.destroy_shared_memory_region(hnd)
    return out


@probe("shm", "raw JSON infer with shared_memory params on output only")
def _(s):
    import tritonclient.utils.shared_memory as shm
    key = _shm_key("o")
    hnd = shm.create_shared_memory_region("dp_o", key, 16)
    try:
        reg = call(lambda: s.hc.register_system_shared_memory("dp_o", key, 16))
        r = raw_http(s, "POST", "/v2/models/add/infer", add_json(outputs=[{"name": "y", "parameters": {
            "shared_memory_region": "dp_o", "shared_memory_byte_size": 16}}]))
        vals = shm.get_contents_as_numpy(hnd, np.float32, [4]).tolist()
        return {"register": reg, "infer": r, "region_values": vals}
    finally:
        call(lambda: s.hc.unregister_system_shared_memory())
        shm.destroy_shared_memory_region(hnd)

# ---- CUDA shared memory


@probe("cudashm", "cuda shm status http/grpc")
def _(s):
    return {"http": call(lambda: s.hc.get_cuda_shared_memory_status()),
            "grpc": call(lambda: s.gc.get_cuda_shared_memory_status(as_json=True))}


@probe("cudashm", "cuda shm register bogus handle http/grpc")
def _(s):
    return {"http": call(lambda: s.hc.register_cuda_shared_memory("dp_cuda", b"\0" * 64, 0, 64)),
            "grpc": call(lambda: s.gc.register_cuda_shared_memory("dp_cuda", b"\0" * 64, 0, 64))}


@probe("cudashm", "cuda shm unregister (all / unknown) http/grpc")
def _(s):
    return {"http_all": call(lambda: s.hc.unregister_cuda_shared_memory()),
            "http_one": call(lambda: s.hc.unregister_cuda_shared_memory("nope")),
            "grpc_all": call(lambda: s.gc.unregister_cuda_shared_memory()),
            "grpc_one": call(lambda: s.gc.unregister_cuda_shared_memory("nope")),
            "http_status_one": call(lambda: s.hc.get_cuda_shared_memory_status("nope"))}


probe("cudashm", "raw GET /v2/cudasharedmemory/status")(lambda s: raw_http(s, "GET", "/v2/cudasharedmemory/status"))

# ---- trace / logging


@probe("trace", "trace settings get (global, model) http/grpc")
def _(s):
    return {"http": call(lambda: s.hc.get_trace_settings()),
            "http_model": call(lambda: s.hc.get_trace_settings("add")),
            "grpc": call(lambda: s.gc.get_trace_settings(as_json=True)),
            "grpc_model": call(lambda: s.gc.get_trace_settings("add", as_json=True))}


@probe("trace", "trace settings update (model add trace_rate 1000) http/grpc")
def _(s):
    return {"http": call(lambda: s.hc.update_trace_settings("add", {"trace_rate": "1000"})),
            "grpc": call(lambda: s.gc.update_trace_settings("add", {"trace_rate": "1000"}, as_json=True)),
            "http_clear": call(lambda: s.hc.update_trace_settings("add", {"trace_rate": None})),
            "http_bad": call(lambda: s.hc.update_trace_settings(settings={"trace_level": ["BOGUS"]}))}


@probe("trace", "log settings get/update http/grpc")
def _(s):
    return {"http": call(lambda: s.hc.get_log_settings()),
            "grpc": call(lambda: s.gc.get_log_settings(as_json=True)),
            "http_update": call(lambda: s.hc.update_log_settings({"log_verbose_level": 0})),
            "grpc_update": call(lambda: s.gc.update_log_settings({"log_verbose_level": 0}, as_json=True)),
            "http_bad": call(lambda: s.hc.update_log_settings({"log_verbose_level": "loud"}))}

# ---- streaming


@probe("stream", "grpc stream: good, bad (unknown model), bad (wrong shape), good with empty final")
def _(s):
    import tritonclient.grpc as grpcclient
    c = grpcclient.InferenceServerClient(s.grpc)
    got = []
    done = threading.Event()

    def cb(result, error):
        if error is not None:
            got.append(exc_answer(error))
        else:
            r = result.get_response(as_json=True)
            got.append({"response": r})
        if len(got) >= 5:
            done.set()

    try:
        c.start_stream(callback=cb)
        c.async_stream_infer("add", [gin("x1", A22, "FP32"), gin("x2", B22, "FP32")], request_id="s1")
        c.async_stream_infer("nope", [gin("x1", A22, "FP32")], request_id="s2")
        c.async_stream_infer("add", [gin("x1", A22.reshape(4), "FP32"), gin("x2", B22, "FP32")], request_id="s3")
        c.async_stream_infer("add", [gin("x1", A22, "FP32"), gin("x2", B22, "FP32")], request_id="s4",
                             enable_empty_final_response=True)
        done.wait(10)
        time.sleep(0.5)
        c.stop_stream()
    except Exception as e:  # noqa: BLE001
        got.append(exc_answer(e))
    finally:
        c.close()
    return {"n": len(got), "messages": got}


@probe("stream", "grpc raw stream: typed + unknown output + empty model")
def _(s):
    import tritonclient.grpc.service_pb2 as pb  # noqa: F401
    from google.protobuf.json_format import MessageToDict
    reqs = [typed_request("add", [("x1", [2, 2], "FP32", "fp32_contents", [1, 2, 3, 4]),
                                  ("x2", [2, 2], "FP32", "fp32_contents", [1, 1, 1, 1])], id="t1"),
            typed_request("add", [("x1", [2, 2], "FP32", "fp32_contents", [1, 2, 3, 4]),
                                  ("x2", [2, 2], "FP32", "fp32_contents", [1, 1, 1, 1])], outputs=["zz"], id="t2"),
            typed_request("", [], id="t3")]
    out = []
    try:
        for m in s.stub.ModelStreamInfer(iter(reqs), timeout=20):
            d = MessageToDict(m, preserving_proto_field_name=True)
            out.append(d)
    except Exception as e:  # noqa: BLE001
        out.append({"rpc_error": str(getattr(e, "code", lambda: "")()), "details": getattr(e, "details", lambda: str(e))()})
    return {"messages": out}

# ---- http misc


for _m, _p in (("GET", "/v2/nope"), ("GET", "/v2/models/add/infer"), ("PUT", "/v2/models/add/infer"),
               ("POST", "/v2/health/live"), ("GET", "/v2/models"), ("GET", "/v2/models/add/versions/"),
               ("GET", "/v2/models/add/config?x=1"), ("GET", "/v2/models//ready"), ("GET", "/"),
               ("GET", "/v2/models/add/versions/1/config"), ("GET", "/v2/repository/index"),
               ("OPTIONS", "/v2/models/add/infer"), ("HEAD", "/v2/health/ready"),
               ("GET", "/v2/models/a%2Fb/ready"), ("GET", "/v2/models/add%20x/ready"), ("GET", "/metrics")):
    probe("http_misc", f"raw {_m} {_p}")(lambda s, m=_m, p=_p: raw_http(s, m, p))

probe("http_misc", "raw POST infer body 'Transfer-Encoding: chunked' JSON")(
    lambda s: _chunked(s, "/v2/models/add/infer", json.dumps(add_json()).encode()))


def _chunked(s, path, body):
    host, port = s.http.rsplit(":", 1)
    conn = http.client.HTTPConnection(host, int(port), timeout=30)
    try:
        conn.request("POST", path, body=iter([body[:10], body[10:]]), headers={"Content-Type": "application/json"},
                     encode_chunked=True)
        r = conn.getresponse()
        data = r.read()
        return {"status": r.status, "body": data.decode(errors="replace")[:500]}
    except Exception as e:  # noqa: BLE001
        return {"error": str(e)}
    finally:
        conn.close()

# ---- repository (last: it loads/unloads)


@probe("repository", "index http/grpc (sorted)")
def _(s):
    def srt(x):
        if isinstance(x, list):
            return sorted(x, key=lambda m: (m.get("name", ""), str(m.get("version", ""))))
        if isinstance(x, dict) and "models" in x:
            return dict(x, models=srt(x["models"]))
        return x
    return {"http": srt(call(lambda: s.hc.get_model_repository_index())),
            "grpc": srt(call(lambda: s.gc.get_model_repository_index(as_json=True)))}


probe("repository", "raw POST /v2/repository/index {ready:true}")(
    lambda s: (lambda r: dict(r, json=sorted(r["json"], key=lambda m: (m.get("name", ""), str(m.get("version", ""))))
                              if isinstance(r.get("json"), list) else r.get("json")))(
        raw_http(s, "POST", "/v2/repository/index", {"ready": True})))
probe("repository", "raw POST /v2/repository/index (no body)")(
    lambda s: (lambda r: dict(r, json=sorted(r["json"], key=lambda m: (m.get("name", ""), str(m.get("version", ""))))
                              if isinstance(r.get("json"), list) else r.get("json")))(
        raw_http(s, "POST", "/v2/repository/index")))
probe("repository", "raw GET /v2/repository/index")(lambda s: raw_http(s, "GET", "/v2/repository/index"))


@probe("repository", "unload multi_output, then ready/metadata/infer/index, then load")
def _(s):
    out = {}
    out["http_unload"] = call(lambda: s.hc.unload_model("multi_output"))
    # Triton unloads in the background (the index says UNLOADING for a
    # while): wait until it is done, so that what is compared is the end.
    for _ in range(100):
        idx = call(lambda: s.hc.get_model_repository_index())
        if not (isinstance(idx, list) and any(m.get("name") == "multi_output" and m.get("state") == "UNLOADING"
                                              for m in idx)):
            break
        time.sleep(0.1)
    out["ready"] = call(lambda: s.hc.is_model_ready("multi_output"))
    out["metadata"] = call(lambda: s.hc.get_model_metadata("multi_output"))
    out["grpc_metadata"] = call(lambda: s.gc.get_model_metadata("multi_output", as_json=True))
    out["infer"] = raw_http(s, "POST", "/v2/models/multi_output/infer",
                            {"inputs": [{"name": "x", "shape": [1], "datatype": "FP32", "data": [1]}]})
    idx = call(lambda: s.hc.get_model_repository_index())
    out["index_entry"] = [m for m in idx if m.get("name") == "multi_output"] if isinstance(idx, list) else idx
    out["grpc_unload_again"] = call(lambda: s.gc.unload_model("multi_output"))
    out["grpc_load"] = call(lambda: s.gc.load_model("multi_output"))
    out["ready_after_load"] = call(lambda: s.hc.is_model_ready("multi_output"))
    idx = call(lambda: s.hc.get_model_repository_index())
    out["index_entry_after"] = [m for m in idx if m.get("name") == "multi_output"] if isinstance(idx, list) else idx
    return out


@probe("repository", "load already-loaded add, load unknown, unload unknown")
def _(s):
    return {"http_load_add": call(lambda: s.hc.load_model("add")),
            "grpc_load_add": call(lambda: s.gc.load_model("add")),
            "http_load_nope": call(lambda: s.hc.load_model("nope")),
            "grpc_load_nope": call(lambda: s.gc.load_model("nope")),
            "http_unload_nope": call(lambda: s.hc.unload_model("nope")),
            "grpc_unload_nope": call(lambda: s.gc.unload_model("nope"))}


@probe("repository", "load with config override (max_batch_size change) and bad config JSON")
def _(s):
    out = {}
    cfg = call(lambda: s.hc.get_model_config("identity_string"))
    out["http_load_bad_json"] = call(lambda: s.hc.load_model("identity_string", config="{not json"))
    if isinstance(cfg, dict) and "error" not in cfg:
        override = {"name": "identity_string", "max_batch_size": 0,
                    "input": cfg.get("input"), "output": cfg.get("output"),
                    "parameters": {"dp": {"string_value": "1"}}}
        if cfg.get("backend"):
            override["backend"] = cfg["backend"]
        if cfg.get("platform"):
            override["platform"] = cfg["platform"]
        out["http_load_override"] = call(lambda: s.hc.load_model("identity_string", config=json.dumps(override)))
        c2 = call(lambda: s.hc.get_model_config("identity_string"))
        out["config_after_override.parameters"] = c2.get("parameters") if isinstance(c2, dict) else c2
        out["http_load_plain"] = call(lambda: s.hc.load_model("identity_string"))
    out["raw_load_unknown_param"] = raw_http(s, "POST", "/v2/repository/models/identity_string/load",
                                             {"parameters": {"bogus": 1}})
    out["raw_unload_unload_dependents"] = raw_http(s, "POST", "/v2/repository/models/nope/unload",
                                                   {"parameters": {"unload_dependents": True}})
    out["ready_end"] = call(lambda: s.hc.is_model_ready("identity_string"))
    return out


SECTIONS = ["server", "health", "metadata", "config", "infer", "infer_bad", "classify", "params",
            "stats", "shm", "cudashm", "trace", "stream", "http_misc", "repository", "ensemble",
            "sequence", "cache", "bls"]
# Probes that kill Triton 2.51; never in the default list.
EXTRA_SECTIONS = ["crash"]

# ---- ensembles: ensemble_add runs add_batch twice

ENS_A = np.array([[1, 2], [3, 4]], np.float32)
ENS_B = np.array([[0.5, -1], [10, 0]], np.float32)

probe("ensemble", "raw GET /v2/models/ensemble_add")(lambda s: raw_http(s, "GET", "/v2/models/ensemble_add"))
probe("ensemble", "raw GET /v2/models/ensemble_add/ready")(
    lambda s: raw_http(s, "GET", "/v2/models/ensemble_add/ready"))


@probe("ensemble", "grpc model metadata ensemble_add")
def _(s):
    return call(lambda: s.gc.get_model_metadata("ensemble_add", as_json=True))


@probe("ensemble", "http client infer ensemble_add (2 rows)")
def _(s):
    return call(lambda: h_infer_answer(s.hc.infer(
        "ensemble_add", [hin("A", ENS_A, "FP32"), hin("B", ENS_B, "FP32")])))


@probe("ensemble", "grpc client infer ensemble_add (2 rows)")
def _(s):
    return call(lambda: g_infer_answer(s.gc.infer(
        "ensemble_add", [gin("A", ENS_A, "FP32"), gin("B", ENS_B, "FP32")])))


@probe("ensemble", "raw JSON ensemble_add wrong datatype")
def _(s):
    return raw_http(s, "POST", "/v2/models/ensemble_add/infer", {"inputs": [
        {"name": "A", "shape": [1, 2], "datatype": "INT32", "data": [1, 2]},
        {"name": "B", "shape": [1, 2], "datatype": "FP32", "data": [1, 2]}]})


@probe("ensemble", "raw JSON ensemble_add missing input")
def _(s):
    return raw_http(s, "POST", "/v2/models/ensemble_add/infer", {"inputs": [
        {"name": "A", "shape": [1, 2], "datatype": "FP32", "data": [1, 2]}]})


@probe("ensemble", "http client ensemble_add statistics after the inferences")
def _(s):
    r = call(lambda: s.hc.get_inference_statistics("ensemble_add"))
    if not isinstance(r, dict):
        return r
    st = r["model_stats"][0]
    return {"name": st["name"], "version": st["version"],
            "success": st["inference_stats"]["success"]["count"],
            "fail": st["inference_stats"]["fail"]["count"],
            "inference_count": st.get("inference_count"), "execution_count": st.get("execution_count"),
            "has_last_inference": int(st.get("last_inference", 0)) > 0}


# ---- the response cache: add_cached, twice the same request, then another

CACHE_X = np.array([[1, 2], [3, 4]], np.float32)
CACHE_Y = np.array([[5, 6]], np.float32)


def cache_stats(s):
    r = call(lambda: s.hc.get_inference_statistics("add_cached"))
    if not isinstance(r, dict) or "model_stats" not in r:
        return r
    st = r["model_stats"][0]
    i = st["inference_stats"]
    return {"success": i["success"]["count"], "fail": i["fail"]["count"],
            "cache_hit": i.get("cache_hit", {}).get("count", 0),
            "cache_miss": i.get("cache_miss", {}).get("count", 0),
            "has_cache_hit_ns": int(i.get("cache_hit", {}).get("ns", 0)) > 0,
            "has_cache_miss_ns": int(i.get("cache_miss", {}).get("ns", 0)) > 0,
            "inference_count": st.get("inference_count"), "execution_count": st.get("execution_count")}


@probe("cache", "add_cached: X, X again (http, then grpc), Y; answers and statistics")
def _(s):
    def h(x):
        return call(lambda: h_infer_answer(s.hc.infer("add_cached", [hin("x1", x, "FP32"), hin("x2", x, "FP32")])))

    def g(x):
        return call(lambda: g_infer_answer(s.gc.infer("add_cached", [gin("x1", x, "FP32"), gin("x2", x, "FP32")])))
    out = {"first": h(CACHE_X), "again_http": h(CACHE_X), "again_grpc": g(CACHE_X), "other": h(CACHE_Y)}
    time.sleep(0.2)
    out["stats"] = cache_stats(s)
    return out


@probe("cache", "add_cached: the same inputs with another request id and parameter")
def _(s):
    r1 = call(lambda: h_infer_answer(s.hc.infer(
        "add_cached", [hin("x1", CACHE_Y, "FP32"), hin("x2", CACHE_Y, "FP32")], request_id="r-1")))
    r2 = call(lambda: h_infer_answer(s.hc.infer(
        "add_cached", [hin("x1", CACHE_Y, "FP32"), hin("x2", CACHE_Y, "FP32")], request_id="r-2",
        parameters={"custom": "a"})))
    time.sleep(0.2)
    return {"with_id": r1, "with_parameter": r2, "stats": cache_stats(s)}


# ---- BLS: bls_stream reads a decoupled model's responses with
# exec(decoupled=True)

probe("bls", "raw JSON bls_stream: bls_repeat's responses and add's, by BLS")(
    lambda s: raw_http(s, "POST", "/v2/models/bls_stream/infer", {
        "inputs": [{"name": "IN", "datatype": "INT32", "shape": [3], "data": [4, 5, 6]}]}))


# ---- sequences: seq_acc, a Python accumulator with START/END/READY/CORRID


def seq_in(v, client):
    arr = np.array([[v]], np.int32)
    return hin("INPUT", arr, "INT32") if client == "http" else gin("INPUT", arr, "INT32")


def seq_run(s, client, sid, values):
    c = s.hc if client == "http" else s.gc
    answer = h_infer_answer if client == "http" else g_infer_answer
    out = []
    for k, v in enumerate(values):
        out.append(call(lambda: answer(c.infer(
            "seq_acc", [seq_in(v, client)], sequence_id=sid,
            sequence_start=k == 0, sequence_end=k == len(values) - 1))))
    return out


probe("sequence", "raw GET /v2/models/seq_acc")(lambda s: raw_http(s, "GET", "/v2/models/seq_acc"))
probe("sequence", "raw GET /v2/models/seq_acc/config")(
    lambda s: raw_http(s, "GET", "/v2/models/seq_acc/config"))
probe("sequence", "http client sequence 101: 4 requests, START to END")(
    lambda s: seq_run(s, "http", 101, [1, 2, 3, 4]))
probe("sequence", "grpc client sequence 102: 3 requests, START to END")(
    lambda s: seq_run(s, "grpc", 102, [5, 6, 7]))


@probe("sequence", "raw JSON seq_acc sequences: none, 0, not started, two rows, ended")
def _(s):
    def post(params, rows=1):
        return raw_http(s, "POST", "/v2/models/seq_acc/infer", {
            "inputs": [{"name": "INPUT", "datatype": "INT32", "shape": [rows, 1], "data": [1] * rows}],
            "parameters": params})
    return {
        "none": post({}),
        "zero": post({"sequence_id": 0, "sequence_start": True}),
        "not_started": post({"sequence_id": 555}),
        "two_rows": post({"sequence_id": 556, "sequence_start": True}, rows=2),
        "start_end": post({"sequence_id": 557, "sequence_start": True, "sequence_end": True}),
        "after_end": post({"sequence_id": 557}),
        "bool_id": post({"sequence_id": True, "sequence_start": True, "sequence_end": True}),
    }


@probe("sequence", "raw JSON seq_acc: a string correlation ID")
def _(s):
    def post(params, v):
        return raw_http(s, "POST", "/v2/models/seq_acc/infer", {
            "inputs": [{"name": "INPUT", "datatype": "INT32", "shape": [1, 1], "data": [v]}],
            "parameters": params})
    return [post({"sequence_id": "s-1", "sequence_start": True}, 3),
            post({"sequence_id": "s-1", "sequence_end": True}, 4)]


@probe("sequence", "grpc stream: two sequences interleaved")
def _(s):
    import tritonclient.grpc as grpcclient
    c = grpcclient.InferenceServerClient(s.grpc)
    got = {}
    done = threading.Event()

    def cb(result, error):
        if error is not None:
            got[len(got)] = exc_answer(error)
        else:
            r = result.get_response(as_json=True)
            got[r.get("id")] = {"response": r, "OUTPUT": np_value(result.as_numpy("OUTPUT"))}
        if len(got) >= 6:
            done.set()

    try:
        c.start_stream(callback=cb)
        for k in range(3):
            for sid in (201, 202):
                c.async_stream_infer("seq_acc", [seq_in(sid + k, "grpc")], request_id=f"{sid}-{k}",
                                     sequence_id=sid, sequence_start=k == 0, sequence_end=k == 2)
        done.wait(10)
        c.stop_stream()
    except Exception as e:  # noqa: BLE001
        got["error"] = exc_answer(e)
    finally:
        c.close()
    return got


# --------------------------------------------------------------------------
# comparison


def flatten(x, prefix="", out=None):
    if out is None:
        out = {}
    if isinstance(x, dict):
        if not x:
            out[prefix or "."] = "{}"
        for k in sorted(x):
            flatten(x[k], f"{prefix}.{k}" if prefix else str(k), out)
    elif isinstance(x, list) and any(isinstance(v, (dict, list)) for v in x):
        if not x:
            out[prefix] = "[]"
        for i, v in enumerate(x):
            flatten(v, f"{prefix}[{i}]", out)
    else:
        out[prefix or "."] = x
    return out


def show(v, width):
    t = json.dumps(v, ensure_ascii=False, default=str) if not isinstance(v, str) else v
    t = t.replace("\n", "\\n")
    return t if len(t) <= width else t[:width] + f"...(+{len(t) - width})"


def mask(path, v):
    if STAT_MASK.search(path) and isinstance(v, (int, float, str)) and path.split(".")[0] not in ("error",):
        if re.search(r"(ns|last_inference)", path):
            return "<masked>"
    if path.endswith("headers.date") or path.endswith("headers.content-length"):
        return "<masked>"
    return v


class Expected:
    """The differences a run may show: `differences.toml`'s entries, each a
    probe pattern, a field pattern, optionally a pattern for each side's
    value (keys named by the sides' labels), a kind and a reason. A field
    that differs and matches no entry is unexpected; an entry that matches
    nothing in a run of every default section is stale (the difference is
    gone: remove it, and its row in docs/server.md)."""

    KINDS = ("setup", "deliberate", "pending")

    def __init__(self, paths, labels):
        import tomllib
        self.entries = []
        for path in paths:
            with open(path, "rb") as f:
                doc = tomllib.load(f)
            self._read(path, doc, labels)

    def _read(self, path, doc, labels):
        for i, e in enumerate(doc.get("difference", [])):
            where = f"{path}: difference {i + 1}"
            missing = [k for k in ("probe", "field", "kind", "reason") if not e.get(k)]
            if missing:
                raise ValueError(f"{where} lacks {missing}")
            if e["kind"] not in self.KINDS:
                raise ValueError(f"{where}: kind {e['kind']!r} is not one of {self.KINDS}")
            unknown = set(e) - {"probe", "field", "kind", "reason", *labels}
            if unknown:
                raise ValueError(f"{where}: unknown keys {sorted(unknown)}")
            self.entries.append({
                "entry": e, "hits": 0,
                "probe": re.compile(e["probe"]), "field": re.compile(e["field"]),
                "values": {side: re.compile(e[side], re.S) for side in labels if side in e},
            })

    def match(self, probe, field, values):
        """The first entry that explains `field` of `probe` with `values`
        (label -> value), counted; None when none does."""
        for x in self.entries:
            if not (x["probe"].search(probe) and x["field"].search(field)):
                continue
            if all(rx.fullmatch(show(values[side], 10 ** 9)) for side, rx in x["values"].items()):
                x["hits"] += 1
                return x["entry"]
        return None

    def stale(self, unused_ok=()):
        return [x["entry"] for x in self.entries if x["hits"] == 0 and x["entry"]["kind"] not in unused_ok]


def port_open(hostport):
    import socket
    host, port = hostport.rsplit(":", 1)
    try:
        socket.create_connection((host, int(port)), timeout=2).close()
        return True
    except OSError:
        return False


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("repos", help="write the two model repositories")
    r.add_argument("--suite", required=True, help="`conformance models --layout triton` output (ONNX files)")
    r.add_argument("--out", required=True)
    p = sub.add_parser("probe", help="run the battery against A and B")
    for side in ("a", "b"):
        p.add_argument(f"--{side}-http", required=True, help="host:port")
        p.add_argument(f"--{side}-grpc", required=True, help="host:port")
        p.add_argument(f"--{side}-name", default=side.upper())
    p.add_argument("--sections", default=",".join(SECTIONS))
    p.add_argument("--json", help="write every answer of both servers here")
    p.add_argument("--width", type=int, default=300, help="truncate shown values to this many characters")
    p.add_argument("--show-same", action="store_true", help="also list probes whose answers agree")
    p.add_argument("--expect", action="append", default=[],
                   help="differences.toml (repeatable): fail (exit 1) on any difference they do not list, "
                   "and on any entry no difference matched")
    p.add_argument("--unused-ok", action="append", default=[],
                   help="a kind of entry that may match nothing (repeatable), e.g. setup when both run the same models")
    p.add_argument("--ignore", action="append", default=[],
                   help="regex on flattened paths to leave out of the comparison (repeatable), e.g. 'headers\\.vary$'")
    args = ap.parse_args()
    if args.cmd == "repos":
        write_repos(args.suite, args.out)
        return 0

    sections = [x for x in args.sections.split(",") if x]
    bad = [x for x in sections if x not in SECTIONS + EXTRA_SECTIONS]
    if bad:
        print(f"unknown sections {bad}; known: {SECTIONS}", file=sys.stderr)
        return 1
    a = Side(args.a_name, args.a_http, args.a_grpc)
    b = Side(args.b_name, args.b_http, args.b_grpc)
    expected = Expected(args.expect, (a.label, b.label)) if args.expect else None
    expect_names = ", ".join(args.expect)
    unexpected = []
    kinds = {}
    record = []
    ndiff = 0
    down = set()
    for section in sections:
        print(f"\n=============== section {section}")
        for sec, name, fn in PROBES:
            if sec != section:
                continue
            answers = []
            for side in (a, b):
                try:
                    answers.append(fn(side))
                except Exception:  # noqa: BLE001  a bug in the probe, not a server answer
                    answers.append({"probe_crashed": traceback.format_exc(limit=3)})
            record.append({"section": sec, "probe": name, a.label: answers[0], b.label: answers[1]})
            for side in (a, b):
                if side.label not in down and not port_open(side.http):
                    down.add(side.label)
                    print(f"\n!!! {side.label} stopped answering (HTTP port closed) after probe [{sec}] {name}")
            fa = {k: mask(k, v) for k, v in flatten(answers[0]).items()}
            fb = {k: mask(k, v) for k, v in flatten(answers[1]).items()}
            keys = sorted(k for k in set(fa) | set(fb) if not any(re.search(r, k) for r in args.ignore))
            diffs = [(k, fa.get(k, "<absent>"), fb.get(k, "<absent>")) for k in keys
                     if fa.get(k, "<absent>") != fb.get(k, "<absent>")]
            if not diffs:
                if args.show_same:
                    print(f"  SAME  {name}")
                continue
            ndiff += 1
            print(f"\n--- DIFF [{sec}] {name}  ({len(diffs)} field(s))")
            for k, va, vb in diffs:
                mark = ""
                if expected:
                    e = expected.match(f"[{sec}] {name}", k, {a.label: va, b.label: vb})
                    if e is None:
                        unexpected.append((f"[{sec}] {name}", k, va, vb))
                        mark = "  <-- UNEXPECTED"
                    else:
                        kinds[e["kind"]] = kinds.get(e["kind"], 0) + 1
                        mark = f"  ({e['kind']})"
                print(f"    {k}{mark}")
                print(f"      {a.label:>7}: {show(va, args.width)}")
                print(f"      {b.label:>7}: {show(vb, args.width)}")
    print(f"\n{ndiff} probe(s) differ out of {sum(1 for s, *_ in PROBES if s in sections)}")
    if down:
        print(f"servers that went down during the run: {sorted(down)}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(record, f, indent=1, default=str, ensure_ascii=False)
    a.close()
    b.close()
    if not expected:
        return 0
    failed = bool(down)
    print(f"\nexpected differences by kind: {kinds}")
    if unexpected:
        failed = True
        print(f"\n{len(unexpected)} difference(s) that {expect_names} does not list:")
        for probe, k, va, vb in unexpected:
            print(f"  {probe} :: {k}\n      {a.label}: {show(va, 200)}\n      {b.label}: {show(vb, 200)}")
    if set(SECTIONS) <= set(sections):
        stale = expected.stale(args.unused_ok)
        if stale:
            failed = True
            print(f"\n{len(stale)} entr(ies) of {expect_names} that no difference matched (gone: remove them):")
            for e in stale:
                print(f"  probe {e['probe']!r} field {e['field']!r}: {e['reason']}")
    print("differential: " + ("FAILED" if failed else "every difference is listed"))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
