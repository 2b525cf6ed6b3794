"""Triton's protocol extensions, driven by NVIDIA's own tritonclient.

Server A serves a repository (Triton models `identity` and `rows` with
config.pbtxt, servable.toml model `adder`) with --allow-shared-memory and
gzip gRPC replies; server B is the demo with shared memory off.

Usage: triton_extensions.py GRPC_A REST_A GRPC_B REST_B
Exits non-zero on the first mismatch.
"""

import os
import queue
import sys
import threading

import numpy as np
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
import tritonclient.utils.shared_memory as shm
from tritonclient.utils import InferenceServerException


def check(cond, what):
    if not cond:
        raise SystemExit(f"FAILED: {what}")
    print(f"ok: {what}")


def raises(f, text, what):
    try:
        f()
    except InferenceServerException as e:
        check(text in str(e), f"{what}: {e}")
        return e
    raise SystemExit(f"FAILED: {what}: no error")


GRPC_A, REST_A, GRPC_B, REST_B = sys.argv[1:5]
g = grpcclient.InferenceServerClient(url=GRPC_A)
h = httpclient.InferenceServerClient(url=REST_A, concurrency=32)
gb = grpcclient.InferenceServerClient(url=GRPC_B)
hb = httpclient.InferenceServerClient(url=REST_B)


def rows_inputs(mod, x):
    i = mod.InferInput("x", list(x.shape), "FP32")
    i.set_data_from_numpy(x)
    return [i]


# -- extensions listed exactly -------------------------------------------------
base = ["binary_tensor_data", "classification", "logging", "model_configuration", "model_repository",
        "model_repository(unload_dependents)", "parameters",
        "schedule_policy", "sequence", "statistics", "trace"]
check(sorted(g.get_server_metadata().extensions) == sorted(base + ["system_shared_memory"]),
      "gRPC server metadata lists the extensions served, shared memory on")
check(sorted(h.get_server_metadata()["extensions"]) == sorted(base + ["system_shared_memory"]),
      "REST server metadata lists the extensions served, shared memory on")
check(sorted(gb.get_server_metadata().extensions) == sorted(base), "gRPC: shared memory off is not listed")
check(sorted(hb.get_server_metadata()["extensions"]) == sorted(base), "REST: shared memory off is not listed")

# -- model configuration: both formats, both transports ------------------------
cfg = g.get_model_config("rows", as_json=True)["config"]
check(cfg["name"] == "rows" and int(cfg["max_batch_size"]) == 32, "gRPC config of a config.pbtxt model")
check(int(cfg["dynamic_batching"]["max_queue_delay_microseconds"]) == 50000, "gRPC config keeps dynamic_batching")
check(cfg["input"][0]["dims"] == ["10"] and cfg["input"][0]["data_type"] == "TYPE_FP32",
      "gRPC config inputs (protobuf JSON: int64 as strings)")
rcfg = h.get_model_config("rows")
check(rcfg["max_batch_size"] == 32 and rcfg["input"][0]["dims"] == [10], "REST config of a config.pbtxt model")
check(rcfg["platform"] == "onnxruntime_onnx" and rcfg["backend"] == "onnxruntime", "REST config platform and backend")
check(rcfg["instance_group"][0]["kind"] == "KIND_CPU", "REST config completed with the instance group")
ident = h.get_model_config("identity")
check(ident["max_batch_size"] == 0 and ident["input"][0]["dims"] == [-1], "REST config without batching says max_batch_size 0")
adder = h.get_model_config("adder")
check(adder["max_batch_size"] == 8 and adder["input"][0]["dims"] == [4], "REST config of a servable.toml model")
check(adder["dynamic_batching"]["max_queue_delay_microseconds"] == 1000, "servable.toml batching as dynamic_batching")
gadder = g.get_model_config("adder").config
check(gadder.max_batch_size == 8 and list(gadder.output[0].dims) == [4], "gRPC config of a servable.toml model")
demo = hb.get_model_config("add")
check([i["name"] for i in demo["input"]] == ["x1", "x2"] and demo["max_batch_size"] == 0, "REST config of the demo servable")
check(h.get_model_config("rows", model_version="1")["name"] == "rows", "REST versioned config route")
raises(lambda: g.get_model_config("nope"), "not found", "gRPC config of an unknown model")
raises(lambda: h.get_model_config("nope"), "not found", "REST config of an unknown model")

# -- statistics that match what was sent ----------------------------------------
def stats(client, model, grpc):
    s = client.get_inference_statistics(model, as_json=True) if grpc else client.get_inference_statistics(model)
    return s["model_stats"][0]


before = stats(h, "rows", False)
check(int(before["inference_count"]) == 0 and before["inference_stats"]["success"]["count"] == 0, "statistics start at zero")
sent = 32
done = queue.Queue()
x = np.arange(10, dtype=np.float32).reshape(1, 10)
for k in range(sent):
    g.async_infer("rows", rows_inputs(grpcclient, x + k), lambda result, error: done.put((result, error)))
answers = [done.get(timeout=60) for _ in range(sent)]
check(all(e is None for _, e in answers), f"{sent} concurrent one-row requests answered")
bad = grpcclient.InferInput("x", [1, 3], "FP32")
bad.set_data_from_numpy(np.zeros((1, 3), np.float32))
raises(lambda: g.infer("rows", [bad]), "", "a request of the wrong shape fails")
sg = stats(g, "rows", True)
sh = stats(h, "rows", False)
inf = sh["inference_stats"]
check(sh["inference_count"] == sent, f"inference_count counts the rows sent ({sh['inference_count']})")
# As in Triton 2.51, a request the model's checks refuse is not a failed
# inference: fail stays at 0.
check(inf["success"]["count"] == sent and inf["fail"]["count"] == 0, "success counts the requests; a refused one is no failure")
check(inf["queue"]["count"] == sent and inf["compute_infer"]["count"] == sent, "queue and compute counts per request")
# compute_input and compute_output are measured (making the runtime's values,
# taking its outputs), as perf_analyzer's columns read them; they were 0.
check(all(int(inf[k]["ns"]) > 0 for k in ("compute_input", "compute_infer", "compute_output")),
      f"compute_input, compute_infer and compute_output take time: {[inf[k]['ns'] for k in ('compute_input', 'compute_infer', 'compute_output')]}")
batches = {b["batch_size"]: b["compute_infer"]["count"] for b in sh["batch_stats"]}
check(sum(size * n for size, n in batches.items()) == sent, f"batch_stats add up to the rows: {batches}")
check(sum(batches.values()) == sh["execution_count"] < sent, f"the rows ran batched in {sh['execution_count']} runs")
check(sh["last_inference"] > 1_600_000_000_000, "last_inference is milliseconds since the epoch")
check(int(sg["inference_count"]) == sent and int(sg["execution_count"]) == sh["execution_count"],
      "gRPC statistics agree with REST")
all_stats = h.get_inference_statistics()
check({s["name"] for s in all_stats["model_stats"]} >= {"rows", "identity", "adder"}, "statistics of every model")

# -- repository on gRPC ---------------------------------------------------------
index = g.get_model_repository_index(as_json=True)["models"]
check({m["name"] for m in index} == {"rows", "identity", "adder"} and all(m["state"] == "READY" for m in index),
      "gRPC repository index")
g.unload_model("adder")
check(not g.is_model_ready("adder"), "gRPC unload makes the model unavailable")
g.load_model("adder")
check(g.is_model_ready("adder"), "gRPC load brings it back")
for name in ["../rows", "/etc", "a/b", "..", ".hidden", "a\\b"]:
    raises(lambda: g.load_model(name), "not a model name of the repository", f"gRPC load refuses {name!r}")
# On REST a name is one path segment (percent-encoded ones are checked by
# the Rust tests: tritonclient escapes '%'); a raw '/' is another path.
for name in ["..", ".hidden"]:
    raises(lambda: h.load_model(name), "not a model name of the repository", f"REST load refuses {name!r}")
    raises(lambda: h.unload_model(name), "not a model name of the repository", f"REST unload refuses {name!r}")
raises(lambda: h.load_model("../rows"), "no route for POST", "REST: a name with '/' is another path, a 404")
# A configuration given with the load is used until a load without one;
# model files in the request stand for the model's directory: files that
# are no model fail the load, and the model goes on serving.
g.load_model("rows", config='{"max_batch_size": 4}')
check(g.get_model_config("rows", as_json=True)["config"]["max_batch_size"] == 4,
      "gRPC load with a config: the model serves with it")
g.load_model("rows")
check(g.get_model_config("rows", as_json=True)["config"]["max_batch_size"] != 4,
      "a load without one goes back to config.pbtxt")
raises(lambda: h.load_model("rows", config="{}", files={"file:1/model.onnx": b"onnx"}), "failed to load 'rows'",
       "model files that are no model fail the load")
check(h.is_model_ready("rows"), "a failed load with files keeps the model serving")

# -- streaming ------------------------------------------------------------------
stream_answers = queue.Queue()
g.start_stream(callback=lambda result, error: stream_answers.put((result, error)))
runs_before = stats(h, "rows", False)["execution_count"]
n = 100
for k in range(n):
    g.async_stream_infer("rows", rows_inputs(grpcclient, x + k), request_id=f"r{k}")
got = [stream_answers.get(timeout=60) for _ in range(n)]
check(all(e is None for _, e in got), f"{n} stream requests answered")
by_id = {r.get_response().id: r.as_numpy("y") for r, _ in got}
check(sorted(by_id) == sorted(f"r{k}" for k in range(n)), "every stream answer carries its request's id")
check(all(np.array_equal(by_id[f"r{k}"], x + k) for k in range(n)), "every stream answer is its request's result")
runs = stats(h, "rows", False)["execution_count"] - runs_before
check(runs < n, f"the {n} stream requests were in flight together: {runs} runs")
g.async_stream_infer("rows", [bad], request_id="bad")
g.async_stream_infer("rows", rows_inputs(grpcclient, x), request_id="after")
r, e = stream_answers.get(timeout=60)
check(r is None and e is not None and "x" in str(e), f"an in-band stream error: {e}")
r, e = stream_answers.get(timeout=60)
check(e is None and r.get_response().id == "after", "the stream goes on after an in-band error")
g.stop_stream()
g2 = grpcclient.InferenceServerClient(url=GRPC_A)
status_answers = queue.Queue()
g2.start_stream(callback=lambda result, error: status_answers.put((result, error)),
                headers={"triton_grpc_error": "true"})
g2.async_stream_infer("rows", [bad], request_id="bad")
r, e = status_answers.get(timeout=60)
check(e is not None and "StatusCode.INVALID_ARGUMENT" in str(e.status()), f"with triton_grpc_error the stream ends with a status: {e.status()}")
g2.stop_stream()
g2.close()

# -- compression ----------------------------------------------------------------
xx = np.random.default_rng(3).random((4, 10), dtype=np.float32)
for algo in ["gzip", "deflate"]:
    r = g.infer("rows", rows_inputs(grpcclient, xx), compression_algorithm=algo)
    check(np.array_equal(r.as_numpy("y"), xx), f"gRPC request in {algo}, reply in gzip")
    r = h.infer("rows", rows_inputs(httpclient, xx), request_compression_algorithm=algo,
                response_compression_algorithm="deflate" if algo == "gzip" else "gzip")
    check(np.array_equal(r.as_numpy("y"), xx), f"REST request in {algo}, reply compressed")
    binput = httpclient.InferInput("x", [4, 10], "FP32")
    binput.set_data_from_numpy(xx, binary_data=True)
    r = h.infer("rows", [binput], outputs=[httpclient.InferRequestedOutput("y", binary_data=True)],
                request_compression_algorithm=algo, response_compression_algorithm=algo)
    check(np.array_equal(r.as_numpy("y"), xx), f"REST binary tensors in {algo} both ways")
    g.start_stream(callback=lambda result, error: stream_answers.put((result, error)), compression_algorithm=algo)
    g.async_stream_infer("rows", rows_inputs(grpcclient, xx), request_id="z")
    r, e = stream_answers.get(timeout=60)
    check(e is None and np.array_equal(r.as_numpy("y"), xx), f"a {algo} stream")
    g.stop_stream()

# -- classification -------------------------------------------------------------
scores = np.random.default_rng(7).random((3, 10), dtype=np.float32)
top = np.argsort(-scores, axis=1, kind="stable")[:, :4]
for mod, client, name in [(grpcclient, g, "gRPC"), (httpclient, h, "REST")]:
    for binary in ([False, True] if mod is httpclient else [None]):
        out = (mod.InferRequestedOutput("y", class_count=4) if binary is None
               else mod.InferRequestedOutput("y", class_count=4, binary_data=binary))
        r = client.infer("rows", rows_inputs(mod, scores), outputs=[out])
        c = r.as_numpy("y")
        datatype = r.get_output("y")["datatype"] if mod is httpclient else r.get_output("y").datatype
        check(c.shape == (3, 4) and datatype == "BYTES", f"{name} classification: BYTES of shape [3, 4] (binary={binary})")
        parsed = [[(s.decode() if isinstance(s, bytes) else s).split(":") for s in row] for row in c]
        idx = np.array([[int(p[1]) for p in row] for row in parsed])
        val = np.array([[float(p[0]) for p in row] for row in parsed], dtype=np.float32)
        check(np.array_equal(idx, top), f"{name} top-4 indices equal numpy's argsort (binary={binary})")
        check(np.allclose(val, np.take_along_axis(scores, top, axis=1), atol=1e-6), f"{name} top-4 values")
        # label_filename: "value:index:label", and no label past the file's.
        check(all((p[2] == f"class{int(p[1])}") if int(p[1]) < 9 else len(p) == 2 for row in parsed for p in row),
              f"{name} classes carry the labels of label_filename (binary={binary})")
one = h.infer("identity", rows_inputs(httpclient, scores[0]), outputs=[httpclient.InferRequestedOutput("y", class_count=2)])
check(one.as_numpy("y").shape == (2,), "a model without batching classifies the whole output: [k]")
check(all(len(s.decode().split(":")) == 2 for s in one.as_numpy("y")), "a model without labels: value:index")

# -- system shared memory -------------------------------------------------------
MB64 = 64 << 20
data = np.random.default_rng(11).random(MB64 // 4, dtype=np.float32)
for client, name in [(g, "gRPC"), (h, "REST")]:
    tag = f"{name.lower()}{os.getpid()}"
    ih = shm.create_shared_memory_region(f"in_{tag}", f"/in_{tag}", MB64)
    oh = shm.create_shared_memory_region(f"out_{tag}", f"/out_{tag}", MB64)
    shm.set_shared_memory_region(ih, [data])
    client.register_system_shared_memory(f"in_{tag}", f"/in_{tag}", MB64)
    client.register_system_shared_memory(f"out_{tag}", f"/out_{tag}", MB64)
    status = client.get_system_shared_memory_status(as_json=True) if client is g else client.get_system_shared_memory_status()
    regions = status["regions"].values() if client is g else status
    check({r["name"] for r in regions} >= {f"in_{tag}", f"out_{tag}"}, f"{name} shared memory status lists the regions")
    mod = grpcclient if client is g else httpclient
    i = mod.InferInput("x", [MB64 // 4], "FP32")
    i.set_shared_memory(f"in_{tag}", MB64)
    o = mod.InferRequestedOutput("y")
    o.set_shared_memory(f"out_{tag}", MB64)
    r = client.infer("identity", [i], outputs=[o])
    shape = r.get_output("y")["shape"] if client is h else list(r.get_output("y").shape)
    back = shm.get_contents_as_numpy(oh, np.float32, [int(d) for d in shape])
    check(np.array_equal(back.view(np.uint32), data.view(np.uint32)), f"{name}: 64 MiB through shared memory, bit-exact")
    over = mod.InferInput("x", [MB64 // 4], "FP32")
    over.set_shared_memory(f"in_{tag}", MB64, offset=8)
    raises(lambda: client.infer("identity", [over]), "runs past the end of region", f"{name}: a region overrun is refused")
    raises(lambda: client.register_system_shared_memory("evil", "/../../etc/passwd", 8), "is not the name of a POSIX shared memory object",
           f"{name}: keys outside /dev/shm are refused")
    client.unregister_system_shared_memory(f"in_{tag}")
    client.unregister_system_shared_memory(f"out_{tag}")
    status = client.get_system_shared_memory_status(as_json=True) if client is g else client.get_system_shared_memory_status()
    regions = list(status.get("regions", {}).values()) if client is g else status
    check(not any(r["name"].endswith(tag) for r in regions), f"{name} unregister removes the regions")
    shm.destroy_shared_memory_region(ih)
    shm.destroy_shared_memory_region(oh)
for client, name in [(gb, "gRPC"), (hb, "REST")]:
    raises(lambda: client.get_system_shared_memory_status(), "shared memory is disabled; start the server with --allow-shared-memory",
           f"{name}: shared memory off says how to turn it on")
    raises(lambda: client.register_system_shared_memory("r", "/r", 8), "--allow-shared-memory", f"{name}: register refused while off")
# CUDA shared memory, as Triton without a GPU answers it: no regions, and
# clean-up calls succeed (tritonclient's examples and perf_analyzer call
# them at exit); a registration is refused with what to use instead.
status = g.get_cuda_shared_memory_status(as_json=True)
check(not status.get("regions"), f"gRPC CUDA shared memory lists no region: {status}")
check(h.get_cuda_shared_memory_status() == [], "REST CUDA shared memory lists no region")
for client, name in [(g, "gRPC"), (h, "REST")]:
    client.unregister_cuda_shared_memory()
    client.unregister_cuda_shared_memory("never_registered")
    raises(lambda: client.register_cuda_shared_memory("c", b"\0" * 64, 0, 8), "CUDA shared memory is not supported",
           f"{name}: a CUDA registration says why it is refused")
    raises(lambda: client.get_cuda_shared_memory_status("c"), "Unable to find cuda shared memory region",
           f"{name}: a named CUDA region is not found")

# A model without batching (its runs are not joined): the runtime's input and
# output conversions are measured all the same.
ist = stats(h, "identity", False)["inference_stats"]
check(ist["success"]["count"] > 0 and all(int(ist[k]["ns"]) > 0 for k in ("compute_input", "compute_output")),
      f"identity: compute_input and compute_output measured: {ist['compute_input']}, {ist['compute_output']}")

# The logging extension: read, changed, read back, on both clients.
settings = h.get_log_settings()
check(settings.get("log_info") is True and settings.get("log_verbose_level") == 0,
      f"REST log settings by Triton's names: {settings}")
changed = h.update_log_settings({"log_verbose_level": 1, "log_warning": True})
check(changed["log_verbose_level"] == 1, f"REST update_log_settings answers the new settings: {changed}")
gs = g.get_log_settings(as_json=True)["settings"]
check(gs["log_verbose_level"]["uint32_param"] == 1, f"gRPC sees the change: {gs}")
g.update_log_settings({"log_verbose_level": 0, "log_info": True})
check(h.get_log_settings()["log_verbose_level"] == 0, "gRPC update_log_settings changes them back")
raises(lambda: h.update_log_settings({"log_file": "/tmp/x.log"}), "logs to stderr", "REST: a log file is refused, saying why")
raises(lambda: g.update_log_settings({"log_verbosity": 1}), "unknown log setting", "gRPC: an unknown setting is refused")

# The trace extension's settings (no collector here: spans go nowhere).
ts = h.get_trace_settings()
check(ts["trace_level"] == ["OFF"] and ts["trace_rate"] == "1000", f"REST trace settings as Triton's: {ts}")
ts = h.update_trace_settings(settings={"trace_level": ["TIMESTAMPS"], "trace_rate": "5"})
check(ts["trace_level"] == ["TIMESTAMPS"] and ts["trace_rate"] == "5", f"REST update_trace_settings: {ts}")
gt = g.get_trace_settings(model_name="identity", as_json=True)["settings"]
check(gt["trace_rate"]["value"] == ["5"], f"gRPC model trace settings follow the server's: {gt}")
gt = g.update_trace_settings(model_name="identity", settings={"trace_rate": "9"}, as_json=True)["settings"]
check(gt["trace_rate"]["value"] == ["9"], f"gRPC update_trace_settings for one model: {gt}")
check(h.get_trace_settings()["trace_rate"] == "5", "the server's own rate is unchanged")
h.update_trace_settings(settings={"trace_level": ["OFF"]})
raises(lambda: h.update_trace_settings(settings={"trace_mode": "opentelemetry"}), "needs a collector",
       "REST: opentelemetry without a collector is refused, saying why")

g.close()
h.close()
gb.close()
hb.close()
print("all Triton extensions agree")
